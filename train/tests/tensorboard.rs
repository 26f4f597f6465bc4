//! TensorBoard logs of real runs read back by our reader: every scalar at its step with its
//! value exactly (against the JSON-lines log of the same run), histograms of every parameter,
//! the HParams session, and a resumed run that reads the same as an uninterrupted one once
//! TensorBoard's `SessionLog.START` purge is applied.
//!
//! With `FERROGRAD_TB_CHECK_DIR` set, the runs are written there and kept, for
//! `train/scripts/check_tensorboard.py` to read them with TensorBoard's own reader (CI does).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{blobs, loader, small_mlp, TempDir};
use ferrograd_nn::data::DataLoader;
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::Module;
use ferrograd_optim::{Adam, CosineAnnealingLR, GroupOptions, Optim};
use ferrograd_train::tensorboard::{event_files, read_events, EventData, HParam, SummaryData};
use ferrograd_train::{
    Accuracy, Callback, Context, JsonlLogger, Learner, LrSchedule, StepLogs, StepOutput, TensorBoardLogger, TrainError,
};
use serde_json::{json, Value};

struct CrashAt(u64);

impl Callback for CrashAt {
    fn name(&self) -> String {
        "CrashAt".into()
    }
    fn on_step_end(&mut self, _: &mut Context<'_>, step: &StepLogs) -> Result<(), TrainError> {
        if step.global_step == self.0 {
            return Err(TrainError::Config("simulated crash".into()));
        }
        Ok(())
    }
}

fn hparams() -> Vec<(String, HParam)> {
    vec![
        ("lr".to_string(), HParam::Number(1e-2)),
        ("optimizer".to_string(), HParam::from("adam")),
        ("warmup".to_string(), HParam::Bool(false)),
    ]
}

/// A run logged to TensorBoard (every step, histograms, hparams) and to JSON lines, with a
/// value a custom step logs and awkward numbers (tiny, negative) among the figures.
fn run(dir: &Path, crash_at: Option<u64>) -> Result<(), TrainError> {
    let data = blobs(96, 31);
    let (train, val) = (loader(&data, 16, 2), DataLoader::new(data.clone(), 48));
    let model = small_mlp(12);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .train_step(|ctx, b| {
            let logits = ctx.model.forward(&ferrograd_autograd::Var::constant(b.inputs.clone()));
            let loss = cross_entropy(&logits, &b.targets);
            let tiny = -1e-30 * (ctx.batch as f64 + 1.0);
            StepOutput::new(loss).output(logits.into_data()).log("tiny", tiny)
        })
        .callback(LrSchedule::per_epoch(CosineAnnealingLR::new(1e-2, 4, 0.0)))
        .callback(TensorBoardLogger::new(dir).log_every_n_steps(1).histograms(true).hparams(hparams()))
        .callback(JsonlLogger::new(dir.join("log.jsonl")).log_every_n_steps(1))
        .callback(CrashAt(crash_at.unwrap_or(u64::MAX)))
        .run_dir(dir.join("state"))
        .save_every(5)
        .resume(true)
        .quiet()
        .fit(&train, Some(&val), 4)?;
    let expect = json!({
        "hparams": { "lr": 1e-2, "optimizer": "adam", "warmup": false },
        "histograms": model.named_parameters().iter().map(|(n, p)| (n.clone(), p.numel())).collect::<BTreeMap<_, _>>(),
        "epochs": 4,
    });
    std::fs::write(dir.join("expect.json"), expect.to_string())
        .map_err(|e| TrainError::Io { path: dir.into(), source: e })
}

