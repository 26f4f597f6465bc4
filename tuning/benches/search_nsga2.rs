//! NSGA-II time per trial at 10000 trials (ZDT1, 10 parameters, in memory): the whole study's
//! time per trial next to the random sampler's (the difference is NSGA-II's own), and the
//! sampler's `sample_relative` alone on the finished study. Run with
//! `cargo bench -p ferrograd-tuning --bench search_nsga2`.

use std::time::Instant;

use ferrograd_tuning::search::{
    Direction, NsgaIISampler, RandomSampler, SampleContext, Sampler, SearchError, Study, Trial,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn zdt1(t: &mut Trial<'_>) -> Result<[f64; 2], SearchError> {
    let x: Vec<f64> = (0..10).map(|i| t.suggest_float(&format!("x{i}"), 0.0, 1.0, false)).collect::<Result<_, _>>()?;
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / 9.0;
    Ok([x[0], g * (1.0 - (x[0] / g).sqrt())])
}

fn study_time(sampler: impl Sampler + 'static, n: usize) -> (Study, f64) {
    let study =
        Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).sampler(sampler).seed(1).build();
    let start = Instant::now();
    study.optimize(n, zdt1).unwrap();
    (study, start.elapsed().as_secs_f64() * 1e3 / n as f64)
}

fn main() {
    let n = 10_000;
    let (_, random) = study_time(RandomSampler::new(), n);
    let nsga = NsgaIISampler::new();
    let (study, with_nsga) = study_time(nsga.clone(), n);
    println!("study of {n} trials: random {random:.4} ms per trial, NSGA-II {with_nsga:.4} ms per trial");
    // The sampler alone, on the finished study (its caches warm, as during a run).
    let trials = study.trials();
    let finished: Vec<u64> = trials.iter().map(|t| t.number).collect();
    let directions = [Direction::Minimize, Direction::Minimize];
    let mut times = Vec::new();
    for k in 0..201 {
        let ctx = SampleContext {
            trials: &trials,
            direction: Direction::Minimize,
            directions: &directions,
            finished: &finished,
            number: (n + k) as u64,
        };
        let mut rng = StdRng::seed_from_u64(k as u64);
        let start = Instant::now();
        let _ = nsga.sample_relative(&ctx, &mut rng).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!("NSGA-II sample_relative after {n} trials: median {:.4} ms, min {:.4} ms", times[100], times[0]);
}
