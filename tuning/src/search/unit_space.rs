//! The unit cube the model-based samplers (CMA-ES, the Gaussian process) work in: the numeric
//! parameters every complete trial shares, each mapped onto `[0, 1]` (log scales in log space,
//! discrete ones widened by half a step on each side so that every value owns a cell of the same
//! width), and the one-time warning they give when a parameter falls back to their independent
//! sampler.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use super::distribution::{Distribution, ParamValue};
use super::sampler::SampleContext;
use super::trial::{FrozenTrial, TrialState};

/// One parameter's axis of the unit cube.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnitAxis {
    pub(crate) name: String,
    pub(crate) dist: Distribution,
    /// The axis' ends in the working space (log for log scales).
    lo: f64,
    hi: f64,
    log: bool,
    /// The number of values of a discrete axis (steps, integers), `None` for a continuous one.
    cells: Option<f64>,
}

impl UnitAxis {
    /// The axis of a numeric parameter, `None` for categories, single values and ranges whose
    /// width overflows.
    pub(crate) fn of(name: &str, dist: &Distribution) -> Option<UnitAxis> {
        if dist.is_single() {
            return None;
        }
        let (lo, hi, log, cells) = match *dist {
            Distribution::Float { low, high, log: true, .. } => (low.ln(), high.ln(), true, None),
            Distribution::Float { low, high, step: Some(s), .. } => {
                (low - s / 2.0, high + s / 2.0, false, Some(((high - low) / s).round() + 1.0))
            }
            Distribution::Float { low, high, .. } => (low, high, false, None),
            Distribution::Int { low, high, log: true, .. } => {
                ((low as f64 - 0.5).ln(), (high as f64 + 0.5).ln(), true, Some((high - low) as f64 + 1.0))
            }
            Distribution::Int { low, high, step, .. } => {
                let h = step as f64 / 2.0;
                let n = ((high as f64 - low as f64) / step as f64).round() + 1.0;
                (low as f64 - h, high as f64 + h, false, Some(n))
            }
            Distribution::Categorical { .. } => return None,
        };
        ((hi - lo).is_finite() && hi > lo).then(|| UnitAxis {
            name: name.to_string(),
            dist: dist.clone(),
            lo,
            hi,
            log,
            cells,
        })
    }

