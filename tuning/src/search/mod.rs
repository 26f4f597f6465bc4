//! Define-by-run hyperparameter search in the manner of Optuna: a [`Study`] runs an objective
//! that asks its [`Trial`] for parameters as it goes (so the space may depend on earlier
//! answers), a [`Sampler`] proposes them (random, grid, TPE), a [`Pruner`] stops hopeless trials
//! from their intermediate values, and a [`Storage`] records every trial: in memory, in an SQLite
//! file shared by the processes of one machine, or in a PostgreSQL database shared by workers on
//! many machines (feature `postgres`). Both databases hold Optuna's schema, so Python's
//! `optuna.load_study` and optuna-dashboard open a study written here and a study Optuna wrote
//! continues here.
//!
//! A study may have several objectives ([`StudyBuilder::directions`]): [`Study::best_trials`] is
//! then its Pareto front, [`NsgaIISampler`] (and multi-objective TPE) search it, and [`multi`]
//! holds the shared pieces (non-dominated sorting, crowding distance, hypervolume). Pruners:
//! median, percentile, successive halving, [`HyperbandPruner`], [`PatientPruner`],
//! [`WilcoxonPruner`]. [`importance`] tells which parameters mattered (PED-ANOVA).
//!
//! ```
//! use std::sync::Arc;
//! use ferrograd_tuning::search::{SearchError, SqliteStorage, Study, TpeSampler};
//! let path = std::env::temp_dir().join(format!("doc_search_{}.db", std::process::id()));
//! let storage = Arc::new(SqliteStorage::open(&path)?);
//! let study = Study::builder().sampler(TpeSampler::new()).storage(storage).load_if_exists("demo")?;
//! study.optimize(20, |t| {
//!     let x = t.suggest_float("x", -3.0, 3.0, false)?;
//!     Ok::<_, SearchError>(x * x)
//! })?;
//! println!("best {:?} in {}", study.best_params(), path.display());
//! # for ext in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{ext}", path.display())); }
//! # Ok::<(), SearchError>(())
//! ```

mod cmaes;
mod distribution;
mod error;
mod gp;
pub mod importance;
mod log;
pub mod multi;
mod nsga2;
mod optimize;
mod pruner;
mod qmc;
mod sampler;
mod sobol_directions;
pub mod storage;
mod study;
mod tpe;
mod trial;
mod unit_space;

pub use cmaes::{CmaEsSampler, RestartStrategy};
pub use distribution::{Distribution, ParamValue};
pub use error::SearchError;
pub use gp::GpSampler;
pub use nsga2::{ConstraintsFn, Crossover, Mutation, NsgaIISampler};
pub use optimize::{Callback, Catch, IntoValues, OptimizeOptions};
pub use pruner::{
    HyperbandPruner, MedianPruner, NopPruner, PatientPruner, PercentilePruner, Pruner, SuccessiveHalvingPruner,
    WilcoxonPruner,
};
pub use qmc::QmcSampler;
pub use sampler::{sample_uniform, GridSampler, RandomSampler, SampleContext, Sampler};
#[cfg(feature = "postgres")]
pub use storage::PostgresStorage;
pub use storage::{InMemoryStorage, SqliteStorage, Storage, StudySummary};
pub use study::{copy_study, delete_study, study_summaries, Direction, Study, StudyBuilder};
pub use tpe::TpeSampler;
pub use trial::{FrozenTrial, Trial, TrialState};
