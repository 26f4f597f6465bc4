//! A Hessian-vector product of a small MLP's loss, by differentiating the gradient
//! (`create_graph`), checked against central differences of the gradient. The MLP is a
//! `#[derive(Module)]` struct of `Linear` layers: gradients of any order are taken with respect
//! to its parameters directly (a parameter's `var()` is the leaf its gradients are found by).
//!
//! `cargo run --release --example higher_order`

use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

/// A 6-8-3 tanh MLP.
#[derive(Module)]
struct Mlp<F: Float = f32> {
    hidden: Linear<F>,
    out: Linear<F>,
}

impl<F: Float> Mlp<F> {
    fn forward(&self, x: &Var<F>) -> Var<F> {
        self.out.forward(&self.hidden.forward(x).tanh())
    }
}

/// The gradient of the loss with respect to every parameter at their current values.
fn gradient(model: &Mlp<f64>, x: &Var<f64>, labels: &Tensor<i64>) -> Vec<Tensor<f64>> {
    let grads = cross_entropy(&model.forward(x), labels).backward();
    model.parameters().iter().map(|p| grads.get_param(p).expect("every parameter is used").clone()).collect()
}

fn main() {
    let mut rng = StdRng::seed_from_u64(42);
    let model = Mlp::<f64> { hidden: Linear::new(6, 8, &mut rng), out: Linear::new(8, 3, &mut rng) };
    let params = model.parameters();
    let direction: Vec<Tensor<f64>> =
        params.iter().map(|p| Tensor::rand_normal(&p.shape(), 0.0, 1.0, &mut rng)).collect();
    let x = Var::constant(Tensor::rand_normal(&[16, 6], 0.0, 1.0, &mut rng));
    let labels = Tensor::from_fn(&[16], |i| (i % 3) as i64);

    // Hv = d/dp (∇L(p) · v): one backward with create_graph, one through the result.
    let leaves: Vec<Var<f64>> = params.iter().map(Param::var).collect();
    let g = grad(&[cross_entropy(&model.forward(&x), &labels)], &leaves, None, true);
    let gv = g
        .iter()
        .zip(&direction)
        .map(|(gi, v)| gi.as_ref().expect("used").mul(&Var::constant(v.clone())).sum())
        .reduce(|a, b| a.add(&b))
        .expect("four parameters");
    let hv: Vec<Tensor<f64>> = grad(&[gv], &leaves, None, false).into_iter().map(|h| h.unwrap().into_data()).collect();

    // (∇L(p + εv) - ∇L(p - εv)) / 2ε, moving the model's own parameters and putting them back.
    let eps = 1e-5;
    let start: Vec<Tensor<f64>> = params.iter().map(Param::value).collect();
    let shifted = |sign: f64| -> Vec<Tensor<f64>> {
        for ((p, p0), v) in params.iter().zip(&start).zip(&direction) {
            p.set(p0.add(&v.mul_scalar(sign * eps)));
        }
        gradient(&model, &x, &labels)
    };
    let (plus, minus) = (shifted(1.0), shifted(-1.0));
    for (p, p0) in params.iter().zip(start) {
        p.set(p0);
    }
    let mut worst = 0.0f64;
    for ((name, _), (h, (up, down))) in model.named_parameters().iter().zip(hv.iter().zip(plus.iter().zip(&minus))) {
        let fd = up.sub(down).div_scalar(2.0 * eps);
        let err = h.max_abs_diff(&fd);
        let scale = fd.abs().max().item().max(1e-3);
        println!("{name:>13} {:?}: max |Hv - FD| = {err:.3e} (max |FD| = {scale:.3e})", h.shape());
        worst = worst.max(err / scale);
    }
    println!("worst relative difference: {worst:.3e}");
    if worst > 1e-5 {
        eprintln!("Hessian-vector product disagrees with finite differences");
        std::process::exit(1);
    }
}
