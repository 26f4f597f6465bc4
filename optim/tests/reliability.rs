//! Regressions from the reliability audit (issue 18): impossible saved state, unchecked options
//! and non-finite gradients under clipping.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use ferrograd_autograd::{Grads, Param};
use ferrograd_optim::{
    clip_grad_norm, try_clip_grad_norm, Adagrad, Adam, ClipOptions, GroupOptions, Lion, NonFiniteGrad, Optim,
    OptimError, Optimizer, RmsProp, Sgd, UpdateRule,
};
use ferrograd_tensor::Tensor;

thread_local! {
    static PANIC_AT: RefCell<Option<(String, u32)>> = const { RefCell::new(None) };
}

/// Runs `f`, which must panic, and returns its message and the file and line it reported.
fn panic_site(f: impl FnOnce()) -> (String, String, u32) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let site = info.location().map(|l| (l.file().to_string(), l.line()));
            PANIC_AT.with(|p| *p.borrow_mut() = site);
            default(info);
        }));
    });
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let (file, line) = PANIC_AT.with(|p| p.borrow_mut().take()).expect("the hook saw the panic");
    (msg, file, line)
}

type State = BTreeMap<String, Tensor<f64>>;

/// The state of one Adam step on `w`, with its step count replaced by `step`.
fn adam_state_at(step: f64) -> (Param<f64>, Optim<f64, Adam>, State) {
    let w = Param::new(Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3]));
    let mut opt = Optim::new(Adam::default(), vec![w.clone()], GroupOptions::lr(0.1));
    opt.step(&w.var().square().sum().backward());
    let mut state = opt.state_dict();
    state.insert("state.0.0.step".into(), Tensor::scalar(step));
    (w, opt, state)
}

#[test]
fn adam_continues_with_finite_weights_after_two_to_the_31_steps() {
    // `step as i32` wrapped to a negative power: beta^-2^31 is infinite and the weights NaN.
    for step in [2f64.powi(31) - 1.0, 2f64.powi(31), 2f64.powi(32) + 5.0, 2f64.powi(40)] {
        let (w, mut opt, state) = adam_state_at(step);
        opt.load_state_dict(&state).unwrap();
        let before = w.value().to_vec();
        let m = opt.param_state(&w).unwrap().exp_avg.to_vec();
        let v = opt.param_state(&w).unwrap().exp_avg_sq.to_vec();
        let g = w.var().square().sum().backward().get_param(&w).unwrap().to_vec();
        opt.step(&w.var().square().sum().backward());
        // So late in training both bias corrections are 1: a plain moment step.
        for i in 0..3 {
            let m1 = 0.9 * m[i] + 0.1 * g[i];
            let v1 = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let want = before[i] - 0.1 * m1 / (v1.sqrt() + 1e-8);
            let got = w.value().to_vec()[i];
            assert!((got - want).abs() < 1e-12, "step {step}: element {i} is {got}, want {want}");
        }
        assert_eq!(opt.step_count(&w), step as u64 + 1);
    }
}

#[test]
fn impossible_step_counts_are_typed_errors() {
    for (step, why) in [
        (2f64.powi(64), "more steps"),
        (1e300, "more steps"),
        (f64::INFINITY, "not finite"),
        (f64::NAN, "not finite"),
        (-1.0, "negative"),
        (2.5, "not a whole number"),
    ] {
        let (w, mut opt, state) = adam_state_at(step);
        let before = opt.state_dict();
        match opt.load_state_dict(&state) {
            Err(OptimError::InvalidValue { key, reason }) => {
                assert_eq!(key, "state.0.0.step");
                assert!(reason.contains(why), "step {step}: {reason}");
            }
            other => panic!("step {step}: {other:?}"),
        }
        assert_eq!(opt.state_dict(), before, "a failed load changes nothing");
        opt.step(&w.var().square().sum().backward());
        assert_eq!(opt.step_count(&w), 2);
    }
}

