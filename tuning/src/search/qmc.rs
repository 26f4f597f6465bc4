//! Quasi-Monte Carlo sampling: trial `i` takes point `i` of a Sobol sequence (Joe & Kuo's
//! direction numbers, up to 1024 parameters), optionally scrambled (a random linear matrix
//! scramble and digital shift, as SciPy's `qmc.Sobol(scramble=True)`), so a study's first
//! trials cover the space far more evenly than random draws. It works standalone and as the
//! startup ("independent") sampler of [`CmaEsSampler`](super::CmaEsSampler) and
//! [`GpSampler`](super::GpSampler).
//!
//! Each parameter gets its own Sobol coordinate, in the order the sampler first meets the names
//! (the order the objective asks them, for an objective that asks them in a fixed order). The
//! point index is the trial number, so parallel workers of one study take different points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::distribution::Distribution;
use super::error::SearchError;
use super::sampler::{sample_uniform, SampleContext, Sampler};
use super::sobol_directions::SOBOL_DIRECTIONS;
use super::unit_space::{FallbackWarning, UnitAxis};

/// Bits of each coordinate: `2^32` points per sequence.
const BITS: usize = 32;

/// The Sobol sampler. Build with [`QmcSampler::new`] and the option methods.
///
/// ```
/// use ferrograd_tuning::search::{GpSampler, QmcSampler, SearchError, Study};
/// // Standalone: 16 trials spread over the square.
/// let study = Study::builder().sampler(QmcSampler::new()).build();
/// study.optimize(16, |t| {
///     let x = t.suggest_float("x", 0.0, 1.0, false)?;
///     let y = t.suggest_float("y", 0.0, 1.0, false)?;
///     Ok::<_, SearchError>(x + y)
/// })?;
/// // As the initial design of a model-based sampler.
/// let gp = GpSampler::new().n_startup_trials(8).independent_sampler(QmcSampler::new().seed(7));
/// let study = Study::builder().sampler(gp).build();
/// study.optimize(12, |t| Ok::<_, SearchError>(t.suggest_float("x", -1.0, 1.0, false)?.powi(2)))?;
/// # Ok::<(), SearchError>(())
/// ```
#[derive(Debug)]
pub struct QmcSampler {
    scramble: bool,
    seed: u64,
    /// The generator, built on first use.
    sobol: Arc<Mutex<Option<Sobol>>>,
    /// Each parameter's dimension, in the order first met.
    dims: Arc<Mutex<HashMap<String, usize>>>,
    warning: Arc<FallbackWarning>,
}

impl Clone for QmcSampler {
    /// The same sequence; parameters get their dimensions afresh.
    fn clone(&self) -> Self {
        QmcSampler {
            scramble: self.scramble,
            seed: self.seed,
            sobol: Arc::clone(&self.sobol),
            dims: Arc::new(Mutex::new(HashMap::new())),
            warning: Arc::new(FallbackWarning::default()),
        }
    }
}

impl Default for QmcSampler {
    fn default() -> Self {
        QmcSampler::new()
    }
}

impl QmcSampler {
    /// A scrambled Sobol sequence with seed 0 (SciPy's scrambling; Optuna's `QMCSampler`
    /// defaults to an unscrambled one, whose first point is the lower corner).
    pub fn new() -> Self {
        QmcSampler {
            scramble: true,
            seed: 0,
            sobol: Arc::new(Mutex::new(None)),
            dims: Arc::new(Mutex::new(HashMap::new())),
            warning: Arc::new(FallbackWarning::default()),
        }
    }

    /// Scramble the sequence (default on); off, trial 0 takes the lower corner of every range.
    pub fn scramble(mut self, on: bool) -> Self {
        self.scramble = on;
        self.sobol = Arc::new(Mutex::new(None));
        self
    }

    /// The scramble's seed (default 0). Every worker of a study must use the same one.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.sobol = Arc::new(Mutex::new(None));
        self
    }

    /// Point `index` of the sequence in `dims` dimensions (each coordinate in `[0, 1)`); errors
    /// beyond the 1024 dimensions the direction numbers cover or the `2^32` points of the sequence.
    ///
    /// ```
    /// use ferrograd_tuning::search::QmcSampler;
    /// let q = QmcSampler::new().scramble(false);
    /// assert_eq!(q.point(1, 2)?, vec![0.5, 0.5]);
    /// assert_eq!(q.point(2, 2)?, vec![0.75, 0.25]);
    /// # Ok::<(), ferrograd_tuning::search::SearchError>(())
    /// ```
    pub fn point(&self, index: u64, dims: usize) -> Result<Vec<f64>, SearchError> {
        if dims > SOBOL_DIRECTIONS.len() {
            return Err(SearchError::InvalidOption(format!(
                "a Sobol sequence here has at most {} dimensions, asked {dims}",
                SOBOL_DIRECTIONS.len()
            )));
        }
        if index >= 1 << BITS {
            return Err(SearchError::InvalidOption(format!(
                "a Sobol sequence here has 2^{BITS} points, asked point {index}"
            )));
        }
        let mut guard = self.sobol.lock().unwrap_or_else(|p| p.into_inner());
        let sobol = guard.get_or_insert_with(|| Sobol::new(self.scramble, self.seed));
        Ok((0..dims).map(|d| sobol.coordinate(index as u32, d)).collect())
    }

    /// The dimension of parameter `name`, given on first use.
    fn dim(&self, name: &str) -> usize {
        let mut dims = self.dims.lock().unwrap_or_else(|p| p.into_inner());
        let n = dims.len();
        *dims.entry(name.to_string()).or_insert(n)
    }
}

