//! Pruners decide from intermediate values ([`Trial::report`](super::Trial::report)) whether a
//! trial is worth finishing.

use std::sync::OnceLock;

use super::error::SearchError;
use super::study::Direction;
use super::trial::{FrozenTrial, TrialState};

/// Decides whether to stop a running trial.
pub trait Pruner: Send + Sync {
    /// Whether `trial` (running, with its intermediate values so far) should stop, given every
    /// trial of the study.
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool;
}

/// Never prunes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopPruner;

impl Pruner for NopPruner {
    fn prune(&self, _: &[FrozenTrial], _: Direction, _: &FrozenTrial) -> bool {
        false
    }
}

/// Prunes a trial whose best intermediate value so far is worse than the given percentile of
/// the complete trials' values at the same step (Optuna's `PercentilePruner`).
#[derive(Debug, Clone)]
pub struct PercentilePruner {
    percentile: f64,
    n_startup_trials: usize,
    n_warmup_steps: u64,
    n_min_trials: usize,
    interval_steps: u64,
}

impl PercentilePruner {
    /// Keeps the best `percentile`% (0..=100); no pruning before `n_startup_trials` trials have
    /// completed nor before step `n_warmup_steps`.
    pub fn new(percentile: f64, n_startup_trials: usize, n_warmup_steps: u64) -> Result<Self, SearchError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(SearchError::InvalidOption(format!("percentile must be in [0, 100], got {percentile}")));
        }
        Ok(PercentilePruner { percentile, n_startup_trials, n_warmup_steps, n_min_trials: 1, interval_steps: 1 })
    }

    /// At least this many trials must have reported the step before pruning (default 1).
    pub fn n_min_trials(mut self, n: usize) -> Self {
        self.n_min_trials = n.max(1);
        self
    }

    /// Decides only at every `interval_steps`-th step after the warm-up (steps
    /// `n_warmup_steps + k * interval_steps`, or the first report past one); default 1, every
    /// step. As Optuna, a trial is judged at a report when its previous report came before the
    /// latest such step. Panics when `interval_steps` is 0.
    ///
    /// ```
    /// use ferrograd_tuning::search::PercentilePruner;
    /// let pruner = PercentilePruner::new(25.0, 5, 30)?.interval_steps(10).n_min_trials(3);
    /// # Ok::<(), ferrograd_tuning::search::SearchError>(())
    /// ```
    #[track_caller]
    pub fn interval_steps(mut self, interval_steps: u64) -> Self {
        assert!(interval_steps >= 1, "PercentilePruner::interval_steps must be at least 1, got 0");
        self.interval_steps = interval_steps;
        self
    }
}

/// Whether `step` (the trial's last report) is the first report at or after the latest pruning
/// step `n_warmup + k * interval` (Optuna's `_is_first_in_interval_step`).
fn first_in_interval(trial: &FrozenTrial, step: u64, n_warmup: u64, interval: u64) -> bool {
    let nearest = (step - n_warmup) / interval * interval + n_warmup;
    let previous = trial.intermediate.range(..step).next_back().map(|(s, _)| *s);
    previous.is_none_or(|p| p < nearest)
}

/// The `q`-th percentile (0..=100) of `v`, linear interpolation as numpy's default.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < v.len() {
        v[i] + frac * (v[i + 1] - v[i])
    } else {
        v[i]
    }
}

impl Pruner for PercentilePruner {
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool {
        let Some((step, _)) = trial.last_intermediate() else { return false };
        let complete: Vec<&FrozenTrial> = trials.iter().filter(|t| t.state == TrialState::Complete).collect();
        if complete.len() < self.n_startup_trials || step < self.n_warmup_steps {
            return false;
        }
        if !first_in_interval(trial, step, self.n_warmup_steps, self.interval_steps) {
            return false;
        }
        let mut at_step: Vec<f64> = complete
            .iter()
            .filter_map(|t| t.intermediate.get(&step).copied())
            .filter(|v| !v.is_nan())
            .map(|v| direction.loss(v))
            .collect();
        if at_step.len() < self.n_min_trials {
            return false;
        }
        let best =
            trial.intermediate.values().map(|v| direction.loss(*v)).filter(|v| !v.is_nan()).fold(f64::NAN, f64::min);
        if best.is_nan() {
            return true;
        }
        best > percentile(&mut at_step, self.percentile)
    }
}

