//! TPE sampler time per trial with 100, 1000 and 5000 finished trials (the default
//! `TpeSampler::new()`, Optuna 4's `univariate()` and the multivariate `tuned()` settings), on a 3-parameter space with a log float, an
//! integer and a categorical. Run with `cargo bench -p ferrograd-tuning --bench search_tpe`.

use std::time::Instant;

use ferrograd_tuning::search::{SearchError, Study, TpeSampler, Trial};

fn objective(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let lr = t.suggest_float("lr", 1e-5, 1e-1, true)?;
    let width = t.suggest_int("width", 16, 512, 16, false)?;
    let act: &str = t.suggest_categorical("act", &["relu", "tanh", "gelu"])?;
    Ok((lr.log10() + 3.0).powi(2) + (width as f64 - 128.0).abs() / 100.0 + if act == "gelu" { 0.0 } else { 0.5 })
}

/// Per-trial time of an SQLite study (TPE, trivial objective) with `finished` trials stored.
fn sqlite(finished: usize) {
    let path = std::env::temp_dir().join(format!("ferrograd_bench_{}.db", std::process::id()));
    let remove = || {
        for e in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{e}", path.display()));
        }
    };
    remove();
    let study =
        Study::builder().sampler(TpeSampler::new().n_startup_trials(finished)).open_sqlite(&path, "bench").unwrap();
    study.optimize(finished, objective).unwrap();
    let mut times: Vec<f64> = (0..21)
        .map(|_| {
            let start = Instant::now();
            study.optimize(1, objective).unwrap();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("TPE in SQLite {finished:>5} finished trials: median {:>7.3} ms per trial (storage included)", times[10]);
    drop(study);
    remove();
}

fn main() {
    sqlite(100);
    sqlite(1000);
    for (label, base) in [
        ("default", TpeSampler::new()),
        ("univariate", TpeSampler::univariate()),
        ("multivariate tuned", TpeSampler::tuned()),
    ] {
        for finished in [100, 1000, 5000] {
            // Random start up to `finished` trials, then time TPE proposals on that history.
            let study = Study::builder().sampler(base.clone().n_startup_trials(finished)).seed(1).build();
            study.optimize(finished, objective).unwrap();
            // Each trial timed alone; the median resists other processes taking the CPU.
            let mut times: Vec<f64> = (0..51)
                .map(|_| {
                    let start = Instant::now();
                    study.optimize(1, objective).unwrap();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "TPE {label:<20} {finished:>5} finished trials: median {:>7.3} ms, min {:>7.3} ms per trial",
                times[25], times[0]
            );
        }
    }
}
