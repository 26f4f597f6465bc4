//! Knowledge distillation on MNIST: a teacher (784-512-512-10 ReLU MLP with dropout 0.2), then
//! the same small student (784-32-10) trained twice from the same initialisation, alone and
//! distilled from the teacher (T = 2, alpha = 0.5, teacher logits cached), per seed. Prints the
//! test errors of all three.
//!
//! ```sh
//! cargo run --release --example distill -- [--seeds 3] [--teacher-epochs 3] [--student-epochs 10]
//!     [--temperature 2] [--alpha 0.5] [--data-dir data/mnist]
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::nn::data::{DataLoader, Mnist, TensorDataset};
use ferrograd::nn::layers::{Dropout, Linear, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::tuning::distill::{distill_epoch, DistillOptions};

fn test_error(model: &Sequential, x: &Tensor<f32>, y: &Tensor<i64>) -> f64 {
    model.eval();
    let pred = no_grad(|| model.forward(&Var::constant(x.clone())).into_data().argmax(1, false));
    model.train(true);
    100.0 * pred.ne(y).to_vec().iter().filter(|&&b| b).count() as f64 / y.numel() as f64
}

fn student(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(1000 + seed);
    Sequential::new().add(Linear::new(784, 32, &mut rng)).add(ReLU).add(Linear::new(32, 10, &mut rng))
}

fn train_alone(model: &Sequential, loader: &DataLoader, epochs: usize) {
    let mut opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
    for epoch in 0..epochs {
        for (x, y) in loader.iter_epoch(epoch as u64) {
            opt.step(&cross_entropy(&model.forward(&Var::constant(x)), &y).backward());
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let (mut seeds, mut teacher_epochs, mut student_epochs) = (3u64, 3usize, 10usize);
    let (mut temperature, mut alpha) = (2.0f64, 0.5f64);
    let mut data_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seeds" => seeds = value.parse()?,
            "--teacher-epochs" => teacher_epochs = value.parse()?,
            "--student-epochs" => student_epochs = value.parse()?,
            "--temperature" => temperature = value.parse()?,
            "--alpha" => alpha = value.parse()?,
            "--data-dir" => data_dir = PathBuf::from(value),
            other => return Err(format!("unknown flag `{other}`").into()),
        }
    }
    let mnist = Mnist::load(&data_dir)?;
    let flat = |t: &Tensor<f32>| t.reshape(&[t.size(0), 784]);
    let train = TensorDataset::new(flat(&mnist.train_images), mnist.train_labels.clone());
    let (test_x, test_y) = (flat(&mnist.test_images), mnist.test_labels.clone());

    println!("| seed | teacher error % | student alone % | student distilled % |");
    println!("|------|-----------------|-----------------|---------------------|");
    let (mut alone_sum, mut distilled_sum) = (0.0, 0.0);
    for seed in 0..seeds {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let teacher = Sequential::new()
            .add(Linear::new(784, 512, &mut rng))
            .add(ReLU)
            .add(Dropout::new(0.2, seed))
            .add(Linear::new(512, 512, &mut rng))
            .add(ReLU)
            .add(Dropout::new(0.2, seed + 100))
            .add(Linear::new(512, 10, &mut rng));
        let loader = DataLoader::new(train.clone(), 128).shuffle(seed);
        train_alone(&teacher, &loader, teacher_epochs);
        let teacher_err = test_error(&teacher, &test_x, &test_y);

        let alone = student(seed);
        train_alone(&alone, &loader, student_epochs);
        let alone_err = test_error(&alone, &test_x, &test_y);

        let distilled = student(seed);
        let mut opt = Optim::new(Adam::default(), distilled.parameters(), GroupOptions::lr(1e-3));
        let opts = DistillOptions { temperature, alpha, cache_teacher: true };
        for epoch in 0..student_epochs {
            distill_epoch(&distilled, &teacher, &loader, &mut opt, epoch as u64, &opts);
        }
        let distilled_err = test_error(&distilled, &test_x, &test_y);
        alone_sum += alone_err;
        distilled_sum += distilled_err;
        println!(
            "| {seed:>4} | {teacher_err:>15.2} | {alone_err:>15.2} | {distilled_err:>19.2} |  ({:.0} s)",
            t0.elapsed().as_secs_f64()
        );
    }
    let n = seeds.max(1) as f64;
    println!("mean student error: alone {:.2}%, distilled {:.2}%", alone_sum / n, distilled_sum / n);
    Ok(())
}
