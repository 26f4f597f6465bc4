//! Hyperparameter importances: how much each parameter decides whether a trial is among the good
//! ones. [`PedAnovaImportanceEvaluator`] (Watanabe et al., IJCAI 2023, as Optuna's
//! `PedAnovaImportanceEvaluator`) compares, per parameter, the distribution of the top
//! `target_quantile` of the complete trials with that of all of them (or of the top
//! `region_quantile`): a parameter whose good values are spread as all values are matters
//! little; one whose good values gather in a corner matters much. Each distribution is a Parzen
//! estimator on a grid of at most 50 points (Scott's bandwidth), and the importance is their
//! Pearson divergence. Cheap (no model fitting), and defined for conditional parameters.
//!
//! ```
//! use ferrograd_tuning::search::importance::param_importances;
//! use ferrograd_tuning::search::{SearchError, Study};
//! let study = Study::builder().seed(0).build();
//! study.optimize(100, |t| {
//!     let x = t.suggest_float("x", -1.0, 1.0, false)?;
//!     let y = t.suggest_float("y", -1.0, 1.0, false)?;
//!     Ok::<_, SearchError>(x * x + 0.01 * y)
//! })?;
//! let importances = param_importances(&study)?;
//! assert_eq!(importances[0].0, "x");
//! assert!((importances.iter().map(|(_, v)| v).sum::<f64>() - 1.0).abs() < 1e-12);
//! # Ok::<(), SearchError>(())
//! ```

use std::collections::BTreeSet;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::multi::{hypervolume_contributions, losses, non_dominated_ranks};
use super::study::{Direction, Study};
use super::trial::{FrozenTrial, TrialState};

/// What importances are computed for: a trial's value to minimise (`None`: the study's own
/// objective, or for several objectives the trial's closeness to the Pareto front).
pub type Target<'a> = &'a dyn Fn(&FrozenTrial) -> f64;

/// Computes one importance per parameter from the complete trials.
pub trait ImportanceEvaluator {
    /// The unnormalised importance of each of `params` (same order), from `trials` (complete,
    /// with finite values) under `directions`, or of reaching low `target` values.
    fn evaluate(
        &self,
        trials: &[&FrozenTrial],
        directions: &[Direction],
        params: &[String],
        target: Option<Target<'_>>,
    ) -> Vec<f64>;
}

/// PED-ANOVA with Optuna's defaults: target quantile 0.1, region quantile 1.0, evaluated on the
/// region's own distribution (not the search space's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PedAnovaImportanceEvaluator {
    target_quantile: f64,
    region_quantile: f64,
    evaluate_on_local: bool,
}

impl Default for PedAnovaImportanceEvaluator {
    fn default() -> Self {
        PedAnovaImportanceEvaluator { target_quantile: 0.1, region_quantile: 1.0, evaluate_on_local: true }
    }
}

/// Grid points of a numerical parameter's estimator.
const N_STEPS: usize = 50;
/// Weight of the prior kernel in each estimator.
const PRIOR_WEIGHT: f64 = 1.0;
/// Trials a regime (the trials where a parameter has one distribution) needs to count.
const MIN_TRIALS_IN_REGIME: usize = 2;

impl PedAnovaImportanceEvaluator {
    /// Optuna's defaults.
    pub fn new() -> Self {
        PedAnovaImportanceEvaluator::default()
    }

    /// The share of trials counted as good (`gamma'`, default 0.1): `0 < target_quantile <
    /// region_quantile`.
    #[track_caller]
    pub fn target_quantile(mut self, q: f64) -> Self {
        assert!(q > 0.0 && q < 1.0, "PedAnovaImportanceEvaluator::target_quantile must be in (0, 1), got {q}");
        self.target_quantile = q;
        self
    }

    /// The share of trials the good ones are compared with (`gamma`, default 1.0: all).
    #[track_caller]
    pub fn region_quantile(mut self, q: f64) -> Self {
        assert!(q > 0.0 && q <= 1.0, "PedAnovaImportanceEvaluator::region_quantile must be in (0, 1], got {q}");
        self.region_quantile = q;
        self
    }

    /// Whether the good trials are compared with the region's trials (default `true`: how
    /// much a parameter mattered during this study) or with a uniform spread over the search
    /// space (how much it matters in the space).
    pub fn evaluate_on_local(mut self, local: bool) -> Self {
        self.evaluate_on_local = local;
        self
    }

