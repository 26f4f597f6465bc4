//! SQLite storage: Optuna's schema and studies, bad files, the races of the old storage (each
//! test here failed on it), legacy files, retries, and many processes on one study. Worker
//! processes are this test binary started again (see `common/workers.rs`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::suite::unique;
use common::workers::{self, now_ms, open_storage, Plan, Spec};
use ferrograd_tuning::search::{
    Direction, ParamValue, SearchError, SqliteStorage, Storage, Study, TpeSampler, TrialState,
};
use serde_json::Value;

#[test]
fn worker_entry() {
    workers::worker_main();
}

fn temp_db(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.db", unique(tag)))
}

fn remove_db(p: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optuna").join(name)).unwrap()
}

fn spec(path: &Path, study: &str, trials: usize, trial_ms: u64, log: &Path) -> Spec {
    Spec {
        storage: format!("sqlite:{}", path.display()),
        study: study.to_string(),
        trials,
        trial_ms,
        start_at_ms: 0,
        grace_ms: 1000,
        log: log.to_path_buf(),
    }
}

#[test]
fn a_new_file_has_the_schema_optuna_creates() {
    let path = temp_db("schema");
    drop(SqliteStorage::open(&path).unwrap());
    let expected: Value = serde_json::from_str(&fixture("schema_sqlite.json")).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").unwrap();
    let rows: Vec<Value> = stmt
        .query_map([], |r| {
            Ok(serde_json::json!([
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?
            ]))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(Value::Array(rows), expected["sqlite_master"]);
    let alembic: String = conn.query_row("SELECT version_num FROM alembic_version", [], |r| r.get(0)).unwrap();
    assert_eq!(serde_json::json!([alembic]), expected["alembic_version"]);
    let info: (i64, i64, String) =
        conn.query_row("SELECT * FROM version_info", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(serde_json::json!([[info.0, info.1, info.2]]), expected["version_info"]);
    remove_db(&path);
}

/// A JSON value of the fixture (floats that JSON cannot hold are strings there).
fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => other.as_f64().unwrap(),
    }
}

/// How an enqueued value in JSON reads: integers as `Int`, other numbers as `Float`, strings as
/// categories.
fn param_of(v: &Value) -> ParamValue {
    match v {
        Value::String(s) => ParamValue::Categorical(s.clone()),
        Value::Number(n) if n.is_i64() => ParamValue::Int(n.as_i64().unwrap()),
        other => ParamValue::Float(other.as_f64().unwrap()),
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || a.is_nan() && b.is_nan()
}

/// A study file written by Optuna 5.1 (every distribution kind, Optuna 2's distribution classes,
/// intermediate values with NaN and infinities, attributes, every state, two objectives) reads as
/// Optuna reads it, and continues.
#[test]
fn studies_written_by_optuna_open_and_continue() {
    let path = temp_db("optuna_written");
    // The dump creates tables in alphabetical order: foreign keys are checked once all exist.
    let dump = format!("PRAGMA foreign_keys = OFF; {}", fixture("study_sqlite.sql"));
    rusqlite::Connection::open(&path).unwrap().execute_batch(&dump).unwrap();
    let expected: Value = serde_json::from_str(&fixture("study_expected.json")).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&path).unwrap());
    for (name, exp) in expected.as_object().unwrap() {
        let study = Study::builder().storage(storage.clone()).load(name).unwrap();
        let dirs: Vec<String> = study.directions().iter().map(|d| format!("{d:?}").to_uppercase()).collect();
        assert_eq!(serde_json::json!(dirs), exp["directions"]);
        let user: Value = study.user_attrs().unwrap().into_iter().collect::<serde_json::Map<_, _>>().into();
        assert_eq!(user, exp["user_attrs"]);
        let trials = study.trials();
        let exp_trials = exp["trials"].as_array().unwrap();
        assert_eq!(trials.len(), exp_trials.len());
        for (t, e) in trials.iter().zip(exp_trials) {
            let n = t.number;
            assert_eq!(Value::from(n), e["number"]);
            let state = match t.state {
                TrialState::Failed => "FAIL".to_string(),
                s => s.to_string(),
            };
            assert_eq!(Value::from(state), e["state"], "trial {n}");
            match e["values"].as_array() {
                None => assert!(t.values.is_empty(), "trial {n}"),
                Some(v) => {
                    assert_eq!(t.values.len(), v.len(), "trial {n}");
                    assert!(
                        t.values.iter().zip(v).all(|(a, b)| same(*a, number(b))),
                        "trial {n}: {:?} {v:?}",
                        t.values
                    );
                }
            }
            let params = e["params"].as_object().unwrap();
            assert_eq!(t.params.len(), params.len(), "trial {n}");
            for (k, v) in params {
                let got = &t.params[k];
                let ok = match got {
                    ParamValue::Float(x) => same(*x, number(v)),
                    ParamValue::Int(i) => v.as_i64() == Some(*i),
                    ParamValue::Categorical(s) => match v {
                        Value::String(x) => x == s,
                        Value::Null => s == "None",
                        other => serde_json::to_string(other).ok().as_ref() == Some(s),
                    },
                };
                assert!(ok, "trial {n}: {k} = {got} vs {v}");
            }
            let iv = e["intermediate_values"].as_object().unwrap();
            assert_eq!(t.intermediate.len(), iv.len());
            for (step, v) in iv {
                assert!(same(t.intermediate[&step.parse().unwrap()], number(v)), "trial {n} step {step}");
            }
            let user: Value = t.user_attrs.clone().into_iter().collect::<serde_json::Map<_, _>>().into();
            assert_eq!(user, e["user_attrs"], "trial {n}");
            let mut system: Vec<&str> = t.system_attrs.keys().map(String::as_str).collect();
            if !t.fixed_params.is_empty() {
                system.push("fixed_params");
                for (k, v) in e["system_attrs"]["fixed_params"].as_object().unwrap() {
                    assert_eq!(t.fixed_params[k], param_of(v), "trial {n}: fixed {k}");
                }
            }
            system.sort_unstable();
            assert_eq!(system, e["system_attrs"].as_object().unwrap().keys().map(String::as_str).collect::<Vec<_>>());
            let start = e["datetime_start"].as_str();
            assert_eq!(t.datetime_start.is_some(), start.is_some(), "trial {n}");
        }
    }
    // Continue the single-objective study: the waiting (enqueued) trial runs first, with its values.
    let study = Study::builder()
        .sampler(TpeSampler::new().n_startup_trials(2))
        .storage(storage.clone())
        .load("optuna_single")
        .unwrap();
    let before = study.trials().len();
    study
        .optimize(3, |t| {
            let x = t.suggest_float("x", -1.0, 1.0, false)?;
            let lr = t.suggest_float("lr", 1e-5, 1e-1, true)?;
            let n = t.suggest_int("n", 1, 9, 2, false)?;
            let c: String =
                t.suggest_categorical("c", &["a".to_string(), "1".into(), "2.5".into(), "None".into(), "true".into()])?;
            Ok::<_, SearchError>(x + lr + n as f64 + c.len() as f64)
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), before + 2, "the waiting trial, then two new ones");
    let waited = trials.iter().find(|t| t.user_attrs.get("enqueued") == Some(&Value::Bool(true))).unwrap();
    assert_eq!(waited.state, TrialState::Complete);
    assert_eq!(waited.params["x"], ParamValue::Float(0.5));
    assert_eq!(waited.params["c"], ParamValue::Categorical("a".into()));
    // The categorical distribution keeps Optuna's JSON choices (numbers, null, true), so Python
    // compares it equal to its own.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let json: String = conn
        .query_row(
            "SELECT distribution_json FROM trial_params WHERE param_name = 'c' ORDER BY param_id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(json.contains(r#"["a", 1, 2.5, null, true]"#), "{json}");
    remove_db(&path);
}

#[test]
fn unreadable_foreign_and_truncated_files_are_typed_errors() {
    let garbage = temp_db("garbage");
    let text = b"this is not a database, just some text long enough to have a header";
    std::fs::write(&garbage, text).unwrap();
    let err = SqliteStorage::open(&garbage).err().unwrap();
    assert!(matches!(err, SearchError::Storage { .. }), "{err}");
    assert_eq!(std::fs::read(&garbage).unwrap(), text, "the file is left as it was");
    remove_db(&garbage);

    let foreign = temp_db("foreign");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)").unwrap();
    drop(conn);
    let err = Study::builder().open_sqlite(&foreign, "s").err().unwrap();
    assert!(matches!(err, SearchError::ForeignDatabase { .. }), "{err}");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1, "nothing written to the foreign file");
    drop(conn);
    remove_db(&foreign);

    let old = temp_db("old_optuna");
    drop(SqliteStorage::open(&old).unwrap());
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'", [])
        .unwrap();
    let err = SqliteStorage::open(&old).err().unwrap();
    assert!(
        matches!(&err, SearchError::SchemaVersion { message, .. } if message.contains("optuna storage upgrade")),
        "{err}"
    );
    remove_db(&old);

    let truncated = temp_db("truncated");
    let study = Study::builder().open_sqlite(&truncated, "s").unwrap();
    study.optimize(200, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    drop(study);
    rusqlite::Connection::open(&truncated).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let len = std::fs::metadata(&truncated).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&truncated).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let r = Study::builder().open_sqlite(&truncated, "s").and_then(|s| s.try_trials());
    assert!(matches!(r, Err(SearchError::Storage { .. } | SearchError::Corrupt { .. })), "{:?}", r.map(|t| t.len()));
    remove_db(&truncated);

    let dir = std::env::temp_dir();
    assert!(matches!(SqliteStorage::open(&dir), Err(SearchError::Storage { .. })));
}

