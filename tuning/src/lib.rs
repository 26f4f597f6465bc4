//! `ferrograd-tuning`: what comes around training: metrics, early stopping, cross-validation,
//! hyperparameter search, knowledge distillation and quantization.

#![warn(missing_docs)]

pub mod search;
