//! CMA-ES time per trial after 10000 finished trials of a 10-D sphere (in memory), beside the
//! random sampler's on the same study size (the study's own cost per trial). Run with
//! `cargo bench -p ferrograd-tuning --bench search_cmaes`.

use criterion::{criterion_group, criterion_main, Criterion};
use ferrograd_tuning::search::{CmaEsSampler, RandomSampler, Sampler, SearchError, Study, Trial};

const NAMES: [&str; 10] = ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"];

fn sphere10(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let mut s = 0.0;
    for name in NAMES {
        let x = t.suggest_float(name, -5.0, 5.0, false)?;
        s += x * x;
    }
    Ok(s)
}

fn at_10000<S: Sampler + 'static>(c: &mut Criterion, label: &str, sampler: S) {
    let study = Study::builder().sampler(sampler).seed(0).build();
    study.optimize(10_000, sphere10).unwrap();
    let mut group = c.benchmark_group("search_10000_trials");
    group.sample_size(20);
    group.bench_function(label, |b| b.iter(|| study.optimize(1, sphere10).unwrap()));
    group.finish();
}

fn benches(c: &mut Criterion) {
    at_10000(c, "cmaes_trial_sphere10", CmaEsSampler::new());
    at_10000(c, "random_trial_sphere10", RandomSampler::new());
}

criterion_group!(search_cmaes, benches);
criterion_main!(search_cmaes);
