//! Typed errors of the search module: bad search spaces, sampler/space disagreements, pruning,
//! and storage (unreadable or foreign databases, corrupt rows, missing studies or trials, writes to
//! finished trials).

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
    /// The study's SQLite file could not be read or written (not a database, locked for longer
    /// than the retries allow, disk full).
    #[error("study storage {path}: {message}")]
    Storage {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The PostgreSQL database could not be reached, read or written (after the retries of
    /// transient failures).
    #[error("study database {location}: {message}")]
    Database {
        /// The server and database (the URL without its password).
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A database that holds other tables than a study store's (Optuna's schema).
    #[error("{path} is an SQLite database but not a study store (no Optuna schema)")]
    ForeignDatabase {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A database in another schema version: an older Optuna schema (upgrade it with
    /// `optuna storage upgrade`), a newer one, or ferrograd's pre-Optuna SQLite schema (migrate it
    /// with [`SqliteStorage::migrate_legacy`](super::SqliteStorage::migrate_legacy)).
    #[error("{location}: {message}")]
    SchemaVersion {
        /// The file or database.
        location: String,
        /// The version found and what to do.
        message: String,
    },
    /// A row the storage cannot make sense of: a NULL where a value must be, an unknown state, a
    /// parameter outside its distribution, malformed JSON, gaps in trial numbers.
    #[error("{location}: corrupt {what}")]
    Corrupt {
        /// The file or database.
        location: String,
        /// The row and what is wrong with it.
        what: String,
    },
    /// `create` found a study of that name.
    #[error("a study named `{name}` already exists")]
    StudyExists {
        /// The study's name.
        name: String,
    },
    /// `load` found no study of that name, or the study was deleted.
    #[error("no study named `{name}`")]
    NoSuchStudy {
        /// The study's name.
        name: String,
    },
    /// No trial has that number.
    #[error("study `{study}` has no trial number {number}")]
    NoSuchTrial {
        /// The study's name.
        study: String,
        /// The trial number asked for.
        number: u64,
    },
    /// A write to a trial that is already finished (complete, pruned or failed): finished trials
    /// never change. Also what a worker meets when it resumes after another marked its trial
    /// failed (a missed heartbeat).
    #[error("trial {number} is already {state} and cannot be changed")]
    TrialFinished {
        /// The trial's number.
        number: u64,
        /// Its state.
        state: super::TrialState,
    },
    /// The objective returned as many values as the study has directions, or not.
    #[error("the study has {expected} objective(s), the objective returned {got} value(s)")]
    ValueCount {
        /// The number of directions.
        expected: usize,
        /// The number of values.
        got: usize,
    },
    /// A single-objective operation (`best_trial`, pruning) on a study with several directions.
    #[error("the study has {directions} objectives; {operation} needs a single one")]
    MultiObjective {
        /// The number of directions.
        directions: usize,
        /// What was asked.
        operation: &'static str,
    },
    /// An error of the objective that the study's [`Catch`](super::Catch) policy does not turn
    /// into a failed trial: the trial is recorded as failed and `optimize` stops with this error.
    #[error("trial {number}: {message}")]
    Objective {
        /// The trial.
        number: u64,
        /// The objective's error.
        message: String,
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
