//! NSGA-II (Deb et al. 2002) as Optuna's `NSGAIISampler`: a genetic algorithm for one or more
//! objectives. Complete trials, in the order they finish, form generations of
//! `population_size`; the parents of generation `k` are the elite of generation `k - 1` and its
//! parents (by non-domination rank, then crowding distance). A new trial's parameters are a
//! child of two parents picked by binary tournament (crossover), and each parameter is, with
//! `mutation_prob`, left to a uniform draw or mutated. Until the first generation is complete,
//! parameters are drawn uniformly.
//!
//! Constraints ([`Trial::set_constraint`](super::Trial::set_constraint), or the sampler's
//! [`constraints_func`](NsgaIISampler::constraints_func)) make feasible trials dominate
//! infeasible ones, and among infeasible ones the smaller total violation win.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::multi::{crowding_distance, dominates, losses, non_dominated_ranks, trial_constraints};
use super::sampler::{sample_uniform, SampleContext, Sampler};
use super::study::trial_seed;
use super::trial::{FrozenTrial, TrialState};

/// How two parents make a child (on numerical parameters, in their sampling space: log
/// parameters in `ln x`; categorical parameters always take either parent's choice, with
/// `swapping_prob`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Crossover {
    /// Each parameter from either parent (the second with `swapping_prob`): Optuna's default.
    Uniform,
    /// Simulated binary crossover, bounded to the space (Optuna's `SBXCrossover`). `eta`: the
    /// distribution index, larger keeps children nearer their parents; `None` is 20 with several
    /// objectives and 2 with one.
    Sbx {
        /// The distribution index.
        eta: Option<f64>,
    },
    /// Blend crossover: uniform in the parents' range widened by `alpha` of it on each side
    /// (Optuna's `BLXAlphaCrossover`, `alpha = 0.5`); children outside the space are redrawn.
    Blx {
        /// The widening, a fraction of the parents' distance.
        alpha: f64,
    },
}

/// What happens to a parameter picked for mutation.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Mutation {
    /// A fresh uniform draw from its distribution (Optuna's default).
    Uniform,
    /// Polynomial mutation (Deb's NSGA-II code, Optuna's `PolynomialMutation`) with distribution
    /// index `eta` (Optuna: 20); categorical parameters are redrawn uniformly.
    Polynomial {
        /// The distribution index.
        eta: f64,
    },
}

/// Constraint values of a finished trial (feasible when every value is `<= 0`).
pub type ConstraintsFn = Arc<dyn Fn(&FrozenTrial) -> Vec<f64> + Send + Sync>;

/// The NSGA-II sampler (Optuna's `NSGAIISampler`, with its defaults).
///
/// ```
/// use ferrograd_tuning::search::{Direction, NsgaIISampler, SearchError, Study};
/// let sampler = NsgaIISampler::new().population_size(20).seed(1);
/// let study = Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).sampler(sampler).build();
/// study.optimize(100, |t| {
///     let x = t.suggest_float("x", 0.0, 2.0, false)?;
///     Ok::<_, SearchError>([x * x, (x - 2.0) * (x - 2.0)])
/// })?;
/// assert!(study.best_trials().len() > 10);
/// # Ok::<(), SearchError>(())
/// ```
pub struct NsgaIISampler {
    population_size: usize,
    mutation_prob: Option<f64>,
    mutation: Mutation,
    crossover: Crossover,
    crossover_prob: f64,
    swapping_prob: f64,
    seed: Option<u64>,
    constraints_func: Option<ConstraintsFn>,
    cache: Arc<Mutex<Cache>>,
}

impl fmt::Debug for NsgaIISampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsgaIISampler")
            .field("population_size", &self.population_size)
            .field("mutation_prob", &self.mutation_prob)
            .field("mutation", &self.mutation)
            .field("crossover", &self.crossover)
            .field("crossover_prob", &self.crossover_prob)
            .field("swapping_prob", &self.swapping_prob)
            .field("seed", &self.seed)
            .field("constraints_func", &self.constraints_func.is_some())
            .finish()
    }
}

