//! The storage suite: the same tests on every backend. A test file instantiates it with
//! `storage_suite!(make)`, where `make()` gives a storage to use (a fresh one, or a shared database:
//! every test uses study names of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrograd_tuning::search::storage::{AttrKind, Prepare, StoredTrial, StudyId, TrialId};
use ferrograd_tuning::search::{
    copy_study, delete_study, study_summaries, Catch, Direction, Distribution, FrozenTrial, GridSampler,
    OptimizeOptions, ParamValue, SearchError, Storage, Study, StudySummary, TpeSampler, TrialState,
};
use serde_json::{json, Value};

pub type Make = dyn Fn() -> Arc<dyn Storage>;

/// A study name no other test (or earlier run on a shared database) uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}_{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos % 1_000_000_007)
}

#[macro_export]
macro_rules! storage_suite {
    ($make:expr) => {
        $crate::storage_suite!(
            $make;
            ask_and_tell_number_trials_without_gaps,
            finished_trials_refuse_every_write,
            enqueued_and_added_trials,
            attributes_round_trip_as_json,
            every_distribution_and_value_round_trips,
            create_load_list_copy_delete,
            multi_objective_studies,
            catch_policies_panics_timeout_callbacks_and_stop,
            csv_has_times_intermediate_values_and_fail_reasons,
            reads_are_incremental,
            threads_share_a_study,
            grid_points_are_claimed_once_across_handles,
            stale_trials_fail_and_are_retried
        );
    };
    ($make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                common::suite::$name(&$make);
            }
        )*
    };
}

fn study(make: &Make, tag: &str) -> Study {
    Study::builder().storage(make()).create(&unique(tag)).unwrap()
}

pub fn ask_and_tell_number_trials_without_gaps(make: &Make) {
    let study = study(make, "ask");
    for i in 0..4 {
        let mut t = study.ask().unwrap();
        assert_eq!(t.number(), i);
        let x = t.suggest_float("x", 0.0, 1.0, false).unwrap();
        t.report(1, x);
        let record = match i {
            0 | 1 => study.tell(t, x).unwrap(),
            2 => study.tell_pruned(t).unwrap(),
            _ => study.tell_failed(t, "diverged").unwrap(),
        };
        assert_eq!(record.number, i);
    }
    let trials = study.trials();
    let states: Vec<TrialState> = trials.iter().map(|t| t.state).collect();
    assert_eq!(states, [TrialState::Complete, TrialState::Complete, TrialState::Pruned, TrialState::Failed]);
    assert_eq!(trials[3].fail_reason.as_deref(), Some("diverged"));
    assert!(trials.iter().all(|t| t.datetime_start.is_some() && t.datetime_complete.is_some() && t.duration.is_some()));
    assert_eq!(trials[2].value, None);
    let best = study.best_trial().unwrap();
    assert_eq!(best.value, [trials[0].value, trials[1].value].into_iter().flatten().reduce(f64::min));
    assert_eq!(best.values, vec![best.value.unwrap()]);
    // A NaN told fails the trial, as in optimize.
    let t = study.ask().unwrap();
    assert_eq!(study.tell(t, f64::NAN).unwrap().state, TrialState::Failed);
    assert!(matches!(study.try_trial(99), Err(SearchError::NoSuchTrial { number: 99, .. })));
    // A study opened again sees the same trials.
    let again = Study::builder().storage(study.storage().clone()).load(study.name()).unwrap();
    assert_eq!(again.trials().len(), 5);
    assert_eq!(again.trials()[..4], trials[..]);
}

/// The study's trials as the storage holds them.
fn stored(storage: &dyn Storage, study: StudyId) -> Vec<StoredTrial> {
    storage.read_trials(study, 0, &[]).unwrap()
}

