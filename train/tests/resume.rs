//! Resumable runs: a run stopped at any point (an error in-process, or SIGKILL of a real child
//! process) and restarted with `resume(true)` ends with the same weights, bit for bit, and the
//! same history and logs as a run that was never interrupted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bits, blobs, loader, mnist_mlp, mnist_subset, small_mlp, TempDir};
use ferrograd_nn::checkpoint::load_any_tensors;
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::{load_module, save_module, AnyTensor, Module};
use ferrograd_optim::{Adam, GroupOptions, OneCycleLR, Optim};
use ferrograd_train::{
    Accuracy, Callback, Context, EarlyStopping, History, JsonlLogger, Learner, LrSchedule, StepLogs, TrainError,
    RUN_STATE_FILE,
};

/// Fails at a given global step, as a crash would (after the step's update).
struct CrashAt(u64);

impl Callback for CrashAt {
    fn name(&self) -> String {
        "CrashAt".into()
    }
    fn on_step_end(&mut self, _: &mut Context<'_>, step: &StepLogs) -> Result<(), TrainError> {
        if step.global_step == self.0 {
            return Err(TrainError::Config(format!("simulated crash at step {}", self.0)));
        }
        Ok(())
    }
}

/// The figures of a history without the wall times.
fn figures(h: &History) -> Vec<Vec<(String, u64)>> {
    h.epochs
        .iter()
        .map(|e| {
            let timing = |n: &str| n == "seconds" || n == "val_seconds";
            e.values.iter().filter(|(n, _)| !timing(n)).map(|(n, v)| (n.clone(), v.to_bits())).collect()
        })
        .collect()
}

/// One run over the blobs with accumulation, a per-step schedule, metrics and early stopping;
/// `crash_at` fails it at that step.
fn blob_run(dir: &Path, crash_at: Option<u64>) -> (Result<History, TrainError>, Vec<u8>) {
    let data = blobs(120, 21);
    let (train, val) = (loader(&data, 10, 3), ferrograd_nn::data::DataLoader::new(data.clone(), 40));
    let model = small_mlp(11);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    // 12 batches per epoch in groups of 3: 4 steps per epoch.
    let mut learner = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .accumulate(3)
        .callback(LrSchedule::per_step(OneCycleLR::new(2e-2, 4 * 6)))
        .callback(EarlyStopping::new("val_loss").patience(10).restore_best_weights(true))
        .callback(CrashAt(crash_at.unwrap_or(u64::MAX)))
        .run_dir(dir)
        .save_every(3)
        .resume(true)
        .quiet();
    let result = learner.fit(&train, Some(&val), 6);
    let weights: Vec<u8> = model.state_dict().values().flat_map(|t| t.to_vec()).flat_map(f32::to_le_bytes).collect();
    (result, weights)
}

#[test]
fn a_run_stopped_by_an_error_resumes_to_the_same_weights_and_history() {
    let reference_dir = TempDir::new("resume-ref");
    let (reference, reference_weights) = blob_run(reference_dir.path(), None);
    let reference = reference.unwrap();
    // Crashes mid-epoch (step 7 of 24: saved at 6), at an epoch's last step (8: saved at the
    // epoch's end), and twice in a row.
    for crashes in [vec![7u64], vec![8], vec![5, 17]] {
        let dir = TempDir::new("resume");
        for &at in &crashes {
            let (result, _) = blob_run(dir.path(), Some(at));
            assert!(result.unwrap_err().to_string().contains("simulated crash"));
        }
        let (resumed, weights) = blob_run(dir.path(), None);
        let resumed = resumed.unwrap();
        assert_eq!(weights, reference_weights, "crashes at {crashes:?}");
        assert_eq!(figures(&resumed), figures(&reference), "crashes at {crashes:?}");
        assert_eq!(resumed.messages, reference.messages);
    }
}

#[test]
fn a_finished_run_resumes_to_itself_and_a_foreign_run_is_refused() {
    let dir = TempDir::new("resume-done");
    let (first, w1) = blob_run(dir.path(), None);
    let (again, w2) = blob_run(dir.path(), None);
    assert_eq!(w1, w2);
    assert_eq!(figures(&first.unwrap()), figures(&again.unwrap()));

    // Without resume(true), an existing run is not overwritten.
    let data = blobs(30, 1);
    let model = small_mlp(0);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let err = Learner::new(&model, opt, cross_entropy)
        .run_dir(dir.path())
        .quiet()
        .fit(&loader(&data, 10, 0), None, 1)
        .unwrap_err();
    assert!(err.to_string().contains("already holds a run"), "{err}");
    // With other callbacks, resuming is refused with both lists.
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let err = Learner::new(&model, opt, cross_entropy)
        .accumulate(3)
        .run_dir(dir.path())
        .resume(true)
        .quiet()
        .fit(&loader(&data, 10, 0), None, 1)
        .unwrap_err();
    assert!(err.to_string().contains("callbacks"), "{err}");
}

