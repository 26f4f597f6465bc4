//! Int8 quantization of two MNIST models, the MLP (784-128-64-10) and the LeNet-5-style CNN
//! (conv 1->6 5x5 pad 2, ReLU, 2x2 max-pool, conv 6->16 5x5, ReLU, 2x2 max-pool, 400-120-84-10),
//! each in four variants:
//! - fp32, trained with Adam;
//! - dynamic int8: int8 weights, each batch's activations quantized with their own range;
//! - static int8: activation ranges calibrated once on 10 training batches (min-max);
//! - QAT int8: a copy of the fp32 model fine-tuned with fake quantization (weights per output
//!   channel, inputs of every Linear and Conv2d per tensor), then converted.
//!
//! One table gives test accuracy, weight bytes and the time per batch of 128 (one thread).
//!
//! ```sh
//! cargo run --release --example quantize -- [--epochs 3] [--cnn-epochs 2] [--qat-steps 300]
//!     [--seed 0] [--data-dir data/mnist]
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::autograd::Param;
use ferrograd::nn::data::{DataLoader, Mnist};
use ferrograd::nn::layers::{Conv2d, Conv2dConfig, Linear, MaxPool2d};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::tuning::quant::{FloatLayer, MinMaxObserver, ObserverConfig, QatConv2d, QatLinear, QuantizedSequential};

const BATCH: usize = 128;
const POOL: [usize; 2] = [2, 2];

/// A layer that converts to a [`FloatLayer`]: the float layers and their QAT wrappers.
trait Convertible: Module<f32> {
    fn float_layer(&self) -> FloatLayer<'_>;
}

impl Convertible for Linear<f32> {
    fn float_layer(&self) -> FloatLayer<'_> {
        FloatLayer::Linear(self)
    }
}

impl Convertible for QatLinear {
    fn float_layer(&self) -> FloatLayer<'_> {
        FloatLayer::Qat(self)
    }
}

impl Convertible for Conv2d<f32> {
    fn float_layer(&self) -> FloatLayer<'_> {
        FloatLayer::Conv2d(self)
    }
}

impl Convertible for QatConv2d {
    fn float_layer(&self) -> FloatLayer<'_> {
        FloatLayer::QatConv2d(self)
    }
}

/// A model on `[n, 1, 28, 28]` images: its forward pass, its layers as modules (for training)
/// and as [`FloatLayer`]s (for conversion).
trait Net {
    fn forward(&self, x: &Var<f32>) -> Var<f32>;
    fn modules(&self) -> Vec<&dyn Module<f32>>;
    fn float_layers(&self) -> Vec<FloatLayer<'_>>;
}

/// Three fully connected layers with ReLU between them.
fn head<L: Module<f32>>(fc: &[L; 3], x: &Var<f32>) -> Var<f32> {
    let h = fc[0].forward(x).relu();
    let h = fc[1].forward(&h).relu();
    fc[2].forward(&h)
}

fn head_layers<L: Convertible>(fc: &[L; 3]) -> [FloatLayer<'_>; 5] {
    [fc[0].float_layer(), FloatLayer::ReLU, fc[1].float_layer(), FloatLayer::ReLU, fc[2].float_layer()]
}

struct Mlp<L> {
    fc: [L; 3],
}

impl<L: Convertible> Net for Mlp<L> {
    fn forward(&self, x: &Var<f32>) -> Var<f32> {
        head(&self.fc, &x.reshape(&[x.shape()[0], 784]))
    }

    fn modules(&self) -> Vec<&dyn Module<f32>> {
        self.fc.iter().map(|l| l as &dyn Module<f32>).collect()
    }

    fn float_layers(&self) -> Vec<FloatLayer<'_>> {
        std::iter::once(FloatLayer::Flatten).chain(head_layers(&self.fc)).collect()
    }
}

struct LeNet<C, L> {
    conv: [C; 2],
    fc: [L; 3],
}

impl<C: Convertible, L: Convertible> Net for LeNet<C, L> {
    fn forward(&self, x: &Var<f32>) -> Var<f32> {
        let pool = MaxPool2d::new(POOL).options;
        let h = self.conv[0].forward(x).relu().max_pool2d(&pool);
        let h = self.conv[1].forward(&h).relu().max_pool2d(&pool);
        head(&self.fc, &h.reshape(&[x.shape()[0], 400]))
    }

    fn modules(&self) -> Vec<&dyn Module<f32>> {
        let conv = self.conv.iter().map(|c| c as &dyn Module<f32>);
        conv.chain(self.fc.iter().map(|l| l as &dyn Module<f32>)).collect()
    }