pub fn finished_trials_refuse_every_write(make: &Make) {
    let storage = make();
    let name = unique("immutable");
    let study = Study::builder().storage(storage.clone()).create(&name).unwrap();
    let mut t = study.ask().unwrap();
    t.suggest_float("x", 0.0, 1.0, false).unwrap();
    study.tell(t, 0.5).unwrap();
    let id = storage.find_study(&name).unwrap().unwrap();
    let trial: TrialId = stored(&*storage, id)[0].id;
    let dist = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
    let finished = |r: Result<(), SearchError>| {
        assert!(matches!(r, Err(SearchError::TrialFinished { number: 0, state: TrialState::Complete })), "{r:?}");
    };
    finished(storage.set_trial_param(trial, "y", &ParamValue::Float(0.1), &dist));
    finished(storage.set_trial_intermediate(trial, 3, 0.2));
    finished(storage.set_trial_attr(trial, AttrKind::User, "k", &json!(1)));
    finished(storage.finish_trial(trial, TrialState::Complete, &[0.9], None));
    finished(storage.finish_trial(trial, TrialState::Failed, &[], Some("late")));
    let after = stored(&*storage, id);
    assert_eq!(after[0].trial.values, vec![0.5]);
    assert_eq!(after[0].trial.state, TrialState::Complete);
    assert!(after[0].trial.intermediate.is_empty() && after[0].trial.user_attrs.is_empty());
}

pub fn enqueued_and_added_trials(make: &Make) {
    let study = study(make, "enqueue");
    assert_eq!(
        study.enqueue_trial([("x", ParamValue::Float(0.25)), ("n", 3i64.into()), ("c", "b".into())]).unwrap(),
        0
    );
    assert_eq!(study.trials()[0].state, TrialState::Waiting);
    let x = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
    let added = FrozenTrial::new(TrialState::Complete)
        .with_values(&[-1.0])
        .with_param("x", 0.75, x.clone())
        .with_intermediate(2, 0.5)
        .with_user_attr("source", "paper");
    assert_eq!(study.add_trial(added).unwrap(), 1);
    assert!(matches!(
        study.add_trial(FrozenTrial::new(TrialState::Complete).with_values(&[1.0, 2.0])),
        Err(SearchError::ValueCount { expected: 1, got: 2 })
    ));
    assert!(study
        .add_trial(FrozenTrial::new(TrialState::Complete).with_values(&[1.0]).with_param("x", 2.0, x))
        .is_err());
    study
        .optimize(2, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            let n = t.suggest_int("n", 0, 9, 1, false)?;
            let c: &str = t.suggest_categorical("c", &["a", "b"])?;
            if t.number() == 0 {
                assert_eq!((x, n, c), (0.25, 3, "b"));
            }
            Ok::<_, SearchError>(x + n as f64)
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), 3, "the enqueued trial ran first, then one new trial");
    assert_eq!(trials[0].state, TrialState::Complete);
    assert_eq!(trials[0].params["n"], ParamValue::Int(3));
    assert_eq!(trials[0].fixed_params["x"], ParamValue::Float(0.25));
    assert_eq!(trials[1].user_attrs["source"], json!("paper"));
    assert_eq!(trials[1].intermediate[&2], 0.5);
    assert_eq!(study.best_value(), Some(-1.0));
}

pub fn attributes_round_trip_as_json(make: &Make) {
    let study = study(make, "attrs");
    study.set_user_attr("dataset", json!({"name": "mnist", "n": 60000, "tags": ["a", "b"]})).unwrap();
    study.set_user_attr("dataset", json!({"name": "mnist", "n": 1000})).unwrap();
    study.set_system_attr("sampler_state", json!([1.5, null, true])).unwrap();
    assert_eq!(study.user_attrs().unwrap(), BTreeMap::from([("dataset".into(), json!({"name": "mnist", "n": 1000}))]));
    assert_eq!(study.system_attrs().unwrap()["sampler_state"], json!([1.5, null, true]));
    study
        .optimize(1, |t| {
            t.set_user_attr("note", "quote \" and, comma")?;
            t.set_user_attr("nested", json!({"k": [1, 2]}))?;
            t.set_system_attr("cma", json!({"mean": [0.5]}))?;
            assert_eq!(t.user_attrs()["nested"], json!({"k": [1, 2]}));
            Ok::<_, SearchError>(1.0)
        })
        .unwrap();
    let t = &study.trials()[0];
    assert_eq!(t.user_attrs["note"], json!("quote \" and, comma"));
    assert_eq!(t.system_attrs["cma"], json!({"mean": [0.5]}));
}

