//! Schedules bound to their optimizer ([`LrScheduler::bind`], `StepLR::on`, ...) against
//! PyTorch, recorded by `tests/fixtures/gen_sched.py` into `tests/fixtures/sched_reference.txt`
//! (float64): an SGD with two parameter groups (lr 0.1 and 0.02, momentum 0.9) driven by each
//! schedule, both groups' lr (and OneCycleLR's momentum) read back from the optimizer after
//! every step, and a two-group ReduceLROnPlateau.

use std::collections::HashMap;

use ferrograd_autograd::Param;
use ferrograd_optim::{
    Adagrad, BoundScheduler, ChainedScheduler, ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts,
    ExponentialLR, GroupOptions, LinearLR, LrScheduler, OneCycleLR, Optim, Optimizer, PlateauOptions,
    ReduceLROnPlateau, SequentialLR, Sgd, StepLR,
};
use ferrograd_tensor::Tensor;

const FIXTURE: &str = include_str!("fixtures/sched_reference.txt");
const EPOCHS: u64 = 20;

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
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{what}[{i}]: {g} vs PyTorch {w}");
    }
}

/// gen_sched.py's `two_groups()`: SGD, momentum 0.9, groups of lr 0.1 and 0.02.
fn two_groups() -> (Optim<f64, Sgd>, [Param<f64>; 2]) {
    let (a, b) = (Param::new(Tensor::from_vec(vec![1.0, -1.0], &[2])), Param::new(Tensor::from_vec(vec![0.5], &[1])));
    let mut opt = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, vec![a.clone()], GroupOptions::lr(0.1));
    opt.add_group(vec![b.clone()], GroupOptions::lr(0.02));
    (opt, [a, b])
}

/// The bound schedule of each `groups NAME` case in gen_sched.py. The base lr given to the
/// unbound constructors (7.0) is deliberately wrong: a bound schedule must take each group's
/// base from the optimizer.
fn bound(name: &str, opt: &mut Optim<f64, Sgd>) -> BoundScheduler<Box<dyn LrScheduler + Send>> {
    match name {
        "step" => StepLR::on(opt, 4, 0.5).boxed(),
        "cosine" => CosineAnnealingLR::on(opt, 8, 0.005).boxed(),
        "warm_restarts" => CosineAnnealingWarmRestarts::on(opt, 3, 2, 0.001).boxed(),
        // Bound through the trait, as a training driver holding any schedule does.
        "linear" => {
            let s: Box<dyn LrScheduler + Send> = Box::new(LinearLR::new(7.0, 0.25, 1.0, 5));
            s.bind(opt)
        }
        "sequential" => {
            let warmup = LinearLR::new(7.0, 0.1, 1.0, 3);
            let cosine = CosineAnnealingLR::new(7.0, 10, 0.002);
            SequentialLR::on(opt, vec![Box::new(warmup), Box::new(cosine)], vec![3]).boxed()
        }
        "chained" => {
            let parts: Vec<Box<dyn LrScheduler + Send>> =
                vec![Box::new(ConstantLR::new(7.0, 0.5, 4)), Box::new(ExponentialLR::new(7.0, 0.9))];
            ChainedScheduler::on(opt, parts).boxed()
        }
        "onecycle" => OneCycleLR::on(opt, 0.05, EPOCHS + 1).boxed(),
        other => panic!("no case {other}"),
    }
}

#[test]
fn bound_schedules_drive_every_group_as_pytorch() {
    let fx = fixture();
    let names: Vec<&str> = fx.keys().filter_map(|k| k.strip_prefix("groups ")).collect();
    assert_eq!(names.len(), 7, "cases in the fixture: {names:?}");
    for name in names {
        let (mut opt, [a, b]) = two_groups();
        let mut sched = bound(name, &mut opt);
        assert_eq!(sched.base_lrs(), &[0.1, 0.02], "{name}: base lrs");
        let (mut lrs, mut moms) = (opt.group_lrs(), vec![opt.momentum().unwrap(); 2]);
        for _ in 0..EPOCHS {
            opt.step(&(&a.var().square().sum() + &b.var().square().sum()).backward());
            let first = sched.step(&mut opt);
            assert_eq!(first, opt.lr(), "{name}: step returns the first group's lr");
            assert_eq!(sched.group_lrs(), opt.group_lrs(), "{name}: the schedule's lrs are the optimizer's");
            lrs.extend(opt.group_lrs());
            moms.extend(opt.groups().iter().map(|g| g.rule.momentum));
        }
        assert_close(&format!("groups {name}"), &lrs, &fx[&format!("groups {name}")]);
        if name == "onecycle" {
            assert_close("group_momenta onecycle", &moms, &fx["group_momenta onecycle"]);
        } else {
            assert!(moms.iter().all(|&m| m == 0.9), "{name} changed the momentum: {moms:?}");
        }
        // Restored after a checkpoint: bound to a fresh optimizer at the base lrs, moved to
        // epoch 11, it writes epoch 11's values.
        let (mut fresh, _) = two_groups();
        let mut restored = bound(name, &mut fresh);
        restored.set_epoch(11, &mut fresh);
        assert_eq!(restored.epoch(), 11);
        assert_close(&format!("{name} restored"), &fresh.group_lrs(), &lrs[22..24]);
    }
}

