//! The main job: a 784-128-64-10 ReLU MLP trained on MNIST with Adam (lr 1e-3), batch 32,
//! 10 epochs, softmax cross-entropy, like the PyTorch recipe it is compared with. Trained by
//! ferrograd-train's `Learner`; prints per-epoch figures (with a progress bar on a terminal)
//! and writes the history to a CSV.
//!
//! ```sh
//! cargo run --release --example mnist_mlp -- [--epochs 10] [--batch-size 32] [--lr 1e-3]
//!     [--seed 0] [--data-dir data/mnist] [--threads 1] [--history mnist_mlp_history.csv]
//!     [--logdir DIR] [--min-accuracy 0.973]
//! ```
//!
//! With `--logdir DIR` the run is also logged for watching: `DIR/history.csv` (every figure of
//! every epoch), `DIR/log.jsonl` (every step), TensorBoard event files (`tensorboard --logdir
//! DIR`) and the training curves as `DIR/curves.svg`, redrawn after each epoch.
//!
//! A run whose loss becomes NaN or infinite, or explodes (`--lr 1e3`), stops with a message
//! naming the step and a non-zero exit. With `--min-accuracy`, the program exits with an error
//! if the final test accuracy falls short (CI uses it to keep the recipe honest).

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::nn::data::{DataLoader, Mnist, TensorDataset};
use ferrograd::nn::layers::{Linear, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim};
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::train::{
    Accuracy, Batch, CsvLogger, CurvesPlot, DataSource, History, JsonlLogger, Learner, ProgressBar, TensorBoardLogger,
};