/// Prunes a trial whose best intermediate value is worse than the median of the complete trials'
/// values at the same step (a [`PercentilePruner`] at 50%).
#[derive(Debug, Clone)]
pub struct MedianPruner(PercentilePruner);

impl MedianPruner {
    /// No pruning before `n_startup_trials` trials have completed nor before step `n_warmup_steps`.
    pub fn new(n_startup_trials: usize, n_warmup_steps: u64) -> Self {
        MedianPruner(PercentilePruner {
            percentile: 50.0,
            n_startup_trials,
            n_warmup_steps,
            n_min_trials: 1,
            interval_steps: 1,
        })
    }
}

impl MedianPruner {
    /// At least this many complete trials must have reported the step before pruning (default 1).
    pub fn n_min_trials(self, n: usize) -> Self {
        MedianPruner(self.0.n_min_trials(n))
    }

    /// Decides only every `interval_steps` steps after the warm-up (see
    /// [`PercentilePruner::interval_steps`]). Panics when `interval_steps` is 0.
    ///
    /// ```
    /// use ferrograd_tuning::search::{MedianPruner, Study};
    /// let study = Study::builder().pruner(MedianPruner::new(5, 10).interval_steps(5).n_min_trials(3)).build();
    /// ```
    #[track_caller]
    pub fn interval_steps(self, interval_steps: u64) -> Self {
        MedianPruner(self.0.interval_steps(interval_steps))
    }
}

impl Default for MedianPruner {
    /// Optuna's defaults: 5 startup trials, no warm-up.
    fn default() -> Self {
        MedianPruner::new(5, 0)
    }
}

impl Pruner for MedianPruner {
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool {
        self.0.prune(trials, direction, trial)
    }
}

/// Asynchronous successive halving: rungs at steps `min_resource * reduction_factor^k`; at each
/// rung a trial continues only if it is in the best `1 / reduction_factor` of the trials that
/// reached that rung (the first trial to reach a rung passes).
#[derive(Debug, Clone)]
pub struct SuccessiveHalvingPruner {
    min_resource: u64,
    reduction_factor: u64,
    min_early_stopping_rate: u32,
}

impl SuccessiveHalvingPruner {
    /// Rungs at `min_resource * reduction_factor^k`; `min_resource >= 1`, `reduction_factor >= 2`.
    pub fn new(min_resource: u64, reduction_factor: u64) -> Result<Self, SearchError> {
        if min_resource < 1 || reduction_factor < 2 {
            return Err(SearchError::InvalidOption(format!(
                "successive halving needs min_resource >= 1 and reduction_factor >= 2, got {min_resource} and \
                 {reduction_factor}"
            )));
        }
        Ok(SuccessiveHalvingPruner { min_resource, reduction_factor, min_early_stopping_rate: 0 })
    }

    /// Starts the rungs `min_early_stopping_rate` rungs later, at `min_resource *
    /// reduction_factor^min_early_stopping_rate` (default 0; Hyperband's brackets differ in it).
    pub fn min_early_stopping_rate(mut self, rate: u32) -> Self {
        self.min_early_stopping_rate = rate;
        self
    }

    /// The step of the first rung, saturating.
    fn first_rung(&self) -> u64 {
        self.reduction_factor
            .checked_pow(self.min_early_stopping_rate)
            .and_then(|f| f.checked_mul(self.min_resource))
            .unwrap_or(u64::MAX)
    }

    /// The highest rung step at or below `step`.
    fn rung_at(&self, step: u64) -> Option<u64> {
        let mut rung = self.first_rung();
        if step < rung {
            return None;
        }
        while let Some(next) = rung.checked_mul(self.reduction_factor).filter(|n| *n <= step) {
            rung = next;
        }
        Some(rung)
    }
}

