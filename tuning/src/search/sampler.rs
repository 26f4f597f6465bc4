//! Samplers propose parameter values. A sampler may propose a whole point when a trial starts
//! (`sample_relative`: a grid point, a joint TPE draw) and is asked for each parameter the
//! objective requests that the point does not cover (`sample_independent`).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;

use super::distribution::{int_at, int_steps, Distribution, ParamValue};
use super::error::SearchError;
use super::study::Direction;
use super::trial::FrozenTrial;

/// What a sampler sees: the study's trials (running ones included) and the asking trial's number.
pub struct SampleContext<'a> {
    /// Every trial of the study, by number.
    pub trials: &'a [FrozenTrial],
    /// The study's direction (of its first objective).
    pub direction: Direction,
    /// The directions of every objective.
    pub directions: &'a [Direction],
    /// The numbers of finished trials in the order the study saw them finish. Append-only: a
    /// sampler that caches what it computed from finished trials (which never change) remembers
    /// how far it read and continues from there.
    pub finished: &'a [u64],
    /// The number of the trial being sampled for.
    pub number: u64,
}

/// Proposes parameter values for trials.
pub trait Sampler: Send + Sync {
    /// Whether [`sample_relative`](Self::sample_relative) must run while the study is locked in
    /// its storage, seeing every worker's proposals (the grid, so that no two workers take the
    /// same point). Default `false`: proposals are made after the trial is created, outside the
    /// lock, so workers do not wait on each other's sampling.
    fn needs_study_lock(&self) -> bool {
        false
    }

    /// Values proposed for the trial about to start, by name (default: none). An error means the
    /// sampler has nothing left to propose and the study stops.
    fn sample_relative(
        &self,
        ctx: &SampleContext<'_>,
        rng: &mut StdRng,
    ) -> Result<BTreeMap<String, ParamValue>, SearchError> {
        let _ = (ctx, rng);
        Ok(BTreeMap::new())
    }

    /// The internal value (index for categories) of parameter `name` drawn from `dist`.
    fn sample_independent(
        &self,
        ctx: &SampleContext<'_>,
        name: &str,
        dist: &Distribution,
        rng: &mut StdRng,
    ) -> Result<f64, SearchError>;
}

/// A uniform draw from `dist` (log-uniform for log scales), as an internal value. Any finite
/// range works, also one whose width overflows (`[-1e308, 1e308]`, `[i64::MIN, i64::MAX]`).
pub fn sample_uniform(dist: &Distribution, rng: &mut StdRng) -> f64 {
    match *dist {
        Distribution::Float { low, high, .. } if low == high => low,
        Distribution::Float { low, high, log: true, .. } => rng.random_range(low.ln()..=high.ln()).exp(),
        Distribution::Float { low, high, step: Some(s), .. } => {
            let n = if (high - low).is_finite() { (high - low) / s } else { high / s - low / s };
            let k = rng.random_range(0..=n.round() as u64) as f64;
            (low + k * s).min(high)
        }
        Distribution::Float { low, high, .. } if (high - low).is_finite() => rng.random_range(low..=high),
        // The width overflows: interpolate between the bounds instead.
        Distribution::Float { low, high, .. } => {
            let u: f64 = rng.random();
            (low * (1.0 - u) + high * u).clamp(low, high)
        }
        Distribution::Int { low, high, log: true, .. } => {
            let x = rng.random_range((low as f64 - 0.5).ln()..=(high as f64 + 0.5).ln()).exp();
            x.round().clamp(low as f64, high as f64)
        }
        Distribution::Int { low, high, step, .. } => match high.checked_sub(low) {
            Some(width) => (low + rng.random_range(0..=width / step) * step) as f64,
            None => int_at(low, high, step, rng.random_range(0..=int_steps(low, high, step)).into()) as f64,
        },
        Distribution::Categorical { ref choices } => rng.random_range(0..choices.len()) as f64,
    }
}

/// Independent uniform draws; reproducible (each trial's generator comes from the study seed and
/// the trial number).
#[derive(Debug, Clone, Default)]
pub struct RandomSampler;

impl RandomSampler {
    /// The random sampler.
    pub fn new() -> Self {
        RandomSampler
    }
}

