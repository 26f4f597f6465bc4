//! Cross-validation: splitters that turn sample indices into (train, test) folds, bootstrap
//! resampling, and [`cross_validate`], which scores a model on every fold.
//!
//! Splitters follow scikit-learn's `model_selection` (fold sizes and ordering as there; the
//! shuffled ones use this crate's seeded RNG, so the same seed gives the same folds, but not
//! scikit-learn's folds). A splitter that needs labels or groups holds them, so every splitter
//! answers the same [`Splitter::split`] call. Impossible requests (fewer than two folds, more
//! folds than samples, a class smaller than the number of folds, a test size out of range) are
//! a [`TuningError`], never a panic.

use std::collections::BTreeMap;

use ferrograd_tensor::rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use crate::metrics::Labels;
use crate::TuningError;

/// One split: the indices to train on and the indices to evaluate on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fold {
    /// Training indices (sorted, except for [`Bootstrap`], whose draws repeat).
    pub train: Vec<usize>,
    /// Test indices, sorted.
    pub test: Vec<usize>,
}

/// Something that splits `n_samples` samples into folds.
pub trait Splitter {
    /// The folds of `0..n_samples`.
    ///
    /// # Errors
    /// A request the data cannot satisfy (see each splitter), or labels/groups whose length is
    /// not `n_samples`.
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError>;
}

fn check_splits(op: &'static str, n_splits: usize, n_samples: usize) -> Result<(), TuningError> {
    if n_splits < 2 {
        return Err(TuningError::TooFewSplits { op, n_splits });
    }
    if n_splits > n_samples {
        return Err(TuningError::TooFewSamples { op, needed: format!("{n_splits} folds"), n_samples });
    }
    Ok(())
}

fn check_len(op: &'static str, what: &'static str, len: usize, n_samples: usize) -> Result<(), TuningError> {
    if len == n_samples {
        Ok(())
    } else {
        Err(TuningError::LengthMismatch { op, what, expected: n_samples, found: len })
    }
}

/// The complement of a sorted `test` in `0..n`.
fn complement(n: usize, test: &[usize]) -> Vec<usize> {
    let mut in_test = vec![false; n];
    for &i in test {
        in_test[i] = true;
    }
    (0..n).filter(|&i| !in_test[i]).collect()
}

fn fold_from_test(n: usize, mut test: Vec<usize>) -> Fold {
    test.sort_unstable();
    Fold { train: complement(n, &test), test }
}

/// Splits `order` into `k` consecutive blocks, the first `n % k` one longer (scikit-learn's sizes).
fn blocks(order: &[usize], k: usize) -> Vec<Vec<usize>> {
    let n = order.len();
    let mut start = 0;
    (0..k)
        .map(|f| {
            let len = n / k + usize::from(f < n % k);
            let block = order[start..start + len].to_vec();
            start += len;
            block
        })
        .collect()
}

/// K-fold: `n_splits` consecutive blocks of indices (shuffled first if asked), each the test
/// set once; the first `n % n_splits` folds hold one extra sample.
///
/// ```
/// use ferrograd_tuning::cv::{KFold, Splitter};
/// let folds = KFold::new(3).split(7)?;
/// assert_eq!(folds[0].test, vec![0, 1, 2]);
/// assert_eq!(folds[2].test, vec![5, 6]);
/// assert_eq!(folds[2].train, vec![0, 1, 2, 3, 4]);
/// # Ok::<(), ferrograd_tuning::TuningError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KFold {
    /// The number of folds (at least 2).
    pub n_splits: usize,
    /// Shuffle the indices with this seed before cutting them into blocks.
    pub shuffle: Option<u64>,
}

impl KFold {
    /// `n_splits` folds of consecutive indices, no shuffling.
    pub fn new(n_splits: usize) -> Self {
        KFold { n_splits, shuffle: None }
    }

    /// Shuffles the indices with `seed` first.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }
}

impl Splitter for KFold {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        check_splits("KFold", self.n_splits, n_samples)?;
        let mut order: Vec<usize> = (0..n_samples).collect();
        if let Some(seed) = self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(seed));
        }
        Ok(blocks(&order, self.n_splits).into_iter().map(|t| fold_from_test(n_samples, t)).collect())
    }
}

