//! Typed errors of the search module: bad search spaces, sampler/space disagreements and pruning.

/// An error of the hyperparameter search.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// A bound is NaN or infinite.
    #[error("parameter `{name}`: bounds must be finite, got [{low}, {high}]")]
    NonFiniteBound {
        /// The parameter.
        name: String,
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
    },
    /// `low > high`: the range is empty.
    #[error("parameter `{name}`: empty range, low {low} > high {high}")]
    EmptyRange {
        /// The parameter.
        name: String,
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
    },
    /// A log-scaled range whose lower bound is not positive (or below 1 for integers).
    #[error("parameter `{name}`: a log scale needs low > 0 (low >= 1 for integers), got {low}")]
    LogNonPositive {
        /// The parameter.
        name: String,
        /// The lower bound.
        low: f64,
    },
    /// A step that is not positive and finite.
    #[error("parameter `{name}`: step must be positive, got {step}")]
    InvalidStep {
        /// The parameter.
        name: String,
        /// The step.
        step: f64,
    },
    /// `high - low` is not a multiple of the step.
    #[error("parameter `{name}`: step {step} does not divide the range [{low}, {high}]")]
    StepDoesNotDivide {
        /// The parameter.
        name: String,
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
        /// The step.
        step: f64,
    },
    /// A log scale combined with a step other than 1.
    #[error("parameter `{name}`: a log scale cannot be combined with a step")]
    LogWithStep {
        /// The parameter.
        name: String,
    },
    /// A categorical parameter with no choices.
    #[error("parameter `{name}`: no choices")]
    EmptyChoices {
        /// The parameter.
        name: String,
    },
    /// The same name asked with another distribution than before.
    #[error("parameter `{name}` was asked as {previous}, now as {asked}")]
    DistributionMismatch {
        /// The parameter.
        name: String,
        /// The distribution recorded first.
        previous: String,
        /// The distribution asked now.
        asked: String,
    },
    /// A grid sampler was asked for a parameter its grid does not declare, or a value outside it.
    #[error("parameter `{name}` is not in the grid's space (or its grid values fall outside the asked range)")]
    NotInGrid {
        /// The parameter.
        name: String,
    },
    /// A grid search whose points are all taken.
    #[error("the grid's {points} points have all been tried")]
    GridExhausted {
        /// The number of grid points.
        points: usize,
    },
    /// A sampler or pruner option out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The study's SQLite file could not be read or written (not a database, locked, disk full,
    /// corrupt rows).
    #[error("study storage {path}: {message}")]
    Storage {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An SQLite file that holds other tables than a ferrograd study's.
    #[error("{path} is an SQLite database but not a ferrograd study store")]
    ForeignDatabase {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The stored study disagrees with the one asked for (its direction).
    #[error("study `{name}`: {message}")]
    StudyMismatch {
        /// The study's name.
        name: String,
        /// The disagreement.
        message: String,
    },
    /// The trial was pruned; return it from the objective (`Err(trial.pruned().into())`).
    #[error("trial pruned{}", step.map(|s| format!(" at step {s}")).unwrap_or_default())]
    Pruned {
        /// The last reported step.
        step: Option<u64>,
    },
}
