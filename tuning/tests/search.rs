//! Study, trials, samplers, pruners and parallel runs of the search module.

use std::collections::BTreeSet;

use ferrograd_tuning::search::{
    Catch, Direction, GridSampler, MedianPruner, OptimizeOptions, ParamValue, PercentilePruner, RandomSampler,
    SearchError, Study, SuccessiveHalvingPruner, TpeSampler, TrialState,
};

fn check_spaces(study: Study) {
    study
        .optimize(200, |t| {
            let x = t.suggest_float("x", -2.0, 3.0, false)?;
            let lr = t.suggest_float("lr", 1e-5, 1e-1, true)?;
            let q = t.suggest_float_step("q", 0.1, 0.7, 0.1)?;
            let n = t.suggest_int("n", 2, 10, 2, false)?;
            let w = t.suggest_int("w", 1, 1024, 1, true)?;
            let c: i32 = t.suggest_categorical("c", &[3, 5, 7])?;
            assert!((-2.0..=3.0).contains(&x) && (1e-5..=1e-1).contains(&lr));
            assert!(((q - 0.1) / 0.1 - ((q - 0.1) / 0.1).round()).abs() < 1e-9 && (0.1..=0.7 + 1e-12).contains(&q));
            assert!(n % 2 == 0 && (2..=10).contains(&n) && (1..=1024).contains(&w) && [3, 5, 7].contains(&c));
            // Asking again returns the same value.
            assert_eq!(t.suggest_float("x", -2.0, 3.0, false)?, x);
            Ok::<_, SearchError>(x.abs() + lr.ln().abs() + q + n as f64 + (w as f64).ln() + c as f64)
        })
        .unwrap();
    assert!(study.trials().iter().all(|t| t.state == TrialState::Complete && t.params.len() == 6));
}

#[test]
fn suggestions_stay_in_their_spaces() {
    check_spaces(Study::builder().seed(5).build());
    check_spaces(Study::builder().sampler(TpeSampler::new()).seed(5).build());
    check_spaces(Study::builder().sampler(TpeSampler::tuned().constant_liar(true)).seed(5).build());
}

#[test]
fn conditional_spaces_record_only_asked_parameters() {
    let study = Study::builder().sampler(TpeSampler::new().n_startup_trials(4).multivariate(true)).seed(2).build();
    study
        .optimize(40, |t| {
            let model: &str = t.suggest_categorical("model", &["linear", "mlp"])?;
            Ok::<_, SearchError>(if model == "mlp" {
                let h = t.suggest_int("hidden", 8, 64, 8, false)?;
                h as f64 / 64.0
            } else {
                t.suggest_float("l2", 1e-4, 1.0, true)?
            })
        })
        .unwrap();
    for t in study.trials() {
        assert_eq!(t.state, TrialState::Complete);
        match &t.params["model"] {
            ParamValue::Categorical(m) if m == "mlp" => {
                assert!(t.params.contains_key("hidden") && !t.params.contains_key("l2"))
            }
            _ => assert!(t.params.contains_key("l2") && !t.params.contains_key("hidden")),
        }
    }
}

