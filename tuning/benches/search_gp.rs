//! GP sampler time per trial with 99 complete trials of a 10-D sphere (the budget: the
//! 100th trial), after a real GP run up to there. Each timed trial is asked, given its ten
//! parameters and told failed, so every iteration fits the same 99 points (warm-started from the
//! previous fit, as in a run) and optimises the acquisition. Optuna's `GPSampler` takes 0.74 s
//! per trial here. Run with `cargo bench -p ferrograd-tuning --bench search_gp`.

use criterion::{criterion_group, criterion_main, Criterion};
use ferrograd_tuning::search::{GpSampler, SearchError, Study, Trial};

const NAMES: [&str; 10] = ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"];

fn sphere10(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let mut s = 0.0;
    for name in NAMES {
        let x = t.suggest_float(name, -5.0, 5.0, false)?;
        s += x * x;
    }
    Ok(s)
}

fn gp_trial_at_100(c: &mut Criterion) {
    let study = Study::builder().sampler(GpSampler::new()).seed(0).build();
    study.optimize(99, sphere10).unwrap();
    let mut group = c.benchmark_group("gp_sampler");
    group.sample_size(20);
    group.bench_function("trial_100_sphere10", |b| {
        b.iter(|| {
            let mut trial = study.ask().unwrap();
            let v = sphere10(&mut trial).unwrap();
            study.tell_failed(trial, format!("timed only ({v})")).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, gp_trial_at_100);
criterion_main!(benches);
