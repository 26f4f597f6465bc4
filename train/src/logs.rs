//! What a run records: the figures of each epoch ([`EpochLogs`]), of each optimizer step
//! ([`StepLogs`]), and the whole [`History`].
//!
//! Epoch logs are named values in a fixed order: `loss`, the training metrics, the values a
//! custom step logged, then `val_loss` and the validation metrics, then `lr` (the learning rate
//! the epoch started with), `seconds` (the training pass's wall time) and `val_seconds` (the
//! validation pass's).

use serde_json::{json, Value};

/// The named figures of one epoch, in the order they were recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochLogs {
    /// The epoch, counted from 0.
    pub epoch: usize,
    /// `(name, value)` pairs.
    pub values: Vec<(String, f64)>,
}

impl EpochLogs {
    /// A value by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        self.values.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Sets `name` (replacing an existing value, else appending).
    pub fn set(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name, value)),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let values: Vec<Value> = self.values.iter().map(|(n, v)| json!([n, number(*v)])).collect();
        json!({ "epoch": self.epoch, "values": values })
    }

    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        let epoch = usize::try_from(v.get("epoch")?.as_u64()?).ok()?;
        let values = v
            .get("values")?
            .as_array()?
            .iter()
            .map(|pair| Some((pair.get(0)?.as_str()?.to_string(), from_number(pair.get(1)?)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(EpochLogs { epoch, values })
    }
}

/// The figures of one optimizer step, given to [`Callback::on_step_end`](crate::Callback::on_step_end).
#[derive(Clone, Debug, PartialEq)]
pub struct StepLogs {
    /// Optimizer steps taken in the whole run, this one included (so the first step is 1).
    pub global_step: u64,
    /// The epoch, counted from 0.
    pub epoch: usize,
    /// The next batch of the epoch (batches done so far in this epoch).
    pub batch: usize,
    /// The batches of this epoch.
    pub batches: usize,
    /// The loss of this step (the mean over its accumulated batches).
    pub loss: f64,
    /// The learning rate this step used.
    pub lr: f64,
    /// The training loss over the epoch so far (sample-weighted).
    pub running_loss: f64,
    /// Values the step function logged (means over the accumulated batches).
    pub values: Vec<(String, f64)>,
}

/// Every epoch's logs of a run, and why it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// One entry per epoch trained (a resumed run includes the epochs before the restart).
    pub epochs: Vec<EpochLogs>,
    /// The epoch at which a callback stopped the run early, if one did.
    pub stopped_early: Option<usize>,
    /// What the run said along the way (early stopping, skipped steps), in order.
    pub messages: Vec<String>,
}

impl History {
    /// The values of `name`, one per epoch that has it: `(epoch, value)`.
    pub fn series(&self, name: &str) -> Vec<(usize, f64)> {
        self.epochs.iter().filter_map(|e| e.get(name).map(|v| (e.epoch, v))).collect()
    }

    /// The logs of the last epoch.
    pub fn last(&self) -> Option<&EpochLogs> {
        self.epochs.last()
    }

    /// Every name that appears, in the order of first appearance.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for e in &self.epochs {
            for (n, _) in &e.values {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "epochs": self.epochs.iter().map(EpochLogs::to_json).collect::<Vec<_>>(),
            "stopped_early": self.stopped_early,
            "messages": self.messages,
        })
    }

    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        Some(History {
            epochs: v.get("epochs")?.as_array()?.iter().map(EpochLogs::from_json).collect::<Option<_>>()?,
            stopped_early: match v.get("stopped_early")? {
                Value::Null => None,
                e => Some(usize::try_from(e.as_u64()?).ok()?),
            },
            messages: v
                .get("messages")?
                .as_array()?
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
        })
    }
}

/// JSON has no NaN or infinities: they travel as the strings `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) fn number(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

/// The inverse of [`number`].
pub(crate) fn from_number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_through_json_with_non_finite_values() {
        let h = History {
            epochs: vec![
                EpochLogs { epoch: 0, values: vec![("loss".into(), 0.1 + 0.2), ("val_loss".into(), f64::NAN)] },
                EpochLogs { epoch: 1, values: vec![("loss".into(), f64::INFINITY), ("lr".into(), 1e-3)] },
            ],
            stopped_early: Some(1),
            messages: vec!["early stopping".into()],
        };
        let back = History::from_json(&serde_json::from_str(&h.to_json().to_string()).unwrap()).unwrap();
        assert_eq!(back.epochs[0].get("loss"), Some(0.1 + 0.2));
        assert!(back.epochs[0].get("val_loss").unwrap().is_nan());
        assert_eq!(back.epochs[1], h.epochs[1]);
        assert_eq!((back.stopped_early, back.messages), (Some(1), h.messages.clone()));
        assert_eq!(h.names(), vec!["loss", "val_loss", "lr"]);
        assert_eq!(h.series("lr"), vec![(1, 1e-3)]);
    }
}
