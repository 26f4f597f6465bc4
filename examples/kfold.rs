//! 5-fold cross-validation of the MNIST MLP (784-128-64-10, ReLU, Adam 1e-3, batch 32) on a
//! subset of the training images: stratified folds, a fresh model per fold, early stopping on
//! the fold's validation accuracy (patience 1, best weights restored), and each fold's accuracy
//! and macro F1 with their mean ± standard deviation. Each fold is trained by ferrograd-train's
//! `Learner` (its `EarlyStopping` callback, the fold's validation accuracy as `val_accuracy`).
//!
//! ```sh
//! cargo run --release --example kfold -- [--subset 5000] [--folds 5] [--epochs 2] [--seed 0]
//!     [--data-dir data/mnist]
//! ```
//!
//! With the default two epochs early stopping rarely triggers; `--epochs 10` shows it stop each
//! fold at its own best epoch.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::nn::data::Mnist;
use ferrograd::nn::layers::{Linear, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use ferrograd::train::{Accuracy, Batch, DataSource, EarlyStopping, Learner};
use ferrograd::tuning::cv::{cross_validate, StratifiedKFold};
use ferrograd::tuning::metrics::{accuracy, f1_score, Average, ClassOptions};

struct Args {
    subset: usize,
    folds: usize,
    epochs: usize,
    seed: u64,
    data_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        subset: 5000,
        folds: 5,
        epochs: 2,
        seed: 0,
        data_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: cannot parse `{v}`");
        match flag.as_str() {
            "--subset" => a.subset = value()?.parse().map_err(|_| bad("subset"))?,
            "--folds" => a.folds = value()?.parse().map_err(|_| bad("folds"))?,
            "--epochs" => a.epochs = value()?.parse().map_err(|_| bad("epochs"))?,
            "--seed" => a.seed = value()?.parse().map_err(|_| bad("seed"))?,
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("flags: --subset N --folds K --epochs N --seed N --data-dir DIR");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if a.epochs == 0 || a.subset == 0 || a.subset > 60_000 {
        return Err("epochs must be positive and the subset between 1 and 60000".into());
    }
    Ok(a)
}

fn mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .add(Linear::new(784, 128, &mut rng))
        .add(ReLU)
        .add(Linear::new(128, 64, &mut rng))
        .add(ReLU)
        .add(Linear::new(64, 10, &mut rng))
}

fn index_tensor(idx: &[usize]) -> Tensor<i64> {
    Tensor::from_vec(idx.iter().map(|&i| i as i64).collect(), &[idx.len()])
}

/// Predicted classes of `model` for the rows `idx` of `images`, without recording a graph.
fn predict(model: &Sequential, images: &Tensor<f32>, idx: &[usize]) -> Tensor<i64> {
    model.eval();
    let pred =
        no_grad(|| model.forward(&Var::constant(images.index_select(0, &index_tensor(idx)))).data().argmax(1, false));
    model.train(true);
    pred
}

/// Rows of `images`/`labels` in batches: each epoch its own order (`orders[epoch]`), cut into
/// batches of `batch_size`.
struct Rows<'d> {
    images: &'d Tensor<f32>,
    labels: &'d Tensor<i64>,
    orders: Vec<Vec<usize>>,
    batch_size: usize,
}

impl DataSource for Rows<'_> {
    fn epoch_len(&self, epoch: u64) -> usize {
        self.orders[epoch as usize].len().div_ceil(self.batch_size)
    }

    fn batches(&self, epoch: u64, start: usize) -> Box<dyn Iterator<Item = Batch> + '_> {
        Box::new(self.orders[epoch as usize].chunks(self.batch_size).skip(start).map(|rows| {
            let indices = index_tensor(rows);
            Batch {
                inputs: self.images.index_select(0, &indices),
                targets: self.labels.index_select(0, &indices),
                indices,
            }
        }))
    }
}

fn main() {
    if let Err(e) = parse_args().map_err(Box::from).and_then(|args| run(&args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let t0 = Instant::now();
    let mnist = Mnist::load(&args.data_dir)?;
    let n = args.subset;
    let images = mnist.train_images.narrow(0, 0, n).reshape(&[n, 784]).contiguous();
    let labels = mnist.train_labels.narrow(0, 0, n).contiguous();
    let label_vec = labels.to_vec();
    println!("{}-fold cross-validation on {n} MNIST training images, {} epochs per fold", args.folds, args.epochs);

    let splitter = StratifiedKFold::new(args.folds, &labels).shuffle(args.seed);
    let results = cross_validate(&splitter, n, |fold, train, test| -> Result<_, Box<dyn Error + Send + Sync>> {
        let start = Instant::now();
        let model = mlp(args.seed.wrapping_add(fold as u64));
        let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
        let y_test: Vec<i64> = test.iter().map(|&i| label_vec[i]).collect();
        // The training rows reshuffled each epoch by one generator (each epoch shuffles the
        // previous epoch's order), drawn up front so the Learner can ask for any epoch.
        let mut order = train.to_vec();
        let mut rng = StdRng::seed_from_u64(args.seed ^ ((fold as u64) << 32));
        let orders = (0..args.epochs)
            .map(|_| {
                order.shuffle(&mut rng);
                order.clone()
            })
            .collect();
        let train_rows = Rows { images: &images, labels: &labels, orders, batch_size: 32 };
        // The whole validation fold as one batch, every epoch.
        let val_rows = Rows {
            images: &images,
            labels: &labels,
            orders: vec![test.to_vec(); args.epochs],
            batch_size: test.len().max(1),
        };
        let mut learner = Learner::new(&model, opt, cross_entropy)
            .metric(Accuracy::new())
            .callback(EarlyStopping::new("val_accuracy").patience(1).restore_best_weights(true))
            .on_epoch_end(|ctx, logs| {
                let val_acc = logs.get("val_accuracy").unwrap_or(f64::NAN);
                println!("  fold {fold}, epoch {}: validation accuracy {:.2}%", ctx.epoch, 100.0 * val_acc);
            })
            .quiet();
        let history = learner.fit(&train_rows, Some(&val_rows), args.epochs)?;
        if let Some(epoch) = history.stopped_early {
            println!("  fold {fold}: early stop after epoch {epoch}");
        }
        // The epoch whose weights EarlyStopping restored: the first with the best accuracy.
        let best_epoch = history
            .series("val_accuracy")
            .into_iter()
            .fold(None, |best: Option<(usize, f64)>, (e, a)| match best {
                Some((_, b)) if a <= b => best,
                _ if a.is_nan() => best,
                _ => Some((e, a)),
            })
            .map(|(e, _)| e);
        let pred = predict(&model, &images, test);
        let acc = accuracy(&y_test, &pred)?;
        let f1 = f1_score(&y_test, &pred, &ClassOptions::average(Average::Macro))?.scalar().unwrap_or(f64::NAN);
        println!(
            "fold {fold}: {} train / {} test, accuracy {:.2}%, macro F1 {:.4} (weights of epoch {}, {:.1} s)",
            train.len(),
            test.len(),
            100.0 * acc,
            f1,
            best_epoch.map_or("-".to_string(), |e| e.to_string()),
            start.elapsed().as_secs_f64()
        );
        Ok(BTreeMap::from([("accuracy".to_string(), acc), ("f1_macro".to_string(), f1)]))
    })?;
    for (name, s) in results.summaries() {
        println!("{name}: {:.4} ± {:.4} over {} folds", s.mean, s.std, results.folds.len());
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
