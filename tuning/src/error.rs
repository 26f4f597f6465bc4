//! The typed error of the tuning crate: bad arguments to a metric, a splitter or a search, a
//! fold whose scoring failed, and the nn errors met while restoring weights. Messages name the
//! function and the offending value.

use ferrograd_nn::NnError;

/// An error of the tuning crate.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// A splitter asked for fewer than two folds (`KFold::new(1)`).
    #[error("{op}: n_splits must be at least 2, got {n_splits}")]
    TooFewSplits {
        /// The function or splitter.
        op: &'static str,
        /// The number of splits asked for.
        n_splits: usize,
    },
    /// More folds (or test samples) than there are samples.
    #[error("{op}: cannot make {needed} with only {n_samples} samples")]
    TooFewSamples {
        /// The function or splitter.
        op: &'static str,
        /// What was asked for, in words (`"5 folds"`, `"a test set of 0 samples"`).
        needed: String,
        /// The number of samples given.
        n_samples: usize,
    },
    /// A stratified split with a class too small to reach every part (fewer members than
    /// folds, or a single member in `train_test_split`).
    #[error("{op}: class {class} has {count} member(s), fewer than the {needed} it needs")]
    ClassTooSmall {
        /// The function or splitter.
        op: &'static str,
        /// The label of the class.
        class: i64,
        /// How many samples have it.
        count: usize,
        /// The smallest size that works (the number of folds).
        needed: usize,
    },
    /// A group split with fewer distinct groups than folds.
    #[error("{op}: {n_groups} distinct groups cannot fill n_splits = {n_splits} folds")]
    TooFewGroups {
        /// The function or splitter.
        op: &'static str,
        /// The number of distinct groups.
        n_groups: usize,
        /// The number of folds asked for.
        n_splits: usize,
    },
    /// A size or fraction outside its range (`test_size` not in (0, 1), `k = 0` in top-k).
    #[error("{op}: {name} = {value} is out of range ({expected})")]
    OutOfRange {
        /// The function or splitter.
        op: &'static str,
        /// The argument.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// The range it must lie in, in words.
        expected: &'static str,
    },
    /// Two inputs that must have one entry per sample have different lengths.
    #[error("{op}: {what} has {found} entries, expected {expected}")]
    LengthMismatch {
        /// The function or splitter.
        op: &'static str,
        /// Which input (`"y_pred"`, `"groups"`).
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A metric asked of no samples.
    #[error("{op}: no samples")]
    Empty {
        /// The function.
        op: &'static str,
    },
    /// A class label that is negative or not below the number of classes.
    #[error("{op}: label {label} is outside 0..{n_classes}")]
    LabelOutOfRange {
        /// The function.
        op: &'static str,
        /// The label.
        label: i64,
        /// The number of classes.
        n_classes: usize,
    },
    /// The scoring function of one cross-validation fold failed.
    #[error("cross_validate: fold {fold} failed: {source}")]
    Fold {
        /// The fold, from 0.
        fold: usize,
        /// What the scoring function returned.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Cross-validation folds returned different sets of metric names.
    #[error("cross_validate: fold {fold} has metrics {found:?}, fold 0 has {expected:?}")]
    MetricNames {
        /// The fold that differs, from 1.
        fold: usize,
        /// The names returned by fold 0.
        expected: Vec<String>,
        /// The names returned by this fold.
        found: Vec<String>,
    },
    /// Restoring or reading a module's weights failed.
    #[error(transparent)]
    Nn(#[from] NnError),
}
