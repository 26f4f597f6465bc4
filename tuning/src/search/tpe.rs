//! The Tree-structured Parzen Estimator (Bergstra et al. 2011), following Optuna's `TPESampler`:
//! after `n_startup_trials` random trials, the trials are split into the best `gamma(n)` and the
//! rest; a Parzen estimator (a mixture of truncated normals, or of categorical kernels) is fitted
//! to each group with Optuna's bandwidth rule (neighbour distances, "magic clip", a prior kernel);
//! `n_ei_candidates` draws from the good one are scored by `l(x) / g(x)` and the best is kept.
//!
//! In multivariate mode the parameters every complete trial has (with the same distribution) are
//! drawn jointly from product kernels when the trial starts; the others stay univariate. With the
//! constant liar, running trials count among the bad ones, so parallel workers spread out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::StandardNormal;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::sampler::{sample_uniform, SampleContext, Sampler};
use super::trial::{FrozenTrial, TrialState};

/// The TPE sampler. Build with [`TpeSampler::new`] and the option methods.
///
/// ```
/// use ferrograd_tuning::search::{SearchError, Study, TpeSampler};
/// let tpe = TpeSampler::new().n_startup_trials(5).multivariate(true).constant_liar(true);
/// let study = Study::builder().sampler(tpe).seed(3).build();
/// study.optimize(20, |t| {
///     let x = t.suggest_float("x", 1e-3, 10.0, true)?;
///     let n = t.suggest_int("n", 1, 8, 1, false)?;
///     Ok::<_, SearchError>((x.ln() - 1.0).powi(2) + n as f64)
/// }).unwrap();
/// assert_eq!(study.trials().len(), 20);
/// ```
#[derive(Debug)]
pub struct TpeSampler {
    n_startup_trials: usize,
    n_ei_candidates: usize,
    prior_weight: f64,
    magic_clip: bool,
    consider_endpoints: bool,
    multivariate: bool,
    bandwidth_factor: f64,
    constant_liar: bool,
    /// The last split, reused for the other parameters of the same trial.
    cache: Mutex<Option<SplitCache>>,
    /// Parameter values of finished trials, read once.
    columns: Mutex<HashMap<String, Column>>,
}

impl Clone for TpeSampler {
    /// The same options with an empty cache.
    fn clone(&self) -> Self {
        TpeSampler { cache: Mutex::new(None), columns: Mutex::new(HashMap::new()), ..*self }
    }
}

/// A split by trial index, valid for one trial while the study holds `len` trials.
#[derive(Debug)]
struct SplitCache {
    number: u64,
    len: usize,
    below: Vec<usize>,
    above: Vec<usize>,
}

impl Default for TpeSampler {
    fn default() -> Self {
        TpeSampler::new()
    }
}

/// Optuna's default split: the best `min(ceil(0.1 n), 25)` trials are "good".
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's default observation weights, oldest first: the 25 newest weigh 1, older ones ramp
/// linearly from `1 / n` up to 1.
fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// Complementary error function (Numerical Recipes' `erfcc`, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Terms more than this below the largest add less than `e^-36` relative and are skipped.
const LSE_CUTOFF: f64 = 36.0;

/// `ln(sum(exp(v)))`, stable. Kernels far from the point are skipped without an `exp`, which
/// keeps large histories cheap: most of the bad group's kernels are far from any candidate.
fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    let floor = m - LSE_CUTOFF;
    m + v.iter().filter(|x| **x > floor).map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// A parameter's axis in the space the estimators work in: log for log scales, discrete ones
/// widened by half a step on each side and rounded back afterwards.
#[derive(Debug, Clone, Copy)]
enum Axis {
    Num { low: f64, high: f64, log: bool },
    Cat { n: usize },
}