struct Args {
    epochs: usize,
    batch_size: usize,
    lr: f64,
    seed: u64,
    data_dir: PathBuf,
    threads: usize,
    history: PathBuf,
    logdir: Option<PathBuf>,
    min_accuracy: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        epochs: 10,
        batch_size: 32,
        lr: 1e-3,
        seed: 0,
        data_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")),
        threads: 1,
        history: PathBuf::from("mnist_mlp_history.csv"),
        logdir: None,
        min_accuracy: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: cannot parse `{v}`");
        match flag.as_str() {
            "--epochs" => a.epochs = value()?.parse().map_err(|_| bad("epochs"))?,
            "--batch-size" => a.batch_size = value()?.parse().map_err(|_| bad("batch size"))?,
            "--lr" => a.lr = value()?.parse().map_err(|_| bad("lr"))?,
            "--seed" => a.seed = value()?.parse().map_err(|_| bad("seed"))?,
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--threads" => a.threads = value()?.parse().map_err(|_| bad("threads"))?,
            "--history" => a.history = PathBuf::from(value()?),
            "--logdir" => a.logdir = Some(PathBuf::from(value()?)),
            "--min-accuracy" => a.min_accuracy = Some(value()?.parse().map_err(|_| bad("min accuracy"))?),
            "-h" | "--help" => {
                println!(
                    "flags: --epochs N --batch-size N --lr X --seed N --data-dir DIR --threads N \
                     --history FILE.csv --logdir DIR --min-accuracy FRACTION"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if a.epochs == 0 || a.batch_size == 0 || a.threads == 0 || a.lr.is_nan() || a.lr <= 0.0 {
        return Err("epochs, batch size and threads must be positive, and lr > 0".into());
    }
    Ok(a)
}

/// The training batches, shuffled as the hand-written loop this example had before the Learner
/// shuffled them (its epochs were numbered from 1, the Learner's from 0): the same seed gives
/// the same run as before, figure for figure.
struct ShuffleFromEpoch1(DataLoader<f32, i64>);

impl DataSource for ShuffleFromEpoch1 {
    fn epoch_len(&self, epoch: u64) -> usize {
        DataSource::<f32, i64>::epoch_len(&self.0, epoch + 1)
    }

    fn batches(&self, epoch: u64, start: usize) -> Box<dyn Iterator<Item = Batch> + '_> {
        DataSource::batches(&self.0, epoch + 1, start)
    }
}

/// The history as the CSV this example has always written (epochs from 1).
fn write_history(path: &PathBuf, history: &History) -> std::io::Result<()> {
    let mut csv = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(csv, "epoch,train_loss,train_accuracy,test_accuracy,seconds")?;
    for e in &history.epochs {
        let v = |name: &str| e.get(name).unwrap_or(f64::NAN);
        let (loss, acc, test, secs) = (v("loss"), v("accuracy"), v("val_accuracy"), v("seconds"));
        writeln!(csv, "{},{loss:.6},{acc:.6},{test:.6},{secs:.3}", e.epoch + 1)?;
    }
    csv.flush()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    ferrograd::tensor::set_num_threads(args.threads);
    let t0 = Instant::now();
    let mnist = Mnist::load(&args.data_dir)?;
    println!(
        "MNIST: {} train, {} test images from {} ({:.2} s)",
        mnist.train_labels.numel(),
        mnist.test_labels.numel(),
        args.data_dir.display(),
        t0.elapsed().as_secs_f64()
    );
    let flat = |images: &ferrograd::tensor::Tensor<f32>| images.reshape(&[images.size(0), 784]);
    let train = TensorDataset::new(flat(&mnist.train_images), mnist.train_labels.clone());
    let test = TensorDataset::new(flat(&mnist.test_images), mnist.test_labels.clone());
    let n_train = train.targets().numel() as f64;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let model = Sequential::new()
        .add(Linear::new(784, 128, &mut rng))
        .add(ReLU)
        .add(Linear::new(128, 64, &mut rng))
        .add(ReLU)
        .add(Linear::new(64, 10, &mut rng));
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(args.lr));
    let train_loader = ShuffleFromEpoch1(DataLoader::new(train, args.batch_size).shuffle(args.seed));
    let test_loader = DataLoader::new(test, 1000);

    let mut learner = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .callback(ProgressBar::new())
        .on_epoch_end(|ctx, logs| {
            let v = |name: &str| logs.get(name).unwrap_or(f64::NAN);
            println!(
                "epoch {:2}: train loss {:.4}, train acc {:.2}%, test acc {:.2}%, {:.1} s ({:.0} samples/s)",
                ctx.epoch + 1,
                v("loss"),
                100.0 * v("accuracy"),
                100.0 * v("val_accuracy"),
                v("seconds"),
                n_train / v("seconds")
            );
        });
    if let Some(dir) = &args.logdir {
        learner = learner
            .callback(CsvLogger::new(dir.join("history.csv")))
            .callback(JsonlLogger::new(dir.join("log.jsonl")).log_every_n_steps(1))
            .callback(TensorBoardLogger::new(dir).log_every_n_steps(1))
            .callback(CurvesPlot::new(dir.join("curves.svg")));
    }
    let result = learner.fit(&train_loader, Some(&test_loader), args.epochs);
    // The history so far, also when the run stopped on an error.
    write_history(&args.history, learner.history())?;
    let history = result?;

    let accuracies: Vec<f64> = history.series("val_accuracy").into_iter().map(|(_, a)| a).collect();
    let last = accuracies.last().copied().unwrap_or(0.0);
    let best = accuracies.iter().copied().fold(0.0f64, f64::max);
    println!(
        "final test accuracy {:.2}% (best {:.2}%); history in {}",
        100.0 * last,
        100.0 * best,
        args.history.display()
    );
    if let Some(dir) = &args.logdir {
        println!(
            "logs in {0}: tensorboard --logdir {0}; training curves in {1}",
            dir.display(),
            dir.join("curves.svg").display()
        );
    }
    if let Some(min) = args.min_accuracy {
        if last < min {
            return Err(format!(
                "final test accuracy {:.2}% is below --min-accuracy {:.2}%",
                100.0 * last,
                100.0 * min
            )
            .into());
        }
    }
    Ok(())
}
