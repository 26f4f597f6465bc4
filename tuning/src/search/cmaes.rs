//! CMA-ES (Hansen's covariance matrix adaptation evolution strategy) as a relative sampler, in
//! the manner of Optuna's `CmaEsSampler`: the numeric parameters every complete trial shares are
//! searched jointly in the unit cube (log scales in log space), one generation of `popsize`
//! trials at a time; a generation is told to the strategy once that many of its trials have
//! completed. Discrete parameters (integers, stepped floats) get the margin of CMA-ES with margin
//! (Hamano et al. 2022), so a coordinate never freezes on one value; a strategy that has
//! converged or stalled restarts from a random mean with a larger population (IPOP) or
//! alternating small and large ones (BIPOP).
//!
//! The strategy's state lives in the sampler (not in the storage): a sampler that starts on an
//! existing study begins a new strategy and uses the old trials only to pass the startup phase.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::StandardNormal;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::sampler::{RandomSampler, SampleContext, Sampler};
use super::trial::TrialState;
use super::unit_space::{FallbackWarning, SharedSpace, UnitAxis};

/// How CMA-ES starts again once its strategy has converged or stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartStrategy {
    /// Never: a converged strategy keeps sampling around its mean.
    None,
    /// IPOP (Auger & Hansen 2005): each restart doubles the population (the default).
    #[default]
    Ipop,
    /// BIPOP (Hansen 2009): restarts alternate between doubling populations and small ones with
    /// short steps, spending about as many evaluations on each regime.
    Bipop,
}

/// The CMA-ES sampler. Build with [`CmaEsSampler::new`] and the option methods.
///
/// Randomness comes from the study's seed (each trial's generator), so a seeded study replays.
/// Clones share one strategy (a clone kept aside reports [`n_restarts`](Self::n_restarts)); give
/// each study a sampler of its own.
/// Categorical parameters, parameters outside the shared space (asked only by some trials) and
/// multi-objective studies are drawn by the independent sampler ([`RandomSampler`] by default,
/// see [`independent_sampler`](Self::independent_sampler)), with a warning printed once per
/// parameter.
///
/// ```
/// use ferrograd_tuning::search::{CmaEsSampler, SearchError, Study};
/// let cma = CmaEsSampler::new().sigma0(0.3)?.n_startup_trials(1);
/// let study = Study::builder().sampler(cma).seed(1).build();
/// study.optimize(60, |t| {
///     let x = t.suggest_float("x", -5.0, 5.0, false)?;
///     let lr = t.suggest_float("lr", 1e-4, 1.0, true)?;
///     let n = t.suggest_int("n", 1, 10, 1, false)?;
///     Ok::<_, SearchError>((x - 1.0).powi(2) + (lr.log10() + 2.0).powi(2) + (n as f64 - 4.0).abs())
/// })?;
/// assert!(study.best_value().unwrap() < 2.0);
/// # Ok::<(), SearchError>(())
/// ```
#[derive(Clone)]
pub struct CmaEsSampler {
    n_startup_trials: usize,
    x0: BTreeMap<String, f64>,
    sigma0: Option<f64>,
    popsize: Option<usize>,
    restart: RestartStrategy,
    inc_popsize: usize,
    with_margin: bool,
    independent: Arc<dyn Sampler>,
    warning: Arc<FallbackWarning>,
    space: Arc<Mutex<SharedSpace>>,
    state: Arc<Mutex<Option<State>>>,
}

impl std::fmt::Debug for CmaEsSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmaEsSampler")
            .field("n_startup_trials", &self.n_startup_trials)
            .field("x0", &self.x0)
            .field("sigma0", &self.sigma0)
            .field("popsize", &self.popsize)
            .field("restart", &self.restart)
            .field("inc_popsize", &self.inc_popsize)
            .field("with_margin", &self.with_margin)
            .finish_non_exhaustive()
    }
}

impl Default for CmaEsSampler {
    fn default() -> Self {
        CmaEsSampler::new()
    }
}