impl Clone for NsgaIISampler {
    /// The same options, with nothing read yet (a clone may serve another study).
    fn clone(&self) -> Self {
        NsgaIISampler {
            cache: Arc::new(Mutex::new(Cache::default())),
            constraints_func: self.constraints_func.clone(),
            ..*self
        }
    }
}

impl Default for NsgaIISampler {
    fn default() -> Self {
        NsgaIISampler::new()
    }
}

/// What the sampler has read of the study: complete trials in the order they finished and the
/// parents of each generation (finished trials never change, so this only grows).
#[derive(Default)]
struct Cache {
    /// How far `SampleContext::finished` has been read, and the last trial read there with its
    /// values (to notice being handed another study).
    read: usize,
    last: Option<(u64, Vec<f64>)>,
    complete: Vec<u64>,
    /// `parents[k]`: the parent population of generation `k + 1`, by trial number.
    parents: Vec<Vec<u64>>,
    constraints: HashMap<u64, Vec<f64>>,
}

impl NsgaIISampler {
    /// Optuna's defaults: population 50, uniform crossover with probability 0.9 and swapping
    /// probability 0.5, mutation probability `1 / number of parameters` (a mutated parameter
    /// is drawn afresh), the study's seed.
    pub fn new() -> Self {
        NsgaIISampler {
            population_size: 50,
            mutation_prob: None,
            mutation: Mutation::Uniform,
            crossover: Crossover::Uniform,
            crossover_prob: 0.9,
            swapping_prob: 0.5,
            seed: None,
            constraints_func: None,
            cache: Arc::new(Mutex::new(Cache::default())),
        }
    }

    /// The number of trials per generation (at least 2).
    #[track_caller]
    pub fn population_size(mut self, n: usize) -> Self {
        assert!(n >= 2, "NsgaIISampler::population_size must be at least 2, got {n}");
        self.population_size = n;
        self
    }

    /// The probability that each parameter of a child is mutated (default `1 / number of
    /// parameters`).
    #[track_caller]
    pub fn mutation_prob(mut self, p: f64) -> Self {
        assert!((0.0..=1.0).contains(&p), "NsgaIISampler::mutation_prob must be in [0, 1], got {p}");
        self.mutation_prob = Some(p);
        self
    }

    /// What mutation does (default [`Mutation::Uniform`]).
    #[track_caller]
    pub fn mutation(mut self, mutation: Mutation) -> Self {
        if let Mutation::Polynomial { eta } = mutation {
            assert!(eta >= 0.0, "NsgaIISampler::mutation: polynomial eta must be >= 0, got {eta}");
        }
        self.mutation = mutation;
        self
    }

    /// The crossover (default [`Crossover::Uniform`]).
    #[track_caller]
    pub fn crossover(mut self, crossover: Crossover) -> Self {
        match crossover {
            Crossover::Sbx { eta: Some(eta) } => {
                assert!(eta >= 0.0, "NsgaIISampler::crossover: SBX eta must be >= 0, got {eta}")
            }
            Crossover::Blx { alpha } => {
                assert!(
                    alpha >= 0.0 && alpha.is_finite(),
                    "NsgaIISampler::crossover: BLX alpha must be >= 0, got {alpha}"
                )
            }
            _ => {}
        }
        self.crossover = crossover;
        self
    }

    /// The probability that a child is a crossover of two parents rather than a copy of one
    /// (default 0.9).
    #[track_caller]
    pub fn crossover_prob(mut self, p: f64) -> Self {
        assert!((0.0..=1.0).contains(&p), "NsgaIISampler::crossover_prob must be in [0, 1], got {p}");
        self.crossover_prob = p;
        self
    }

    /// The probability that a parameter comes from the second parent in uniform crossover (and
    /// for categorical parameters in every crossover; default 0.5).
    #[track_caller]
    pub fn swapping_prob(mut self, p: f64) -> Self {
        assert!((0.0..=1.0).contains(&p), "NsgaIISampler::swapping_prob must be in [0, 1], got {p}");
        self.swapping_prob = p;
        self
    }

