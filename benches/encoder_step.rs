//! Transformer encoder training-step throughput in samples per second (criterion's "elem/s"):
//! `TransformerEncoder` of 2 pre-norm layers (d_model 128, 4 heads, feed-forward 512, GELU,
//! dropout 0, batch-first), forward over `[32, 64, 128]`, MSE loss to a fixed target, backward
//! and an AdamW step. `benches/compare/encoder_step_torch.py` times the same step with PyTorch's
//! `nn.TransformerEncoder`.
//!
//! Before the criterion group a probe prints the best and median step time of 15 steps (best-of
//! is what to compare on a loaded machine); `ENCODER_STEP_PROBE_ONLY=1` stops after it.
//! Threads: `MATMUL_NUM_THREADS=N cargo bench --bench encoder_step` (default 1).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ferrograd::nn::layers::{EncoderMasks, TransformerActivation, TransformerEncoder, TransformerLayerConfig};
use ferrograd::nn::loss::mse_loss;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, Rng, SeedableRng};

const BATCH: usize = 32;
const SEQ: usize = 64;
const D_MODEL: usize = 128;

struct Trainer {
    model: TransformerEncoder<f32>,
    opt: Optim<f32, Adam>,
    x: Var<f32>,
    y: Var<f32>,
}

impl Trainer {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        let config = TransformerLayerConfig {
            dim_feedforward: 512,
            dropout: 0.0,
            activation: TransformerActivation::Gelu,
            batch_first: true,
            norm_first: true,
            ..Default::default()
        };
        let model = TransformerEncoder::new(D_MODEL, 4, 2, config, false, &mut rng);
        let opt = Optim::new(Adam::adamw(), model.parameters(), GroupOptions::lr(1e-3));
        let shape = [BATCH, SEQ, D_MODEL];
        let mut randn = || Tensor::<f32>::from_fn(&shape, |_| rng.random::<f32>() * 2.0 - 1.0);
        let (x, y) = (Var::constant(randn()), Var::constant(randn()));
        Trainer { model, opt, x, y }
    }

    fn step(&mut self) -> f32 {
        let out = self.model.forward(&self.x, &EncoderMasks::default());
        let loss = mse_loss(&out, &self.y);
        self.opt.step(&loss.backward());
        loss.data().item()
    }
}

fn main() {
    let threads = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    ferrograd::tensor::set_num_threads(threads);
    let mut trainer = Trainer::new();
    for _ in 0..3 {
        trainer.step();
    }
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(trainer.step());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "encoder_step probe/b{BATCH}/t{threads}: best {:.1} ms ({:.0} samples/s), median {:.1} ms",
        times[0],
        BATCH as f64 / times[0] * 1e3,
        times[times.len() / 2]
    );
    if std::env::var_os("ENCODER_STEP_PROBE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("encoder_step");
    group.measurement_time(Duration::from_secs(10)).sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("d128_h4_ff512_l2_seq64", format!("b{BATCH}/t{threads}")), |b| {
        b.iter(|| trainer.step())
    });
    group.finish();
    c.final_summary();
}
