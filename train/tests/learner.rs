//! The Learner against hand-written loops built from the same public pieces: the same weights
//! bit for bit (plain, clipped, scheduled), accumulation as a larger batch, train/eval
//! switching, custom steps, metrics and early stopping inside a run.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{bits, blobs, loader, small_mlp};
use ferrograd_autograd::{no_grad, Var};
use ferrograd_nn::layers::{Dropout, Linear, ReLU, Sequential};
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::Module;
use ferrograd_optim::{
    clip_grad_norm, Adam, CosineAnnealingLR, GroupOptions, LrScheduler, OneCycleLR, Optim, Optimizer, Sgd,
};
use ferrograd_tensor::Tensor;
use ferrograd_train::{
    Accuracy, Callback, Context, Control, DataSource, EarlyStopping, EpochLogs, Learner, LrSchedule, StepOutput,
    TopKAccuracy, TrainError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn learner_matches_a_hand_loop_bit_for_bit() {
    let data = blobs(200, 1);
    let train = loader(&data, 32, 5);
    let (a, b) = (small_mlp(0), small_mlp(0));

    let mut opt = Optim::new(Adam::default(), a.parameters(), GroupOptions::lr(1e-2));
    for epoch in 0..3u64 {
        for (x, y) in train.iter_epoch(epoch) {
            let loss = cross_entropy(&a.forward(&Var::constant(x)), &y);
            opt.step(&loss.backward());
        }
    }

    let opt = Optim::new(Adam::default(), b.parameters(), GroupOptions::lr(1e-2));
    let history = Learner::new(&b, opt, cross_entropy).quiet().fit(&train, None, 3).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(history.epochs.len(), 3);
    assert_eq!(history.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn clipping_and_a_cosine_schedule_match_the_hand_loop() {
    let data = blobs(150, 2);
    let train = loader(&data, 16, 3);
    let (a, b) = (small_mlp(4), small_mlp(4));
    let epochs = 4u64;

    let params = a.parameters();
    let mut opt = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, params.clone(), GroupOptions::lr(0.1));
    let sched = CosineAnnealingLR::new(0.1, epochs, 0.0);
    for epoch in 0..epochs {
        opt.set_lr(sched.lr_at(epoch));
        for (x, y) in train.iter_epoch(epoch) {
            let mut grads = cross_entropy(&a.forward(&Var::constant(x)), &y).backward();
            clip_grad_norm(&mut grads, &params, 0.5, 2.0);
            opt.step(&grads);
        }
    }

    let opt = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, b.parameters(), GroupOptions::lr(0.1));
    let history = Learner::new(&b, opt, cross_entropy)
        .clip_grad_norm(0.5)
        .callback(LrSchedule::per_epoch(CosineAnnealingLR::new(0.1, epochs, 0.0)))
        .quiet()
        .fit(&train, None, epochs as usize)
        .unwrap();
    assert_eq!(bits(&a), bits(&b));
    let lrs: Vec<f64> = history.series("lr").into_iter().map(|(_, v)| v).collect();
    assert_eq!(lrs, (0..epochs).map(|e| sched.lr_at(e)).collect::<Vec<_>>());
}

#[test]
fn a_per_step_one_cycle_schedule_drives_lr_and_momentum() {
    let data = blobs(96, 3);
    let train = loader(&data, 32, 0);
    let model = small_mlp(1);
    let steps = 3 * 4; // 3 batches per epoch, 4 epochs
    let opt = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, model.parameters(), GroupOptions::lr(0.05));
    let mut learner =
        Learner::new(&model, opt, cross_entropy).callback(LrSchedule::per_step(OneCycleLR::new(0.05, steps))).quiet();
    learner.fit(&train, None, 3).unwrap();
    let mut reference = OneCycleLR::new(0.05, steps);
    reference.set_epoch(9);
    assert_eq!(learner.optimizer().lr(), reference.get_lr());
    assert_eq!(learner.optimizer().momentum(), reference.get_momentum());
}

