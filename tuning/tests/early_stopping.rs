//! Early stopping: each knob's semantics against traces worked out from Keras' algorithm.

use ferrograd_nn::layers::Linear;
use ferrograd_nn::Module;
use ferrograd_tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd_tensor::Tensor;
use ferrograd_tuning::early_stopping::{EarlyStopping, Mode};

fn model() -> Linear<f32> {
    Linear::new(2, 1, &mut StdRng::seed_from_u64(0))
}

/// Feeds `values` epoch by epoch; returns the epoch at which it said stop.
fn run(stopper: &mut EarlyStopping, values: &[f64]) -> Option<usize> {
    let m = model();
    values.iter().enumerate().find(|&(epoch, &v)| stopper.on_epoch_end(epoch, v, &m)).map(|(e, _)| e)
}

#[test]
fn patience_counts_epochs_without_improvement() {
    let losses = [1.0, 0.8, 0.9, 0.85, 0.95, 0.7];
    assert_eq!(run(&mut EarlyStopping::new("loss"), &losses), Some(2));
    assert_eq!(run(&mut EarlyStopping::new("loss").patience(1), &losses), Some(2));
    assert_eq!(run(&mut EarlyStopping::new("loss").patience(2), &losses), Some(3));
    assert_eq!(run(&mut EarlyStopping::new("loss").patience(3), &losses), Some(4));
    assert_eq!(run(&mut EarlyStopping::new("loss").patience(4), &losses), None);
    // An improvement resets the count.
    let mut s = EarlyStopping::new("loss").patience(2);
    assert_eq!(run(&mut s, &[1.0, 1.1, 0.9, 1.0, 0.8, 0.85, 0.86]), Some(6));
    assert_eq!((s.best(), s.best_epoch(), s.stopped_epoch()), (Some(0.8), Some(4), Some(6)));
}

#[test]
fn mode_and_auto() {
    assert_eq!(EarlyStopping::<f32>::new("val_loss").resolved_mode(), Mode::Min);
    assert_eq!(EarlyStopping::<f32>::new("val_accuracy").resolved_mode(), Mode::Max);
    assert_eq!(EarlyStopping::<f32>::new("f1").resolved_mode(), Mode::Max);
    assert_eq!(EarlyStopping::<f32>::new("mse").resolved_mode(), Mode::Min);
    assert_eq!(EarlyStopping::<f32>::new("val_accuracy").mode(Mode::Min).resolved_mode(), Mode::Min);
    let acc = [0.5, 0.6, 0.55];
    assert_eq!(run(&mut EarlyStopping::new("val_accuracy"), &acc), Some(2));
    assert_eq!(run(&mut EarlyStopping::new("val_accuracy").mode(Mode::Min), &acc), Some(1));
}

#[test]
fn min_delta_needs_a_strictly_larger_gain() {
    // A gain of 0.0625 does not beat min_delta 0.125, and a gain of exactly 0.125 does not either
    // (values chosen exact in binary).
    let acc = [0.5, 0.5625, 0.625, 0.5, 0.55];
    let mut s = EarlyStopping::new("acc").patience(3).min_delta(0.125);
    assert_eq!(run(&mut s, &acc), Some(3));
    assert_eq!(s.best(), Some(0.5));
    // The sign of min_delta does not matter.
    let mut s = EarlyStopping::new("acc").patience(3).min_delta(-0.125);
    assert_eq!(run(&mut s, &acc), Some(3));
    let mut s = EarlyStopping::new("acc").patience(3).min_delta(0.099);
    assert_eq!(run(&mut s, &[0.5, 0.6, 0.7]), None);
    assert_eq!(s.best(), Some(0.7));
}

