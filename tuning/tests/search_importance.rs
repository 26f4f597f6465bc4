//! PED-ANOVA importances: on a function where `x` dominates, `y` matters a little and `z` (asked
//! for, never used) does nothing, the ranking is x > y > z in every seed 0..9, with random and
//! with TPE sampling, for float, log-int and categorical parameters.

use ferrograd_tuning::search::importance::{get_param_importances, param_importances, PedAnovaImportanceEvaluator};
use ferrograd_tuning::search::{Direction, RandomSampler, SearchError, Study, TpeSampler, Trial};

fn objective(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let x = t.suggest_float("x", -1.0, 1.0, false)?;
    let y = t.suggest_int("y", 1, 100, 1, true)?;
    let _z: &str = t.suggest_categorical("z", &["a", "b", "c", "d"])?;
    Ok(10.0 * (x - 0.3).powi(2) + 0.2 * (y as f64).ln())
}

fn ranking(study: &Study) -> Vec<String> {
    param_importances(study).unwrap().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn dominant_weak_and_idle_parameters_ranked_in_every_seed() {
    for seed in 0..10 {
        let study = Study::builder().sampler(RandomSampler::new()).seed(seed).build();
        study.optimize(200, objective).unwrap();
        assert_eq!(ranking(&study), ["x", "y", "z"], "random sampling, seed {seed}: {:?}", param_importances(&study));
        let imp = param_importances(&study).unwrap();
        assert!((imp.iter().map(|(_, v)| v).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(imp[0].1 > 0.5, "seed {seed}: {imp:?}");
    }
    for seed in 0..10 {
        let study = Study::builder().sampler(TpeSampler::new()).seed(seed).build();
        study.optimize(100, objective).unwrap();
        assert_eq!(ranking(&study)[0], "x", "TPE, seed {seed}: {:?}", param_importances(&study));
    }
}

#[test]
fn maximising_and_target_and_global_space() {
    // Maximising the negated function is the same question.
    let study = Study::builder().direction(Direction::Maximize).seed(3).build();
    study.optimize(200, |t| objective(t).map(|v| -v)).unwrap();
    assert_eq!(ranking(&study), ["x", "y", "z"]);
    // A target that only `y` decides.
    let only_y = |t: &ferrograd_tuning::search::FrozenTrial| t.params["y"].as_f64().unwrap();
    let imp = get_param_importances(&study, &PedAnovaImportanceEvaluator::new(), None, Some(&only_y), true).unwrap();
    assert_eq!(imp[0].0, "y", "{imp:?}");
    // Against the whole space instead of the trials, and for named parameters only, unnormalised.
    let global = PedAnovaImportanceEvaluator::new().evaluate_on_local(false).target_quantile(0.2);
    let imp = get_param_importances(&study, &global, Some(&["z", "x"]), None, false).unwrap();
    assert_eq!(imp.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["x", "z"]);
    assert!(imp[1].1 < imp[0].1 / 10.0, "{imp:?}");
    assert!(get_param_importances(&study, &global, Some(&["nope"]), None, true).is_err());
}

#[test]
fn multi_objective_importance_of_reaching_the_front() {
    // Both objectives depend on `x` only through a trade-off; `z` does nothing; `y` shifts both.
    let study = Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).seed(5).build();
    study
        .optimize(200, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            let y = t.suggest_float("y", 0.0, 1.0, false)?;
            let _z = t.suggest_float("z", 0.0, 1.0, false)?;
            Ok::<_, SearchError>([x + 3.0 * y, 1.0 - x + 3.0 * y])
        })
        .unwrap();
    let imp = param_importances(&study).unwrap();
    assert_eq!(imp[0].0, "y", "{imp:?}");
    assert_eq!(imp[2].0, "z", "{imp:?}");
}
