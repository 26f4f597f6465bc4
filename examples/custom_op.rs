//! A user-defined differentiable op: a fused swish (`x * sigmoid(beta * x)`) with a learnable
//! `beta`, written as a `CustomOp` (one forward kernel on tensors, a backward in `Var` ops), then
//! checked with gradcheck and gradgradcheck and used in a few steps of gradient descent.
//!
//! `cargo run --release --example custom_op`

use ferrograd::autograd::check::{gradcheck, gradgradcheck};
use ferrograd::autograd::CustomOp;
use ferrograd::prelude::*;

/// `swish(x, beta) = x * sigmoid(beta * x)`; `beta` is a one-element tensor.
struct Swish;

impl<F: Float> CustomOp<F> for Swish {
    fn name(&self) -> &'static str {
        "swish"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F> {
        let beta = inputs[1].item();
        // One pass over the data instead of the three that composing ops would take.
        inputs[0].map(|x| x / (F::one() + (-beta * x).exp()))
    }

    fn backward(&self, inputs: &[Var<F>], _output: &Var<F>, grad: &Var<F>) -> Vec<Option<Var<F>>> {
        let (x, beta) = (&inputs[0], &inputs[1]);
        let s = x.mul(beta).sigmoid();
        let ds = s.mul(&s.rsub_scalar(F::one())); // sigmoid'(beta x)
                                                  // d/dx = s + x beta s'(beta x); d/dbeta = x² s'(beta x), summed over x's elements.
        let dx = s.add(&x.mul(beta).mul(&ds));
        let dbeta = x.square().mul(&ds).mul(grad).sum().reshape(beta.shape());
        vec![Some(grad.mul(&dx)), Some(dbeta)]
    }
}

fn main() {
    let x = Tensor::from_vec(vec![-2.0f64, -0.5, 0.1, 0.7, 1.5, 3.0], &[2, 3]);
    let beta = Tensor::from_vec(vec![1.3f64], &[1]);
    let f = |v: &[Var<f64>]| Var::apply_op(Swish, &[&v[0], &v[1]]);
    gradcheck(f, &[x.clone(), beta.clone()]).expect("swish gradient");
    gradgradcheck(f, &[x.clone(), beta]).expect("swish second derivative");
    println!("swish: gradcheck and gradgradcheck pass");

    // Fit beta so that swish(x, beta) matches a target made with beta = 0.6.
    let target = Var::constant(x.map(|v| v / (1.0 + (-0.6 * v).exp())));
    let input = Var::constant(x);
    let mut beta = Tensor::from_vec(vec![2.0f64], &[1]);
    for step in 0..200 {
        let b = Var::leaf(beta.clone());
        let loss = Var::apply_op(Swish, &[&input, &b]).sub(&target).square().mean();
        let g = loss.backward();
        beta = beta.sub(&g.get(&b).unwrap().mul_scalar(2.0));
        if step % 50 == 0 {
            println!("step {step:3}: loss {:.3e}, beta {:.4}", loss.item(), beta.item());
        }
    }
    println!("fitted beta = {:.4} (target 0.6)", beta.item());
    assert!((beta.item() - 0.6).abs() < 1e-2, "gradient descent did not recover beta");
}
