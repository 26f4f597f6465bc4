//! Gaussian-process Bayesian optimisation as a relative sampler, after Optuna's `GPSampler`: the
//! numeric parameters every complete trial shares are mapped onto the unit cube, a GP with a
//! Matern-5/2 ARD kernel is fitted to the standardised objective values (lengthscales, signal
//! variance and noise by maximising the log marginal likelihood plus Optuna's weak priors, with a
//! bounded quasi-Newton method on log parameters, warm-started from the previous trial's fit),
//! and the next point maximises the log expected improvement: many random points are scored, the
//! best trial and a roulette pick of the scored ones start bounded quasi-Newton searches, and the
//! best end point wins (discrete parameters are then rounded onto their grid).
//!
//! The kernel matrix is factorised with nalgebra's Cholesky; a trial at 100 observations in ten
//! dimensions costs a few milliseconds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use ferrograd_tensor::Tensor;
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::Rng;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::sampler::{RandomSampler, SampleContext, Sampler};
use super::trial::TrialState;
use super::unit_space::{position, FallbackWarning, SharedSpace, UnitAxis};

/// The Gaussian-process sampler. Build with [`GpSampler::new`] and the option methods.
///
/// Randomness comes from the study's seed (each trial's generator), so a seeded study replays.
/// Categorical parameters, parameters outside the shared space (asked only by some trials) and
/// multi-objective studies are drawn by the independent sampler ([`RandomSampler`] by default,
/// see [`independent_sampler`](Self::independent_sampler)), with a warning printed once per
/// parameter. A clone has the same options and starts afresh (no cached space or fit).
///
/// ```
/// use ferrograd_tuning::search::{GpSampler, SearchError, Study};
/// let study = Study::builder().sampler(GpSampler::new().n_startup_trials(5)).seed(1).build();
/// study.optimize(20, |t| {
///     let x = t.suggest_float("x", -5.0, 5.0, false)?;
///     let lr = t.suggest_float("lr", 1e-4, 1.0, true)?;
///     Ok::<_, SearchError>((x - 1.0).powi(2) + (lr.log10() + 2.0).powi(2))
/// })?;
/// assert!(study.best_value().unwrap() < 0.5);
/// # Ok::<(), SearchError>(())
/// ```
pub struct GpSampler {
    n_startup_trials: usize,
    deterministic: bool,
    n_preliminary_samples: usize,
    n_local_search: usize,
    independent: Arc<dyn Sampler>,
    warning: Arc<FallbackWarning>,
    space: Arc<Mutex<SharedSpace>>,
    /// The last fitted raw hyperparameters, to warm-start the next fit.
    fitted: Arc<Mutex<Option<Vec<f64>>>>,
}

impl Clone for GpSampler {
    fn clone(&self) -> Self {
        GpSampler {
            independent: Arc::clone(&self.independent),
            warning: Arc::new(FallbackWarning::default()),
            space: Arc::new(Mutex::new(SharedSpace::default())),
            fitted: Arc::new(Mutex::new(None)),
            ..*self
        }
    }
}

impl std::fmt::Debug for GpSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpSampler")
            .field("n_startup_trials", &self.n_startup_trials)
            .field("deterministic_objective", &self.deterministic)
            .field("n_preliminary_samples", &self.n_preliminary_samples)
            .field("n_local_search", &self.n_local_search)
            .finish_non_exhaustive()
    }
}

impl Default for GpSampler {
    fn default() -> Self {
        GpSampler::new()
    }
}

/// The smallest noise variance of the standardised values (Optuna's).
const MIN_NOISE: f64 = 1e-6;
/// Bounds of the raw (log) hyperparameters: inverse squared lengthscales, signal variance, noise.
const LOG_RHO: (f64, f64) = (-9.0, 9.0);
const LOG_SCALE: (f64, f64) = (-7.0, 7.0);
const LOG_NOISE: (f64, f64) = (-16.0, 2.0);

