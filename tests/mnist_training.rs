//! End-to-end training checks across the crates: a short MLP run on real MNIST (1000 Adam steps of
//! batch 32, a third of an epoch) must pass 90% test accuracy, and
//! an optimizer whose state went through a safetensors file mid-training must continue exactly
//! as if it had never stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrograd::nn::checkpoint::{load_module, load_tensors, save_module, save_tensors};
use ferrograd::nn::data::{DataLoader, Mnist};
use ferrograd::nn::layers::{Linear, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

fn mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .add(Linear::new(784, 128, &mut rng))
        .add(ReLU)
        .add(Linear::new(128, 64, &mut rng))
        .add(ReLU)
        .add(Linear::new(64, 10, &mut rng))
}

fn mnist() -> Mnist {
    Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).expect("the MNIST files in data/mnist")
}

/// One Adam step on a batch of `[n, 1, 28, 28]` images; returns the loss.
fn train_step(model: &Sequential, opt: &mut impl Optimizer<f32>, images: &Tensor<f32>, labels: &Tensor<i64>) -> f32 {
    let n = labels.numel();
    let loss = cross_entropy(&model.forward(&Var::constant(images.reshape(&[n, 784]))), labels);
    let value = loss.item();
    opt.step(&loss.backward());
    value
}

#[test]
fn mlp_learns_mnist_in_1000_steps() {
    let data = mnist();
    let model = mlp(0);
    let mut opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
    let loader = DataLoader::new(data.train(), 32).shuffle(0);
    for (images, labels) in loader.iter_epoch(0).take(1000) {
        assert!(train_step(&model, &mut opt, &images, &labels).is_finite());
    }
    let n = 2000;
    let x = Var::constant(data.test_images.narrow(0, 0, n).reshape(&[n, 784]));
    let pred = no_grad(|| model.forward(&x)).data().argmax(1, false);
    let correct = pred.eq(&data.test_labels.narrow(0, 0, n)).to_vec().iter().filter(|&&b| b).count();
    let acc = correct as f64 / n as f64;
    assert!(acc > 0.90, "test accuracy after 1000 steps of batch 32 is {:.2}%, expected > 90%", 100.0 * acc);
}

/// A file in the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        TempFile(std::env::temp_dir().join(format!("ferrograd-{name}-{}.safetensors", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bits(model: &Sequential) -> BTreeMap<String, Vec<u32>> {
    model.state_dict().into_iter().map(|(k, t)| (k, t.to_vec().iter().map(|v| v.to_bits()).collect())).collect()
}

#[test]
fn optimizer_state_through_safetensors_resumes_bitwise() {
    let data = mnist();
    let loader = DataLoader::new(data.train(), 32).shuffle(1);
    let batches: Vec<_> = loader.iter_epoch(0).take(40).collect();
    let (before, after) = batches.split_at(20);
    let options = || GroupOptions::lr(1e-3).weight_decay(1e-4);

    let reference = mlp(7);
    let mut opt = Optim::new(Adam::default(), reference.parameters(), options());
    for (x, y) in before {
        train_step(&reference, &mut opt, x, y);
    }
    let (model_file, optim_file) = (TempFile::new("resume-model"), TempFile::new("resume-optim"));
    save_module(&model_file.0, &reference).unwrap();
    save_tensors(&optim_file.0, &opt.state_dict()).unwrap();
    let reference_losses: Vec<u32> =
        after.iter().map(|(x, y)| train_step(&reference, &mut opt, x, y).to_bits()).collect();

    // A different seed, so nothing but the files can make the two runs agree.
    let resumed = mlp(8);
    load_module(&model_file.0, &resumed).unwrap();
    let mut fresh = Optim::new(Adam::default(), resumed.parameters(), options());
    fresh.load_state_dict(&load_tensors::<f32>(&optim_file.0).unwrap()).unwrap();
    let resumed_losses: Vec<u32> =
        after.iter().map(|(x, y)| train_step(&resumed, &mut fresh, x, y).to_bits()).collect();

    assert_eq!(resumed_losses, reference_losses, "losses after resuming differ");
    assert_eq!(bits(&resumed), bits(&reference), "parameters after resuming differ");
    let state_bits = |o: &Optim<f32, Adam>| -> BTreeMap<String, Vec<u32>> {
        o.state_dict().into_iter().map(|(k, t)| (k, t.to_vec().iter().map(|v| v.to_bits()).collect())).collect()
    };
    assert_eq!(state_bits(&fresh), state_bits(&opt), "optimizer state after resuming differs");
}
