//! Optimizer step cost: Adam over 1M parameters in one tensor and over 100 tensors of 10k, and
//! SGD with momentum over 1M, and Adam over 1M after 3000 steps of dead units (zero gradients). The gradients are prebuilt, so this is the update loop alone
//! (PyTorch on this machine, issue 5: 2.1 ms for Adam over 1M, 0.69 ms with `fused=True`;
//! twin: `optim/benches/adam_torch.py`).
//!
//! `cargo bench -p ferrograd-optim --bench adam`

use criterion::{criterion_group, criterion_main, Criterion};
use ferrograd_autograd::{Grads, Param};
use ferrograd_optim::{Adam, GroupOptions, Optim, Optimizer, Sgd, UpdateRule};
use ferrograd_tensor::Tensor;

fn setup(tensors: usize, each: usize) -> (Vec<Param<f32>>, Grads<f32>) {
    let params: Vec<Param<f32>> =
        (0..tensors).map(|t| Param::new(Tensor::from_fn(&[each], |i| ((i + t) % 97) as f32 / 97.0 - 0.5))).collect();
    let mut grads = Grads::default();
    for p in &params {
        grads.insert(p.id(), Tensor::from_fn(&[each], |i| ((i * 31) % 89) as f32 / 89.0 - 0.5));
    }
    (params, grads)
}

fn bench_rule<R: UpdateRule<f32>>(c: &mut Criterion, name: &str, rule: R, tensors: usize, each: usize) {
    let (params, grads) = setup(tensors, each);
    let mut opt = Optim::new(rule, params, GroupOptions::lr(1e-3).weight_decay(1e-4));
    opt.step(&grads);
    c.bench_function(name, |b| b.iter(|| opt.step(&grads)));
}

/// The denormal cliff: after 3000 steps with zero gradients (dead units), PyTorch's moment
/// estimates are subnormal and its step slows down; ours are flushed to zero.
fn dead_units(c: &mut Criterion) {
    let (params, grads) = setup(1, 1 << 20);
    let mut opt = Optim::new(Adam::default(), params.clone(), GroupOptions::lr(1e-3));
    opt.step(&grads);
    let mut zero = Grads::default();
    zero.insert(params[0].id(), Tensor::zeros(&[1 << 20]));
    for _ in 0..3000 {
        opt.step(&zero);
    }
    c.bench_function("adam/1x1M after 3000 dead steps", |b| b.iter(|| opt.step(&zero)));
}

fn steps(c: &mut Criterion) {
    bench_rule(c, "adam/1x1M", Adam::default(), 1, 1 << 20);
    bench_rule(c, "adam/100x10k", Adam::default(), 100, 10_000);
    bench_rule(c, "adamw/1x1M", Adam::adamw(), 1, 1 << 20);
    bench_rule(c, "sgd_momentum/1x1M", Sgd { momentum: 0.9, ..Sgd::default() }, 1, 1 << 20);
}

criterion_group!(benches, steps, dead_units);
criterion_main!(benches);
