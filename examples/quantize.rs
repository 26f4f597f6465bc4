//! The MNIST MLP (784-128-64-10) in fp32, dynamic int8, static int8 (calibrated on 10 training
//! batches) and QAT int8 (one epoch of fake-quantized fine-tuning from the fp32 weights, then
//! conversion): test accuracy, weight bytes and inference time per batch of 128, in one table.
//!
//! ```sh
//! cargo run --release --example quantize -- [--epochs 3] [--seed 0] [--data-dir data/mnist]
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::nn::data::{DataLoader, Mnist};
use ferrograd::nn::layers::Linear;
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::tuning::quant::{FloatLayer, MinMaxObserver, ObserverConfig, QatLinear, QuantizedSequential};

const BATCH: usize = 128;

/// Three layers and their forward pass (ReLU between them).
fn forward3<M: Module<f32>>(layers: &[M; 3], x: &Var<f32>) -> Var<f32> {
    let h = layers[0].forward(x).relu();
    let h = layers[1].forward(&h).relu();
    layers[2].forward(&h)
}

fn train_epochs<M: Module<f32>>(layers: &[M; 3], mnist: &Mnist, epochs: usize, lr: f64, seed: u64) {
    let params: Vec<_> = layers.iter().flat_map(|l| l.parameters()).collect();
    let mut opt = Optim::new(Adam::default(), params, GroupOptions::lr(lr));
    let loader = DataLoader::new(mnist.train(), 64).shuffle(seed);
    for l in layers {
        l.train(true);
    }
    for epoch in 0..epochs {
        for (images, labels) in loader.iter_epoch(epoch as u64) {
            let n = labels.numel();
            let loss = cross_entropy(&forward3(layers, &Var::constant(images.reshape(&[n, 784]))), &labels);
            opt.step(&loss.backward());
        }
    }
    for l in layers {
        l.eval();
    }
}

/// Test accuracy of a batch -> logits function, in batches of 128.
fn accuracy(mnist: &Mnist, f: impl Fn(&Tensor<f32>) -> Tensor<f32>) -> f64 {
    let n = mnist.test_labels.numel();
    let mut correct = 0usize;
    for start in (0..n).step_by(BATCH) {
        let len = BATCH.min(n - start);
        let x = mnist.test_images.narrow(0, start, len).reshape(&[len, 784]).contiguous();
        let y = mnist.test_labels.narrow(0, start, len);
        correct += f(&x).argmax(1, false).eq(&y).to_vec().iter().filter(|&&b| b).count();
    }
    correct as f64 / n as f64
}

/// Seconds per batch of 128: the best of 9 rounds of 50 calls (the machine is shared).
fn time_per_batch(mnist: &Mnist, f: impl Fn(&Tensor<f32>) -> Tensor<f32>) -> f64 {
    let x = mnist.test_images.narrow(0, 0, BATCH).reshape(&[BATCH, 784]).contiguous();
    (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..50 {
                std::hint::black_box(f(&x));
            }
            t.elapsed().as_secs_f64() / 50.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut epochs, mut seed) = (3usize, 0u64);
    let mut data_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"));
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--epochs" => epochs = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--data-dir" => data_dir = PathBuf::from(value),
            other => return Err(format!("unknown flag `{other}` (flags: --epochs N --seed N --data-dir DIR)").into()),
        }
    }
    ferrograd::tensor::set_num_threads(1);
    let mnist = Mnist::load(&data_dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let fp32 = [Linear::new(784, 128, &mut rng), Linear::new(128, 64, &mut rng), Linear::new(64, 10, &mut rng)];
    let t = Instant::now();
    train_epochs(&fp32, &mnist, epochs, 1e-3, seed);
    println!("fp32 training: {epochs} epochs in {:.1} s", t.elapsed().as_secs_f64());

    let float_layers = [
        FloatLayer::Linear(&fp32[0]),
        FloatLayer::ReLU,
        FloatLayer::Linear(&fp32[1]),
        FloatLayer::ReLU,
        FloatLayer::Linear(&fp32[2]),
    ];
    let dynamic = QuantizedSequential::dynamic(&float_layers);
    let calibration: Vec<Tensor<f32>> =
        (0..10).map(|i| mnist.train_images.narrow(0, i * BATCH, BATCH).reshape(&[BATCH, 784])).collect();
    let calibrated = QuantizedSequential::calibrated(&float_layers, &calibration, || {
        Box::new(MinMaxObserver::new(ObserverConfig::activations()))
    });

    // QAT: copies of the fp32 layers, fine-tuned one epoch with fake quantization.
    let qat: [QatLinear; 3] = std::array::from_fn(|i| {
        let l = Linear::new(fp32[i].in_features(), fp32[i].out_features(), &mut rng);
        l.weight.set(fp32[i].weight.value());
        if let (Some(b), Some(src)) = (&l.bias, &fp32[i].bias) {
            b.set(src.value());
        }
        QatLinear::new(l, 0.01)
    });
    let t = Instant::now();
    train_epochs(&qat, &mnist, 1, 1e-4, seed + 1);
    println!("QAT fine-tuning: 1 epoch in {:.1} s", t.elapsed().as_secs_f64());
    let qat_layers = [
        FloatLayer::Qat(&qat[0]),
        FloatLayer::ReLU,
        FloatLayer::Qat(&qat[1]),
        FloatLayer::ReLU,
        FloatLayer::Qat(&qat[2]),
    ];
    let qat_int8 = QuantizedSequential::from_qat(&qat_layers);

    let fp32_bytes: usize = fp32.iter().map(|l| 4 * l.weight.value().numel()).sum();
    let fp32_fn = |x: &Tensor<f32>| no_grad(|| forward3(&fp32, &Var::constant(x.clone())).into_data());
    let (fp32_acc, fp32_time) = (accuracy(&mnist, fp32_fn), time_per_batch(&mnist, fp32_fn));
    println!("\n| model        | test accuracy | weight bytes | ms / batch of {BATCH} | speed-up |");
    println!("|--------------|---------------|--------------|--------------------|----------|");
    println!(
        "| fp32         | {:>12.2}% | {fp32_bytes:>12} | {:>18.3} | {:>7.2}x |",
        100.0 * fp32_acc,
        1e3 * fp32_time,
        1.0
    );
    for (name, model) in [("dynamic int8", &dynamic), ("static int8", &calibrated), ("QAT int8", &qat_int8)] {
        let (acc, time) = (accuracy(&mnist, |x| model.forward(x)), time_per_batch(&mnist, |x| model.forward(x)));
        println!(
            "| {name:<12} | {:>12.2}% | {:>12} | {:>18.3} | {:>7.2}x |",
            100.0 * acc,
            model.weight_bytes(),
            1e3 * time,
            fp32_time / time
        );
    }
    Ok(())
}