#[test]
fn bad_spaces_fail_the_trial_with_a_typed_error_and_write_nothing() {
    let study = Study::builder().build();
    let mut errors = Vec::new();
    study
        .optimize(1, |t| {
            errors.push(t.suggest_float("a", 2.0, 1.0, false).unwrap_err());
            errors.push(t.suggest_float("b", 0.0, 1.0, true).unwrap_err());
            errors.push(t.suggest_float_step("c", 0.0, 1.0, 0.3).unwrap_err());
            errors.push(t.suggest_int("d", 0, 10, 3, false).unwrap_err());
            errors.push(t.suggest_int("e", 0, 10, 1, true).unwrap_err());
            errors.push(t.suggest_int("f", 1, 10, 0, false).unwrap_err());
            errors.push(t.suggest_categorical::<&str>("g", &[]).unwrap_err());
            errors.push(t.suggest_float("h", f64::NAN, 1.0, false).unwrap_err());
            t.suggest_float("x", 0.0, 1.0, false)?;
            errors.push(t.suggest_float("x", 0.0, 2.0, false).unwrap_err());
            errors.push(t.suggest_int("x", 0, 1, 1, false).unwrap_err());
            Ok::<_, SearchError>(0.0)
        })
        .unwrap();
    assert!(matches!(errors[0], SearchError::EmptyRange { .. }));
    assert!(matches!(errors[1], SearchError::LogNonPositive { .. }));
    assert!(matches!(errors[2], SearchError::StepDoesNotDivide { .. }));
    assert!(matches!(errors[3], SearchError::StepDoesNotDivide { .. }));
    assert!(matches!(errors[4], SearchError::LogNonPositive { .. }));
    assert!(matches!(errors[5], SearchError::InvalidStep { .. }));
    assert!(matches!(errors[6], SearchError::EmptyChoices { .. }));
    assert!(matches!(errors[7], SearchError::NonFiniteBound { .. }));
    assert!(matches!(errors[8], SearchError::DistributionMismatch { .. }));
    assert!(matches!(errors[9], SearchError::DistributionMismatch { .. }));
    let t = study.trial(0);
    assert_eq!(t.params.keys().collect::<Vec<_>>(), ["x"]);
    assert!(errors[2].to_string().contains("`c`"));

    // Across trials: the same name as another kind fails the later trial and stops the study
    // with the error (it would fail every trial); `Catch::All` goes on instead.
    let err = study
        .optimize(2, |t| {
            if t.number() == 1 {
                t.suggest_categorical("x", &["a", "b"])?;
            }
            Ok::<_, SearchError>(1.0)
        })
        .unwrap_err();
    assert!(matches!(err, SearchError::DistributionMismatch { .. }), "{err}");
    let trials = study.trials();
    assert_eq!(trials.len(), 2);
    assert_eq!(trials[1].state, TrialState::Failed);
    assert!(trials[1].fail_reason.as_deref().unwrap().contains("parameter `x` was asked as float"));
    assert!(trials[1].params.is_empty());
    study
        .optimize_with(OptimizeOptions::new().n_trials(2).catch(Catch::All), |t| {
            if t.number() == 2 {
                t.suggest_categorical("x", &["a", "b"])?;
            }
            Ok::<_, SearchError>(1.0)
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!((trials[2].state, trials[3].state), (TrialState::Failed, TrialState::Complete));
}

#[test]
fn errors_and_nan_fail_the_trial_and_the_study_goes_on() {
    let study = Study::builder().direction(Direction::Maximize).seed(1).build();
    study
        .optimize(9, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            match t.number() % 3 {
                0 => Err("diverged".into()),
                1 => Ok(f64::NAN),
                _ => Ok::<f64, Box<dyn std::error::Error + Send + Sync>>(x),
            }
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), 9);
    for t in &trials {
        let expect = if t.number % 3 == 2 { TrialState::Complete } else { TrialState::Failed };
        assert_eq!(t.state, expect);
    }
    assert_eq!(trials[0].fail_reason.as_deref(), Some("diverged"));
    let best = study.best_trial().unwrap();
    let max = trials.iter().filter_map(|t| t.value).fold(f64::MIN, f64::max);
    assert_eq!(best.value, Some(max));
}

#[test]
fn random_search_is_reproducible_per_seed() {
    let run = |seed| {
        let study = Study::builder().sampler(RandomSampler::new()).seed(seed).build();
        study.optimize(5, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
        study.trials().into_iter().map(|t| t.value.unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
    // Parallel runs give each trial number the same draws.
    let study = Study::builder().seed(3).build();
    study.optimize_parallel(5, 3, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    let par = study.trials().into_iter().map(|t| t.value.unwrap()).collect::<Vec<_>>();
    assert_eq!(par, run(3));
}

#[test]
fn results_table_csv_and_history() {
    let study = Study::builder().seed(9).build();
    study
        .optimize(6, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            if t.number() == 2 {
                t.suggest_categorical("opt", &["a,b", "c"])?;
            }
            Ok::<_, SearchError>(x)
        })
        .unwrap();
    let csv = study.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "number,state,value,duration_s,params_opt,params_x,datetime_start,datetime_complete,fail_reason,intermediate_values"
    );
    assert_eq!(lines.len(), 7);
    assert!(lines[1].starts_with("0,COMPLETE,") && lines[1].contains(",,"));
    let history = study.best_value_history();
    let values: Vec<f64> = study.trials().iter().map(|t| t.value.unwrap()).collect();
    for (i, h) in history.iter().enumerate() {
        assert_eq!(h.unwrap(), values[..=i].iter().copied().fold(f64::INFINITY, f64::min));
    }
    assert_eq!(study.best_value(), history[5]);
    let path = std::env::temp_dir().join(format!("ferrograd_search_{}.csv", std::process::id()));
    study.write_csv(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), csv);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn grid_covers_every_point_once_even_in_parallel() {
    let grid = || GridSampler::new().int("a", &[1, 2, 3]).categorical("b", &["x", "y"]).float("c", &[0.5, 1.5]);
    let study = Study::builder().sampler(grid()).seed(4).build();
    study
        .optimize_parallel(100, 4, |t| {
            let a = t.suggest_int("a", 1, 3, 1, false)?;
            let b: &str = t.suggest_categorical("b", &["x", "y"])?;
            let c = t.suggest_float("c", 0.0, 2.0, false)?;
            Ok::<_, SearchError>(a as f64 + c + b.len() as f64)
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), 12);
    let points: BTreeSet<String> = trials.iter().map(|t| format!("{:?}", t.params)).collect();
    assert_eq!(points.len(), 12);
    assert!(trials.iter().all(|t| t.state == TrialState::Complete));

    // A parameter the grid does not declare fails the trial and stops the study.
    let study = Study::builder().sampler(grid()).build();
    let err = study.optimize(1, |t| t.suggest_float("z", 0.0, 1.0, false)).unwrap_err();
    assert!(matches!(err, SearchError::NotInGrid { .. }));
    assert!(study.trial(0).fail_reason.unwrap().contains("not in the grid"));
}

#[test]
fn parallel_trials_have_unique_numbers() {
    let study = Study::builder().sampler(TpeSampler::new().constant_liar(true).multivariate(true)).seed(8).build();
    study
        .optimize_parallel(60, 4, |t| {
            let x = t.suggest_float("x", -3.0, 3.0, false)?;
            let y = t.suggest_float("y", -3.0, 3.0, false)?;
            Ok::<_, SearchError>(x * x + y * y)
        })
        .unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), 60);
    let numbers: BTreeSet<u64> = trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..60).collect());
    assert!(trials.iter().all(|t| t.state == TrialState::Complete));
    assert!(study.best_value().unwrap() < 1.0);
}

