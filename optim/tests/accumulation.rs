//! Gradient accumulation: `Grads` added and scaled, and micro-batched steps that equal the
//! whole batch's (the scenario of `examples/grad_accumulation.rs`, without nn).

use ferrograd_autograd::{grad_with, BackwardOptions, Grads, Param, Var};
use ferrograd_optim::{Adam, GroupOptions, Optim, Optimizer, Sgd};
use ferrograd_tensor::{Element, Float, Tensor};

/// A two-layer tanh MLP's parameters, seeded by a formula.
fn mlp<F: Float>() -> Vec<Param<F>> {
    let init = |shape: &[usize], k: usize| {
        Param::new(Tensor::from_fn(shape, |i| F::from_f64((((i * 37 + k * 11) % 19) as f64 / 9.0 - 1.0) * 0.4)))
    };
    vec![init(&[5, 12], 1), init(&[12], 2), init(&[12, 1], 3), init(&[1], 4)]
}

fn mse<F: Float>(p: &[Param<F>], x: &Tensor<F>, y: &Tensor<F>) -> Var<F> {
    let h = (&Var::constant(x.clone()).matmul(&p[0].var()) + &p[1].var()).tanh();
    let pred = &h.matmul(&p[2].var()) + &p[3].var();
    (&pred - &Var::constant(y.clone())).square().mean()
}

fn data<F: Float>(n: usize) -> (Tensor<F>, Tensor<F>) {
    let x = Tensor::from_fn(&[n, 5], |i| F::from_f64(((i * 13 % 29) as f64 / 14.0 - 1.0) * 1.5));
    let y = Tensor::from_fn(&[n, 1], |i| F::from_f64(((i * 7 % 11) as f64 / 5.0 - 1.0).sin()));
    (x, y)
}

/// Trains one copy on the whole batch and one on micro-batches of `sizes` rows (weighted by
/// their share), and returns the largest parameter difference over `steps` Adam steps.
fn micro_vs_whole<F: Float>(sizes: &[usize], steps: usize) -> f64 {
    let n: usize = sizes.iter().sum();
    let (x, y) = data::<F>(n);
    let (whole, micro) = (mlp::<F>(), mlp::<F>());
    let mut opt_whole = Optim::new(Adam::default(), whole.clone(), GroupOptions::lr(1e-2));
    let mut opt_micro = Optim::new(Adam::default(), micro.clone(), GroupOptions::lr(1e-2));
    let mut worst = 0.0f64;
    for _ in 0..steps {
        opt_whole.step(&mse(&whole, &x, &y).backward());
        let mut start = 0;
        let parts = sizes.iter().map(|&len| {
            let g = mse(&micro, &x.narrow(0, start, len), &y.narrow(0, start, len)).backward();
            start += len;
            g * F::from_f64(len as f64 / n as f64)
        });
        opt_micro.step(&parts.sum());
        for (p, q) in whole.iter().zip(&micro) {
            for (a, b) in p.value().to_vec().into_iter().zip(q.value().to_vec()) {
                worst = worst.max(Element::to_f64((a - b).abs()));
            }
        }
    }
    worst
}

#[test]
fn micro_batched_steps_equal_the_whole_batch_step() {
    assert!(micro_vs_whole::<f32>(&[64, 64, 64, 48], 10) < 1e-6);
    assert!(micro_vs_whole::<f32>(&[1, 30, 7], 10) < 1e-6, "uneven micro-batches, one of a single row");
    assert!(micro_vs_whole::<f64>(&[64, 64, 64, 48], 10) < 1e-13);
}

#[test]
fn accumulate_sums_shared_leaves_and_keeps_the_others() {
    let (a, b, c) = (
        Param::new(Tensor::from_vec(vec![1.0f64, 2.0], &[2])),
        Param::new(Tensor::scalar(3.0)),
        Param::new(Tensor::scalar(-1.0)),
    );
    let g1 = (a.var().square().sum() + b.var().sum()).backward(); // a: (2, 4), b: 1
    let g2 = (a.var().sum() * 3.0 + c.var().sum()).backward(); // a: (3, 3), c: 1
    let mut acc = g1.clone();
    acc += &g2;
    assert_eq!(acc.get_param(&a).unwrap().to_vec(), vec![5.0, 7.0]);
    assert_eq!((acc.get_param(&b).unwrap().item(), acc.get_param(&c).unwrap().item()), (1.0, 1.0));
    assert_eq!(acc.len(), 3);
    assert_eq!(g1.get_param(&a).unwrap().to_vec(), vec![2.0, 4.0], "the operands are unchanged");
    assert_eq!(g2.get_param(&a).unwrap().to_vec(), vec![3.0, 3.0]);

    let sum = &g1 + &g2;
    assert_eq!(sum.get_param(&a).unwrap().to_vec(), vec![5.0, 7.0]);
    let half = &sum * 0.5;
    assert_eq!(half.get_param(&a).unwrap().to_vec(), vec![2.5, 3.5]);
    let mut scaled = sum.clone();
    scaled *= 2.0;
    assert_eq!(scaled.get_param(&a).unwrap().to_vec(), vec![10.0, 14.0]);
    assert_eq!(sum.get_param(&a).unwrap().to_vec(), vec![5.0, 7.0], "clones share storage copy-on-write");
    let total: Grads<f64> = vec![g1.clone(), g2.clone(), g1].into_iter().sum();
    assert_eq!(total.get_param(&a).unwrap().to_vec(), vec![7.0, 11.0]);
    assert!(std::iter::empty::<Grads<f64>>().sum::<Grads<f64>>().is_empty());
}

#[test]
fn accumulated_gradients_step_like_the_sum() {
    let w = Param::new(Tensor::from_vec(vec![1.0f64, -1.0], &[2]));
    let mut opt = Optim::new(Sgd::default(), vec![w.clone()], GroupOptions::lr(0.1));
    let g = w.var().square().sum().backward(); // (2, -2)
    opt.step(&(&g + &g));
    assert_eq!(w.value().to_vec(), vec![0.6, -0.6]);
}

#[test]
fn gradients_attached_to_a_graph_accumulate_differentiably() {
    // d/dx of (d/dx x³ + d/dx 2x²) = 6x + 4, through Grads::accumulate and scale.
    let x = Var::leaf(Tensor::from_vec(vec![1.5f64], &[1]));
    let create = BackwardOptions { create_graph: true, ..BackwardOptions::default() };
    let mut g = x.powi(3).sum().backward_with(create);
    g.accumulate(&(x.square().sum() * 2.0).backward_with(create));
    g.scale(0.5);
    let first = g.get_var(&x).unwrap().clone();
    assert!(first.requires_grad());
    assert_eq!(first.item(), 0.5 * (3.0 * 2.25 + 4.0 * 1.5));
    let second = grad_with(&[first.sum()], std::slice::from_ref(&x), None, BackwardOptions::default());
    assert_eq!(second[0].as_ref().unwrap().item(), 0.5 * (6.0 * 1.5 + 4.0));
}

#[test]
#[should_panic(expected = "Grads::accumulate: the gradient of")]
fn accumulating_gradients_of_different_shapes_panics() {
    let w = Param::new(Tensor::<f32>::zeros(&[2]));
    let mut a = Grads::<f32>::default();
    a.insert(w.id(), Tensor::zeros(&[2]));
    let mut b = Grads::default();
    b.insert(w.id(), Tensor::zeros(&[3]));
    a += b;
}