impl GpSampler {
    /// Optuna's defaults: 10 startup trials, 2048 scored points and 10 local searches per
    /// proposal, a noisy objective (the noise variance is fitted).
    pub fn new() -> Self {
        GpSampler {
            n_startup_trials: 10,
            deterministic: false,
            n_preliminary_samples: 2048,
            n_local_search: 10,
            independent: Arc::new(RandomSampler::new()),
            warning: Arc::new(FallbackWarning::default()),
            space: Arc::new(Mutex::new(SharedSpace::default())),
            fitted: Arc::new(Mutex::new(None)),
        }
    }

    /// Complete trials drawn by the independent sampler before the GP takes over (default 10).
    pub fn n_startup_trials(mut self, n: usize) -> Self {
        self.n_startup_trials = n;
        self
    }

    /// Whether the objective returns the same value for the same parameters (default `false`):
    /// the noise variance is then fixed at its minimum instead of fitted.
    pub fn deterministic_objective(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }

    /// Random points scored by the acquisition per proposal (default 2048). Errors for 0.
    pub fn n_preliminary_samples(mut self, n: usize) -> Result<Self, SearchError> {
        if n == 0 {
            return Err(SearchError::InvalidOption("n_preliminary_samples must be at least 1".into()));
        }
        self.n_preliminary_samples = n;
        Ok(self)
    }

    /// Quasi-Newton searches of the acquisition per proposal (default 10). Errors for 0.
    pub fn n_local_search(mut self, n: usize) -> Result<Self, SearchError> {
        if n == 0 {
            return Err(SearchError::InvalidOption("n_local_search must be at least 1".into()));
        }
        self.n_local_search = n;
        Ok(self)
    }

    /// The sampler for startup trials and for parameters the GP does not cover (categorical
    /// ones, conditional ones); default [`RandomSampler`]. A [`QmcSampler`](super::QmcSampler) gives
    /// a space-filling initial design.
    pub fn independent_sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.independent = Arc::new(sampler);
        self
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

    /// Fits the GP to `x` (rows in the unit cube) and standardised `y` (to maximise).
    fn fit(&self, x: Vec<Vec<f64>>, y: Vec<f64>) -> Gp {
        let d = x[0].len();
        let n_raw = d + 2;
        let mut guard = self.fitted.lock().unwrap_or_else(|p| p.into_inner());
        let mut theta = match guard.as_ref() {
            Some(t) if t.len() == n_raw => t.clone(),
            _ => {
                let mut t = vec![0.0; n_raw];
                t[d + 1] = (1e-2f64).ln();
                t
            }
        };
        let mut lo = vec![LOG_RHO.0; n_raw];
        let mut hi = vec![LOG_RHO.1; n_raw];
        (lo[d], hi[d]) = LOG_SCALE;
        (lo[d + 1], hi[d + 1]) = LOG_NOISE;
        if self.deterministic {
            theta[d + 1] = LOG_NOISE.0;
            hi[d + 1] = LOG_NOISE.0;
        }
        let data = Data::new(x, y);
        let mut objective = |t: &[f64], g: &mut [f64]| data.neg_log_posterior(t, g);
        let (best, _) = minimize_box(&mut objective, &theta, &lo, &hi, 1e-2, 200);
        *guard = Some(best.clone());
        drop(guard);
        data.posterior(&best).unwrap_or_else(|| {
            // The fitted kernel matrix is singular: fall back to a large noise, always factorisable.
            let mut t = best.clone();
            t[d + 1] = LOG_NOISE.1;
            data.posterior(&t).expect("a kernel matrix with unit noise is positive definite")
        })
    }

