//! Optimizer trajectories and scheduler lr sequences against PyTorch's, recorded by
//! `tests/fixtures/gen_optim.py` into `tests/fixtures/optim_reference.txt` (float64).

use std::collections::HashMap;

use ferrograd_autograd::{Param, Var};
use ferrograd_optim::{
    Adagrad, Adam, ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, ExponentialLR, GroupOptions, LinearLR,
    Lion, LrScheduler, MultiStepLR, OneCycleLR, Optim, Optimizer, PlateauMode, PlateauOptions, ReduceLROnPlateau,
    RmsProp, SequentialLR, Sgd, StepLR, ThresholdMode,
};
use ferrograd_tensor::Tensor;

const FIXTURE: &str = include_str!("fixtures/optim_reference.txt");
const X: [f64; 12] = [0.5, -1.0, 2.0, 1.5, 0.25, -0.5, -1.0, 2.0, 0.75, 0.3, -0.6, 1.2];
const Y: [f64; 8] = [1.0, -2.0, 0.5, 0.0, -1.5, 2.5, 2.0, 1.0];
const W0: [f64; 6] = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6];

fn fixture() -> HashMap<String, Vec<f64>> {
    FIXTURE
        .lines()
        .map(|line| {
            let mut it = line.split_whitespace();
            let key = format!("{} {}", it.next().unwrap(), it.next().unwrap());
            (key, it.map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

fn optimizer(name: &str, w: &Param<f64>) -> Box<dyn Optimizer<f64>> {
    let p = vec![w.clone()];
    let lr = GroupOptions::lr;
    let sgd = |momentum, dampening, nesterov, maximize| Sgd { momentum, dampening, nesterov, maximize };
    match name {
        "sgd_plain" => Box::new(Optim::new(Sgd::default(), p, lr(0.01))),
        "sgd_momentum" => Box::new(Optim::new(sgd(0.9, 0.0, false, false), p, lr(0.01))),
        "sgd_nesterov" => Box::new(Optim::new(sgd(0.9, 0.0, true, false), p, lr(0.01))),
        "sgd_dampening" => Box::new(Optim::new(sgd(0.9, 0.3, false, false), p, lr(0.01))),
        "sgd_wd" => Box::new(Optim::new(sgd(0.9, 0.0, false, false), p, lr(0.01).weight_decay(0.1))),
        "sgd_maximize" => Box::new(Optim::new(sgd(0.5, 0.0, false, true), p, lr(0.001))),
        "adam" => Box::new(Optim::new(Adam::default(), p, lr(0.05))),
        "adam_amsgrad" => {
            Box::new(Optim::new(Adam { betas: (0.8, 0.9), amsgrad: true, ..Adam::default() }, p, lr(0.05)))
        }
        "adam_wd" => Box::new(Optim::new(Adam::default(), p, lr(0.05).weight_decay(0.1))),
        "adamw" => Box::new(Optim::new(Adam::adamw(), p, lr(0.05).weight_decay(0.1))),
        "adamw_amsgrad" => Box::new(Optim::new(Adam { amsgrad: true, ..Adam::adamw() }, p, lr(0.05).weight_decay(0.3))),
        "rmsprop" => Box::new(Optim::new(RmsProp::default(), p, lr(0.01))),
        "rmsprop_centered" => Box::new(Optim::new(RmsProp { centered: true, ..RmsProp::default() }, p, lr(0.01))),
        "rmsprop_momentum" => Box::new(Optim::new(RmsProp { momentum: 0.9, ..RmsProp::default() }, p, lr(0.01))),
        "rmsprop_all" => {
            let rule = RmsProp { alpha: 0.9, momentum: 0.5, centered: true, ..RmsProp::default() };
            Box::new(Optim::new(rule, p, lr(0.01).weight_decay(0.1)))
        }
        "adagrad" => Box::new(Optim::new(Adagrad::default(), p, lr(0.1))),
        "adagrad_all" => {
            let rule = Adagrad { lr_decay: 0.01, initial_accumulator_value: 0.1, ..Adagrad::default() };
            Box::new(Optim::new(rule, p, lr(0.1).weight_decay(0.1)))
        }
        "lion" => Box::new(Optim::new(Lion::default(), p, lr(0.01))),
        "lion_wd" => {
            Box::new(Optim::new(Lion { betas: (0.95, 0.98), ..Lion::default() }, p, lr(0.02).weight_decay(0.5)))
        }
        other => panic!("no optimizer configuration named {other}"),
    }
}

fn loss(w: &Param<f64>) -> Var<f64> {
    let x = Var::constant(Tensor::from_vec(X.to_vec(), &[4, 3]));
    let y = Var::constant(Tensor::from_vec(Y.to_vec(), &[4, 2]));
    (&x.matmul(&w.var()) - &y).square().sum()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs() + abs, "{name}: value {i} is {g}, PyTorch has {w}");
    }
}

#[test]
fn optimizers_follow_pytorch_trajectories() {
    let fx = fixture();
    let names: Vec<&String> = fx.keys().filter(|k| k.starts_with("optim ")).collect();
    assert_eq!(names.len(), 19, "every optimizer configuration of the fixture");
    for key in names {
        let name = &key["optim ".len()..];
        let w = Param::new(Tensor::from_vec(W0.to_vec(), &[3, 2]));
        let mut opt = optimizer(name, &w);
        let mut traj = Vec::new();
        for _ in 0..20 {
            opt.step(&loss(&w).backward());
            traj.extend(w.value().to_vec());
        }
        assert_close(name, &traj, &fx[key], 1e-5, 1e-12);
    }
}

#[test]
fn f32_adam_tracks_the_f64_reference() {
    let fx = fixture();
    let w = Param::new(Tensor::from_vec(W0.iter().map(|&v| v as f32).collect(), &[3, 2]));
    let mut opt = Optim::new(
        Adam { betas: (0.8, 0.9), amsgrad: true, ..Adam::default() },
        vec![w.clone()],
        GroupOptions::lr(0.05),
    );
    let x = Var::constant(Tensor::from_vec(X.iter().map(|&v| v as f32).collect(), &[4, 3]));
    let y = Var::constant(Tensor::from_vec(Y.iter().map(|&v| v as f32).collect(), &[4, 2]));
    let mut traj = Vec::new();
    for _ in 0..20 {
        opt.step(&(&x.matmul(&w.var()) - &y).square().sum().backward());
        traj.extend(w.value().to_vec().into_iter().map(f64::from));
    }
    assert_close("adam_amsgrad f32", &traj, &fx["optim adam_amsgrad"], 1e-4, 1e-6);
}

fn schedule(name: &str) -> Box<dyn LrScheduler> {
    match name {
        "constant" => Box::new(ConstantLR::new(0.1, 0.5, 4)),
        "step" => Box::new(StepLR::new(0.1, 7, 0.5)),
        "multistep" => Box::new(MultiStepLR::new(0.1, vec![12, 5, 20], 0.3)),
        "exponential" => Box::new(ExponentialLR::new(0.1, 0.9)),
        "cosine" => Box::new(CosineAnnealingLR::new(0.1, 10, 0.001)),
        "warm_restarts" => Box::new(CosineAnnealingWarmRestarts::new(0.1, 5, 2, 0.001)),
        "linear" => Box::new(LinearLR::new(0.1, 0.1, 1.0, 8)),
        "onecycle" => Box::new(OneCycleLR::new(0.1, 31)),
        "sequential" => Box::new(SequentialLR::new(
            vec![Box::new(LinearLR::new(0.1, 0.1, 1.0, 5)), Box::new(CosineAnnealingLR::new(0.1, 20, 0.0))],
            vec![5],
        )),
        other => panic!("no schedule named {other}"),
    }
}

#[test]
fn schedulers_follow_pytorch_lr_sequences() {
    let fx = fixture();
    let names: Vec<&String> = fx.keys().filter(|k| k.starts_with("sched ")).collect();
    assert_eq!(names.len(), 9);
    for key in names {
        let name = &key["sched ".len()..];
        let mut s = schedule(name);
        let mut lrs = vec![s.get_lr()];
        lrs.extend((0..30).map(|_| s.step()));
        assert_close(name, &lrs, &fx[key], 1e-5, 1e-12);
        // A schedule restored by its epoch continues where it was.
        let mut restored = schedule(name);
        restored.set_epoch(17);
        assert_eq!(restored.step(), lrs[18], "{name}: restored at epoch 17");
    }
}

#[test]
fn reduce_on_plateau_follows_pytorch() {
    let fx = fixture();
    let configs = [
        ("min_rel", PlateauMode::Min, ThresholdMode::Rel, 0.5, 2, 0.01, 1, 0.0),
        ("min_abs", PlateauMode::Min, ThresholdMode::Abs, 0.3, 1, 0.02, 0, 0.005),
        ("max_rel", PlateauMode::Max, ThresholdMode::Rel, 0.5, 3, 0.001, 2, 0.0),
    ];
    for (name, mode, threshold_mode, factor, patience, threshold, cooldown, min_lr) in configs {
        let options = PlateauOptions {
            mode,
            threshold_mode,
            factor,
            patience,
            threshold,
            cooldown,
            min_lr,
            ..PlateauOptions::default()
        };
        let mut s = ReduceLROnPlateau::new(0.1, options);
        let lrs: Vec<f64> = fx[&format!("plateau_metrics {name}")].iter().map(|&m| s.step(m)).collect();
        assert_close(name, &lrs, &fx[&format!("plateau {name}")], 1e-12, 0.0);
    }
}
