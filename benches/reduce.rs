//! Reductions on the shapes training runs them at, in the thread count of `MATMUL_NUM_THREADS`
//! (the id ends in `/t1`, `/t2`, ...): BatchNorm2d's statistics of a `[64, 16, 24, 24]`
//! activation (`mean_dims` then `var_dims` over `[0, 2, 3]`, each output a block of strided
//! planes) and a linear layer's bias gradient over a transformer batch's 2048 tokens (`sum_dims`
//! over rows of `[2048, 512]`, the innermost dim kept). Run it with 1 and 2 threads and compare.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::rand::rngs::StdRng;
use ferrograd::tensor::rand::SeedableRng;
use ferrograd::tensor::{num_threads, Tensor};
use std::hint::black_box;
use std::time::Duration;

fn reduce(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let threads = format!("t{}", num_threads());
    let mut group = c.benchmark_group("reduce");
    group.measurement_time(Duration::from_secs(3));

    let shape = [64, 16, 24, 24];
    let x = Tensor::<f32>::rand_uniform(&shape, -1.0, 1.0, &mut rng);
    group.throughput(Throughput::Elements(x.numel() as u64));
    group.bench_function(BenchmarkId::new("batch_norm_stats_64x16x24x24", &threads), |b| {
        b.iter(|| {
            let x = black_box(&x);
            (x.mean_dims(&[0, 2, 3], true), x.var_dims(&[0, 2, 3], 0, true))
        })
    });

    let g = Tensor::<f32>::rand_uniform(&[2048, 512], -1.0, 1.0, &mut rng);
    group.throughput(Throughput::Elements(g.numel() as u64));
    group.bench_function(BenchmarkId::new("bias_grad_2048x512", &threads), |b| {
        b.iter(|| black_box(&g).sum_dims(&[0], false))
    });
    group.finish();
}

criterion_group!(benches, reduce);
criterion_main!(benches);
