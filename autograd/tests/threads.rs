//! Elementwise backward passes split over threads (large gradients): the same bits on 1, 2 and
//! 3 threads, equal to the per-element formula.
//!
//! The thread settings are process-wide, so one test sets them and checks every op in turn.

use ferrograd_autograd::Var;
use ferrograd_tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd_tensor::{min_work_per_thread, num_threads, set_min_work_per_thread, set_num_threads, Tensor};

/// An op under test.
type VarOp = fn(&Var<f32>) -> Var<f32>;

/// An op's name, the op, and its derivative at `x`.
type Case = (&'static str, VarOp, fn(f32) -> f32);

/// The gradient of `sum(op(x) * w)` w.r.t. `x`, as bits.
fn grad_bits(x: &Tensor<f32>, w: &Tensor<f32>, op: VarOp) -> Vec<u32> {
    let xv = Var::leaf(x.clone());
    let loss = op(&xv).mul(&Var::constant(w.clone())).sum();
    let grads = loss.backward();
    grads.get(&xv).expect("x has a gradient").to_vec().into_iter().map(f32::to_bits).collect()
}

#[test]
fn elementwise_backward_is_bit_identical_on_1_2_3_threads_and_matches_the_formula() {
    let (old_threads, old_work) = (num_threads(), min_work_per_thread());
    // Every pass of two elements or more is split.
    set_min_work_per_thread(0);
    let mut rng = StdRng::seed_from_u64(3);
    let x = Tensor::<f32>::rand_uniform(&[3, 1001], -2.0, 2.0, &mut rng);
    let w = Tensor::<f32>::rand_uniform(&[3, 1001], -1.0, 1.0, &mut rng);
    let cases: [Case; 3] = [
        ("relu", |v| v.relu(), |x| if x > 0.0 { 1.0 } else { 0.0 }),
        ("tanh", |v| v.tanh(), |x| 1.0 - x.tanh() * x.tanh()),
        ("exp", |v| v.exp(), f32::exp),
    ];
    for (name, op, deriv) in cases {
        set_num_threads(1);
        let one = grad_bits(&x, &w, op);
        let want: Vec<u32> = x.to_vec().iter().zip(w.to_vec()).map(|(&x, w)| (w * deriv(x)).to_bits()).collect();
        assert_eq!(one, want, "{name}: 1-thread gradient against the formula");
        for threads in [2, 3] {
            set_num_threads(threads);
            assert_eq!(grad_bits(&x, &w, op), one, "{name}: {threads} threads against 1");
        }
    }
    set_num_threads(old_threads);
    set_min_work_per_thread(old_work);
}

/// A convolution's bias gradient is a reduction over batch and pixels, split over threads by
/// output channel: the same bits on 1, 2 and 3 threads, and the same as the output gradient
/// summed per channel on one thread.
#[test]
fn conv_bias_gradient_is_bit_identical_on_1_2_3_threads() {
    let (old_threads, old_work) = (num_threads(), min_work_per_thread());
    set_min_work_per_thread(0);
    let mut rng = StdRng::seed_from_u64(5);
    // LeNet's first layer at batch 8, with 7 output channels so ranges split unevenly.
    let x = Tensor::<f32>::rand_uniform(&[8, 1, 28, 28], -1.0, 1.0, &mut rng);
    let w = Tensor::<f32>::rand_uniform(&[7, 1, 5, 5], -0.5, 0.5, &mut rng);
    let b = Tensor::<f32>::rand_uniform(&[7], -0.5, 0.5, &mut rng);
    let gy = Tensor::<f32>::rand_uniform(&[8, 7, 28, 28], -1.0, 1.0, &mut rng);
    let opts = ferrograd_tensor::Conv2dOptions { padding: [2, 2], ..Default::default() };
    let bias_grad = || {
        let bv = Var::leaf(b.clone());
        let y = Var::constant(x.clone()).conv2d(&Var::constant(w.clone()), Some(&bv), &opts);
        let grads = y.mul(&Var::constant(gy.clone())).sum().backward();
        grads.get(&bv).expect("the bias has a gradient").to_vec().into_iter().map(f32::to_bits).collect::<Vec<_>>()
    };
    set_num_threads(1);
    let one = bias_grad();
    let want: Vec<u32> = gy.sum_dims(&[0, 2, 3], false).to_vec().into_iter().map(f32::to_bits).collect();
    assert_eq!(one, want, "1-thread bias gradient against the per-channel sum");
    for threads in [2, 3] {
        set_num_threads(threads);
        assert_eq!(bias_grad(), one, "{threads} threads against 1");
    }
    set_num_threads(old_threads);
    set_min_work_per_thread(old_work);
}
