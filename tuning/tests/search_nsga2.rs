//! NSGA-II on ZDT1 (10-D, 300 trials), hypervolume of the complete trials with reference point
//! (1.1, 11.0), median over seeds 0..9, against Optuna 5.1's NSGA-II at its defaults measured with
//! the same protocol by benches/compare/zdt1_optuna.py (figures in benches/compare/README.md).

use ferrograd_tuning::search::multi::hypervolume;
use ferrograd_tuning::search::{Crossover, Direction, Mutation, NsgaIISampler, SearchError, Study, TrialState};

/// Optuna 5.1 `NSGAIISampler(seed=s)`, seeds 0..9, median hypervolume.
const OPTUNA_NSGA2: f64 = 10.1014;

const DIM: usize = 10;

fn zdt1(t: &mut ferrograd_tuning::search::Trial<'_>) -> Result<[f64; 2], SearchError> {
    let x: Vec<f64> = (0..DIM).map(|i| t.suggest_float(&format!("x{i}"), 0.0, 1.0, false)).collect::<Result<_, _>>()?;
    let f1 = x[0];
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (DIM - 1) as f64;
    Ok([f1, g * (1.0 - (f1 / g).sqrt())])
}

fn hv_of(sampler: NsgaIISampler, seed: u64, trials: usize) -> f64 {
    let study =
        Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).sampler(sampler).seed(seed).build();
    study.optimize(trials, zdt1).unwrap();
    let points: Vec<Vec<f64>> =
        study.trials().into_iter().filter(|t| t.state == TrialState::Complete).map(|t| t.values).collect();
    hypervolume(&points, &[1.1, 11.0])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
}

#[test]
fn zdt1_hypervolume_at_least_optunas() {
    let hvs: Vec<f64> = (0..10).map(|s| hv_of(NsgaIISampler::new(), s, 300)).collect();
    let m = median(hvs.clone());
    eprintln!("NSGA-II ZDT1 hypervolumes {hvs:?} median {m:.4} (Optuna {OPTUNA_NSGA2})");
    assert!(m >= OPTUNA_NSGA2, "median hypervolume {m:.4} below Optuna's {OPTUNA_NSGA2}: {hvs:?}");
}

#[test]
fn other_operators_also_improve_on_random_search() {
    // Random search is NSGA-II before its first generation: a population larger than the budget.
    let random = median((0..4).map(|s| hv_of(NsgaIISampler::new().population_size(1000), s, 200)).collect());
    for sampler in [
        NsgaIISampler::new().population_size(20).crossover(Crossover::Sbx { eta: None }),
        NsgaIISampler::new().population_size(20).crossover(Crossover::Blx { alpha: 0.5 }),
        NsgaIISampler::new().population_size(20).mutation(Mutation::Polynomial { eta: 20.0 }),
    ] {
        let name = format!("{sampler:?}");
        let m = median((0..4).map(|s| hv_of(sampler.clone(), s, 200)).collect());
        assert!(m > random + 0.3, "{name}: {m:.4} vs random {random:.4}");
    }
}

#[test]
fn constraints_steer_the_population_into_the_feasible_region() {
    // Feasible only for x0 >= 0.7: after a few generations almost every child is feasible.
    let study = Study::builder()
        .directions(&[Direction::Minimize, Direction::Minimize])
        .sampler(NsgaIISampler::new().population_size(10).seed(4))
        .build();
    study
        .optimize(200, |t| {
            let v = zdt1(t)?;
            let x0 = t.params()["x0"].as_f64().unwrap();
            t.set_constraint("x0_at_least_0.7", 0.7 - x0)?;
            Ok::<_, SearchError>(v)
        })
        .unwrap();
    let trials = study.trials();
    let late_feasible = trials[150..].iter().filter(|t| t.is_feasible()).count();
    let early_feasible = trials[..10].iter().filter(|t| t.is_feasible()).count();
    assert!(late_feasible >= 40, "{late_feasible} of the last 50 feasible (first 10: {early_feasible})");
    assert!(study.best_trials().iter().all(|t| t.is_feasible()));
    // The same through constraints_func.
    let study = Study::builder()
        .directions(&[Direction::Minimize, Direction::Minimize])
        .sampler(
            NsgaIISampler::new()
                .population_size(10)
                .seed(4)
                .constraints_func(|t| vec![0.7 - t.params["x0"].as_f64().unwrap()]),
        )
        .build();
    study.optimize(200, zdt1).unwrap();
    let late = study.trials()[150..].iter().filter(|t| t.params["x0"].as_f64().unwrap() >= 0.7).count();
    assert!(late >= 40, "{late} of the last 50 feasible through constraints_func");
}

#[test]
fn sampler_seed_reproduces_across_study_seeds() {
    let run = |study_seed| {
        let study = Study::builder()
            .directions(&[Direction::Minimize, Direction::Minimize])
            .sampler(NsgaIISampler::new().population_size(8).seed(11))
            .seed(study_seed)
            .build();
        study.optimize(40, zdt1).unwrap();
        study.trials().into_iter().map(|t| t.values).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn mixed_spaces_stay_in_their_distributions() {
    let study = Study::builder()
        .directions(&[Direction::Minimize, Direction::Maximize])
        .sampler(NsgaIISampler::new().population_size(6).crossover(Crossover::Blx { alpha: 0.5 }))
        .build();
    study
        .optimize(60, |t| {
            let lr = t.suggest_float("lr", 1e-4, 1.0, true)?;
            let n = t.suggest_int("n", 1, 9, 2, false)?;
            let w = t.suggest_int("w", 1, 1000, 1, true)?;
            let q = t.suggest_float_step("q", 0.0, 1.0, 0.25)?;
            let act: &str = t.suggest_categorical("act", &["relu", "tanh", "gelu"])?;
            assert!(n % 2 == 1 && (1..=1000).contains(&w) && (q * 4.0).fract() == 0.0);
            Ok::<_, SearchError>([lr * n as f64 + q, w as f64 + act.len() as f64])
        })
        .unwrap();
    assert_eq!(study.trials().iter().filter(|t| t.state == TrialState::Complete).count(), 60);
}
