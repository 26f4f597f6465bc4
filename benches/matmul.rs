//! f32 matmul through the tensor API against matrixmultiply's sgemm called directly on the same
//! data with the same strides, for square n = 64, 256, 1024 with contiguous operands and with
//! either operand a transposed view; and the threading decision: 1 vs 2 threads at n = 128, 256,
//! 1024. Throughput is in elements/s where one "element" is one flop (2 n^3 per product), so
//! criterion's `Gelem/s` reads as GFLOP/s.
//!
//! `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 3`
//!
//! `layer_products` times the forward, input-gradient and weight-gradient products of the
//! bundled models' layers the same two ways (`cargo bench --bench matmul -- layer_`).
//!
//! Two baselines: `sgemm` writes into one preallocated output, `sgemm_alloc` into a fresh one per
//! call as the API must. With glibc's default malloc the gap between them is large at n = 256:
//! freeing a 256 KiB output trims the heap and the next call page-faults it back in. That cost
//! belongs to the allocator, not to matmul; `GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456`
//! removes it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::tensor::{min_work_per_thread, set_min_work_per_thread, set_num_threads, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn square(n: usize, rng: &mut StdRng) -> Tensor<f32> {
    Tensor::rand_uniform(&[n, n], -1.0, 1.0, rng)
}

/// `C = A B` (`[m, k] x [k, n]`) by sgemm with the tensors' own strides into `c`, which has
/// room for m * n elements.
fn direct_sgemm(a: &Tensor<f32>, b: &Tensor<f32>, c: *mut f32) {
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let (sa, sb) = (a.strides(), b.strides());
    // SAFETY: `a` and `b` are m x k and k x n views into their storage at their offsets with
    // these strides, and `c` has room for m * n elements, written row-major (beta = 0: never
    // read).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.storage().as_ptr().add(a.offset()),
            sa[0],
            sa[1],
            b.storage().as_ptr().add(b.offset()),
            sb[0],
            sb[1],
            0.0,
            c,
            n as isize,
            1,
        )
    }
}

/// [`direct_sgemm`] into a freshly allocated output, as the tensor API has to.
fn direct_sgemm_alloc(a: &Tensor<f32>, b: &Tensor<f32>) -> Vec<f32> {
    let len = a.shape()[0] * b.shape()[1];
    let mut c = Vec::with_capacity(len);
    direct_sgemm(a, b, c.as_mut_ptr());
    // SAFETY: sgemm with beta = 0 wrote all `len` elements.
    unsafe { c.set_len(len) };
    c
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
                bench.iter(|| direct_sgemm(black_box(&x), black_box(&y), out.as_mut_ptr()))
            });
            group.bench_function(BenchmarkId::new("sgemm_alloc", name), |bench| {
                bench.iter(|| direct_sgemm_alloc(black_box(&x), black_box(&y)))
            });
        }
        group.finish();
    }
}

/// Times each product alone after a pause, long enough for an idle worker thread to park: what a
/// product between other work (a training step) pays to wake the pool.
fn after_pause(a: &Tensor<f32>, b: &Tensor<f32>, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        std::thread::sleep(Duration::from_millis(2));
        let start = Instant::now();
        black_box(black_box(a).matmul(black_box(b)));
        total += start.elapsed();
    }
    total
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
            group.bench_function(BenchmarkId::new("back_to_back", t), |bench| {
                bench.iter(|| black_box(&a).matmul(black_box(&b)))
            });
            group.bench_function(BenchmarkId::new("after_pause", t), |bench| {
                bench.iter_custom(|iters| after_pause(&a, &b, iters))
            });
        }
        group.finish();
    }
    set_min_work_per_thread(default_min_work);
}

/// The products of a layer, [m, k] x [k, n], as the models in `benches/training.rs` and
/// `benches/transformer.rs` run them: the forward `x W^T` (B a transposed view), the input
/// gradient `g W` (B row-major) and the weight gradient `g^T x` (A a transposed view), through
/// the tensor API and through sgemm into a fresh output, on one thread. f32 products with a
/// row-major A take the packed kernel (`tensor/src/ops/packed_gemm.rs`); the weight gradient
/// stays on sgemm.
fn layer_products(c: &mut Criterion) {
    set_num_threads(1);
    let mut rng = StdRng::seed_from_u64(9);
    // (rows, in, out): a transformer's QKV, feed-forward in and out (2048 tokens), the MLP's first
    // layer at batch 128 and 32.
    for (m, k, n) in [(2048, 128, 384), (2048, 128, 512), (2048, 512, 128), (128, 784, 128), (32, 784, 128)] {
        let mut group = c.benchmark_group(format!("layer_f32_{m}x{k}x{n}"));
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let x = Tensor::<f32>::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&[n, k], -1.0, 1.0, &mut rng);
        let g = Tensor::<f32>::rand_uniform(&[m, n], -1.0, 1.0, &mut rng);
        for (name, a, b) in
            [("forward", x.clone(), w.t()), ("input_grad", g.clone(), w.clone()), ("weight_grad", g.t(), x.clone())]
        {
            group.bench_function(BenchmarkId::new("tensor", name), |bench| {
                bench.iter(|| black_box(&a).matmul(black_box(&b)))
            });
            group.bench_function(BenchmarkId::new("sgemm_alloc", name), |bench| {
                bench.iter(|| direct_sgemm_alloc(black_box(&a), black_box(&b)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, layouts, threads, layer_products);
criterion_main!(benches);