impl Axis {
    fn of(dist: &Distribution) -> Axis {
        match *dist {
            Distribution::Float { low, high, log: true, .. } => Axis::Num { low: low.ln(), high: high.ln(), log: true },
            Distribution::Float { low, high, step, .. } => {
                let h = step.unwrap_or(0.0) / 2.0;
                Axis::Num { low: low - h, high: high + h, log: false }
            }
            Distribution::Int { low, high, log: true, .. } => {
                Axis::Num { low: (low as f64 - 0.5).ln(), high: (high as f64 + 0.5).ln(), log: true }
            }
            Distribution::Int { low, high, step, .. } => {
                let h = step as f64 / 2.0;
                Axis::Num { low: low as f64 - h, high: high as f64 + h, log: false }
            }
            Distribution::Categorical { ref choices } => Axis::Cat { n: choices.len() },
        }
    }

    fn forward(self, internal: f64) -> f64 {
        match self {
            Axis::Num { log: true, .. } => internal.ln(),
            _ => internal,
        }
    }

    fn backward(self, y: f64) -> f64 {
        match self {
            Axis::Num { log: true, .. } => y.exp(),
            _ => y,
        }
    }
}

/// One axis of a Parzen estimator: a kernel per observation plus the prior kernel (last).
enum Kernels {
    /// Truncated normals; `c[k] = -ln(sigma_k) - ln(sqrt(2 pi)) - ln(Z_k)`.
    Num { low: f64, high: f64, mu: Vec<f64>, inv_sigma: Vec<f64>, sigma: Vec<f64>, c: Vec<f64> },
    /// Per-kernel log probabilities of each choice, row-major `[k * n + c]`, and the probabilities.
    Cat { n: usize, log_p: Vec<f64>, p: Vec<f64> },
}

/// A mixture over `K` kernels of product kernels over the axes.
struct Parzen {
    log_w: Vec<f64>,
    w: Vec<f64>,
    axes: Vec<Kernels>,
}

