//! Time to ask and tell one trial with the TPE sampler (Optuna's defaults) on a study that already
//! holds 1000 and 10000 trials: in memory, in SQLite, in PostgreSQL (feature `postgres`), and in
//! PostgreSQL while 15 other workers run trials on the same study (16 workers in all). The cost
//! per trial must stay flat as the study grows: a worker reads only what changed since its last
//! read, never the whole study.
//!
//! ```text
//! cargo bench -p ferrograd-tuning --bench search_storage
//! scripts/with-postgres.sh cargo bench -p ferrograd-tuning --features postgres --bench search_storage
//! ```
//! The PostgreSQL cases need `FERROGRAD_PG_URL` (which the script sets) and fail without it.
//!
//! Measured 2026-12-05 on the 2-core machine with every other build paused (load average below
//! 3), PostgreSQL 15 from the script (fsync off), criterion medians per trial:
//!
//! | trials | memory  | SQLite  | PostgreSQL | PostgreSQL, 16 workers |
//! |--------|---------|---------|------------|------------------------|
//! | 1000   | 1.10 ms | 1.07 ms | 2.67 ms    | 33.6 ms                |
//! | 10000  | 1.65 ms | 1.89 ms | 4.01 ms    | 38.9 ms                |
//!
//! The memory column is the TPE proposal itself, which grows with the history as Optuna's does;
//! storage adds about 0.2 ms (SQLite) and 1.6-2.4 ms (PostgreSQL: two incremental reads and two
//! short write transactions per trial, over loopback). The 16-worker figures are 16 TPE workers
//! sharing 2 cores, so each trial waits for about eight others: CPU-bound, not a storage
//! measurement (about 410 trials/s in all).

#[cfg(feature = "postgres")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use ferrograd_tuning::search::{InMemoryStorage, SearchError, SqliteStorage, Storage, Study, TpeSampler, Trial};

const SIZES: [usize; 2] = [1000, 10000];

fn objective(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let lr = t.suggest_float("lr", 1e-5, 1e-1, true)?;
    let width = t.suggest_int("width", 16, 512, 16, false)?;
    let act: &str = t.suggest_categorical("act", &["relu", "tanh", "gelu"])?;
    Ok((lr.log10() + 3.0).powi(2) + (width as f64 - 128.0).abs() / 100.0 + if act == "gelu" { 0.0 } else { 0.5 })
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("bench_{tag}_{}_{nanos}", std::process::id())
}

/// A study of `finished` trials (random start, as TPE's startup) in `storage`, then TPE.
fn filled(storage: Arc<dyn Storage>, finished: usize) -> Study {
    let name = unique("tpe");
    let study = Study::builder().sampler(TpeSampler::new().n_startup_trials(finished)).seed(1).storage(storage.clone());
    study.create(&name).unwrap().optimize(finished, objective).unwrap();
    Study::builder().sampler(TpeSampler::new()).seed(2).storage(storage).load(&name).unwrap()
}

/// One trial asked, evaluated and told: what a worker pays per trial beyond its objective.
fn ask_and_tell(study: &Study) {
    let mut t = study.ask().unwrap();
    let v = objective(&mut t).unwrap();
    study.tell(t, v).unwrap();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tpe_ask_tell");
    // Every iteration adds a trial, so the study grows while it is measured. Flat sampling with
    // short windows bounds that growth to a few hundred trials (Criterion's default linear
    // sampling would run at least 55 iterations per sample set and keep growing the study).
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let dir = std::env::temp_dir().join(unique("sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    for finished in SIZES {
        let study = filled(Arc::new(InMemoryStorage::new()), finished);
        g.bench_function(BenchmarkId::new("memory", finished), |b| b.iter(|| ask_and_tell(&study)));
        let study = filled(Arc::new(SqliteStorage::open(dir.join(format!("{finished}.db"))).unwrap()), finished);
        g.bench_function(BenchmarkId::new("sqlite", finished), |b| b.iter(|| ask_and_tell(&study)));
        #[cfg(feature = "postgres")]
        postgres(&mut g, finished);
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
fn postgres(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, finished: usize) {
    use ferrograd_tuning::search::PostgresStorage;
    let url = std::env::var("FERROGRAD_PG_URL")
        .expect("FERROGRAD_PG_URL must name a PostgreSQL database (run through scripts/with-postgres.sh)");
    let connect = || -> Arc<dyn Storage> { Arc::new(PostgresStorage::connect(&url).unwrap()) };
    let study = filled(connect(), finished);
    // A study that grew to this size over hours has been analysed by autovacuum; one filled in
    // seconds has not, and the planner's statistics still describe nearly empty tables, so every
    // incremental read would scan whole tables. ANALYZE gives the steady state being measured.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect for ANALYZE");
    client.batch_execute("ANALYZE").expect("ANALYZE");
    g.bench_function(BenchmarkId::new("postgres", finished), |b| b.iter(|| ask_and_tell(&study)));
    // Fifteen more workers, each with its own connection, run trials on the same study meanwhile.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for seed in 0..15 {
            let (stop, storage, name) = (&stop, connect(), study.name().to_string());
            s.spawn(move || {
                let other =
                    Study::builder().sampler(TpeSampler::new()).seed(100 + seed).storage(storage).load(&name).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    ask_and_tell(&other);
                }
            });
        }
        g.bench_function(BenchmarkId::new("postgres_16_workers", finished), |b| b.iter(|| ask_and_tell(&study)));
        stop.store(true, Ordering::Relaxed);
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
