//! Distributions a trial draws from, validated when asked, and the values it records.
//!
//! Every value has an internal `f64` form the samplers work with, which is also the form Optuna
//! stores (`trial_params.param_value`): the number itself for floats and integers, the choice's
//! index for categories. Distributions are stored as Optuna's JSON
//! (`{"name": "FloatDistribution", "attributes": {...}}`), so either side reads the other's.
//!
//! Integer arithmetic on bounds is done in `i128`: a range may span all of `i64`.

use std::fmt;

use serde_json::Value;

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

impl ParamValue {
    /// The number of a float or integer parameter (`None` for a category).
    ///
    /// ```
    /// use ferrograd_tuning::search::ParamValue;
    /// assert_eq!(ParamValue::Int(3).as_f64(), Some(3.0));
    /// assert_eq!(ParamValue::Categorical("relu".into()).as_f64(), None);
    /// ```
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            ParamValue::Float(x) => Some(x),
            ParamValue::Int(x) => Some(x as f64),
            ParamValue::Categorical(_) => None,
        }
    }

    /// The integer of an integer parameter (`None` for floats, even integral ones, and categories).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            ParamValue::Int(x) => Some(x),
            _ => None,
        }
    }

    /// The text of a categorical parameter (`None` for numbers).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Categorical(s) => Some(s),
            _ => None,
        }
    }

    /// The value as JSON, as Optuna writes enqueued parameters (`fixed_params`).
    pub(crate) fn to_json(&self) -> Value {
        match self {
            ParamValue::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            ParamValue::Int(x) => Value::from(*x),
            ParamValue::Categorical(s) => Value::String(s.clone()),
        }
    }

    /// A value from JSON: integers become `Int`, other numbers `Float`, anything else the text
    /// of a category (see [`choice_text`]).
    pub(crate) fn from_json(v: &Value) -> ParamValue {
        match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => ParamValue::Int(i),
                None => ParamValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => ParamValue::Categorical(choice_text(other)),
        }
    }
}

impl From<f64> for ParamValue {
    fn from(x: f64) -> Self {
        ParamValue::Float(x)
    }
}

impl From<i64> for ParamValue {
    fn from(x: i64) -> Self {
        ParamValue::Int(x)
    }
}

impl From<&str> for ParamValue {
    fn from(s: &str) -> Self {
        ParamValue::Categorical(s.to_string())
    }
}

impl From<String> for ParamValue {
    fn from(s: String) -> Self {
        ParamValue::Categorical(s)
    }
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

/// The text a JSON choice of an Optuna categorical distribution is recorded by: strings as they
/// are, numbers and booleans as Rust prints them (so `suggest_categorical(&[1, 2])` matches
/// Optuna's `[1, 2]`), `null` as `None`.
pub(crate) fn choice_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().map_or_else(|| n.to_string(), |x| x.to_string()),
        },
        other => other.to_string(),
    }
}

/// Relative tolerance when checking that a float step divides its range.
const STEP_TOL: f64 = 1e-9;

/// The number of steps of an integer range, `(high - low) / step`, without overflow.
pub(crate) fn int_steps(low: i64, high: i64, step: i64) -> u64 {
    ((i128::from(high) - i128::from(low)) / i128::from(step.max(1))) as u64
}