impl CmaEsSampler {
    /// Optuna's defaults (one startup trial, `sigma0` a sixth of each range, the centre as the
    /// first mean, population `4 + 3 ln n`) with margins for discrete parameters and IPOP restarts.
    pub fn new() -> Self {
        CmaEsSampler {
            n_startup_trials: 1,
            x0: BTreeMap::new(),
            sigma0: None,
            popsize: None,
            restart: RestartStrategy::Ipop,
            inc_popsize: 2,
            with_margin: true,
            independent: Arc::new(RandomSampler::new()),
            warning: Arc::new(FallbackWarning::default()),
            space: Arc::new(Mutex::new(SharedSpace::default())),
            state: Arc::new(Mutex::new(None)),
        }
    }

    /// Complete trials drawn by the independent sampler before the strategy starts (default 1).
    pub fn n_startup_trials(mut self, n: usize) -> Self {
        self.n_startup_trials = n;
        self
    }

    /// The first mean, by parameter name (values as the objective sees them; parameters not named
    /// start at the centre of their range). Errors for a value that is not finite; a value outside
    /// its parameter's range fails the first trial the strategy proposes for, with
    /// [`SearchError::InvalidOption`] (returned by [`Study::ask`](super::Study::ask); `optimize`
    /// stops there and the failed trial records why).
    pub fn x0(mut self, x0: &[(&str, f64)]) -> Result<Self, SearchError> {
        for (name, v) in x0 {
            if !v.is_finite() {
                return Err(SearchError::InvalidOption(format!("x0 for `{name}` must be finite, got {v}")));
            }
            self.x0.insert(name.to_string(), *v);
        }
        Ok(self)
    }

    /// The first step size, as a fraction of each parameter's range (in log space for log
    /// scales; default 1/6, Optuna's). Errors unless in `(0, 1]`.
    pub fn sigma0(mut self, sigma0: f64) -> Result<Self, SearchError> {
        if !(sigma0 > 0.0 && sigma0 <= 1.0) {
            return Err(SearchError::InvalidOption(format!("sigma0 must be in (0, 1], got {sigma0}")));
        }
        self.sigma0 = Some(sigma0);
        Ok(self)
    }

    /// The population (trials per generation) of the first run (default `4 + floor(3 ln n)` for
    /// `n` parameters). Errors below 2.
    pub fn popsize(mut self, popsize: usize) -> Result<Self, SearchError> {
        if popsize < 2 {
            return Err(SearchError::InvalidOption(format!("popsize must be at least 2, got {popsize}")));
        }
        self.popsize = Some(popsize);
        Ok(self)
    }

    /// The restart strategy (default [`RestartStrategy::Ipop`]).
    pub fn restart_strategy(mut self, restart: RestartStrategy) -> Self {
        self.restart = restart;
        self
    }

    /// The factor by which restarts grow the population (default 2). Errors below 2.
    pub fn inc_popsize(mut self, factor: usize) -> Result<Self, SearchError> {
        if factor < 2 {
            return Err(SearchError::InvalidOption(format!("inc_popsize must be at least 2, got {factor}")));
        }
        self.inc_popsize = factor;
        Ok(self)
    }

    /// Margins for discrete parameters (default on); off, discrete values are only rounded.
    pub fn with_margin(mut self, on: bool) -> Self {
        self.with_margin = on;
        self
    }