    /// The trials of the top `quantile` (ties at the cut-off kept), as indices into `trials`.
    fn top(
        &self,
        trials: &[&FrozenTrial],
        directions: &[Direction],
        quantile: f64,
        target: Option<Target<'_>>,
    ) -> Vec<usize> {
        let n = trials.len();
        if quantile >= 1.0 {
            return (0..n).collect();
        }
        let n_below = ((quantile * n as f64).ceil() as usize).max(1);
        if target.is_none() && directions.len() > 1 {
            return top_multi(trials, directions, n_below);
        }
        let loss: Vec<f64> = trials
            .iter()
            .map(|t| match target {
                Some(f) => f(t),
                None => directions[0].loss(t.values[0]),
            })
            .collect();
        let mut sorted = loss.clone();
        sorted.sort_by(f64::total_cmp);
        let cutoff = sorted[n_below - 1];
        (0..n).filter(|&i| loss[i] <= cutoff).collect()
    }
}

/// With several objectives: whole non-domination fronts in rank order, the last one cut by
/// greedy hypervolume contribution (Optuna's HSSP tie-break).
fn top_multi(trials: &[&FrozenTrial], directions: &[Direction], n_below: usize) -> Vec<usize> {
    let points: Vec<Vec<f64>> = trials.iter().map(|t| losses(&t.values, directions)).collect();
    let ranks = non_dominated_ranks(&points);
    let mut chosen = Vec::new();
    for r in 0.. {
        let front: Vec<usize> = (0..points.len()).filter(|&i| ranks[i] == r).collect();
        if chosen.len() + front.len() <= n_below {
            chosen.extend(front);
            if chosen.len() == n_below {
                break;
            }
            continue;
        }
        // Keep the points that add most hypervolume, greedily, with a reference just beyond the
        // front's worst point.
        let mut left = front;
        let reference: Vec<f64> = (0..directions.len())
            .map(|m| {
                let worst = left.iter().map(|&i| points[i][m]).fold(f64::NEG_INFINITY, f64::max);
                let best = left.iter().map(|&i| points[i][m]).fold(f64::INFINITY, f64::min);
                worst + (worst - best).abs().max(1e-12) * 0.1 + 1e-12
            })
            .collect();
        let mut picked: Vec<usize> = Vec::new();
        while chosen.len() + picked.len() < n_below {
            let candidates: Vec<Vec<f64>> = left.iter().map(|&i| points[i].clone()).collect();
            let mut best_k = 0;
            let mut best_gain = f64::NEG_INFINITY;
            for (k, c) in candidates.iter().enumerate() {
                let mut set: Vec<Vec<f64>> = picked.iter().map(|&i| points[i].clone()).collect();
                set.push(c.clone());
                let gain = *hypervolume_contributions(&set, &reference).last().expect("one point was added");
                if gain > best_gain {
                    best_gain = gain;
                    best_k = k;
                }
            }
            picked.push(left.remove(best_k));
        }
        chosen.extend(picked);
        break;
    }
    chosen.sort_unstable();
    chosen
}

impl ImportanceEvaluator for PedAnovaImportanceEvaluator {
    fn evaluate(
        &self,
        trials: &[&FrozenTrial],
        directions: &[Direction],
        params: &[String],
        target: Option<Target<'_>>,
    ) -> Vec<f64> {
        if trials.len() <= 1 {
            return vec![0.0; params.len()];
        }
        let top = self.top(trials, directions, self.target_quantile, target);
        let region = self.top(trials, directions, self.region_quantile, target);
        if top.is_empty() {
            return vec![0.0; params.len()];
        }
        let in_top: BTreeSet<usize> = top.iter().copied().collect();
        let quantile = top.len() as f64 / region.len() as f64;
        params
            .iter()
            .map(|name| {
                // Regimes: the region's trials grouped by the distribution `name` had in them.
                let mut regimes: Vec<(&Distribution, Vec<usize>)> = Vec::new();
                for &i in &region {
                    let Some(d) = trials[i].distributions.get(name) else { continue };
                    match regimes.iter_mut().find(|(r, _)| *r == d) {
                        Some((_, v)) => v.push(i),
                        None => regimes.push((d, vec![i])),
                    }
                }
                let mut importance = 0.0;
                for (dist, members) in regimes {
                    if members.len() < MIN_TRIALS_IN_REGIME || dist.is_single() {
                        continue;
                    }
                    let good: Vec<usize> = members.iter().copied().filter(|i| in_top.contains(i)).collect();
                    if good.is_empty() {
                        continue;
                    }
                    let alpha = good.len() as f64 / top.len() as f64;
                    let beta = members.len() as f64 / region.len() as f64;
                    let values =
                        |idx: &[usize]| -> Vec<&ParamValue> { idx.iter().map(|&i| &trials[i].params[name]).collect() };
                    let p_top = grid_pdf(dist, &values(&good));
                    let p_local = if self.evaluate_on_local {
                        grid_pdf(dist, &values(&members))
                    } else {
                        vec![1.0 / p_top.len() as f64; p_top.len()]
                    };
                    let divergence: f64 = p_top
                        .iter()
                        .zip(&p_local)
                        .map(|(t, l)| {
                            let (t, l) = (t + 1e-12, l + 1e-12);
                            l * (t / l - 1.0).powi(2)
                        })
                        .sum();
                    importance += alpha * alpha / beta * divergence;
                }
                importance * quantile * quantile
            })
            .collect()
    }
}

