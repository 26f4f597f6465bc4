//! Python Optuna and optuna-dashboard on studies ferrograd writes, and ferrograd on studies Optuna
//! writes, through `scripts/optuna_interop.py`, on SQLite (and PostgreSQL with the `postgres`
//! feature). Feature `optuna-interop`; needs `FERROGRAD_PYTHON`, a Python with optuna,
//! optuna-dashboard and psycopg2 (`scripts/optuna-venv.sh` makes one), and fails without it:
//!
//! ```text
//! scripts/optuna-venv.sh /tmp/optuna-venv
//! FERROGRAD_PYTHON=/tmp/optuna-venv/bin/python scripts/with-postgres.sh \
//!     cargo test -p ferrograd-tuning --features postgres,optuna-interop --test search_interop
//! ```
#![cfg(feature = "optuna-interop")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::suite::unique;
use ferrograd_tuning::search::{
    FrozenTrial, ParamValue, SearchError, SqliteStorage, Storage, Study, TpeSampler, Trial, TrialState,
};
use serde_json::{json, Value};

fn python() -> String {
    std::env::var("FERROGRAD_PYTHON").expect(
        "FERROGRAD_PYTHON must name a Python with optuna, optuna-dashboard and psycopg2 for the \
         optuna-interop feature's tests (scripts/optuna-venv.sh makes one)",
    )
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/optuna_interop.py")
}