impl Parzen {
    /// `obs[d][i]`: observation `i` (chronological) on axis `d`, already in axis coordinates.
    fn fit(obs: &[Vec<f64>], axes: &[Axis], opts: &TpeSampler) -> Parzen {
        let n = obs.first().map_or(0, Vec::len);
        let mut w = weights(n);
        w.push(opts.prior_weight);
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= total);
        let log_w = w.iter().map(|x| x.ln()).collect();
        let kernels = obs.iter().zip(axes).map(|(o, a)| Self::axis_kernels(o, *a, axes.len(), opts)).collect();
        Parzen { log_w, w, axes: kernels }
    }

    fn axis_kernels(obs: &[f64], axis: Axis, n_dims: usize, opts: &TpeSampler) -> Kernels {
        let n = obs.len();
        match axis {
            Axis::Cat { n: nc } => {
                let k = n + 1;
                let fill = opts.prior_weight / k as f64;
                let mut p = vec![fill; k * nc];
                for (i, o) in obs.iter().enumerate() {
                    p[i * nc + *o as usize] += 1.0;
                }
                for row in p.chunks_mut(nc) {
                    let s: f64 = row.iter().sum();
                    row.iter_mut().for_each(|x| *x /= s);
                }
                Kernels::Cat { n: nc, log_p: p.iter().map(|x| x.ln()).collect(), p }
            }
            Axis::Num { low, high, .. } => {
                let range = high - low;
                let prior_mu = 0.5 * (low + high);
                let mut sigma = if opts.multivariate {
                    vec![opts.bandwidth_factor * (n.max(1) as f64).powf(-1.0 / (n_dims as f64 + 4.0)) * range; n]
                } else {
                    Self::neighbour_sigmas(obs, low, high, prior_mu, opts.consider_endpoints)
                };
                let max_s = range;
                let min_s = if opts.magic_clip { range / (1.0 + (n + 1) as f64).min(100.0) } else { 1e-12 };
                sigma.iter_mut().for_each(|s| *s = s.clamp(min_s, max_s));
                let mut mu = obs.to_vec();
                mu.push(prior_mu);
                sigma.push(range);
                let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
                let c = mu
                    .iter()
                    .zip(&sigma)
                    .map(|(m, s)| {
                        let (a, b) = ((low - m) / s, (high - m) / s);
                        // Beyond 9 standard deviations the truncated mass differs from 1 by < 1e-18.
                        let ln_z = if a < -9.0 && b > 9.0 { 0.0 } else { (phi(b) - phi(a)).max(1e-300).ln() };
                        -s.ln() - half_ln_2pi - ln_z
                    })
                    .collect();
                let inv_sigma = sigma.iter().map(|s| 1.0 / s).collect();
                Kernels::Num { low, high, mu, inv_sigma, sigma, c }
            }
        }
    }

    /// Optuna's univariate bandwidth: the larger distance to a neighbour among the sorted
    /// observations, the prior's centre and the bounds (the outermost ones use their inner gap).
    fn neighbour_sigmas(obs: &[f64], low: f64, high: f64, prior_mu: f64, consider_endpoints: bool) -> Vec<f64> {
        let n = obs.len();
        let mut with_prior: Vec<(f64, usize)> = obs.iter().copied().zip(0..).collect();
        with_prior.push((prior_mu, n));
        with_prior.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut ends = Vec::with_capacity(n + 3);
        ends.push(low);
        ends.extend(with_prior.iter().map(|p| p.0));
        ends.push(high);
        let m = ends.len();
        let mut sorted_sigma: Vec<f64> =
            (1..m - 1).map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i])).collect();
        if !consider_endpoints && m >= 4 {
            sorted_sigma[0] = ends[2] - ends[1];
            let last = sorted_sigma.len() - 1;
            sorted_sigma[last] = ends[m - 2] - ends[m - 3];
        }
        let mut out = vec![0.0; n];
        for (s, (_, idx)) in sorted_sigma.iter().zip(&with_prior) {
            if *idx < n {
                out[*idx] = *s;
            }
        }
        out
    }

    fn sample(&self, rng: &mut StdRng) -> Vec<f64> {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut k = self.w.len() - 1;
        for (i, w) in self.w.iter().enumerate() {
            acc += w;
            if u < acc {
                k = i;
                break;
            }
        }
        self.axes
            .iter()
            .map(|ax| match ax {
                Kernels::Num { low, high, mu, sigma, .. } => {
                    for _ in 0..100 {
                        let z: f64 = rng.sample(StandardNormal);
                        let x = mu[k] + sigma[k] * z;
                        if x >= *low && x <= *high {
                            return x;
                        }
                    }
                    mu[k].clamp(*low, *high)
                }
                Kernels::Cat { n, p, .. } => {
                    let row = &p[k * n..(k + 1) * n];
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    for (c, pc) in row.iter().enumerate() {
                        acc += pc;
                        if u < acc {
                            return c as f64;
                        }
                    }
                    (n - 1) as f64
                }
            })
            .collect()
    }

    fn log_pdf(&self, x: &[f64], scratch: &mut Vec<f64>) -> f64 {
        scratch.clear();
        scratch.extend_from_slice(&self.log_w);
        for (ax, xv) in self.axes.iter().zip(x) {
            match ax {
                Kernels::Num { mu, inv_sigma, c, .. } => {
                    for (((s, m), is), ck) in scratch.iter_mut().zip(mu).zip(inv_sigma).zip(c) {
                        let z = (xv - m) * is;
                        *s += ck - 0.5 * z * z;
                    }
                }
                Kernels::Cat { n, log_p, .. } => {
                    let ci = *xv as usize;
                    for (k, s) in scratch.iter_mut().enumerate() {
                        *s += log_p[k * n + ci];
                    }
                }
            }
        }
        log_sum_exp(scratch)
    }
}

/// One parameter's values (in axis coordinates) of finished trials, by trial number: `None` not
/// read yet, `Some(None)` the trial lacks it.
#[derive(Debug)]
struct Column {
    dist: Distribution,
    values: Vec<Option<Option<f64>>>,
}

