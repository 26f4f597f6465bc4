//! f32 matmul through the tensor API against matrixmultiply's sgemm called directly on the same
//! data with the same strides, for square n = 64, 256, 1024 with contiguous operands and with
//! either operand a transposed view; and the threading decision: 1 vs 2 threads at n = 128, 256,
//! 1024. Throughput is in elements/s where one "element" is one flop (2 n^3 per product), so
//! criterion's `Gelem/s` reads as GFLOP/s.
//!
//! `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::{min_work_per_thread, set_min_work_per_thread, set_num_threads, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn square(n: usize, rng: &mut StdRng) -> Tensor<f32> {
    Tensor::rand_uniform(&[n, n], -1.0, 1.0, rng)
}

/// `C = A B` by sgemm with the tensors' own strides into a preallocated `C`.
fn direct_sgemm(a: &Tensor<f32>, b: &Tensor<f32>, c: &mut [f32]) {
    let n = a.shape()[0];
    let (sa, sb) = (a.strides(), b.strides());
    assert_eq!(c.len(), n * n);
    // SAFETY: `a` and `b` are n x n views into their storage at their offsets with these strides,
    // and `c` holds n * n elements, written row-major.
    unsafe {
        matrixmultiply::sgemm(
            n,
            n,
            n,
            1.0,
            a.storage().as_ptr().add(a.offset()),
            sa[0],
            sa[1],
            b.storage().as_ptr().add(b.offset()),
            sb[0],
            sb[1],
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

fn layouts(c: &mut Criterion) {
    // The baseline sgemm is single-threaded, so compare against the API on one thread.
    set_num_threads(1);
    let mut rng = StdRng::seed_from_u64(7);
    for n in [64, 256, 1024] {
        let mut group = c.benchmark_group(format!("matmul_f32_n{n}"));
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        if n >= 1024 {
            group.sample_size(10);
        }
        let (a, b) = (square(n, &mut rng), square(n, &mut rng));
        let mut out = vec![0.0f32; n * n];
        for (name, x, y) in [
            ("contiguous", a.clone(), b.clone()),
            ("a_transposed", a.t(), b.clone()),
            ("b_transposed", a.clone(), b.t()),
        ] {
            group.bench_function(BenchmarkId::new("tensor", name), |bench| {
                bench.iter(|| black_box(&x).matmul(black_box(&y)))
            });
            group.bench_function(BenchmarkId::new("sgemm", name), |bench| {
                bench.iter(|| direct_sgemm(black_box(&x), black_box(&y), &mut out))
            });
        }
        group.finish();
    }
}

fn threads(c: &mut Criterion) {
    // Split every product, whatever its size, to see where a second thread starts to pay.
    let default_min_work = min_work_per_thread();
    set_min_work_per_thread(0);
    let mut rng = StdRng::seed_from_u64(8);
    for n in [128, 256, 1024] {
        let mut group = c.benchmark_group(format!("matmul_f32_threads_n{n}"));
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        if n >= 1024 {
            group.sample_size(10);
        }
        let (a, b) = (square(n, &mut rng), square(n, &mut rng));
        for t in [1, 2] {
            set_num_threads(t);
            group.bench_function(BenchmarkId::new("threads", t), |bench| {
                bench.iter(|| black_box(&a).matmul(black_box(&b)))
            });
        }
        group.finish();
    }
    set_min_work_per_thread(default_min_work);
}

criterion_group!(benches, layouts, threads);
criterion_main!(benches);