    /// An internal value's position in `[0, 1]`.
    pub(crate) fn to_unit(&self, internal: f64) -> f64 {
        let y = if self.log { internal.ln() } else { internal };
        ((y - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }

    /// The recorded value at position `u` (clamped to `[0, 1]`, rounded onto the parameter's grid).
    pub(crate) fn value_at(&self, u: f64) -> ParamValue {
        let y = self.lo + u.clamp(0.0, 1.0) * (self.hi - self.lo);
        self.dist.to_external(if self.log { y.exp() } else { y })
    }

    /// `u` moved onto the centre of its value's cell (the identity on continuous axes): the point
    /// the objective is actually evaluated at.
    pub(crate) fn snap(&self, u: f64) -> f64 {
        if self.cells.is_none() {
            return u.clamp(0.0, 1.0);
        }
        let v = self.dist.to_internal(&self.value_at(u)).unwrap_or(f64::NAN);
        if v.is_nan() {
            u.clamp(0.0, 1.0)
        } else {
            self.to_unit(v)
        }
    }

    /// The ends of the cell holding `u` on a discrete axis, in unit coordinates.
    pub(crate) fn cell(&self, u: f64) -> Option<(f64, f64)> {
        self.cells?;
        let v = self.dist.to_internal(&self.value_at(u))?;
        let (a, b) = match self.dist {
            Distribution::Int { step, .. } => (v - step as f64 / 2.0, v + step as f64 / 2.0),
            Distribution::Float { step: Some(s), .. } => (v - s / 2.0, v + s / 2.0),
            _ => return None,
        };
        let unit = |x: f64| {
            let y = if self.log { x.max(f64::MIN_POSITIVE).ln() } else { x };
            ((y - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
        };
        Some((unit(a), unit(b)))
    }
}

/// The numeric parameters every complete trial has with one same distribution (more than one
/// value), in name order, kept current from the study's append-only list of finished trials: each
/// update reads only the trials finished since the last one.
#[derive(Debug, Default)]
pub(crate) struct SharedSpace {
    read: usize,
    n_complete: usize,
    space: Option<BTreeMap<String, Distribution>>,
    axes: Vec<UnitAxis>,
}

impl SharedSpace {
    /// Reads the trials finished since the last update.
    pub(crate) fn update(&mut self, ctx: &SampleContext<'_>) {
        if self.read > ctx.finished.len() {
            *self = SharedSpace::default();
        }
        let mut changed = false;
        for &n in &ctx.finished[self.read..] {
            let Some(t) = ctx.trials.get(n as usize).filter(|t| t.state == TrialState::Complete) else { continue };
            self.n_complete += 1;
            match &mut self.space {
                None => {
                    self.space = Some(t.distributions.clone());
                    changed = true;
                }
                Some(s) => {
                    let before = s.len();
                    s.retain(|k, d| t.distributions.get(k) == Some(d));
                    changed |= s.len() != before;
                }
            }
        }
        self.read = ctx.finished.len();
        if changed {
            let space = self.space.as_ref().expect("set when changed");
            self.axes = space.iter().filter_map(|(n, d)| UnitAxis::of(n, d)).collect();
        }
    }

    /// The numeric axes of the shared space.
    pub(crate) fn axes(&self) -> &[UnitAxis] {
        &self.axes
    }

    /// The number of complete trials read.
    pub(crate) fn n_complete(&self) -> usize {
        self.n_complete
    }
}

/// A trial's position on each axis, `None` unless it has them all.
pub(crate) fn position(t: &FrozenTrial, axes: &[UnitAxis]) -> Option<Vec<f64>> {
    axes.iter()
        .map(|a| {
            let v = t.params.get(&a.name).or_else(|| t.fixed_params.get(&a.name))?;
            (t.distributions.get(&a.name).is_none_or(|d| *d == a.dist)).then_some(())?;
            a.dist.to_internal(v).map(|x| a.to_unit(x))
        })
        .collect()
}

/// Warns once per parameter name that a model-based sampler drew it from its independent
/// sampler (a categorical parameter, one outside the shared space), as Optuna does.
#[derive(Debug, Default)]
pub(crate) struct FallbackWarning {
    warned: Mutex<HashSet<String>>,
}

impl FallbackWarning {
    pub(crate) fn warn(&self, sampler: &str, name: &str, number: u64, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(name.to_string()) {
            eprintln!(
                "ferrograd search: {sampler}: parameter `{name}` (trial {number}) is drawn by the independent sampler \
                 instead ({why}); the search may be less efficient (warned once per parameter)"
            );
        }
    }

    /// Warns that `name` falls back to the independent sampler, saying why: several objectives,
    /// a categorical parameter, or one outside the space every complete trial shares. `model`
    /// names the model in the message ("CMA-ES", "the GP sampler").
    pub(crate) fn fallback(
        &self,
        sampler: &str,
        model: &str,
        ctx: &SampleContext<'_>,
        name: &str,
        dist: &Distribution,
    ) {
        let why = if ctx.directions.len() > 1 {
            format!("{model} optimises a single objective")
        } else if matches!(dist, Distribution::Categorical { .. }) {
            format!("{model} does not model categorical parameters")
        } else {
            "the parameter is not shared by every complete trial".to_string()
        };
        self.warn(sampler, name, ctx.number, &why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_axes_give_every_value_one_cell() {
        let d = Distribution::Int { low: 1, high: 3, step: 1, log: false };
        let a = UnitAxis::of("n", &d).unwrap();
        assert_eq!(a.value_at(0.0), ParamValue::Int(1));
        assert_eq!(a.value_at(0.34), ParamValue::Int(2));
        assert_eq!(a.value_at(1.0), ParamValue::Int(3));
        let (lo, hi) = a.cell(0.5).unwrap();
        assert!((a.snap(0.4) - 0.5).abs() < 1e-12);
        assert!((lo - 1.0 / 3.0).abs() < 1e-12 && (hi - 2.0 / 3.0).abs() < 1e-12);
        let l = UnitAxis::of("lr", &Distribution::Float { low: 1e-4, high: 1.0, log: true, step: None }).unwrap();
        assert!((l.to_unit(1e-2) - 0.5).abs() < 1e-12);
        assert!(UnitAxis::of("c", &Distribution::Categorical { choices: vec!["a".into(), "b".into()] }).is_none());
    }
}