#[test]
fn non_finite_or_negative_state_is_a_typed_error() {
    let (_, mut opt, good) = adam_state_at(1.0);
    let mut nan = good.clone();
    nan.insert("state.0.0.exp_avg".into(), Tensor::from_vec(vec![0.0, f64::NAN, 0.0], &[3]));
    let err = opt.load_state_dict(&nan).unwrap_err();
    assert_eq!(err.to_string(), "optimizer state: entry `state.0.0.exp_avg` holds an invalid value: element 1 is NaN");
    let mut negative = good.clone();
    negative.insert("state.0.0.exp_avg_sq".into(), Tensor::from_vec(vec![0.0, 1.0, -0.5], &[3]));
    let err = opt.load_state_dict(&negative).unwrap_err();
    assert!(
        matches!(&err, OptimError::InvalidValue { key, reason }
            if key == "state.0.0.exp_avg_sq" && reason.contains("element 2 is -0.5") && reason.contains("square")),
        "{err}"
    );

    let w = Param::new(Tensor::from_vec(vec![1.0f64, 2.0], &[2]));
    let mut rms = Optim::new(RmsProp::default(), vec![w.clone()], GroupOptions::lr(0.1));
    rms.step(&w.var().square().sum().backward());
    let mut s = rms.state_dict();
    s.insert("state.0.0.square_avg".into(), Tensor::from_vec(vec![-1.0, 2.0], &[2]));
    assert!(matches!(rms.load_state_dict(&s), Err(OptimError::InvalidValue { .. })));
    let mut ada = Optim::new(Adagrad::default(), vec![w.clone()], GroupOptions::lr(0.1));
    ada.step(&w.var().square().sum().backward());
    let mut s = ada.state_dict();
    s.insert("state.0.0.sum".into(), Tensor::from_vec(vec![f64::INFINITY, 2.0], &[2]));
    assert!(matches!(ada.load_state_dict(&s), Err(OptimError::InvalidValue { .. })));
    let mut sgd = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, vec![w.clone()], GroupOptions::lr(0.1));
    sgd.step(&w.var().square().sum().backward());
    let mut s = sgd.state_dict();
    s.insert("state.0.0.momentum_buffer".into(), Tensor::from_vec(vec![-1.0, 2.0], &[2]));
    assert_eq!(sgd.load_state_dict(&s), Ok(()), "a momentum buffer may be negative");
}

fn w() -> Param<f64> {
    Param::new(Tensor::from_vec(vec![1.0, -2.0], &[2]))
}

