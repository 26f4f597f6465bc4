//! An optimizer conformance suite (feature `testing`): one call checks that an
//! [`UpdateRule`] (or a whole [`Optimizer`]) behaves as every optimizer must, in f32 and f64.
//!
//! ```
//! use ferrograd_optim::testing::Conformance;
//! use ferrograd_optim::{GroupOptions, UpdateRule};
//! use ferrograd_tensor::{Float, Tensor};
//!
//! /// Plain gradient descent, leaving weight decay to the driver (L2, the default).
//! #[derive(Clone)]
//! struct Gd;
//! impl<F: Float> UpdateRule<F> for Gd {
//!     type State = ();
//!     fn init_state(&self, _: &Tensor<F>) {}
//!     fn update(&self, g: &GroupOptions, p: &mut Tensor<F>, grad: &Tensor<F>, _: &mut (), _: u64) {
//!         p.add_scaled_(grad, F::from_f64(-g.lr));
//!     }
//! }
//!
//! Conformance::new(Gd)
//!     // Optional: the first step in closed form, elementwise here.
//!     .first_step(|p, g, o| p.iter().zip(g).map(|(p, g)| p - o.lr * (g + o.weight_decay * p)).collect())
//!     .assert();
//! ```
//!
//! The checks ([`Check`]), each in f32 and in f64:
//! - **state save/load**: a run saved mid-way, loaded into a fresh optimizer and fresh
//!   parameters, continues bit for bit like the uninterrupted run;
//! - **parameter groups**: a group moves exactly as it would alone in an optimizer with its
//!   options (lr, weight decay, and the rule configuration given by
//!   [`Conformance::group_rule`]);
//! - **weight decay**: a group's weight decay changes the step (a rule that applies it itself
//!   must not ignore it);
//! - **missing gradients**: a parameter without a gradient is untouched and gets no state, the
//!   others move as if it were absent, and its first step when a gradient comes is a fresh
//!   parameter's first step;
//! - **f32 and f64**: both precisions follow the same trajectory (to 1e-4, relative);
//! - **non-contiguous parameters**: transposed and strided parameters and gradients move
//!   exactly as contiguous ones, and the tensors they view are left alone;
//! - **lr 0**: leaves every parameter unchanged, bit for bit;
//! - **descent**: on a convex quadratic the first small step lowers the loss, and
//!   [`Conformance::descent`]'s steps at least halve it;
//! - **closed-form first step**, when one is given ([`Conformance::first_step`]).
//!
//! A failure names the check, the precision, the parameter and element, both values, and what
//! the rule most likely does wrong. A panic inside a check is reported as that check's failure.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ferrograd_autograd::{Grads, Param};
use ferrograd_tensor::{Element, Float, Tensor};

use crate::{GroupOptions, Lbfgs, LbfgsOptions, Optim, Optimizer, UpdateRule};

/// One requirement of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// State saved mid-run and loaded into a fresh optimizer continues bit for bit.
    StateSaveLoad,
    /// Each parameter group moves with its own options.
    ParamGroups,
    /// A group's weight decay has an effect.
    WeightDecay,
    /// Parameters without a gradient are skipped, and start fresh when one comes.
    MissingGradients,
    /// f32 and f64 follow the same trajectory.
    Precisions,
    /// Non-contiguous parameters and gradients move as contiguous ones.
    NonContiguous,
    /// lr 0 leaves the parameters unchanged.
    ZeroLr,
    /// Steps lower a convex quadratic.
    Descent,
    /// The first step equals a given closed form.
    FirstStep,
}

impl Check {
    /// The check's name in messages.
    pub fn title(self) -> &'static str {
        match self {
            Check::StateSaveLoad => "state save/load",
            Check::ParamGroups => "parameter groups",
            Check::WeightDecay => "weight decay",
            Check::MissingGradients => "missing gradients",
            Check::Precisions => "f32 and f64",
            Check::NonContiguous => "non-contiguous parameters",
            Check::ZeroLr => "lr 0",
            Check::Descent => "descent",
            Check::FirstStep => "closed-form first step",
        }
    }
}

/// One failed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Which check.
    pub check: Check,
    /// `"f32"`, `"f64"`, or `"f32/f64"` for the comparison of both.
    pub dtype: &'static str,
    /// What went wrong.
    pub message: String,
}