/// The grid a parameter's values are counted on, and each value's cell.
fn grid_counts(dist: &Distribution, values: &[&ParamValue]) -> Vec<f64> {
    match dist {
        Distribution::Categorical { choices } => {
            let mut counts = vec![0.0; choices.len()];
            for v in values {
                if let Some(i) = dist.to_internal(v) {
                    counts[i as usize] += 1.0;
                }
            }
            counts
        }
        _ => {
            let (low, high, log) = match *dist {
                Distribution::Float { low, high, log, .. } => (low, high, log),
                Distribution::Int { low, high, log, .. } => (low as f64, high as f64, log),
                Distribution::Categorical { .. } => unreachable!("handled above"),
            };
            let n_steps = match *dist {
                Distribution::Int { low, high, log: true, .. } => {
                    let log2_domain = ((high as f64 - low as f64 + 1.0).ln() / 2f64.ln()).ceil() as usize + 1;
                    log2_domain.min(N_STEPS)
                }
                Distribution::Int { low, high, step, .. } => ((high - low) / step + 1).min(N_STEPS as i64) as usize,
                Distribution::Float { low, high, step: Some(s), .. } => {
                    (((high - low) / s).round() as usize + 1).min(N_STEPS)
                }
                _ => N_STEPS,
            }
            .max(2);
            let (lo, hi) = if log { (low.ln(), high.ln()) } else { (low, high) };
            let width = (hi - lo) / (n_steps - 1) as f64;
            let mut counts = vec![0.0; n_steps];
            for v in values {
                let Some(x) = v.as_f64() else { continue };
                let x = if log { x.ln() } else { x };
                let cell = ((x - lo) / width - 0.5).ceil();
                counts[cell.clamp(0.0, (n_steps - 1) as f64) as usize] += 1.0;
            }
            counts
        }
    }
}

/// Scott's Parzen estimator of `values` on the parameter's grid (Optuna's
/// `ScottParzenEstimator`): a kernel per occupied cell weighted by its count, plus a broad prior
/// kernel; the probability of each cell.
fn grid_pdf(dist: &Distribution, values: &[&ParamValue]) -> Vec<f64> {
    let counts = grid_counts(dist, values);
    let n = counts.len();
    let obs: Vec<usize> = (0..n).filter(|&i| counts[i] > 0.0).collect();
    let w: Vec<f64> = obs.iter().map(|&i| counts[i]).collect();
    let w_sum: f64 = w.iter().sum();
    let total = w_sum + PRIOR_WEIGHT;
    let mut pdf = vec![0.0; n];
    if let Distribution::Categorical { .. } = dist {
        let n_kernels = (obs.len() + 1) as f64;
        let base = PRIOR_WEIGHT / n_kernels;
        // Each observed cell's kernel: base everywhere, one more on its cell, normalised.
        let row = base * n as f64 + 1.0;
        for (&c, wk) in obs.iter().zip(&w) {
            for (j, p) in pdf.iter_mut().enumerate() {
                *p += wk / total * (base + if j == c { 1.0 } else { 0.0 }) / row;
            }
        }
        for p in pdf.iter_mut() {
            *p += PRIOR_WEIGHT / total / n as f64;
        }
        return pdf;
    }
    let x: Vec<f64> = obs.iter().map(|&i| i as f64).collect();
    let mean = x.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / w_sum;
    let var = x.iter().zip(&w).map(|(x, w)| w * (x - mean).powi(2)).sum::<f64>() / (w_sum - 1.0).max(1.0);
    let mut cum = Vec::with_capacity(w.len());
    let mut acc = 0.0;
    for wk in &w {
        acc += wk;
        cum.push(acc);
    }
    // numpy's searchsorted on the cumulative weights, left for the first quartile and right for
    // the third (integer counts, so the quartile targets are floor divisions).
    let q1 = cum.partition_point(|c| *c < (w_sum / 4.0).floor());
    let q3 = cum.partition_point(|c| *c <= (w_sum * 3.0 / 4.0).floor());
    let iqr = x[q3.min(x.len() - 1)] - x[q1.min(x.len() - 1)];
    let sigma = (1.059 * (iqr / 1.34).min(var.sqrt()) * w_sum.powf(-0.2)).max(0.5 / 1.64);
    let (low, high) = (0.0, (n - 1) as f64);
    let mut add = |mu: f64, sigma: f64, weight: f64| {
        let cdf = |z: f64| normal_cdf((z - mu) / sigma);
        let norm = cdf(high + 0.5) - cdf(low - 0.5);
        for (j, p) in pdf.iter_mut().enumerate() {
            let j = j as f64;
            *p += weight * (cdf(j + 0.5) - cdf(j - 0.5)) / norm;
        }
    };
    for (xi, wk) in x.iter().zip(&w) {
        add(*xi, sigma, wk / total);
    }
    add((low + high) / 2.0, high - low + 1.0, PRIOR_WEIGHT / total);
    pdf
}

