//! A user-defined architecture: a residual MLP whose blocks are `x + W2 gelu(W1 LayerNorm(x))`
//! (the pre-norm block of transformer MLPs), written as plain structs of layers with
//! `#[derive(Module)]`: the fields are the parameter tree, so nothing is listed by hand and no
//! layer can be left out of training, saving or eval mode. The block's gradients are checked
//! with `gradcheck_module` in f64; then the f32 model is trained with plain SGD, the update
//! written inline, on a seeded synthetic regression task, and printed as it learns.
//!
//! Exits non-zero unless the final loss is below a quarter of the first.
//!
//! `cargo run --release --example custom_layer`

use ferrograd::nn::check::gradcheck_module;
use ferrograd::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `x + fc2(gelu(fc1(norm(x))))`: the width stays `dim`, the hidden layer is `hidden` wide.
#[derive(Module)]
struct ResidualBlock<F: Float = f32> {
    norm: LayerNorm<F>,
    fc1: Linear<F>,
    fc2: Linear<F>,
}

impl<F: Float> ResidualBlock<F> {
    fn new(dim: usize, hidden: usize, rng: &mut StdRng) -> Self {
        ResidualBlock {
            norm: LayerNorm::new(&[dim]),
            fc1: Linear::new(dim, hidden, rng),
            fc2: Linear::new(hidden, dim, rng),
        }
    }

    fn forward(&self, x: &Var<F>) -> Var<F> {
        let h = GELU::default().forward(&self.fc1.forward(&self.norm.forward(x)));
        x + &self.fc2.forward(&h)
    }
}

/// An input projection, residual blocks, and a linear read-out. The field names give
/// `named_parameters` PyTorch's names: `blocks.0.fc1.weight`.
#[derive(Module)]
struct ResidualMlp<F: Float = f32> {
    input: Linear<F>,
    blocks: Vec<ResidualBlock<F>>,
    head: Linear<F>,
}

impl<F: Float> ResidualMlp<F> {
    fn new(inputs: usize, dim: usize, depth: usize, rng: &mut StdRng) -> Self {
        ResidualMlp {
            input: Linear::new(inputs, dim, rng),
            blocks: (0..depth).map(|_| ResidualBlock::new(dim, 2 * dim, rng)).collect(),
            head: Linear::new(dim, 1, rng),
        }
    }

    fn forward(&self, x: &Var<F>) -> Var<F> {
        let h = self.blocks.iter().fold(self.input.forward(x), |h, block| block.forward(&h));
        self.head.forward(&h)
    }
}

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    let (n, inputs) = (256, 4);

    // The block's backward against finite differences, for its input and every parameter (a
    // failure would name the parameter, as in `fc1.weight[3, 1]`).
    let block = ResidualBlock::<f64>::new(4, 8, &mut rng);
    let probe = Tensor::<f64>::rand_uniform(&[3, 4], -1.0, 1.0, &mut rng);
    gradcheck_module(&block, &probe).expect("the residual block's gradients");
    println!("gradcheck_module: the residual block's gradients match finite differences");

    // Target: a smooth nonlinear function of the inputs, y = sin(x0 + x1) + x2 * x3 / 2.
    let x = Tensor::<f32>::rand_uniform(&[n, inputs], -1.5, 1.5, &mut rng);
    let xs = x.to_vec();
    let y = Tensor::from_fn(&[n, 1], |r| {
        let v = &xs[r * inputs..(r + 1) * inputs];
        (v[0] + v[1]).sin() + 0.5 * v[2] * v[3]
    });
    let (x, y) = (Var::constant(x), Var::constant(y));

    let model = ResidualMlp::new(inputs, 32, 2, &mut rng);
    let named = model.named_parameters();
    let count: usize = named.iter().map(|(_, p)| p.numel()).sum();
    println!("{} parameter tensors, {count} values; e.g. {}", named.len(), named[3].0);

    let params = model.parameters();
    let lr = 0.05;
    let steps = 200;
    let mut first = None;
    let mut last = f32::NAN;
    for step in 0..steps {
        let loss = (&model.forward(&x) - &y).square().mean();
        last = loss.item();
        first.get_or_insert(last);
        let grads = loss.backward();
        for p in &params {
            let g = grads.get_param(p).expect("every parameter reaches the loss").clone();
            p.update(|t| t.add_scaled_(&g, -lr));
        }
        if step % 20 == 0 || step == steps - 1 {
            println!("step {step:3}  mse {last:.5}");
        }
    }
    let first = first.expect("at least one step");
    println!("mse {first:.5} -> {last:.5} ({:.1}x lower)", first / last);
    // A NaN loss fails too.
    if last.is_nan() || last >= first / 4.0 {
        eprintln!("training did not reduce the loss to a quarter of its start");
        std::process::exit(1);
    }
}
