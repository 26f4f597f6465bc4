//! The buffer cache's effect on training: samples/s, page faults per step and peak RSS of the
//! MLP (batch 32 and 128) and LeNet-5 (batch 64) on synthetic MNIST-shaped batches, and of the
//! transformer encoder of `benches/transformer.rs` (batch 32, sequence 64), with the
//! cache as the environment says (`FERROGRAD_BUFFER_CACHE=0` turns it off; see
//! `ferrograd::tensor::set_buffer_caching`). One model per process, so the peak RSS is the
//! model's:
//!
//! ```text
//! for m in mlp_b32 mlp_b128 lenet_b64 transformer_b32; do
//!   for c in 1 0; do FERROGRAD_BUFFER_CACHE=$c cargo bench --bench alloc -- $m; done
//! done
//! ```
//!
//! Faults and peak RSS come from `/proc/self/stat` and `/proc/self/status` (Linux only).

use std::hint::black_box;
use std::time::Instant;

use ferrograd::nn::layers::{
    Conv2d, Conv2dConfig, Flatten, Linear, MaxPool2d, ReLU, Sequential, TransformerActivation, TransformerEncoder,
    TransformerLayerConfig,
};
use ferrograd::nn::loss::{cross_entropy, mse_loss};
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, Rng, SeedableRng};

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

/// Minor page faults of this process so far (field 10 of `/proc/self/stat`).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Peak resident set size in KiB (`VmHWM` of `/proc/self/status`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let threads = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    ferrograd::tensor::set_num_threads(threads);
    let which = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_else(|| "mlp_b128".into());
    let (mut step, batch, steps) = match which.as_str() {
        "transformer_b32" => transformer_step(),
        other => classifier_step(other),
    };
    (0..50.min(steps / 6)).for_each(&mut *step);
    // Best of 5 rounds (the machine may be shared); faults summed over all of them.
    let faults0 = minor_faults();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        (0..steps).for_each(&mut *step);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let faults = (minor_faults() - faults0) as f64 / (5 * steps) as f64;
    println!(
        "alloc/{which}/t{threads}/cache={}: {:.0} samples/s (best of 5 x {steps} steps), {faults:.2} minor faults/step, peak RSS {:.1} MiB",
        u8::from(ferrograd::tensor::buffer_caching()),
        (steps * batch) as f64 / best,
        peak_rss_kib() as f64 / 1024.0
    );
}

/// One training step as a closure, its batch size and the steps per timed round.
type Step = (Box<dyn FnMut(usize)>, usize, usize);

/// The MLP or LeNet-5 with cross-entropy and Adam on synthetic MNIST-shaped batches.
fn classifier_step(which: &str) -> Step {
    let (model, batch, image): (Sequential, usize, Vec<usize>) = {
        let mut rng = StdRng::seed_from_u64(0);
        match which {
            "mlp_b32" => (mlp(&mut rng), 32, vec![784]),
            "mlp_b128" => (mlp(&mut rng), 128, vec![784]),
            "lenet_b64" => (lenet(&mut rng), 64, vec![1, 28, 28]),
            other => panic!("alloc bench: unknown model {other:?} (mlp_b32, mlp_b128, lenet_b64, transformer_b32)"),
        }
    };
    let mut rng = StdRng::seed_from_u64(1);
    let shape: Vec<usize> = [batch].iter().chain(&image).copied().collect();
    let batches: Vec<(Tensor<f32>, Tensor<i64>)> = (0..8)
        .map(|_| {
            let x = Tensor::rand_uniform(&shape, 0.0, 1.0, &mut rng);
            (x, Tensor::from_vec((0..batch).map(|_| rng.random_range(0..10i64)).collect(), &[batch]))
        })
        .collect();
    let mut opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
    let step = move |i: usize| {
        let (x, y) = &batches[i % batches.len()];
        let loss = cross_entropy(&model.forward(&Var::constant(x.clone())), y);
        black_box(loss.item());
        opt.step(&loss.backward());
    };
    let steps = if batch * image.iter().product::<usize>() > 100_000 && image.len() > 1 { 300 } else { 1500 };
    (Box::new(step), batch, steps)
}

/// The 2-layer pre-norm encoder of `benches/transformer.rs` (d_model 128, 4 heads, feed-forward
/// 512, GELU) with MSE and AdamW at batch 32, sequence 64.
fn transformer_step() -> Step {
    let (batch, seq, d_model) = (32, 64, 128);
    let mut rng = StdRng::seed_from_u64(0);
    let config = TransformerLayerConfig {
        dim_feedforward: 512,
        dropout: 0.0,
        activation: TransformerActivation::Gelu,
        batch_first: true,
        norm_first: true,
        ..Default::default()
    };
    let encoder = TransformerEncoder::<f32>::new(d_model, 4, 2, config, false, &mut rng);
    let mut opt = Optim::new(Adam::adamw(), encoder.parameters(), GroupOptions::lr(1e-3).weight_decay(0.01));
    let mut randn = |shape: &[usize]| Tensor::<f32>::from_fn(shape, |_| rng.random::<f32>() * 2.0 - 1.0);
    let batches: Vec<(Tensor<f32>, Tensor<f32>)> =
        (0..4).map(|_| (randn(&[batch, seq, d_model]), randn(&[batch, seq, d_model]))).collect();
    let step = move |i: usize| {
        let (x, y) = &batches[i % batches.len()];
        let out = encoder.forward_unmasked(&Var::constant(x.clone()));
        let loss = mse_loss(&out, &Var::constant(y.clone()));
        black_box(loss.item());
        opt.step(&loss.backward());
    };
    (Box::new(step), batch, 30)
}