#[test]
fn plateau_on_an_optimizer_reduces_every_group_as_pytorch() {
    let fx = fixture();
    let (mut opt, _) = two_groups();
    let options = PlateauOptions { factor: 0.5, patience: 1, min_lr: 0.004, ..PlateauOptions::default() };
    let mut sched = ReduceLROnPlateau::on(&mut opt, options);
    let mut lrs = vec![];
    for &m in &fx["plateau_groups_metrics min"] {
        let first = sched.step_on(m, &mut opt);
        assert_eq!((first, sched.get_lr()), (opt.lr(), opt.lr()));
        lrs.extend(opt.group_lrs());
    }
    assert_close("plateau_groups min", &lrs, &fx["plateau_groups min"]);
}

#[test]
fn bound_one_cycle_trains_as_the_unbound_form_with_apply_to() {
    // The same SGD run twice: the bound schedule, and the old explicit pattern.
    let run = |bound: bool| {
        let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0, 0.5], &[3]));
        let mut opt = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, vec![w.clone()], GroupOptions::lr(0.3));
        let mut b = bound.then(|| OneCycleLR::on(&mut opt, 0.1, 12));
        let mut u = OneCycleLR::new(0.1, 12);
        if !bound {
            u.apply_to(&mut opt);
        }
        let mut seen = vec![];
        for _ in 0..11 {
            opt.step(&w.var().square().sum().backward());
            match &mut b {
                Some(b) => {
                    b.step(&mut opt);
                }
                None => {
                    LrScheduler::step(&mut u);
                    u.apply_to(&mut opt);
                }
            }
            seen.push((opt.lr(), opt.momentum().unwrap()));
        }
        (seen, w.value().to_vec())
    };
    let (bound, unbound) = (run(true), run(false));
    assert_eq!(bound, unbound);
    // The momentum did cycle: it fell from 0.95 and came back.
    let moms: Vec<f64> = bound.0.iter().map(|p| p.1).collect();
    assert!(moms.iter().any(|&m| m < 0.86) && (moms[10] - 0.95).abs() < 1e-12, "{moms:?}");
}

#[test]
#[allow(deprecated)]
fn the_old_one_cycle_pattern_still_runs() {
    // `opt.set_lr(sched.step())` is deprecated for OneCycleLR (it drops the momentum) but keeps
    // its values: the lr sequence of the trait's step.
    let mut old = OneCycleLR::new(0.1, 10);
    let mut by_trait = OneCycleLR::new(0.1, 10);
    for _ in 0..9 {
        assert_eq!(old.step(), LrScheduler::step(&mut by_trait));
    }
}

#[test]
#[should_panic(expected = "BoundScheduler: the schedule cycles momentum but the optimizer's rule has neither")]
fn bound_one_cycle_refuses_a_rule_without_momentum() {
    let w = Param::new(Tensor::<f64>::zeros(&[1]));
    let mut opt = Optim::new(Adagrad::default(), vec![w], GroupOptions::lr(0.1));
    OneCycleLR::on(&mut opt, 0.1, 10);
}

#[test]
fn bound_one_cycle_without_cycling_runs_on_a_rule_without_momentum() {
    let w = Param::new(Tensor::<f64>::zeros(&[1]));
    let mut opt = Optim::new(Adagrad::default(), vec![w], GroupOptions::lr(0.1));
    let mut sched = OneCycleLR { cycle_momentum: false, ..OneCycleLR::new(0.1, 10) }.bind(&mut opt);
    assert!((opt.lr() - 0.004).abs() < 1e-15);
    sched.step(&mut opt);
    assert!(opt.lr() > 0.004);
}

#[test]
#[should_panic(expected = "BoundScheduler: the optimizer has 3 parameter groups, the schedule was bound to 2")]
fn a_group_added_after_binding_is_reported() {
    let (mut opt, _) = two_groups();
    let mut sched = StepLR::on(&mut opt, 2, 0.5);
    opt.add_group(vec![Param::new(Tensor::zeros(&[1]))], GroupOptions::lr(0.3));
    sched.step(&mut opt);
}

#[test]
fn out_of_range_schedule_options_are_refused_as_pytorch_refuses_them() {
    let refused = |f: &(dyn Fn() + std::panic::RefUnwindSafe)| {
        std::panic::catch_unwind(f).expect_err("must panic").downcast::<String>().map(|s| *s).unwrap_or_default()
    };
    assert!(refused(&|| {
        ConstantLR::new(0.1, 1.5, 3);
    })
    .contains("ConstantLR: factor must be in [0, 1], got 1.5"));
    assert!(refused(&|| {
        LinearLR::new(0.1, 0.0, 1.0, 3);
    })
    .contains("LinearLR: start_factor must be in (0, 1], got 0"));
    assert!(refused(&|| {
        LinearLR::new(0.1, 0.5, f64::NAN, 3);
    })
    .contains("LinearLR: end_factor must be in [0, 1], got NaN"));
    assert!(refused(&|| {
        ReduceLROnPlateau::new(0.1, PlateauOptions { factor: 1.0, ..PlateauOptions::default() });
    })
    .contains("ReduceLROnPlateau: factor must be in [0, 1), got 1"));
    // The edges PyTorch accepts.
    ConstantLR::new(0.1, 0.0, 3);
    ConstantLR::new(0.1, 1.0, 3);
    LinearLR::new(0.1, 1.0, 0.0, 3);
    ReduceLROnPlateau::new(0.1, PlateauOptions { factor: 0.0, ..PlateauOptions::default() });
}
