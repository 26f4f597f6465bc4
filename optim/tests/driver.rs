//! The shared driver: state save/load mid-training, typed load errors, missing gradients,
//! parameter groups, learning-rate control, subnormal flushing and gradient clipping.

use std::collections::BTreeMap;

use ferrograd_autograd::{Grads, Param, Var};
use ferrograd_optim::{
    clip_grad_norm, clip_grad_value, Adagrad, Adam, GroupOptions, Lion, Optim, OptimError, Optimizer, RmsProp, Sgd,
    UpdateRule, WeightDecay,
};
use ferrograd_tensor::Tensor;

fn params() -> (Param<f64>, Param<f64>) {
    let w = Param::new(Tensor::from_vec(vec![0.1, -0.2, 0.3, 0.4, -0.5, 0.6], &[3, 2]));
    let b = Param::new(Tensor::from_vec(vec![0.05, -0.05], &[2]));
    (w, b)
}

fn loss(w: &Param<f64>, b: &Param<f64>, k: usize) -> Var<f64> {
    // A different batch per step, so that the state matters.
    let x = Var::constant(Tensor::from_fn(&[4, 3], |i| ((i * 7 + k * 3) % 11) as f64 / 5.0 - 1.0));
    let y = Var::constant(Tensor::from_fn(&[4, 2], |i| ((i * 5 + k) % 7) as f64 / 3.0 - 1.0));
    let pred = &x.matmul(&w.var()) + &b.var();
    (&pred - &y).square().mean()
}

/// Trains 20 steps straight, and 10 steps + save + load into a fresh optimizer and fresh
/// parameters + 10 steps; both must end bit for bit equal.
fn round_trip<R: UpdateRule<f64>>(rule: R, opts: GroupOptions) {
    let (w, b) = params();
    let mut opt = Optim::new(rule.clone(), vec![w.clone()], opts);
    opt.add_group(vec![b.clone()], GroupOptions { lr: opts.lr / 2.0, ..opts });
    let mut saved = None;
    for k in 0..20 {
        if k == 10 {
            saved = Some((w.value(), b.value(), opt.state_dict()));
        }
        opt.step(&loss(&w, &b, k).backward());
    }
    let (wv, bv, state) = saved.unwrap();
    let (w2, b2) = (Param::new(wv), Param::new(bv));
    let mut opt2 = Optim::new(rule, vec![w2.clone()], opts);
    opt2.add_group(vec![b2.clone()], GroupOptions { lr: opts.lr / 2.0, ..opts });
    opt2.load_state_dict(&state).unwrap();
    assert_eq!(opt2.step_count(&w2), 10);
    for k in 10..20 {
        opt2.step(&loss(&w2, &b2, k).backward());
    }
    assert_eq!(w.value().to_vec(), w2.value().to_vec());
    assert_eq!(b.value().to_vec(), b2.value().to_vec());
    assert_eq!(opt.state_dict().keys().collect::<Vec<_>>(), opt2.state_dict().keys().collect::<Vec<_>>());
}

#[test]
fn saving_and_loading_state_mid_training_continues_identically() {
    let wd = GroupOptions::lr(0.05).weight_decay(0.01);
    round_trip(Sgd { momentum: 0.9, nesterov: true, ..Sgd::default() }, wd);
    round_trip(Adam { amsgrad: true, ..Adam::default() }, wd);
    round_trip(Adam::adamw(), wd);
    round_trip(RmsProp { momentum: 0.5, centered: true, ..RmsProp::default() }, wd);
    round_trip(Adagrad { lr_decay: 0.1, ..Adagrad::default() }, wd);
    round_trip(Lion::default(), wd);
}

#[test]
fn state_dict_names_entries_by_group_param_and_state() {
    let (w, b) = params();
    let mut opt = Optim::new(Adam::default(), vec![w.clone()], GroupOptions::lr(0.1));
    opt.add_group(vec![b.clone()], GroupOptions::lr(0.1));
    assert!(opt.state_dict().is_empty());
    opt.step(&loss(&w, &b, 0).backward());
    let keys: Vec<String> = opt.state_dict().into_keys().collect();
    let want = [
        "state.0.0.exp_avg",
        "state.0.0.exp_avg_sq",
        "state.0.0.step",
        "state.1.0.exp_avg",
        "state.1.0.exp_avg_sq",
        "state.1.0.step",
    ];
    assert_eq!(keys, want);
    assert_eq!(opt.state_dict()["state.1.0.step"].item(), 1.0);
}