    fn float_layers(&self) -> Vec<FloatLayer<'_>> {
        let pool = FloatLayer::MaxPool2d(MaxPool2d::new(POOL));
        let [c0, c1] = &self.conv;
        let convs = [c0.float_layer(), FloatLayer::ReLU, pool, c1.float_layer(), FloatLayer::ReLU, pool];
        convs.into_iter().chain([FloatLayer::Flatten]).chain(head_layers(&self.fc)).collect()
    }
}

fn mlp(rng: &mut StdRng) -> Mlp<Linear<f32>> {
    Mlp { fc: [Linear::new(784, 128, rng), Linear::new(128, 64, rng), Linear::new(64, 10, rng)] }
}

fn lenet(rng: &mut StdRng) -> LeNet<Conv2d<f32>, Linear<f32>> {
    let pad2 = Conv2dConfig { padding: [2, 2], ..Default::default() };
    LeNet {
        conv: [Conv2d::with_config(1, 6, [5, 5], pad2, rng), Conv2d::new(6, 16, [5, 5], rng)],
        fc: [Linear::new(400, 120, rng), Linear::new(120, 84, rng), Linear::new(84, 10, rng)],
    }
}

fn copy_param(p: &Param<f32>) -> Param<f32> {
    Param::new(p.value())
}

/// A QAT copy of a trained Linear; 0.01 is PyTorch's averaging constant for the input observer.
fn qat_linear(l: &Linear<f32>) -> QatLinear {
    QatLinear::new(Linear { weight: copy_param(&l.weight), bias: l.bias.as_ref().map(copy_param) }, 0.01)
}

fn qat_conv(c: &Conv2d<f32>) -> QatConv2d {
    let conv = Conv2d { weight: copy_param(&c.weight), bias: c.bias.as_ref().map(copy_param), options: c.options };
    QatConv2d::new(conv, 0.01)
}

/// Adam with batches of 64 for `steps` batches (or whole epochs when `None`); eval mode after.
fn train(net: &impl Net, mnist: &Mnist, epochs: usize, steps: Option<usize>, lr: f64, seed: u64) {
    let params: Vec<_> = net.modules().iter().flat_map(|m| m.parameters()).collect();
    let mut opt = Optim::new(Adam::default(), params, GroupOptions::lr(lr));
    let loader = DataLoader::new(mnist.train(), 64).shuffle(seed);
    net.modules().iter().for_each(|m| m.train(true));
    for epoch in 0..epochs {
        for (images, labels) in loader.iter_epoch(epoch as u64).take(steps.unwrap_or(usize::MAX)) {
            let loss = cross_entropy(&net.forward(&Var::constant(images)), &labels);
            opt.step(&loss.backward());
        }
    }
    net.modules().iter().for_each(|m| m.eval());
}

/// Test accuracy of a batch -> logits function, in batches of 128.
fn accuracy(mnist: &Mnist, f: &dyn Fn(&Tensor<f32>) -> Tensor<f32>) -> f64 {
    let n = mnist.test_labels.numel();
    let mut correct = 0usize;
    for start in (0..n).step_by(BATCH) {
        let len = BATCH.min(n - start);
        let x = mnist.test_images.narrow(0, start, len);
        let y = mnist.test_labels.narrow(0, start, len);
        correct += f(&x).argmax(1, false).eq(&y).to_vec().iter().filter(|&&b| b).count();
    }
    correct as f64 / n as f64
}

/// Seconds per batch of 128: the best of 7 rounds of about 50 ms each (the machine is shared).
fn time_per_batch(mnist: &Mnist, f: &dyn Fn(&Tensor<f32>) -> Tensor<f32>) -> f64 {
    let x = mnist.test_images.narrow(0, 0, BATCH).contiguous();
    let t = Instant::now();
    std::hint::black_box(f(&x));
    let calls = ((0.05 / t.elapsed().as_secs_f64()) as usize).clamp(1, 200);
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                std::hint::black_box(f(&x));
            }
            t.elapsed().as_secs_f64() / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// One row of the table.
struct Row {
    model: &'static str,
    variant: &'static str,
    accuracy: f64,
    bytes: usize,
    seconds: f64,
}

