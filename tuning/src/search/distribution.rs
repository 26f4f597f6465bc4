//! Distributions a trial draws from, validated when asked, and the values it records.
//!
//! Every value has an internal `f64` form the samplers work with: the number itself for floats and
//! integers, the choice's index for categories.

use std::fmt;

use super::error::SearchError;

/// The space one parameter is drawn from.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A real number in `[low, high]`, uniform or log-uniform, optionally on a grid of `step`.
    Float {
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
        /// Draw uniformly in `ln x`.
        log: bool,
        /// Values are `low + k * step`.
        step: Option<f64>,
    },
    /// An integer in `[low, high]` on a grid of `step`, optionally log-uniform.
    Int {
        /// The lower bound.
        low: i64,
        /// The upper bound.
        high: i64,
        /// Values are `low + k * step`.
        step: i64,
        /// Draw uniformly in `ln x`.
        log: bool,
    },
    /// One of a list of choices, recorded by their text.
    Categorical {
        /// The choices, as text.
        choices: Vec<String>,
    },
}

/// A parameter's value as recorded in a trial.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A float parameter.
    Float(f64),
    /// An integer parameter.
    Int(i64),
    /// A categorical parameter: the choice's text.
    Categorical(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Int(x) => write!(f, "{x}"),
            ParamValue::Categorical(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Float { low, high, log, step } => {
                write!(f, "float[{low}, {high}]")?;
                if *log {
                    f.write_str(" log")?;
                }
                if let Some(s) = step {
                    write!(f, " step {s}")?;
                }
                Ok(())
            }
            Distribution::Int { low, high, step, log } => {
                write!(f, "int[{low}, {high}] step {step}")?;
                if *log {
                    f.write_str(" log")?;
                }
                Ok(())
            }
            Distribution::Categorical { choices } => write!(f, "categorical{choices:?}"),
        }
    }
}

/// Relative tolerance when checking that a float step divides its range.
const STEP_TOL: f64 = 1e-9;

impl Distribution {
    /// Checks the distribution; `name` is only used in the error.
    pub fn validate(&self, name: &str) -> Result<(), SearchError> {
        let name = name.to_string();
        match *self {
            Distribution::Float { low, high, log, step } => {
                if !low.is_finite() || !high.is_finite() {
                    return Err(SearchError::NonFiniteBound { name, low, high });
                }
                if low > high {
                    return Err(SearchError::EmptyRange { name, low, high });
                }
                if log && low <= 0.0 {
                    return Err(SearchError::LogNonPositive { name, low });
                }
                if let Some(step) = step {
                    if log {
                        return Err(SearchError::LogWithStep { name });
                    }
                    if !(step > 0.0 && step.is_finite()) {
                        return Err(SearchError::InvalidStep { name, step });
                    }
                    let k = (high - low) / step;
                    if (k - k.round()).abs() > STEP_TOL * k.abs().max(1.0) {
                        return Err(SearchError::StepDoesNotDivide { name, low, high, step });
                    }
                }
                Ok(())
            }
            Distribution::Int { low, high, step, log } => {
                let (lo, hi) = (low as f64, high as f64);
                if low > high {
                    return Err(SearchError::EmptyRange { name, low: lo, high: hi });
                }
                if step < 1 {
                    return Err(SearchError::InvalidStep { name, step: step as f64 });
                }
                if log && low < 1 {
                    return Err(SearchError::LogNonPositive { name, low: lo });
                }
                if log && step != 1 {
                    return Err(SearchError::LogWithStep { name });
                }
                if (high - low) % step != 0 {
                    return Err(SearchError::StepDoesNotDivide { name, low: lo, high: hi, step: step as f64 });
                }
                Ok(())
            }
            Distribution::Categorical { ref choices } => {
                if choices.is_empty() {
                    return Err(SearchError::EmptyChoices { name });
                }
                Ok(())
            }
        }
    }

    /// Whether both are the same kind (float, int, categorical).
    pub fn same_kind(&self, other: &Distribution) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// Whether the distribution has a single possible value.
    pub fn is_single(&self) -> bool {
        match self {
            Distribution::Float { low, high, .. } => low == high,
            Distribution::Int { low, high, .. } => low == high,
            Distribution::Categorical { choices } => choices.len() == 1,
        }
    }

    /// The internal `f64` of a recorded value, or `None` when it does not belong to this space.
    pub fn to_internal(&self, value: &ParamValue) -> Option<f64> {
        match (self, value) {
            (Distribution::Float { low, high, step, .. }, ParamValue::Float(x)) => {
                let inside = *x >= *low && *x <= *high;
                let on_grid = step.is_none_or(|s| {
                    let k = (x - low) / s;
                    (k - k.round()).abs() <= 1e-6
                });
                (inside && on_grid).then_some(*x)
            }
            (Distribution::Int { low, high, step, .. }, ParamValue::Int(x)) => {
                (*x >= *low && *x <= *high && (x - low) % step == 0).then_some(*x as f64)
            }
            (Distribution::Categorical { choices }, ParamValue::Categorical(s)) => {
                choices.iter().position(|c| c == s).map(|i| i as f64)
            }
            _ => None,
        }
    }

    /// The recorded value of an internal `f64`, rounded and clamped onto the space.
    pub fn to_external(&self, internal: f64) -> ParamValue {
        match self {
            Distribution::Float { low, high, step, .. } => {
                let x = match step {
                    Some(s) => low + ((internal - low) / s).round() * s,
                    None => internal,
                };
                ParamValue::Float(x.clamp(*low, *high))
            }
            Distribution::Int { low, high, step, .. } => {
                let k = ((internal - *low as f64) / *step as f64).round() as i64;
                ParamValue::Int((low + k * step).clamp(*low, *high))
            }
            Distribution::Categorical { choices } => {
                let i = (internal.round().max(0.0) as usize).min(choices.len() - 1);
                ParamValue::Categorical(choices[i].clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_onto_grid() {
        let d = Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.25) };
        assert_eq!(d.to_external(0.3), ParamValue::Float(0.25));
        assert_eq!(d.to_external(1.2), ParamValue::Float(1.0));
        let i = Distribution::Int { low: 1, high: 9, step: 2, log: false };
        assert_eq!(i.to_external(4.2), ParamValue::Int(5));
        assert_eq!(i.to_internal(&ParamValue::Int(4)), None);
        let c = Distribution::Categorical { choices: vec!["a".into(), "b".into()] };
        assert_eq!(c.to_internal(&ParamValue::Categorical("b".into())), Some(1.0));
    }

    #[test]
    fn float_step_tolerates_rounding() {
        let d = Distribution::Float { low: 0.1, high: 0.7, log: false, step: Some(0.1) };
        assert!(d.validate("x").is_ok());
        let bad = Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.3) };
        assert!(matches!(bad.validate("x"), Err(SearchError::StepDoesNotDivide { .. })));
    }
}