pub fn every_distribution_and_value_round_trips(make: &Make) {
    let study = study(make, "dists");
    study
        .optimize(6, |t| {
            let a = t.suggest_float("a", -1e300, 1e300, false)?;
            let b = t.suggest_float("b", 1e-8, 1e8, true)?;
            let c = t.suggest_float_step("c", -1.0, 1.0, 0.25)?;
            let d = t.suggest_int("d", -5, 5, 5, false)?;
            let e = t.suggest_int("e", 1, 1 << 40, 1, true)?;
            let f: String = t.suggest_categorical("f", &["x, y".to_string(), "\"q\"".into(), "ünï".into()])?;
            let g = t.suggest_int("g", 7, 7, 1, false)?;
            for (step, v) in [(0, f64::NAN), (1, f64::INFINITY), (2, f64::NEG_INFINITY), (3, -0.5)] {
                t.report(step, v);
            }
            assert!(
                a.is_finite() && b > 0.0 && (c * 4.0).fract() == 0.0 && d % 5 == 0 && e >= 1 && g == 7 && !f.is_empty()
            );
            Ok::<_, SearchError>(match t.number() {
                0 => f64::INFINITY,
                1 => f64::NEG_INFINITY,
                _ => a / 1e300 + b.ln() + c + d as f64,
            })
        })
        .unwrap();
    let again = Study::builder().storage(study.storage().clone()).load(study.name()).unwrap().trials();
    let mine = study.trials();
    assert_eq!(again.len(), 6);
    for (x, y) in mine.iter().zip(&again) {
        assert_eq!(x.params, y.params);
        assert_eq!(x.distributions, y.distributions);
        assert_eq!(x.values, y.values);
        assert!(
            y.intermediate[&0].is_nan()
                && y.intermediate[&1] == f64::INFINITY
                && y.intermediate[&2] == f64::NEG_INFINITY
        );
        assert_eq!(y.intermediate[&3], -0.5);
    }
    assert_eq!(again[0].value, Some(f64::INFINITY));
    assert_eq!(again[1].value, Some(f64::NEG_INFINITY));
    assert_eq!(study.best_value(), Some(f64::NEG_INFINITY));
}