/// A loss curve `q + 1 / step`, falling with the steps: trials with a large `q` should be pruned.
fn curve_study(pruner: impl ferrograd_tuning::search::Pruner + 'static) -> Study {
    let study = Study::builder().pruner(pruner).seed(11).build();
    study
        .optimize(40, |t| {
            let q = t.suggest_float("q", 0.0, 1.0, false)?;
            let mut v = 0.0;
            for step in 1..=9 {
                v = q + 1.0 / step as f64;
                t.report(step, v);
                if t.should_prune() {
                    return Err(t.pruned());
                }
            }
            Ok(v)
        })
        .unwrap();
    study
}

#[test]
fn median_pruner_stops_worse_than_median() {
    let study = curve_study(MedianPruner::new(5, 2));
    let trials = study.trials();
    assert!(trials[..5].iter().all(|t| t.state == TrialState::Complete));
    let pruned: Vec<_> = trials.iter().filter(|t| t.state == TrialState::Pruned).collect();
    assert!(pruned.len() >= 10, "{}", pruned.len());
    for t in &pruned {
        // Never before the warm-up step, and the pruned value is above the median at that step.
        let (step, v) = t.last_intermediate().unwrap();
        assert!(step >= 2);
        let mut at: Vec<f64> = trials[..t.number as usize]
            .iter()
            .filter(|o| o.state == TrialState::Complete)
            .map(|o| o.intermediate[&step])
            .collect();
        at.sort_by(f64::total_cmp);
        let n = at.len();
        let median = if n % 2 == 1 { at[n / 2] } else { 0.5 * (at[n / 2 - 1] + at[n / 2]) };
        assert!(v > median);
        assert_eq!(t.value, None);
    }
}