/// Rows that make no sense give typed errors, never a panic (a COMPLETE trial whose value is NULL
/// panicked in `best_trial` and TPE before).
#[test]
fn bad_rows_are_typed_errors() {
    let cases: [(&str, &str); 9] = [
        ("UPDATE trial_values SET value = NULL WHERE trial_id = 2", "NULL value"),
        ("DELETE FROM trial_values WHERE trial_id = 2", "COMPLETE with 0 value"),
        ("UPDATE trials SET state = 'DONE' WHERE trial_id = 2", "state"),
        ("UPDATE trials SET number = NULL WHERE trial_id = 2", "number"),
        ("DELETE FROM trials WHERE trial_id = 2", "trial numbers jump"),
        ("UPDATE trial_params SET param_value = 7.5 WHERE trial_id = 2", "is not a value of"),
        ("UPDATE trial_params SET distribution_json = '{\"name\": 3' WHERE trial_id = 2", "distribution not JSON"),
        ("UPDATE trial_user_attributes SET value_json = '{oops' WHERE trial_id = 2", "not JSON"),
        ("UPDATE trials SET datetime_start = 'yesterday' WHERE trial_id = 2", "datetime_start"),
    ];
    for (sql, needle) in cases {
        let path = temp_db("bad_rows");
        let objective = |t: &mut ferrograd_tuning::search::Trial<'_>| {
            t.set_user_attr("k", 1)?;
            t.suggest_float("x", 0.0, 1.0, false)
        };
        let writer = Study::builder().open_sqlite(&path, "s").unwrap();
        writer.optimize(1, objective).unwrap();
        // A TPE study that has read trial 0 only, then trials 1 and 2 written, then trial 1 broken.
        let reader = Study::builder().sampler(TpeSampler::new().n_startup_trials(1)).open_sqlite(&path, "s").unwrap();
        writer.optimize(2, objective).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}")).unwrap();
        drop(conn);
        // Every reader reports it: a fresh open, the reader's next reads and its next TPE trial.
        let err = Study::builder().open_sqlite(&path, "s").err().unwrap();
        assert!(matches!(&err, SearchError::Corrupt { what, .. } if what.contains(needle)), "{sql}: {err}");
        let err = reader.optimize(1, objective).unwrap_err();
        assert!(matches!(&err, SearchError::Corrupt { what, .. } if what.contains(needle)), "{sql}: {err}");
        assert!(reader.try_best_trial().is_err() && reader.try_trials().is_err(), "{sql}");
        drop((writer, reader));
        remove_db(&path);
    }
}

