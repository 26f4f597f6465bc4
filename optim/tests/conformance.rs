//! The conformance suite (feature `testing`) on every shipped optimizer, with its closed-form
//! first step, and on deliberately broken rules, each failing the check that names its fault.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrograd_optim::testing::{Check, Conformance, ConformanceError};
use ferrograd_optim::{
    Adagrad, Adam, GroupOptions, LbfgsOptions, Lion, RmsProp, RuleState, Sgd, UpdateRule, WeightDecay,
};
use ferrograd_tensor::{Float, Tensor};

/// `f` applied elementwise to parameter and gradient: the closed form of an elementwise rule.
fn each(f: impl Fn(f64, f64, &GroupOptions) -> f64 + 'static) -> impl Fn(&[f64], &[f64], &GroupOptions) -> Vec<f64> {
    move |p, g, o| p.iter().zip(g).map(|(&p, &g)| f(p, g, o)).collect()
}

#[test]
fn sgd_passes_plain_with_momentum_and_nesterov() {
    let plain = |p: f64, g: f64, o: &GroupOptions| p - o.lr * (g + o.weight_decay * p);
    Conformance::new(Sgd::default()).first_step(each(plain)).assert();
    // The first momentum step is the plain one (the buffer starts as the gradient).
    let momentum = Sgd { momentum: 0.9, dampening: 0.1, ..Sgd::default() };
    Conformance::new(momentum).group_rule(Sgd { momentum: 0.5, ..momentum }).first_step(each(plain)).assert();
    let nesterov = Sgd { momentum: 0.9, nesterov: true, ..Sgd::default() };
    let first = move |p: f64, g: f64, o: &GroupOptions| {
        let d = g + o.weight_decay * p;
        p - o.lr * (d + 0.9 * d)
    };
    Conformance::new(nesterov).group_rule(Sgd { momentum: 0.7, ..nesterov }).first_step(each(first)).assert();
}

#[test]
fn adam_and_adamw_pass() {
    // Bias-corrected, the first moments are g and g²: a step of lr * g / (|g| + eps).
    let adam = |p: f64, g: f64, o: &GroupOptions| {
        let d = g + o.weight_decay * p;
        p - o.lr * d / (d.abs() + 1e-8)
    };
    let other = Adam { betas: (0.8, 0.99), ..Adam::default() };
    Conformance::new(Adam::default()).group_rule(other).first_step(each(adam)).assert();
    Conformance::new(Adam { amsgrad: true, ..Adam::default() }).first_step(each(adam)).assert();
    let adamw = |p: f64, g: f64, o: &GroupOptions| p * (1.0 - o.lr * o.weight_decay) - o.lr * g / (g.abs() + 1e-8);
    Conformance::new(Adam::adamw()).group_rule(Adam { eps: 1e-6, ..Adam::adamw() }).first_step(each(adamw)).assert();
}

#[test]
fn rmsprop_passes() {
    let rms = |p: f64, g: f64, o: &GroupOptions| {
        let d = g + o.weight_decay * p;
        p - o.lr * d / ((0.01 * d * d).sqrt() + 1e-8)
    };
    Conformance::new(RmsProp::default())
        .group_rule(RmsProp { alpha: 0.9, ..RmsProp::default() })
        .first_step(each(rms))
        .assert();
    let centered = RmsProp { centered: true, momentum: 0.5, ..RmsProp::default() };
    let first = |p: f64, g: f64, o: &GroupOptions| {
        let d = g + o.weight_decay * p;
        let (s, a) = (0.01 * d * d, 0.01 * d);
        p - o.lr * d / ((s - a * a).sqrt() + 1e-8)
    };
    Conformance::new(centered).first_step(each(first)).assert();
}

#[test]
fn adagrad_passes() {
    let rule = Adagrad { lr_decay: 0.1, initial_accumulator_value: 0.2, ..Adagrad::default() };
    let first = |p: f64, g: f64, o: &GroupOptions| {
        let d = g + o.weight_decay * p;
        p - o.lr * d / ((0.2 + d * d).sqrt() + 1e-10)
    };
    Conformance::new(rule).group_rule(Adagrad::default()).descent(0.5, 100).first_step(each(first)).assert();
}

#[test]
fn lion_passes() {
    let first = |p: f64, g: f64, o: &GroupOptions| p * (1.0 - o.lr * o.weight_decay) - o.lr * g.signum();
    Conformance::new(Lion::default())
        .group_rule(Lion { betas: (0.95, 0.98), ..Lion::default() })
        .first_step(each(first))
        .assert();
}

