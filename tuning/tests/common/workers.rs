//! Real worker processes on one study: the test binary started again with `FERROGRAD_SEARCH_WORKER`
//! set to a JSON spec runs `worker_main` (from its `worker_entry` test), which opens the study and
//! runs trials, logging each trial it finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrograd_tuning::search::{OptimizeOptions, SearchError, Storage, Study, TpeSampler, TrialState};
use serde_json::{json, Value};

pub const WORKER_ENV: &str = "FERROGRAD_SEARCH_WORKER";

/// Opens `sqlite:PATH` or `postgres:URL`.
pub fn open_storage(spec: &str) -> Result<Arc<dyn Storage>, SearchError> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        return Ok(Arc::new(ferrograd_tuning::search::SqliteStorage::open(path)?));
    }
    #[cfg(feature = "postgres")]
    if let Some(url) = spec.strip_prefix("postgres:") {
        return Ok(Arc::new(ferrograd_tuning::search::PostgresStorage::connect(url)?));
    }
    panic!("unknown storage spec {spec}")
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// How a worker process runs.
#[derive(Clone)]
pub struct Spec {
    pub storage: String,
    pub study: String,
    pub trials: usize,
    pub trial_ms: u64,
    pub start_at_ms: u64,
    pub grace_ms: u64,
    pub log: PathBuf,
}

impl Spec {
    fn to_json(&self) -> String {
        json!({
            "storage": self.storage, "study": self.study, "trials": self.trials, "trial_ms": self.trial_ms,
            "start_at_ms": self.start_at_ms, "grace_ms": self.grace_ms, "log": self.log,
        })
        .to_string()
    }
}

/// A worker's study handle: TPE with the constant liar, heartbeats, one retry of stale trials.
pub fn open_study(storage: Arc<dyn Storage>, name: &str, grace: Duration) -> Result<Study, SearchError> {
    Study::builder()
        .sampler(TpeSampler::new().n_startup_trials(5).constant_liar(true))
        .heartbeat_timeout(grace)
        .retry_failed_trials(1)
        .storage(storage)
        .load_if_exists(name)
}

/// The objective of the workers: its value is a function of its parameters (checked afterwards).
pub fn objective(t: &mut ferrograd_tuning::search::Trial<'_>, ms: u64) -> Result<f64, SearchError> {
    t.set_user_attr("pid", std::process::id())?;
    let x = t.suggest_float("x", -2.0, 2.0, false)?;
    let k = t.suggest_int("k", 1, 4, 1, false)?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(x * x + k as f64)
}

/// The worker side (call from a `worker_entry` test); returns at once without the spec.
pub fn worker_main() {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return };
    let v: Value = serde_json::from_str(&spec).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    let n = |k: &str| v[k].as_u64().unwrap();
    while now_ms() < n("start_at_ms") {
        std::thread::sleep(Duration::from_millis(1));
    }
    let storage =
        open_storage(&s("storage")).unwrap_or_else(|e| panic!("worker {} cannot open: {e}", std::process::id()));
    let study = open_study(storage, &s("study"), Duration::from_millis(n("grace_ms")))
        .unwrap_or_else(|e| panic!("worker {} cannot join: {e}", std::process::id()));
    let log = PathBuf::from(s("log"));
    let ms = n("trial_ms");
    let options = OptimizeOptions::new().n_trials(n("trials") as usize).callback(move |_, t| {
        if t.state.is_finished() {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
            writeln!(f, "{} {}", t.number, t.state).unwrap();
        }
    });
    study.optimize_with(options, |t| objective(t, ms)).unwrap();
}

/// Starts a worker process running test `entry` of this binary.
pub fn spawn(spec: &Spec) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["worker_entry", "--exact", "--test-threads", "1", "--nocapture"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env(WORKER_ENV, spec.to_json())
        .spawn()
        .unwrap()
}

/// How many processes run, join and die.
pub struct Plan {
    pub first: usize,
    pub join: usize,
    pub kill: usize,
    pub trials: usize,
}

/// The numbers each worker log recorded, with the states.
fn read_logs(dir: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines() {
            let (n, s) = line.split_once(' ').unwrap();
            out.push((n.parse().unwrap(), s.to_string()));
        }
    }
    out
}