/// The failures of a [`Conformance`] run.
#[derive(Debug, Clone, PartialEq)]
pub struct ConformanceError {
    /// The optimizer checked.
    pub subject: String,
    /// Every failed check, in order.
    pub failures: Vec<Failure>,
}

impl ConformanceError {
    /// Whether `check` failed (in either precision).
    pub fn failed(&self, check: Check) -> bool {
        self.failures.iter().any(|f| f.check == check)
    }
}

impl fmt::Display for ConformanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fails the optimizer conformance suite:", self.subject)?;
        for x in &self.failures {
            write!(f, "\n- {} ({}): {}", x.check.title(), x.dtype, x.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConformanceError {}

/// A parameter group for [`Subject::build`].
pub struct Group<F: Float> {
    /// The group's parameters.
    pub params: Vec<Param<F>>,
    /// Its lr and weight decay.
    pub options: GroupOptions,
    /// Use the subject's second configuration for this group (see
    /// [`Conformance::group_rule`]).
    pub alternative: bool,
}

/// What the checks apply to: which features the optimizer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Several parameter groups.
    pub groups: bool,
    /// Groups have a weight decay.
    pub weight_decay: bool,
    /// Parameters without a gradient are skipped (L-BFGS counts them as zeros instead).
    pub skips_missing_gradients: bool,
    /// A second configuration exists for [`Group::alternative`].
    pub alternative: bool,
}

/// The optimizer under test, built fresh for every run of a check.
pub trait Subject<F: Float> {
    /// Its name in messages.
    fn name(&self) -> String;
    /// An optimizer over `groups`.
    fn build(&self, groups: Vec<Group<F>>) -> Box<dyn Optimizer<F>>;
    /// Which checks apply.
    fn capabilities(&self) -> Capabilities;
}

/// An [`UpdateRule`] under test, through the [`Optim`] driver; `group_rule` configures groups
/// marked [`Group::alternative`].
#[derive(Clone)]
pub struct RuleUnderTest<R> {
    /// The rule.
    pub rule: R,
    /// A second configuration (other betas, say), if any.
    pub group_rule: Option<R>,
}

impl<F: Float, R: UpdateRule<F> + 'static> Subject<F> for RuleUnderTest<R> {
    fn name(&self) -> String {
        self.rule.name().to_string()
    }

    fn build(&self, groups: Vec<Group<F>>) -> Box<dyn Optimizer<F>> {
        let pick = |alternative: bool| match (&self.group_rule, alternative) {
            (Some(other), true) => other.clone(),
            _ => self.rule.clone(),
        };
        let mut groups = groups.into_iter();
        let first = groups.next().expect("at least one group");
        let mut opt = Optim::new(pick(first.alternative), first.params, first.options);
        for g in groups {
            opt.add_group_with(g.params, g.options, pick(g.alternative));
        }
        Box::new(opt)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            groups: true,
            weight_decay: true,
            skips_missing_gradients: true,
            alternative: self.group_rule.is_some(),
        }
    }
}

/// [`Lbfgs`] under test, one iteration per step (`max_iter` 1, no line search: the form that
/// steps from given gradients; the others are checked against PyTorch in `tests/lbfgs.rs`),
/// with the group's lr. One group, no weight decay; missing gradients count as zeros.
#[derive(Debug, Clone, Copy)]
pub struct LbfgsUnderTest {
    /// The options besides lr, max_iter and the line search.
    pub options: LbfgsOptions,
}

impl<F: Float> Subject<F> for LbfgsUnderTest {
    fn name(&self) -> String {
        "Lbfgs".into()
    }

    fn build(&self, groups: Vec<Group<F>>) -> Box<dyn Optimizer<F>> {
        assert_eq!(groups.len(), 1, "Lbfgs has one parameter group");
        let group = groups.into_iter().next().expect("one group");
        let options = LbfgsOptions { lr: group.options.lr, max_iter: 1, line_search: None, ..self.options };
        Box::new(Lbfgs::new(group.params, options))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { groups: false, weight_decay: false, skips_missing_gradients: false, alternative: false }
    }
}

/// A check run by [`Conformance::run_in`].
type CheckFn<'a> = &'a dyn Fn() -> Result<(), String>;