    /// The point maximising the log expected improvement over the best value `f_best`.
    fn optimise_acquisition(&self, gp: &Gp, best_x: &[f64], rng: &mut StdRng) -> Vec<f64> {
        let d = best_x.len();
        let m = self.n_preliminary_samples;
        let cand: Vec<f64> = (0..m * d).map(|_| rng.random::<f64>()).collect();
        let scores = gp.log_ei_batch(&cand);
        // Starting points: the best trial and a roulette pick (weights exp(score - max)) of the
        // scored points, without replacement.
        let mut starts = vec![best_x.to_vec()];
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut w: Vec<f64> = scores.iter().map(|s| if s.is_finite() { (s - top).exp() } else { 0.0 }).collect();
        for _ in 1..self.n_local_search.min(m + 1) {
            let total: f64 = w.iter().sum();
            let pick = if total > 0.0 && total.is_finite() {
                let mut u = rng.random::<f64>() * total;
                w.iter().position(|wi| {
                    u -= wi;
                    u <= 0.0
                })
            } else {
                None
            };
            let i = pick.unwrap_or_else(|| rng.random_range(0..m));
            w[i] = 0.0;
            starts.push(cand[i * d..(i + 1) * d].to_vec());
        }
        let (lo, hi) = (vec![0.0; d], vec![1.0; d]);
        let mut best = (f64::INFINITY, best_x.to_vec());
        for s in starts {
            let mut objective = |x: &[f64], g: &mut [f64]| {
                let v = gp.log_ei(x, g);
                g.iter_mut().for_each(|gi| *gi = -*gi);
                -v
            };
            let (x, fx) = minimize_box(&mut objective, &s, &lo, &hi, 1e-4, 200);
            if fx < best.0 {
                best = (fx, x);
            }
        }
        best.1
    }
}

impl Sampler for GpSampler {
    fn sample_relative(
        &self,
        ctx: &SampleContext<'_>,
        rng: &mut StdRng,
    ) -> Result<BTreeMap<String, ParamValue>, SearchError> {
        let (axes, n_complete) = self.shared(ctx);
        if ctx.directions.len() > 1 || n_complete < self.n_startup_trials.max(1) || axes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut xs = Vec::new();
        let mut losses = Vec::new();
        for t in ctx.trials.iter().filter(|t| t.state == TrialState::Complete) {
            let Some(v) = t.value.filter(|v| !v.is_nan()) else { continue };
            if let Some(x) = position(t, &axes) {
                xs.push(x);
                losses.push(ctx.direction.loss(v));
            }
        }
        // Infinite values become the worst (best) finite one, as Optuna does.
        let (lo, hi) = losses
            .iter()
            .filter(|l| l.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(*l), b.max(*l)));
        if lo > hi {
            return Ok(BTreeMap::new());
        }
        losses.iter_mut().for_each(|l| *l = l.clamp(lo, hi));
        let n = losses.len() as f64;
        let mean = losses.iter().sum::<f64>() / n;
        let std = (losses.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-10);
        // The GP maximises: standardised negated losses.
        let y: Vec<f64> = losses.iter().map(|l| (mean - l) / std).collect();
        let best_i = (0..y.len()).max_by(|a, b| y[*a].total_cmp(&y[*b])).expect("not empty");
        let best_x = xs[best_i].clone();
        let gp = self.fit(xs, y);
        let u = self.optimise_acquisition(&gp, &best_x, rng);
        Ok(axes.iter().zip(&u).map(|(a, ui)| (a.name.clone(), a.value_at(a.snap(*ui)))).collect())
    }

    fn sample_independent(
        &self,
        ctx: &SampleContext<'_>,
        name: &str,
        dist: &Distribution,
        rng: &mut StdRng,
    ) -> Result<f64, SearchError> {
        if self.n_complete(ctx) >= self.n_startup_trials.max(1) {
            self.warning.fallback("GpSampler", "the GP sampler", ctx, name, dist);
        }
        self.independent.sample_independent(ctx, name, dist, rng)
    }
}

/// Matern 5/2 of a squared scaled distance `r2`: `(1 + s + s^2 / 3) exp(-s)`, `s = sqrt(5 r2)`,
/// and its derivative in `r2`.
fn matern52(r2: f64) -> (f64, f64) {
    let s = (5.0 * r2).sqrt();
    let e = (-s).exp();
    ((1.0 + s + s * s / 3.0) * e, -5.0 / 6.0 * (1.0 + s) * e)
}

/// Observations and their pairwise squared differences per dimension (`n * n * d`).
struct Data {
    x: Vec<Vec<f64>>,
    y: DVector<f64>,
    diff2: Vec<f64>,
}