/// `(tag, step) -> value` of a run directory's event files, with TensorBoard's purge: a
/// `SessionLog.START` at step s drops what earlier files logged at steps >= s.
fn scalars(dir: &Path) -> BTreeMap<(String, i64), f32> {
    let mut out = BTreeMap::new();
    for file in event_files(dir).unwrap() {
        for e in read_events(&file).unwrap() {
            if let EventData::SessionLog(1) = e.what {
                out.retain(|(_, step), _| *step < e.step);
            }
            for (tag, step, v) in e.scalars() {
                out.insert((tag, step), v);
            }
        }
    }
    out
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

/// What the JSON-lines log says TensorBoard must hold: (run, tag, step) -> value as f32.
fn expected(dir: &Path) -> BTreeMap<(String, String, i64), f32> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("log.jsonl")).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_i64().unwrap();
        for (k, x) in v.as_object().unwrap() {
            if ["kind", "step", "epoch"].contains(&k.as_str()) {
                continue;
            }
            let (run, tag) = match (v["kind"].as_str().unwrap(), k.strip_prefix("val_")) {
                ("step", _) => ("train", format!("batch_{k}")),
                (_, Some(rest)) => ("validation", format!("epoch_{rest}")),
                (_, None) => ("train", format!("epoch_{k}")),
            };
            out.insert((run.to_string(), tag, step), num(x) as f32);
        }
    }
    out
}

fn check_run(dir: &Path) {
    let want = expected(dir);
    let mut got = BTreeMap::new();
    for run in ["train", "validation"] {
        for ((tag, step), v) in scalars(&dir.join(run)) {
            got.insert((run.to_string(), tag, step), v);
        }
    }
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{}: missing {missing:?}, extra {extra:?}", dir.display());
    for (key, w) in &want {
        let g = got.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{key:?}: {g} vs {w}");
    }
    // 6 steps per epoch, 4 epochs: every step logged.
    assert_eq!(want.keys().filter(|(_, t, _)| t == "batch_loss").count(), 24);
    assert!(want.keys().any(|(_, t, _)| t == "batch_tiny"));

    // Histograms: every parameter's weights at each epoch's end, gradients of the last step.
    let mut hist: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for file in event_files(dir.join("train")).unwrap() {
        for e in read_events(&file).unwrap() {
            if let EventData::Summary(values) = &e.what {
                for v in values {
                    if let SummaryData::Histogram(h) = &v.value {
                        assert_eq!(h.bucket.iter().sum::<f64>(), h.num);
                        assert!(h.min <= h.max && h.bucket.len() == h.bucket_limit.len());
                        hist.entry(v.tag.clone()).or_default().push((e.step, h.num));
                    }
                }
            }
        }
    }
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expect.json")).unwrap()).unwrap();
    for (name, numel) in expect["histograms"].as_object().unwrap() {
        for kind in ["weights", "gradients"] {
            let seen = &hist[&format!("{kind}/{name}")];
            let steps: Vec<i64> = seen.iter().map(|s| s.0).collect();
            assert_eq!(steps, vec![6, 12, 18, 24], "{kind}/{name}");
            assert!(seen.iter().all(|s| s.1 == numel.as_f64().unwrap()));
        }
    }

    // The HParams session: its hyperparameters, once.
    let mut sessions = Vec::new();
    for file in event_files(dir).unwrap() {
        sessions.extend(read_events(&file).unwrap().iter().filter_map(|e| e.hparams()));
    }
    assert_eq!(sessions.len(), 1);
    let hp: BTreeMap<String, HParam> = hparams().into_iter().collect();
    assert_eq!(sessions[0], hp);
}

fn output_dir(name: &str) -> (Option<TempDir>, PathBuf) {
    match std::env::var_os("FERROGRAD_TB_CHECK_DIR") {
        Some(root) => {
            let dir = PathBuf::from(root).join(name);
            let _ = std::fs::remove_dir_all(&dir);
            (None, dir)
        }
        None => {
            let t = TempDir::new(name);
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

#[test]
fn a_run_reads_back_exactly() {
    let (_keep, dir) = output_dir("tb-run");
    run(&dir, None).unwrap();
    check_run(&dir);
}

#[test]
fn a_resumed_run_reads_back_as_the_uninterrupted_one() {
    let (_keep, dir) = output_dir("tb-resumed");
    // Crashes after step 8 (saved at 5) and after step 17 (saved at 15): the killed runs
    // logged steps 6-8 and 16-17, which the resumed run logs again.
    assert!(run(&dir, Some(8)).is_err());
    assert!(run(&dir, Some(17)).is_err());
    run(&dir, None).unwrap();
    check_run(&dir);
    assert_eq!(event_files(dir.join("train")).unwrap().len(), 3);
}