impl Sampler for QmcSampler {
    fn sample_independent(
        &self,
        ctx: &SampleContext<'_>,
        name: &str,
        dist: &Distribution,
        rng: &mut StdRng,
    ) -> Result<f64, SearchError> {
        let dim = self.dim(name);
        if dim >= SOBOL_DIRECTIONS.len() || ctx.number >= 1 << BITS {
            let why = format!("the Sobol sequence covers {} parameters and 2^{BITS} trials", SOBOL_DIRECTIONS.len());
            self.warning.warn("QmcSampler", name, ctx.number, &why);
            return Ok(sample_uniform(dist, rng));
        }
        let u = {
            let mut guard = self.sobol.lock().unwrap_or_else(|p| p.into_inner());
            guard.get_or_insert_with(|| Sobol::new(self.scramble, self.seed)).coordinate(ctx.number as u32, dim)
        };
        Ok(match dist {
            Distribution::Categorical { choices } => {
                ((u * choices.len() as f64) as usize).min(choices.len() - 1) as f64
            }
            _ => match UnitAxis::of(name, dist) {
                Some(axis) => dist.to_internal(&axis.value_at(u)).unwrap_or_else(|| sample_uniform(dist, rng)),
                // A single value, or a range whose width overflows.
                None => sample_uniform(dist, rng),
            },
        })
    }
}

/// Direction numbers of every dimension (scrambled or not), built lazily per dimension.
#[derive(Debug)]
struct Sobol {
    scramble: bool,
    seed: u64,
    /// `v[d][k]`: the `k`-th direction number of dimension `d`, scaled to 32 bits.
    v: Vec<[u32; BITS]>,
    /// The digital shift of each dimension.
    shift: Vec<u32>,
}

impl Sobol {
    fn new(scramble: bool, seed: u64) -> Sobol {
        Sobol { scramble, seed, v: Vec::new(), shift: Vec::new() }
    }

    /// Coordinate `d` of point `i`: the XOR of the direction numbers at the set bits of `i`'s
    /// Gray code (the same points as the usual recursive form, in the same order).
    fn coordinate(&mut self, i: u32, d: usize) -> f64 {
        while self.v.len() <= d {
            self.extend();
        }
        let gray = i ^ (i >> 1);
        let mut x = self.shift[d];
        for (k, v) in self.v[d].iter().enumerate() {
            if gray >> k & 1 == 1 {
                x ^= v;
            }
        }
        x as f64 / (1u64 << BITS) as f64
    }

    /// Builds the next dimension: Bratley and Fox's recurrence from the initial numbers, then
    /// (scrambled) a random lower-triangular binary matrix applied to each and a random shift.
    fn extend(&mut self) {
        let d = self.v.len();
        let (poly, init) = SOBOL_DIRECTIONS[d];
        let mut m = [0u32; BITS];
        if d == 0 {
            m = [1; BITS];
        } else {
            let s = init.len();
            m[..s].copy_from_slice(init);
            for j in s..BITS {
                let mut new = m[j - s];
                for k in 0..s {
                    if (poly >> (s - 1 - k)) & 1 == 1 {
                        new ^= m[j - k - 1] << (k + 1);
                    }
                }
                m[j] = new;
            }
        }
        let mut v = [0u32; BITS];
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = m[k] << (BITS - 1 - k);
        }
        let mut shift = 0;
        if self.scramble {
            // One generator per dimension: dimensions built in any order get the same scramble.
            let mut rng = StdRng::seed_from_u64(self.seed ^ (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // Row r of the matrix acts on bit r counted from the most significant one: ones on the
            // diagonal, random bits below it.
            let rows: Vec<u32> = (0..BITS)
                .map(|r| {
                    let diagonal = 1u32 << (BITS - 1 - r);
                    let above = if r == 0 { 0 } else { rng.random::<u32>() & !(u32::MAX >> r) };
                    above | diagonal
                })
                .collect();
            for vk in v.iter_mut() {
                let mut out = 0u32;
                for (r, row) in rows.iter().enumerate() {
                    out |= ((row & *vk).count_ones() & 1) << (BITS - 1 - r);
                }
                *vk = out;
            }
            shift = rng.random::<u32>();
        }
        self.v.push(v);
        self.shift.push(shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscrambled_points_match_scipy() {
        // scipy.stats.qmc.Sobol(40, scramble=False).random(16), rows 3, 7, 11, 15 and columns
        // 0, 1, 9, 39.
        let want = [
            [0.25, 0.75, 0.25, 0.75],
            [0.125, 0.625, 0.875, 0.125],
            [0.4375, 0.5625, 0.0625, 0.3125],
            [0.0625, 0.9375, 0.6875, 0.6875],
        ];
        let q = QmcSampler::new().scramble(false);
        for (row, i) in want.iter().zip([3u64, 7, 11, 15]) {
            let p = q.point(i, 40).unwrap();
            let got = [p[0], p[1], p[9], p[39]];
            assert_eq!(&got, row, "point {i}");
        }
    }
}
