//! LSTM training-step throughput in samples per second (criterion's "elem/s"): one forward,
//! cross-entropy, backward and Adam step of a one-layer LSTM (input 28, hidden 128, sequence 28,
//! batch 64, batch-first) with a 128-10 linear head on its final hidden state, the model of
//! `examples/mnist_lstm.rs`, on fixed random batches. `benches/compare/lstm_torch.py` times the
//! same step with PyTorch's `nn.LSTM`; see `benches/compare/README.md`.
//!
//! Threads: `MATMUL_NUM_THREADS=N cargo bench --bench lstm` (default 1); the bench name carries
//! the count.
//!
//! Before criterion's figure the bench prints, as the PyTorch twin does, the median and best
//! samples per second over 7 repeats of 20 steps and the best per second of this thread's CPU
//! time (Linux's `/proc/thread-self/schedstat`), which is steadier on a shared machine.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ferrograd::nn::layers::{Linear, RNNConfig, LSTM};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, Rng, SeedableRng};

const BATCH: usize = 64;
const STEPS: usize = 28;
const INPUT: usize = 28;
const HIDDEN: usize = 128;

fn main() {
    let threads = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    ferrograd::tensor::set_num_threads(threads);
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = LSTM::<f32>::with_config(INPUT, HIDDEN, RNNConfig { batch_first: true, ..Default::default() }, &mut rng);
    let head = Linear::<f32>::new(HIDDEN, 10, &mut rng);
    let params: Vec<_> = lstm.parameters().into_iter().chain(head.parameters()).collect();
    let mut opt = Optim::new(Adam::default(), params, GroupOptions::lr(1e-3));
    let batches: Vec<(Tensor<f32>, Tensor<i64>)> = (0..8)
        .map(|_| {
            let x = Tensor::from_fn(&[BATCH, STEPS, INPUT], |_| rng.random::<f32>());
            let y = Tensor::from_fn(&[BATCH], |_| rng.random_range(0..10i64));
            (x, y)
        })
        .collect();
    let mut next = 0;
    let mut step = || {
        let (x, y) = &batches[next];
        next = (next + 1) % batches.len();
        let (_, (h_n, _)) = lstm.forward(&Var::constant(x.clone()), None, None);
        let loss = cross_entropy(&head.forward(&h_n.select(0, 0)), y);
        let value = loss.item();
        opt.step(&loss.backward());
        value
    };

    cpu_rates(&mut step);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("lstm_training_step");
    group.measurement_time(Duration::from_secs(10)).sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("lstm_28_128_seq28", format!("b{BATCH}/t{threads}")), |b| b.iter(&mut step));
    group.finish();
    c.final_summary();
}

/// Nanoseconds this thread has run on a CPU, if the platform says.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// The PyTorch twin's figures: 10 warm-up steps, then 7 repeats of 20, wall and CPU time.
fn cpu_rates(step: &mut impl FnMut() -> f32) {
    let (repeats, inner) = (7, 20);
    for _ in 0..10 {
        step();
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let (t, c) = (Instant::now(), thread_cpu_ns());
        for _ in 0..inner {
            step();
        }
        wall.push((inner * BATCH) as f64 / t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c, thread_cpu_ns()) {
            cpu.push((inner * BATCH) as f64 / ((c1 - c0) as f64 * 1e-9));
        }
    }
    wall.sort_by(f64::total_cmp);
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "lstm_28_128_seq28/b{BATCH}: median {:.0} samples/s, best {:.0} samples/s (per CPU second: best {:.0})",
        wall[repeats / 2],
        best(&wall),
        best(&cpu)
    );
}