/// `Optim::try_new(rule, [w], options)`'s error message.
fn refusal<R: UpdateRule<f64>>(rule: R, options: GroupOptions) -> String {
    match Optim::try_new(rule, vec![w()], options) {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn options_out_of_range_are_refused_naming_rule_option_and_value() {
    let lr = GroupOptions::lr;
    let sgd = Sgd::default();
    let adam = Adam::default();
    let cases: Vec<(String, &str)> = vec![
        (refusal(sgd, lr(-0.1)), "Sgd: invalid lr = -0.1: must be finite and >= 0"),
        (refusal(sgd, lr(f64::NAN)), "Sgd: invalid lr = NaN: must be finite and >= 0"),
        (refusal(sgd, lr(f64::INFINITY)), "Sgd: invalid lr = inf: must be finite and >= 0"),
        (refusal(sgd, lr(0.1).weight_decay(-1e-4)), "Sgd: invalid weight_decay = -0.0001: must be finite and >= 0"),
        (refusal(Sgd { momentum: -0.9, ..sgd }, lr(0.1)), "Sgd: invalid momentum = -0.9: must be finite and >= 0"),
        (refusal(Sgd { dampening: 1.5, ..sgd }, lr(0.1)), "Sgd: invalid dampening = 1.5: must be in [0, 1]"),
        (
            refusal(Sgd { nesterov: true, ..sgd }, lr(0.1)),
            "Sgd: invalid momentum = 0: Nesterov momentum needs a momentum > 0",
        ),
        (
            refusal(Sgd { nesterov: true, momentum: 0.9, dampening: 0.1, ..sgd }, lr(0.1)),
            "Sgd: invalid dampening = 0.1: Nesterov momentum needs zero dampening",
        ),
        (refusal(Adam { betas: (1.0, 0.999), ..adam }, lr(0.1)), "Adam: invalid betas.0 = 1: must be in [0, 1)"),
        (refusal(Adam { betas: (0.9, -0.1), ..adam }, lr(0.1)), "Adam: invalid betas.1 = -0.1: must be in [0, 1)"),
        (
            refusal(Adam { eps: -1e-8, ..Adam::adamw() }, lr(0.1)),
            "AdamW: invalid eps = -0.00000001: must be finite and >= 0",
        ),
        (refusal(Adam::adamw(), lr(f64::NAN)), "AdamW: invalid lr = NaN: must be finite and >= 0"),
        (
            refusal(RmsProp { alpha: 1.5, ..RmsProp::default() }, lr(0.1)),
            "RmsProp: invalid alpha = 1.5: must be in [0, 1]",
        ),
        (
            refusal(RmsProp { momentum: -0.5, ..RmsProp::default() }, lr(0.1)),
            "RmsProp: invalid momentum = -0.5: must be finite and >= 0",
        ),
        (
            refusal(RmsProp { eps: f64::NAN, ..RmsProp::default() }, lr(0.1)),
            "RmsProp: invalid eps = NaN: must be finite and >= 0",
        ),
        (
            refusal(Adagrad { lr_decay: -0.1, ..Adagrad::default() }, lr(0.1)),
            "Adagrad: invalid lr_decay = -0.1: must be finite and >= 0",
        ),
        (
            refusal(Adagrad { initial_accumulator_value: -1.0, ..Adagrad::default() }, lr(0.1)),
            "Adagrad: invalid initial_accumulator_value = -1: must be finite and >= 0",
        ),
        (
            refusal(Adagrad { eps: -1.0, ..Adagrad::default() }, lr(0.1)),
            "Adagrad: invalid eps = -1: must be finite and >= 0",
        ),
        (
            refusal(Lion { betas: (0.9, 1.2), ..Lion::default() }, lr(0.1)),
            "Lion: invalid betas.1 = 1.2: must be in [0, 1)",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    // The edges of every range are valid.
    assert_eq!(refusal(Sgd { momentum: 0.0, dampening: 1.0, ..sgd }, lr(0.0)), "accepted");
    assert_eq!(refusal(Adam { betas: (0.0, 0.0), eps: 0.0, ..adam }, lr(0.0).weight_decay(0.0)), "accepted");
    assert_eq!(refusal(RmsProp { alpha: 1.0, ..RmsProp::default() }, lr(1e3)), "accepted");
}

#[test]
fn the_panicking_constructors_report_the_callers_line() {
    let (msg, file, line) = panic_site(|| {
        Optim::new(Adam { betas: (0.9, 1.5), ..Adam::default() }, vec![w()], GroupOptions::lr(0.1));
    });
    assert_eq!(msg, "Optim::new: Adam: invalid betas.1 = 1.5: must be in [0, 1)");
    assert_eq!((file.as_str(), line), (file!(), line!() - 3));

    let mut opt = Optim::new(Sgd::default(), vec![w()], GroupOptions::lr(0.1));
    let (msg, file, line) = panic_site(|| opt.add_group(vec![Param::new(Tensor::zeros(&[1]))], GroupOptions::lr(-1.0)));
    assert_eq!(msg, "Optim::add_group: Sgd: invalid lr = -1: must be finite and >= 0");
    assert_eq!((file.as_str(), line), (file!(), line!() - 2));
    let (msg, file, line) = panic_site(|| opt.set_lr(f64::NAN));
    assert_eq!(msg, "Optimizer::set_lr: Sgd: invalid lr = NaN: must be finite and >= 0");
    assert_eq!((file.as_str(), line), (file!(), line!() - 2));
    assert_eq!(opt.lr(), 0.1, "a refused lr changes nothing");
}

#[test]
fn options_changed_between_steps_are_checked_before_the_step() {
    let p = w();
    let mut opt = Optim::new(Adam::default(), vec![p.clone()], GroupOptions::lr(0.1));
    opt.groups_mut()[0].rule.betas.0 = 1.0;
    let grads = p.var().square().sum().backward();
    let (msg, _, _) = panic_site(|| opt.step(&grads));
    assert_eq!(msg, "Optimizer::step: parameter group 0: Adam: invalid betas.0 = 1: must be in [0, 1)");
    assert_eq!(p.value().to_vec(), vec![1.0, -2.0], "nothing moved");
    // set_momentum (a schedule cycling beta1 past 1) is caught the same way.
    opt.groups_mut()[0].rule.betas.0 = 0.9;
    opt.set_momentum(1.2);
    let (msg, _, _) = panic_site(|| opt.step(&grads));
    assert!(msg.contains("betas.0 = 1.2"), "{msg}");
}

#[test]
fn a_repeated_parameter_is_a_typed_error_from_the_try_constructors() {
    let p = w();
    let err = Optim::try_new(Sgd::default(), vec![p.clone(), p.clone()], GroupOptions::lr(0.1)).err().unwrap();
    assert!(matches!(err, OptimError::DuplicateParameter(_)), "{err}");
    let mut opt = Optim::try_new(Sgd::default(), vec![p.clone()], GroupOptions::lr(0.1)).unwrap();
    assert!(matches!(opt.try_add_group(vec![p], GroupOptions::lr(0.1)), Err(OptimError::DuplicateParameter(_))));
    let bad = Sgd { momentum: -1.0, ..Sgd::default() };
    assert!(opt.try_add_group_with(vec![w()], GroupOptions::lr(0.1), bad).is_err());
    assert_eq!(opt.groups().len(), 1, "a refused group is not added");
}

/// Two parameters, the second's gradient holding `bad` at element 0.
fn bad_grads(bad: f64) -> (Vec<Param<f64>>, Grads<f64>) {
    let (a, b) = (Param::new(Tensor::zeros(&[2])), Param::new(Tensor::zeros(&[3])));
    let mut grads = Grads::default();
    grads.insert(a.id(), Tensor::from_vec(vec![1.0, -2.0], &[2]));
    grads.insert(b.id(), Tensor::from_vec(vec![bad, 1.0, -3.0], &[3]));
    (vec![a, b], grads)
}

fn grads_of(params: &[Param<f64>], grads: &Grads<f64>) -> Vec<f64> {
    params.iter().flat_map(|p| grads.get_param(p).unwrap().to_vec()).collect()
}

#[test]
fn clip_grad_norm_with_a_nan_or_infinite_gradient_scales_as_pytorch() {
    // PyTorch 2.x, clip_grad_norm_(params, 1.0, p) on these gradients: NaN makes every gradient
    // NaN; infinity zeroes the finite ones and makes itself NaN. It used to return the norm and
    // leave every gradient as it was.
    for norm_type in [2.0, 1.0, f64::INFINITY] {
        let (params, mut grads) = bad_grads(f64::NAN);
        assert!(clip_grad_norm(&mut grads, &params, 1.0, norm_type).is_nan());
        assert!(grads_of(&params, &grads).iter().all(|g| g.is_nan()), "p = {norm_type}");

        let (params, mut grads) = bad_grads(f64::INFINITY);
        assert_eq!(clip_grad_norm(&mut grads, &params, 1.0, norm_type), f64::INFINITY);
        let g = grads_of(&params, &grads);
        assert!(g[2].is_nan() && [g[0], g[1], g[3], g[4]] == [0.0; 4], "p = {norm_type}: {g:?}");
    }
}

#[test]
fn try_clip_grad_norm_refuses_a_non_finite_norm_naming_the_parameters() {
    let (params, mut grads) = bad_grads(f64::INFINITY);
    let before = grads_of(&params, &grads);
    let err = try_clip_grad_norm(&mut grads, &params, 1.0, ClipOptions::default()).unwrap_err();
    assert_eq!(
        err,
        OptimError::NonFiniteGradNorm {
            norm: f64::INFINITY,
            norm_type: 2.0,
            params: vec![NonFiniteGrad { index: 1, shape: vec![3], nan: 0, infinite: 1 }],
        }
    );
    assert_eq!(
        err.to_string(),
        "clip_grad_norm: the gradients' total 2-norm is inf (parameter 1 (shape [3]): 0 NaN, 1 infinite); \
         gradients left unchanged"
    );
    assert_eq!(grads_of(&params, &grads), before);
    // Off, it is clip_grad_norm.
    let off = ClipOptions { error_if_nonfinite: false, ..ClipOptions::default() };
    assert_eq!(try_clip_grad_norm(&mut grads, &params, 1.0, off), Ok(f64::INFINITY));
    // Finite gradients clip as before, with or without the check.
    let (params, mut grads) = bad_grads(2.0);
    let norm = try_clip_grad_norm(&mut grads, &params, 1.0, ClipOptions::default()).unwrap();
    assert!((norm - 19f64.sqrt()).abs() < 1e-12);
    let bad = ClipOptions { norm_type: -1.0, ..ClipOptions::default() };
    assert!(matches!(try_clip_grad_norm(&mut grads, &params, 1.0, bad), Err(OptimError::InvalidOption { .. })));
    assert!(matches!(
        try_clip_grad_norm(&mut grads, &params, f64::NAN, ClipOptions::default()),
        Err(OptimError::InvalidOption { .. })
    ));
}

#[test]
fn clip_grad_norm_of_huge_finite_gradients_does_not_overflow() {
    // Squares of 1e200 overflow f64; PyTorch's norm is 1e200 * sqrt(2), and so is ours.
    let a = Param::new(Tensor::<f64>::zeros(&[2]));
    let mut grads = Grads::default();
    grads.insert(a.id(), Tensor::from_vec(vec![1e200, -1e200], &[2]));
    let norm = try_clip_grad_norm(&mut grads, std::slice::from_ref(&a), 1.0, ClipOptions::default()).unwrap();
    assert!((norm / (1e200 * 2f64.sqrt()) - 1.0).abs() < 1e-15, "{norm}");
    let g = grads.get_param(&a).unwrap().to_vec();
    assert!((g[0] - 1.0 / 2f64.sqrt()).abs() < 1e-12, "{g:?}");
}
