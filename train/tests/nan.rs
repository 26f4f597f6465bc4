//! No silent NaN (issue 18, item 7): a NaN input, a NaN gradient and an exploding learning
//! rate stop training with a message naming the step (or skip the step where asked), before
//! the weights are touched; early stopping says when its monitor was NaN.

use crate::common;

use common::{bits, blobs, loader, mnist_mlp, mnist_subset, small_mlp};
use ferrograd_autograd::Var;
use ferrograd_nn::data::TensorDataset;
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::Module;
use ferrograd_optim::{Adam, GroupOptions, Optim};
use ferrograd_tensor::Tensor;
use ferrograd_train::{EarlyStopping, Learner, StepOutput, TerminateOnNaN, TrainError};

/// The blobs with sample 17's inputs replaced by NaN.
fn poisoned() -> TensorDataset<f32, i64> {
    let data = blobs(96, 3);
    let mut x = data.inputs().to_vec();
    x[17 * 4..18 * 4].fill(f32::NAN);
    TensorDataset::new(Tensor::from_vec(x, &[96, 4]), data.targets().clone())
}

fn all_finite(model: &dyn Module) -> bool {
    model.parameters().iter().all(|p| p.value().to_vec().iter().all(|v| v.is_finite()))
}

#[test]
fn one_nan_input_stops_adam_with_a_message_naming_the_step() {
    let data = poisoned();
    let train = loader(&data, 16, 4);
    // The batch (= step, no accumulation) that holds sample 17 in epoch 0.
    let batch = train.epoch_order(0).iter().position(|&i| i == 17).unwrap() / 16;

    // Before the guard: one NaN sample turned every weight into NaN, silently.
    let unguarded = small_mlp(0);
    let opt = Optim::new(Adam::default(), unguarded.parameters(), GroupOptions::lr(1e-2));
    Learner::new(&unguarded, opt, cross_entropy).without_nan_guard().quiet().fit(&train, None, 1).unwrap();
    assert!(unguarded.parameters().iter().all(|p| p.value().to_vec().iter().all(|v| v.is_nan())));

    let model = small_mlp(0);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let err = Learner::new(&model, opt, cross_entropy).quiet().fit(&train, None, 3).unwrap_err();
    match &err {
        TrainError::NonFinite { epoch: 0, step, batch: b, what, value } => {
            assert_eq!((*step, *b), (batch as u64 + 1, batch));
            assert_eq!(what, "the loss");
            assert!(value.is_nan());
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let message = err.to_string();
    let expected = format!("epoch 1, step {} (batch {} of the epoch): the loss is NaN", batch + 1, batch + 1);
    assert!(message.starts_with(&expected), "{message}");
    assert!(all_finite(&model), "the NaN step must not reach the weights");
}

#[test]
fn skip_mode_drops_the_step_says_so_and_trains_on() {
    let data = poisoned();
    let train = loader(&data, 16, 4);
    let model = small_mlp(0);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let history = Learner::new(&model, opt, cross_entropy)
        .terminate_on_nan(TerminateOnNaN::new().skip())
        .quiet()
        .fit(&train, None, 3)
        .unwrap();
    assert!(all_finite(&model));
    assert_eq!(history.epochs.len(), 3);
    for e in &history.epochs {
        assert_eq!(e.get("skipped_steps"), Some(1.0), "epoch {}", e.epoch);
        assert!(e.get("loss").unwrap().is_nan(), "the epoch's mean loss includes the NaN batch");
    }
    let skips: Vec<&String> = history.messages.iter().filter(|m| m.contains("update skipped")).collect();
    assert_eq!(skips.len(), 3, "{:?}", history.messages);
}

#[test]
fn a_nan_gradient_under_a_finite_loss_names_the_parameter() {
    let data = blobs(32, 5);
    let train = loader(&data, 8, 1);
    let model = small_mlp(1);
    // sqrt(|w|) at w = 0 is finite but its gradient is not.
    let first = model.named_parameters()[0].1.clone();
    first.update(|w| {
        let mut v = w.to_vec();
        v[3] = 0.0;
        *w = Tensor::from_vec(v, w.shape());
    });
    let before = bits(&model);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let err = Learner::new(&model, opt, cross_entropy)
        .train_step(|ctx, b| {
            let logits = ctx.model.forward(&Var::constant(b.inputs.clone()));
            let penalty = first.var().abs().sqrt().sum().mul_scalar(1e-3);
            StepOutput::new(&cross_entropy(&logits, &b.targets) + &penalty)
        })
        .quiet()
        .fit(&train, None, 1)
        .unwrap_err();
    match &err {
        TrainError::NonFinite { step: 1, what, .. } => assert_eq!(what, "the gradient of `0.weight`"),
        other => panic!("expected NonFinite at step 1, got {other:?}"),
    }
    assert_eq!(bits(&model), before);
}

#[test]
fn a_learning_rate_of_1e3_diverges_and_stops() {
    // The main job's model and optimizer at --lr 1e3: the loss stays finite (it reached 2e10)
    // while the weights fly off; the guard stops it within the first epoch.
    let data = mnist_subset(2000);
    let train = loader(&data, 32, 0);
    let model = mnist_mlp(0);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e3));
    let err = Learner::new(&model, opt, cross_entropy).quiet().fit(&train, None, 3).unwrap_err();
    match &err {
        TrainError::Diverged { epoch: 0, step, loss, first, factor } => {
            assert!(*step < 20, "stopped only at step {step}");
            assert!(loss > &(factor * first));
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
    assert!(err.to_string().contains("diverged") && err.to_string().contains("lower the learning rate"));
}

#[test]
fn the_guard_leaves_a_healthy_run_alone() {
    let data = mnist_subset(2000);
    let train = loader(&data, 32, 0);
    let model = mnist_mlp(0);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-3));
    let history = Learner::new(&model, opt, cross_entropy).quiet().fit(&train, None, 2).unwrap();
    assert!(history.messages.is_empty(), "{:?}", history.messages);
    let losses: Vec<f64> = history.series("loss").into_iter().map(|(_, v)| v).collect();
    assert!(losses[1] < losses[0] && losses[1] < 1.0, "{losses:?}");
}

#[test]
fn early_stopping_says_when_its_monitor_is_nan() {
    let data = blobs(40, 6);
    let train = loader(&data, 20, 1);
    let model = small_mlp(2);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let script = [0.5, f64::NAN, f64::NAN, 0.4];
    let history = Learner::new(&model, opt, cross_entropy)
        .logs_sync(|logs| logs.set("val_loss", script[logs.epoch]))
        .callback(EarlyStopping::new("val_loss").patience(2))
        .quiet()
        .fit(&train, None, 4)
        .unwrap();
    assert_eq!(history.stopped_early, Some(2));
    assert_eq!(
        history.messages,
        vec![
            "early stopping: val_loss is NaN at epoch 2; counted as no improvement (1 of 2 epochs of patience used)",
            "early stopping: val_loss is NaN at epoch 3; counted as no improvement; early stopping at epoch 3: \
             val_loss has not improved on 0.5 (epoch 1) for 2 epoch(s) (patience 2)",
        ]
    );
}