/// The good and bad trials, each in trial order.
struct Split<'a> {
    below: Vec<&'a FrozenTrial>,
    above: Vec<&'a FrozenTrial>,
}

/// A trial's internal value of `name` in `dist`, from its asked or proposed parameters.
fn value_of(t: &FrozenTrial, name: &str, dist: &Distribution) -> Option<f64> {
    t.params.get(name).or_else(|| t.fixed_params.get(name)).and_then(|v| dist.to_internal(v))
}

impl TpeSampler {
    /// Optuna's defaults: 10 startup trials, 24 candidates, prior weight 1, magic clip on,
    /// univariate, no constant liar.
    pub fn new() -> Self {
        TpeSampler {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            prior_weight: 1.0,
            magic_clip: true,
            consider_endpoints: false,
            multivariate: false,
            bandwidth_factor: 0.2,
            constant_liar: false,
            cache: Mutex::new(None),
            columns: Mutex::new(HashMap::new()),
        }
    }

    /// Settings tuned on Branin, Hartmann6 and a 10-D sphere (see `tests/search_tpe.rs`):
    /// multivariate with a narrower joint bandwidth (factor 0.05) and no magic clip, so it
    /// exploits sooner than Optuna's defaults. Prefer it for continuous spaces of a few
    /// dimensions and small budgets.
    pub fn tuned() -> Self {
        TpeSampler { multivariate: true, bandwidth_factor: 0.05, magic_clip: false, ..TpeSampler::new() }
    }