/// Sorted distinct labels with, for each sample, the index of its class.
fn encode(labels: &[i64]) -> (Vec<i64>, Vec<usize>) {
    let mut classes = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let codes = labels.iter().map(|l| classes.binary_search(l).expect("label is a class")).collect();
    (classes, codes)
}

/// Stratified k-fold: like [`KFold`], but each fold keeps the class proportions of the whole
/// (each class's count in a fold differs by at most one across folds), with scikit-learn's
/// allocation: the labels, sorted by class (classes in order of first appearance), are dealt to
/// the folds in turn, then each class's samples (in order, or shuffled) fill its per-fold quotas.
/// Without shuffling the folds are scikit-learn's.
///
/// ```
/// use ferrograd_tuning::cv::{Splitter, StratifiedKFold};
/// let labels = [0i64, 0, 0, 0, 1, 1];
/// let folds = StratifiedKFold::new(2, &labels).split(6)?;
/// assert_eq!(folds[0].test, vec![0, 1, 4]);
/// assert_eq!(folds[1].test, vec![2, 3, 5]);
/// # Ok::<(), ferrograd_tuning::TuningError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StratifiedKFold {
    /// The number of folds (at least 2, at most the smallest class's size).
    pub n_splits: usize,
    /// Shuffle each class's samples with this seed before dealing them.
    pub shuffle: Option<u64>,
    labels: Vec<i64>,
}

impl StratifiedKFold {
    /// `n_splits` folds stratified on `labels` (one per sample).
    pub fn new(n_splits: usize, labels: &(impl Labels + ?Sized)) -> Self {
        StratifiedKFold { n_splits, shuffle: None, labels: labels.labels().into_owned() }
    }

    /// Shuffles within each class with `seed`.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }
}

impl Splitter for StratifiedKFold {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        const OP: &str = "StratifiedKFold";
        check_len(OP, "labels", self.labels.len(), n_samples)?;
        check_splits(OP, self.n_splits, n_samples)?;
        let k = self.n_splits;
        // Classes numbered in order of first appearance, as scikit-learn does for the allocation.
        let mut code_of: BTreeMap<i64, usize> = BTreeMap::new();
        let mut classes: Vec<i64> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut codes = Vec::with_capacity(n_samples);
        for (i, &l) in self.labels.iter().enumerate() {
            let c = *code_of.entry(l).or_insert_with(|| {
                classes.push(l);
                members.push(Vec::new());
                classes.len() - 1
            });
            members[c].push(i);
            codes.push(c);
        }
        if let Some((c, m)) = members.iter().enumerate().find(|(_, m)| m.len() < k) {
            return Err(TuningError::ClassTooSmall { op: OP, class: classes[c], count: m.len(), needed: k });
        }
        // quota[f][c]: how many of class c go to fold f, from dealing the sorted codes in turn.
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        let mut quota = vec![vec![0usize; classes.len()]; k];
        for (pos, &c) in sorted.iter().enumerate() {
            quota[pos % k][c] += 1;
        }
        let mut rng = self.shuffle.map(StdRng::seed_from_u64);
        let mut tests: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (c, m) in members.iter_mut().enumerate() {
            if let Some(rng) = rng.as_mut() {
                m.shuffle(rng);
            }
            let mut start = 0;
            for (f, test) in tests.iter_mut().enumerate() {
                test.extend_from_slice(&m[start..start + quota[f][c]]);
                start += quota[f][c];
            }
        }
        Ok(tests.into_iter().map(|t| fold_from_test(n_samples, t)).collect())
    }
}

/// Group k-fold: samples of one group are always on the same side. Groups are taken largest
/// first and each put in the fold with the fewest samples so far (scikit-learn's greedy
/// balancing), so fold sizes are close but not equal.
///
/// ```
/// use ferrograd_tuning::cv::{GroupKFold, Splitter};
/// let groups = [1i64, 1, 1, 2, 2, 3];
/// let folds = GroupKFold::new(2, &groups).split(6)?;
/// assert_eq!(folds[0].test, vec![0, 1, 2]);
/// assert_eq!(folds[1].test, vec![3, 4, 5]);
/// # Ok::<(), ferrograd_tuning::TuningError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKFold {
    /// The number of folds (at least 2, at most the number of distinct groups).
    pub n_splits: usize,
    groups: Vec<i64>,
}