    /// A seed of the sampler's own, used instead of the study's (with the trial number).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Constraint values of each complete trial (feasible when all are `<= 0`), steering the
    /// selection as Optuna's `constraints_func`. They are not stored with the trial: prefer
    /// [`Trial::set_constraint`](super::Trial::set_constraint), which
    /// [`Study::best_trials`](super::Study::best_trials) also sees.
    pub fn constraints_func(mut self, f: impl Fn(&FrozenTrial) -> Vec<f64> + Send + Sync + 'static) -> Self {
        self.constraints_func = Some(Arc::new(f));
        self
    }

    fn constraints(&self, cache: &mut Cache, t: &FrozenTrial) -> Vec<f64> {
        if let Some(c) = cache.constraints.get(&t.number) {
            return c.clone();
        }
        let mut c = trial_constraints(t);
        if let Some(f) = &self.constraints_func {
            c.extend(f(t));
        }
        cache.constraints.insert(t.number, c.clone());
        c
    }

    /// Reads newly finished trials; computes the parents of every complete generation.
    fn sync(&self, cache: &mut Cache, ctx: &SampleContext<'_>) {
        let fresh = cache.read <= ctx.finished.len()
            && cache.last.as_ref().is_none_or(|(n, values)| {
                cache.read > 0
                    && ctx.finished[cache.read - 1] == *n
                    && ctx.trials.get(*n as usize).is_some_and(|t| t.values == *values)
            });
        if !fresh {
            *cache = Cache::default();
        }
        let n_obj = ctx.directions.len();
        for &number in &ctx.finished[cache.read..] {
            if let Some(t) = ctx.trials.get(number as usize) {
                if t.state == TrialState::Complete && t.values.len() == n_obj {
                    cache.complete.push(number);
                }
            }
        }
        cache.read = ctx.finished.len();
        cache.last =
            ctx.finished.last().map(|&n| (n, ctx.trials.get(n as usize).map(|t| t.values.clone()).unwrap_or_default()));
        let generations = cache.complete.len() / self.population_size;
        while cache.parents.len() < generations {
            let k = cache.parents.len();
            let mut pool: Vec<u64> = cache.complete[k * self.population_size..(k + 1) * self.population_size].to_vec();
            if let Some(prev) = cache.parents.last() {
                pool.extend(prev);
            }
            let elite = self.elite(cache, ctx, pool);
            cache.parents.push(elite);
        }
    }

