//! 2-D pooling throughput on LeNet-5's two 2x2 max pools (and average pools of the same shapes),
//! batch 64, f32, in samples per second (criterion's "elem/s"): the forward with indices, as
//! autograd's `max_pool2d` calls it, and both backwards. `benches/compare/pool_torch.py` times
//! the same kernels in PyTorch; the kernels run on the calling thread.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::rand::rngs::StdRng;
use ferrograd::tensor::rand::SeedableRng;
use ferrograd::tensor::{Pool2dOptions, Tensor};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;

/// (name, channels, input side): the inputs of LeNet-5's two pools.
const CASES: [(&str, usize, usize); 2] = [("6x28x28_k2", 6, 28), ("16x10x10_k2", 16, 10)];

fn pool(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let opts = Pool2dOptions::new([2, 2]);
    let mut group = c.benchmark_group("pool2d");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(3));
    for (name, ch, side) in CASES {
        let x = Tensor::<f32>::rand_uniform(&[BATCH, ch, side, side], -1.0, 1.0, &mut rng);
        let (y, idx) = x.max_pool2d_with_indices(&opts);
        let gy = Tensor::<f32>::rand_uniform(y.shape(), -1.0, 1.0, &mut rng);
        group.bench_function(BenchmarkId::new("max_forward", name), |b| {
            b.iter(|| black_box(&x).max_pool2d_with_indices(&opts))
        });
        group.bench_function(BenchmarkId::new("max_backward", name), |b| {
            b.iter(|| Tensor::max_pool2d_backward(black_box(&gy), &idx, x.shape()))
        });
        group.bench_function(BenchmarkId::new("avg_forward", name), |b| b.iter(|| black_box(&x).avg_pool2d(&opts)));
        group.bench_function(BenchmarkId::new("avg_backward", name), |b| {
            b.iter(|| Tensor::avg_pool2d_backward(black_box(&gy), x.shape(), &opts))
        });
    }
    group.finish();
}

criterion_group!(benches, pool);
criterion_main!(benches);
