//! Training-step throughput in samples per second (criterion's "elem/s"): one forward, backward
//! and Adam step of the 784-128-64-10 MLP at batch 32 and 128, and of LeNet-5 (as in
//! `examples/mnist_cnn.rs`) at batch 64, on real MNIST batches. `benches/compare/training_torch.py`
//! times the same steps in PyTorch; see `benches/compare/README.md`.
//!
//! Threads: `MATMUL_NUM_THREADS=N cargo bench --bench training` (default 1); the bench names
//! carry the count.
//!
//! Before the criterion groups, a drift check runs 3000 Adam steps of the MLP at batch 32 and
//! prints the mean step time of the first and the last 100: Adam's moment buffers for pixels that
//! are almost always zero decay towards subnormal floats, which would slow every later step if
//! the kernels met them (the "denormal cliff").

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ferrograd::nn::data::{DataLoader, Mnist};
use ferrograd::nn::layers::{Conv2d, Conv2dConfig, Flatten, Linear, MaxPool2d, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

fn mlp(rng: &mut StdRng) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 128, rng))
        .add(ReLU)
        .add(Linear::new(128, 64, rng))
        .add(ReLU)
        .add(Linear::new(64, 10, rng))
}

fn lenet(rng: &mut StdRng) -> Sequential {
    let pad2 = Conv2dConfig { padding: [2, 2], ..Default::default() };
    Sequential::new()
        .add(Conv2d::with_config(1, 6, [5, 5], pad2, rng))
        .add(ReLU)
        .add(MaxPool2d::new([2, 2]))
        .add(Conv2d::new(6, 16, [5, 5], rng))
        .add(ReLU)
        .add(MaxPool2d::new([2, 2]))
        .add(Flatten::default())
        .add(Linear::new(400, 120, rng))
        .add(ReLU)
        .add(Linear::new(120, 84, rng))
        .add(ReLU)
        .add(Linear::new(84, 10, rng))
}

/// A model, its Adam optimizer and a cycle of MNIST batches, in the shape the model takes.
struct Trainer {
    model: Sequential,
    opt: Optim<f32, Adam>,
    batches: Vec<(Tensor<f32>, Tensor<i64>)>,
    next: usize,
}

impl Trainer {
    fn new(model: Sequential, mnist: &Mnist, batch: usize, flat: bool) -> Self {
        let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
        let loader = DataLoader::new(mnist.train(), batch).drop_last(true).shuffle(0);
        let batches =
            loader.iter_epoch(0).map(|(x, y)| if flat { (x.reshape(&[batch, 784]), y) } else { (x, y) }).collect();
        Trainer { model, opt, batches, next: 0 }
    }

    /// One forward, backward and Adam step on the next batch.
    fn step(&mut self) -> f32 {
        let (x, y) = &self.batches[self.next];
        self.next = (self.next + 1) % self.batches.len();
        let loss = cross_entropy(&self.model.forward(&Var::constant(x.clone())), y);
        let value = loss.item();
        self.opt.step(&loss.backward());
        value
    }
}

fn mnist() -> Mnist {
    Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).expect("the MNIST files in data/mnist")
}

/// Prints the mean step time over the first and the last 100 of 3000 MLP Adam steps (batch 32).
fn denormal_drift(mnist: &Mnist, threads: usize) {
    let mut trainer = Trainer::new(mlp(&mut StdRng::seed_from_u64(0)), mnist, 32, true);
    let times: Vec<f64> = (0..3000)
        .map(|_| {
            let t = Instant::now();
            black_box(trainer.step());
            t.elapsed().as_secs_f64()
        })
        .collect();
    let mean_us = |s: &[f64]| 1e6 * s.iter().sum::<f64>() / s.len() as f64;
    let median_us = |s: &[f64]| {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        1e6 * v[v.len() / 2]
    };
    let (first, last) = (&times[..100], &times[times.len() - 100..]);
    println!(
        "adam_drift/mlp_b32/t{threads}: 3000 steps; first 100: mean {:.1} us, median {:.1} us; \
         last 100: mean {:.1} us, median {:.1} us; all: mean {:.1} us",
        mean_us(first),
        median_us(first),
        mean_us(last),
        median_us(last),
        mean_us(&times)
    );
}

fn main() {
    let threads = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    ferrograd::tensor::set_num_threads(threads);
    let mnist = mnist();
    denormal_drift(&mnist, threads);

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("training_step");
    group.measurement_time(Duration::from_secs(5));
    let cases: [(&str, usize, bool); 3] =
        [("mlp_784_128_64_10", 32, true), ("mlp_784_128_64_10", 128, true), ("lenet5", 64, false)];
    for (name, batch, flat) in cases {
        let mut rng = StdRng::seed_from_u64(0);
        let model = if flat { mlp(&mut rng) } else { lenet(&mut rng) };
        let mut trainer = Trainer::new(model, &mnist, batch, flat);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new(name, format!("b{batch}/t{threads}")), |b| b.iter(|| trainer.step()));
    }
    group.finish();
    c.final_summary();
}