pub fn create_load_list_copy_delete(make: &Make) {
    let storage = make();
    let name = unique("lifecycle");
    let study = Study::builder().direction(Direction::Maximize).storage(storage.clone()).create(&name).unwrap();
    study.optimize(3, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    study.set_user_attr("k", "v").unwrap();
    assert!(matches!(Study::builder().storage(storage.clone()).create(&name), Err(SearchError::StudyExists { .. })));
    let missing = unique("missing");
    assert!(matches!(Study::builder().storage(storage.clone()).load(&missing), Err(SearchError::NoSuchStudy { .. })));
    assert!(matches!(
        Study::builder().direction(Direction::Minimize).storage(storage.clone()).load(&name),
        Err(SearchError::StudyMismatch { .. })
    ));
    let loaded = Study::builder().storage(storage.clone()).load(&name).unwrap();
    assert_eq!(loaded.directions(), [Direction::Maximize]);
    let created = Study::builder().storage(storage.clone()).load_if_exists(&missing).unwrap();
    assert_eq!(created.trials().len(), 0);
    let summaries: Vec<StudySummary> = study_summaries(&*storage).unwrap();
    let s = summaries.iter().find(|s| s.name == name).unwrap();
    assert_eq!((s.n_trials, s.directions.clone()), (3, vec![Direction::Maximize]));
    assert!(summaries.iter().any(|s| s.name == missing && s.n_trials == 0));
    let copy = unique("copy");
    copy_study(&*storage, &name, &*storage, &copy).unwrap();
    let copied = Study::builder().storage(storage.clone()).load(&copy).unwrap();
    assert_eq!(copied.trials(), study.trials());
    assert_eq!(copied.user_attrs().unwrap(), study.user_attrs().unwrap());
    delete_study(&*storage, &name).unwrap();
    assert!(matches!(Study::builder().storage(storage.clone()).load(&name), Err(SearchError::NoSuchStudy { .. })));
    assert!(matches!(delete_study(&*storage, &name), Err(SearchError::NoSuchStudy { .. })));
    assert_eq!(Study::builder().storage(storage).load(&copy).unwrap().trials().len(), 3, "the copy stays");
}

pub fn multi_objective_studies(make: &Make) {
    let study = Study::builder()
        .directions(&[Direction::Minimize, Direction::Maximize])
        .sampler(TpeSampler::new().n_startup_trials(2))
        .storage(make())
        .create(&unique("multi"))
        .unwrap();
    study
        .optimize(6, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            t.report(1, x);
            assert!(!t.should_prune());
            Ok::<_, SearchError>([x, 1.0 - x * x])
        })
        .unwrap();
    study.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    let trials = study.trials();
    assert!(trials[..6].iter().all(|t| t.state == TrialState::Complete && t.values.len() == 2));
    let x = trials[0].params["x"].as_f64().unwrap();
    assert_eq!(trials[0].values, vec![x, 1.0 - x * x]);
    assert_eq!(trials[6].state, TrialState::Failed, "one value for two objectives");
    assert!(trials[6].fail_reason.as_deref().unwrap().contains("2 objective"));
    assert!(matches!(study.try_best_trial(), Err(SearchError::MultiObjective { directions: 2, .. })));
    let loaded = Study::builder().storage(study.storage().clone()).load(study.name()).unwrap();
    assert_eq!(loaded.directions(), [Direction::Minimize, Direction::Maximize]);
    assert!(study.to_csv().lines().next().unwrap().starts_with("number,state,value,values_1,duration_s"));
}

pub fn catch_policies_panics_timeout_callbacks_and_stop(make: &Make) {
    // A mismatched distribution stops the study by default, after failing its trial.
    let study = study(make, "catch");
    study.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    let err = study.optimize(5, |t| t.suggest_int("x", 0, 3, 1, false).map(|v| v as f64)).unwrap_err();
    assert!(matches!(err, SearchError::DistributionMismatch { .. }), "{err}");
    assert_eq!(study.trials().len(), 2);
    assert_eq!(study.trials()[1].state, TrialState::Failed);
    // Catch::All goes on; the objective's own errors go on by default.
    study
        .optimize_with(OptimizeOptions::new().n_trials(2).catch(Catch::All), |t| {
            t.suggest_int("x", 0, 3, 1, false).map(|v| v as f64)
        })
        .unwrap();
    study.optimize(2, |_| Err::<f64, _>("diverged")).unwrap();
    assert_eq!(study.trials().len(), 6);
    // Catch::Nothing stops at the first error with the objective's message.
    let err = study
        .optimize_with(OptimizeOptions::new().n_trials(3).catch(Catch::Nothing), |_| Err::<f64, _>("oom"))
        .unwrap_err();
    assert!(matches!(&err, SearchError::Objective { number: 6, message } if message == "oom"), "{err}");
    fn only_io(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        e.is::<std::io::Error>()
    }
    let io = || Err::<f64, Box<dyn std::error::Error + Send + Sync>>(std::io::Error::other("disk").into());
    study.optimize_with(OptimizeOptions::new().n_trials(2).catch(Catch::If(only_io)), |_| io()).unwrap();
    assert_eq!(study.trials().len(), 9);
    // A panicking objective fails its trial, then the panic goes on.
    let n = study.trials().len() as u64;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        study.optimize(1, |_| -> Result<f64, SearchError> { panic!("boom") })
    }));
    assert!(panicked.is_err());
    let t = study.trial(n);
    assert_eq!(t.state, TrialState::Failed);
    assert!(t.fail_reason.unwrap().contains("panicked: boom"));
    // Callbacks see every trial and may stop the study; a timeout starts no trial after it.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let options = OptimizeOptions::new().n_trials(50).callback(move |study, trial| {
        if counter.fetch_add(1, Ordering::SeqCst) == 2 {
            assert!(trial.state.is_finished());
            study.stop();
        }
    });
    let before = study.trials().len();
    study.optimize_with(options, |t| t.suggest_float("y", 0.0, 1.0, false)).unwrap();
    assert_eq!((seen.load(Ordering::SeqCst), study.trials().len()), (3, before + 3));
    let before = study.trials().len();
    study
        .optimize_with(OptimizeOptions::new().timeout(Duration::from_millis(150)), |t| {
            std::thread::sleep(Duration::from_millis(60));
            t.suggest_float("y", 0.0, 1.0, false)
        })
        .unwrap();
    let ran = study.trials().len() - before;
    assert!((2..=4).contains(&ran), "{ran} trials in a 150 ms budget of 60 ms trials");
}