#[test]
fn baseline_must_be_beaten_within_patience() {
    // Improving but never beating 0.9: the wait keeps growing; it stops at the first
    // non-improving epoch once patience has run out.
    let mut s = EarlyStopping::new("acc").patience(2).baseline(0.9);
    assert_eq!(run(&mut s, &[0.5, 0.6, 0.7, 0.65]), Some(3));
    assert_eq!(s.best(), Some(0.7));
    // Improvements alone never stop it.
    let mut s = EarlyStopping::new("acc").patience(2).baseline(0.9);
    assert_eq!(run(&mut s, &[0.5, 0.6, 0.7, 0.8]), None);
    assert_eq!(s.wait(), 4);
    // Beating the baseline resets the wait.
    let mut s = EarlyStopping::new("acc").patience(2).baseline(0.9);
    assert_eq!(run(&mut s, &[0.5, 0.95, 0.94, 0.93, 0.92]), Some(3));
    // Loss baseline: a first value above it, then nothing better.
    let mut s = EarlyStopping::new("loss").patience(1).baseline(0.1);
    assert_eq!(run(&mut s, &[0.5, 0.6]), Some(1));
}

#[test]
fn start_from_epoch_ignores_warm_up() {
    let losses = [1.0, 2.0, 3.0, 2.5, 2.6];
    let mut s = EarlyStopping::new("loss").start_from_epoch(2);
    assert_eq!(run(&mut s, &losses), Some(4));
    assert_eq!((s.best(), s.best_epoch()), (Some(2.5), Some(3)));
}

#[test]
fn nan_never_improves() {
    let mut s = EarlyStopping::new("loss").patience(1);
    assert_eq!(run(&mut s, &[f64::NAN, 1.0, f64::NAN]), Some(2));
    assert_eq!(s.best(), Some(1.0));
}

fn set_weights(m: &Linear<f32>, v: f32) {
    for p in m.parameters() {
        p.set(Tensor::full(&p.shape(), v));
    }
}

fn weights(m: &Linear<f32>) -> Vec<f32> {
    m.parameters().iter().flat_map(|p| p.value().to_vec()).collect()
}

#[test]
fn restore_best_weights_puts_back_the_best_epoch() {
    let m = model();
    let mut s = EarlyStopping::new("val_loss").patience(2).restore_best_weights(true);
    let losses = [1.0, 0.5, 0.7, 0.8];
    let mut stopped = None;
    for (epoch, &loss) in losses.iter().enumerate() {
        set_weights(&m, epoch as f32);
        if s.on_epoch_end(epoch, loss, &m) {
            stopped = Some(epoch);
            break;
        }
    }
    assert_eq!(stopped, Some(3));
    assert_eq!(weights(&m), vec![3.0; 3]);
    assert!(s.restore(&m).unwrap());
    assert_eq!(weights(&m), vec![1.0; 3]);
    // Without the flag nothing is kept or restored.
    let mut s = EarlyStopping::new("val_loss");
    s.on_epoch_end(0, 1.0, &m);
    assert!(!s.restore(&m).unwrap());
}

#[test]
fn restore_before_any_improvement_keeps_the_first_watched_epoch() {
    let m = model();
    let mut s = EarlyStopping::new("loss").patience(5).restore_best_weights(true).start_from_epoch(1);
    for (epoch, &loss) in [f64::NAN, f64::NAN, f64::NAN].iter().enumerate() {
        set_weights(&m, epoch as f32);
        s.on_epoch_end(epoch, loss, &m);
    }
    assert_eq!((s.best(), s.best_epoch()), (None, Some(1)));
    assert!(s.restore(&m).unwrap());
    assert_eq!(weights(&m), vec![1.0; 3]);
}

#[test]
fn restore_into_another_architecture_is_an_error() {
    let m = model();
    let mut s = EarlyStopping::new("loss").restore_best_weights(true);
    s.on_epoch_end(0, 1.0, &m);
    let other = Linear::<f32>::new(3, 1, &mut StdRng::seed_from_u64(0));
    assert!(s.restore(&other).is_err());
}

#[test]
fn reset_forgets_the_run() {
    let mut s = EarlyStopping::new("loss");
    assert_eq!(run(&mut s, &[1.0, 2.0]), Some(1));
    s.reset();
    assert_eq!((s.best(), s.stopped_epoch(), s.wait()), (None, None, 0));
    assert_eq!(run(&mut s, &[3.0, 2.0, 1.0]), None);
}
