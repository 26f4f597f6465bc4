//! Autograd overhead.
//!
//! - `op_chain/{1,16}`: 1000 elementwise ops (`y = tanh(y * w)`, 500 times) on a tiny tensor,
//!   forward with graph, then backward; divide by 1000 for the cost per op. The PyTorch twin is
//!   `benches/compare/autograd_torch.py`.
//! - `mlp_784_128_64_10/b128`: one forward+backward of the MLP through `Var`s, next to
//!   `.../tensors_only`, the same forward and hand-written backward on plain tensors. The gap is
//!   the autograd's own time.
//!
//! `cargo bench --bench autograd`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

fn chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("op_chain");
    for n in [1usize, 16] {
        let x = Var::leaf(Tensor::<f32>::full(&[n], 0.5));
        let w = Var::leaf(Tensor::<f32>::full(&[n], 1.01));
        group.bench_function(format!("{n}/forward"), |b| {
            b.iter(|| {
                let mut y = x.clone();
                for _ in 0..500 {
                    y = y.mul(&w).tanh();
                }
                black_box(y)
            })
        });
        group.bench_function(format!("{n}/forward_backward"), |b| {
            b.iter(|| {
                let mut y = x.clone();
                for _ in 0..500 {
                    y = y.mul(&w).tanh();
                }
                black_box(y.sum().backward())
            })
        });
    }
    group.finish();
}

struct Mlp {
    w: Vec<Tensor<f32>>,
    b: Vec<Tensor<f32>>,
}

fn mlp(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let dims = [784usize, 128, 64, 10];
    let m = Mlp {
        w: dims.windows(2).map(|d| Tensor::rand_uniform(&[d[0], d[1]], -0.05, 0.05, &mut rng)).collect(),
        b: dims[1..].iter().map(|&d| Tensor::zeros(&[d])).collect(),
    };
    let x = Tensor::<f32>::rand_uniform(&[128, 784], 0.0, 1.0, &mut rng);
    let labels = Tensor::from_fn(&[128, 1], |i| (i % 10) as i64);
    let mut group = c.benchmark_group("mlp_784_128_64_10");
    group.bench_function("b128/autograd", |bch| {
        bch.iter(|| {
            let w: Vec<Var<f32>> = m.w.iter().map(|t| Var::leaf(t.clone())).collect();
            let b: Vec<Var<f32>> = m.b.iter().map(|t| Var::leaf(t.clone())).collect();
            let mut h = Var::constant(x.clone());
            for i in 0..3 {
                h = h.matmul(&w[i]).add(&b[i]);
                if i < 2 {
                    h = h.relu();
                }
            }
            let loss = h.log_softmax(1).gather(1, &labels).mean().neg();
            black_box(loss.backward())
        })
    });
    group.bench_function("b128/tensors_only", |bch| {
        bch.iter(|| {
            // The same kernels, called by hand: forward, then the backward formulas directly.
            let mut acts = vec![x.clone()];
            let mut pre = Vec::new();
            for i in 0..3 {
                let z = acts[i].matmul(&m.w[i]).add(&m.b[i]);
                pre.push(z.clone());
                acts.push(if i < 2 { z.relu() } else { z });
            }
            let logp = acts[3].log_softmax(1);
            let picked = logp.gather(1, &labels).mean();
            let n = 128.0f32;
            let onehot = Tensor::<f32>::zeros(&[128, 10]).scatter_add(1, &labels, &Tensor::full(&[128, 1], 1.0 / n));
            let mut g = logp.exp().mul_scalar(1.0 / n).sub(&onehot);
            let mut grads = Vec::new();
            for i in (0..3).rev() {
                if i < 2 {
                    g = g.mul(&pre[i].gt_scalar(0.0).cast::<f32>());
                }
                grads.push((acts[i].t().matmul(&g), g.sum_dims(&[0], false)));
                if i > 0 {
                    g = g.matmul(&m.w[i].t());
                }
            }
            black_box((picked, grads))
        })
    });
    group.finish();
}

criterion_group!(benches, chain, mlp);
criterion_main!(benches);
