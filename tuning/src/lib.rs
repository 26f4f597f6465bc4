//! `ferrograd-tuning`: what comes around training: metrics, early stopping, cross-validation,
//! hyperparameter search, knowledge distillation and quantization.

#![warn(missing_docs)]

mod error;
pub mod early_stopping;
pub mod metrics;

pub use error::TuningError;
