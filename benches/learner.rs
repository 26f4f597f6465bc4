//! What the Learner costs over a hand-written loop (issue 13: within 3% of the main job's
//! epoch time, and logging every step under 2% more).
//!
//! Three ways to train the main job's MLP (784-128-64-10, Adam lr 1e-3, batch 32, accuracy
//! counted, a progress bar hidden when stderr is not a terminal) for one epoch over the first
//! `LEARNER_BENCH_SAMPLES` MNIST training images (default 12800, 400 steps):
//!
//! - `hand`: the loop `examples/mnist_mlp.rs` had before the Learner (forward, loss, a finite
//!   check of the loss, backward, Adam, accuracy, the bar);
//! - `learner`: the Learner as the main job builds it (Accuracy, ProgressBar, the default
//!   TerminateOnNaN, which also checks every gradient);
//! - `learner+logs`: the same with `--logdir`'s loggers, writing every step: JSON lines and
//!   TensorBoard scalars per step, CSV and the SVG curves per epoch.
//!
//! The variants take turns for `LEARNER_BENCH_ROUNDS` rounds (default 7), each from the same
//! initial weights and batch order; the report gives each one's median and minimum thread CPU
//! time (from /proc/thread-self/schedstat, so other processes on the machine do not count) and
//! wall time, and the ratios of the medians to `hand`. It also checks that `hand` and `learner`
//! end with the same weights, bit for bit.
//!
//! ```sh
//! cargo bench --bench learner
//! ```

use std::path::PathBuf;
use std::time::Instant;

use ferrograd::nn::data::{DataLoader, Mnist, TensorDataset};
use ferrograd::nn::layers::{Linear, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::train::{Accuracy, CsvLogger, CurvesPlot, JsonlLogger, Learner, ProgressBar, TensorBoardLogger};

fn mlp() -> Sequential {
    let mut rng = StdRng::seed_from_u64(0);
    Sequential::new()
        .add(Linear::new(784, 128, &mut rng))
        .add(ReLU)
        .add(Linear::new(128, 64, &mut rng))
        .add(ReLU)
        .add(Linear::new(64, 10, &mut rng))
}

fn adam(model: &Sequential) -> Optim<f32, Adam> {
    Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3))
}

/// This thread's CPU time in seconds (Linux), or `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

/// The hand-written epoch of the main job before the Learner.
fn hand(model: &Sequential, loader: &DataLoader<f32, i64>) -> (f64, usize) {
    let mut opt = adam(model);
    let bar = indicatif::ProgressBar::new(loader.num_batches() as u64);
    let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
    for (images, labels) in loader.iter_epoch(0) {
        let n = labels.numel();
        let x = Var::constant(images);
        let logits = model.forward(&x);
        let loss = cross_entropy(&logits, &labels);
        let value = loss.item();
        assert!(value.is_finite(), "the loss is {value}");
        opt.step(&loss.backward());
        loss_sum += f64::from(value) * n as f64;
        seen += n;
        correct += logits.data().argmax(1, false).eq(&labels).to_vec().iter().filter(|&&b| b).count();
        bar.inc(1);
    }
    bar.finish_and_clear();
    (loss_sum / seen as f64, correct)
}

fn learner(model: &Sequential, loader: &DataLoader<f32, i64>, logdir: Option<&PathBuf>) -> f64 {
    let mut learner =
        Learner::new(model, adam(model), cross_entropy).metric(Accuracy::new()).callback(ProgressBar::new()).quiet();
    if let Some(dir) = logdir {
        learner = learner
            .callback(CsvLogger::new(dir.join("history.csv")))
            .callback(JsonlLogger::new(dir.join("log.jsonl")).log_every_n_steps(1))
            .callback(TensorBoardLogger::new(dir).log_every_n_steps(1))
            .callback(CurvesPlot::new(dir.join("curves.svg")));
    }
    let history = learner.fit(loader, None, 1).expect("training runs");
    history.last().and_then(|l| l.get("loss")).expect("a loss")
}

fn weights(model: &Sequential) -> Vec<u32> {
    model.parameters().iter().flat_map(|p| p.value().to_vec()).map(f32::to_bits).collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() {
    ferrograd::tensor::set_num_threads(1);
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (samples, rounds) = (env("LEARNER_BENCH_SAMPLES", 12800), env("LEARNER_BENCH_ROUNDS", 7).max(1));
    let mnist = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).expect("MNIST in data/mnist");
    let n = samples.min(mnist.train_labels.numel());
    let images = mnist.train_images.narrow(0, 0, n).reshape(&[n, 784]);
    let loader = DataLoader::new(TensorDataset::new(images, mnist.train_labels.narrow(0, 0, n)), 32).shuffle(0);
    let names = ["hand", "learner", "learner+logs"];
    let (mut cpu, mut wall) = (vec![Vec::new(); 3], vec![Vec::new(); 3]);
    let root = std::env::temp_dir().join(format!("ferrograd-bench-learner-{}", std::process::id()));
    let mut final_weights: Vec<Option<Vec<u32>>> = vec![None; 3];
    let mut losses = [0.0f64; 3];
    for round in 0..rounds {
        for k in 0..3 {
            let v = (round + k) % 3; // each variant goes first, second and third in turn
            let model = mlp();
            let logdir = root.join(format!("round{round}"));
            let (c0, t0) = (cpu_seconds(), Instant::now());
            losses[v] = match v {
                0 => hand(&model, &loader).0,
                1 => learner(&model, &loader, None),
                _ => learner(&model, &loader, Some(&logdir)),
            };
            wall[v].push(t0.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (c0, cpu_seconds()) {
                cpu[v].push(b - a);
            }
            final_weights[v] = Some(weights(&model));
            let _ = std::fs::remove_dir_all(&logdir);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "one epoch of the main job's MLP over {n} MNIST images ({} steps of 32), {rounds} rounds, 1 thread",
        loader.num_batches()
    );
    println!(
        "{:<14} {:>12} {:>10} {:>12} {:>10} {:>9}",
        "variant", "cpu median", "cpu min", "wall median", "wall min", "cpu/hand"
    );
    let base = if cpu[0].is_empty() { median(&wall[0]) } else { median(&cpu[0]) };
    for (v, name) in names.iter().enumerate() {
        let (cm, cmin) = if cpu[v].is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (median(&cpu[v]), cpu[v].iter().copied().fold(f64::INFINITY, f64::min))
        };
        let wmin = wall[v].iter().copied().fold(f64::INFINITY, f64::min);
        let ratio = if cpu[v].is_empty() { median(&wall[v]) / base } else { cm / base };
        println!(
            "{name:<14} {cm:>10.3} s {cmin:>8.3} s {:>10.3} s {wmin:>8.3} s {:>+8.1}%",
            median(&wall[v]),
            100.0 * (ratio - 1.0)
        );
    }
    let same = final_weights[0] == final_weights[1] && final_weights[1] == final_weights[2];
    println!(
        "training loss {:.6} / {:.6} / {:.6}; hand-written and Learner weights bit-identical: {}",
        losses[0],
        losses[1],
        losses[2],
        if same { "yes" } else { "NO" }
    );
    assert!(same, "the Learner must train exactly as the hand-written loop");
}