/// `trials()`, `best_value()` and `to_csv()` returned the copy in memory when the file could not
/// be read; now the `try_` forms return the error and the others panic with it.
#[test]
fn reads_of_a_broken_file_are_not_silently_stale() {
    let path = temp_db("broken");
    let study = Study::builder().open_sqlite(&path, "s").unwrap();
    study.optimize(2, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    rusqlite::Connection::open(&path).unwrap().execute_batch("DROP TABLE trial_intermediate_values").unwrap();
    assert!(matches!(study.try_trials(), Err(SearchError::Storage { .. })));
    assert!(study.try_best_trial().is_err() && study.try_to_csv().is_err());
    let csv = std::env::temp_dir().join(format!("{}.csv", unique("broken")));
    assert!(study.write_csv(&csv).is_err());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| study.trials().len()));
    assert!(panicked.is_err());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| study.best_value()));
    assert!(panicked.is_err());
    drop(study);
    remove_db(&path);
}

#[test]
fn a_study_resumes_from_its_file() {
    let path = temp_db("resume");
    let objective = |t: &mut ferrograd_tuning::search::Trial<'_>| {
        let lr = t.suggest_float("lr", 1e-4, 1e-1, true)?;
        let act: &str = t.suggest_categorical("act", &["relu", "tanh"])?;
        t.report(1, lr);
        Ok::<_, SearchError>(lr + if act == "relu" { 0.0 } else { 1.0 })
    };
    let open = || Study::builder().sampler(TpeSampler::new().n_startup_trials(5)).open_sqlite(&path, "shared").unwrap();
    let first = open();
    first.optimize(6, objective).unwrap();
    let before = first.trials();
    drop(first);
    let second = open();
    assert_eq!(second.trials(), before);
    second.optimize(6, objective).unwrap();
    let after = second.trials();
    assert_eq!(after.len(), 12);
    assert_eq!(&after[..6], &before[..]);
    assert!(after.iter().enumerate().all(|(i, t)| t.number == i as u64 && t.state == TrialState::Complete));
    assert_eq!(after[3].intermediate.len(), 1);
    assert_eq!(second.best_value(), after.iter().filter_map(|t| t.value).reduce(f64::min));
    drop(second);
    // Another direction for the same study name is refused.
    let err = Study::builder().direction(Direction::Maximize).open_sqlite(&path, "shared").err().unwrap();
    assert!(matches!(err, SearchError::StudyMismatch { .. }), "{err}");
    remove_db(&path);
}