    /// The factor of the joint bandwidth `factor * n^(-1 / (d + 4)) * range` in multivariate mode
    /// (Optuna: 0.2). Errors unless positive and finite.
    pub fn bandwidth_factor(mut self, factor: f64) -> Result<Self, SearchError> {
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(SearchError::InvalidOption(format!("bandwidth_factor must be positive, got {factor}")));
        }
        self.bandwidth_factor = factor;
        Ok(self)
    }

    /// Random trials before the estimators take over (default 10).
    pub fn n_startup_trials(mut self, n: usize) -> Self {
        self.n_startup_trials = n;
        self
    }

    /// Candidates drawn from `l(x)` per proposal (default 24, at least 1).
    pub fn n_ei_candidates(mut self, n: usize) -> Self {
        self.n_ei_candidates = n.max(1);
        self
    }

    /// The prior kernel's weight (default 1). Errors unless positive and finite.
    pub fn prior_weight(mut self, w: f64) -> Result<Self, SearchError> {
        if !(w > 0.0 && w.is_finite()) {
            return Err(SearchError::InvalidOption(format!("prior_weight must be positive, got {w}")));
        }
        self.prior_weight = w;
        Ok(self)
    }

    /// Optuna's lower bound on bandwidths (default on).
    pub fn magic_clip(mut self, on: bool) -> Self {
        self.magic_clip = on;
        self
    }

    /// Model the parameters every complete trial shares jointly (default off).
    pub fn multivariate(mut self, on: bool) -> Self {
        self.multivariate = on;
        self
    }

    /// Count running trials as bad ones, so parallel workers do not propose the same point.
    pub fn constant_liar(mut self, on: bool) -> Self {
        self.constant_liar = on;
        self
    }

    /// Splits the history, or `None` while fewer than `n_startup_trials` trials have finished.
    /// Linear in the number of trials: only the good group (at most 25) is selected and sorted.
    fn split_indices(&self, ctx: &SampleContext<'_>) -> Option<(Vec<usize>, Vec<usize>)> {
        if ctx.trials.len() < self.n_startup_trials {
            return None;
        }
        let dir = ctx.direction;
        let mut complete: Vec<(f64, usize)> = Vec::new();
        let mut pruned: Vec<(u64, f64, usize)> = Vec::new();
        let mut n_running = 0;
        for (i, t) in ctx.trials.iter().enumerate() {
            match t.state {
                TrialState::Complete => {
                    if let Some(v) = t.value {
                        complete.push((dir.loss(v), i));
                    }
                }
                TrialState::Pruned => {
                    let (s, v) = t.last_intermediate().unwrap_or((0, f64::INFINITY));
                    let v = if v.is_nan() { f64::INFINITY } else { dir.loss(v) };
                    pruned.push((s, v, i));
                }
                TrialState::Running if self.constant_liar && t.number != ctx.number => n_running += 1,
                _ => {}
            }
        }
        let finished = complete.len() + pruned.len();
        if finished < self.n_startup_trials.max(1) {
            return None;
        }
        let n_below = gamma(finished + n_running);
        let by_loss = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if complete.len() > n_below {
            complete.select_nth_unstable_by(n_below, by_loss);
            complete.truncate(n_below);
        }
        let mut in_below = vec![false; ctx.trials.len()];
        complete.iter().for_each(|c| in_below[c.1] = true);
        if complete.len() < n_below {
            pruned.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)));
            pruned.iter().take(n_below - complete.len()).for_each(|p| in_below[p.2] = true);
        }
        let mut below = Vec::with_capacity(n_below);
        let mut above = Vec::with_capacity(ctx.trials.len());
        for ((i, t), good) in ctx.trials.iter().enumerate().zip(in_below) {
            match t.state {
                _ if good => below.push(i),
                TrialState::Complete | TrialState::Pruned => above.push(i),
                TrialState::Running if self.constant_liar && t.number != ctx.number => above.push(i),
                _ => {}
            }
        }
        Some((below, above))
    }

    /// The split for the asking trial, computed at its first proposal and reused for its other
    /// parameters while no trial has been added (trials finishing meanwhile are seen by the next
    /// trial).
    fn split<'a>(&self, ctx: &SampleContext<'a>) -> Option<Split<'a>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cache.as_ref().is_some_and(|c| c.number == ctx.number && c.len == ctx.trials.len());
        if !fresh {
            let (below, above) = self.split_indices(ctx)?;
            *cache = Some(SplitCache { number: ctx.number, len: ctx.trials.len(), below, above });
        }
        let c = cache.as_ref().expect("just filled");
        Some(Split {
            below: c.below.iter().map(|i| &ctx.trials[*i]).collect(),
            above: c.above.iter().map(|i| &ctx.trials[*i]).collect(),
        })
    }

    /// Draws candidates from the good estimator and keeps the one maximising `l(x) / g(x)`.
    fn propose(&self, below: &[Vec<f64>], above: &[Vec<f64>], axes: &[Axis], rng: &mut StdRng) -> Vec<f64> {
        let l = Parzen::fit(below, axes, self);
        let g = Parzen::fit(above, axes, self);
        let mut scratch = Vec::new();
        let mut best = (f64::NEG_INFINITY, Vec::new());
        for _ in 0..self.n_ei_candidates {
            let x = l.sample(rng);
            let score = l.log_pdf(&x, &mut scratch) - g.log_pdf(&x, &mut scratch);
            if best.1.is_empty() || score > best.0 {
                best = (score, x);
            }
        }
        best.1
    }

    /// The parameters every complete trial has with one same distribution (more than one value).
    fn joint_space(&self, ctx: &SampleContext<'_>) -> BTreeMap<String, Distribution> {
        let mut space: Option<BTreeMap<String, Distribution>> = None;
        for t in ctx.trials.iter().filter(|t| t.state == TrialState::Complete) {
            match &mut space {
                None => space = Some(t.distributions.clone()),
                Some(s) => s.retain(|k, d| t.distributions.get(k) == Some(d)),
            }
        }
        space.unwrap_or_default().into_iter().filter(|(_, d)| !d.is_single() && modelled(d)).collect()
    }
}

