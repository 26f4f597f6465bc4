//! Gaussian-process sampler quality on the benchmarks (medians over seeds 0..10 of the
//! best value found; Optuna's `GPSampler` reaches 0.0068 on the 10-D sphere and -3.32 on
//! Hartmann6 with the same budgets) and its handling of discrete and categorical parameters.

use ferrograd_tuning::search::{GpSampler, Sampler, SearchError, Study, Trial};

const NAMES: [&str; 10] = ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"];

fn hartmann6(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    let mut x = [0.0; 6];
    for (i, xi) in x.iter_mut().enumerate() {
        *xi = t.suggest_float(NAMES[i], 0.0, 1.0, false)?;
    }
    let mut f = 0.0;
    for i in 0..4 {
        let e: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
        f -= ALPHA[i] * (-e).exp();
    }
    Ok(f)
}

fn sphere10(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let mut s = 0.0;
    for name in NAMES {
        let x = t.suggest_float(name, -5.0, 5.0, false)?;
        s += x * x;
    }
    Ok(s)
}

fn median_best<S: Sampler + 'static>(
    sampler: impl Fn() -> S,
    n_trials: usize,
    f: fn(&mut Trial<'_>) -> Result<f64, SearchError>,
) -> f64 {
    let mut best: Vec<f64> = (0..10)
        .map(|seed| {
            let study = Study::builder().sampler(sampler()).seed(seed).build();
            study.optimize(n_trials, f).unwrap();
            study.best_value().expect("trials completed")
        })
        .collect();
    best.sort_by(f64::total_cmp);
    0.5 * (best[4] + best[5])
}

#[test]
fn sphere10_100_trials() {
    let m = median_best(GpSampler::new, 100, sphere10);
    eprintln!("GP sphere10 median best {m}");
    assert!(m <= 0.05, "median best {m}");
}

#[test]
fn hartmann6_100_trials() {
    let m = median_best(GpSampler::new, 100, hartmann6);
    eprintln!("GP Hartmann6 median best {m}");
    assert!(m <= -3.25, "median best {m}");
}

#[test]
fn integers_and_categories() {
    let study = Study::builder().sampler(GpSampler::new()).seed(4).build();
    let choices = ["a".to_string(), "b".to_string()];
    study
        .optimize(40, |t| {
            let n = t.suggest_int("n", 0, 30, 1, false)?;
            let lr = t.suggest_float("lr", 1e-5, 1.0, true)?;
            let c: String = t.suggest_categorical("c", &choices)?;
            Ok::<_, SearchError>(
                ((n - 11) as f64).powi(2) + (lr.log10() + 2.0).powi(2) + if c == "a" { 0.0 } else { 0.1 },
            )
        })
        .unwrap();
    let best = study.best_params().unwrap();
    assert_eq!(best["n"].as_i64(), Some(11), "{best:?}");
    assert!((best["lr"].as_f64().unwrap().log10() + 2.0).abs() < 0.3, "{best:?}");
    let trials = study.trials();
    assert!(trials.iter().all(|t| t.params["n"].as_i64().is_some()));
    for c in &choices {
        assert!(trials.iter().any(|t| t.params["c"].as_str() == Some(c)), "choice {c} never drawn");
    }
}

#[test]
fn a_noiseless_objective_can_say_so_and_bad_options_are_errors() {
    let study = Study::builder().sampler(GpSampler::new().deterministic_objective(true)).seed(0).build();
    study.optimize(25, |t| Ok::<_, SearchError>((t.suggest_float("x", -2.0, 2.0, false)? - 0.7).powi(2))).unwrap();
    assert!(study.best_value().unwrap() < 1e-3, "{:?}", study.best_value());
    assert!(matches!(GpSampler::new().n_preliminary_samples(0), Err(SearchError::InvalidOption(_))));
    assert!(matches!(GpSampler::new().n_local_search(0), Err(SearchError::InvalidOption(_))));
}
