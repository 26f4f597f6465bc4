//! SQLite storage: resuming, bad files, a killed worker and several processes on one study.
//! Worker processes are this test binary started again with `FERROGRAD_SEARCH_WORKER` set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrograd_tuning::search::{Direction, SearchError, Study, TpeSampler, TrialState};

const WORKER_ENV: &str = "FERROGRAD_SEARCH_WORKER";

fn temp_db(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ferrograd_search_{tag}_{}.db", std::process::id()));
    remove_db(&p);
    p
}

fn remove_db(p: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
}

fn open(path: &Path, timeout: Duration) -> Study {
    Study::builder()
        .sampler(TpeSampler::new().n_startup_trials(5).constant_liar(true))
        .heartbeat_timeout(timeout)
        .open_sqlite(path, "shared")
        .unwrap()
}

/// The worker side: runs `n` trials that each sleep `ms` milliseconds; from trial number `stall`
/// on, a trial hangs (so a test can kill the process mid-trial).
#[test]
fn worker_entry() {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return };
    let mut parts = spec.split('|');
    let path = PathBuf::from(parts.next().unwrap());
    let n: usize = parts.next().unwrap().parse().unwrap();
    let ms: u64 = parts.next().unwrap().parse().unwrap();
    let stall: u64 = parts.next().unwrap().parse().unwrap();
    let study = open(&path, Duration::from_secs(1));
    study
        .optimize(n, |t| {
            let x = t.suggest_float("x", -2.0, 2.0, false)?;
            let k = t.suggest_int("k", 1, 4, 1, false)?;
            let hang = if t.number() >= stall { 120_000 } else { 0 };
            std::thread::sleep(Duration::from_millis(ms + hang));
            Ok::<_, SearchError>(x * x + k as f64)
        })
        .unwrap();
}

fn spawn_worker(path: &Path, n: usize, ms: u64, stall: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["worker_entry", "--exact", "--test-threads", "1"])
        .stdout(Stdio::null())
        .env(WORKER_ENV, format!("{}|{n}|{ms}|{stall}", path.display()))
        .spawn()
        .unwrap()
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
    let first = open(&path, Duration::from_secs(60));
    first.optimize(6, objective).unwrap();
    let before = first.trials();
    drop(first);
    let second = open(&path, Duration::from_secs(60));
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

#[test]
fn unreadable_and_foreign_files_are_typed_errors() {
    let garbage = temp_db("garbage");
    std::fs::write(&garbage, b"this is not a database, just some text long enough to have a header").unwrap();
    let err = Study::builder().open_sqlite(&garbage, "s").err().unwrap();
    assert!(matches!(err, SearchError::Storage { .. }), "{err}");
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        b"this is not a database, just some text long enough to have a header"
    );
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

    let dir = std::env::temp_dir();
    assert!(matches!(Study::builder().open_sqlite(&dir, "s"), Err(SearchError::Storage { .. })));
}

#[test]
fn four_processes_share_a_study_without_duplicate_or_lost_trials() {
    let path = temp_db("four");
    drop(open(&path, Duration::from_secs(60)));
    let mut workers: Vec<Child> = (0..4).map(|_| spawn_worker(&path, 10, 5, u64::MAX)).collect();
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    let trials = open(&path, Duration::from_secs(60)).trials();
    assert_eq!(trials.len(), 40);
    let numbers: BTreeSet<u64> = trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..40).collect());
    assert!(trials.iter().all(|t| t.state == TrialState::Complete && t.params.len() == 2));
    remove_db(&path);
}

#[test]
fn a_killed_worker_leaves_a_failed_trial_and_the_study_resumes() {
    let path = temp_db("killed");
    drop(open(&path, Duration::from_secs(1)));
    let mut worker = spawn_worker(&path, 100, 10, 3);
    let watcher = open(&path, Duration::from_secs(1));
    let start = Instant::now();
    while watcher.trials().len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(60), "the worker made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    let killed = watcher.trials();
    assert_eq!(killed.iter().filter(|t| t.state == TrialState::Running).count(), 1);
    drop(watcher);
    // After the heartbeat timeout the next trial start marks the orphan failed.
    std::thread::sleep(Duration::from_millis(1300));
    let study = open(&path, Duration::from_secs(1));
    study.optimize(3, |t| t.suggest_float("x", -2.0, 2.0, false)).unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), killed.len() + 3);
    let orphan = &trials[killed.iter().position(|t| t.state == TrialState::Running).unwrap()];
    assert_eq!(orphan.state, TrialState::Failed);
    assert!(orphan.fail_reason.as_deref().unwrap().contains("heartbeat"));
    assert!(trials.iter().enumerate().all(|(i, t)| t.number == i as u64 && t.state != TrialState::Running));
    remove_db(&path);
}
