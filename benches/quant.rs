//! int8 GEMM (u8 x i8 -> i32, `ferrograd_tuning::quant::gemm`) against f32 `Tensor::matmul` at
//! m x k x n = 128 x 784 x 128 and 1024 x 1024 x 1024, one thread each. Throughput is in
//! multiply-adds x 2 per second, so criterion's `Gelem/s` reads as G(int)OP/s and GFLOP/s alike.
//! The int8 figures include padding A's rows (as a quantized layer does per call), not packing
//! the weights (done once at conversion).
//!
//! `cargo bench --bench quant -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::{set_num_threads, Tensor};
use ferrograd::tuning::quant::gemm::{gemm_u8i8_with, Kernel, PackedB};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    set_num_threads(1);
    let mut rng = StdRng::seed_from_u64(0);
    let mut group = c.benchmark_group("gemm");
    for (m, k, n) in [(128, 784, 128), (1024, 1024, 1024)] {
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let a = Tensor::<f32>::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&[n, k], -1.0, 1.0, &mut rng);
        let wt = w.t();
        group.bench_with_input(BenchmarkId::new("f32_matmul", &label), &(), |bch, _| {
            bch.iter(|| black_box(a.matmul(&wt)))
        });
        let a8: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
        let w8: Vec<i8> = (0..n * k).map(|_| rng.random()).collect();
        let packed = PackedB::new(&w8, n, k);
        for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni] {
            if !kernel.is_available() || (kernel == Kernel::Scalar && m > 512) {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(format!("int8_{kernel:?}"), &label), &(), |bch, _| {
                bch.iter(|| black_box(gemm_u8i8_with(kernel, &a8, m, &packed)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