fn run(py: &str, args: &[&str]) {
    let out = Command::new(py).arg(script()).args(args).output().expect("the Python interpreter starts");
    assert!(
        out.status.success(),
        "optuna_interop.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn encode(v: f64) -> Value {
    match v {
        v if v.is_nan() => json!("nan"),
        v if v == f64::INFINITY => json!("inf"),
        v if v == f64::NEG_INFINITY => json!("-inf"),
        v => json!(v),
    }
}

/// A trial as the interop script records it.
fn record(t: &FrozenTrial) -> Value {
    let params: serde_json::Map<String, Value> = t
        .params
        .iter()
        .map(|(k, v)| {
            let v = match v {
                ParamValue::Float(x) => encode(*x),
                ParamValue::Int(i) => json!(i),
                ParamValue::Categorical(s) => json!(s),
            };
            (k.clone(), v)
        })
        .collect();
    json!({
        "number": t.number,
        "state": t.state.optuna_name(),
        "params": params,
        "values": if t.values.is_empty() { Value::Null } else { t.values.iter().map(|v| encode(*v)).collect() },
        "intermediate": t.intermediate.iter().map(|(s, v)| (s.to_string(), encode(*v))).collect::<serde_json::Map<_, _>>(),
        "user_attrs": t.user_attrs.clone().into_iter().collect::<serde_json::Map<_, _>>(),
    })
}

fn study_record(study: &Study) -> Value {
    let dirs: Vec<String> = study.directions().iter().map(|d| format!("{d:?}").to_uppercase()).collect();
    json!({"directions": dirs, "trials": study.trials().iter().map(record).collect::<Vec<_>>()})
}

/// The parameters of the interop study (the script asks the same).
fn space(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let x = t.suggest_float("x", -1.0, 1.0, false)?;
    let lr = t.suggest_float("lr", 1e-5, 1e-1, true)?;
    let q = t.suggest_float_step("q", 0.0, 1.0, 0.25)?;
    let n = t.suggest_int("n", 1, 9, 2, false)?;
    let w = t.suggest_int("w", 1, 1024, 1, true)?;
    let c: &str = t.suggest_categorical("c", &["relu", "tanh", "gelu"])?;
    Ok(x + lr + q + n as f64 + w as f64 + c.len() as f64)
}

fn interop(py: &str, storage: Arc<dyn Storage>, url: &str) {
    let dir = std::env::temp_dir().join(unique("interop"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |n: &str| dir.join(n).display().to_string();

    // ferrograd writes; Optuna reads every trial, shows it in optuna-dashboard, adds trials.
    let name = unique("from_ferrograd");
    let study =
        Study::builder().sampler(TpeSampler::new().n_startup_trials(3)).storage(storage.clone()).create(&name).unwrap();
    study.set_user_attr("made_by", "ferrograd").unwrap();
    study
        .optimize_with(ferrograd_tuning::search::OptimizeOptions::new().n_trials(8), |t| {
            let v = space(t)?;
            for (step, r) in [(0, 0.5), (1, f64::NAN), (2, f64::INFINITY)] {
                t.report(step, r);
            }
            t.set_user_attr("by", "ferrograd")?;
            match t.number() {
                2 => Err(t.pruned().into()),
                3 => Err("boom".into()),
                4 => Ok(f64::NEG_INFINITY),
                _ => Ok::<_, Box<dyn std::error::Error + Send + Sync>>(v),
            }
        })
        .unwrap();
    study.enqueue_trial([("x", ParamValue::Float(0.25)), ("c", "gelu".into())]).unwrap();
    let n_before = study.trials().len();
    std::fs::write(file("ours.json"), study_record(&study).to_string()).unwrap();
    run(
        py,
        &[
            "check",
            "--storage",
            url,
            "--study",
            &name,
            "--expect",
            &file("ours.json"),
            "--add",
            "3",
            "--out",
            &file("theirs.json"),
        ],
    );
    let theirs: Value = serde_json::from_str(&std::fs::read_to_string(file("theirs.json")).unwrap()).unwrap();
    assert_eq!(study_record(&study), theirs, "ferrograd reads back what Optuna added");
    let trials = study.trials();
    assert_eq!(trials.len(), n_before + 3, "the enqueued trial, two new ones and a failed one");
    assert_eq!(trials[n_before - 1].params["x"], ParamValue::Float(0.25), "Optuna took the enqueued trial");
    assert_eq!(trials.last().unwrap().state, TrialState::Failed);
    assert!(trials[n_before..]
        .iter()
        .all(|t| t.user_attrs.get("by") == Some(&json!("optuna")) || t.state == TrialState::Failed));

    // Optuna writes; ferrograd reads it, continues it, and Optuna reads the result.
    let name = unique("from_optuna");
    run(py, &["create", "--storage", url, "--study", &name, "--out", &file("created.json")]);
    let created: Value = serde_json::from_str(&std::fs::read_to_string(file("created.json")).unwrap()).unwrap();
    let study = Study::builder().sampler(TpeSampler::new().n_startup_trials(2)).storage(storage).load(&name).unwrap();
    assert_eq!(study_record(&study), created, "ferrograd reads Optuna's study as Optuna does");
    study.optimize(3, space).unwrap();
    let trials = study.trials();
    let waited = &trials[created["trials"].as_array().unwrap().len() - 1];
    assert_eq!((waited.state, &waited.params["c"]), (TrialState::Complete, &ParamValue::Categorical("tanh".into())));
    std::fs::write(file("continued.json"), study_record(&study).to_string()).unwrap();
    run(py, &["check", "--storage", url, "--study", &name, "--expect", &file("continued.json")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn optuna_and_ferrograd_share_sqlite_studies() {
    let py = python();
    let path = std::env::temp_dir().join(format!("{}.db", unique("interop")));
    interop(&py, Arc::new(SqliteStorage::open(&path).unwrap()), &path.display().to_string());
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

#[cfg(feature = "postgres")]
#[test]
fn optuna_and_ferrograd_share_postgres_studies() {
    let py = python();
    let url = std::env::var("FERROGRAD_PG_URL")
        .expect("FERROGRAD_PG_URL must name a PostgreSQL database for the postgres feature's tests (see scripts/with-postgres.sh)");
    interop(&py, Arc::new(ferrograd_tuning::search::PostgresStorage::connect(&url).unwrap()), &url);
}
