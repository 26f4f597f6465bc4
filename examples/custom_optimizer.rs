//! A user-written optimizer: signSGD with momentum ("Signum", Bernstein et al. 2018) as an
//! `UpdateRule`, training a small two-layer MLP (a `#[derive(Module)]` struct of `Linear`
//! layers) on seeded synthetic regression data. The rule is all a new optimizer needs: the
//! `Optim` driver brings parameter groups (here the weights and the biases, split by their
//! dotted names), weight decay, skipped missing gradients and state save/load.
//!
//! `cargo run --release --example custom_optimizer`

use ferrograd::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Signum: `m = beta * m + (1 - beta) * g`, `param -= lr * sign(m)`.
#[derive(Clone)]
struct Signum {
    beta: f64,
}

impl<F: Float> UpdateRule<F> for Signum {
    /// The momentum, one tensor per parameter (saved as `buf`).
    type State = Tensor<F>;

    fn init_state(&self, param: &Tensor<F>) -> Tensor<F> {
        Tensor::zeros(param.shape())
    }

    fn update(&self, group: &GroupOptions, param: &mut Tensor<F>, grad: &Tensor<F>, m: &mut Tensor<F>, _step: u64) {
        let (beta, lr) = (F::from_f64(self.beta), F::from_f64(group.lr));
        m.zip_inplace(grad, "signum momentum", |m, g| beta * m + (F::one() - beta) * g);
        // `signum` of 0 is 1 for floats; a zero momentum should not move the weight.
        param.zip_inplace(m, "signum step", |p, m| if m == F::zero() { p } else { p - lr * m.signum() });
    }
}

/// `fc2(tanh(fc1(x)))`.
#[derive(Module)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(inputs: usize, hidden: usize, rng: &mut StdRng) -> Self {
        Mlp { fc1: Linear::new(inputs, hidden, rng), fc2: Linear::new(hidden, 1, rng) }
    }

    fn forward(&self, x: &Var) -> Var {
        self.fc2.forward(&self.fc1.forward(x).tanh())
    }
}

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    // y = sin(x0) + x1 * x2 on 256 points of [-2, 2]^3.
    let x = Tensor::<f32>::rand_uniform(&[256, 3], -2.0, 2.0, &mut rng);
    let y = Tensor::from_vec(x.to_vec().chunks(3).map(|r| r[0].sin() + r[1] * r[2]).collect(), &[256, 1]);
    let (x, y) = (Var::constant(x), Var::constant(y));

    let model = Mlp::new(3, 32, &mut rng);
    let mse = || mse_loss(&model.forward(&x), &y);

    // Weights in one group, biases in their own: a smaller lr and no weight decay.
    let (biases, weights): (Vec<_>, Vec<_>) =
        model.named_parameters().into_iter().partition(|(n, _)| n.ends_with("bias"));
    let params = |named: Vec<(String, Param)>| named.into_iter().map(|(_, p)| p).collect::<Vec<_>>();
    let mut opt = Optim::new(Signum { beta: 0.9 }, params(weights), GroupOptions::lr(0.01).weight_decay(1e-4));
    opt.add_group(params(biases), GroupOptions::lr(0.005));

    let first = mse().data().item();
    let mut last = first;
    for step in 0..=400 {
        let loss = mse();
        last = loss.data().item();
        if step % 50 == 0 {
            println!("step {step:4}  loss {last:.4}");
        }
        opt.step(&loss.backward());
        if step == 250 {
            opt.set_lr(0.002);
        }
    }
    println!("loss fell from {first:.4} to {last:.4}");
    if last.is_nan() || last >= first * 0.5 {
        eprintln!("custom_optimizer: the loss did not fall enough");
        std::process::exit(1);
    }
}
