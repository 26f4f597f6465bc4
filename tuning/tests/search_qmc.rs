//! The Sobol sampler: stratification (every coordinate and the first two-dimensional projection
//! are (0, m)-nets), a lower discrepancy than random points, exact coverage of discrete spaces by
//! a study, reproducibility, and its use as a model-based sampler's initial design.

use ferrograd_tuning::search::{CmaEsSampler, GpSampler, QmcSampler, RandomSampler, SearchError, Study, Trial};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn points(q: &QmcSampler, n: u64, d: usize) -> Vec<Vec<f64>> {
    (0..n).map(|i| q.point(i, d).unwrap()).collect()
}

/// Warnock's formula for the L2-star discrepancy.
fn l2_star(x: &[Vec<f64>]) -> f64 {
    let (n, d) = (x.len() as f64, x[0].len() as i32);
    let a = 3f64.powi(-d);
    let b: f64 = x.iter().map(|p| p.iter().map(|v| 1.0 - v * v).product::<f64>()).sum::<f64>() * 2f64.powi(1 - d) / n;
    let mut c = 0.0;
    for p in x {
        for q in x {
            c += p.iter().zip(q).map(|(u, v)| 1.0 - u.max(*v)).product::<f64>();
        }
    }
    (a - b + c / (n * n)).sqrt()
}

#[test]
fn every_coordinate_and_the_first_plane_are_stratified() {
    for q in [QmcSampler::new().scramble(false), QmcSampler::new(), QmcSampler::new().seed(9)] {
        let m = 7;
        let n = 1u64 << m;
        let x = points(&q, n, 12);
        for d in 0..12 {
            let mut cells: Vec<usize> = x.iter().map(|p| (p[d] * n as f64) as usize).collect();
            cells.sort_unstable();
            cells.dedup();
            assert_eq!(cells.len(), n as usize, "dimension {d}: {q:?}");
        }
        // Dimensions 0 and 1: every 2^-a by 2^-(m-a) box holds one point.
        for a in 0..=m {
            let mut boxes: Vec<(usize, usize)> = x
                .iter()
                .map(|p| ((p[0] * (1u64 << a) as f64) as usize, (p[1] * (1u64 << (m - a)) as f64) as usize))
                .collect();
            boxes.sort_unstable();
            boxes.dedup();
            assert_eq!(boxes.len(), n as usize, "boxes 2^-{a} x 2^-{}", m - a);
        }
    }
}

#[test]
fn discrepancy_is_far_below_random_points() {
    let (n, d) = (256, 4);
    let mut random: Vec<f64> = (0..10u64)
        .map(|seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            l2_star(&(0..n).map(|_| (0..d).map(|_| rng.random::<f64>()).collect()).collect::<Vec<_>>())
        })
        .collect();
    random.sort_by(f64::total_cmp);
    for q in [QmcSampler::new().scramble(false), QmcSampler::new(), QmcSampler::new().seed(3)] {
        let s = l2_star(&points(&q, n as u64, d));
        eprintln!("L2-star discrepancy of 256 points in 4-D: Sobol {s:.5}, random {:.5} (median of 10)", random[5]);
        assert!(s < random[0] && s < 0.5 * random[5], "Sobol {s}, random {random:?}");
    }
}

#[test]
fn seeds_reproduce_and_differ() {
    assert_eq!(points(&QmcSampler::new().seed(5), 8, 3), points(&QmcSampler::new().seed(5), 8, 3));
    assert_ne!(points(&QmcSampler::new().seed(5), 8, 3), points(&QmcSampler::new().seed(6), 8, 3));
    assert!(QmcSampler::new().point(0, 2000).is_err());
}

#[test]
fn a_study_covers_discrete_spaces_exactly_and_ranges_evenly() {
    let study = Study::builder().sampler(QmcSampler::new().seed(1)).build();
    let choices = ["a".to_string(), "b".to_string(), "c".to_string(), "d".to_string()];
    study
        .optimize(64, |t| {
            let x = t.suggest_float("x", -2.0, 2.0, false)?;
            let lr = t.suggest_float("lr", 1e-4, 1.0, true)?;
            let n = t.suggest_int("n", 0, 7, 1, false)?;
            let c: String = t.suggest_categorical("c", &choices)?;
            Ok::<_, SearchError>(x + lr + n as f64 + c.len() as f64)
        })
        .unwrap();
    let trials = study.trials();
    for v in 0..8 {
        assert_eq!(trials.iter().filter(|t| t.params["n"].as_i64() == Some(v)).count(), 8, "n = {v}");
    }
    for c in &choices {
        assert_eq!(trials.iter().filter(|t| t.params["c"].as_str() == Some(c)).count(), 16, "c = {c}");
    }
    // Each of 16 equal slices of the log range holds 4 trials.
    let mut slices = [0; 16];
    for t in &trials {
        let lr = t.params["lr"].as_f64().unwrap();
        assert!((1e-4..=1.0).contains(&lr));
        slices[(((lr.log10() + 4.0) / 4.0 * 16.0) as usize).min(15)] += 1;
    }
    assert_eq!(slices, [4; 16]);
}

fn xy(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let x = t.suggest_float("x", -3.0, 3.0, false)?;
    let y = t.suggest_float("y", -3.0, 3.0, false)?;
    Ok(x * x + y * y)
}

#[test]
fn initial_design_of_gp_and_cma_es() {
    let design = Study::builder().sampler(QmcSampler::new()).build();
    design.optimize(8, xy).unwrap();
    let want: Vec<_> = design.trials().iter().map(|t| t.params.clone()).collect();
    let gp =
        Study::builder().sampler(GpSampler::new().n_startup_trials(8).independent_sampler(QmcSampler::new())).build();
    gp.optimize(12, xy).unwrap();
    let cma = CmaEsSampler::new().n_startup_trials(8).independent_sampler(QmcSampler::new());
    let cma = Study::builder().sampler(cma).build();
    cma.optimize(12, xy).unwrap();
    for study in [&gp, &cma] {
        let got: Vec<_> = study.trials()[..8].iter().map(|t| t.params.clone()).collect();
        assert_eq!(got, want);
    }
    // The random design differs.
    let random = Study::builder().sampler(RandomSampler::new()).build();
    random.optimize(8, xy).unwrap();
    assert_ne!(random.trials()[0].params, want[0]);
}