#[test]
fn lbfgs_passes() {
    // The first iteration is a gradient step of lr * min(1, 1 / |g|_1).
    let first = |p: &[f64], g: &[f64], o: &GroupOptions| {
        let t = (1.0 / g.iter().map(|g| g.abs()).sum::<f64>()).min(1.0) * o.lr;
        p.iter().zip(g).map(|(p, g)| p - t * g).collect()
    };
    Conformance::lbfgs(LbfgsOptions { history_size: 5, ..LbfgsOptions::default() }).lr(0.5).first_step(first).assert();
}

/// The suite's verdict on `rule`, which must fail `check` (among others, maybe) with a message
/// holding `phrase`.
#[track_caller]
fn fails<R: UpdateRule<f32> + UpdateRule<f64> + 'static>(
    suite: Conformance<ferrograd_optim::testing::RuleUnderTest<R>>,
    check: Check,
    phrase: &str,
) -> ConformanceError {
    let err = suite.run().expect_err("a broken rule must fail");
    assert!(err.failed(check), "expected a {:?} failure, got:\n{err}", check);
    let message = err.failures.iter().find(|f| f.check == check).unwrap().message.clone();
    assert!(message.contains(phrase), "the {check:?} message lacks `{phrase}`:\n{err}");
    err
}

/// Heavy-ball momentum, correct but for `leak`.
#[derive(Clone)]
struct Momentum {
    leak: Leak,
}

#[derive(Clone)]
enum Leak {
    /// Correct.
    None,
    /// The buffer lives in a state type that saves nothing.
    StateNotSaved,
    /// Every group uses the lr of the first group seen.
    FirstGroupsLr(Arc<Mutex<Option<f64>>>),
    /// A fixed lr instead of the group's.
    IgnoresLr,
    /// Adds the gradient instead of subtracting it.
    Ascends,
    /// Reads the gradient's storage as if it were contiguous.
    ReadsStorage,
    /// Claims to apply weight decay itself, and does not.
    DropsWeightDecay,
    /// Counts steps itself, across parameters, instead of using the step it is given.
    OwnStepCount(Arc<AtomicU64>),
}

/// The momentum buffer, saved as `buf` unless `hidden`.
#[derive(Clone)]
struct Buffer<F: Float> {
    buf: Tensor<F>,
    hidden: bool,
}

impl<F: Float> RuleState<F> for Buffer<F> {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        if self.hidden {
            Vec::new()
        } else {
            vec![("buf", &mut self.buf)]
        }
    }
}

impl<F: Float> UpdateRule<F> for Momentum {
    type State = Buffer<F>;

    fn init_state(&self, param: &Tensor<F>) -> Buffer<F> {
        Buffer { buf: Tensor::zeros(param.shape()), hidden: matches!(self.leak, Leak::StateNotSaved) }
    }

    fn update(&self, group: &GroupOptions, p: &mut Tensor<F>, grad: &Tensor<F>, state: &mut Buffer<F>, step: u64) {
        let lr = match &self.leak {
            Leak::FirstGroupsLr(seen) => *seen.lock().unwrap().get_or_insert(group.lr),
            Leak::IgnoresLr => 0.01,
            _ => group.lr,
        };
        let g = match self.leak {
            Leak::ReadsStorage => Tensor::from_vec(grad.storage()[..grad.numel()].to_vec(), grad.shape()),
            _ => grad.clone(),
        };
        // A decaying step size, from the step count.
        let step = match &self.leak {
            Leak::OwnStepCount(n) => n.fetch_add(1, Ordering::Relaxed) + 1,
            _ => step,
        };
        let lr = F::from_f64(lr / (step as f64).sqrt());
        state.buf.zip_inplace(&g, "momentum", |b, g| F::from_f64(0.9) * b + g);
        let sign = if matches!(self.leak, Leak::Ascends) { F::one() } else { -F::one() };
        p.zip_inplace(&state.buf, "momentum step", |p, b| p + sign * lr * b);
    }

    fn weight_decay(&self) -> WeightDecay {
        match self.leak {
            Leak::DropsWeightDecay => WeightDecay::InRule,
            _ => WeightDecay::L2,
        }
    }
}

#[test]
fn the_correct_momentum_rule_passes() {
    Conformance::new(Momentum { leak: Leak::None }).assert();
}

