//! OneCycleLR's momentum cycling and ChainedScheduler against PyTorch, recorded by
//! `tests/fixtures/gen_sched.py` into `tests/fixtures/sched_reference.txt` (float64): the lr
//! and momentum sequences, and whole training trajectories where [`LrScheduler::apply_to`]
//! writes both into SGD and Adam after every step.

use std::collections::HashMap;

use ferrograd_autograd::{Param, Var};
use ferrograd_optim::{
    Adagrad, Adam, ChainedScheduler, ConstantLR, ExponentialLR, GroupOptions, LinearLR, LrScheduler, MultiStepLR,
    OneCycleLR, Optim, Optimizer, Sgd, StepLR,
};
use ferrograd_tensor::Tensor;

const FIXTURE: &str = include_str!("fixtures/sched_reference.txt");
const X: [f64; 12] = [0.5, -1.0, 2.0, 1.5, 0.25, -0.5, -1.0, 2.0, 0.75, 0.3, -0.6, 1.2];
const Y: [f64; 8] = [1.0, -2.0, 0.5, 0.0, -1.5, 2.5, 2.0, 1.0];
const W0: [f64; 6] = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6];
const STEPS: u64 = 20;

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

#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}[{i}]: {g} vs PyTorch {w}");
    }
}

/// The optimizer and schedule of each `onecycle_*` case in gen_sched.py.
fn onecycle(name: &str, w: &Param<f64>) -> (Box<dyn Optimizer<f64>>, OneCycleLR) {
    let (p, lr) = (vec![w.clone()], GroupOptions::lr(0.1));
    let mut sched = OneCycleLR::new(0.05, STEPS + 1);
    let opt: Box<dyn Optimizer<f64>> = match name {
        "sgd" => Box::new(Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, p, lr)),
        "sgd_custom" => {
            sched = OneCycleLR {
                max_lr: 0.04,
                pct_start: 0.4,
                div_factor: 10.0,
                final_div_factor: 100.0,
                base_momentum: 0.7,
                max_momentum: 0.9,
                ..sched
            };
            Box::new(Optim::new(Sgd { momentum: 0.5, nesterov: true, ..Sgd::default() }, p, lr))
        }
        "adam" => Box::new(Optim::new(Adam::default(), p, lr)),
        "adam_custom" => {
            sched = OneCycleLR { max_lr: 0.02, pct_start: 0.25, base_momentum: 0.8, max_momentum: 0.9, ..sched };
            Box::new(Optim::new(Adam { betas: (0.8, 0.99), ..Adam::default() }, p, lr))
        }
        other => panic!("no case {other}"),
    };
    (opt, sched)
}

#[test]
fn one_cycle_drives_lr_momentum_and_training_as_pytorch() {
    let fx = fixture();
    let (x, y) =
        (Var::constant(Tensor::from_vec(X.to_vec(), &[4, 3])), Var::constant(Tensor::from_vec(Y.to_vec(), &[4, 2])));
    for name in ["sgd", "sgd_custom", "adam", "adam_custom"] {
        let w = Param::new(Tensor::from_vec(W0.to_vec(), &[3, 2]));
        let (mut opt, mut sched) = onecycle(name, &w);
        sched.apply_to(opt.as_mut());
        let (mut lrs, mut moms, mut traj) = (vec![opt.lr()], vec![opt.momentum().unwrap()], vec![]);
        for _ in 0..STEPS {
            opt.step(&(&x.matmul(&w.var()) - &y).square().sum().backward());
            LrScheduler::step(&mut sched);
            sched.apply_to(opt.as_mut());
            traj.extend(w.value().to_vec());
            lrs.push(opt.lr());
            moms.push(opt.momentum().unwrap());
        }
        let key = format!("onecycle_{name}");
        assert_close(&format!("lr {key}"), &lrs, &fx[&format!("lr {key}")]);
        assert_close(&format!("momentum {key}"), &moms, &fx[&format!("momentum {key}")]);
        assert_close(&format!("traj {key}"), &traj, &fx[&format!("traj {key}")]);
        // The schedule alone gives the same sequences, and one restored by its epoch resumes.
        let fresh = onecycle(name, &w).1;
        let alone: Vec<f64> = (0..=STEPS).map(|e| fresh.momentum_at(e).unwrap()).collect();
        assert_close(&format!("momentum_at {key}"), &alone, &moms);
        let mut restored = onecycle(name, &w).1;
        restored.set_epoch(7);
        LrScheduler::step(&mut restored);
        assert_eq!((restored.get_lr(), restored.get_momentum()), (lrs[8], Some(moms[8])), "{key}: restored");
    }
}

