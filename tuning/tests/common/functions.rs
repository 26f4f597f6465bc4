//! Benchmark objectives of the sampler quality tests (the Hartmann6 and 10-D sphere, same
//! ranges as `search_tpe.rs`) and the median-of-ten-seeds protocol.

use ferrograd_tuning::search::{Sampler, SearchError, Study, Trial};

pub const NAMES: [&str; 10] = ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"];

pub fn hartmann6(t: &mut Trial<'_>) -> Result<f64, SearchError> {
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

pub fn sphere10(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let mut s = 0.0;
    for name in NAMES {
        let x = t.suggest_float(name, -5.0, 5.0, false)?;
        s += x * x;
    }
    Ok(s)
}

pub fn median_best<S: Sampler + 'static>(
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