impl GroupKFold {
    /// `n_splits` folds that never split a group; `groups` has one id per sample.
    pub fn new(n_splits: usize, groups: &(impl Labels + ?Sized)) -> Self {
        GroupKFold { n_splits, groups: groups.labels().into_owned() }
    }
}

impl Splitter for GroupKFold {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        const OP: &str = "GroupKFold";
        check_len(OP, "groups", self.groups.len(), n_samples)?;
        check_splits(OP, self.n_splits, n_samples)?;
        let (ids, codes) = encode(&self.groups);
        if ids.len() < self.n_splits {
            return Err(TuningError::TooFewGroups { op: OP, n_groups: ids.len(), n_splits: self.n_splits });
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
        for (i, &g) in codes.iter().enumerate() {
            members[g].push(i);
        }
        // Largest groups first; ties by group id, so the result does not depend on sort stability.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&g| (std::cmp::Reverse(members[g].len()), g));
        let mut tests: Vec<Vec<usize>> = vec![Vec::new(); self.n_splits];
        for g in order {
            let lightest = (0..self.n_splits).min_by_key(|&f| tests[f].len()).expect("n_splits >= 2");
            tests[lightest].extend_from_slice(&members[g]);
        }
        Ok(tests.into_iter().map(|t| fold_from_test(n_samples, t)).collect())
    }
}

/// Repeated k-fold: `n_repeats` shuffled [`KFold`]s, each with its own seed derived from `seed`;
/// `n_splits * n_repeats` folds in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatedKFold {
    /// Folds per repetition (at least 2).
    pub n_splits: usize,
    /// How many times k-fold is repeated (at least 1).
    pub n_repeats: usize,
    /// The seed of the first repetition's shuffle; repetition `r` uses `seed + r` (wrapping).
    pub seed: u64,
}

impl RepeatedKFold {
    /// `n_repeats` shuffled `n_splits`-fold splits from `seed`.
    pub fn new(n_splits: usize, n_repeats: usize, seed: u64) -> Self {
        RepeatedKFold { n_splits, n_repeats, seed }
    }
}

impl Splitter for RepeatedKFold {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        if self.n_repeats == 0 {
            return Err(TuningError::OutOfRange {
                op: "RepeatedKFold",
                name: "n_repeats",
                value: "0".into(),
                expected: "n_repeats >= 1",
            });
        }
        let mut folds = Vec::with_capacity(self.n_splits * self.n_repeats);
        for r in 0..self.n_repeats {
            folds.extend(KFold::new(self.n_splits).shuffle(self.seed.wrapping_add(r as u64)).split(n_samples)?);
        }
        Ok(folds)
    }
}

/// The number of test samples for a fraction, as scikit-learn: `ceil(test_size * n)`, with at
/// least one sample left on each side.
fn test_count(op: &'static str, test_size: f64, n_samples: usize) -> Result<usize, TuningError> {
    if !(test_size > 0.0 && test_size < 1.0) {
        return Err(TuningError::OutOfRange {
            op,
            name: "test_size",
            value: test_size.to_string(),
            expected: "a fraction strictly between 0 and 1",
        });
    }
    let n_test = (test_size * n_samples as f64).ceil() as usize;
    if n_test == 0 || n_test >= n_samples {
        return Err(TuningError::TooFewSamples {
            op,
            needed: format!("a test set of {n_test} and a non-empty training set"),
            n_samples,
        });
    }
    Ok(n_test)
}

/// Shuffle-split: `n_splits` independent random splits, each with `ceil(test_size * n)` test
/// samples and the rest for training. Test sets of different splits may overlap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShuffleSplit {
    /// The number of splits (at least 1).
    pub n_splits: usize,
    /// The test fraction, strictly between 0 and 1.
    pub test_size: f64,
    /// The seed of the permutations.
    pub seed: u64,
}

impl ShuffleSplit {
    /// `n_splits` random splits with a `test_size` fraction held out.
    pub fn new(n_splits: usize, test_size: f64, seed: u64) -> Self {
        ShuffleSplit { n_splits, test_size, seed }
    }
}

