//! Regressions from the reliability audit (issue 18): impossible saved state, unchecked options
//! and non-finite gradients under clipping.

use std::collections::BTreeMap;

use ferrograd_autograd::Param;
use ferrograd_optim::{Adagrad, Adam, GroupOptions, Optim, OptimError, Optimizer, RmsProp, Sgd};
use ferrograd_tensor::Tensor;

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
