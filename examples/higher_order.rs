//! A Hessian-vector product of a small MLP's loss, by differentiating the gradient
//! (`create_graph`), checked against central differences of the gradient.
//!
//! `cargo run --release --example higher_order`

use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

/// Cross-entropy of a 6-8-3 tanh MLP on a fixed batch.
fn loss(params: &[Var<f64>], x: &Var<f64>, labels: &Tensor<i64>) -> Var<f64> {
    let h = x.matmul(&params[0]).add(&params[1]).tanh();
    let logits = h.matmul(&params[2]).add(&params[3]);
    logits.log_softmax(1).gather(1, labels).mean().neg()
}

fn gradient(values: &[Tensor<f64>], x: &Var<f64>, labels: &Tensor<i64>) -> Vec<Tensor<f64>> {
    let params: Vec<Var<f64>> = values.iter().map(|t| Var::leaf(t.clone())).collect();
    let grads = loss(&params, x, labels).backward();
    params.iter().map(|p| grads.get(p).expect("every parameter is used").clone()).collect()
}

fn main() {
    let mut rng = StdRng::seed_from_u64(42);
    let shapes: [&[usize]; 4] = [&[6, 8], &[8], &[8, 3], &[3]];
    let values: Vec<Tensor<f64>> = shapes.iter().map(|s| Tensor::rand_normal(s, 0.0, 0.5, &mut rng)).collect();
    let direction: Vec<Tensor<f64>> = shapes.iter().map(|s| Tensor::rand_normal(s, 0.0, 1.0, &mut rng)).collect();
    let x = Var::constant(Tensor::rand_normal(&[16, 6], 0.0, 1.0, &mut rng));
    let labels = Tensor::from_fn(&[16, 1], |i| (i % 3) as i64);

    // Hv = d/dp (∇L(p) · v): one backward with create_graph, one through the result.
    let params: Vec<Var<f64>> = values.iter().map(|t| Var::leaf(t.clone())).collect();
    let g = grad(&[loss(&params, &x, &labels)], &params, None, true);
    let gv = g
        .iter()
        .zip(&direction)
        .map(|(gi, v)| gi.as_ref().expect("used").mul(&Var::constant(v.clone())).sum())
        .reduce(|a, b| a.add(&b))
        .expect("four parameters");
    let hv: Vec<Tensor<f64>> = grad(&[gv], &params, None, false).into_iter().map(|h| h.unwrap().into_data()).collect();

    // (∇L(p + εv) - ∇L(p - εv)) / 2ε
    let eps = 1e-5;
    let shifted = |sign: f64| -> Vec<Tensor<f64>> {
        let moved: Vec<Tensor<f64>> =
            values.iter().zip(&direction).map(|(p, v)| p.add(&v.mul_scalar(sign * eps))).collect();
        gradient(&moved, &x, &labels)
    };
    let (plus, minus) = (shifted(1.0), shifted(-1.0));
    let mut worst = 0.0f64;
    for (i, h) in hv.iter().enumerate() {
        let fd = plus[i].sub(&minus[i]).div_scalar(2.0 * eps);
        let err = h.max_abs_diff(&fd);
        let scale = fd.abs().max().item().max(1e-3);
        println!("param {i} {:?}: max |Hv - FD| = {err:.3e} (max |FD| = {scale:.3e})", shapes[i]);
        worst = worst.max(err / scale);
    }
    println!("worst relative difference: {worst:.3e}");
    if worst > 1e-5 {
        eprintln!("Hessian-vector product disagrees with finite differences");
        std::process::exit(1);
    }
}