// ------------------------------------------------------------------------ SIGKILL, for real

const CHILD_DIR: &str = "FERROGRAD_TRAIN_RESUME_CHILD_DIR";
const CHILD_SLOW: &str = "FERROGRAD_TRAIN_RESUME_CHILD_SLOW";

/// Sleeps after every step, so the parent can kill the child mid-run.
struct Slow(Duration);

impl Callback for Slow {
    fn name(&self) -> String {
        "Slow".into()
    }
    fn on_step_end(&mut self, _: &mut Context<'_>, _: &StepLogs) -> Result<(), TrainError> {
        std::thread::sleep(self.0);
        Ok(())
    }
}

/// The child's run: the main job's MLP on 1024 MNIST images, 3 epochs of batch 32, saved every
/// 4 steps; the final weights go to `final.safetensors`.
fn mnist_run(dir: &Path, slow: bool) {
    let data = mnist_subset(1024);
    let train = loader(&data, 32, 7);
    let val = ferrograd_nn::data::DataLoader::new(mnist_subset(1024).clone(), 512);
    let model = mnist_mlp(3);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
    let pause = if slow { Duration::from_millis(4) } else { Duration::ZERO };
    let mut learner = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .callback(JsonlLogger::new(dir.join("log.jsonl")).log_every_n_steps(1))
        .callback(Slow(pause))
        .run_dir(dir.join("run"))
        .save_every(4)
        .resume(true)
        .quiet();
    learner.fit(&train, Some(&val), 3).unwrap();
    save_module(dir.join("final.safetensors"), &model).unwrap();
}

/// Not a test of its own: the entry point of the child processes below.
#[test]
fn resume_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        mnist_run(Path::new(&dir), std::env::var(CHILD_SLOW).is_ok());
    }
}

fn child(dir: &Path, slow: bool) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["resume_child_entry", "--exact", "--test-threads", "1", "--quiet"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if slow {
        cmd.env(CHILD_SLOW, "1");
    }
    cmd
}

/// The global step saved in a run directory (0 if none yet or mid-write).
fn saved_step(run: &Path) -> u64 {
    let Ok(tensors) = load_any_tensors(run.join(RUN_STATE_FILE)) else { return 0 };
    let Some(AnyTensor::U8(json)) = tensors.get("learner") else { return 0 };
    let v: serde_json::Value = serde_json::from_slice(&json.to_vec()).unwrap();
    v["global_step"].as_u64().unwrap()
}

fn step_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .map(String::from)
        .collect()
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_bit_identical_weights() {
    let reference = TempDir::new("kill-ref");
    assert!(child(reference.path(), false).status().unwrap().success());

    let dir = TempDir::new("kill");
    // Kill once in the first epoch and once in the third (96 steps in all), a few milliseconds
    // after a save was seen, so some kills land between saves and some during one.
    for (kill_after, delay_ms) in [(10u64, 3u64), (70, 9)] {
        let mut c = child(dir.path(), true).spawn().unwrap();
        let start = Instant::now();
        while saved_step(&dir.path().join("run")) < kill_after {
            assert!(start.elapsed() < Duration::from_secs(60), "the child never reached step {kill_after}");
            assert!(c.try_wait().unwrap().is_none(), "the child finished before it was killed");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill().unwrap(); // SIGKILL
        let status = c.wait().unwrap();
        assert!(!status.success(), "killed child exited normally");
        assert!(!dir.path().join("final.safetensors").exists());
    }
    assert!(child(dir.path(), false).status().unwrap().success());

    let (a, b) = (mnist_mlp(100), mnist_mlp(200));
    load_module(reference.path().join("final.safetensors"), &a).unwrap();
    load_module(dir.path().join("final.safetensors"), &b).unwrap();
    assert_eq!(bits(&a), bits(&b), "the resumed run's weights differ from the uninterrupted run's");
    // The per-step log has every step once, with the same values.
    assert_eq!(step_lines(&dir.path().join("log.jsonl")), step_lines(&reference.path().join("log.jsonl")));
    assert_eq!(step_lines(&reference.path().join("log.jsonl")).len(), 96);
}