pub fn csv_has_times_intermediate_values_and_fail_reasons(make: &Make) {
    let study = study(make, "csv");
    study
        .optimize(3, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            t.report(1, 0.5);
            t.report(2, 0.25);
            t.set_user_attr("who", "me, myself")?;
            if t.number() == 1 {
                return Err("bad, \"very\" bad".into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(x)
        })
        .unwrap();
    let csv = study.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "number,state,value,duration_s,params_x,datetime_start,datetime_complete,fail_reason,intermediate_values,user_attrs_who"
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[2].starts_with("1,FAILED,,"));
    assert!(lines[2].contains(",\"bad, \"\"very\"\" bad\",1:0.5;2:0.25,\"\"\"me, myself\"\"\""), "{}", lines[2]);
    let start = lines[1].split(',').nth(5).unwrap();
    assert_eq!(start.len(), 26, "{start}");
    assert!(start.starts_with("20") && &start[10..11] == " ");
}

/// Forwards to a storage, counting the trials its reads return.
struct Counting {
    inner: Arc<dyn Storage>,
    read: AtomicUsize,
}

impl Storage for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn supports_heartbeat(&self) -> bool {
        self.inner.supports_heartbeat()
    }
    fn create_study(&self, name: &str, directions: &[Direction]) -> Result<StudyId, SearchError> {
        self.inner.create_study(name, directions)
    }
    fn find_study(&self, name: &str) -> Result<Option<StudyId>, SearchError> {
        self.inner.find_study(name)
    }
    fn studies(&self) -> Result<Vec<StudySummary>, SearchError> {
        self.inner.studies()
    }
    fn delete_study(&self, study: StudyId) -> Result<(), SearchError> {
        self.inner.delete_study(study)
    }
    fn study_directions(&self, study: StudyId) -> Result<Vec<Direction>, SearchError> {
        self.inner.study_directions(study)
    }
    fn set_study_attr(&self, study: StudyId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError> {
        self.inner.set_study_attr(study, kind, key, value)
    }
    fn study_attrs(&self, study: StudyId, kind: AttrKind) -> Result<BTreeMap<String, Value>, SearchError> {
        self.inner.study_attrs(study, kind)
    }
    fn create_trial(
        &self,
        study: StudyId,
        template: &mut FrozenTrial,
        heartbeat: bool,
        prepare: Option<Prepare<'_>>,
    ) -> Result<Option<(TrialId, u64)>, SearchError> {
        self.inner.create_trial(study, template, heartbeat, prepare)
    }
    fn claim_waiting_trial(&self, trial: TrialId, heartbeat: bool) -> Result<bool, SearchError> {
        self.inner.claim_waiting_trial(trial, heartbeat)
    }
    fn set_trial_param(
        &self,
        trial: TrialId,
        name: &str,
        value: &ParamValue,
        dist: &Distribution,
    ) -> Result<(), SearchError> {
        self.inner.set_trial_param(trial, name, value, dist)
    }
    fn set_trial_intermediate(&self, trial: TrialId, step: u64, value: f64) -> Result<(), SearchError> {
        self.inner.set_trial_intermediate(trial, step, value)
    }
    fn set_trial_attr(&self, trial: TrialId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError> {
        self.inner.set_trial_attr(trial, kind, key, value)
    }
    fn finish_trial(
        &self,
        trial: TrialId,
        state: TrialState,
        values: &[f64],
        reason: Option<&str>,
    ) -> Result<(), SearchError> {
        self.inner.finish_trial(trial, state, values, reason)
    }
    fn record_heartbeat(&self, trial: TrialId) -> Result<(), SearchError> {
        self.inner.record_heartbeat(trial)
    }
    fn fail_stale_trials(
        &self,
        study: StudyId,
        c: &[TrialId],
        grace: Duration,
        retry: Option<u32>,
    ) -> Result<Vec<u64>, SearchError> {
        self.inner.fail_stale_trials(study, c, grace, retry)
    }
    fn read_trials(
        &self,
        study: StudyId,
        after: TrialId,
        include: &[TrialId],
    ) -> Result<Vec<StoredTrial>, SearchError> {
        let r = self.inner.read_trials(study, after, include)?;
        self.read.fetch_add(r.len(), Ordering::SeqCst);
        Ok(r)
    }
}

/// With a trial held running by another worker, each new trial reads only what changed: the
/// trials read per asked trial do not grow with the trials that finished since the running one
/// (they re-read the whole tail before).
pub fn reads_are_incremental(make: &Make) {
    let counting = Arc::new(Counting { inner: make(), read: AtomicUsize::new(0) });
    let name = unique("incremental");
    let other = Study::builder().storage(counting.inner.clone()).create(&name).unwrap();
    let mut held = other.ask().unwrap();
    held.suggest_float("x", 0.0, 1.0, false).unwrap();
    let study =
        Study::builder().sampler(TpeSampler::new().n_startup_trials(5)).storage(counting.clone()).load(&name).unwrap();
    let objective = |t: &mut ferrograd_tuning::search::Trial<'_>| t.suggest_float("x", 0.0, 1.0, false);
    study.optimize(20, objective).unwrap();
    let per_trial = |n: usize| {
        let before = counting.read.load(Ordering::SeqCst);
        study.optimize(n, objective).unwrap();
        (counting.read.load(Ordering::SeqCst) - before) as f64 / n as f64
    };
    let early = per_trial(20);
    study.optimize(200, objective).unwrap();
    let late = per_trial(20);
    // Each ask reads the held trial and its own new one (and the finish of the previous one).
    assert!(early <= 4.0 && late <= 4.0, "trials read per trial: {early} early, {late} after 200 more");
    other.tell(held, 0.5).unwrap();
    assert_eq!(study.trials()[0].state, TrialState::Complete, "the held trial's end is seen");
}

pub fn threads_share_a_study(make: &Make) {
    let study = Study::builder()
        .sampler(TpeSampler::new().n_startup_trials(4).constant_liar(true))
        .seed(8)
        .storage(make())
        .create(&unique("threads"))
        .unwrap();
    study
        .optimize_parallel(24, 4, |t| {
            let x = t.suggest_float("x", -3.0, 3.0, false)?;
            t.report(0, x);
            Ok::<_, SearchError>(x * x)
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), 24);
    assert!(trials.iter().enumerate().all(|(i, t)| t.number == i as u64 && t.state == TrialState::Complete));
    for t in &trials {
        let x = t.params["x"].as_f64().unwrap();
        assert_eq!(t.value, Some(x * x));
    }
}

pub fn grid_points_are_claimed_once_across_handles(make: &Make) {
    let storage = make();
    let name = unique("grid");
    let grid = || GridSampler::new().int("a", &[1, 2, 3]).categorical("b", &["x", "y"]);
    let handles: Vec<Study> = (0..3)
        .map(|_| Study::builder().sampler(grid()).storage(storage.clone()).load_if_exists(&name).unwrap())
        .collect();
    std::thread::scope(|s| {
        for h in &handles {
            s.spawn(move || {
                h.optimize(10, |t| {
                    let a = t.suggest_int("a", 1, 3, 1, false)?;
                    let b: &str = t.suggest_categorical("b", &["x", "y"])?;
                    std::thread::sleep(Duration::from_millis(5));
                    Ok::<_, SearchError>(a as f64 + b.len() as f64)
                })
                .unwrap()
            });
        }
    });
    let trials = handles[0].trials();
    assert_eq!(trials.len(), 6);
    let points: BTreeSet<String> = trials.iter().map(|t| format!("{:?}", t.params)).collect();
    assert_eq!(points.len(), 6);
    // A parameter the grid does not declare stops the study (a SearchError) and fails its trial.
    let study = Study::builder().sampler(grid()).storage(make()).create(&unique("grid_z")).unwrap();
    let err = study.optimize(1, |t| t.suggest_float("z", 0.0, 1.0, false)).unwrap_err();
    assert!(matches!(err, SearchError::NotInGrid { .. }));
    assert!(study.trial(0).fail_reason.unwrap().contains("not in the grid"));
}

/// A trial whose heartbeat stops is failed by the next worker to ask, and with retries enqueued
/// again with its parameters; the stalled worker's late result is refused. (In memory there are
/// no heartbeats: a study dies with its process.)
pub fn stale_trials_fail_and_are_retried(make: &Make) {
    let storage = make();
    if !storage.supports_heartbeat() {
        return;
    }
    let name = unique("stale");
    let grace = Duration::from_millis(300);
    let open = || {
        Study::builder()
            .heartbeat_timeout(grace)
            .retry_failed_trials(1)
            .storage(storage.clone())
            .load_if_exists(&name)
            .unwrap()
    };
    let a = open();
    let study_id = storage.find_study(&name).unwrap().unwrap();
    // A worker that started a trial (with a heartbeat, as optimize does) and stalled.
    let mut template = FrozenTrial::new(TrialState::Running).with_param(
        "x",
        0.5,
        Distribution::Float { low: 0.0, high: 1.0, log: false, step: None },
    );
    let (stalled, number) = storage.create_trial(study_id, &mut template, true, None).unwrap().unwrap();
    assert_eq!(number, 0);
    std::thread::sleep(grace + Duration::from_millis(200));
    let b = open();
    b.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    let trials = a.trials();
    assert_eq!(trials[0].state, TrialState::Failed);
    assert!(trials[0].fail_reason.as_deref().unwrap().contains("heartbeat"), "{:?}", trials[0].fail_reason);
    assert_eq!(trials[1].retried_trial_number(), Some(0));
    assert_eq!(trials[1].state, TrialState::Complete, "the retry ran first, with the failed trial's parameters");
    assert_eq!(trials[1].params["x"], ParamValue::Float(0.5));
    assert!(matches!(
        storage.finish_trial(stalled, TrialState::Complete, &[1.0], None),
        Err(SearchError::TrialFinished { number: 0, state: TrialState::Failed })
    ));
    assert_eq!(a.trials()[0].state, TrialState::Failed);
    // A retry is retried at most `max_retry` times: the retry's own failure is not enqueued again.
    let (second, _) = {
        let mut copy = FrozenTrial::new(TrialState::Running);
        copy.system_attrs.insert("failed_trial".into(), json!(0));
        copy.system_attrs.insert("retry_history".into(), json!([0]));
        storage.create_trial(study_id, &mut copy, true, None).unwrap().unwrap()
    };
    std::thread::sleep(grace + Duration::from_millis(200));
    let before = a.trials().len();
    b.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    let trials = a.trials();
    assert_eq!(trials.len(), before + 1, "no second retry");
    let second = stored(&*storage, study_id).into_iter().find(|t| t.id == second).unwrap();
    assert_eq!(second.trial.state, TrialState::Failed);
    assert_eq!(trials[second.trial.number as usize].state, TrialState::Failed);
}