#[test]
fn loading_mismatched_state_is_a_typed_error_and_changes_nothing() {
    let (w, b) = params();
    let mut opt = Optim::new(Adam::default(), vec![w.clone(), b.clone()], GroupOptions::lr(0.1));
    opt.step(&loss(&w, &b, 0).backward());
    let good = opt.state_dict();
    let before = opt.state_dict();

    let mut missing = good.clone();
    missing.remove("state.0.1.exp_avg_sq");
    assert_eq!(opt.load_state_dict(&missing), Err(OptimError::MissingKey("state.0.1.exp_avg_sq".into())));

    let mut extra = good.clone();
    extra.insert("state.3.0.exp_avg".into(), Tensor::zeros(&[2]));
    assert_eq!(opt.load_state_dict(&extra), Err(OptimError::UnexpectedKey("state.3.0.exp_avg".into())));

    let mut shape = good.clone();
    shape.insert("state.0.0.exp_avg".into(), Tensor::zeros(&[2, 3]));
    assert!(
        matches!(opt.load_state_dict(&shape), Err(OptimError::ShapeMismatch { expected, .. }) if expected == [3, 2])
    );

    let mut step = good.clone();
    step.insert("state.0.0.step".into(), Tensor::scalar(-1.5));
    assert!(matches!(opt.load_state_dict(&step), Err(OptimError::InvalidValue { .. })));

    let mut orphan = good.clone();
    orphan.remove("state.0.1.step");
    assert_eq!(opt.load_state_dict(&orphan), Err(OptimError::MissingKey("state.0.1.step".into())));

    // SGD state (a momentum buffer) does not fit Adam.
    let mut sgd =
        Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, vec![w.clone(), b.clone()], GroupOptions::lr(0.1));
    sgd.step(&loss(&w, &b, 0).backward());
    assert!(matches!(opt.load_state_dict(&sgd.state_dict()), Err(OptimError::MissingKey(_))));

    assert_eq!(opt.state_dict(), before);
    assert_eq!(opt.load_state_dict(&BTreeMap::new()), Ok(()));
    assert!(opt.state_dict().is_empty());
}

#[test]
fn parameters_without_gradient_are_skipped_and_their_state_does_not_advance() {
    let (w, b) = params();
    let mut opt = Optim::new(Adam::default(), vec![w.clone(), b.clone()], GroupOptions::lr(0.1).weight_decay(0.1));
    let only_w = w.var().square().sum().backward();
    opt.step(&only_w);
    opt.step(&only_w);
    assert_eq!(b.value().to_vec(), vec![0.05, -0.05]);
    assert_eq!((opt.step_count(&w), opt.step_count(&b)), (2, 0));
    assert!(opt.param_state(&b).is_none());
    opt.step(&loss(&w, &b, 0).backward());
    assert_eq!((opt.step_count(&w), opt.step_count(&b)), (3, 1));
    opt.step(&Grads::default());
    assert_eq!((opt.step_count(&w), opt.step_count(&b)), (3, 1));
}

#[test]
fn groups_have_their_own_lr_and_set_lr_reaches_all() {
    let a = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
    let c = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
    let mut opt = Optim::new(Sgd::default(), vec![a.clone()], GroupOptions::lr(0.1));
    opt.add_group_with(vec![c.clone()], GroupOptions::lr(0.01), Sgd { maximize: true, ..Sgd::default() });
    let grads = (&a.var() + &c.var()).sum().backward(); // gradient 1 for both
    opt.step(&grads);
    assert_eq!(a.value().item(), 0.9);
    assert_eq!(c.value().item(), 1.01);
    opt.set_lr(0.5);
    assert_eq!((opt.lr(), opt.groups()[1].options.lr), (0.5, 0.5));
    opt.set_group_lr(1, 0.25);
    opt.step(&grads);
    assert_eq!(a.value().item(), 0.4);
    assert_eq!(c.value().item(), 1.26);
}