/// A trial's value at a rung: the first value reported at or after the rung's step.
fn rung_value(t: &FrozenTrial, rung: u64) -> Option<f64> {
    t.intermediate.range(rung..).next().map(|(_, v)| *v)
}

impl Pruner for SuccessiveHalvingPruner {
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool {
        self.prune_among(trials.iter(), direction, trial)
    }
}

impl SuccessiveHalvingPruner {
    /// [`Pruner::prune`] with the competing trials given as references (Hyperband passes the
    /// trials of one bracket).
    fn prune_among<'a>(
        &self,
        trials: impl Iterator<Item = &'a FrozenTrial>,
        direction: Direction,
        trial: &FrozenTrial,
    ) -> bool {
        let Some((step, _)) = trial.last_intermediate() else { return false };
        let Some(rung) = self.rung_at(step) else { return false };
        let Some(mine) = rung_value(trial, rung).map(|v| direction.loss(v)) else { return false };
        if mine.is_nan() {
            return true;
        }
        let mut competing: Vec<f64> = trials
            .filter(|t| t.number != trial.number && t.state != TrialState::Failed)
            .filter_map(|t| rung_value(t, rung))
            .map(|v| direction.loss(v))
            .filter(|v| !v.is_nan())
            .collect();
        competing.push(mine);
        competing.sort_by(f64::total_cmp);
        let k = (competing.len() / self.reduction_factor as usize).max(1) - 1;
        mine > competing[k]
    }
}

/// Hyperband (Li et al. 2018) as Optuna's `HyperbandPruner`: several successive-halving
/// brackets that differ in how early they start pruning, bracket `s` with its first rung at
/// `min_resource * reduction_factor^s`. Each trial belongs to one bracket, chosen by a hash of
/// its number with Hyperband's proportions (bracket `s` of `n` gets a share
/// `ceil(n * reduction_factor^(n-1-s) / (n - s))`), and competes only with trials of its bracket.
/// There are `floor(log_reduction_factor(max_resource / min_resource)) + 1` brackets.
///
/// ```
/// use ferrograd_tuning::search::{HyperbandPruner, SearchError, Study};
/// let pruner = HyperbandPruner::new(1, Some(27), 3)?;
/// assert_eq!(pruner.n_brackets(), Some(4));
/// let study = Study::builder().pruner(pruner).build();
/// study.optimize(20, |t| {
///     let x = t.suggest_float("x", 0.0, 1.0, false)?;
///     for step in 1..=27 {
///         t.report(step, x / step as f64);
///         if t.should_prune() {
///             return Err(t.pruned());
///         }
///     }
///     Ok::<_, SearchError>(x / 27.0)
/// })?;
/// # Ok::<(), SearchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HyperbandPruner {
    min_resource: u64,
    reduction_factor: u64,
    brackets: OnceLock<Brackets>,
}

#[derive(Debug, Clone)]
struct Brackets {
    pruners: Vec<SuccessiveHalvingPruner>,
    budgets: Vec<u64>,
}

impl HyperbandPruner {
    /// Brackets between `min_resource` (`>= 1`) and `max_resource` (at least `min_resource`;
    /// `None` is Optuna's `"auto"`: one more than the last step of the first trials to complete,
    /// and no pruning until a trial completes), `reduction_factor >= 2`.
    pub fn new(min_resource: u64, max_resource: Option<u64>, reduction_factor: u64) -> Result<Self, SearchError> {
        if min_resource < 1 || reduction_factor < 2 || max_resource.is_some_and(|m| m < min_resource) {
            return Err(SearchError::InvalidOption(format!(
                "hyperband needs min_resource >= 1, max_resource >= min_resource and reduction_factor >= 2, got \
                 {min_resource}, {max_resource:?} and {reduction_factor}"
            )));
        }
        let pruner = HyperbandPruner { min_resource, reduction_factor, brackets: OnceLock::new() };
        if let Some(max) = max_resource {
            let _ = pruner.brackets.set(pruner.make_brackets(max));
        }
        Ok(pruner)
    }