impl Data {
    fn new(x: Vec<Vec<f64>>, y: Vec<f64>) -> Data {
        let n = x.len();
        let d = x[0].len();
        let mut diff2 = vec![0.0; n * n * d];
        for i in 0..n {
            for j in 0..n {
                for k in 0..d {
                    diff2[(i * n + j) * d + k] = (x[i][k] - x[j][k]).powi(2);
                }
            }
        }
        Data { x, y: DVector::from_vec(y), diff2 }
    }

    fn dims(&self) -> (usize, usize) {
        (self.x.len(), self.x[0].len())
    }

    /// The kernel matrix (with noise) and the Matern values and derivatives of each pair.
    fn kernel(&self, theta: &[f64]) -> (DMatrix<f64>, Vec<f64>, Vec<f64>) {
        let (n, d) = self.dims();
        let rho: Vec<f64> = theta[..d].iter().map(|t| t.exp()).collect();
        let scale = theta[d].exp();
        let noise = MIN_NOISE + theta[d + 1].exp();
        let mut m = vec![0.0; n * n];
        let mut dm = vec![0.0; n * n];
        for p in 0..n * n {
            let r2: f64 = self.diff2[p * d..(p + 1) * d].iter().zip(&rho).map(|(a, b)| a * b).sum();
            (m[p], dm[p]) = matern52(r2);
        }
        let k = DMatrix::from_fn(n, n, |i, j| scale * m[i * n + j] + if i == j { noise } else { 0.0 });
        (k, m, dm)
    }

    /// Minus the log marginal likelihood plus log prior of raw (log) hyperparameters
    /// `[ln rho_1..d, ln scale, ln(noise - min)]`, and its gradient.
    fn neg_log_posterior(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d) = self.dims();
        let (k, m, dm) = self.kernel(theta);
        let Some(chol) = k.cholesky() else { return f64::INFINITY };
        let alpha = chol.solve(&self.y);
        let k_inv = chol.inverse();
        let l = chol.l_dirty();
        let log_det: f64 = (0..n).map(|i| l[(i, i)].ln()).sum::<f64>() * 2.0;
        let lml = -0.5 * self.y.dot(&alpha) - 0.5 * log_det - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        let scale = theta[d].exp();
        let noise_raw = theta[d + 1].exp();
        let noise = MIN_NOISE + noise_raw;
        // d lml / d theta = 0.5 tr((alpha alpha^T - K^-1) dK / d theta).
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut g_scale = 0.0;
        let mut g_noise = 0.0;
        for i in 0..n {
            for j in 0..n {
                let p = i * n + j;
                let w = alpha[i] * alpha[j] - k_inv[(i, j)];
                g_scale += w * scale * m[p];
                if i == j {
                    g_noise += w * noise_raw;
                }
                let c = w * scale * dm[p];
                for (g, d2) in grad[..d].iter_mut().zip(&self.diff2[p * d..(p + 1) * d]) {
                    *g += c * d2;
                }
            }
        }
        // Optuna's priors: -(0.1 / rho + 0.1 rho) per dimension, Gamma(2, 1) on the scale,
        // Gamma(1.1, 30) on the noise.
        let mut prior = 0.0;
        for (g, t) in grad[..d].iter_mut().zip(theta) {
            let rho = t.exp();
            *g = 0.5 * *g * rho + 0.1 / rho - 0.1 * rho;
            prior -= 0.1 / rho + 0.1 * rho;
        }
        prior += scale.ln() - scale + 0.1 * noise.ln() - 30.0 * noise;
        grad[d] = 0.5 * g_scale + 1.0 - scale;
        grad[d + 1] = 0.5 * g_noise + (0.1 / noise - 30.0) * noise_raw;
        grad.iter_mut().for_each(|g| *g = -*g);
        -(lml + prior)
    }

    /// The posterior for fitted hyperparameters, `None` if the kernel matrix is not positive
    /// definite.
    fn posterior(&self, theta: &[f64]) -> Option<Gp> {
        let (_, d) = self.dims();
        let (k, _, _) = self.kernel(theta);
        let chol = k.cholesky()?;
        let alpha = chol.solve(&self.y);
        let k_inv = chol.inverse();
        let f_best = self.y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let n = self.x.len();
        let k_inv_t = Tensor::from_vec(k_inv.as_slice().to_vec(), &[n, n]);
        Some(Gp {
            x: self.x.concat(),
            k_inv_t,
            rho: theta[..d].iter().map(|t| t.exp()).collect(),
            scale: theta[d].exp(),
            alpha,
            k_inv,
            f_best,
        })
    }
}