/// A closed-form first step: parameter values, gradient and options in, new values out.
type ClosedForm = Box<dyn Fn(&[f64], &[f64], &GroupOptions) -> Vec<f64>>;

/// The conformance suite, configured for one optimizer. Build it with [`Conformance::new`]
/// (an [`UpdateRule`]), [`Conformance::lbfgs`] or [`Conformance::subject`], adjust it, then
/// [`run`](Conformance::run) or [`assert`](Conformance::assert) it.
pub struct Conformance<S> {
    subject: S,
    lr: f64,
    weight_decay: f64,
    descent_lr: f64,
    descent_steps: usize,
    first_step: Option<ClosedForm>,
}

impl<R: UpdateRule<f32> + UpdateRule<f64> + 'static> Conformance<RuleUnderTest<R>> {
    /// The suite for `rule`, with lr 0.01, weight decay 0.01, and 100 descent steps at lr 0.1.
    pub fn new(rule: R) -> Self {
        Conformance::subject(RuleUnderTest { rule, group_rule: None })
    }

    /// A second configuration of the rule (say other betas) for the parameter-group check:
    /// a group configured with it must move as it would alone.
    pub fn group_rule(mut self, rule: R) -> Self {
        self.subject.group_rule = Some(rule);
        self
    }
}

impl Conformance<LbfgsUnderTest> {
    /// The suite for [`Lbfgs`] with `options` (see [`LbfgsUnderTest`]); descent at lr 1.
    pub fn lbfgs(options: LbfgsOptions) -> Self {
        Conformance { descent_lr: 1.0, ..Conformance::subject(LbfgsUnderTest { options }) }
    }
}

impl<S: Subject<f32> + Subject<f64>> Conformance<S> {
    /// The suite for any [`Subject`] (a custom [`Optimizer`], say).
    pub fn subject(subject: S) -> Self {
        Conformance { subject, lr: 0.01, weight_decay: 0.01, descent_lr: 0.1, descent_steps: 100, first_step: None }
    }

    /// The lr of the checks (default 0.01; groups get it and half of it).
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// The weight decay of the checks (default 0.01), where the optimizer has one.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The descent check's lr and number of steps (default 0.1 and 100): a typical lr for the
    /// optimizer on a quadratic with curvatures between 0.5 and 2 and distances about 1.
    pub fn descent(mut self, lr: f64, steps: usize) -> Self {
        self.descent_lr = lr;
        self.descent_steps = steps;
        self
    }

    /// The first step in closed form: given one parameter's values, its gradient and the
    /// group's options, the values after one step from fresh state. Compared to 1e-12
    /// (relative) in f64 and 1e-6 in f32.
    pub fn first_step(mut self, closed_form: impl Fn(&[f64], &[f64], &GroupOptions) -> Vec<f64> + 'static) -> Self {
        self.first_step = Some(Box::new(closed_form));
        self
    }