impl Sampler for RandomSampler {
    fn sample_independent(
        &self,
        _ctx: &SampleContext<'_>,
        _name: &str,
        dist: &Distribution,
        rng: &mut StdRng,
    ) -> Result<f64, SearchError> {
        Ok(sample_uniform(dist, rng))
    }
}

/// Every point of a declared grid once, in random order. A point is claimed when its trial starts,
/// under the study's lock in its storage (and recorded as the trial's `fixed_params`), so parallel
/// workers, threads or processes, never share one; the study stops when all are taken.
///
/// ```
/// use ferrograd_tuning::search::{GridSampler, SearchError, Study};
/// let grid = GridSampler::new().float("lr", &[0.1, 0.01]).categorical("act", &["relu", "tanh"]);
/// let study = Study::builder().sampler(grid).build();
/// study.optimize(10, |t| {
///     let lr = t.suggest_float("lr", 1e-3, 1.0, true)?;
///     let act: String = t.suggest_categorical("act", &["relu".to_string(), "tanh".to_string()])?;
///     Ok::<_, SearchError>(lr + act.len() as f64)
/// }).unwrap();
/// assert_eq!(study.trials().len(), 4);
/// ```
#[derive(Debug, Clone, Default)]
pub struct GridSampler {
    names: Vec<String>,
    values: Vec<Vec<ParamValue>>,
}

impl GridSampler {
    /// An empty grid (one point with no parameters).
    pub fn new() -> Self {
        GridSampler::default()
    }

    fn axis(mut self, name: &str, values: Vec<ParamValue>) -> Self {
        self.names.push(name.to_string());
        self.values.push(values);
        self
    }

    /// A float axis.
    pub fn float(self, name: &str, values: &[f64]) -> Self {
        self.axis(name, values.iter().map(|v| ParamValue::Float(*v)).collect())
    }

    /// An integer axis.
    pub fn int(self, name: &str, values: &[i64]) -> Self {
        self.axis(name, values.iter().map(|v| ParamValue::Int(*v)).collect())
    }

    /// A categorical axis (choices by their text).
    pub fn categorical(self, name: &str, values: &[&str]) -> Self {
        self.axis(name, values.iter().map(|v| ParamValue::Categorical(v.to_string())).collect())
    }

    /// The number of grid points.
    pub fn n_points(&self) -> usize {
        self.values.iter().map(Vec::len).product()
    }

    /// The grid index of a trial's proposed point, if it is one.
    fn index_of(&self, fixed: &BTreeMap<String, ParamValue>) -> Option<usize> {
        let mut idx = 0;
        for (name, values) in self.names.iter().zip(&self.values) {
            let v = fixed.get(name)?;
            idx = idx * values.len() + values.iter().position(|x| x == v)?;
        }
        Some(idx)
    }

    fn point(&self, mut idx: usize) -> BTreeMap<String, ParamValue> {
        let mut out = BTreeMap::new();
        for (name, values) in self.names.iter().zip(&self.values).rev() {
            out.insert(name.clone(), values[idx % values.len()].clone());
            idx /= values.len();
        }
        out
    }
}

impl Sampler for GridSampler {
    fn needs_study_lock(&self) -> bool {
        true
    }

    fn sample_relative(
        &self,
        ctx: &SampleContext<'_>,
        rng: &mut StdRng,
    ) -> Result<BTreeMap<String, ParamValue>, SearchError> {
        let n = self.n_points();
        let mut used = vec![false; n];
        for t in ctx.trials {
            if let Some(i) = self.index_of(&t.fixed_params) {
                used[i] = true;
            }
        }
        let free: Vec<usize> = (0..n).filter(|i| !used[*i]).collect();
        if free.is_empty() {
            return Err(SearchError::GridExhausted { points: n });
        }
        Ok(self.point(free[rng.random_range(0..free.len())]))
    }

    fn sample_independent(
        &self,
        _ctx: &SampleContext<'_>,
        name: &str,
        _dist: &Distribution,
        _rng: &mut StdRng,
    ) -> Result<f64, SearchError> {
        Err(SearchError::NotInGrid { name: name.to_string() })
    }
}