/// The schema of ferrograd before Optuna's, as the old storage wrote it.
const LEGACY: &str = "
CREATE TABLE ferrograd_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, direction TEXT NOT NULL);
CREATE TABLE trials (study_id INTEGER NOT NULL, number INTEGER NOT NULL, state TEXT NOT NULL, value REAL,
    fail_reason TEXT, duration REAL, heartbeat REAL NOT NULL, PRIMARY KEY (study_id, number));
CREATE TABLE params (study_id INTEGER NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL, fixed INTEGER NOT NULL,
    value TEXT NOT NULL, distribution TEXT, PRIMARY KEY (study_id, number, name, fixed));
CREATE TABLE intermediate (study_id INTEGER NOT NULL, number INTEGER NOT NULL, step INTEGER NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (study_id, number, step));
INSERT INTO ferrograd_meta VALUES ('schema', 'ferrograd-search-1');
INSERT INTO studies VALUES (1, 'old', 'maximize');
INSERT INTO trials VALUES (1, 0, 'COMPLETE', 0.75, NULL, 2.0, 1700000002.5);
INSERT INTO trials VALUES (1, 1, 'FAILED', NULL, 'diverged', 1.0, 1700000004.0);
INSERT INTO trials VALUES (1, 2, 'RUNNING', NULL, NULL, NULL, 1700000005.0);
INSERT INTO params VALUES (1, 0, 'lr', 0, 'f:0.01', '[\"float\",0.0001,0.1,true,null]');
INSERT INTO params VALUES (1, 0, 'act', 0, 'c:relu', '[\"categorical\",[\"relu\",\"tanh\"]]');
INSERT INTO params VALUES (1, 0, 'n', 0, 'i:4', '[\"int\",2,8,2,false]');
INSERT INTO params VALUES (1, 1, 'n', 1, 'i:6', NULL);
INSERT INTO intermediate VALUES (1, 0, 1, 0.5);
";

#[test]
fn legacy_files_are_refused_then_migrated() {
    let path = temp_db("legacy");
    rusqlite::Connection::open(&path).unwrap().execute_batch(LEGACY).unwrap();
    let err = Study::builder().open_sqlite(&path, "old").err().unwrap();
    assert!(matches!(&err, SearchError::SchemaVersion { message, .. } if message.contains("migrate_legacy")), "{err}");
    SqliteStorage::migrate_legacy(&path).unwrap();
    SqliteStorage::migrate_legacy(&path).unwrap();
    let study = Study::builder().open_sqlite(&path, "old").unwrap();
    assert_eq!(study.direction(), Direction::Maximize);
    let t = study.trials();
    assert_eq!(t.len(), 3);
    assert_eq!((t[0].state, t[0].value), (TrialState::Complete, Some(0.75)));
    assert_eq!(
        t[0].params,
        BTreeMap::from([
            ("act".to_string(), ParamValue::Categorical("relu".into())),
            ("lr".to_string(), ParamValue::Float(0.01)),
            ("n".to_string(), ParamValue::Int(4)),
        ])
    );
    assert_eq!(t[0].intermediate, BTreeMap::from([(1, 0.5)]));
    assert_eq!(t[0].duration, Some(Duration::from_secs(2)));
    assert_eq!((t[1].state, t[1].fail_reason.as_deref()), (TrialState::Failed, Some("diverged")));
    assert_eq!(t[1].fixed_params["n"], ParamValue::Int(6));
    assert_eq!(t[2].state, TrialState::Failed, "a trial left running is failed");
    study.optimize(1, |t| t.suggest_float("lr", 1e-4, 1e-1, true)).unwrap();
    assert_eq!(study.trials().len(), 4);
    remove_db(&path);
}

