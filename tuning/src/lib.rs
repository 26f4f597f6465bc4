//! `ferrograd-tuning`: what comes around training: metrics, early stopping, cross-validation,
//! hyperparameter search, knowledge distillation and quantization.
//!
//! - [`metrics`]: accuracy, top-k accuracy, precision/recall/F1, confusion matrix, MSE, MAE, R²,
//!   with scikit-learn's definitions.
//! - [`early_stopping`]: [`EarlyStopping`] with Keras' semantics.
//! - [`cv`]: splitters returning (train, test) index sets and [`cross_validate`].

#![warn(missing_docs)]

pub mod cv;
pub mod distill;
pub mod early_stopping;
mod error;
pub mod metrics;
pub mod quant;

pub use cv::{cross_validate, CvResults, Fold, Splitter};
pub use early_stopping::EarlyStopping;
pub use error::TuningError;