#[test]
fn one_cycle_without_momentum_cycling_leaves_the_momentum_alone() {
    let w = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
    let mut opt = Optim::new(Sgd { momentum: 0.3, ..Sgd::default() }, vec![w], GroupOptions::lr(0.1));
    let sched = OneCycleLR { cycle_momentum: false, ..OneCycleLR::new(0.1, 10) };
    assert_eq!(sched.get_momentum(), None);
    sched.apply_to(&mut opt);
    assert_eq!(opt.momentum(), Some(0.3));
    assert!((opt.lr() - 0.004).abs() < 1e-15);
}

#[test]
fn momentum_reads_and_writes_every_group_and_is_absent_without_one() {
    let (a, b) = (Param::new(Tensor::<f64>::zeros(&[1])), Param::new(Tensor::<f64>::zeros(&[1])));
    let mut adam = Optim::new(Adam::default(), vec![a.clone()], GroupOptions::lr(0.1));
    adam.add_group_with(vec![b.clone()], GroupOptions::lr(0.2), Adam { betas: (0.5, 0.9), ..Adam::default() });
    assert_eq!(adam.momentum(), Some(0.9));
    assert!(adam.set_momentum(0.7));
    assert!(adam.groups().iter().all(|g| g.rule.betas.0 == 0.7));
    assert_eq!(adam.groups()[1].rule.betas.1, 0.9);
    let mut adagrad = Optim::new(Adagrad::default(), vec![a], GroupOptions::lr(0.1));
    assert_eq!(adagrad.momentum(), None);
    assert!(!adagrad.set_momentum(0.7));
}

#[test]
#[should_panic(expected = "LrScheduler::apply_to: the schedule cycles momentum")]
fn one_cycle_refuses_a_rule_without_momentum() {
    let w = Param::new(Tensor::<f64>::zeros(&[1]));
    let mut opt = Optim::new(Adagrad::default(), vec![w], GroupOptions::lr(0.1));
    OneCycleLR::new(0.1, 10).apply_to(&mut opt);
}

fn chained(name: &str) -> ChainedScheduler {
    let lr = 0.1;
    let schedulers: Vec<Box<dyn LrScheduler + Send>> = match name {
        "constant_exponential" => vec![Box::new(ConstantLR::new(lr, 0.5, 4)), Box::new(ExponentialLR::new(lr, 0.9))],
        "linear_step_multistep" => vec![
            Box::new(LinearLR::new(lr, 0.2, 1.0, 6)),
            Box::new(StepLR::new(lr, 5, 0.5)),
            Box::new(MultiStepLR::new(lr, vec![8, 15], 0.7)),
        ],
        "exponential_constant" => {
            vec![Box::new(ExponentialLR::new(lr, 0.95)), Box::new(ConstantLR::new(lr, 0.25, 10))]
        }
        other => panic!("no case {other}"),
    };
    ChainedScheduler::new(lr, schedulers)
}

#[test]
fn chained_scheduler_follows_pytorch() {
    let fx = fixture();
    let names: Vec<&String> = fx.keys().filter(|k| k.starts_with("chained ")).collect();
    assert_eq!(names.len(), 3);
    for key in names {
        let name = &key["chained ".len()..];
        let mut s = chained(name);
        let mut lrs = vec![s.get_lr()];
        lrs.extend((0..30).map(|_| s.step()));
        assert_close(key, &lrs, &fx[key]);
        assert_eq!(s.get_momentum(), None);
        let mut restored = chained(name);
        restored.set_epoch(11);
        assert_eq!(restored.step(), lrs[12], "{key}: restored at epoch 11");
    }
}

#[test]
fn boxed_schedules_apply_too() {
    let w = Param::new(Tensor::<f32>::zeros(&[1]));
    let mut opt = Optim::new(Sgd::default(), vec![w], GroupOptions::lr(1.0));
    let sched: Box<dyn LrScheduler> = Box::new(OneCycleLR::new(0.5, 4));
    sched.apply_to(&mut opt);
    // PyTorch's cosine lands 2e-17 off 0.5 / 25 too.
    assert!((opt.lr() - 0.02).abs() < 1e-15 && opt.momentum() == Some(0.95));
}