/// A write blocked by another process's lock longer than the busy timeout is retried with
/// backoff and succeeds; one blocked for longer than the retries last fails with a typed error.
#[test]
fn locked_files_are_retried_with_a_bounded_backoff() {
    let path = temp_db("locked");
    let storage = Arc::new(SqliteStorage::open_with_busy_timeout(&path, Duration::from_millis(20)).unwrap());
    let study = Study::builder().storage(storage.clone()).create("s").unwrap();
    let hold = |ms: u64| {
        let path = path.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            std::thread::sleep(Duration::from_millis(ms));
            conn.execute_batch("COMMIT").unwrap();
        })
    };
    let holder = hold(300);
    std::thread::sleep(Duration::from_millis(50));
    study.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    holder.join().unwrap();
    let holder = hold(6000);
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let err = study.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap_err();
    assert!(matches!(&err, SearchError::Storage { message, .. } if message.contains("attempts")), "{err}");
    assert!(start.elapsed() < Duration::from_secs(6), "the retries are bounded");
    holder.join().unwrap();
    assert_eq!(study.trials().len(), 1);
    remove_db(&path);
}

/// Joining a study that other processes are writing failed with a false "corrupt intermediate
/// row" (35 of 60 opens with 3 fast workers): the reads saw several snapshots.
#[test]
fn joining_a_study_others_are_writing_never_sees_a_torn_state() {
    let path = temp_db("join");
    let name = "join";
    drop(Study::builder().open_sqlite(&path, name).unwrap());
    let dir = std::env::temp_dir().join(unique("join_logs"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut writers: Vec<_> =
        (0..3).map(|i| workers::spawn(&spec(&path, name, 400, 1, &dir.join(format!("w{i}"))))).collect();
    let storage = open_storage(&format!("sqlite:{}", path.display())).unwrap();
    while storage.read_trials(1, 0, &[]).unwrap().len() < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..60 {
        let study = Study::builder().storage(storage.clone()).load(name).unwrap();
        assert!(!study.trials().is_empty());
    }
    for w in &mut writers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    remove_db(&path);
}

/// Three processes opening a new file together failed with "database is locked" in 2 of 40
/// rounds: switching to WAL mode was not covered by the busy timeout.
#[test]
fn processes_creating_a_file_together_all_succeed() {
    for round in 0..40 {
        let path = temp_db(&format!("create{round}"));
        let dir = std::env::temp_dir().join(unique("create_logs"));
        let start = now_ms() + 150;
        let children: Vec<_> = (0..3)
            .map(|i| workers::spawn(&Spec { start_at_ms: start, ..spec(&path, "s", 0, 0, &dir.join(format!("w{i}"))) }))
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        remove_db(&path);
    }
}

/// A trial failed after its worker stopped beating (paused here with SIGSTOP) flipped back to
/// COMPLETE when the worker resumed; now the late result is refused and the trial stays failed
/// (and its retry runs).
#[test]
fn a_paused_worker_cannot_revive_its_failed_trial() {
    let path = temp_db("paused");
    let name = "paused";
    let storage = open_storage(&format!("sqlite:{}", path.display())).unwrap();
    let watcher = workers::open_study(storage.clone(), name, Duration::from_secs(1)).unwrap();
    let log = std::env::temp_dir().join(unique("paused_log"));
    let worker = workers::spawn(&Spec { grace_ms: 1000, ..spec(&path, name, 1, 3000, &log) });
    let start = Instant::now();
    while watcher.trials().first().is_none_or(|t| !t.params.contains_key("k")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the worker never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &worker.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_millis(1600));
    watcher.optimize(1, |t| workers::objective(t, 1)).unwrap();
    signal("-CONT");
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already FAILED"));
    let trials = watcher.trials();
    assert_eq!(trials[0].state, TrialState::Failed);
    assert_eq!(trials[0].value, None);
    assert_eq!((trials[1].retried_trial_number(), trials[1].state), (Some(0), TrialState::Complete));
    let _ = std::fs::remove_file(log);
    remove_db(&path);
}

/// Eight processes started at once on a new file, three more joining, two killed mid-trial.
#[test]
fn eight_processes_share_a_study_through_kills_and_joins() {
    let path = temp_db("eight");
    workers::many_workers(&format!("sqlite:{}", path.display()), Plan { first: 8, join: 3, kill: 2, trials: 12 });
    remove_db(&path);
}