impl Splitter for ShuffleSplit {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        const OP: &str = "ShuffleSplit";
        if self.n_splits == 0 {
            return Err(TuningError::OutOfRange { op: OP, name: "n_splits", value: "0".into(), expected: ">= 1" });
        }
        let n_test = test_count(OP, self.test_size, n_samples)?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        Ok((0..self.n_splits)
            .map(|_| {
                let mut order: Vec<usize> = (0..n_samples).collect();
                order.shuffle(&mut rng);
                let mut train = order.split_off(n_test);
                train.sort_unstable();
                order.sort_unstable();
                Fold { train, test: order }
            })
            .collect())
    }
}

/// Time-series split: expanding windows. Fold `i` tests on the `i`-th of `n_splits`
/// consecutive blocks at the end of the series and trains on everything before it, minus `gap`
/// samples just before the test block (so no training sample is too close to a test one).
///
/// ```
/// use ferrograd_tuning::cv::{Splitter, TimeSeriesSplit};
/// let folds = TimeSeriesSplit::new(3).gap(1).split(8)?;
/// assert_eq!(folds[0].train, vec![0]);
/// assert_eq!(folds[0].test, vec![2, 3]);
/// assert_eq!(folds[2].train, vec![0, 1, 2, 3, 4]);
/// assert_eq!(folds[2].test, vec![6, 7]);
/// # Ok::<(), ferrograd_tuning::TuningError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSeriesSplit {
    /// The number of folds (at least 2).
    pub n_splits: usize,
    /// Samples dropped between the end of training and the start of the test block.
    pub gap: usize,
    /// Test block length; `None` is `n_samples / (n_splits + 1)`.
    pub test_size: Option<usize>,
    /// Keep only the last this many training samples (a sliding window).
    pub max_train_size: Option<usize>,
}

impl TimeSeriesSplit {
    /// `n_splits` expanding-window folds, no gap.
    pub fn new(n_splits: usize) -> Self {
        TimeSeriesSplit { n_splits, gap: 0, test_size: None, max_train_size: None }
    }

    /// Sets [`TimeSeriesSplit::gap`].
    pub fn gap(mut self, gap: usize) -> Self {
        self.gap = gap;
        self
    }

    /// Sets [`TimeSeriesSplit::test_size`].
    pub fn test_size(mut self, test_size: usize) -> Self {
        self.test_size = Some(test_size);
        self
    }

    /// Sets [`TimeSeriesSplit::max_train_size`].
    pub fn max_train_size(mut self, max_train_size: usize) -> Self {
        self.max_train_size = Some(max_train_size);
        self
    }
}

impl Splitter for TimeSeriesSplit {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        const OP: &str = "TimeSeriesSplit";
        check_splits(OP, self.n_splits, n_samples)?;
        let n_folds = self.n_splits + 1;
        if n_folds > n_samples {
            return Err(TuningError::TooFewSamples { op: OP, needed: format!("{n_folds} blocks"), n_samples });
        }
        let test_size = self.test_size.unwrap_or(n_samples / n_folds);
        let needed = test_size * self.n_splits + self.gap;
        if test_size == 0 || needed >= n_samples {
            return Err(TuningError::TooFewSamples {
                op: OP,
                needed: format!(
                    "{} test blocks of {test_size} after a gap of {} with training data left",
                    self.n_splits, self.gap
                ),
                n_samples,
            });
        }
        Ok((0..self.n_splits)
            .map(|i| {
                let test_start = n_samples - (self.n_splits - i) * test_size;
                let train_end = test_start - self.gap;
                let train_start = self.max_train_size.map_or(0, |m| train_end.saturating_sub(m));
                Fold { train: (train_start..train_end).collect(), test: (test_start..test_start + test_size).collect() }
            })
            .collect())
    }
}