/// A fitted GP's posterior: `mu(x) = k(x)^T alpha`, `var(x) = scale - k(x)^T K^-1 k(x)`.
struct Gp {
    /// Observations, row-major.
    x: Vec<f64>,
    rho: Vec<f64>,
    scale: f64,
    alpha: DVector<f64>,
    k_inv: DMatrix<f64>,
    /// `K^-1` as a tensor (symmetric: the storage order does not matter), for batched products.
    k_inv_t: Tensor<f64>,
    f_best: f64,
}

/// The smallest posterior variance (keeps the log finite at observed points).
const MIN_VAR: f64 = 1e-10;

impl Gp {
    /// Log expected improvement of many points (rows of `cand`, row-major, `d` columns) at once:
    /// the variances' quadratic forms go through one matrix product (the tensor crate's GEMM).
    fn log_ei_batch(&self, cand: &[f64]) -> Vec<f64> {
        let d = self.rho.len();
        let (m, n) = (cand.len() / d, self.alpha.len());
        let mut ks = vec![0.0; m * n];
        for (row, c) in ks.chunks_mut(n).zip(cand.chunks(d)) {
            for (k, xi) in row.iter_mut().zip(self.x.chunks(d)) {
                let r2: f64 = c.iter().zip(xi).zip(&self.rho).map(|((a, b), r)| r * (a - b) * (a - b)).sum();
                *k = self.scale * matern52(r2).0;
            }
        }
        let kt = Tensor::from_vec(ks, &[m, n]);
        let v = kt.matmul(&self.k_inv_t).to_vec();
        let ks = kt.to_vec();
        ks.chunks(n)
            .zip(v.chunks(n))
            .map(|(k, vk)| {
                let mu: f64 = k.iter().zip(self.alpha.iter()).map(|(a, b)| a * b).sum();
                let q: f64 = k.iter().zip(vk).map(|(a, b)| a * b).sum();
                let sd = (self.scale - q).max(MIN_VAR).sqrt();
                sd.ln() + log_h((mu - self.f_best) / sd).0
            })
            .collect()
    }

    /// Log expected improvement at `x` and its gradient.
    fn log_ei(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d) = (self.alpha.len(), x.len());
        let mut k = DVector::zeros(n);
        let mut dk = vec![0.0; n];
        for (i, xi) in self.x.chunks(d).enumerate() {
            let r2: f64 = x.iter().zip(xi).zip(&self.rho).map(|((a, b), r)| r * (a - b) * (a - b)).sum();
            let (f, df) = matern52(r2);
            k[i] = self.scale * f;
            dk[i] = self.scale * df;
        }
        let mu = k.dot(&self.alpha);
        let beta = &self.k_inv * &k;
        let raw_var = self.scale - k.dot(&beta);
        let var = raw_var.max(MIN_VAR);
        let sd = var.sqrt();
        let z = (mu - self.f_best) / sd;
        let (lh, g) = log_h(z);
        // d/dmu = g / sd; d/dvar = (1 - g z) / (2 var).
        let d_mu = g / sd;
        let d_var = if raw_var > MIN_VAR { (1.0 - g * z) / (2.0 * var) } else { 0.0 };
        // d k_i / d x_j = dk_i * 2 rho_j (x_j - X_ij); d mu = alpha . dk, d var = -2 beta . dk.
        grad.iter_mut().for_each(|gj| *gj = 0.0);
        for (i, xi) in self.x.chunks(d).enumerate() {
            let c = 2.0 * dk[i] * (d_mu * self.alpha[i] - 2.0 * d_var * beta[i]);
            for (j, gj) in grad.iter_mut().enumerate() {
                *gj += c * self.rho[j] * (x[j] - xi[j]);
            }
        }
        sd.ln() + lh
    }
}

