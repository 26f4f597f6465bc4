//! Pruners decide from intermediate values ([`Trial::report`](super::Trial::report)) whether a
//! trial is worth finishing.

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
}

impl PercentilePruner {
    /// Keeps the best `percentile`% (0..=100); no pruning before `n_startup_trials` trials have
    /// completed nor before step `n_warmup_steps`.
    pub fn new(percentile: f64, n_startup_trials: usize, n_warmup_steps: u64) -> Result<Self, SearchError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(SearchError::InvalidOption(format!("percentile must be in [0, 100], got {percentile}")));
        }
        Ok(PercentilePruner { percentile, n_startup_trials, n_warmup_steps, n_min_trials: 1 })
    }

    /// At least this many trials must have reported the step before pruning (default 1).
    pub fn n_min_trials(mut self, n: usize) -> Self {
        self.n_min_trials = n.max(1);
        self
    }
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
        MedianPruner(PercentilePruner { percentile: 50.0, n_startup_trials, n_warmup_steps, n_min_trials: 1 })
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
        Ok(SuccessiveHalvingPruner { min_resource, reduction_factor })
    }

    /// The highest rung step at or below `step`.
    fn rung_at(&self, step: u64) -> Option<u64> {
        let mut rung = self.min_resource;
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
        let Some((step, _)) = trial.last_intermediate() else { return false };
        let Some(rung) = self.rung_at(step) else { return false };
        let Some(mine) = rung_value(trial, rung).map(|v| direction.loss(v)) else { return false };
        if mine.is_nan() {
            return true;
        }
        let mut competing: Vec<f64> = trials
            .iter()
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
