//! conv2d throughput on LeNet-5's two convolutions, batch 64, in samples per second (criterion's
//! "elem/s"): unpadded on 28x28 and 12x12 inputs, and as `benches/training.rs`'s LeNet has them
//! (padding 2 on 28x28, then 14x14). `benches/compare/conv_torch.py` times the same convolutions
//! in PyTorch; see `benches/compare/README.md`. The batch is split over up to
//! `MATMUL_NUM_THREADS` threads (default: all cores) when each thread gets enough work.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::rand::rngs::StdRng;
use ferrograd::tensor::rand::SeedableRng;
use ferrograd::tensor::{Conv2dOptions, Tensor};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;

/// (name, input channels, output channels, input side, kernel side, padding)
const CASES: [(&str, usize, usize, usize, usize, usize); 4] = [
    ("1to6_28x28_k5", 1, 6, 28, 5, 0),
    ("6to16_12x12_k5", 6, 16, 12, 5, 0),
    ("lenet_1to6_28x28_k5_p2", 1, 6, 28, 5, 2),
    ("lenet_6to16_14x14_k5", 6, 16, 14, 5, 0),
];

fn conv(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let mut group = c.benchmark_group("conv2d");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(4));
    for (name, cin, cout, side, k, pad) in CASES {
        let opts = Conv2dOptions { padding: [pad, pad], ..Default::default() };
        let x = Tensor::<f32>::rand_uniform(&[BATCH, cin, side, side], -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&[cout, cin, k, k], -0.2, 0.2, &mut rng);
        let b = Tensor::<f32>::rand_uniform(&[cout], -0.2, 0.2, &mut rng);
        let y = x.conv2d(&w, Some(&b), &opts);
        group.bench_function(BenchmarkId::new("forward", name), |bench| {
            bench.iter(|| black_box(&x).conv2d(black_box(&w), Some(&b), &opts))
        });
        group.bench_function(BenchmarkId::new("input_grad", name), |bench| {
            bench.iter(|| Tensor::conv2d_input_grad(black_box(&y), black_box(&w), x.shape(), &opts))
        });
        group.bench_function(BenchmarkId::new("weight_grad", name), |bench| {
            bench.iter(|| Tensor::conv2d_weight_grad(black_box(&x), black_box(&y), w.shape(), &opts))
        });
    }
    group.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
