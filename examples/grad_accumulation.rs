//! Gradient accumulation: a batch too large for memory is split into micro-batches, each one's
//! backward pass gives its gradients, and their weighted sum is the whole batch's gradient,
//! so one optimizer step on the sum equals the step on the whole batch.
//!
//! The program trains two copies of one MLP (seeded synthetic regression data, 8 features,
//! 240 samples): one on the whole batch, one on micro-batches of 64, 64, 64 and 48 samples whose
//! gradients are added with [`Grads::accumulate`](ferrograd::autograd::Grads::accumulate),
//! each weighted by its share of the batch, then checks after every Adam step that both
//! copies agree to 1e-6.
//!
//! `cargo run --release --example grad_accumulation`

use ferrograd::nn::layers::{Linear, Sequential, Tanh};
use ferrograd::nn::loss::mse_loss;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

const SAMPLES: usize = 240;
const MICRO_BATCH: usize = 64;
const STEPS: usize = 10;

fn mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new().add(Linear::new(8, 32, &mut rng)).add(Tanh).add(Linear::new(32, 1, &mut rng))
}

/// The gradient of the mean loss over all of `x`, from micro-batches of at most `size` rows:
/// each micro-batch's mean-loss gradient weighted by its share of the rows.
fn accumulated_grads(model: &Sequential, x: &Tensor, y: &Tensor, size: usize) -> Grads {
    let n = x.size(0);
    let mut total = Grads::default();
    for start in (0..n).step_by(size) {
        let len = size.min(n - start);
        let (xb, yb) = (Var::constant(x.narrow(0, start, len)), Var::constant(y.narrow(0, start, len)));
        let grads = mse_loss(&model.forward(&xb), &yb).backward();
        total += grads * (len as f32 / n as f32);
    }
    total
}

fn max_difference(a: &Sequential, b: &Sequential) -> f32 {
    let (pa, pb) = (a.parameters(), b.parameters());
    pa.iter()
        .zip(&pb)
        .flat_map(|(p, q)| p.value().to_vec().into_iter().zip(q.value().to_vec()).map(|(u, v)| (u - v).abs()))
        .fold(0.0, f32::max)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let x = Tensor::<f32>::rand_uniform(&[SAMPLES, 8], -1.0, 1.0, &mut rng);
    let y =
        Tensor::from_vec(x.to_vec().chunks(8).map(|r| r[0] * r[1] - r[2].sin() + 0.5 * r[7]).collect(), &[SAMPLES, 1]);

    let (whole, micro) = (mlp(7), mlp(7));
    let mut opt_whole = Optim::new(Adam::default(), whole.parameters(), GroupOptions::lr(1e-2));
    let mut opt_micro = Optim::new(Adam::default(), micro.parameters(), GroupOptions::lr(1e-2));
    for step in 1..=STEPS {
        let loss = mse_loss(&whole.forward(&Var::constant(x.clone())), &Var::constant(y.clone()));
        opt_whole.step(&loss.backward());
        opt_micro.step(&accumulated_grads(&micro, &x, &y, MICRO_BATCH));
        let diff = max_difference(&whole, &micro);
        println!("step {step:2}: whole-batch loss {:.5}, largest parameter difference {diff:.2e}", loss.item());
        if diff > 1e-6 {
            eprintln!("grad_accumulation: the micro-batch step differs from the whole batch's by {diff:e}");
            std::process::exit(1);
        }
    }
    println!("{SAMPLES} samples in micro-batches of {MICRO_BATCH}: every step equals the whole batch's to 1e-6");
}