/// Workers started at once on a fresh study, more joining while they run, some killed with
/// SIGKILL mid-trial: every trial is finished exactly once, numbers are unique and without gaps,
/// no worker fails to open or join, the killed workers' trials end failed (missed heartbeat) and
/// each is retried once.
pub fn many_workers(storage_spec: &str, plan: Plan) {
    let name = crate::common::suite::unique("many");
    let dir = std::env::temp_dir().join(format!("ferrograd_workers_{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let grace = Duration::from_millis(1500);
    let spec = |i: usize, trials: usize, trial_ms: u64, start_at_ms: u64| Spec {
        storage: storage_spec.to_string(),
        study: name.clone(),
        trials,
        trial_ms,
        start_at_ms,
        grace_ms: grace.as_millis() as u64,
        log: dir.join(format!("worker{i}.log")),
    };
    // The workers to kill run long trials, so that they are killed mid-trial.
    let doomed: Vec<usize> = (0..plan.kill).map(|i| 1 + 2 * i).collect();
    let start = now_ms() + 500;
    let mut first: Vec<Child> = (0..plan.first)
        .map(|i| spawn(&spec(i, plan.trials, if doomed.contains(&i) { 600 } else { 30 }, start)))
        .collect();
    let watcher = open_storage(storage_spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let study_id = loop {
        if let Some(id) = watcher.find_study(&name).unwrap() {
            break id;
        }
        assert!(Instant::now() < deadline, "no worker created the study");
        std::thread::sleep(Duration::from_millis(20));
    };
    let running_of = |pid: u32| {
        watcher
            .read_trials(study_id, 0, &[])
            .unwrap()
            .into_iter()
            .filter(|t| t.trial.state == TrialState::Running && t.trial.user_attrs.get("pid") == Some(&json!(pid)))
            .count()
    };
    while watcher.read_trials(study_id, 0, &[]).unwrap().len() < plan.first * 2 {
        assert!(Instant::now() < deadline, "the workers made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let joined: Vec<Child> = (0..plan.join).map(|i| spawn(&spec(plan.first + i, plan.trials / 2, 30, 0))).collect();
    let mut killed = BTreeSet::new();
    for &i in &doomed {
        let pid = first[i].id();
        while running_of(pid) == 0 {
            assert!(Instant::now() < deadline, "worker {i} never ran a trial");
            std::thread::sleep(Duration::from_millis(5));
        }
        first[i].kill().unwrap();
        first[i].wait().unwrap();
        killed.insert(pid);
    }
    for (i, w) in
        first.into_iter().enumerate().filter(|(i, _)| !doomed.contains(i)).chain(joined.into_iter().enumerate())
    {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker {i} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Past the grace period, a last worker fails the orphans, and runs their retries.
    std::thread::sleep(grace + Duration::from_millis(300));
    let finisher = open_study(watcher.clone(), &name, grace).unwrap();
    let log = dir.join("finisher.log");
    for _ in 0..4 * plan.kill + 4 {
        if !finisher.trials().iter().any(|t| matches!(t.state, TrialState::Running | TrialState::Waiting)) {
            break;
        }
        let log = log.clone();
        let options = OptimizeOptions::new().n_trials(1).callback(move |_, t| {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
            writeln!(f, "{} {}", t.number, t.state).unwrap();
        });
        finisher.optimize_with(options, |t| objective(t, 1)).unwrap();
    }
    let trials = finisher.trials();
    assert!(trials.iter().enumerate().all(|(i, t)| t.number == i as u64), "numbers without gaps");
    assert!(trials.iter().all(|t| t.state.is_finished()), "every trial finished");
    let logged = read_logs(&dir);
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for (n, state) in &logged {
        *times.entry(*n).or_default() += 1;
        assert_eq!(state, &trials[*n as usize].state.to_string(), "trial {n} logged as {state}");
    }
    let stale = |t: &&ferrograd_tuning::search::FrozenTrial| {
        t.state == TrialState::Failed && t.fail_reason.as_deref().is_some_and(|r| r.contains("heartbeat"))
    };
    for t in &trials {
        let n = times.get(&t.number).copied().unwrap_or(0);
        if stale(&t) {
            assert!(n <= 1, "stale trial {} logged {n} times", t.number);
            // A retry is not retried again (at most one retry per original trial).
            let original = t.retried_trial_number().unwrap_or(t.number);
            let retries: Vec<_> = trials.iter().filter(|r| r.retried_trial_number() == Some(original)).collect();
            assert!(!retries.is_empty() && retries.len() <= 1 + usize::from(t.retried_trial_number().is_some()));
            assert!(retries.iter().all(|r| r.state == TrialState::Complete || stale(r)));
        } else {
            assert_eq!(n, 1, "trial {} ({}) finished {n} times by the workers", t.number, t.state);
        }
        if t.state == TrialState::Complete {
            let x = t.params["x"].as_f64().unwrap();
            let k = t.params["k"].as_i64().unwrap();
            assert_eq!(t.value, Some(x * x + k as f64), "trial {}", t.number);
        }
    }
    let killed_trials: Vec<_> = trials
        .iter()
        .filter(|t| t.user_attrs.get("pid").and_then(Value::as_u64).is_some_and(|p| killed.contains(&(p as u32))))
        .collect();
    assert!(killed_trials.iter().filter(|t| stale(t)).count() >= plan.kill, "each killed worker left a failed trial");
    assert!(killed_trials.iter().all(|t| t.state == TrialState::Complete || stale(t)));
    std::fs::remove_dir_all(&dir).unwrap();
}
