//! Hyperparameter search with TPE and a median pruner: an MLP on an MNIST subset, tuning the
//! learning rate (log scale), the hidden width, the weight decay and the dropout. The study lives
//! in an SQLite file, so running the program again continues it (new trials get new numbers and
//! TPE learns from the earlier ones). Each trial is trained by ferrograd-train's `Learner`: the
//! validation accuracy after each epoch goes to the pruner through a small callback. At the end
//! it prints the parameter importances (PED-ANOVA) of the whole study.
//!
//! ```sh
//! cargo run --release --example search -- [--trials 20] [--db search_study.db] [--train 10000]
//!     [--valid 2000] [--epochs 5] [--seed 0] [--data-dir data/mnist] [--csv search_trials.csv]
//!     [--plots search_plots]
//! ```

use std::cell::Cell;
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::nn::data::{DataLoader, Mnist, TensorDataset};
use ferrograd::nn::layers::{Dropout, Linear, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim};
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::train::{Accuracy, Batch, Callback, Context, Control, DataSource, EpochLogs, Learner, TrainError};
use ferrograd::tuning::plots::write_study_plots;
use ferrograd::tuning::search::importance::param_importances;
use ferrograd::tuning::search::{Direction, MedianPruner, ParamValue, Study, TpeSampler, Trial, TrialState};