    /// Runs every check in f32 and f64.
    pub fn run(&self) -> Result<(), ConformanceError> {
        let mut failures = Vec::new();
        self.run_in::<f32>("f32", &mut failures);
        self.run_in::<f64>("f64", &mut failures);
        if let Err(message) = guarded(|| self.precisions()) {
            failures.push(Failure { check: Check::Precisions, dtype: "f32/f64", message });
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ConformanceError { subject: Subject::<f64>::name(&self.subject), failures })
        }
    }

    /// [`Conformance::run`], panicking with every failure.
    #[track_caller]
    pub fn assert(&self) {
        if let Err(e) = self.run() {
            panic!("{e}");
        }
    }

    fn run_in<F: Float>(&self, dtype: &'static str, failures: &mut Vec<Failure>)
    where
        S: Subject<F>,
    {
        let caps = self.caps();
        let checks: [(Check, bool, CheckFn); 8] = [
            (Check::StateSaveLoad, true, &|| self.state_save_load::<F>()),
            (Check::ParamGroups, caps.groups, &|| self.param_groups::<F>()),
            (Check::WeightDecay, caps.weight_decay, &|| self.weight_decay_has_effect::<F>()),
            (Check::MissingGradients, caps.skips_missing_gradients, &|| self.missing_gradients::<F>()),
            (Check::NonContiguous, true, &|| self.non_contiguous::<F>()),
            (Check::ZeroLr, true, &|| self.zero_lr::<F>()),
            (Check::Descent, true, &|| self.descends::<F>()),
            (Check::FirstStep, self.first_step.is_some(), &|| self.closed_form_first_step::<F>()),
        ];
        for (check, applies, run) in checks {
            if applies {
                if let Err(message) = guarded(run) {
                    failures.push(Failure { check, dtype, message });
                }
            }
        }
    }

    /// Which checks apply (the same in both precisions).
    fn caps(&self) -> Capabilities {
        Subject::<f64>::capabilities(&self.subject)
    }

    /// The options of group `g` of a two-group check: the second has other values throughout.
    fn group_options(&self, g: usize) -> GroupOptions {
        let wd = if self.caps().weight_decay { self.weight_decay } else { 0.0 };
        if g == 0 {
            GroupOptions::lr(self.lr).weight_decay(wd)
        } else {
            GroupOptions::lr(self.lr * 0.5).weight_decay(wd * 3.0)
        }
    }

    /// `[w, b]` in one group, or in a group each when the optimizer has groups.
    fn build_wb<F: Float>(&self, w: &Param<F>, b: &Param<F>) -> Box<dyn Optimizer<F>>
    where
        S: Subject<F>,
    {
        self.build_wb_decaying(w, b, true)
    }

    /// [`Conformance::build_wb`], with or without weight decay.
    fn build_wb_decaying<F: Float>(&self, w: &Param<F>, b: &Param<F>, decay: bool) -> Box<dyn Optimizer<F>>
    where
        S: Subject<F>,
    {
        let options = |g| {
            let o = self.group_options(g);
            if decay {
                o
            } else {
                o.weight_decay(0.0)
            }
        };
        let groups = if self.caps().groups {
            vec![group(vec![w.clone()], options(0)), group(vec![b.clone()], options(1))]
        } else {
            vec![group(vec![w.clone(), b.clone()], options(0))]
        };
        self.subject.build(groups)
    }

    fn state_save_load<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let (w, b) = (param_w::<F>(), param_b::<F>());
        let mut opt = self.build_wb(&w, &b);
        let mut trajectory = Vec::new();
        let mut saved = None;
        for k in 0..6 {
            if k == 3 {
                saved = Some((w.value(), b.value(), opt.state_dict()));
            }
            opt.step(&gradients(&[&w, &b], k));
            trajectory.push([w.value().to_vec(), b.value().to_vec()]);
        }
        let (wv, bv, state) = saved.expect("saved at step 3");
        let (w2, b2) = (Param::new(wv), Param::new(bv));
        let mut fresh = self.build_wb(&w2, &b2);
        fresh
            .load_state_dict(&state)
            .map_err(|e| format!("loading the state it saved after 3 steps into a fresh optimizer failed: {e}"))?;
        let reloaded = fresh.state_dict();
        if let Some(k) = state.keys().chain(reloaded.keys()).find(|k| state.get(*k) != reloaded.get(*k)) {
            return Err(format!(
                "after loading the state saved after 3 steps, state_dict()'s entry `{k}` differs from the one loaded \
                 (load_state_dict must restore exactly what state_dict saved)"
            ));
        }
        for (k, want) in trajectory.iter().enumerate().skip(3) {
            fresh.step(&gradients(&[&w2, &b2], k));
            for (i, (p, want)) in [&w2, &b2].iter().zip(want).enumerate() {
                if let Some((e, got, want)) = first_difference(&p.value().to_vec(), want) {
                    return Err(format!(
                        "continuing from the state saved after 3 steps, `{}`[{e}] is {got} after step {} where the \
                         uninterrupted run has {want}: part of the rule's state is not saved (RuleState::tensors_mut \
                         must list every tensor the update keeps, and the update must depend on nothing else that \
                         changes between steps)",
                        NAMES[i],
                        k + 1
                    ));
                }
            }
        }
        Ok(())
    }

    fn param_groups<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let alternative = self.caps().alternative;
        let (w, b) = (param_w::<F>(), param_b::<F>());
        let mut both = self.subject.build(vec![
            group(vec![w.clone()], self.group_options(0)),
            Group { params: vec![b.clone()], options: self.group_options(1), alternative },
        ]);
        let (w1, b1) = (param_w::<F>(), param_b::<F>());
        let mut alone_w = self.subject.build(vec![group(vec![w1.clone()], self.group_options(0))]);
        let mut alone_b =
            self.subject.build(vec![Group { params: vec![b1.clone()], options: self.group_options(1), alternative }]);
        // The group's lr must matter: `b` alone with the first group's lr moves otherwise.
        let b_other_lr = param_b::<F>();
        let options = GroupOptions { lr: self.group_options(0).lr, ..self.group_options(1) };
        let mut other_lr = self.subject.build(vec![Group { params: vec![b_other_lr.clone()], options, alternative }]);
        other_lr.step(&gradients_salted(&[(&b_other_lr, SALT_B)], 0));
        for k in 0..4 {
            both.step(&gradients(&[&w, &b], k));
            alone_w.step(&gradients(&[&w1], k));
            alone_b.step(&gradients_salted(&[(&b1, SALT_B)], k));
            if k == 0 && first_difference(&b1.value().to_vec(), &b_other_lr.value().to_vec()).is_none() {
                return Err(format!(
                    "`b` took the same step with lr {} as with lr {}: the rule must use the options of the group it \
                     updates (group.lr), not a value of its own or another group's",
                    self.group_options(1).lr,
                    options.lr
                ));
            }
            for (g, (p, q)) in [(&w, &w1), (&b, &b1)].into_iter().enumerate() {
                if let Some((e, got, want)) = first_difference(&p.value().to_vec(), &q.value().to_vec()) {
                    let o = self.group_options(g);
                    let config = if g == 1 && alternative { " and the second rule configuration" } else { "" };
                    return Err(format!(
                        "`{}` in group {g} (lr {}, weight_decay {}{config}) has {got} at element {e} after step {}, \
                         but {want} alone in an optimizer with the same options: the rule must use the options of \
                         the group it updates (not another group's or a copy of its own) and share nothing between \
                         parameters outside their state",
                        NAMES[g],
                        o.lr,
                        o.weight_decay,
                        k + 1
                    ));
                }
            }
        }
        Ok(())
    }

    fn weight_decay_has_effect<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        // Three steps, as a first step may not see it (Adam's is lr * sign(g) either way).
        let wd = 0.1;
        let run = |wd: f64| {
            let w = param_w::<F>();
            let mut opt = self.subject.build(vec![group(vec![w.clone()], GroupOptions::lr(self.lr).weight_decay(wd))]);
            for k in 0..3 {
                opt.step(&gradients(&[&w], k));
            }
            w.value().to_vec()
        };
        if first_difference(&run(0.0), &run(wd)).is_none() {
            return Err(format!(
                "weight_decay {wd} gives the same 3 steps as 0: a rule whose weight_decay() is WeightDecay::InRule \
                 must apply group.weight_decay itself"
            ));
        }
        Ok(())
    }

    fn missing_gradients<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let opts = self.group_options(0);
        let (w, b) = (param_w::<F>(), param_b::<F>());
        let b0 = b.value().to_vec();
        let mut opt = self.subject.build(vec![group(vec![w.clone(), b.clone()], opts)]);
        let w_alone = param_w::<F>();
        let mut opt_w = self.subject.build(vec![group(vec![w_alone.clone()], opts)]);
        let b_late = param_b::<F>();
        let mut opt_b = self.subject.build(vec![group(vec![b_late.clone()], opts)]);
        for k in 0..4 {
            let b_has_grad = k >= 2;
            let grads = if b_has_grad { gradients(&[&w, &b], k) } else { gradients(&[&w], k) };
            opt.step(&grads);
            opt_w.step(&gradients(&[&w_alone], k));
            if !b_has_grad {
                if let Some((e, got, was)) = first_difference(&b.value().to_vec(), &b0) {
                    return Err(format!(
                        "`b` had no gradient at step {} but its element {e} changed from {was} to {got}",
                        k + 1
                    ));
                }
                if let Some(key) = opt.state_dict().into_keys().find(|key| key.starts_with("state.0.1.")) {
                    return Err(format!(
                        "`b` had no gradient at step {} but has state `{key}`: its state must not start or advance \
                         without a gradient",
                        k + 1
                    ));
                }
            } else {
                opt_b.step(&gradients_salted(&[(&b_late, SALT_B)], k));
                if let Some((e, got, want)) = first_difference(&b.value().to_vec(), &b_late.value().to_vec()) {
                    return Err(format!(
                        "`b`, whose first gradient came at step 3, has {got} at element {e} after step {}, but a \
                         fresh parameter given the same gradients has {want}: its step count and state must start \
                         with its first gradient",
                        k + 1
                    ));
                }
            }
            if let Some((e, got, want)) = first_difference(&w.value().to_vec(), &w_alone.value().to_vec()) {
                return Err(format!(
                    "`w` has {got} at element {e} after step {} but {want} in an optimizer without `b`: a parameter's \
                     update must not depend on whether another has a gradient",
                    k + 1
                ));
            }
        }
        let before = [w.value().to_vec(), b.value().to_vec()];
        opt.step(&Grads::default());
        if [w.value().to_vec(), b.value().to_vec()] != before {
            return Err("a step with no gradients at all changed a parameter".into());
        }
        Ok(())
    }

    /// The same 5 steps in f32 and f64 (on values exact in both) agree to 1e-4.
    fn precisions(&self) -> Result<(), String> {
        let run = |steps: usize| -> (Vec<f64>, Vec<f64>) {
            let (w32, b32) = (param_w::<f32>(), param_b::<f32>());
            let (w64, b64) = (param_w::<f64>(), param_b::<f64>());
            let mut o32 = self.build_wb(&w32, &b32);
            let mut o64 = self.build_wb(&w64, &b64);
            for k in 0..steps {
                o32.step(&gradients(&[&w32, &b32], k));
                o64.step(&gradients(&[&w64, &b64], k));
            }
            let v32 = [w32, b32].iter().flat_map(|p| p.value().to_vec()).map(f64::from).collect();
            let v64 = [w64, b64].iter().flat_map(|p| p.value().to_vec()).collect();
            (v32, v64)
        };
        let (v32, v64) = run(5);
        for (i, (a, b)) in v32.iter().zip(&v64).enumerate() {
            if !close(*a, *b, 1e-4) {
                let (name, e) = if i < 12 { ("w", i) } else { ("b", i - 12) };
                return Err(format!(
                    "after 5 steps `{name}`[{e}] is {a} in f32 but {b} in f64: both precisions must follow the same \
                     trajectory (a constant or a cast that differs between them?)"
                ));
            }
        }
        Ok(())
    }

    fn non_contiguous<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        // Without weight decay too: the driver's L2 term hands the rule a contiguous copy.
        self.non_contiguous_decaying::<F>(false)?;
        self.non_contiguous_decaying::<F>(true)
    }

    fn non_contiguous_decaying<F: Float>(&self, decay: bool) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let (w, b) = (param_w::<F>(), param_b::<F>());
        // w (3x4) as the transpose of a 4x3 tensor; b (4) as every other element of an 8-vector.
        let w_base = w.value().t().contiguous();
        let b_base = Tensor::from_fn(&[8], |i| if i % 2 == 0 { b.value().to_vec()[i / 2] } else { F::from_f64(9.0) });
        let (w_seen, b_seen) = (w_base.to_vec(), b_base.to_vec());
        let (ws, bs) = (Param::new(w_base.t()), Param::new(b_base.slice(0, 0, 8, 2)));
        if ws.value().is_contiguous() || bs.value().is_contiguous() {
            return Err("the suite's strided views came out contiguous".into());
        }
        let mut contiguous = self.build_wb_decaying(&w, &b, decay);
        let mut strided = self.build_wb_decaying(&ws, &bs, decay);
        for k in 0..3 {
            contiguous.step(&gradients(&[&w, &b], k));
            let dense = gradients(&[&w, &b], k);
            let mut views = Grads::default();
            let gw = dense.get_param(&w).expect("w has a gradient").t().contiguous().t();
            let gb = dense.get_param(&b).expect("b has a gradient").to_vec();
            let gb =
                Tensor::from_fn(&[12], |i| if i % 3 == 0 { gb[i / 3] } else { F::from_f64(-7.0) }).slice(0, 0, 12, 3);
            views.insert(ws.id(), gw);
            views.insert(bs.id(), gb);
            strided.step(&views);
            for (i, (p, q)) in [(&ws, &w), (&bs, &b)].into_iter().enumerate() {
                if let Some((e, got, want)) = first_difference(&p.value().to_vec(), &q.value().to_vec()) {
                    let layout = if i == 0 { "a transposed view" } else { "a strided view (every other element)" };
                    let wd = if decay { "" } else { " (no weight decay)" };
                    return Err(format!(
                        "with `{}` {layout} and its gradient strided{wd}, element {e} is {got} after step {} but \
                         {want} with contiguous tensors: the rule must read tensors in logical order (to_vec, \
                         as_mut_slice, zip_inplace), not their storage",
                        NAMES[i],
                        k + 1
                    ));
                }
            }
        }
        if w_base.to_vec() != w_seen || b_base.to_vec() != b_seen {
            return Err("updating the strided parameters wrote into the tensors they view".into());
        }
        Ok(())
    }

    fn zero_lr<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let (w, b) = (param_w::<F>(), param_b::<F>());
        let wd = if self.caps().weight_decay { self.weight_decay.max(0.01) } else { 0.0 };
        let zero = GroupOptions::lr(0.0).weight_decay(wd);
        let mut opt = if self.caps().groups {
            self.subject.build(vec![group(vec![w.clone()], zero), group(vec![b.clone()], zero)])
        } else {
            self.subject.build(vec![group(vec![w.clone(), b.clone()], zero)])
        };
        let before = [w.value().to_vec(), b.value().to_vec()];
        for k in 0..3 {
            opt.step(&gradients(&[&w, &b], k));
            for (i, (p, was)) in [&w, &b].iter().zip(&before).enumerate() {
                if let Some((e, got, was)) = first_difference(&p.value().to_vec(), was) {
                    return Err(format!(
                        "with lr 0 (weight_decay {wd}), `{}`[{e}] changed from {was} to {got} at step {}: the step \
                         must be scaled by group.lr",
                        NAMES[i],
                        k + 1
                    ));
                }
            }
        }
        Ok(())
    }

    fn descends<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let probe_lr = 1e-3;
        let run = |lr: f64, steps: usize| -> Result<(f64, f64), String> {
            let (w, b) = (param_w::<F>(), param_b::<F>());
            let mut opt = self.subject.build(vec![group(vec![w.clone(), b.clone()], GroupOptions::lr(lr))]);
            let start = quadratic(&[&w, &b]).0;
            for k in 0..steps {
                let (loss, grads) = quadratic(&[&w, &b]);
                if !loss.is_finite() {
                    return Err(format!("the loss is {loss} after {k} steps with lr {lr}"));
                }
                opt.step(&grads);
            }
            Ok((start, quadratic(&[&w, &b]).0))
        };
        let (start, after) = run(probe_lr, 1)?;
        let descended = after < start;
        if !descended {
            return Err(format!(
                "one step with lr {probe_lr} took a convex quadratic from {start} to {after}: the update does not \
                 descend (a sign error?)"
            ));
        }
        let (start, end) = run(self.descent_lr, self.descent_steps)?;
        let halved = end <= start / 2.0;
        if !halved {
            return Err(format!(
                "{} steps with lr {} took a convex quadratic from {start} to {end}; they must at least halve it \
                 (set a typical lr for this optimizer with Conformance::descent)",
                self.descent_steps, self.descent_lr
            ));
        }
        Ok(())
    }

    fn closed_form_first_step<F: Float>(&self) -> Result<(), String>
    where
        S: Subject<F>,
    {
        let closed_form = self.first_step.as_ref().expect("applies only with a closed form");
        let wd = if self.caps().weight_decay { self.weight_decay } else { 0.0 };
        let opts = GroupOptions::lr(self.lr).weight_decay(wd);
        let w = param_w::<F>();
        let p0: Vec<f64> = w.value().to_vec().into_iter().map(Element::to_f64).collect();
        let grads = gradients(&[&w], 0);
        let g: Vec<f64> =
            grads.get_param(&w).expect("w has a gradient").to_vec().into_iter().map(Element::to_f64).collect();
        let want = closed_form(&p0, &g, &opts);
        if want.len() != p0.len() {
            return Err(format!("the closed form returned {} values for a parameter of {}", want.len(), p0.len()));
        }
        let mut opt = self.subject.build(vec![group(vec![w.clone()], opts)]);
        opt.step(&grads);
        let tol = if F::DTYPE == ferrograd_tensor::DType::F32 { 1e-6 } else { 1e-12 };
        for (e, (got, want)) in w.value().to_vec().into_iter().map(Element::to_f64).zip(&want).enumerate() {
            if !close(got, *want, tol) {
                return Err(format!(
                    "`w`[{e}] is {got} after the first step, the closed form gives {want} (from {} with gradient {}, \
                     lr {}, weight_decay {})",
                    p0[e], g[e], opts.lr, opts.weight_decay
                ));
            }
        }
        Ok(())
    }
}