#[test]
fn percentile_pruner_and_bad_percentile() {
    assert!(matches!(PercentilePruner::new(120.0, 0, 0), Err(SearchError::InvalidOption(_))));
    let strict = curve_study(PercentilePruner::new(10.0, 3, 0).unwrap());
    let loose = curve_study(PercentilePruner::new(90.0, 3, 0).unwrap());
    let count = |s: &Study| s.trials().iter().filter(|t| t.state == TrialState::Pruned).count();
    assert!(count(&strict) > count(&loose), "{} vs {}", count(&strict), count(&loose));
}

#[test]
fn successive_halving_prunes_at_rungs() {
    assert!(SuccessiveHalvingPruner::new(0, 3).is_err());
    let study = curve_study(SuccessiveHalvingPruner::new(1, 3).unwrap());
    let trials = study.trials();
    let pruned: Vec<_> = trials.iter().filter(|t| t.state == TrialState::Pruned).collect();
    assert!(!pruned.is_empty());
    // Pruning happens at a reported step: rung 1, 3 or 9 and the steps after them.
    assert!(pruned.iter().all(|t| t.last_intermediate().unwrap().0 >= 1));
    assert_eq!(trials[0].state, TrialState::Complete);
}

#[test]
fn maximize_with_tpe_beats_random_start() {
    let study = Study::builder().direction(Direction::Maximize).sampler(TpeSampler::new()).seed(0).build();
    study
        .optimize(60, |t| {
            let x = t.suggest_float("x", 0.0, 10.0, false)?;
            let k: &str = t.suggest_categorical("k", &["good", "bad", "worse"])?;
            Ok::<_, SearchError>(-(x - 7.0).powi(2) + if k == "good" { 5.0 } else { 0.0 })
        })
        .unwrap();
    let best = study.best_trial().unwrap();
    assert_eq!(best.params["k"], ParamValue::Categorical("good".into()));
    assert!(best.value.unwrap() > 4.5);
    let late_good =
        study.trials()[30..].iter().filter(|t| t.params["k"] == ParamValue::Categorical("good".into())).count();
    assert!(late_good > 20, "{late_good}");
}

/// Issue 18 item 10: ranges whose width overflows `i64` or `f64` are sampled (uniformly, and by
/// TPE) inside their bounds instead of panicking inside `rand`.
#[test]
fn extreme_ranges_do_not_overflow() {
    for sampler in [None, Some(TpeSampler::new().n_startup_trials(3))] {
        let builder = Study::builder().seed(4);
        let study = match sampler {
            Some(s) => builder.sampler(s).build(),
            None => builder.build(),
        };
        study
            .optimize(8, |t| {
                let a = t.suggest_int("a", i64::MIN, i64::MAX, 1, false)?;
                let b = t.suggest_int("b", -5_000_000_000_000_000_000, 5_000_000_000_000_000_000, 1, false)?;
                let c = t.suggest_float("c", -1e308, 1e308, false)?;
                let d = t.suggest_float_step("d", -1e308, 1e308, 1e307)?;
                let e = t.suggest_int("e", 1, i64::MAX, 1, true)?;
                assert!((-5_000_000_000_000_000_000..=5_000_000_000_000_000_000).contains(&b));
                assert!(c.is_finite() && (-1e308..=1e308).contains(&d) && e >= 1);
                Ok::<_, SearchError>((a as f64 / 1e19).abs() + (c / 1e308).abs())
            })
            .unwrap();
        let trials = study.trials();
        assert!(trials.iter().all(|t| t.state == TrialState::Complete));
        let a: BTreeSet<i64> = trials.iter().map(|t| t.params["a"].as_i64().unwrap()).collect();
        assert!(a.len() > 4 && a.iter().any(|v| *v < 0) && a.iter().any(|v| *v > 0), "{a:?}");
    }
}