/// `low + k * step`, clamped to `[low, high]`, without overflow.
pub(crate) fn int_at(low: i64, high: i64, step: i64, k: i128) -> i64 {
    i128::from(low).saturating_add(k.saturating_mul(i128::from(step))).clamp(i128::from(low), i128::from(high)) as i64
}

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
                    // `high / step - low / step` stays finite where `high - low` may not.
                    let k = high / step - low / step;
                    if !k.is_finite() || (k - k.round()).abs() > STEP_TOL * k.abs().max(1.0) {
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
                if (i128::from(high) - i128::from(low)) % i128::from(step) != 0 {
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

    /// Whether a parameter asked as `self` in one trial may be asked as `other` in another:
    /// Optuna's rule (same kind, same log scale, same choices for categories).
    pub fn compatible(&self, other: &Distribution) -> bool {
        match (self, other) {
            (Distribution::Float { log: a, .. }, Distribution::Float { log: b, .. }) => a == b,
            (Distribution::Int { log: a, .. }, Distribution::Int { log: b, .. }) => a == b,
            (Distribution::Categorical { choices: a }, Distribution::Categorical { choices: b }) => a == b,
            _ => false,
        }
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
                    let k = x / s - low / s;
                    (k - k.round()).abs() <= 1e-6
                });
                (inside && on_grid).then_some(*x)
            }
            (Distribution::Int { low, high, step, .. }, ParamValue::Int(x)) => {
                let on_grid = (i128::from(*x) - i128::from(*low)) % i128::from(*step) == 0;
                (*x >= *low && *x <= *high && on_grid).then_some(*x as f64)
            }
            (Distribution::Categorical { choices }, ParamValue::Categorical(s)) => {
                choices.iter().position(|c| c == s).map(|i| i as f64)
            }
            _ => None,
        }
    }

    /// A value given from outside (an enqueued trial, JSON) in this space: an integer for a float
    /// parameter, an integral float for an integer one, a number's text for a category. `None`
    /// when it does not belong to the space.
    pub(crate) fn coerce(&self, value: &ParamValue) -> Option<ParamValue> {
        let v = match (self, value) {
            (Distribution::Float { .. }, ParamValue::Int(x)) => ParamValue::Float(*x as f64),
            (Distribution::Int { .. }, ParamValue::Float(x)) if x.fract() == 0.0 && x.abs() < 9.3e18 => {
                ParamValue::Int(*x as i64)
            }
            (Distribution::Categorical { .. }, ParamValue::Float(_) | ParamValue::Int(_)) => {
                ParamValue::Categorical(value.to_string())
            }
            _ => value.clone(),
        };
        self.to_internal(&v).map(|_| v)
    }

    /// The recorded value of an internal `f64`, rounded and clamped onto the space.
    pub fn to_external(&self, internal: f64) -> ParamValue {
        match self {
            Distribution::Float { low, high, step, .. } => {
                let x = match step {
                    Some(s) => low + (internal / s - low / s).round() * s,
                    None => internal,
                };
                ParamValue::Float(x.clamp(*low, *high))
            }
            Distribution::Int { low, high, step, .. } => {
                // Saturating float-to-int casts keep an out-of-range internal value in range.
                let k = ((internal - *low as f64) / *step as f64).round() as i128;
                ParamValue::Int(int_at(*low, *high, *step, k))
            }
            Distribution::Categorical { choices } => {
                let i = (internal.round().max(0.0) as usize).min(choices.len() - 1);
                ParamValue::Categorical(choices[i].clone())
            }
        }
    }

    /// The value Optuna stored as `internal` (`trial_params.param_value`), checked: `None` when it
    /// is not a value of this space (NaN, out of range, a non-integral integer or index).
    pub(crate) fn value_from_stored(&self, internal: f64) -> Option<ParamValue> {
        if !internal.is_finite() {
            return None;
        }
        match self {
            Distribution::Float { low, high, .. } => {
                // Optuna's own rounding onto a step may leave a value an ulp outside the range.
                let slack = 1e-9 * (high - low).abs().max(low.abs()).max(high.abs()).max(1e-300);
                (internal >= low - slack && internal <= high + slack)
                    .then(|| ParamValue::Float(internal.clamp(*low, *high)))
            }
            Distribution::Int { low, high, .. } => {
                let inside = internal >= *low as f64 && internal <= *high as f64;
                (inside && internal.fract() == 0.0).then(|| ParamValue::Int((internal as i64).clamp(*low, *high)))
            }
            Distribution::Categorical { choices } => {
                let ok = internal >= 0.0 && internal.fract() == 0.0 && (internal as usize) < choices.len();
                ok.then(|| ParamValue::Categorical(choices[internal as usize].clone()))
            }
        }
    }

    /// The distribution in Optuna's JSON form (`optuna.distributions.distribution_to_json`), with
    /// categories' choices as strings.
    ///
    /// ```
    /// use ferrograd_tuning::search::Distribution;
    /// let d = Distribution::Int { low: 1, high: 9, step: 2, log: false };
    /// assert_eq!(d.to_optuna_json(), r#"{"name": "IntDistribution", "attributes": {"log": false, "step": 2, "low": 1, "high": 9}}"#);
    /// assert_eq!(Distribution::from_optuna_json(&d.to_optuna_json()), Ok(d));
    /// ```
    pub fn to_optuna_json(&self) -> String {
        let num = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number).to_string();
        match self {
            Distribution::Float { low, high, log, step } => format!(
                r#"{{"name": "FloatDistribution", "attributes": {{"step": {}, "low": {}, "high": {}, "log": {log}}}}}"#,
                step.map_or("null".to_string(), num),
                num(*low),
                num(*high)
            ),
            Distribution::Int { low, high, step, log } => format!(
                r#"{{"name": "IntDistribution", "attributes": {{"log": {log}, "step": {step}, "low": {low}, "high": {high}}}}}"#
            ),
            Distribution::Categorical { choices } => {
                let items: Vec<String> = choices.iter().map(|c| Value::String(c.clone()).to_string()).collect();
                format!(r#"{{"name": "CategoricalDistribution", "attributes": {{"choices": [{}]}}}}"#, items.join(", "))
            }
        }
    }

    /// Reads Optuna's JSON form: `FloatDistribution`, `IntDistribution`,
    /// `CategoricalDistribution`, the classes of Optuna 2 (`UniformDistribution`,
    /// `LogUniformDistribution`, `DiscreteUniformDistribution`, `IntUniformDistribution`,
    /// `IntLogUniformDistribution`) and the abbreviated `{"type": "float", ...}` form. Choices
    /// that are not strings are recorded by their text (numbers as Rust prints them, `null` as
    /// `None`). The error says what is wrong.
    pub fn from_optuna_json(json: &str) -> Result<Distribution, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON ({e})"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let (name, a) = match (obj.get("name"), obj.get("type")) {
            (Some(n), _) => {
                (n.as_str().ok_or("`name` is not a string")?, obj.get("attributes").unwrap_or(&Value::Null))
            }
            (None, Some(t)) => (
                match t.as_str() {
                    Some("float") => "FloatDistribution",
                    Some("int") => "IntDistribution",
                    Some("categorical") => "CategoricalDistribution",
                    _ => return Err(format!("unknown distribution type {t}")),
                },
                &v,
            ),
            (None, None) => return Err("neither `name` nor `type`".to_string()),
        };
        let f = |k: &str| a.get(k).and_then(Value::as_f64).ok_or_else(|| format!("{name}: `{k}` is not a number"));
        let i = |k: &str| {
            let x = a.get(k).ok_or_else(|| format!("{name}: no `{k}`"))?;
            x.as_i64()
                .or_else(|| x.as_f64().filter(|v| v.fract() == 0.0 && v.abs() < 9.3e18).map(|v| v as i64))
                .ok_or_else(|| format!("{name}: `{k}` is not an integer"))
        };
        let flag = |k: &str| a.get(k).and_then(Value::as_bool).unwrap_or(false);
        let int_step = || if a.get("step").is_none_or(Value::is_null) { Ok(1) } else { i("step") };
        let d = match name {
            "FloatDistribution" => Distribution::Float {
                low: f("low")?,
                high: f("high")?,
                log: flag("log"),
                step: if a.get("step").is_none_or(Value::is_null) { None } else { Some(f("step")?) },
            },
            "UniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: false, step: None },
            "LogUniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: true, step: None },
            "DiscreteUniformDistribution" => {
                Distribution::Float { low: f("low")?, high: f("high")?, log: false, step: Some(f("q")?) }
            }
            "IntDistribution" => {
                Distribution::Int { low: i("low")?, high: i("high")?, step: int_step()?, log: flag("log") }
            }
            "IntUniformDistribution" => {
                Distribution::Int { low: i("low")?, high: i("high")?, step: int_step()?, log: false }
            }
            "IntLogUniformDistribution" => {
                Distribution::Int { low: i("low")?, high: i("high")?, step: int_step()?, log: true }
            }
            "CategoricalDistribution" => Distribution::Categorical {
                choices: a
                    .get("choices")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("{name}: `choices` is not a list"))?
                    .iter()
                    .map(choice_text)
                    .collect(),
            },
            other => return Err(format!("unknown distribution class `{other}`")),
        };
        d.validate("").map_err(|e| format!("{name}: {e}"))?;
        Ok(d)
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

    #[test]
    fn full_integer_range_does_not_overflow() {
        let d = Distribution::Int { low: i64::MIN, high: i64::MAX, step: 1, log: false };
        assert!(d.validate("x").is_ok());
        assert_eq!(d.to_internal(&ParamValue::Int(i64::MAX)), Some(i64::MAX as f64));
        assert_eq!(d.to_external(f64::MAX), ParamValue::Int(i64::MAX));
        assert_eq!(d.to_external(f64::MIN), ParamValue::Int(i64::MIN));
        assert_eq!(int_steps(i64::MIN, i64::MAX, 1), u64::MAX);
        let odd = Distribution::Int { low: i64::MIN, high: i64::MAX, step: 2, log: false };
        assert!(matches!(odd.validate("x"), Err(SearchError::StepDoesNotDivide { .. })));
    }

    #[test]
    fn optuna_json_of_every_kind_round_trips() {
        for d in [
            Distribution::Float { low: -1.0, high: 1.0, log: false, step: None },
            Distribution::Float { low: 1e-5, high: 0.1, log: true, step: None },
            Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.25) },
            Distribution::Int { low: 1, high: 1024, step: 1, log: true },
            Distribution::Categorical { choices: vec!["a".into(), "\"quoted\", with comma".into()] },
        ] {
            assert_eq!(Distribution::from_optuna_json(&d.to_optuna_json()), Ok(d));
        }
    }

    #[test]
    fn bounds_are_read_exactly() {
        // serde_json's default float parser reads this one ulp off; the bounds must be Optuna's.
        let low = "-0.955062930425266";
        let json = format!(
            r#"{{"name": "FloatDistribution", "attributes": {{"step": null, "low": {low}, "high": 1.0, "log": false}}}}"#
        );
        let Distribution::Float { low: parsed, .. } = Distribution::from_optuna_json(&json).unwrap() else { panic!() };
        assert_eq!(parsed, low.parse::<f64>().unwrap());
    }

    #[test]
    fn optuna_json_errors_name_the_problem() {
        for (json, needle) in [
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"name": "BetaDistribution", "attributes": {}}"#, "unknown distribution class"),
            (r#"{"name": "IntDistribution", "attributes": {"low": 0.5, "high": 2}}"#, "`low` is not an integer"),
            (r#"{"name": "FloatDistribution", "attributes": {"low": 2.0, "high": 1.0}}"#, "empty range"),
            (r#"{"name": "CategoricalDistribution", "attributes": {"choices": 3}}"#, "not a list"),
        ] {
            let e = Distribution::from_optuna_json(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn stored_values_are_checked() {
        let i = Distribution::Int { low: 1, high: 9, step: 2, log: false };
        assert_eq!(i.value_from_stored(5.0), Some(ParamValue::Int(5)));
        assert_eq!(i.value_from_stored(5.5), None);
        assert_eq!(i.value_from_stored(11.0), None);
        let c = Distribution::Categorical { choices: vec!["a".into()] };
        assert_eq!(c.value_from_stored(1.0), None);
        assert_eq!(c.value_from_stored(f64::NAN), None);
    }

    #[test]
    fn json_choices_and_coercion() {
        let d = Distribution::from_optuna_json(
            r#"{"name": "CategoricalDistribution", "attributes": {"choices": ["a", 1, 2.5, null, true]}}"#,
        )
        .unwrap();
        assert_eq!(
            d,
            Distribution::Categorical { choices: ["a", "1", "2.5", "None", "true"].map(String::from).to_vec() }
        );
        assert_eq!(d.coerce(&ParamValue::Int(1)), Some(ParamValue::Categorical("1".into())));
        let f = Distribution::Float { low: 0.0, high: 4.0, log: false, step: None };
        assert_eq!(f.coerce(&ParamValue::Int(3)), Some(ParamValue::Float(3.0)));
        let i = Distribution::Int { low: 0, high: 4, step: 1, log: false };
        assert_eq!(i.coerce(&ParamValue::Float(3.0)), Some(ParamValue::Int(3)));
        assert_eq!(i.coerce(&ParamValue::Float(3.5)), None);
    }
}