    /// The sampler for startup trials and for parameters the strategy does not cover
    /// (categorical ones, conditional ones); default [`RandomSampler`]. A [`QmcSampler`](super::QmcSampler) gives
    /// a space-filling initial design.
    pub fn independent_sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.independent = Arc::new(sampler);
        self
    }

    /// The number of restarts so far (of the strategy this sampler runs).
    pub fn n_restarts(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |s| s.n_restarts)
    }

    /// The shared space, updated, and the number of complete trials.
    fn shared(&self, ctx: &SampleContext<'_>) -> (Vec<UnitAxis>, usize) {
        let mut space = self.space.lock().unwrap_or_else(|p| p.into_inner());
        space.update(ctx);
        (space.axes().to_vec(), space.n_complete())
    }

    /// The number of complete trials, updated.
    fn n_complete(&self, ctx: &SampleContext<'_>) -> usize {
        let mut space = self.space.lock().unwrap_or_else(|p| p.into_inner());
        space.update(ctx);
        space.n_complete()
    }

    fn new_state(&self, axes: Vec<UnitAxis>) -> Result<State, SearchError> {
        let mut mean = vec![0.5; axes.len()];
        for (m, a) in mean.iter_mut().zip(&axes) {
            if let Some(v) = self.x0.get(&a.name) {
                let internal = a.dist.to_internal(&a.dist.to_external(*v));
                let inside = match a.dist {
                    Distribution::Float { low, high, .. } => *v >= low && *v <= high,
                    Distribution::Int { low, high, .. } => *v >= low as f64 && *v <= high as f64,
                    Distribution::Categorical { .. } => false,
                };
                match internal {
                    Some(x) if inside => *m = a.to_unit(x),
                    _ => {
                        return Err(SearchError::InvalidOption(format!(
                            "x0 for `{}` is {v}, outside its range {}",
                            a.name, a.dist
                        )))
                    }
                }
            }
        }
        let n = axes.len();
        let popsize0 = self.popsize.unwrap_or(4 + (3.0 * (n as f64).ln()).floor() as usize);
        let sigma0 = self.sigma0.unwrap_or(1.0 / 6.0);
        Ok(State {
            cma: Cma::new(mean, sigma0, popsize0, 0),
            axes,
            pending: HashMap::new(),
            results: Vec::new(),
            read: 0,
            next_run: 1,
            n_restarts: 0,
            popsize0,
            sigma0,
            large_restarts: 0,
            evals_small: 0,
            evals_large: 0,
            small_run: false,
        })
    }

    /// Starts again (IPOP or BIPOP) from a random mean.
    fn restart(&self, s: &mut State, rng: &mut StdRng) {
        let n = s.axes.len();
        let evals = s.cma.popsize * s.cma.generation;
        if s.small_run {
            s.evals_small += evals;
        } else {
            s.evals_large += evals;
        }
        let (popsize, sigma) = match self.restart {
            RestartStrategy::None => return,
            RestartStrategy::Ipop => {
                s.large_restarts += 1;
                (s.popsize0 * self.inc_popsize.pow(s.large_restarts as u32), s.sigma0)
            }
            RestartStrategy::Bipop if s.n_restarts > 0 && s.evals_small < s.evals_large => {
                s.small_run = true;
                let u: f64 = rng.random();
                let mult = (self.inc_popsize.pow(s.large_restarts as u32) as f64).powf(u * u);
                ((s.popsize0 as f64 * mult).floor() as usize, s.sigma0 * 10f64.powf(-2.0 * rng.random::<f64>()))
            }
            RestartStrategy::Bipop => {
                s.small_run = false;
                s.large_restarts += 1;
                (s.popsize0 * self.inc_popsize.pow(s.large_restarts as u32), s.sigma0)
            }
        };
        let mean = (0..n).map(|_| rng.random::<f64>()).collect();
        s.cma = Cma::new(mean, sigma, popsize.max(2), s.next_run);
        s.next_run += 1;
        s.n_restarts += 1;
        s.results.clear();
    }

    /// Tells the strategy the trials finished since the last call: a generation is complete when
    /// `popsize` of its trials are.
    fn absorb(&self, s: &mut State, ctx: &SampleContext<'_>, rng: &mut StdRng) {
        let loss = |v: f64| ctx.direction.loss(v);
        for &n in &ctx.finished[s.read.min(ctx.finished.len())..] {
            let Some((run, generation, x)) = s.pending.remove(&n) else { continue };
            let Some(t) = ctx.trials.get(n as usize) else { continue };
            if t.state != TrialState::Complete || run != s.cma.run || generation != s.cma.generation {
                continue;
            }
            let Some(v) = t.value.filter(|v| !v.is_nan()) else { continue };
            s.results.push((x, loss(v)));
            if s.results.len() >= s.cma.popsize {
                let batch = std::mem::take(&mut s.results);
                s.cma.tell(batch);
                if self.restart != RestartStrategy::None && s.cma.should_stop() {
                    self.restart(s, rng);
                }
            }
        }
        s.read = ctx.finished.len();
    }

    /// The margin of CMA-ES with margin: on each discrete axis, the scale `A` that keeps the
    /// probability of leaving the mean's cell through its nearer inner edge at least
    /// `1 / (n popsize)`.
    fn margins(&self, s: &State) -> Vec<f64> {
        let n = s.axes.len();
        let mut a = vec![1.0; n];
        if !self.with_margin {
            return a;
        }
        let alpha = 1.0 / (n as f64 * s.cma.popsize as f64);
        let z = norm_ppf(1.0 - alpha);
        for (j, axis) in s.axes.iter().enumerate() {
            let m = s.cma.mean[j];
            let Some((lo, hi)) = axis.cell(m) else { continue };
            let mut d = f64::INFINITY;
            if lo > 0.0 {
                d = d.min(m - lo);
            }
            if hi < 1.0 {
                d = d.min(hi - m);
            }
            let sd = s.cma.sigma * s.cma.c[(j, j)].max(0.0).sqrt();
            if d.is_finite() && sd > 0.0 && d > z * sd {
                a[j] = d / (z * sd);
            }
        }
        a
    }
}

