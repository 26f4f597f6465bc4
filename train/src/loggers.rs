//! Text loggers: [`CsvLogger`] (one row per epoch, for spreadsheets and pandas) and
//! [`JsonlLogger`] (one JSON object per line, per step and per epoch, for scripts).
//!
//! Both survive a resumed run without duplicated or lost rows: the CSV file is rewritten from
//! the run's history at each epoch's end (atomically: a reader never sees half a file), and the
//! JSON-lines file is cut back to the point the resumed run restarts from before it appends.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ferrograd_nn::checkpoint::write_atomic;
use ferrograd_tensor::Float;
use serde_json::{json, Map, Value};

use crate::logs::number;
use crate::{Callback, Context, Control, EpochLogs, History, StepLogs, TrainError};

fn create_parent(path: &Path) -> Result<(), TrainError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e)),
        _ => Ok(()),
    }
}

/// The history as CSV: a header `epoch,NAME,...` (every name in order of first appearance),
/// then one row per epoch (epochs counted from 0, as Keras' `CSVLogger`; a value an epoch does
/// not have is left empty). Numbers are written in full (shortest round-trip form).
pub fn history_csv(epochs: &[EpochLogs]) -> String {
    let history = History { epochs: epochs.to_vec(), ..History::default() };
    let names = history.names();
    let mut out = String::from("epoch");
    for n in &names {
        out.push(',');
        out.push_str(n);
    }
    out.push('\n');
    for e in epochs {
        out.push_str(&e.epoch.to_string());
        for n in &names {
            out.push(',');
            if let Some(v) = e.get(n) {
                out.push_str(&v.to_string());
            }
        }
        out.push('\n');
    }
    out
}

/// Writes the run's history to a CSV file at every epoch's end ([`history_csv`]).
pub struct CsvLogger {
    path: PathBuf,
}

impl CsvLogger {
    /// Logs to `path` (its directory is created if needed; an existing file is replaced).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvLogger { path: path.into() }
    }
}

impl<F: Float> Callback<F> for CsvLogger {
    fn name(&self) -> String {
        "CsvLogger".into()
    }

    fn main_process_only(&self) -> bool {
        true
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, _logs: &EpochLogs) -> Result<Control, TrainError> {
        create_parent(&self.path)?;
        let text = history_csv(ctx.history);
        write_atomic(&self.path, |w| w.write_all(text.as_bytes()))?;
        Ok(Control::Continue)
    }
}

/// Appends one JSON object per line: `{"kind":"step","step":...,"epoch":...,"loss":...,
/// "lr":...}` every `n` optimizer steps (if set) and `{"kind":"epoch","epoch":...,"step":...,
/// NAME: value, ...}` at every epoch's end. NaN and infinities, which JSON lacks, are written as
/// the strings `"NaN"`, `"inf"`, `"-inf"`.
pub struct JsonlLogger {
    path: PathBuf,
    every: u64,
    out: Option<BufWriter<File>>,
}

impl JsonlLogger {
    /// Logs epochs to `path` (its directory is created if needed; an existing file is replaced,
    /// unless the run is resumed).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlLogger { path: path.into(), every: 0, out: None }
    }

    /// Also logs every `n` optimizer steps (0 turns it off).
    pub fn log_every_n_steps(mut self, n: u64) -> Self {
        self.every = n;
        self
    }

    fn line(&mut self, value: &Value) -> Result<(), TrainError> {
        let out = self.out.as_mut().expect("opened in on_train_begin");
        writeln!(out, "{value}").map_err(|e| TrainError::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<(), TrainError> {
        match &mut self.out {
            Some(out) => out.flush().map_err(|e| TrainError::io(&self.path, e)),
            None => Ok(()),
        }
    }
}

/// Keeps the lines a resumed run does not redo: steps up to `global_step`, epochs before `epoch`.
fn keep_line(line: &str, epoch: usize, global_step: u64) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(line) else { return false };
    match v.get("kind").and_then(Value::as_str) {
        Some("step") => v.get("step").and_then(Value::as_u64).is_some_and(|s| s <= global_step),
        Some("epoch") => v.get("epoch").and_then(Value::as_u64).is_some_and(|e| (e as usize) < epoch),
        _ => false,
    }
}

impl<F: Float> Callback<F> for JsonlLogger {
    fn name(&self) -> String {
        "JsonlLogger".into()
    }

    fn main_process_only(&self) -> bool {
        true
    }

    fn on_train_begin(&mut self, ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        create_parent(&self.path)?;
        let io = |e| TrainError::io(&self.path, e);
        if ctx.resumed && self.path.exists() {
            let old = fs::read_to_string(&self.path).map_err(io)?;
            let kept: String =
                old.lines().filter(|l| keep_line(l, ctx.epoch, ctx.global_step)).flat_map(|l| [l, "\n"]).collect();
            write_atomic(&self.path, |w| w.write_all(kept.as_bytes()))?;
            let file = OpenOptions::new().append(true).open(&self.path).map_err(io)?;
            self.out = Some(BufWriter::new(file));
        } else {
            self.out = Some(BufWriter::new(File::create(&self.path).map_err(io)?));
        }
        Ok(())
    }

    fn on_step_end(&mut self, _ctx: &mut Context<'_, F>, step: &StepLogs) -> Result<(), TrainError> {
        if self.every > 0 && step.global_step.is_multiple_of(self.every) {
            let mut m = Map::new();
            m.insert("kind".into(), json!("step"));
            m.insert("step".into(), json!(step.global_step));
            m.insert("epoch".into(), json!(step.epoch));
            m.insert("loss".into(), number(step.loss));
            m.insert("lr".into(), number(step.lr));
            for (n, v) in &step.values {
                m.insert(n.clone(), number(*v));
            }
            self.line(&Value::Object(m))?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, logs: &EpochLogs) -> Result<Control, TrainError> {
        let mut m = Map::new();
        m.insert("kind".into(), json!("epoch"));
        m.insert("epoch".into(), json!(logs.epoch));
        m.insert("step".into(), json!(ctx.global_step));
        for (n, v) in &logs.values {
            m.insert(n.clone(), number(*v));
        }
        self.line(&Value::Object(m))?;
        self.flush()?;
        Ok(Control::Continue)
    }

    fn on_save(&mut self, _ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        self.flush()
    }

    fn on_train_end(&mut self, _ctx: &mut Context<'_, F>, _history: &History) -> Result<(), TrainError> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_every_name_and_leaves_gaps_empty() {
        let epochs = vec![
            EpochLogs { epoch: 0, values: vec![("loss".into(), 0.5), ("lr".into(), 0.001)] },
            EpochLogs { epoch: 1, values: vec![("loss".into(), 0.25), ("skipped_steps".into(), 2.0)] },
        ];
        assert_eq!(history_csv(&epochs), "epoch,loss,lr,skipped_steps\n0,0.5,0.001,\n1,0.25,,2\n");
    }

    #[test]
    fn resumed_jsonl_keeps_only_what_is_not_redone() {
        assert!(keep_line(r#"{"kind":"step","step":10,"epoch":0}"#, 1, 10));
        assert!(!keep_line(r#"{"kind":"step","step":11,"epoch":0}"#, 1, 10));
        assert!(keep_line(r#"{"kind":"epoch","epoch":0,"step":10}"#, 1, 10));
        assert!(!keep_line(r#"{"kind":"epoch","epoch":1,"step":20}"#, 1, 10));
        assert!(!keep_line(r#"{"kind":"step","st"#, 1, 10));
    }
}