    /// The best `population_size` of `pool`: whole fronts in rank order, the last one cut by
    /// crowding distance (most isolated first). With constraints, feasible trials rank first and
    /// infeasible ones follow by total violation.
    fn elite(&self, cache: &mut Cache, ctx: &SampleContext<'_>, pool: Vec<u64>) -> Vec<u64> {
        let trials: Vec<&FrozenTrial> = pool.iter().map(|&n| &ctx.trials[n as usize]).collect();
        let points: Vec<Vec<f64>> = trials.iter().map(|t| losses(&t.values, ctx.directions)).collect();
        let violations: Vec<f64> =
            trials.iter().map(|t| self.constraints(cache, t).iter().filter(|c| **c > 0.0).sum()).collect();
        let constrained = trials.iter().any(|t| !cache.constraints[&t.number].is_empty());
        let ranks = if constrained {
            let feasible: Vec<usize> = (0..pool.len()).filter(|&i| violations[i] <= 0.0).collect();
            let fr = non_dominated_ranks(&feasible.iter().map(|&i| &points[i][..]).collect::<Vec<_>>());
            let mut ranks = vec![0; pool.len()];
            for (&i, r) in feasible.iter().zip(&fr) {
                ranks[i] = *r;
            }
            let base = fr.iter().max().map_or(0, |r| r + 1);
            let mut bad: Vec<usize> = (0..pool.len()).filter(|&i| violations[i] > 0.0).collect();
            bad.sort_by(|&a, &b| violations[a].total_cmp(&violations[b]));
            let mut r = base;
            for (k, &i) in bad.iter().enumerate() {
                if k > 0 && violations[i] > violations[bad[k - 1]] {
                    r += 1;
                }
                ranks[i] = r;
            }
            ranks
        } else {
            non_dominated_ranks(&points)
        };
        let mut fronts: Vec<Vec<usize>> = vec![Vec::new(); ranks.iter().max().map_or(0, |r| r + 1)];
        for (i, r) in ranks.iter().enumerate() {
            fronts[*r].push(i);
        }
        let mut elite = Vec::with_capacity(self.population_size);
        for front in fronts {
            if elite.len() + front.len() <= self.population_size {
                elite.extend(front.iter().map(|&i| pool[i]));
                continue;
            }
            let dist = crowding_distance(&front.iter().map(|&i| &points[i][..]).collect::<Vec<_>>());
            let mut order: Vec<usize> = (0..front.len()).collect();
            order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]).then(a.cmp(&b)));
            let room = self.population_size - elite.len();
            elite.extend(order[..room].iter().map(|&k| pool[front[k]]));
            break;
        }
        elite
    }

    /// Binary tournament: of two random candidates, the first if it (constrained-)dominates the
    /// second, else the second.
    fn tournament(
        &self,
        cache: &mut Cache,
        ctx: &SampleContext<'_>,
        candidates: &[&FrozenTrial],
        rng: &mut StdRng,
    ) -> usize {
        let a = rng.random_range(0..candidates.len());
        let b = rng.random_range(0..candidates.len());
        let (ta, tb) = (candidates[a], candidates[b]);
        let (ca, cb) = (self.constraints(cache, ta), self.constraints(cache, tb));
        let wins = if ca.is_empty() && cb.is_empty() {
            dominates(&losses(&ta.values, ctx.directions), &losses(&tb.values, ctx.directions))
        } else {
            let va: f64 = ca.iter().filter(|c| **c > 0.0).sum();
            let vb: f64 = cb.iter().filter(|c| **c > 0.0).sum();
            match (va <= 0.0, vb <= 0.0) {
                (true, true) => dominates(&losses(&ta.values, ctx.directions), &losses(&tb.values, ctx.directions)),
                (true, false) => true,
                (false, true) => false,
                (false, false) => va < vb,
            }
        };
        if wins {
            a
        } else {
            b
        }
    }
}

/// A numerical parameter in the space crossover works in: `ln x` for log scales, and for a
/// stepped parameter bounds widened by half a step, so that rounding back gives every value an
/// equal share.
fn bounds(dist: &Distribution) -> Option<(f64, f64)> {
    Some(match *dist {
        Distribution::Float { low, high, log: true, .. } => (low.ln(), high.ln()),
        Distribution::Float { low, high, step: Some(s), .. } => (low - s / 2.0, high + s / 2.0),
        Distribution::Float { low, high, .. } => (low, high),
        Distribution::Int { low, high, log: true, .. } => ((low as f64 - 0.5).ln(), (high as f64 + 0.5).ln()),
        Distribution::Int { low, high, step, .. } => (low as f64 - step as f64 / 2.0, high as f64 + step as f64 / 2.0),
        Distribution::Categorical { .. } => return None,
    })
}

fn log_scale(dist: &Distribution) -> bool {
    matches!(dist, Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. })
}

fn to_space(dist: &Distribution, internal: f64) -> f64 {
    if log_scale(dist) {
        internal.ln()
    } else {
        internal
    }
}

fn from_space(dist: &Distribution, x: f64) -> ParamValue {
    let (lo, hi) = bounds(dist).expect("numerical");
    let x = x.clamp(lo, hi);
    dist.to_external(if log_scale(dist) { x.exp() } else { x })
}