/// The sampler's strategy and its bookkeeping.
struct State {
    axes: Vec<UnitAxis>,
    cma: Cma,
    /// Trials proposed and not yet finished: run, generation and the point in unit coordinates.
    pending: HashMap<u64, (usize, usize, Vec<f64>)>,
    /// Completed trials of the current generation: point and loss.
    results: Vec<(Vec<f64>, f64)>,
    /// How far the study's finished list has been read.
    read: usize,
    next_run: usize,
    n_restarts: usize,
    popsize0: usize,
    sigma0: f64,
    large_restarts: usize,
    evals_small: usize,
    evals_large: usize,
    small_run: bool,
}

impl Sampler for CmaEsSampler {
    fn sample_relative(
        &self,
        ctx: &SampleContext<'_>,
        rng: &mut StdRng,
    ) -> Result<BTreeMap<String, ParamValue>, SearchError> {
        let (axes, n_complete) = self.shared(ctx);
        if ctx.directions.len() > 1 || n_complete < self.n_startup_trials.max(1) || axes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|s| s.axes != axes) {
            *guard = Some(self.new_state(axes)?);
        }
        let s = guard.as_mut().expect("just set");
        if s.read == 0 {
            // A new strategy starts with the trials finished so far read (they were not its own).
            s.read = ctx.finished.len();
        }
        self.absorb(s, ctx, rng);
        let a = self.margins(s);
        let x = s.cma.ask(rng);
        let eval: Vec<f64> = x.iter().zip(&s.cma.mean).zip(&a).map(|((xi, m), ai)| m + ai * (xi - m)).collect();
        s.pending.insert(ctx.number, (s.cma.run, s.cma.generation, x));
        Ok(s.axes.iter().zip(&eval).map(|(axis, u)| (axis.name.clone(), axis.value_at(*u))).collect())
    }

    fn sample_independent(
        &self,
        ctx: &SampleContext<'_>,
        name: &str,
        dist: &Distribution,
        rng: &mut StdRng,
    ) -> Result<f64, SearchError> {
        if self.n_complete(ctx) >= self.n_startup_trials.max(1) {
            self.warning.fallback("CmaEsSampler", "CMA-ES", ctx, name, dist);
        }
        self.independent.sample_independent(ctx, name, dist, rng)
    }
}

