//! Transformer encoder training-step throughput in samples per second (criterion's "elem/s"):
//! one forward, MSE loss against a fixed target, backward and AdamW step (lr 1e-3, weight decay
//! 0.01) of a 2-layer pre-norm encoder (d_model 128, 4 heads, feed-forward 512, GELU, no
//! dropout, batch-first) at sequence 64 and batch 32, on fixed random batches.
//! `benches/compare/transformer_torch.py` times the same step with PyTorch's
//! `nn.TransformerEncoder`; see `benches/compare/README.md`.
//!
//! Threads: `MATMUL_NUM_THREADS=N cargo bench --bench transformer` (default 1); the bench name
//! carries the count.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ferrograd::nn::layers::{TransformerActivation, TransformerEncoder, TransformerLayerConfig};
use ferrograd::nn::loss::mse_loss;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, Rng, SeedableRng};

const BATCH: usize = 32;
const SEQ: usize = 64;
const D_MODEL: usize = 128;
const HEADS: usize = 4;
const FF: usize = 512;
const LAYERS: usize = 2;

fn main() {
    let threads = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    ferrograd::tensor::set_num_threads(threads);
    let mut rng = StdRng::seed_from_u64(0);
    let config = TransformerLayerConfig {
        dim_feedforward: FF,
        dropout: 0.0,
        activation: TransformerActivation::Gelu,
        batch_first: true,
        norm_first: true,
        ..Default::default()
    };
    let encoder = TransformerEncoder::<f32>::new(D_MODEL, HEADS, LAYERS, config, false, &mut rng);
    let mut opt = Optim::new(Adam::adamw(), encoder.parameters(), GroupOptions::lr(1e-3).weight_decay(0.01));
    let mut randn = |shape: &[usize]| Tensor::<f32>::from_fn(shape, |_| rng.random::<f32>() * 2.0 - 1.0);
    let batches: Vec<(Tensor<f32>, Tensor<f32>)> =
        (0..4).map(|_| (randn(&[BATCH, SEQ, D_MODEL]), randn(&[BATCH, SEQ, D_MODEL]))).collect();
    let mut next = 0;
    let mut step = || {
        let (x, y) = &batches[next];
        next = (next + 1) % batches.len();
        let out = encoder.forward_unmasked(&Var::constant(x.clone()));
        let loss = mse_loss(&out, &Var::constant(y.clone()));
        let value = loss.item();
        opt.step(&loss.backward());
        value
    };

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("transformer_training_step");
    group.measurement_time(Duration::from_secs(10)).sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("encoder_d128_h4_ff512_l2_seq64", format!("b{BATCH}/t{threads}")), |b| {
        b.iter(&mut step)
    });
    group.finish();
    c.final_summary();
}