impl Crossover {
    /// A child of parents `a` and `b` (in the crossover space, within `[lo, hi]` per coordinate).
    fn cross(&self, a: &[f64], b: &[f64], lohi: &[(f64, f64)], multi: bool, swap: f64, rng: &mut StdRng) -> Vec<f64> {
        match *self {
            Crossover::Uniform => {
                a.iter().zip(b).map(|(x, y)| if rng.random::<f64>() >= swap { *y } else { *x }).collect()
            }
            Crossover::Blx { alpha } => a
                .iter()
                .zip(b)
                .map(|(x, y)| {
                    let (lo, hi) = (x.min(*y), x.max(*y));
                    let d = alpha * (hi - lo);
                    (lo - d) + (hi - lo + 2.0 * d) * rng.random::<f64>()
                })
                .collect(),
            Crossover::Sbx { eta } => {
                let eta = eta.unwrap_or(if multi { 20.0 } else { 2.0 });
                let n = a.len();
                let mut c1 = Vec::with_capacity(n);
                let mut c2 = Vec::with_capacity(n);
                for i in 0..n {
                    let (xl, xu) = lohi[i];
                    let (lo, hi) = (a[i].min(b[i]), a[i].max(b[i]));
                    let diff = (hi - lo).max(1e-10);
                    let beta1 = 1.0 + 2.0 * (lo - xl) / diff;
                    let beta2 = 1.0 + 2.0 * (xu - hi) / diff;
                    let alpha1 = 2.0 - beta1.powf(-(eta + 1.0));
                    let alpha2 = 2.0 - beta2.powf(-(eta + 1.0));
                    let u: f64 = rng.random();
                    let betaq = |alpha: f64| {
                        if u > 1.0 / alpha {
                            (1.0 / (2.0 - u * alpha)).powf(1.0 / (eta + 1.0))
                        } else {
                            (u * alpha).powf(1.0 / (eta + 1.0))
                        }
                    };
                    let k1 = 0.5 * ((lo + hi) - betaq(alpha1) * diff);
                    let k2 = 0.5 * ((lo + hi) + betaq(alpha2) * diff);
                    // Optuna's form: each gene from the children (or the parents) with equal
                    // chances, then one of the two children.
                    let (g1, g2) = if rng.random::<f64>() < 0.5 { (k1, k2) } else { (a[i], b[i]) };
                    if rng.random::<f64>() >= 0.5 {
                        c1.push(g1);
                        c2.push(g2);
                    } else {
                        c1.push(g2);
                        c2.push(g1);
                    }
                }
                if rng.random::<f64>() < 0.5 {
                    c1
                } else {
                    c2
                }
            }
        }
    }
}

/// Polynomial mutation of `x` within `[lo, hi]` (Deb's NSGA-II code, revision 1.1.6).
fn polynomial(x: f64, lo: f64, hi: f64, eta: f64, rng: &mut StdRng) -> f64 {
    let width = hi - lo;
    if width <= 0.0 {
        return x;
    }
    let u: f64 = rng.random();
    let (d1, d2) = ((x - lo) / width, (hi - x) / width);
    let power = 1.0 / (eta + 1.0);
    let dq = if u <= 0.5 {
        let v = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - d1).powf(eta + 1.0);
        v.powf(power) - 1.0
    } else {
        let v = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - d2).powf(eta + 1.0);
        1.0 - v.powf(power)
    };
    (x + dq * width).clamp(lo, hi)
}

