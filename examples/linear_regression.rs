//! The smallest training loop: fit `y = 3x + noise` (1000 seeded samples, x ~ U(-1, 1), noise
//! ~ N(0, 0.1)) with a one-input `Linear` layer, mean squared error, and SGD with momentum over
//! shuffled mini-batches. Prints the loss per epoch, writes the history to a CSV, and reports
//! the fitted slope, intercept and R².
//!
//! ```sh
//! cargo run --release --example linear_regression -- [--epochs 20] [--batch-size 32]
//!     [--lr 0.05] [--momentum 0.9] [--seed 0] [--history linear_regression_history.csv]
//! ```
//!
//! Exits with an error if the slope is not within 0.05 of 3 (so CI notices a broken optimizer).

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;

// Tensors, Var, Linear, mse_loss, DataLoader, Module, Optim and Sgd: all in the prelude.
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

const SAMPLES: usize = 1000;
const TRUE_SLOPE: f32 = 3.0;
const NOISE_STD: f32 = 0.1;

struct Args {
    epochs: usize,
    batch_size: usize,
    lr: f64,
    momentum: f64,
    seed: u64,
    history: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        epochs: 20,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        seed: 0,
        history: PathBuf::from("linear_regression_history.csv"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: cannot parse `{v}`");
        match flag.as_str() {
            "--epochs" => a.epochs = value()?.parse().map_err(|_| bad("epochs"))?,
            "--batch-size" => a.batch_size = value()?.parse().map_err(|_| bad("batch size"))?,
            "--lr" => a.lr = value()?.parse().map_err(|_| bad("lr"))?,
            "--momentum" => a.momentum = value()?.parse().map_err(|_| bad("momentum"))?,
            "--seed" => a.seed = value()?.parse().map_err(|_| bad("seed"))?,
            "--history" => a.history = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("flags: --epochs N --batch-size N --lr X --momentum X --seed N --history FILE.csv");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if a.epochs == 0 || a.batch_size == 0 || a.lr.is_nan() || a.lr <= 0.0 || !(0.0..1.0).contains(&a.momentum) {
        return Err("epochs and batch size must be positive, lr > 0 and 0 <= momentum < 1".into());
    }
    Ok(a)
}

/// R² = 1 - SS_res / SS_tot of predictions `pred` against targets `y`.
fn r_squared(pred: &Tensor<f32>, y: &Tensor<f32>) -> f64 {
    let (p, y) = (pred.to_vec(), y.to_vec());
    let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64;
    let ss_res: f64 = p.iter().zip(&y).map(|(&p, &y)| (f64::from(y) - f64::from(p)).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|&y| (f64::from(y) - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let x = Tensor::<f32>::rand_uniform(&[SAMPLES, 1], -1.0, 1.0, &mut rng);
    let noise = Tensor::<f32>::rand_normal(&[SAMPLES, 1], 0.0, NOISE_STD, &mut rng);
    let y = &(&x * TRUE_SLOPE) + &noise;

    let model = Linear::new(1, 1, &mut rng);
    let sgd = Sgd { momentum: args.momentum, ..Sgd::default() };
    let mut opt = Optim::new(sgd, model.parameters(), GroupOptions::lr(args.lr));
    let loader = DataLoader::new(TensorDataset::new(x.clone(), y.clone()), args.batch_size).shuffle(args.seed);

    let mut csv = std::fs::File::create(&args.history)?;
    writeln!(csv, "epoch,train_loss,slope,intercept")?;
    for epoch in 1..=args.epochs {
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for (xb, yb) in loader.iter_epoch(epoch as u64) {
            let loss = mse_loss(&model.forward(&Var::constant(xb)), &Var::constant(yb.clone()));
            let value = loss.item();
            if !value.is_finite() {
                return Err(format!("epoch {epoch}: the loss is {value}; stopping (try a lower --lr)").into());
            }
            opt.step(&loss.backward());
            loss_sum += f64::from(value) * yb.size(0) as f64;
            seen += yb.size(0);
        }
        let (slope, intercept) = (model.weight.value().item(), model.bias.as_ref().map_or(0.0, |b| b.value().item()));
        let train_loss = loss_sum / seen as f64;
        println!("epoch {epoch:3}: mse {train_loss:.6}, slope {slope:.4}, intercept {intercept:+.4}");
        writeln!(csv, "{epoch},{train_loss:.8},{slope:.6},{intercept:.6}")?;
    }

    let slope = model.weight.value().item();
    let intercept = model.bias.as_ref().map_or(0.0, |b| b.value().item());
    let pred = no_grad(|| model.forward(&Var::constant(x.clone()))).data().clone();
    let r2 = r_squared(&pred, &y);
    println!(
        "fitted y = {slope:.4} x {intercept:+.4} (true slope {TRUE_SLOPE}, noise std {NOISE_STD}); R² = {r2:.4}; history in {}",
        args.history.display()
    );
    if (slope - TRUE_SLOPE).abs() > 0.05 {
        return Err(format!("the fitted slope {slope:.4} is not within 0.05 of {TRUE_SLOPE}").into());
    }
    Ok(())
}