/// Hansen's CMA-ES in the unit cube (active covariance update, rank-one and rank-mu updates, cumulative step-size adaptation), with out-of-bounds samples redrawn and then clipped.
struct Cma {
    mean: Vec<f64>,
    sigma: f64,
    c: DMatrix<f64>,
    /// `C = B diag(d^2) B^T`.
    b: DMatrix<f64>,
    d: DVector<f64>,
    p_sigma: DVector<f64>,
    p_c: DVector<f64>,
    popsize: usize,
    weights: Vec<f64>,
    mu_eff: f64,
    c_sigma: f64,
    d_sigma: f64,
    c_c: f64,
    c1: f64,
    c_mu: f64,
    chi_n: f64,
    generation: usize,
    /// Which run (restart) this is.
    run: usize,
    /// Best and worst loss of recent generations, for the flat-fitness stop.
    history: Vec<f64>,
    /// The generation's unused base directions, and which generation they belong to.
    zs: Vec<DVector<f64>>,
    zs_generation: Option<usize>,
    tolx: f64,
}

/// Stop when the recent losses span less than this.
const TOL_FUN: f64 = 1e-12;
/// Stop when the covariance's condition number exceeds this.
const TOL_COND: f64 = 1e14;

impl Cma {
    fn new(mean: Vec<f64>, sigma: f64, popsize: usize, run: usize) -> Cma {
        let n = mean.len();
        let nf = n as f64;
        let mu = popsize / 2;
        // Active CMA-ES's weights (Hansen 2016, as the `cmaes` package Optuna uses): the worse
        // half of each generation gets negative weights in the covariance update.
        let raw: Vec<f64> = (0..popsize).map(|i| ((popsize as f64 + 1.0) / 2.0).ln() - ((i + 1) as f64).ln()).collect();
        let eff = |w: &[f64]| w.iter().sum::<f64>().powi(2) / w.iter().map(|v| v * v).sum::<f64>();
        let mu_eff = eff(&raw[..mu]);
        let mu_eff_minus = if popsize > mu { eff(&raw[mu..]) } else { 0.0 };
        let c1 = 2.0 / ((nf + 1.3).powi(2) + mu_eff);
        let c_mu = (1.0 - c1 - 1e-8).min(2.0 * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + mu_eff));
        let min_alpha =
            (1.0 + c1 / c_mu).min(1.0 + 2.0 * mu_eff_minus / (mu_eff + 2.0)).min((1.0 - c1 - c_mu) / (nf * c_mu));
        let pos: f64 = raw.iter().filter(|w| **w > 0.0).sum();
        let neg: f64 = raw.iter().filter(|w| **w < 0.0).map(|w| -w).sum();
        let weights: Vec<f64> =
            raw.iter().map(|w| if *w >= 0.0 { w / pos } else { min_alpha * w / neg.max(1e-300) }).collect();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let c_c = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
        Cma {
            mean,
            sigma,
            c: DMatrix::identity(n, n),
            b: DMatrix::identity(n, n),
            d: DVector::from_element(n, 1.0),
            p_sigma: DVector::zeros(n),
            p_c: DVector::zeros(n),
            popsize,
            weights,
            mu_eff,
            c_sigma,
            d_sigma,
            c_c,
            c1,
            c_mu,
            chi_n: nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf)),
            generation: 0,
            run,
            history: Vec::new(),
            zs: Vec::new(),
            zs_generation: None,
            tolx: 1e-12 * sigma,
        }
    }

    /// The generation's base directions: orthogonal sampling (Wang, Emmerich & Bäck 2014), each
    /// block of `n` Gaussian draws orthogonalised and rescaled to the lengths of independent
    /// draws, so a generation spreads over every direction while each draw stays `N(0, I)`.
    fn directions(&mut self, rng: &mut StdRng) {
        let n = self.mean.len();
        let gauss = |rng: &mut StdRng| DVector::from_fn(n, |_, _| rng.sample::<f64, _>(StandardNormal));
        let mut out = Vec::with_capacity(self.popsize);
        while out.len() < self.popsize {
            let block: Vec<DVector<f64>> = (0..n.min(self.popsize - out.len())).map(|_| gauss(rng)).collect();
            let mut basis: Vec<DVector<f64>> = Vec::with_capacity(block.len());
            for v in &block {
                let mut u = v.clone();
                for b in &basis {
                    u -= b * b.dot(&u);
                }
                let norm = u.norm();
                basis.push(if norm > 1e-12 { u / norm } else { v.normalize() });
            }
            out.extend(basis.into_iter().map(|b| b * gauss(rng).norm()));
        }
        self.zs = out;
        self.zs_generation = Some(self.generation);
    }

    /// A candidate in the unit cube: the generation's next direction, then up to 100 fresh draws
    /// for one inside, else the last one clipped.
    fn ask(&mut self, rng: &mut StdRng) -> Vec<f64> {
        let n = self.mean.len();
        if self.zs_generation != Some(self.generation) {
            self.directions(rng);
        }
        let mut x = vec![0.0; n];
        for _ in 0..100 {
            let z = self.zs.pop().unwrap_or_else(|| DVector::from_fn(n, |_, _| rng.sample::<f64, _>(StandardNormal)));
            let y = &self.b * z.component_mul(&self.d);
            x.iter_mut().zip(&self.mean).zip(y.iter()).for_each(|((xi, m), yi)| *xi = m + self.sigma * yi);
            if x.iter().all(|v| (0.0..=1.0).contains(v)) {
                return x;
            }
        }
        x.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        x
    }

    /// One generation's update from `popsize` (point, loss) pairs.
    fn tell(&mut self, mut results: Vec<(Vec<f64>, f64)>) {
        let n = self.mean.len();
        results.sort_by(|a, b| a.1.total_cmp(&b.1));
        self.history.push(results[0].1);
        self.history.push(results[results.len() - 1].1);
        let m_old = DVector::from_column_slice(&self.mean);
        let ys: Vec<DVector<f64>> =
            results.iter().map(|(x, _)| (DVector::from_column_slice(x) - &m_old) / self.sigma).collect();
        let mut y_w = DVector::zeros(n);
        for (w, y) in self.weights.iter().zip(&ys).filter(|(w, _)| **w > 0.0) {
            y_w += y * *w;
        }
        let m_new = &m_old + &y_w * self.sigma;
        self.mean = m_new.iter().copied().collect();
        // C^{-1/2} v = B diag(1/d) B^T v.
        let inv_d = self.d.map(|v| 1.0 / v);
        let c_inv_sqrt = |v: &DVector<f64>| &self.b * (self.b.transpose() * v).component_mul(&inv_d);
        self.p_sigma = &self.p_sigma * (1.0 - self.c_sigma)
            + c_inv_sqrt(&y_w) * (self.c_sigma * (2.0 - self.c_sigma) * self.mu_eff).sqrt();
        let norm_ps = self.p_sigma.norm();
        let denom = (1.0 - (1.0 - self.c_sigma).powi(2 * (self.generation as i32 + 1))).sqrt();
        let h_sigma = if norm_ps / denom < (1.4 + 2.0 / (n as f64 + 1.0)) * self.chi_n { 1.0 } else { 0.0 };
        self.p_c = &self.p_c * (1.0 - self.c_c) + &y_w * (h_sigma * (self.c_c * (2.0 - self.c_c) * self.mu_eff).sqrt());
        let delta = (1.0 - h_sigma) * self.c_c * (2.0 - self.c_c);
        let mut rank_mu = DMatrix::zeros(n, n);
        for (w, y) in self.weights.iter().zip(&ys) {
            // Negative weights act on directions rescaled to the expected length (`n`).
            let w_io = if *w >= 0.0 { *w } else { w * n as f64 / (c_inv_sqrt(y).norm_squared() + 1e-8) };
            rank_mu.ger(w_io, y, y, 1.0);
        }
        let w_sum: f64 = self.weights.iter().sum();
        let decay = 1.0 + self.c1 * delta - self.c1 - self.c_mu * w_sum;
        self.c = &self.c * decay + &self.p_c * self.p_c.transpose() * self.c1 + rank_mu * self.c_mu;
        self.sigma *= ((self.c_sigma / self.d_sigma) * (norm_ps / self.chi_n - 1.0)).min(1.0).exp();
        self.sigma = self.sigma.min(1e32);
        // Keep C symmetric and positive definite against rounding.
        let ct = self.c.transpose();
        self.c = (&self.c + ct) * 0.5;
        let eig = SymmetricEigen::new(self.c.clone());
        let vals = eig.eigenvalues.map(|v| v.max(1e-300));
        self.b = eig.eigenvectors;
        self.d = vals.map(f64::sqrt);
        self.c = &self.b * DMatrix::from_diagonal(&vals) * self.b.transpose();
        self.generation += 1;
    }

    /// The stopping rules of Hansen's restart strategies: flat losses, tiny steps, divergence,
    /// no effect of a coordinate or an axis, an ill-conditioned covariance.
    fn should_stop(&self) -> bool {
        let n = self.mean.len();
        let term = 10 + (30.0 * n as f64 / self.popsize as f64).ceil() as usize;
        if self.generation > term {
            let recent = &self.history[self.history.len().saturating_sub(2 * term)..];
            let (lo, hi) = recent.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
            if hi - lo < TOL_FUN {
                return true;
            }
        }
        let dc: Vec<f64> = (0..n).map(|i| self.c[(i, i)]).collect();
        if dc.iter().all(|c| self.sigma * c < self.tolx) && self.p_c.iter().all(|p| self.sigma * p < self.tolx) {
            return true;
        }
        let d_max = self.d.max();
        if self.sigma * d_max > 1e4 {
            return true;
        }
        if self.mean.iter().zip(&dc).any(|(m, c)| *m == m + 0.2 * self.sigma * c.sqrt()) {
            return true;
        }
        let i = self.generation % n;
        if (0..n).all(|k| self.mean[k] == self.mean[k] + 0.1 * self.sigma * self.d[i] * self.b[(k, i)]) {
            return true;
        }
        (d_max / self.d.min()).powi(2) > TOL_COND
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn norm_ppf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn run(cma: &mut Cma, f: impl Fn(&[f64]) -> f64, generations: usize, rng: &mut StdRng) {
        for _ in 0..generations {
            let batch = (0..cma.popsize).map(|_| cma.ask(rng)).map(|x| (x.clone(), f(&x))).collect::<Vec<_>>();
            cma.tell(batch);
        }
    }

    #[test]
    fn quantiles() {
        assert!(norm_ppf(0.5).abs() < 1e-9);
        assert!((norm_ppf(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((norm_ppf(1e-4) + 3.719_016_485).abs() < 1e-7);
    }

    #[test]
    fn converges_on_a_shifted_sphere() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut cma = Cma::new(vec![0.5; 4], 0.2, 8, 0);
        let f = |x: &[f64]| x.iter().map(|v| (v - 0.3).powi(2)).sum::<f64>();
        run(&mut cma, f, 150, &mut rng);
        assert!(cma.mean.iter().all(|m| (m - 0.3).abs() < 1e-4), "{:?}", cma.mean);
    }

    #[test]
    fn a_flat_function_stops_the_strategy() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut cma = Cma::new(vec![0.5; 3], 0.2, 7, 0);
        run(&mut cma, |_| 1.0, 30, &mut rng);
        assert!(cma.should_stop());
        let mut fresh = Cma::new(vec![0.5; 3], 0.2, 7, 0);
        run(&mut fresh, |x| x.iter().map(|v| (v - 0.3).powi(2)).sum(), 5, &mut rng);
        assert!(!fresh.should_stop());
    }
}
