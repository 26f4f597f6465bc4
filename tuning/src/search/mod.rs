//! Define-by-run hyperparameter search in the manner of Optuna: a [`Study`] runs an objective
//! that asks its [`Trial`] for parameters as it goes (so the space may depend on earlier
//! answers), a [`Sampler`] proposes them (random, grid, TPE), a [`Pruner`] stops hopeless trials
//! from their intermediate values, and the study records every trial, in memory or in an SQLite
//! file shared by processes ([`StudyBuilder::open_sqlite`]).

mod distribution;
mod error;
mod pruner;
mod sampler;
mod sqlite;
mod study;
mod tpe;
mod trial;

pub use distribution::{Distribution, ParamValue};
pub use error::SearchError;
pub use pruner::{MedianPruner, NopPruner, PercentilePruner, Pruner, SuccessiveHalvingPruner};
pub use sampler::{sample_uniform, GridSampler, RandomSampler, SampleContext, Sampler};
pub use study::{Direction, Study, StudyBuilder};
pub use tpe::TpeSampler;
pub use trial::{FrozenTrial, Trial, TrialState};