/// `ln h(z)` with `h(z) = E[max(0, z + N(0, 1))] = phi(z) + z Phi(z)`, and `d ln h / dz =
/// Phi(z) / h(z)`. Far in the lower tail `h` is computed from the continued fraction of Mills'
/// ratio, without the cancellation of the direct formula (as in Ament et al. 2023, "Unexpected
/// improvements to expected improvement").
fn log_h(z: f64) -> (f64, f64) {
    let log_pdf = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln();
    if z > -3.0 {
        let cdf = 0.5 * erfc(-z / std::f64::consts::SQRT_2);
        let h = (z * cdf + log_pdf.exp()).max(1e-300);
        return (h.ln(), cdf / h);
    }
    // Mills' ratio R(t) = Phi(-t) / phi(t) = 1 / (t + c), c = 1 / (t + 2 / (t + 3 / ...)):
    // h / phi = 1 - t R = c / (t + c) and Phi / h = 1 / c.
    let t = -z;
    let mut c = 0.0;
    for k in (1..=60).rev() {
        c = k as f64 / (t + c);
    }
    (log_pdf + c.ln() - (t + c).ln(), 1.0 / c)
}

/// Complementary error function (W. J. Cody's rational approximations through `erfc(x) =
/// exp(-x^2) P(x) / Q(x)`, here Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
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