/// One random split into train and test, `ceil(test_size * n)` test samples, optionally
/// stratified on `stratify` (one label per sample): each class then gives the test set its
/// share of `n_test`, rounded by largest remainder so the total is exact.
///
/// ```
/// use ferrograd_tuning::cv::train_test_split;
/// let labels = [0i64, 0, 0, 0, 0, 0, 1, 1, 1, 1];
/// let split = train_test_split(10, 0.5, 7, Some(&labels))?;
/// assert_eq!(split.test.len(), 5);
/// assert_eq!(split.test.iter().filter(|&&i| labels[i] == 1).count(), 2);
/// # Ok::<(), ferrograd_tuning::TuningError>(())
/// ```
///
/// # Errors
/// `test_size` not strictly between 0 and 1, a test or training set that would be empty,
/// labels of the wrong length, or (stratified) a class with a single member.
pub fn train_test_split(
    n_samples: usize,
    test_size: f64,
    seed: u64,
    stratify: Option<&[i64]>,
) -> Result<Fold, TuningError> {
    const OP: &str = "train_test_split";
    let n_test = test_count(OP, test_size, n_samples)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(labels) = stratify else {
        let mut order: Vec<usize> = (0..n_samples).collect();
        order.shuffle(&mut rng);
        order.truncate(n_test);
        return Ok(fold_from_test(n_samples, order));
    };
    check_len(OP, "stratify", labels.len(), n_samples)?;
    let (classes, codes) = encode(labels);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (i, &c) in codes.iter().enumerate() {
        members[c].push(i);
    }
    if let Some((c, m)) = members.iter().enumerate().find(|(_, m)| m.len() < 2) {
        return Err(TuningError::ClassTooSmall { op: OP, class: classes[c], count: m.len(), needed: 2 });
    }
    // Each class's exact share, floored, then the leftover samples to the largest remainders.
    let shares: Vec<f64> = members.iter().map(|m| m.len() as f64 * n_test as f64 / n_samples as f64).collect();
    let mut take: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..classes.len()).collect();
    by_remainder
        .sort_by(|&a, &b| (shares[b] - shares[b].floor()).total_cmp(&(shares[a] - shares[a].floor())).then(a.cmp(&b)));
    let mut left = n_test - take.iter().sum::<usize>();
    for c in by_remainder.into_iter().cycle() {
        if left == 0 {
            break;
        }
        if take[c] < members[c].len() {
            take[c] += 1;
            left -= 1;
        }
    }
    let mut test = Vec::with_capacity(n_test);
    for (m, &t) in members.iter_mut().zip(&take) {
        m.shuffle(&mut rng);
        test.extend_from_slice(&m[..t]);
    }
    Ok(fold_from_test(n_samples, test))
}

/// Bootstrap resampling: each of `n_iterations` folds trains on `n` indices drawn with
/// replacement and tests on the out-of-bag indices, those never drawn (about 36.8% of them).
/// With very few samples an out-of-bag set can be empty; [`cross_validate`] passes it on as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    /// The number of resamples (at least 1).
    pub n_iterations: usize,
    /// The seed of the draws.
    pub seed: u64,
}

impl Bootstrap {
    /// `n_iterations` bootstrap resamples from `seed`.
    pub fn new(n_iterations: usize, seed: u64) -> Self {
        Bootstrap { n_iterations, seed }
    }
}

impl Splitter for Bootstrap {
    fn split(&self, n_samples: usize) -> Result<Vec<Fold>, TuningError> {
        const OP: &str = "Bootstrap";
        if self.n_iterations == 0 {
            return Err(TuningError::OutOfRange { op: OP, name: "n_iterations", value: "0".into(), expected: ">= 1" });
        }
        if n_samples < 2 {
            return Err(TuningError::TooFewSamples { op: OP, needed: "a resample".into(), n_samples });
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        Ok((0..self.n_iterations)
            .map(|_| {
                let mut train: Vec<usize> = (0..n_samples).map(|_| rng.random_range(0..n_samples)).collect();
                train.sort_unstable();
                let mut drawn = train.clone();
                drawn.dedup();
                Fold { test: complement(n_samples, &drawn), train }
            })
            .collect())
    }
}

/// Efron's .632 bootstrap estimate, `0.368 * resubstitution + 0.632 * out_of_bag`: it mixes
/// the optimistic score on the training data with the pessimistic out-of-bag score. Works for
/// errors and for accuracies alike (it is linear).
///
/// ```
/// use ferrograd_tuning::cv::bootstrap_632;
/// assert!((bootstrap_632(0.0, 0.25) - 0.158).abs() < 1e-12);
/// ```
pub fn bootstrap_632(resubstitution: f64, out_of_bag: f64) -> f64 {
    0.368 * resubstitution + 0.632 * out_of_bag
}

/// Scores of every fold of a [`cross_validate`] run.
#[derive(Clone, Debug, PartialEq)]
pub struct CvResults {
    /// Each fold's metrics by name, in fold order.
    pub folds: Vec<BTreeMap<String, f64>>,
}

/// The mean and standard deviation of one metric over the folds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The mean over folds.
    pub mean: f64,
    /// The population standard deviation over folds (`numpy.std`, what scikit-learn reports).
    pub std: f64,
}

