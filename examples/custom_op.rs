//! A user-defined differentiable op: a fused swish (`x * sigmoid(beta * x)`) with a learnable
//! `beta`, written as a `CustomOp` (one forward kernel on tensors, a backward in `Var` ops) and
//! checked with gradcheck and gradgradcheck; then wrapped in a layer whose `beta` is a parameter
//! (`#[derive(Module)]`), checked again as a module (`gradcheck_module`, which would name
//! `beta` in a failure), and fitted with SGD.
//!
//! `cargo run --release --example custom_op`

use ferrograd::autograd::check::{gradcheck, gradgradcheck};
use ferrograd::autograd::CustomOp;
use ferrograd::nn::check::{gradcheck_module, gradgradcheck_module};
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

/// The op as a layer with a learnable `beta`.
#[derive(Module)]
struct SwishLayer<F: Float = f32> {
    beta: Param<F>,
}

impl<F: Float> SwishLayer<F> {
    fn new(beta: F) -> Self {
        SwishLayer { beta: Param::new(Tensor::from_vec(vec![beta], &[1])) }
    }

    fn forward(&self, x: &Var<F>) -> Var<F> {
        Var::apply_op(Swish, &[x, &self.beta.var()])
    }
}

fn main() {
    let x = Tensor::from_vec(vec![-2.0f64, -0.5, 0.1, 0.7, 1.5, 3.0], &[2, 3]);
    let beta = Tensor::from_vec(vec![1.3f64], &[1]);
    let f = |v: &[Var<f64>]| Var::apply_op(Swish, &[&v[0], &v[1]]);
    gradcheck(f, &[x.clone(), beta.clone()]).expect("swish gradient");
    gradgradcheck(f, &[x.clone(), beta]).expect("swish second derivative");
    println!("swish: gradcheck and gradgradcheck pass");

    // The same checks on the layer: with respect to its input and its parameter `beta`.
    let layer = SwishLayer::<f64>::new(1.3);
    gradcheck_module(&layer, &x).expect("swish layer gradient");
    gradgradcheck_module(&layer, &x).expect("swish layer second derivative");
    println!("swish layer: gradcheck_module and gradgradcheck_module pass");

    // Fit beta so that the layer matches a target made with beta = 0.6.
    let target = Var::constant(x.map(|v| v / (1.0 + (-0.6 * v).exp())));
    let input = Var::constant(x);
    let layer = SwishLayer::<f64>::new(2.0);
    let mut opt = Optim::new(Sgd::default(), layer.parameters(), GroupOptions::lr(2.0));
    for step in 0..200 {
        let loss = mse_loss(&layer.forward(&input), &target);
        opt.step(&loss.backward());
        if step % 50 == 0 {
            println!("step {step:3}: loss {:.3e}, beta {:.4}", loss.item(), layer.beta.value().item());
        }
    }
    let fitted = layer.beta.value().item();
    println!("fitted beta = {fitted:.4} (target 0.6)");
    assert!((fitted - 0.6).abs() < 1e-2, "gradient descent did not recover beta");
}
