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

/// The cases of fixtures/ped_anova_optuna.json (written by gen_ped_anova.py with Optuna 5.1):
/// the same trials added here, the importances (unnormalised) compared with Optuna's.
#[test]
fn ped_anova_matches_optuna() {
    use ferrograd_tuning::search::{Distribution, FrozenTrial, ParamValue, TrialState};
    use serde_json::Value;
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ped_anova_optuna.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let direction = if case["direction"] == "maximize" { Direction::Maximize } else { Direction::Minimize };
        let dists: Vec<Distribution> = case["distributions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| match d["kind"].as_str().unwrap() {
                "float" => Distribution::Float {
                    low: d["low"].as_f64().unwrap(),
                    high: d["high"].as_f64().unwrap(),
                    log: d["log"].as_bool().unwrap(),
                    step: d["step"].as_f64(),
                },
                "int" => Distribution::Int {
                    low: d["low"].as_i64().unwrap(),
                    high: d["high"].as_i64().unwrap(),
                    step: d["step"].as_i64().unwrap(),
                    log: d["log"].as_bool().unwrap(),
                },
                _ => Distribution::Categorical {
                    choices: d["choices"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect(),
                },
            })
            .collect();
        let study = Study::builder().direction(direction).build();
        for t in case["trials"].as_array().unwrap() {
            let mut trial = FrozenTrial::new(TrialState::Complete).with_values(&[t["value"].as_f64().unwrap()]);
            for (k, v) in t["params"].as_object().unwrap() {
                let d = dists[t["dists"][k].as_u64().unwrap() as usize].clone();
                let value = match (&d, v) {
                    (Distribution::Int { .. }, v) => ParamValue::Int(v.as_i64().unwrap()),
                    (Distribution::Float { .. }, v) => ParamValue::Float(v.as_f64().unwrap()),
                    (_, v) => ParamValue::Categorical(v.as_str().unwrap().to_string()),
                };
                trial = trial.with_param(k, value, d);
            }
            study.add_trial(trial).unwrap();
        }
        let s = &case["settings"];
        let mut evaluator = PedAnovaImportanceEvaluator::new();
        if let Some(q) = s["target_quantile"].as_f64() {
            evaluator = evaluator.target_quantile(q);
        }
        if let Some(q) = s["region_quantile"].as_f64() {
            evaluator = evaluator.region_quantile(q);
        }
        if let Some(local) = s["evaluate_on_local"].as_bool() {
            evaluator = evaluator.evaluate_on_local(local);
        }
        let ours = get_param_importances(&study, &evaluator, None, None, false).unwrap();
        let want = case["importances"].as_object().unwrap();
        assert_eq!(ours.len(), want.len(), "{name}");
        for (param, value) in &ours {
            let w = want[param].as_f64().unwrap();
            assert!((value - w).abs() <= 1e-5 * w.abs() + 1e-12, "{name}: {param} {value} vs Optuna {w}");
        }
    }
}