impl CvResults {
    /// The per-fold values of `metric`, or `None` if the folds do not report it.
    pub fn values(&self, metric: &str) -> Option<Vec<f64>> {
        self.folds.iter().map(|f| f.get(metric).copied()).collect()
    }

    /// The mean of `metric` over folds.
    pub fn mean(&self, metric: &str) -> Option<f64> {
        self.summary(metric).map(|s| s.mean)
    }

    /// The standard deviation of `metric` over folds (population, ddof 0).
    pub fn std(&self, metric: &str) -> Option<f64> {
        self.summary(metric).map(|s| s.std)
    }

    /// Mean and standard deviation of `metric`.
    pub fn summary(&self, metric: &str) -> Option<Summary> {
        let v = self.values(metric)?;
        if v.is_empty() {
            return None;
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        Some(Summary { mean, std })
    }

    /// Every metric's summary, by name.
    pub fn summaries(&self) -> BTreeMap<String, Summary> {
        let names = self.folds.first().map(|f| f.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        names.into_iter().filter_map(|n| self.summary(&n).map(|s| (n, s))).collect()
    }
}

/// Runs `score(fold, train, test)` on every fold of `splitter` over `n_samples` samples and
/// gathers the metrics it returns. The closure builds and fits a fresh model on `train` and
/// evaluates it on `test`; every fold must return the same metric names.
///
/// ```
/// use std::collections::BTreeMap;
/// use ferrograd_tuning::cv::{cross_validate, KFold};
///
/// // "Model": predict the mean of the training targets; score: mean absolute error.
/// let y = [1.0, 2.0, 3.0, 4.0];
/// let results = cross_validate(&KFold::new(2), y.len(), |_, train, test| {
///     let mean = train.iter().map(|&i| y[i]).sum::<f64>() / train.len() as f64;
///     let mae = test.iter().map(|&i| (y[i] - mean).abs()).sum::<f64>() / test.len() as f64;
///     Ok::<_, std::convert::Infallible>(BTreeMap::from([("mae".to_string(), mae)]))
/// })?;
/// assert_eq!(results.values("mae"), Some(vec![2.0, 2.0]));
/// assert_eq!((results.mean("mae"), results.std("mae")), (Some(2.0), Some(0.0)));
/// # Ok::<(), ferrograd_tuning::TuningError>(())
/// ```
///
/// # Errors
/// The splitter's errors, [`TuningError::Fold`] with the fold number if the closure fails, and
/// [`TuningError::MetricNames`] if folds return different metric names.
pub fn cross_validate<E>(
    splitter: &(impl Splitter + ?Sized),
    n_samples: usize,
    mut score: impl FnMut(usize, &[usize], &[usize]) -> Result<BTreeMap<String, f64>, E>,
) -> Result<CvResults, TuningError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let folds = splitter.split(n_samples)?;
    let mut out: Vec<BTreeMap<String, f64>> = Vec::with_capacity(folds.len());
    for (i, fold) in folds.iter().enumerate() {
        let metrics = score(i, &fold.train, &fold.test).map_err(|e| TuningError::Fold { fold: i, source: e.into() })?;
        if let Some(first) = out.first() {
            if !first.keys().eq(metrics.keys()) {
                return Err(TuningError::MetricNames {
                    fold: i,
                    expected: first.keys().cloned().collect(),
                    found: metrics.keys().cloned().collect(),
                });
            }
        }
        out.push(metrics);
    }
    Ok(CvResults { folds: out })
}