/// Runs a check, turning a panic into its failure.
fn guarded(check: impl Fn() -> Result<(), String>) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(check)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a non-string payload".into());
            Err(format!("panicked: {msg}"))
        }
    }
}

fn group<F: Float>(params: Vec<Param<F>>, options: GroupOptions) -> Group<F> {
    Group { params, options, alternative: false }
}

const NAMES: [&str; 2] = ["w", "b"];
const SALT_W: usize = 1;
const SALT_B: usize = 2;

/// Deterministic values in [-1, 1], none near zero.
fn value(i: usize, salt: usize) -> f64 {
    let x = ((i * 7 + salt * 5) % 17) as f64 / 8.0 - 1.0;
    if x.abs() < 0.1 {
        x + 0.35
    } else {
        x
    }
}

/// `w`, 3x4.
fn param_w<F: Float>() -> Param<F> {
    Param::new(Tensor::from_fn(&[3, 4], |i| F::from_f64(value(i, SALT_W))))
}

/// `b`, 4.
fn param_b<F: Float>() -> Param<F> {
    Param::new(Tensor::from_fn(&[4], |i| F::from_f64(value(i, SALT_B))))
}

/// The gradients of step `k` for `params`, each identified by its position (w first, then b).
fn gradients<F: Float>(params: &[&Param<F>], k: usize) -> Grads<F> {
    let salted: Vec<(&Param<F>, usize)> = params.iter().enumerate().map(|(i, p)| (*p, i + 1)).collect();
    gradients_salted(&salted, k)
}

