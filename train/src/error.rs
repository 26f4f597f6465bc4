//! The typed error of the training crate. Messages name the step, the file or the metric
//! involved, so a stopped run says why it stopped.

use std::path::PathBuf;

use ferrograd_nn::NnError;
use ferrograd_optim::OptimError;

/// An error of the training crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss or a gradient held NaN or an infinity ([`TerminateOnNaN`](crate::TerminateOnNaN)).
    #[error(
        "epoch {}, step {step} (batch {} of the epoch): {what} is {value}; training stopped \
         (TerminateOnNaN). Lower the learning rate, clip the gradients or check the inputs of this batch",
        .epoch + 1,
        .batch + 1
    )]
    NonFinite {
        /// The epoch, counted from 0 (the message counts from 1, as the examples print epochs).
        epoch: usize,
        /// The optimizer step that would have applied it, counted from 1 over the whole run (as
        /// [`StepLogs::global_step`](crate::StepLogs::global_step)).
        step: u64,
        /// The batch within the epoch, counted from 0 (from 1 in the message; the last batch of an
        /// accumulation group).
        batch: usize,
        /// What held it: `"the loss"` or `"the gradient of `fc.weight`"`.
        what: String,
        /// The offending value (NaN or ±inf).
        value: f64,
    },
    /// The training loss grew far beyond its first value
    /// ([`TerminateOnNaN::divergence_factor`](crate::TerminateOnNaN::divergence_factor)).
    #[error(
        "epoch {}, step {step}: the training loss diverged: its running mean {loss:.4e} is more than \
         {factor} times the first step's loss {first:.4e}; training stopped (lower the learning rate)",
        .epoch + 1
    )]
    Diverged {
        /// The epoch, counted from 0 (from 1 in the message).
        epoch: usize,
        /// The optimizer step, counted from 1 over the whole run.
        step: u64,
        /// The running mean of the loss.
        loss: f64,
        /// The loss of the first step.
        first: f64,
        /// The factor it exceeded.
        factor: f64,
    },
    /// A callback watches a value the epoch logs do not have.
    #[error("{callback}: the logs have no `{monitor}` (they have {available:?})")]
    MissingLog {
        /// The callback.
        callback: String,
        /// The name it watches.
        monitor: String,
        /// The names the logs have.
        available: Vec<String>,
    },
    /// A configuration that cannot work (zero accumulation steps, a metric name used twice).
    #[error("{0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A run directory or log file holds something this version cannot use.
    #[error("{}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Saving or loading tensors (a checkpoint, the model of a run directory) failed.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// Restoring the optimizer's state failed.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Drawing a plot failed.
    #[error("plot {}: {problem}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What plotters said.
        problem: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        TrainError::Format { path: path.into(), problem: problem.into() }
    }
}
