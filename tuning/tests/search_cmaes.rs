//! CMA-ES quality on the benchmarks (medians over seeds 0..10 of the best value found)
//! and its behaviour on integer, log and categorical parameters. Optuna's `CmaEsSampler` reaches
//! 2.55 on the 10-D sphere and -3.08 on Hartmann6 with the same budgets.

use ferrograd_tuning::search::{CmaEsSampler, RestartStrategy, SearchError, Study, TpeSampler, Trial};

use crate::common;

use common::functions::{hartmann6, median_best, sphere10};

#[test]
fn sphere10_100_trials() {
    let m = median_best(CmaEsSampler::new, 100, sphere10);
    eprintln!("CMA-ES sphere10 median best {m}");
    assert!(m <= 2.5, "median best {m}");
}

#[test]
fn hartmann6_100_trials_not_worse_than_tpe() {
    let cma = median_best(CmaEsSampler::new, 100, hartmann6);
    let tpe = median_best(TpeSampler::new, 100, hartmann6);
    eprintln!("Hartmann6 median best: CMA-ES {cma}, TPE {tpe}");
    assert!(cma <= tpe + 0.2, "CMA-ES median best {cma}, TPE {tpe}");
}

#[test]
fn integer_and_log_parameters_are_searched_on_their_scale() {
    let study = Study::builder().sampler(CmaEsSampler::new()).seed(3).build();
    study
        .optimize(120, |t| {
            let lr = t.suggest_float("lr", 1e-6, 1.0, true)?;
            let n = t.suggest_int("n", 0, 20, 1, false)?;
            let w = t.suggest_int("w", 1, 1024, 1, true)?;
            Ok::<_, SearchError>(
                (lr.log10() + 3.0).powi(2) + ((n - 7) as f64).powi(2) + ((w as f64).log2() - 5.0).powi(2),
            )
        })
        .unwrap();
    let best = study.best_params().unwrap();
    assert_eq!(best["n"].as_i64(), Some(7), "{best:?}");
    assert!((best["lr"].as_f64().unwrap().log10() + 3.0).abs() < 0.5, "{best:?}");
    assert!((best["w"].as_f64().unwrap().log2() - 5.0).abs() <= 1.0, "{best:?}");
}

#[test]
fn categorical_parameters_fall_back_to_the_independent_sampler() {
    let study = Study::builder().sampler(CmaEsSampler::new()).seed(0).build();
    let choices = ["a".to_string(), "b".to_string(), "c".to_string()];
    study
        .optimize(60, |t| {
            let x = t.suggest_float("x", -3.0, 3.0, false)?;
            let c: String = t.suggest_categorical("c", &choices)?;
            Ok::<_, SearchError>(x * x + if c == "b" { 0.0 } else { 1.0 })
        })
        .unwrap();
    let trials = study.trials();
    for c in &choices {
        assert!(trials.iter().any(|t| t.params["c"].as_str() == Some(c)), "choice {c} never drawn");
    }
    assert!(study.best_params().unwrap()["x"].as_f64().unwrap().abs() < 0.5);
}

/// A function that is flat in a cell around its optimum: the strategy converges, its losses stop
/// changing, and a restarting strategy starts again.
fn plateau(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let a = t.suggest_int("a", 0, 3, 1, false)?;
    let b = t.suggest_int("b", 0, 3, 1, false)?;
    Ok(((a - 1).pow(2) + (b - 2).pow(2)) as f64)
}

#[test]
fn converged_strategies_restart() {
    for (strategy, restarts) in
        [(RestartStrategy::Ipop, true), (RestartStrategy::Bipop, true), (RestartStrategy::None, false)]
    {
        let cma = CmaEsSampler::new().restart_strategy(strategy).with_margin(false);
        let study = Study::builder().sampler(cma.clone()).seed(1).build();
        study.optimize(400, plateau).unwrap();
        assert_eq!(cma.n_restarts() > 0, restarts, "{strategy:?}: {} restarts", cma.n_restarts());
        assert_eq!(study.best_value(), Some(0.0));
    }
}

#[test]
fn bad_options_are_errors() {
    assert!(matches!(CmaEsSampler::new().sigma0(0.0), Err(SearchError::InvalidOption(_))));
    assert!(matches!(CmaEsSampler::new().sigma0(f64::NAN), Err(SearchError::InvalidOption(_))));
    assert!(matches!(CmaEsSampler::new().popsize(1), Err(SearchError::InvalidOption(_))));
    assert!(matches!(CmaEsSampler::new().inc_popsize(1), Err(SearchError::InvalidOption(_))));
    assert!(matches!(CmaEsSampler::new().x0(&[("x", f64::INFINITY)]), Err(SearchError::InvalidOption(_))));
    // x0 outside the range: the first trial the strategy proposes for fails with the error.
    let study = Study::builder().sampler(CmaEsSampler::new().x0(&[("x", 9.0)]).unwrap()).build();
    let f = |t: &mut Trial<'_>| t.suggest_float("x", 0.0, 1.0, false);
    study.optimize(1, f).unwrap();
    assert!(matches!(study.ask(), Err(SearchError::InvalidOption(m)) if m.contains("x0")));
}

#[test]
fn x0_sets_the_first_mean() {
    let cma = CmaEsSampler::new().x0(&[("x", 8.0)]).unwrap().sigma0(0.01).unwrap();
    let study = Study::builder().sampler(cma).seed(2).build();
    study.optimize(12, |t| t.suggest_float("x", 0.0, 10.0, false)).unwrap();
    let later = &study.trials()[1..];
    assert!(later.iter().all(|t| (t.params["x"].as_f64().unwrap() - 8.0).abs() < 0.6), "{later:?}");
}

#[test]
fn one_dimension_constant_values_and_failed_trials() {
    // A constant objective: the strategy converges without dividing by zero and keeps proposing.
    let study = Study::builder().sampler(CmaEsSampler::new()).seed(5).build();
    study.optimize(80, |t| t.suggest_float("x", -1.0, 1.0, false).map(|_| 3.0)).unwrap();
    assert!(study.trials().iter().all(|t| t.params["x"].as_f64().unwrap().abs() <= 1.0));
    // Every third trial fails: generations fill from the complete ones and the search goes on.
    let study = Study::builder().sampler(CmaEsSampler::new()).seed(6).build();
    study
        .optimize(90, |t| {
            let x = t.suggest_float("x", -4.0, 4.0, false)?;
            if t.number() % 3 == 2 {
                return Ok(f64::NAN);
            }
            Ok::<_, SearchError>((x - 1.5).powi(2))
        })
        .unwrap();
    assert!(study.best_value().unwrap() < 1e-3, "{:?}", study.best_value());
}

#[test]
fn a_seeded_study_replays() {
    let run = |seed| {
        let study = Study::builder().sampler(CmaEsSampler::new()).seed(seed).build();
        study.optimize(40, sphere10).unwrap();
        study.trials().into_iter().map(|t| t.params).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}