#[test]
fn a_rule_whose_state_is_not_saved_fails_state_save_load() {
    fails(
        Conformance::new(Momentum { leak: Leak::StateNotSaved }),
        Check::StateSaveLoad,
        "part of the rule's state is not saved",
    );
}

#[test]
fn a_rule_using_another_groups_lr_fails_param_groups() {
    let rule = Momentum { leak: Leak::FirstGroupsLr(Arc::default()) };
    let err = fails(Conformance::new(rule), Check::ParamGroups, "must use the options of the group it updates");
    assert!(err.to_string().contains("`b` took the same step with lr 0.005 as with lr 0.01"), "{err}");
}

#[test]
fn a_rule_ignoring_the_lr_fails_lr_0() {
    fails(Conformance::new(Momentum { leak: Leak::IgnoresLr }), Check::ZeroLr, "must be scaled by group.lr");
}

#[test]
fn an_ascending_rule_fails_descent() {
    let err = fails(Conformance::new(Momentum { leak: Leak::Ascends }), Check::Descent, "does not descend");
    assert!(!err.failed(Check::StateSaveLoad), "the rest of it is right:\n{err}");
}

#[test]
fn a_rule_reading_raw_storage_fails_non_contiguous() {
    fails(Conformance::new(Momentum { leak: Leak::ReadsStorage }), Check::NonContiguous, "not their storage");
}

#[test]
fn a_rule_dropping_weight_decay_fails_weight_decay() {
    fails(
        Conformance::new(Momentum { leak: Leak::DropsWeightDecay }),
        Check::WeightDecay,
        "must apply group.weight_decay itself",
    );
}

#[test]
fn a_rule_counting_its_own_steps_fails_missing_gradients() {
    let rule = Momentum { leak: Leak::OwnStepCount(Arc::default()) };
    fails(Conformance::new(rule), Check::MissingGradients, "must not depend on whether another has a gradient");
}

#[test]
fn adam_without_bias_correction_fails_its_closed_form() {
    /// Adam's moments without the bias corrections: the first step is lr * 0.1 g / sqrt(0.001 g²)
    /// (3.2 lr) instead of lr.
    #[derive(Clone)]
    struct Uncorrected;
    #[derive(Clone)]
    struct Moments<F: Float> {
        m: Tensor<F>,
        v: Tensor<F>,
    }
    impl<F: Float> RuleState<F> for Moments<F> {
        fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
            vec![("exp_avg", &mut self.m), ("exp_avg_sq", &mut self.v)]
        }
    }
    impl<F: Float> UpdateRule<F> for Uncorrected {
        type State = Moments<F>;
        fn init_state(&self, p: &Tensor<F>) -> Moments<F> {
            Moments { m: Tensor::zeros(p.shape()), v: Tensor::zeros(p.shape()) }
        }
        fn update(&self, o: &GroupOptions, p: &mut Tensor<F>, g: &Tensor<F>, s: &mut Moments<F>, _: u64) {
            let c = F::from_f64;
            s.m.zip_inplace(g, "m", |m, g| c(0.9) * m + c(0.1) * g);
            s.v.zip_inplace(g, "v", |v, g| c(0.999) * v + c(0.001) * g * g);
            let step = s.m.zip_map(&s.v, "step", |m, v| c(o.lr) * m / (v.sqrt() + c(1e-8)));
            p.zip_inplace(&step, "update", |p, s| p - s);
        }
    }
    let adam = |p: f64, g: f64, o: &GroupOptions| {
        p - o.lr * (g + o.weight_decay * p) / ((g + o.weight_decay * p).abs() + 1e-8)
    };
    let err = fails(Conformance::new(Uncorrected).first_step(each(adam)), Check::FirstStep, "the closed form gives");
    assert_eq!(err.failures.len(), 2, "only the closed form fails, in f32 and f64:\n{err}");
}

#[test]
fn a_panicking_rule_is_reported_not_propagated() {
    #[derive(Clone)]
    struct Panics;
    impl<F: Float> UpdateRule<F> for Panics {
        type State = ();
        fn init_state(&self, _: &Tensor<F>) {}
        fn update(&self, _: &GroupOptions, _: &mut Tensor<F>, _: &Tensor<F>, _: &mut (), _: u64) {
            panic!("not implemented yet");
        }
    }
    let err = Conformance::new(Panics).run().unwrap_err();
    assert!(err.failures.iter().all(|f| f.message == "panicked: not implemented yet"), "{err}");
    assert!(err
        .to_string()
        .starts_with("Panics fails the optimizer conformance suite:\n- state save/load (f32): panicked"));
}
