//! ModelCheckpoint keeps exactly the files it should (the last N, the best by a monitored
//! value), and a process killed in the middle of writing a checkpoint leaves the previous one
//! loadable.

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bits, blobs, loader, small_mlp, TempDir};
use ferrograd_nn::data::{DataLoader, TensorDataset};
use ferrograd_nn::layers::Linear;
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::{load_module, Module};
use ferrograd_optim::{GroupOptions, Optim, Sgd};
use ferrograd_tensor::Tensor;
use ferrograd_train::early_stopping::Mode;
use ferrograd_train::{Learner, ModelCheckpoint};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Trains the small MLP for `epochs` with a scripted `score` log and `ckpt`; returns the
/// weights at the end of each epoch.
fn run(ckpt: ModelCheckpoint, script: &[f64]) -> Vec<std::collections::BTreeMap<String, Vec<u32>>> {
    let data = blobs(40, 3);
    let train = loader(&data, 10, 1);
    let model = small_mlp(2);
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    let weights = RefCell::new(Vec::new());
    Learner::new(&model, opt, cross_entropy)
        .logs_sync(|logs| logs.set("score", script[logs.epoch]))
        .callback(ckpt)
        .on_epoch_end(|ctx, _| weights.borrow_mut().push(bits(ctx.model)))
        .quiet()
        .fit(&train, None, script.len())
        .unwrap();
    weights.into_inner()
}

#[test]
fn keeps_the_last_n_and_the_best() {
    let dir = TempDir::new("ckpt");
    let script = [0.9, 0.5, 0.7, 0.4, 0.6];
    let ckpt = ModelCheckpoint::new(dir.path()).keep_last(2).keep_best("score", Mode::Min);
    let weights = run(ckpt.clone(), &script);
    assert_eq!(
        files(dir.path()),
        set(&["epoch-0003.safetensors", "epoch-0004.safetensors", "best.safetensors", "best.json"])
    );
    let check = |file: &str, epoch: usize| {
        let m = small_mlp(99);
        load_module(dir.path().join(file), &m).unwrap();
        assert_eq!(bits(&m), weights[epoch], "{file} should hold epoch {epoch}");
    };
    check("epoch-0003.safetensors", 3);
    check("epoch-0004.safetensors", 4);
    check("best.safetensors", 3);
    let best: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("best.json")).unwrap()).unwrap();
    assert_eq!(best, serde_json::json!({ "epoch": 3, "monitor": "score", "value": 0.4 }));
}

#[test]
fn every_n_epochs_and_best_only() {
    let dir = TempDir::new("ckpt-every");
    run(ModelCheckpoint::new(dir.path()).keep_last(10).every_n_epochs(2), &[0.0; 5]);
    assert_eq!(files(dir.path()), set(&["epoch-0001.safetensors", "epoch-0003.safetensors"]));

    let dir = TempDir::new("ckpt-best");
    // Max mode from the name, and NaN never counts as best.
    let weights = run(ModelCheckpoint::new(dir.path()).keep_last(0).keep_best("val_accuracy", Mode::Auto), &[0.0; 0]);
    assert!(weights.is_empty());
    let script = [0.5, f64::NAN, 0.8, 0.7];
    let data = blobs(20, 4);
    let model = small_mlp(5);
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    let seen = RefCell::new(Vec::new());
    Learner::new(&model, opt, cross_entropy)
        .logs_sync(|logs| logs.set("val_accuracy", script[logs.epoch]))
        .callback(ModelCheckpoint::new(dir.path()).keep_last(0).keep_best("val_accuracy", Mode::Auto))
        .on_epoch_end(|ctx, _| seen.borrow_mut().push(bits(ctx.model)))
        .quiet()
        .fit(&loader(&data, 10, 0), None, 4)
        .unwrap();
    assert_eq!(files(dir.path()), set(&["best.safetensors", "best.json"]));
    let m = small_mlp(98);
    load_module(dir.path().join("best.safetensors"), &m).unwrap();
    assert_eq!(bits(&m), seen.borrow()[2]);
}

// ------------------------------------------------------------- killed in the middle of a write

const CHILD_DIR: &str = "FERROGRAD_TRAIN_CKPT_CHILD_DIR";
const SIDE: usize = 1500;

/// A 1500x1500 linear layer (9 MB of weights) whose every weight is set to the epoch number
/// before the checkpoint of that epoch is written, for 1000 epochs.
fn writer_run(dir: &Path) {
    let model = Linear::<f32>::new(SIDE, SIDE, &mut StdRng::seed_from_u64(0));
    let data = TensorDataset::new(Tensor::<f32>::zeros(&[1, SIDE]), Tensor::from_vec(vec![0i64], &[1]));
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.0));
    Learner::new(&model, opt, cross_entropy)
        .on_epoch_end(|ctx, _| {
            for p in ctx.model.parameters() {
                p.set(Tensor::full(&p.shape(), ctx.epoch as f32));
            }
        })
        .callback(ModelCheckpoint::new(dir).keep_last(2).keep_best("loss", Mode::Max))
        .quiet()
        .fit(&DataLoader::new(data, 1), None, 1000)
        .unwrap();
}

/// Not a test of its own: the entry point of the writer process below.
#[test]
fn checkpoint_writer_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        writer_run(Path::new(&dir));
    }
}

/// Every checkpoint in `dir` loads, and holds one value everywhere: its epoch for `epoch-N`.
fn check_loadable(dir: &Path) -> usize {
    let model = Linear::<f32>::new(SIDE, SIDE, &mut StdRng::seed_from_u64(1));
    let mut checked = 0;
    for name in files(dir).into_iter().filter(|n| n.ends_with(".safetensors") && !n.starts_with('.')) {
        load_module(dir.join(&name), &model).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
        let values: BTreeSet<u32> =
            model.parameters().iter().flat_map(|p| p.value().to_vec()).map(f32::to_bits).collect();
        assert_eq!(values.len(), 1, "{name} mixes two writes");
        if let Some(epoch) = name.strip_prefix("epoch-").and_then(|n| n.strip_suffix(".safetensors")) {
            let v = f32::from_bits(*values.iter().next().unwrap());
            assert_eq!(v, epoch.parse::<f32>().unwrap(), "{name} holds the weights of epoch {v}");
        }
        checked += 1;
    }
    checked
}

#[test]
fn a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable() {
    let dir = TempDir::new("ckpt-kill");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["checkpoint_writer_child_entry", "--exact", "--test-threads", "1", "--quiet"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until two epochs and the best are on disk, then until a write is under way (its
        // temporary file exists), and kill the writer then.
        let start = Instant::now();
        let writing = |d: &Path| files(d).iter().any(|n| n.starts_with('.') && n.ends_with(".tmp"));
        let mut seen_checkpoint = false;
        loop {
            assert!(start.elapsed() < Duration::from_secs(60), "round {round}: no write to interrupt");
            assert!(child.try_wait().unwrap().is_none(), "round {round}: the writer finished");
            seen_checkpoint |= files(dir.path()).contains("epoch-0001.safetensors");
            if seen_checkpoint && writing(dir.path()) {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The last two epochs and the best, whichever write was cut.
        assert!(check_loadable(dir.path()) >= 3, "round {round}: {:?}", files(dir.path()));
    }
}