/// The standard normal CDF, from `erfc` (W. J. Cody's rational approximations through
/// Numerical Recipes' Chebyshev fit, relative error below 1.2e-7: ample for importances).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let erfc = if x >= 0.0 { y } else { 2.0 - y };
    0.5 * erfc
}

/// Importances of every parameter of the study's complete trials by PED-ANOVA with its
/// defaults, normalised to sum to 1, most important first (ties by name). See
/// [`get_param_importances`] for the options.
pub fn param_importances(study: &Study) -> Result<Vec<(String, f64)>, SearchError> {
    get_param_importances(study, &PedAnovaImportanceEvaluator::new(), None, None, true)
}

/// Importances of `params` (default: every parameter of a complete trial) by `evaluator`, of the
/// study's objective or of reaching low `target` values; with `normalize`, scaled to sum to 1
/// (left as they are when all are 0). Most important first, ties by name (Optuna's
/// `get_param_importances`). [`SearchError::InvalidOption`] when a named parameter is in no
/// complete trial.
///
/// ```
/// use ferrograd_tuning::search::importance::{get_param_importances, PedAnovaImportanceEvaluator};
/// use ferrograd_tuning::search::{Direction, SearchError, Study};
/// let study = Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).build();
/// study.optimize(60, |t| {
///     let a = t.suggest_float("a", 0.0, 1.0, false)?;
///     let b = t.suggest_int("b", 0, 9, 1, false)?;
///     Ok::<_, SearchError>([a, b as f64])
/// })?;
/// let evaluator = PedAnovaImportanceEvaluator::new().target_quantile(0.2);
/// // The importance of a small first objective alone: `a` decides it.
/// let only_first = |t: &ferrograd_tuning::search::FrozenTrial| t.values[0];
/// let imp = get_param_importances(&study, &evaluator, None, Some(&only_first), true)?;
/// assert_eq!(imp[0].0, "a");
/// # Ok::<(), SearchError>(())
/// ```
pub fn get_param_importances(
    study: &Study,
    evaluator: &dyn ImportanceEvaluator,
    params: Option<&[&str]>,
    target: Option<Target<'_>>,
    normalize: bool,
) -> Result<Vec<(String, f64)>, SearchError> {
    let all = study.try_trials()?;
    let complete: Vec<&FrozenTrial> = all.iter().filter(|t| t.state == TrialState::Complete).collect();
    let names: BTreeSet<&String> = complete.iter().flat_map(|t| t.distributions.keys()).collect();
    let params: Vec<String> = match params {
        Some(p) => {
            if let Some(missing) = p.iter().find(|n| !names.iter().any(|m| m.as_str() == **n)) {
                return Err(SearchError::InvalidOption(format!(
                    "importances: no complete trial of study `{}` has parameter `{missing}`",
                    study.name()
                )));
            }
            p.iter().map(|s| s.to_string()).collect()
        }
        None => names.into_iter().cloned().collect(),
    };
    let trials: Vec<&FrozenTrial> = complete
        .into_iter()
        .filter(|t| match target {
            Some(f) => f(t).is_finite(),
            None => t.values.iter().all(|v| v.is_finite()),
        })
        .collect();
    let values = evaluator.evaluate(&trials, study.directions(), &params, target);
    let sum: f64 = values.iter().sum();
    let mut out: Vec<(String, f64)> =
        params.into_iter().zip(values).map(|(n, v)| (n, if normalize && sum > 0.0 { v / sum } else { v })).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 1e-7);
        assert!((normal_cdf(-2.0) - 0.022_750_132).abs() < 1e-8);
    }

    #[test]
    fn grid_pdf_sums_to_one_and_peaks_at_the_data() {
        let d = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        let vals = [ParamValue::Float(0.1), ParamValue::Float(0.12), ParamValue::Float(0.09)];
        let refs: Vec<&ParamValue> = vals.iter().collect();
        let p = grid_pdf(&d, &refs);
        assert_eq!(p.len(), 50);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let peak = (0..50).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert!((4..=6).contains(&peak), "peak at {peak}");
        let c = Distribution::Categorical { choices: vec!["a".into(), "b".into(), "c".into()] };
        let vals = [ParamValue::Categorical("b".into())];
        let p = grid_pdf(&c, &vals.iter().collect::<Vec<_>>());
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12 && p[1] > p[0] && p[0] == p[2]);
    }
}