#[test]
#[should_panic(expected = "already in this optimizer")]
fn a_parameter_in_two_groups_is_refused() {
    let (w, _) = params();
    let mut opt = Optim::new(Sgd::default(), vec![w.clone()], GroupOptions::lr(0.1));
    opt.add_group(vec![w], GroupOptions::lr(0.1));
}

#[test]
fn decoupled_and_l2_weight_decay_differ_as_in_pytorch() {
    // A zero gradient: AdamW still shrinks the weight by lr * wd; Adam's L2 term becomes a
    // gradient, which Adam normalises to a step of about lr.
    let zero_grad = |p: &Param<f64>| (p.var() * 0.0).sum().backward();
    let w = Param::new(Tensor::from_vec(vec![2.0f64], &[1]));
    let mut adamw = Optim::new(Adam::adamw(), vec![w.clone()], GroupOptions::lr(0.1).weight_decay(0.5));
    adamw.step(&zero_grad(&w));
    assert!((w.value().item() - 2.0 * (1.0 - 0.05)).abs() < 1e-12);
    let v = Param::new(Tensor::from_vec(vec![2.0f64], &[1]));
    let mut adam = Optim::new(Adam::default(), vec![v.clone()], GroupOptions::lr(0.1).weight_decay(0.5));
    adam.step(&zero_grad(&v));
    assert!((v.value().item() - 1.9).abs() < 1e-6);
}

#[test]
fn moment_estimates_of_dead_units_flush_to_zero_instead_of_going_subnormal() {
    let w = Param::new(Tensor::from_vec(vec![1.0f32, -1.0, 0.5, 2.0], &[4]));
    let mut opt = Optim::new(Adam::default(), vec![w.clone()], GroupOptions::lr(1e-3));
    opt.step(&w.var().square().sum().backward());
    let dead = (w.var() * 0.0).sum().backward();
    for _ in 0..1500 {
        opt.step(&dead);
    }
    let state = opt.param_state(&w).unwrap();
    for t in [&state.exp_avg, &state.exp_avg_sq] {
        assert!(t.to_vec().iter().all(|&x| x == 0.0 || x.abs() >= f32::MIN_POSITIVE), "{:?}", t.to_vec());
    }
    assert!(state.exp_avg.to_vec().iter().all(|&x| x == 0.0), "0.9^1500 underflows: flushed to zero");
}

#[test]
fn clip_grad_norm_scales_all_gradients_jointly() {
    let (w, b) = params();
    let frozen = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
    let mut grads = loss(&w, &b, 1).backward();
    let all: Vec<f64> = [&w, &b].iter().flat_map(|p| grads.get_param(p).unwrap().to_vec()).collect();
    let norm2 = all.iter().map(|x| x * x).sum::<f64>().sqrt();
    let max = all.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let ps = [w.clone(), b.clone(), frozen];

    let mut g2 = loss(&w, &b, 1).backward();
    assert!((clip_grad_norm(&mut g2, &ps, 1e9, 2.0) - norm2).abs() < 1e-12);
    assert_eq!(g2.get_param(&w).unwrap().to_vec(), grads.get_param(&w).unwrap().to_vec(), "no-op below max");

    let total = clip_grad_norm(&mut grads, &ps, norm2 / 4.0, 2.0);
    assert!((total - norm2).abs() < 1e-12);
    let clipped: Vec<f64> = [&w, &b].iter().flat_map(|p| grads.get_param(p).unwrap().to_vec()).collect();
    let coef = (norm2 / 4.0) / (norm2 + 1e-6);
    for (c, a) in clipped.iter().zip(&all) {
        assert!((c - a * coef).abs() < 1e-12);
    }

    let mut ginf = loss(&w, &b, 1).backward();
    assert_eq!(clip_grad_norm(&mut ginf, &ps, 0.1, f64::INFINITY), max);
    let after = ginf.get_param(&w).unwrap().to_vec().iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(after <= 0.1 + 1e-9);

    let mut g1 = loss(&w, &b, 1).backward();
    let norm1: f64 = all.iter().map(|x| x.abs()).sum();
    assert!((clip_grad_norm(&mut g1, &ps, 1e9, 1.0) - norm1).abs() < 1e-12);
}