/// Minimises `f` (value, gradient written into its second argument) over the box `[lo, hi]`
/// from `x0`: projected limited-memory BFGS (ten pairs) with an Armijo backtracking search along
/// the projected path, L-BFGS-B's behaviour on the small smooth problems met here. Stops when the
/// projected gradient's largest entry is below `gtol`, the value stalls, or after `max_iter`
/// iterations. Returns the best point and its value.
fn minimize_box(
    f: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    gtol: f64,
    max_iter: usize,
) -> (Vec<f64>, f64) {
    let n = x0.len();
    let clip = |x: &mut [f64]| x.iter_mut().zip(lo).zip(hi).for_each(|((v, l), h)| *v = v.clamp(*l, *h));
    let mut x = x0.to_vec();
    clip(&mut x);
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    if !fx.is_finite() {
        return (x, fx);
    }
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let (mut x_new, mut g_new) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..max_iter {
        // Variables at a bound with the gradient pushing outwards stay fixed.
        let free: Vec<bool> =
            (0..n).map(|i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0))).collect();
        let pg = (0..n).filter(|i| free[*i]).map(|i| g[i].abs()).fold(0.0, f64::max);
        if pg < gtol {
            break;
        }
        let mask = |v: &mut [f64]| v.iter_mut().zip(&free).for_each(|(vi, fr)| *vi = if *fr { *vi } else { 0.0 });
        let mut q = g.clone();
        mask(&mut q);
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, y, _)) = pairs.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|qi| *qi *= gamma);
        }
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        mask(&mut dir);
        if dot(&dir, &g) >= 0.0 {
            dir = g.iter().map(|v| -v).collect();
            mask(&mut dir);
            pairs.clear();
        }
        let mut t =
            if pairs.is_empty() { (1.0 / dir.iter().map(|v| v.abs()).fold(0.0, f64::max)).min(1.0) } else { 1.0 };
        let mut accepted = None;
        for _ in 0..30 {
            x_new.iter_mut().zip(&x).zip(&dir).for_each(|((xn, xi), di)| *xn = xi + t * di);
            clip(&mut x_new);
            let dx: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
            if dx.iter().all(|v| *v == 0.0) {
                break;
            }
            let f_new = f(&x_new, &mut g_new);
            if f_new.is_finite() && f_new <= fx + 1e-4 * dot(&g, &dx) {
                accepted = Some((f_new, dx));
                break;
            }
            t *= 0.5;
        }
        let Some((f_new, s)) = accepted else { break };
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y).max(1e-300) {
            pairs.push_back((s, y, 1.0 / sy));
            if pairs.len() > 10 {
                pairs.pop_front();
            }
        }
        let stalled = (fx - f_new) <= 1e-10 * fx.abs().max(f_new.abs()).max(1.0);
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if stalled {
            break;
        }
    }
    (x, fx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_h_is_continuous_and_matches_the_direct_formula() {
        let direct = |z: f64| {
            let cdf = 0.5 * erfc(-z / std::f64::consts::SQRT_2);
            (z * cdf + (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()).ln()
        };
        for z in [-2.9, -1.0, 0.0, 2.0] {
            assert!((log_h(z).0 - direct(z)).abs() < 1e-6, "z {z}");
        }
        // Both branches agree at the switch, and the tail decays like phi(z) / z^2.
        assert!((log_h(-3.0 - 1e-9).0 - direct(-3.0)).abs() < 1e-5);
        let z = -40.0f64;
        let approx = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln() - 2.0 * (-z).ln();
        assert!((log_h(z).0 - approx).abs() < 1e-2, "{} {approx}", log_h(z).0);
        // The derivative is Phi / h: check by finite differences on both branches.
        for z in [-5.0, -1.0, 1.5] {
            let fd = (log_h(z + 1e-6).0 - log_h(z - 1e-6).0) / 2e-6;
            assert!((fd - log_h(z).1).abs() < 1e-4 * fd.abs().max(1.0), "z {z}: {fd} vs {}", log_h(z).1);
        }
    }

    #[test]
    fn box_minimiser_finds_bounded_minima() {
        // A shifted quadratic whose minimum (2, -1) lies outside the box [0, 1]^2 on one axis.
        let mut f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] - 2.0);
            g[1] = 20.0 * (x[1] - 0.3);
            (x[0] - 2.0).powi(2) + 10.0 * (x[1] - 0.3).powi(2)
        };
        let (x, _) = minimize_box(&mut f, &[0.5, 0.9], &[0.0, 0.0], &[1.0, 1.0], 1e-8, 100);
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 0.3).abs() < 1e-6, "{x:?}");
    }

    fn data() -> Data {
        let x: Vec<Vec<f64>> = (0..12).map(|i| vec![(i as f64 * 0.37) % 1.0, (i as f64 * 0.61) % 1.0]).collect();
        let y = x.iter().map(|p| (6.0 * p[0]).sin() + p[1] * p[1]).collect();
        Data::new(x, y)
    }

    #[test]
    fn hyperparameter_gradient_matches_finite_differences() {
        let data = data();
        let theta = [0.3, -0.4, 0.2, -3.0];
        let mut g = [0.0; 4];
        data.neg_log_posterior(&theta, &mut g);
        for k in 0..4 {
            let (mut a, mut b) = (theta, theta);
            a[k] += 1e-6;
            b[k] -= 1e-6;
            let mut s = [0.0; 4];
            let fd = (data.neg_log_posterior(&a, &mut s) - data.neg_log_posterior(&b, &mut s)) / 2e-6;
            assert!((fd - g[k]).abs() < 1e-4 * fd.abs().max(1.0), "theta {k}: {fd} vs {}", g[k]);
        }
    }

    #[test]
    fn acquisition_gradient_matches_finite_differences() {
        let gp = data().posterior(&[1.0, 0.5, 0.0, -4.0]).unwrap();
        for x in [[0.15, 0.8], [0.52, 0.33], [0.9, 0.05]] {
            let mut g = [0.0; 2];
            let v = gp.log_ei(&x, &mut g);
            let batch = gp.log_ei_batch(&x)[0];
            assert!((v - batch).abs() < 1e-9, "{v} vs {batch}");
            for k in 0..2 {
                let (mut a, mut b) = (x, x);
                a[k] += 1e-6;
                b[k] -= 1e-6;
                let mut s = [0.0; 2];
                let fd = (gp.log_ei(&a, &mut s) - gp.log_ei(&b, &mut s)) / 2e-6;
                assert!((fd - g[k]).abs() < 1e-4 * fd.abs().max(1.0), "x {x:?} dim {k}: {fd} vs {}", g[k]);
            }
        }
    }
}