struct Args {
    trials: usize,
    db: PathBuf,
    train: usize,
    valid: usize,
    epochs: u64,
    seed: u64,
    data_dir: PathBuf,
    csv: PathBuf,
    plots: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        trials: 20,
        db: PathBuf::from("search_study.db"),
        train: 10_000,
        valid: 2000,
        epochs: 5,
        seed: 0,
        data_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")),
        csv: PathBuf::from("search_trials.csv"),
        plots: PathBuf::from("search_plots"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: cannot parse `{v}`");
        match flag.as_str() {
            "--trials" => a.trials = value()?.parse().map_err(|_| bad("trials"))?,
            "--db" => a.db = PathBuf::from(value()?),
            "--train" => a.train = value()?.parse().map_err(|_| bad("train"))?,
            "--valid" => a.valid = value()?.parse().map_err(|_| bad("valid"))?,
            "--epochs" => a.epochs = value()?.parse().map_err(|_| bad("epochs"))?,
            "--seed" => a.seed = value()?.parse().map_err(|_| bad("seed"))?,
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--csv" => a.csv = PathBuf::from(value()?),
            "--plots" => a.plots = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!(
                    "flags: --trials N --db FILE --train N --valid N --epochs N --seed N --data-dir DIR --csv FILE --plots DIR"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if a.train == 0 || a.valid == 0 || a.epochs == 0 || a.train > 60_000 || a.valid > 10_000 {
        return Err("--train must be in 1..=60000, --valid in 1..=10000, --epochs positive".into());
    }
    Ok(a)
}

/// A dataset's images flattened to 784 columns, in the loader's batches; the Learner's epoch
/// `e` is the loader's epoch `e + 1` (the hand-written loop this example had counted from 1, so
/// a trial sees the same batches as before).
struct Flat(DataLoader<f32, i64>);

impl DataSource for Flat {
    fn epoch_len(&self, epoch: u64) -> usize {
        DataSource::<f32, i64>::epoch_len(&self.0, epoch + 1)
    }

    fn batches(&self, epoch: u64, start: usize) -> Box<dyn Iterator<Item = Batch> + '_> {
        Box::new(DataSource::batches(&self.0, epoch + 1, start).map(|mut b| {
            b.inputs = b.inputs.reshape(&[b.len(), 784]);
            b
        }))
    }
}

/// Reports each epoch's validation accuracy to the trial (epochs from 1) and stops the run when
/// the pruner says so.
struct Pruning<'t, 's> {
    trial: &'t mut Trial<'s>,
    pruned: &'t Cell<bool>,
}

impl Callback for Pruning<'_, '_> {
    fn name(&self) -> String {
        "Pruning".into()
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_>, logs: &EpochLogs) -> Result<Control, TrainError> {
        self.trial.report(ctx.epoch as u64 + 1, logs.get("val_accuracy").unwrap_or(f64::NAN));
        if self.trial.should_prune() {
            self.pruned.set(true);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }
}

/// One trial: asks for the hyperparameters, trains, reports validation accuracy each epoch.
fn objective(
    t: &mut Trial<'_>,
    train: &TensorDataset<f32, i64>,
    valid: &TensorDataset<f32, i64>,
    epochs: u64,
) -> Result<f64, Box<dyn Error + Send + Sync>> {
    let lr = t.suggest_float("lr", 1e-4, 3e-2, true)?;
    let hidden = t.suggest_int("hidden", 32, 256, 32, false)?;
    let weight_decay = t.suggest_float("weight_decay", 1e-6, 1e-2, true)?;
    let dropout = t.suggest_float_step("dropout", 0.0, 0.5, 0.1)?;
    let seed = t.number();
    let mut rng = StdRng::seed_from_u64(seed);
    let h = hidden as usize;
    let model = Sequential::new()
        .add(Linear::new(784, h, &mut rng))
        .add(ReLU)
        .add(Dropout::new(dropout, seed))
        .add(Linear::new(h, 10, &mut rng));
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(lr).weight_decay(weight_decay));
    let loader = Flat(DataLoader::new(train.clone(), 64).shuffle(seed));
    // The whole validation set as one batch.
    let valid = Flat(DataLoader::new(valid.clone(), valid.targets().numel()));
    let pruned = Cell::new(false);
    let mut learner = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .callback(Pruning { trial: &mut *t, pruned: &pruned })
        .quiet();
    let history = learner.fit(&loader, Some(&valid), epochs as usize)?;
    drop(learner);
    if pruned.get() {
        return Err(t.pruned().into());
    }
    Ok(history.last().and_then(|e| e.get("val_accuracy")).unwrap_or(0.0))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let mnist = Mnist::load(&args.data_dir)?;
    let train = TensorDataset::new(
        mnist.train_images.narrow(0, 0, args.train).contiguous(),
        mnist.train_labels.narrow(0, 0, args.train).contiguous(),
    );
    let valid = TensorDataset::new(
        mnist.test_images.narrow(0, 0, args.valid).contiguous(),
        mnist.test_labels.narrow(0, 0, args.valid).contiguous(),
    );
    let study = Study::builder()
        .direction(Direction::Maximize)
        .sampler(TpeSampler::new().n_startup_trials(5))
        .pruner(MedianPruner::new(3, 2))
        .seed(args.seed)
        .open_sqlite(&args.db, "mnist_mlp")?;
    let before = study.n_trials();
    println!("study `mnist_mlp` in {}: {before} earlier trials", args.db.display());
    let start = Instant::now();
    study.optimize(args.trials, |t| {
        let r = objective(t, &train, &valid, args.epochs);
        let params = t.params();
        let show = |k: &str| params.get(k).map_or(String::new(), ParamValue::to_string);
        println!(
            "trial {:3}: lr {:>9.2e} hidden {:>3} wd {:>9.2e} dropout {:.1} -> {}",
            t.number(),
            show("lr").parse::<f64>().unwrap_or(f64::NAN),
            show("hidden"),
            show("weight_decay").parse::<f64>().unwrap_or(f64::NAN),
            show("dropout").parse::<f64>().unwrap_or(f64::NAN),
            match &r {
                Ok(acc) => format!("accuracy {:.2}%", 100.0 * acc),
                Err(e) => e.to_string(),
            }
        );
        r
    })?;
    let trials = study.trials();
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    println!(
        "{} new trials in {:.1} s; study total {}: {} complete, {} pruned, {} failed",
        trials.len() - before,
        start.elapsed().as_secs_f64(),
        trials.len(),
        count(TrialState::Complete),
        count(TrialState::Pruned),
        count(TrialState::Failed)
    );
    if let Some(best) = study.best_trial() {
        let params: Vec<String> = best.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "best: trial {} accuracy {:.2}% with {}",
            best.number,
            100.0 * best.value.unwrap_or(0.0),
            params.join(", ")
        );
    }
    // Which hyperparameters decided whether a trial was among the best 10% (PED-ANOVA).
    let importances = param_importances(&study)?;
    if !importances.is_empty() {
        let shown: Vec<String> = importances.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        println!("importances: {}", shown.join(", "));
    }
    study.write_csv(&args.csv)?;
    println!("all trials in {} (run again to continue the study)", args.csv.display());
    // Best value so far and every trial's value, and the pruned and complete trials' curves.
    let plots = write_study_plots(&study, &args.plots, None)?;
    let names: Vec<String> = plots.iter().map(|p| p.display().to_string()).collect();
    println!("plots: {}", names.join(", "));
    Ok(())
}