/// The four variants of a trained model: its fp32 row, then dynamic, static and QAT int8.
fn rows<N: Net>(name: &'static str, fp32: &N, qat: &impl Net, mnist: &Mnist) -> Vec<Row> {
    let layers = fp32.float_layers();
    let calibration: Vec<Tensor<f32>> = (0..10).map(|i| mnist.train_images.narrow(0, i * BATCH, BATCH)).collect();
    let int8 = [
        ("dynamic int8", QuantizedSequential::dynamic(&layers)),
        (
            "static int8",
            QuantizedSequential::calibrated(&layers, &calibration, || {
                Box::new(MinMaxObserver::new(ObserverConfig::activations()))
            }),
        ),
        ("QAT int8", QuantizedSequential::from_qat(&qat.float_layers())),
    ];
    let weights = fp32.modules().into_iter().flat_map(|m| m.params()).filter(|(name, _)| *name == "weight");
    let fp32_bytes: usize = weights.map(|(_, p)| 4 * p.value().numel()).sum();
    let fp32_fn = |x: &Tensor<f32>| no_grad(|| fp32.forward(&Var::constant(x.clone())).into_data());
    let mut out = vec![Row {
        model: name,
        variant: "fp32",
        accuracy: accuracy(mnist, &fp32_fn),
        bytes: fp32_bytes,
        seconds: 0.0,
    }];
    for (variant, model) in &int8 {
        let f = |x: &Tensor<f32>| model.forward(x);
        out.push(Row {
            model: name,
            variant,
            accuracy: accuracy(mnist, &f),
            bytes: model.weight_bytes(),
            seconds: 0.0,
        });
    }
    // Timed interleaved, fp32 then each int8 model, twice, keeping the best of each.
    for _ in 0..2 {
        let fp = time_per_batch(mnist, &fp32_fn);
        out[0].seconds = if out[0].seconds == 0.0 { fp } else { out[0].seconds.min(fp) };
        for (row, (_, model)) in out[1..].iter_mut().zip(&int8) {
            let t = time_per_batch(mnist, &|x| model.forward(x));
            row.seconds = if row.seconds == 0.0 { t } else { row.seconds.min(t) };
        }
    }
    out
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut epochs, mut cnn_epochs, mut qat_steps, mut seed) = (3usize, 2usize, 300usize, 0u64);
    let mut data_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"));
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--epochs" => epochs = value.parse()?,
            "--cnn-epochs" => cnn_epochs = value.parse()?,
            "--qat-steps" => qat_steps = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--data-dir" => data_dir = PathBuf::from(value),
            other => {
                return Err(format!(
                    "unknown flag `{other}` (flags: --epochs N --cnn-epochs N --qat-steps N --seed N --data-dir DIR)"
                )
                .into())
            }
        }
    }
    ferrograd::tensor::set_num_threads(1);
    let mnist = Mnist::load(&data_dir)?;
    let mut rng = StdRng::seed_from_u64(seed);

    let fp32_mlp = mlp(&mut rng);
    let t = Instant::now();
    train(&fp32_mlp, &mnist, epochs, None, 1e-3, seed);
    println!("MLP fp32 training: {epochs} epochs in {:.1} s", t.elapsed().as_secs_f64());
    let qat_mlp = Mlp { fc: fp32_mlp.fc.each_ref().map(qat_linear) };
    let t = Instant::now();
    train(&qat_mlp, &mnist, 1, None, 1e-4, seed + 1);
    println!("MLP QAT fine-tuning: 1 epoch in {:.1} s", t.elapsed().as_secs_f64());

    let fp32_cnn = lenet(&mut rng);
    let t = Instant::now();
    train(&fp32_cnn, &mnist, cnn_epochs, None, 1e-3, seed + 2);
    println!("CNN fp32 training: {cnn_epochs} epochs in {:.1} s", t.elapsed().as_secs_f64());
    let qat_cnn = LeNet { conv: fp32_cnn.conv.each_ref().map(qat_conv), fc: fp32_cnn.fc.each_ref().map(qat_linear) };
    let t = Instant::now();
    train(&qat_cnn, &mnist, 1, Some(qat_steps), 1e-4, seed + 3);
    println!("CNN QAT fine-tuning: {qat_steps} batches of 64 in {:.1} s", t.elapsed().as_secs_f64());

    let mut table = rows("MLP", &fp32_mlp, &qat_mlp, &mnist);
    table.extend(rows("CNN", &fp32_cnn, &qat_cnn, &mnist));
    println!("\n| model | variant      | test accuracy | vs fp32 | weight bytes | ms / batch of {BATCH} | speed-up |");
    println!("|-------|--------------|---------------|---------|--------------|--------------------|----------|");
    for chunk in table.chunks(4) {
        let base = &chunk[0];
        for r in chunk {
            println!(
                "| {:<5} | {:<12} | {:>12.2}% | {:>+7.2} | {:>12} | {:>18.3} | {:>7.2}x |",
                r.model,
                r.variant,
                100.0 * r.accuracy,
                100.0 * (r.accuracy - base.accuracy),
                r.bytes,
                1e3 * r.seconds,
                base.seconds / r.seconds
            );
        }
    }
    Ok(())
}
