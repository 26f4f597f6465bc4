//! Elementwise kernels against plain slice loops: what the strided machinery costs.
//!
//! Targets: a contiguous add within 1.3x of a slice loop that allocates its output; a
//! row-broadcast add within 2x of the contiguous one; in-place add within 1.3x of a slice loop.
//!
//! `gelu_2048x512_f32`: GELU and its two gradient passes over the transformer benchmark's
//! feed-forward activations (`cargo bench --bench elementwise -- gelu`): `backward` recomputes
//! `erf` from the input, `backward_with_output` takes `Φ(x)` from the saved output (what the
//! autograd op runs).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ferrograd_tensor::Tensor;

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i % 1000) as f32 * scale).collect()
}

fn contiguous_add(c: &mut Criterion) {
    let n = 1 << 20;
    let (va, vb) = (ramp(n, 0.001), ramp(n, 0.002));
    let (a, b) = (Tensor::from_slice(&va, &[n]), Tensor::from_slice(&vb, &[n]));
    let mut g = c.benchmark_group("add_1M_f32");
    g.bench_function("slice_loop", |bench| {
        bench.iter(|| black_box(&va).iter().zip(black_box(&vb)).map(|(x, y)| x + y).collect::<Vec<f32>>())
    });
    g.bench_function("tensor", |bench| bench.iter(|| black_box(&a) + black_box(&b)));
    g.finish();
}

fn broadcast_add(c: &mut Criterion) {
    let n = 1024;
    let a = Tensor::from_vec(ramp(n * n, 0.001), &[n, n]);
    let full = Tensor::from_vec(ramp(n * n, 0.002), &[n, n]);
    let row = Tensor::from_vec(ramp(n, 0.002), &[n]);
    let mut g = c.benchmark_group("add_1024x1024_f32");
    g.bench_function("contiguous", |bench| bench.iter(|| black_box(&a) + black_box(&full)));
    g.bench_function("broadcast_row", |bench| bench.iter(|| black_box(&a) + black_box(&row)));
    g.finish();
}

fn inplace_add(c: &mut Criterion) {
    let n = 1 << 20;
    let vb = ramp(n, 1e-6);
    let b = Tensor::from_slice(&vb, &[n]);
    let mut g = c.benchmark_group("add_inplace_1M_f32");
    let mut va = ramp(n, 0.001);
    g.bench_function("slice_loop", |bench| {
        bench.iter(|| black_box(&mut va).iter_mut().zip(black_box(&vb)).for_each(|(x, y)| *x += y))
    });
    let mut a = Tensor::from_vec(ramp(n, 0.001), &[n]);
    g.bench_function("tensor", |bench| bench.iter(|| black_box(&mut a).add_(black_box(&b))));
    g.finish();
}

fn gelu(c: &mut Criterion) {
    let n = 2048 * 512;
    let x = Tensor::from_vec((0..n).map(|i| ((i * 7919) % 2001) as f32 * 4e-3 - 4.0).collect(), &[2048, 512]);
    let g = Tensor::from_vec(ramp(n, 1e-3), &[2048, 512]);
    let y = x.gelu();
    let mut group = c.benchmark_group("gelu_2048x512_f32");
    group.bench_function("forward", |bench| bench.iter(|| black_box(&x).gelu()));
    group.bench_function("backward", |bench| bench.iter(|| black_box(&x).gelu_backward(black_box(&g))));
    group.bench_function("backward_with_output", |bench| {
        bench.iter(|| black_box(&x).gelu_backward_with_output(black_box(&y), black_box(&g)))
    });
    group.finish();
}

criterion_group!(benches, contiguous_add, broadcast_add, inplace_add, gelu);
criterion_main!(benches);
