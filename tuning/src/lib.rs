//! `ferrograd-tuning`: what comes around training: metrics, early stopping, cross-validation,
//! hyperparameter search, knowledge distillation and quantization.
//!
//! - [`metrics`]: accuracy, top-k accuracy, precision/recall/F1, confusion matrix, MSE, MAE, R²,
//!   with scikit-learn's definitions.
//! - [`early_stopping`]: [`EarlyStopping`] with Keras' semantics (it lives in
//!   `ferrograd_train`, where the Learner uses it, and is re-exported here).
//! - [`cv`]: splitters returning (train, test) index sets and [`cross_validate`].
//! - [`search`]: define-by-run hyperparameter search ([`Study`], [`Trial`]) with random, grid and
//!   TPE samplers, pruners, threads and SQLite storage.
//! - [`distill`]: Hinton's soft-target loss and a student-from-teacher training loop.
//! - [`quant`]: observers, int8 tensors and GEMM, post-training and quantization-aware training.
//! - [`plots`]: SVG charts of a study (optimisation history, intermediate values, importances).

#![warn(missing_docs)]

pub mod cv;
pub mod distill;
pub use ferrograd_train::early_stopping;
mod error;
pub mod metrics;
pub mod plots;
pub mod quant;
pub mod search;

pub use cv::{cross_validate, CvResults, Fold, Splitter};
pub use early_stopping::EarlyStopping;
pub use error::TuningError;
pub use search::{SearchError, Study, TpeSampler, Trial};