    fn make_brackets(&self, max_resource: u64) -> Brackets {
        // floor(log_eta(max / min)) in integers: the largest n with min * eta^n <= max.
        let mut n = 0u32;
        while self
            .reduction_factor
            .checked_pow(n + 1)
            .and_then(|f| f.checked_mul(self.min_resource))
            .is_some_and(|r| r <= max_resource)
        {
            n += 1;
        }
        let n_brackets = n + 1;
        let pruners = (0..n_brackets)
            .map(|s| SuccessiveHalvingPruner {
                min_resource: self.min_resource,
                reduction_factor: self.reduction_factor,
                min_early_stopping_rate: s,
            })
            .collect();
        let budgets = (0..n_brackets)
            .map(|b| {
                let s = n_brackets - 1 - b;
                let num = u128::from(n_brackets) * u128::from(self.reduction_factor).pow(s);
                num.div_ceil(u128::from(s + 1)).min(u128::from(u64::MAX / 64)) as u64
            })
            .collect();
        Brackets { pruners, budgets }
    }

    fn resolved(&self, trials: &[FrozenTrial]) -> Option<&Brackets> {
        if let Some(b) = self.brackets.get() {
            return Some(b);
        }
        let last = trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(|t| t.last_intermediate().map(|(s, _)| s))
            .max()?;
        Some(self.brackets.get_or_init(|| self.make_brackets(last.saturating_add(1).max(self.min_resource))))
    }

    /// The number of brackets, once `max_resource` is known.
    pub fn n_brackets(&self) -> Option<usize> {
        self.brackets.get().map(|b| b.pruners.len())
    }

    /// Each bracket's share of trials (Hyperband's `n` per bracket), once `max_resource` is known.
    pub fn bracket_budgets(&self) -> Option<Vec<u64>> {
        self.brackets.get().map(|b| b.budgets.clone())
    }

    /// The bracket of trial `number`, once `max_resource` is known.
    pub fn bracket(&self, number: u64) -> Option<usize> {
        self.brackets.get().map(|b| bracket_of(b, number))
    }
}

fn bracket_of(b: &Brackets, number: u64) -> usize {
    let total: u64 = b.budgets.iter().sum();
    let mut n = super::study::trial_seed(0x4879_7065_7262_616E, number) % total;
    for (i, budget) in b.budgets.iter().enumerate() {
        if n < *budget {
            return i;
        }
        n -= budget;
    }
    unreachable!("the hash is below the total of the budgets")
}

impl Default for HyperbandPruner {
    /// Optuna's defaults: `min_resource` 1, `max_resource` "auto", `reduction_factor` 3.
    fn default() -> Self {
        HyperbandPruner::new(1, None, 3).expect("the defaults are valid")
    }
}

impl Pruner for HyperbandPruner {
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool {
        let Some(b) = self.resolved(trials) else { return false };
        let mine = bracket_of(b, trial.number);
        let same = trials.iter().filter(|t| bracket_of(b, t.number) == mine);
        b.pruners[mine].prune_among(same, direction, trial)
    }
}

/// Prunes a trial whose intermediate values stopped improving: its best over the last
/// `patience + 1` reports is worse, by more than `min_delta`, than its best before them
/// (Optuna's `PatientPruner`, NaN ignored). With a wrapped pruner, that pruner must also agree.
///
/// ```
/// use ferrograd_tuning::search::{MedianPruner, PatientPruner, Study};
/// let pruner = PatientPruner::new(3, 0.0)?.wrapping(MedianPruner::default());
/// let study = Study::builder().pruner(pruner).build();
/// # Ok::<(), ferrograd_tuning::search::SearchError>(())
/// ```
pub struct PatientPruner {
    wrapped: Option<Box<dyn Pruner>>,
    patience: usize,
    min_delta: f64,
}

impl PatientPruner {
    /// Prunes when the best of the last `patience + 1` reports is worse than the best before
    /// them by more than `min_delta` (`>= 0`, a tolerance).
    pub fn new(patience: usize, min_delta: f64) -> Result<Self, SearchError> {
        if !(min_delta >= 0.0 && min_delta.is_finite()) {
            return Err(SearchError::InvalidOption(format!("PatientPruner: min_delta must be >= 0, got {min_delta}")));
        }
        Ok(PatientPruner { wrapped: None, patience, min_delta })
    }