#[test]
fn clip_grad_value_clamps_each_element() {
    let (w, b) = params();
    let mut grads = loss(&w, &b, 2).backward();
    let before = grads.get_param(&w).unwrap().to_vec();
    clip_grad_value(&mut grads, std::slice::from_ref(&w), 0.05);
    let after = grads.get_param(&w).unwrap().to_vec();
    for (a, x) in after.iter().zip(&before) {
        assert_eq!(*a, x.clamp(-0.05, 0.05));
    }
}

#[test]
fn strided_parameters_and_gradients_update_in_logical_order() {
    let base = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let grad = Tensor::from_vec(vec![10.0f64, 20.0, 30.0, 40.0, 50.0, 60.0], &[3, 2]);
    // The parameter is a transposed view (3x2), the gradient a transposed view of a 2x3.
    let w = Param::new(base.t());
    let mut grads = Grads::default();
    grads.insert(w.id(), grad.t().contiguous().t());
    let mut opt = Optim::new(Sgd { momentum: 0.5, ..Sgd::default() }, vec![w.clone()], GroupOptions::lr(0.1));
    opt.step(&grads);
    let want: Vec<f64> = base.t().to_vec().iter().zip(grad.to_vec()).map(|(p, g)| p - 0.1 * g).collect();
    assert_eq!(w.value().to_vec(), want);
    assert_eq!(base.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "the viewed tensor is untouched");
}

/// Plain gradient descent written as a user would, leaving weight decay to the driver.
#[derive(Clone)]
struct PlainGd(WeightDecay);

impl UpdateRule<f64> for PlainGd {
    type State = ();
    fn init_state(&self, _: &Tensor<f64>) {}
    fn update(&self, g: &GroupOptions, p: &mut Tensor<f64>, grad: &Tensor<f64>, _: &mut (), _: u64) {
        p.add_scaled_(grad, -g.lr);
    }
    fn weight_decay(&self) -> WeightDecay {
        self.0
    }
}

#[test]
fn the_driver_applies_l2_and_decoupled_weight_decay_for_custom_rules() {
    let run = |rule: PlainGd| {
        let (w, b) = params();
        let mut opt = Optim::new(rule, vec![w.clone()], GroupOptions::lr(0.1).weight_decay(0.2));
        for k in 0..5 {
            opt.step(&loss(&w, &b, k).backward());
        }
        w.value().to_vec()
    };
    // L2 through the driver equals SGD's fused weight decay.
    let (w, b) = params();
    let mut sgd = Optim::new(Sgd::default(), vec![w.clone()], GroupOptions::lr(0.1).weight_decay(0.2));
    for k in 0..5 {
        sgd.step(&loss(&w, &b, k).backward());
    }
    for (x, y) in run(PlainGd(WeightDecay::L2)).iter().zip(w.value().to_vec()) {
        assert!((x - y).abs() < 1e-14);
    }
    // Decoupled: p = p * (1 - lr wd) - lr g, by hand (the bias stays fixed throughout).
    let (w, b) = params();
    let mut want = w.value().to_vec();
    for k in 0..5 {
        let wp = Param::new(Tensor::from_vec(want.clone(), &[3, 2]));
        let grads = loss(&wp, &b, k).backward();
        let gv = grads.get_param(&wp).unwrap().to_vec();
        want = want.iter().zip(gv).map(|(p, g)| p * (1.0 - 0.1 * 0.2) - 0.1 * g).collect();
    }
    let got = run(PlainGd(WeightDecay::Decoupled));
    for (x, y) in got.iter().zip(&want) {
        assert!((x - y).abs() < 1e-14, "{got:?} vs {want:?}");
    }
    assert_ne!(run(PlainGd(WeightDecay::InRule)), got, "InRule leaves decay to the rule, which ignores it");
}