/// Gradients of step `k`: varied signs and magnitudes (0.3 to 2), values exact in f32, the
/// same for a parameter whatever else is in the set.
fn gradients_salted<F: Float>(params: &[(&Param<F>, usize)], k: usize) -> Grads<F> {
    let mut grads = Grads::default();
    for (p, salt) in params {
        let g = Tensor::from_fn(&p.shape(), |i| {
            let x = (i as f64 * 1.37 + k as f64 * 0.61 + *salt as f64 * 2.3).sin() * (1.0 + (i % 3) as f64 * 0.5);
            let x = if x.abs() < 0.3 { x.signum() * 0.3 + x } else { x };
            F::from_f64(f64::from(x as f32))
        });
        grads.insert(p.id(), g);
    }
    grads
}

/// `0.5 * sum a_i (x_i - c_i)^2` over the elements of `params` (curvatures in [0.5, 2], centres
/// in [-1, 1]) and its gradient.
fn quadratic<F: Float>(params: &[&Param<F>]) -> (f64, Grads<F>) {
    let (mut loss, mut grads, mut offset) = (0.0, Grads::default(), 0);
    for p in params {
        let x = p.value().to_vec();
        let g = Tensor::from_fn(&p.shape(), |i| {
            let j = offset + i;
            let (a, c) = (0.5 + (j % 4) as f64 * 0.5, value(j, 3) * 0.5);
            let d = Element::to_f64(x[i]) - c;
            loss += 0.5 * a * d * d;
            F::from_f64(a * d)
        });
        grads.insert(p.id(), g);
        offset += x.len();
    }
    (loss, grads)
}

/// `|got - want| <= tol * max(1, |want|)` (false for NaN).
fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// The first element where `got` and `want` differ bit for bit: its index and both values.
fn first_difference<F: Float>(got: &[F], want: &[F]) -> Option<(usize, f64, f64)> {
    let (got64, want64) = (got.iter().map(|&x| Element::to_f64(x)), want.iter().map(|&x| Element::to_f64(x)));
    got64
        .zip(want64)
        .enumerate()
        .find(|(_, (a, b))| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
        .map(|(i, (a, b))| (i, a, b))
}