    /// Prunes only when `pruner` also says so.
    pub fn wrapping(mut self, pruner: impl Pruner + 'static) -> Self {
        self.wrapped = Some(Box::new(pruner));
        self
    }
}

impl std::fmt::Debug for PatientPruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientPruner")
            .field("patience", &self.patience)
            .field("min_delta", &self.min_delta)
            .field("wrapped", &self.wrapped.is_some())
            .finish()
    }
}

impl Pruner for PatientPruner {
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool {
        let n = trial.intermediate.len();
        if n <= self.patience + 1 {
            return false;
        }
        let losses: Vec<f64> = trial.intermediate.values().map(|v| direction.loss(*v)).collect();
        let (before, after) = losses.split_at(n - self.patience - 1);
        // NaN is ignored, as numpy's nanmin.
        let best = |v: &[f64]| v.iter().copied().filter(|x| !x.is_nan()).fold(f64::INFINITY, f64::min);
        let stalled = best(before) + self.min_delta < best(after);
        stalled && self.wrapped.as_ref().is_none_or(|p| p.prune(trials, direction, trial))
    }
}

/// Prunes a trial whose intermediate values are, step by step, significantly worse than the best
/// trial's at the same steps (Optuna's `WilcoxonPruner`): for objectives averaged over instances
/// (folds, datasets, seeds) reported one per step in any order. A one-sided Wilcoxon
/// signed-rank test of the differences (zeros split between the signs, exact for up to 50
/// differences without ties or zeros, an exact permutation test for up to 13 with them, the
/// normal approximation (tie-corrected) beyond: scipy's choices) gives `p`; the trial
/// is pruned when `p < p_threshold`, unless its average is better than the best trial's. No
/// pruning before `max(2, n_startup_steps)` shared steps, nor with non-finite values.
///
/// ```
/// use ferrograd_tuning::search::{SearchError, Study, WilcoxonPruner};
/// let study = Study::builder().pruner(WilcoxonPruner::new(0.1, 2)?).build();
/// study.optimize(10, |t| {
///     let x = t.suggest_float("x", -1.0, 1.0, false)?;
///     let mut sum = 0.0;
///     for fold in 0..8u64 {
///         let loss = (x - 0.1 * fold as f64).powi(2);
///         t.report(fold, loss);
///         sum += loss;
///         if t.should_prune() {
///             return Err(t.pruned());
///         }
///     }
///     Ok::<_, SearchError>(sum / 8.0)
/// })?;
/// # Ok::<(), SearchError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WilcoxonPruner {
    p_threshold: f64,
    n_startup_steps: usize,
}

impl WilcoxonPruner {
    /// Prunes at `p < p_threshold` (in `[0, 1]`; Optuna's default 0.1) once at least
    /// `n_startup_steps` steps (default 2) are shared with the best trial.
    pub fn new(p_threshold: f64, n_startup_steps: usize) -> Result<Self, SearchError> {
        if !(0.0..=1.0).contains(&p_threshold) {
            return Err(SearchError::InvalidOption(format!(
                "WilcoxonPruner: p_threshold must be in [0, 1], got {p_threshold}"
            )));
        }
        Ok(WilcoxonPruner { p_threshold, n_startup_steps })
    }
}

impl Default for WilcoxonPruner {
    /// Optuna's defaults: `p_threshold` 0.1, `n_startup_steps` 2.
    fn default() -> Self {
        WilcoxonPruner { p_threshold: 0.1, n_startup_steps: 2 }
    }
}

