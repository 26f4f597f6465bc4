//! conv2d throughput on LeNet-5's two convolutions, batch 64, in samples per second (criterion's
//! "elem/s"). `benches/compare/conv_torch.py` times the same convolutions in PyTorch; see
//! `benches/compare/README.md`. The convolution kernels run on the calling thread.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::rand::rngs::StdRng;
use ferrograd::tensor::rand::SeedableRng;
use ferrograd::tensor::{Conv2dOptions, Tensor};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;

/// (name, input channels, output channels, input side, kernel side)
const CASES: [(&str, usize, usize, usize, usize); 2] =
    [("1to6_28x28_k5", 1, 6, 28, 5), ("6to16_12x12_k5", 6, 16, 12, 5)];

fn conv(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let opts = Conv2dOptions::default();
    let mut group = c.benchmark_group("conv2d");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(4));
    for (name, cin, cout, side, k) in CASES {
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