#[test]
fn accumulation_equals_one_batch_of_the_group() {
    // Two accumulated batches of 16 give the gradient of the batch of 32 they make up.
    let data = blobs(128, 6);
    let (a, b) = (small_mlp(2), small_mlp(2));
    let big = loader(&data, 32, 9);
    let mut opt = Optim::new(Sgd::default(), a.parameters(), GroupOptions::lr(0.1));
    for (x, y) in big.iter_epoch(0) {
        opt.step(&cross_entropy(&a.forward(&Var::constant(x)), &y).backward());
    }
    // The same samples in the same order, 16 at a time: batches 2i and 2i+1 of an unshuffled
    // loader over the big loader's epoch order.
    let order = big.epoch_order(0);
    let idx = Tensor::from_vec(order.iter().map(|&i| i as i64).collect(), &[order.len()]);
    let (x, y) = data.batch(&idx);
    let small = ferrograd_nn::data::DataLoader::new(ferrograd_nn::data::TensorDataset::new(x, y), 16);
    let opt = Optim::new(Sgd::default(), b.parameters(), GroupOptions::lr(0.1));
    let history = Learner::new(&b, opt, cross_entropy).accumulate(2).quiet().fit(&small, None, 1).unwrap();
    for ((name, wa), (_, wb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        for (p, q) in wa.to_vec().iter().zip(wb.to_vec()) {
            assert!((p - q).abs() <= 1e-6 * (1.0 + p.abs()), "{name}: {p} vs {q}");
        }
    }
    assert!(history.epochs[0].get("loss").unwrap().is_finite());
}

/// A layer that records whether it ran in training mode.
struct ModeProbe {
    training: AtomicBool,
    seen_train: Arc<AtomicUsize>,
    seen_eval: Arc<AtomicUsize>,
}

impl Module for ModeProbe {
    fn forward(&self, x: &Var) -> Var {
        let counter = if self.training.load(Ordering::Relaxed) { &self.seen_train } else { &self.seen_eval };
        counter.fetch_add(1, Ordering::Relaxed);
        x.clone()
    }
    fn set_training_self(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

#[test]
fn training_runs_in_train_mode_and_validation_in_eval_mode() {
    let data = blobs(64, 7);
    let (train, val) = (loader(&data, 16, 1), ferrograd_nn::data::DataLoader::new(data.clone(), 32));
    let (seen_train, seen_eval) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let probe =
        ModeProbe { training: AtomicBool::new(false), seen_train: seen_train.clone(), seen_eval: seen_eval.clone() };
    let mut rng = StdRng::seed_from_u64(0);
    let model = Sequential::new().add(Linear::new(4, 3, &mut rng)).add(probe);
    model.eval();
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    Learner::new(&model, opt, cross_entropy).quiet().fit(&train, Some(&val), 2).unwrap();
    // 4 training batches and 2 validation batches per epoch.
    assert_eq!((seen_train.load(Ordering::Relaxed), seen_eval.load(Ordering::Relaxed)), (8, 4));
}

#[test]
fn validation_is_deterministic_with_dropout_and_computes_no_gradients() {
    let data = blobs(90, 8);
    let (train, val) = (loader(&data, 30, 1), ferrograd_nn::data::DataLoader::new(data.clone(), 45));
    let mut rng = StdRng::seed_from_u64(1);
    let model = Sequential::new()
        .add(Linear::new(4, 32, &mut rng))
        .add(ReLU)
        .add(Dropout::new(0.5, 3))
        .add(Linear::new(32, 3, &mut rng));
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let mut learner = Learner::new(&model, opt, cross_entropy).metric(Accuracy::new()).quiet();
    learner.fit(&train, Some(&val), 2).unwrap();
    let (e1, e2) = (learner.evaluate(&val).unwrap(), learner.evaluate(&val).unwrap());
    assert_eq!(e1, e2, "eval mode turns dropout off");
    // The same figures by hand, in eval mode under no-grad.
    model.eval();
    let logits = no_grad(|| model.forward(&Var::constant(data.inputs().clone())));
    model.train(true);
    assert!(!logits.requires_grad());
    let loss = f64::from(cross_entropy(&logits, data.targets()).item());
    assert!((e1.get("loss").unwrap() - loss).abs() < 1e-6, "{e1:?} vs {loss}");
}

#[test]
fn metrics_are_pooled_over_the_epoch_for_train_and_validation() {
    let data = blobs(120, 9);
    let (train, val) = (loader(&data, 50, 1), ferrograd_nn::data::DataLoader::new(data.clone(), 7));
    let model = small_mlp(3);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let mut learner =
        Learner::new(&model, opt, cross_entropy).metric(Accuracy::new()).metric(TopKAccuracy::new(2)).quiet();
    let history = learner.fit(&train, Some(&val), 1).unwrap();
    let logs = history.last().unwrap();
    assert_eq!(
        logs.names(),
        vec![
            "loss",
            "accuracy",
            "top2_accuracy",
            "val_loss",
            "val_accuracy",
            "val_top2_accuracy",
            "lr",
            "seconds",
            "val_seconds"
        ]
    );
    // Validation accuracy over 18 uneven batches equals the accuracy over the whole set.
    let pred = no_grad(|| model.forward(&Var::constant(data.inputs().clone()))).data().argmax(1, false);
    let correct = pred.eq(data.targets()).to_vec().iter().filter(|&&b| b).count();
    assert_eq!(logs.get("val_accuracy").unwrap(), correct as f64 / 120.0);
}

#[test]
fn a_custom_step_logs_its_values_and_uses_the_batch_indices() {
    // A "distillation" step: targets looked up by sample index in a table of soft labels.
    let data = blobs(60, 10);
    let train = loader(&data, 20, 2);
    let model = small_mlp(5);
    let soft = Tensor::<f32>::full(&[60, 3], 1.0 / 3.0);
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let mut seen = Vec::new();
    let history = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .train_step(|ctx, batch| {
            seen.extend(batch.indices.to_vec());
            let noise: f32 = ctx.rng().random();
            assert!((0.0..1.0).contains(&noise));
            let logits = ctx.model.forward(&Var::constant(batch.inputs.clone()));
            let hard = cross_entropy(&logits, &batch.targets);
            let t = soft.index_select(0, &batch.indices);
            let soft_loss =
                (&logits.log_softmax(1) * &Var::constant(t)).sum().neg().mul_scalar(1.0 / batch.len() as f32);
            let (h, s) = (f64::from(hard.item()), f64::from(soft_loss.item()));
            StepOutput::new(&hard + &soft_loss).output(logits.into_data()).log("hard", h).log("soft", s)
        })
        .quiet()
        .fit(&train, None, 2)
        .unwrap();
    let logs = history.last().unwrap();
    assert!(logs.get("hard").is_some() && logs.get("soft").is_some() && logs.get("accuracy").is_some());
    let mut first: Vec<i64> = seen[..60].to_vec();
    first.sort_unstable();
    assert_eq!(first, (0..60).collect::<Vec<_>>());
    assert_eq!(&seen[..20], &train.epoch_order(0)[..20].iter().map(|&i| i as i64).collect::<Vec<_>>()[..]);
}

#[test]
fn a_step_without_output_cannot_feed_metrics() {
    let data = blobs(30, 11);
    let train = loader(&data, 10, 2);
    let model = small_mlp(6);
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    let err = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .train_step(|ctx, b| {
            StepOutput::new(cross_entropy(&ctx.model.forward(&Var::constant(b.inputs.clone())), &b.targets))
        })
        .quiet()
        .fit(&train, None, 1)
        .unwrap_err();
    assert!(matches!(err, TrainError::Config(ref m) if m.contains("accuracy")), "{err}");
}

#[test]
fn early_stopping_stops_and_restores_at_the_right_epoch() {
    // A scripted validation loss: best at epoch 2, patience 2 -> stop at epoch 4, weights of epoch 2.
    let script = [1.0, 0.8, 0.5, 0.6, 0.7, 0.4];
    let data = blobs(40, 12);
    let train = loader(&data, 20, 3);
    let model = small_mlp(7);
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    let weights_at_end_of = std::cell::RefCell::new(Vec::new());
    let history = Learner::new(&model, opt, cross_entropy)
        .logs_sync(|logs| logs.set("scripted", script[logs.epoch]))
        .callback(EarlyStopping::new("scripted").patience(2).restore_best_weights(true))
        .on_epoch_end(|ctx, _| weights_at_end_of.borrow_mut().push(bits(ctx.model)))
        .quiet()
        .fit(&train, None, 10)
        .unwrap();
    assert_eq!(history.epochs.len(), 5);
    assert_eq!(history.stopped_early, Some(4));
    assert_eq!(bits(&model), weights_at_end_of.borrow()[2]);
    // Messages count epochs from 1, as Keras prints them.
    assert!(history.messages.iter().any(|m| m.contains("early stopping at epoch 5") && m.contains("(epoch 3)")));
    assert!(history.messages.iter().any(|m| m.contains("restored the weights of epoch 3")));
}

#[test]
fn a_callback_watching_a_missing_log_names_what_exists() {
    let data = blobs(20, 13);
    let train = loader(&data, 10, 3);
    let model = small_mlp(8);
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    let err = Learner::new(&model, opt, cross_entropy)
        .callback(EarlyStopping::new("val_loss"))
        .quiet()
        .fit(&train, None, 2)
        .unwrap_err();
    assert!(err.to_string().contains("no `val_loss`") && err.to_string().contains("\"loss\""), "{err}");
}

/// A callback that stops after a given epoch and counts its hooks.
struct StopAfter(usize, Arc<AtomicUsize>);

impl Callback for StopAfter {
    fn name(&self) -> String {
        "StopAfter".into()
    }
    fn on_step_end(&mut self, _: &mut Context<'_>, _: &ferrograd_train::StepLogs) -> Result<(), TrainError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn on_epoch_end(&mut self, ctx: &mut Context<'_>, _: &EpochLogs) -> Result<Control, TrainError> {
        Ok(if ctx.epoch >= self.0 { Control::Stop } else { Control::Continue })
    }
}

#[test]
fn a_callback_can_stop_the_run_and_sees_every_step() {
    let data = blobs(50, 14);
    let train = loader(&data, 10, 3);
    let model = small_mlp(9);
    let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    let steps = Arc::new(AtomicUsize::new(0));
    let history = Learner::new(&model, opt, cross_entropy)
        .accumulate(2)
        .callback(StopAfter(1, steps.clone()))
        .quiet()
        .fit(&train, None, 5)
        .unwrap();
    assert_eq!(history.stopped_early, Some(1));
    // 5 batches per epoch in groups of 2: 3 steps per epoch (the last group is one batch).
    assert_eq!(steps.load(Ordering::Relaxed), 6);
    assert_eq!(train.epoch_len(0), 5);
}