impl Sampler for NsgaIISampler {
    fn sample_relative(
        &self,
        ctx: &SampleContext<'_>,
        rng: &mut StdRng,
    ) -> Result<BTreeMap<String, ParamValue>, SearchError> {
        if let Some(seed) = self.seed {
            // The trial's generator also serves its independent draws: reseeding it here makes
            // the whole trial follow the sampler's seed.
            *rng = StdRng::seed_from_u64(trial_seed(seed, ctx.number));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.sync(&mut cache, ctx);
        let Some(parents) = cache.parents.last().cloned() else { return Ok(BTreeMap::new()) };
        let parents: Vec<&FrozenTrial> = parents.iter().map(|&n| &ctx.trials[n as usize]).collect();
        // The space: parameters every parent has, with one distribution, of more than one value.
        let mut space: Vec<(&String, &Distribution)> = Vec::new();
        for (name, dist) in &parents[0].distributions {
            if !dist.is_single() && parents.iter().all(|p| p.distributions.get(name) == Some(dist)) {
                space.push((name, dist));
            }
        }
        let internal = |t: &FrozenTrial, name: &str, dist: &Distribution| {
            dist.to_internal(&t.params[name]).expect("a trial's parameter lies in its distribution")
        };
        let mut child: Vec<ParamValue>;
        if rng.random::<f64>() < self.crossover_prob {
            let numeric: Vec<usize> = (0..space.len()).filter(|&i| bounds(space[i].1).is_some()).collect();
            let lohi: Vec<(f64, f64)> = numeric.iter().map(|&i| bounds(space[i].1).expect("numerical")).collect();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let first = self.tournament(&mut cache, ctx, &parents, rng);
                let rest: Vec<&FrozenTrial> =
                    parents.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, t)| *t).collect();
                let second = rest[self.tournament(&mut cache, ctx, &rest, rng)];
                let first = parents[first];
                let point = |t: &FrozenTrial| -> Vec<f64> {
                    numeric.iter().map(|&i| to_space(space[i].1, internal(t, space[i].0, space[i].1))).collect()
                };
                let (pa, pb) = (point(first), point(second));
                let mut values =
                    self.crossover.cross(&pa, &pb, &lohi, ctx.directions.len() > 1, self.swapping_prob, rng);
                let inside = values.iter().zip(&lohi).all(|(x, (lo, hi))| x >= lo && x <= hi);
                // BLX may leave the space: redraw as Optuna does, but not forever.
                if !inside && attempt < 100 {
                    continue;
                }
                let mut numbers = values.drain(..);
                child = space
                    .iter()
                    .map(|(name, dist)| match dist {
                        Distribution::Categorical { .. } => {
                            let from = if rng.random::<f64>() >= self.swapping_prob { second } else { first };
                            from.params[*name].clone()
                        }
                        _ => from_space(dist, numbers.next().expect("one value per numerical parameter")),
                    })
                    .collect();
                break;
            }
        } else {
            let p = parents[rng.random_range(0..parents.len())];
            child = space.iter().map(|(name, _)| p.params[*name].clone()).collect();
        }
        let mutation_prob = self.mutation_prob.unwrap_or(1.0 / space.len().max(1) as f64);
        let mut out = BTreeMap::new();
        for ((name, dist), value) in space.iter().zip(child.drain(..)) {
            if rng.random::<f64>() >= mutation_prob {
                out.insert((*name).clone(), value);
            } else if let (Mutation::Polynomial { eta }, Some((lo, hi))) = (self.mutation, bounds(dist)) {
                let x = to_space(dist, dist.to_internal(&value).expect("the child lies in the space"));
                out.insert((*name).clone(), from_space(dist, polynomial(x, lo, hi, eta, rng)));
            }
            // Else left out: the trial draws it uniformly when the objective asks.
        }
        Ok(out)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_stays_inside_and_moves() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut moved = 0;
        for _ in 0..1000 {
            let y = polynomial(0.3, 0.0, 1.0, 20.0, &mut rng);
            assert!((0.0..=1.0).contains(&y));
            moved += usize::from(y != 0.3);
        }
        assert!(moved > 990);
    }

    #[test]
    fn sbx_children_stay_in_bounds() {
        let mut rng = StdRng::seed_from_u64(1);
        let lohi = [(0.0, 1.0), (-2.0, 5.0)];
        for _ in 0..2000 {
            let c = Crossover::Sbx { eta: Some(2.0) }.cross(&[0.1, 4.9], &[0.9, -1.5], &lohi, false, 0.5, &mut rng);
            for (x, (lo, hi)) in c.iter().zip(&lohi) {
                assert!(x >= lo && x <= hi, "{x} outside [{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn stepped_bounds_round_back_onto_the_grid() {
        let d = Distribution::Int { low: 1, high: 9, step: 2, log: false };
        let (lo, hi) = bounds(&d).unwrap();
        assert_eq!((lo, hi), (0.0, 10.0));
        assert_eq!(from_space(&d, 0.0), ParamValue::Int(1));
        assert_eq!(from_space(&d, 10.0), ParamValue::Int(9));
        assert_eq!(from_space(&d, 4.2), ParamValue::Int(5));
    }
}