/// Whether TPE models `dist`: a range whose width overflows (`[-1e308, 1e308]`) has no finite
/// kernels and is sampled uniformly.
fn modelled(dist: &Distribution) -> bool {
    match Axis::of(dist) {
        Axis::Num { low, high, .. } => (high - low).is_finite(),
        Axis::Cat { .. } => true,
    }
}

/// Observations of `names` (in axis coordinates) for the trials that have all of them.
/// Uses and fills `columns`: a finished trial's values never change, so each is read from its
/// maps (string keys, category lookups) once.
fn observations(
    trials: &[&FrozenTrial],
    space: &[(&String, &Distribution, Axis)],
    columns: &mut HashMap<String, Column>,
) -> Vec<Vec<f64>> {
    let mut obs = vec![Vec::new(); space.len()];
    let mut row = Vec::with_capacity(space.len());
    let mut cols: Vec<&mut Column> = Vec::with_capacity(space.len());
    for (name, dist, _) in space {
        let col =
            columns.entry((*name).clone()).or_insert_with(|| Column { dist: (*dist).clone(), values: Vec::new() });
        if col.dist != **dist {
            *col = Column { dist: (*dist).clone(), values: Vec::new() };
        }
    }
    // Disjoint mutable borrows of the columns, in `space` order.
    let mut by_name: HashMap<&String, &mut Column> = columns.iter_mut().collect();
    for (name, _, _) in space {
        cols.push(by_name.remove(name).expect("inserted above"));
    }
    for t in trials {
        row.clear();
        let finished = !matches!(t.state, TrialState::Running);
        for (col, (name, dist, axis)) in cols.iter_mut().zip(space) {
            let i = t.number as usize;
            let v = match col.values.get(i) {
                Some(Some(cached)) if finished => *cached,
                _ => {
                    let v = value_of(t, name, dist).map(|v| axis.forward(v));
                    if finished {
                        if col.values.len() <= i {
                            col.values.resize(i + 1, None);
                        }
                        col.values[i] = Some(v);
                    }
                    v
                }
            };
            match v {
                Some(v) => row.push(v),
                None => break,
            }
        }
        if row.len() == space.len() {
            obs.iter_mut().zip(&row).for_each(|(o, v)| o.push(*v));
        }
    }
    obs
}

impl Sampler for TpeSampler {
    fn sample_relative(
        &self,
        ctx: &SampleContext<'_>,
        rng: &mut StdRng,
    ) -> Result<BTreeMap<String, ParamValue>, SearchError> {
        if !self.multivariate || ctx.directions.len() > 1 {
            return Ok(BTreeMap::new());
        }
        let Some(split) = self.split(ctx) else { return Ok(BTreeMap::new()) };
        let space = self.joint_space(ctx);
        if space.is_empty() {
            return Ok(BTreeMap::new());
        }
        let axes: Vec<(&String, &Distribution, Axis)> = space.iter().map(|(n, d)| (n, d, Axis::of(d))).collect();
        let mut columns = self.columns.lock().unwrap_or_else(|p| p.into_inner());
        let below = observations(&split.below, &axes, &mut columns);
        let above = observations(&split.above, &axes, &mut columns);
        drop(columns);
        let plain: Vec<Axis> = axes.iter().map(|a| a.2).collect();
        let x = self.propose(&below, &above, &plain, rng);
        Ok(axes.iter().zip(x).map(|((n, d, a), y)| ((*n).clone(), d.to_external(a.backward(y)))).collect())
    }

