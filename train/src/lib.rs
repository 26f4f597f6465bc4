//! `ferrograd-train`: the training driver. A [`Learner`] runs epochs over a training and a
//! validation [`DataSource`] (nn's `DataLoader` is one) with a loss, [`Metric`]s, an optimizer
//! and [`Callback`]s, and everything else about watching and keeping a run:
//!
//! - callbacks: [`EarlyStopping`] (Keras' semantics), [`ModelCheckpoint`] (last N, best by a
//!   monitored value, atomic writes), [`LrSchedule`] / [`PlateauSchedule`], [`ProgressBar`]
//!   (indicatif, hidden when stderr is not a terminal), [`TerminateOnNaN`] (on by default);
//! - loggers: [`CsvLogger`], [`JsonlLogger`], [`TensorBoardLogger`] (event files with scalars,
//!   histograms and the HParams summary, read by TensorBoard itself);
//! - resumable run directories ([`Learner::run_dir`], [`Learner::resume`]): a run killed at any
//!   moment continues to the same weights, bit for bit;
//! - SVG plots ([`plot`]): training curves, and the charts `ferrograd_tuning` draws of a study.
//!
//! The Learner is built from public pieces (`Module::forward`, a loss, `backward`, clipping,
//! `Optimizer::step`), so a hand-written loop remains a few lines away; see [`learner`] for the
//! order of one step.
//!
//! Data-parallel training plugs in at three places: the gradients (averaged before the guard,
//! clipping and the update: by [`Learner::grad_sync`] after backward, or by `Learner::distributed`
//! during the backward of each accumulation group's last batch), a [`DataSource`] that
//! yields one rank's shard, and [`Learner::rank`] (callbacks that write files run on rank 0
//! only, see [`Callback::main_process_only`]; [`Learner::logs_sync`] averages the epoch's figures).
//! [`DistributedLoader`] is that source, and with the `mpi` feature `Learner::distributed` sets
//! all three from a `ferrograd_distributed::DistributedDataParallel`.

#![warn(missing_docs)]

pub mod callback;
mod checkpoint;
pub mod data;
mod distributed;
pub mod early_stopping;
mod error;
mod guard;
pub mod learner;
mod loggers;
pub mod logs;
pub mod metric;
pub mod plot;
mod progress;
mod schedule;
pub mod tensorboard;

pub use callback::{Callback, CallbackState, Context, Control, StepAction};
pub use checkpoint::ModelCheckpoint;
pub use data::{Batch, DataSource};
pub use distributed::DistributedLoader;
pub use early_stopping::EarlyStopping;
pub use error::TrainError;
pub use guard::{OnNonFinite, TerminateOnNaN};
pub use learner::{has_run_state, Clip, Learner, StepContext, StepOutput, RUN_STATE_FILE};
pub use loggers::{history_csv, CsvLogger, JsonlLogger};
pub use logs::{EpochLogs, History, StepLogs};
pub use metric::{Accuracy, MeanError, Metric, TopKAccuracy};
pub use plot::CurvesPlot;
pub use progress::ProgressBar;
pub use schedule::{Every, LrSchedule, PlateauSchedule};
pub use tensorboard::TensorBoardLogger;
