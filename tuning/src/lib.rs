//! `ferrograd-tuning`: what comes around training: metrics, early stopping, cross-validation,
//! hyperparameter search, knowledge distillation and quantization.

#![warn(missing_docs)]

pub mod cv;
pub mod early_stopping;
mod error;
pub mod metrics;

pub use error::TuningError;