    fn sample_independent(
        &self,
        ctx: &SampleContext<'_>,
        name: &str,
        dist: &Distribution,
        rng: &mut StdRng,
    ) -> Result<f64, SearchError> {
        if ctx.directions.len() > 1 || !modelled(dist) {
            return Ok(sample_uniform(dist, rng));
        }
        let Some(split) = self.split(ctx) else { return Ok(sample_uniform(dist, rng)) };
        let name = name.to_string();
        let axes = [(&name, dist, Axis::of(dist))];
        let mut columns = self.columns.lock().unwrap_or_else(|p| p.into_inner());
        let below = observations(&split.below, &axes, &mut columns);
        let above = observations(&split.above, &axes, &mut columns);
        drop(columns);
        let y = self.propose(&below, &above, &[axes[0].2], rng)[0];
        Ok(axes[0].2.backward(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_and_weights_follow_optuna() {
        assert_eq!(gamma(1), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(1000), 25);
        assert_eq!(weights(3), vec![1.0; 3]);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12);
        assert!((w[4] - 1.0).abs() < 1e-12);
        assert!(w[1] > w[0] && w[2] > w[1]);
    }

    #[test]
    fn phi_is_accurate() {
        assert!((phi(0.0) - 0.5).abs() < 1e-7);
        assert!((phi(1.0) - 0.841_344_746).abs() < 1e-7);
        assert!((phi(-2.0) - 0.022_750_132).abs() < 1e-7);
    }

    #[test]
    fn neighbour_bandwidths() {
        // Observations 0.2 and 0.9 on [0, 1], prior at 0.5: sorted 0.2, 0.5, 0.9 between the
        // bounds; the outermost use their inner gap (0.3 and 0.4).
        let s = Parzen::neighbour_sigmas(&[0.9, 0.2], 0.0, 1.0, 0.5, false);
        assert!((s[0] - 0.4).abs() < 1e-12 && (s[1] - 0.3).abs() < 1e-12);
    }

    #[test]
    fn truncated_density_integrates_to_one() {
        let opts = TpeSampler::new();
        let axes = [Axis::Num { low: 0.0, high: 1.0, log: false }];
        let p = Parzen::fit(&[vec![0.05, 0.6, 0.97]], &axes, &opts);
        let mut scratch = Vec::new();
        let n = 20_000;
        let integral: f64 =
            (0..n).map(|i| p.log_pdf(&[(i as f64 + 0.5) / n as f64], &mut scratch).exp() / n as f64).sum();
        assert!((integral - 1.0).abs() < 1e-4, "{integral}");
    }

    #[test]
    fn constant_liar_steers_away_from_running_trials() {
        use crate::search::study::Direction;
        use rand::SeedableRng;
        let dist = Distribution::Float { low: -5.0, high: 5.0, log: false, step: None };
        let mut trials = Vec::new();
        for i in 0..30u64 {
            let x = -5.0 + 10.0 * ((i * 7) % 30) as f64 / 29.0;
            let mut t = FrozenTrial { number: i, ..FrozenTrial::new(TrialState::Running) };
            t.params.insert("x".into(), ParamValue::Float(x));
            t.distributions.insert("x".into(), dist.clone());
            t.state = TrialState::Complete;
            t.value = Some(x * x);
            trials.push(t);
        }
        // Five workers are already evaluating points at the optimum.
        for i in 30..35u64 {
            let mut t = FrozenTrial { number: i, ..FrozenTrial::new(TrialState::Running) };
            t.params.insert("x".into(), ParamValue::Float(0.0));
            t.distributions.insert("x".into(), dist.clone());
            trials.push(t);
        }
        let mean_distance = |liar: bool| {
            let tpe = TpeSampler::new().constant_liar(liar);
            (0..200u64)
                .map(|seed| {
                    let ctx = SampleContext {
                        trials: &trials,
                        direction: Direction::Minimize,
                        directions: &[Direction::Minimize],
                        finished: &[],
                        number: 35,
                    };
                    let mut rng = StdRng::seed_from_u64(seed);
                    tpe.sample_independent(&ctx, "x", &dist, &mut rng).unwrap().abs()
                })
                .sum::<f64>()
                / 200.0
        };
        let (with, without) = (mean_distance(true), mean_distance(false));
        assert!(with > 1.5 * without, "with liar {with}, without {without}");
    }
}