impl Pruner for WilcoxonPruner {
    fn prune(&self, trials: &[FrozenTrial], direction: Direction, trial: &FrozenTrial) -> bool {
        if trial.intermediate.is_empty() || trial.intermediate.values().any(|v| !v.is_finite()) {
            return false;
        }
        let mut best: Option<&FrozenTrial> = None;
        for t in trials.iter().filter(|t| t.state == TrialState::Complete) {
            let Some(v) = t.value else { continue };
            if best.is_none_or(|b| direction.loss(v) < direction.loss(b.value.unwrap_or(f64::NAN))) {
                best = Some(t);
            }
        }
        let Some(best) = best else { return false };
        if best.intermediate.is_empty() || best.intermediate.values().any(|v| !v.is_finite()) {
            return false;
        }
        // Differences as losses: positive where this trial is worse.
        let diffs: Vec<f64> = trial
            .intermediate
            .iter()
            .filter_map(|(s, v)| best.intermediate.get(s).map(|b| direction.loss(*v) - direction.loss(*b)))
            .collect();
        if diffs.len() < self.n_startup_steps.max(2) {
            return false;
        }
        let mean = |t: &FrozenTrial| {
            t.intermediate.values().map(|v| direction.loss(*v)).sum::<f64>() / t.intermediate.len() as f64
        };
        let average_is_best = mean(best) >= mean(trial);
        let p = wilcoxon_greater(&diffs);
        p < self.p_threshold && !average_is_best
    }
}

/// The one-sided (`greater`) p-value of Wilcoxon's signed-rank test of `d`, zeros split between
/// the signs, with scipy's choice of method.
fn wilcoxon_greater(d: &[f64]) -> f64 {
    let n = d.len();
    // Average ranks of |d|, and the tie groups' sizes.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()));
    let mut ranks = vec![0.0; n];
    let mut ties = false;
    let mut tie_correct = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && d[order[j]].abs() == d[order[i]].abs() {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = avg;
        }
        let t = (j - i) as f64;
        tie_correct += t * t * t - t;
        ties |= j - i > 1;
        i = j;
    }
    let zeros = d.contains(&0.0);
    let r_plus = |signs: &mut dyn Iterator<Item = f64>| -> f64 {
        signs
            .zip(&ranks)
            .map(|(x, r)| {
                if x > 0.0 {
                    *r
                } else if x == 0.0 {
                    r / 2.0
                } else {
                    0.0
                }
            })
            .sum()
    };
    let observed = r_plus(&mut d.iter().copied());
    if n <= 50 && !ties && !zeros {
        // Exact: the number of subsets of {1..n} by their sum.
        let max = n * (n + 1) / 2;
        let mut counts = vec![0.0f64; max + 1];
        counts[0] = 1.0;
        for k in 1..=n {
            for s in (k..=max).rev() {
                counts[s] += counts[s - k];
            }
        }
        let total = 2f64.powi(n as i32);
        let k = observed.floor() as usize;
        return counts[k.min(max + 1)..].iter().sum::<f64>() / total;
    }
    if n <= 13 {
        // Every sign flip of the differences (|d| and so the ranks stay), as scipy's
        // permutation test enumerates them; ties within a relative 1e-14 count as reached.
        let mut reached = 0usize;
        let tol = observed.abs() * 1e-14;
        for mask in 0u32..(1 << n) {
            let mut flipped = d.iter().enumerate().map(|(i, x)| if mask & (1 << i) != 0 { -x } else { *x });
            if r_plus(&mut flipped) >= observed - tol {
                reached += 1;
            }
        }
        return reached as f64 / (1u64 << n) as f64;
    }
    let nf = n as f64;
    let mn = nf * (nf + 1.0) / 4.0;
    let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_correct / 2.0) / 24.0).sqrt();
    // scipy's default: no continuity correction.
    let z = (observed - mn) / se;
    super::importance::normal_cdf(-z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 50.0), 2.5);
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 25.0), 2.0);
        assert_eq!(percentile(&mut [7.0], 90.0), 7.0);
    }

    #[test]
    fn rungs() {
        let p = SuccessiveHalvingPruner::new(1, 3).unwrap();
        assert_eq!(p.rung_at(0), None);
        assert_eq!(p.rung_at(2), Some(1));
        assert_eq!(p.rung_at(3), Some(3));
        assert_eq!(p.rung_at(26), Some(9));
    }
}
