//! The `Optimizer` trait, the per-parameter [`UpdateRule`] extension point, and [`Optim`], the
//! driver shared by every optimizer: parameter groups, per-parameter state and step counts,
//! missing gradients, weight decay, and state save/load.
//!
//! A new optimizer is an [`UpdateRule`]: how one parameter tensor moves given its gradient and
//! its own state. Everything else lives here once.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferrograd_autograd::{enable_grad, Grads, NodeId, Param, Var};
use ferrograd_tensor::{Element, Float, Tensor};

use crate::error::non_negative;
use crate::OptimError;

/// What every optimizer offers a training loop.
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f32, -2.0], &[2]));
/// let mut opt = Optim::new(Sgd::default(), vec![w.clone()], GroupOptions::lr(0.1));
/// let grads = w.var().square().sum().backward();
/// opt.step(&grads);
/// assert_eq!(w.value().to_vec(), vec![0.8, -1.6]);
/// ```
pub trait Optimizer<F: Float> {
    /// Updates every parameter that has a gradient in `grads`; parameters without one are left
    /// alone and their state does not advance (PyTorch's rule for `grad is None`).
    fn step(&mut self, grads: &Grads<F>);

    /// A step with a closure that computes the loss (PyTorch's `optimizer.step(closure)`), for
    /// optimizers that evaluate the loss more than once per step, like [`Lbfgs`](crate::Lbfgs).
    /// The optimizer runs the closure (with gradients enabled) and its backward pass as often
    /// as it needs; it returns the loss of the first evaluation. The default evaluates once
    /// and calls [`Optimizer::step`] with its gradients.
    ///
    /// ```
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0], &[2]));
    /// let mut opt = Optim::new(Sgd::default(), vec![w.clone()], GroupOptions::lr(0.1));
    /// let loss = opt.step_closure(&mut || w.var().square().sum());
    /// assert_eq!(loss, 5.0);
    /// assert_eq!(w.value().to_vec(), vec![0.8, -1.6]);
    /// ```
    fn step_closure(&mut self, closure: &mut dyn FnMut() -> Var<F>) -> f64 {
        let loss = enable_grad(&mut *closure);
        let value = Element::to_f64(loss.item());
        self.step(&loss.backward());
        value
    }

    /// The learning rate of the first parameter group.
    fn lr(&self) -> f64;
    /// Sets the learning rate of every parameter group (what an LR scheduler drives).
    fn set_lr(&mut self, lr: f64);
    /// The learning rate of each parameter group, in order (default: one group, [`Optimizer::lr`]).
    fn group_lrs(&self) -> Vec<f64> {
        vec![self.lr()]
    }
    /// Sets each parameter group's learning rate, in order: what a schedule bound to the
    /// optimizer ([`LrScheduler::bind`](crate::LrScheduler::bind)) drives, each group from its
    /// own base lr as in PyTorch. The default sets [`Optimizer::set_lr`] from one value.
    ///
    /// # Panics
    /// If `lrs` does not hold one lr per group, or one is negative or not finite.
    #[track_caller]
    fn set_group_lrs(&mut self, lrs: &[f64]) {
        assert_eq!(lrs.len(), 1, "Optimizer::set_group_lrs: {} lrs for 1 parameter group", lrs.len());
        self.set_lr(lrs[0]);
    }
    /// The momentum of the first parameter group, as PyTorch's `OneCycleLR` sees it: SGD's and
    /// RMSprop's `momentum`, Adam's and Lion's `beta1`; `None` if the rule has none (the
    /// default).
    fn momentum(&self) -> Option<f64> {
        None
    }
    /// Sets the momentum (or `beta1`, as [`Optimizer::momentum`]) of every parameter group
    /// (what a momentum-cycling schedule drives). Returns `false`, changing nothing, if the
    /// rule has none (the default).
    fn set_momentum(&mut self, _momentum: f64) -> bool {
        false
    }
    /// The optimizer's state as named tensors: `state.{group}.{param}.{name}` and
    /// `state.{group}.{param}.step`, for parameters that have taken a step. The step count is
    /// stored as a one-element tensor of `F` (exact up to 2^24 steps in f32). Hyperparameters
    /// (lr, weight decay, betas) are configuration, not state: rebuild the optimizer with them,
    /// and restore a schedule with [`LrScheduler::set_epoch`](crate::LrScheduler::set_epoch).
    fn state_dict(&self) -> BTreeMap<String, Tensor<F>>;
    /// Restores state saved by [`Optimizer::state_dict`] from an optimizer built the same way.
    /// On error nothing is changed.
    fn load_state_dict(&mut self, state: &BTreeMap<String, Tensor<F>>) -> Result<(), OptimError>;
}

/// A boxed optimizer is an optimizer, so code holding a `Box<dyn Optimizer<F>>` passes
/// `&mut opt` where an optimizer is expected (a bound schedule's `step(&mut opt)`).
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd, StepLR};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f32], &[1]));
/// let mut opt: Box<dyn Optimizer<f32>> = Box::new(Optim::new(Sgd::default(), vec![w], GroupOptions::lr(0.1)));
/// let mut sched = StepLR::on(&mut opt, 1, 0.5);
/// sched.step(&mut opt);
/// assert_eq!(opt.lr(), 0.05);
/// ```
impl<F: Float, O: Optimizer<F> + ?Sized> Optimizer<F> for Box<O> {
    fn step(&mut self, grads: &Grads<F>) {
        (**self).step(grads)
    }
    fn step_closure(&mut self, closure: &mut dyn FnMut() -> Var<F>) -> f64 {
        (**self).step_closure(closure)
    }
    fn lr(&self) -> f64 {
        (**self).lr()
    }
    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        (**self).set_lr(lr)
    }
    fn group_lrs(&self) -> Vec<f64> {
        (**self).group_lrs()
    }
    #[track_caller]
    fn set_group_lrs(&mut self, lrs: &[f64]) {
        (**self).set_group_lrs(lrs)
    }
    fn momentum(&self) -> Option<f64> {
        (**self).momentum()
    }
    fn set_momentum(&mut self, momentum: f64) -> bool {
        (**self).set_momentum(momentum)
    }
    fn state_dict(&self) -> BTreeMap<String, Tensor<F>> {
        (**self).state_dict()
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, Tensor<F>>) -> Result<(), OptimError> {
        (**self).load_state_dict(state)
    }
}

/// The options every parameter group has, whatever the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupOptions {
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (how it is applied is the rule's [`UpdateRule::weight_decay`]).
    pub weight_decay: f64,
}

impl GroupOptions {
    /// Options with learning rate `lr` and no weight decay.
    pub fn lr(lr: f64) -> Self {
        GroupOptions { lr, weight_decay: 0.0 }
    }

    /// The same options with weight decay `wd`.
    pub fn weight_decay(self, wd: f64) -> Self {
        GroupOptions { weight_decay: wd, ..self }
    }
}

/// How the driver applies a group's weight decay before calling the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDecay {
    /// L2 penalty: the rule sees `grad + weight_decay * param`, built in a temporary tensor
    /// per parameter and step (the built-in rules fuse it into their loop instead: `InRule`).
    L2,
    /// Decoupled: the parameter is first scaled by `1 - lr * weight_decay` (AdamW, Lion).
    Decoupled,
    /// The rule applies `group.weight_decay` itself (fused into its own loop).
    InRule,
}

/// The state a rule keeps per parameter, seen as named tensors for saving and loading.
pub trait RuleState<F: Float>: Clone + Send {
    /// The state's tensors by name, in a fixed order. Loading writes into them.
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)>;

    /// Checks state loaded from a checkpoint, after the driver has checked every shape and that
    /// every value is finite: the name of an entry holding a value this rule can never produce
    /// (a negative sum of squares), and why. The default accepts any finite state.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

impl<F: Float> RuleState<F> for () {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        Vec::new()
    }
}

impl<F: Float> RuleState<F> for Tensor<F> {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        vec![("buf", self)]
    }
}

/// How one parameter tensor is updated from its gradient: the part that makes an optimizer
/// what it is. [`Optim`] drives it over groups of parameters.
///
/// signSGD in full:
/// ```
/// use ferrograd_optim::{GroupOptions, UpdateRule};
/// use ferrograd_tensor::{Element, Float, Tensor};
/// #[derive(Clone)]
/// struct SignSgd;
/// impl<F: Float> UpdateRule<F> for SignSgd {
///     type State = ();
///     fn init_state(&self, _param: &Tensor<F>) {}
///     fn update(&self, g: &GroupOptions, p: &mut Tensor<F>, grad: &Tensor<F>, _: &mut (), _step: u64) {
///         let lr = F::from_f64(g.lr);
///         p.zip_inplace(grad, "sign_sgd", |w, d| w - lr * d.signum());
///     }
/// }
/// ```
pub trait UpdateRule<F: Float>: Clone + Send {
    /// The per-parameter state (moment estimates, buffers); `()` if none.
    type State: RuleState<F>;

    /// The state of a parameter before its first step.
    fn init_state(&self, param: &Tensor<F>) -> Self::State;

    /// Moves `param` given `grad` (same shape) and its state; `step` counts this parameter's
    /// updates from 1.
    fn update(&self, group: &GroupOptions, param: &mut Tensor<F>, grad: &Tensor<F>, state: &mut Self::State, step: u64);

    /// How the group's weight decay is applied (default: L2, added to the gradient).
    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::L2
    }
    /// The rule's name in messages (default: its type's name, `Adam`).
    fn name(&self) -> &'static str {
        let full = std::any::type_name::<Self>();
        let path = full.split('<').next().unwrap_or(full);
        path.rsplit("::").next().unwrap_or(path)
    }

    /// Checks the rule's hyperparameters, as PyTorch's constructors do: an
    /// [`OptimError::InvalidOption`] naming the first one out of range. [`Optim`] calls it when
    /// a group is added and before every step; the group's lr and weight decay are checked
    /// there too. The default accepts any configuration.
    ///
    /// ```
    /// use ferrograd_optim::{Adam, OptimError, UpdateRule};
    /// let bad = Adam { betas: (0.9, 1.0), ..Adam::default() };
    /// let err = UpdateRule::<f32>::validate(&bad).unwrap_err();
    /// assert_eq!(err.to_string(), "Adam: invalid betas.1 = 1: must be in [0, 1)");
    /// ```
    fn validate(&self) -> Result<(), OptimError> {
        Ok(())
    }

    /// The hyperparameter a momentum-cycling schedule drives (SGD's `momentum`, Adam's
    /// `beta1`), or `None` if the rule has none (the default). Backs
    /// [`Optimizer::momentum`] and [`Optimizer::set_momentum`].
    fn momentum_mut(&mut self) -> Option<&mut f64> {
        None
    }
}

/// A group of parameters sharing options and a rule configuration.
#[derive(Debug, Clone)]
pub struct ParamGroup<F: Float, R> {
    /// The parameters, in the order their state is named.
    pub params: Vec<Param<F>>,
    /// Learning rate and weight decay.
    pub options: GroupOptions,
    /// The rule with this group's hyperparameters.
    pub rule: R,
}

#[derive(Clone)]
struct Slot<S> {
    step: u64,
    state: S,
}

/// The shared optimizer driver over an [`UpdateRule`].
pub struct Optim<F: Float, R: UpdateRule<F>> {
    groups: Vec<ParamGroup<F, R>>,
    state: HashMap<NodeId, Slot<R::State>>,
}

impl<F: Float, R: UpdateRule<F>> std::fmt::Debug for Optim<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<_> = self.groups.iter().map(|g| (g.rule.name(), g.params.len(), g.options)).collect();
        f.debug_struct("Optim").field("groups", &groups).field("params_with_state", &self.state.len()).finish()
    }
}

impl<F: Float, R: UpdateRule<F>> Optim<F, R> {
    /// An optimizer with one group.
    ///
    /// # Panics
    /// If an option is out of range (the message names the rule, the option and its value, at
    /// the caller's line) or a parameter appears twice. [`Optim::try_new`] returns these as
    /// errors instead, for options that come from configs or searches.
    #[track_caller]
    pub fn new(rule: R, params: Vec<Param<F>>, options: GroupOptions) -> Self {
        match Self::try_new(rule, params, options) {
            Ok(opt) => opt,
            Err(e) => panic!("Optim::new: {e}"),
        }
    }

    /// [`Optim::new`] returning an [`OptimError`] for options out of range (what PyTorch's
    /// constructors reject: a negative or NaN lr, betas outside `[0, 1)`, a negative eps,
    /// weight decay or momentum, Nesterov without momentum, ...) or a repeated parameter.
    ///
    /// ```
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{GroupOptions, Optim, OptimError, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let w = Param::new(Tensor::<f32>::zeros(&[2]));
    /// let err = Optim::try_new(Sgd::default(), vec![w], GroupOptions::lr(-0.1)).unwrap_err();
    /// assert_eq!(err.to_string(), "Sgd: invalid lr = -0.1: must be finite and >= 0");
    /// ```
    pub fn try_new(rule: R, params: Vec<Param<F>>, options: GroupOptions) -> Result<Self, OptimError> {
        let mut opt = Optim { groups: Vec::new(), state: HashMap::new() };
        opt.try_add_group_with(params, options, rule)?;
        Ok(opt)
    }

    /// Adds a group using the first group's rule configuration.
    ///
    /// # Panics
    /// As [`Optim::new`]: an option out of range, or a parameter already in this optimizer.
    #[track_caller]
    pub fn add_group(&mut self, params: Vec<Param<F>>, options: GroupOptions) {
        if let Err(e) = self.try_add_group(params, options) {
            panic!("Optim::add_group: {e}");
        }
    }

    /// [`Optim::add_group`] returning an error instead of panicking; on error nothing changes.
    pub fn try_add_group(&mut self, params: Vec<Param<F>>, options: GroupOptions) -> Result<(), OptimError> {
        let rule = self.groups[0].rule.clone();
        self.try_add_group_with(params, options, rule)
    }

    /// Adds a group with its own rule configuration (say other betas).
    ///
    /// # Panics
    /// As [`Optim::new`]: an option out of range, or a parameter already in this optimizer.
    #[track_caller]
    pub fn add_group_with(&mut self, params: Vec<Param<F>>, options: GroupOptions, rule: R) {
        if let Err(e) = self.try_add_group_with(params, options, rule) {
            panic!("Optim::add_group_with: {e}");
        }
    }

    /// [`Optim::add_group_with`] returning an error instead of panicking; on error nothing
    /// changes.
    pub fn try_add_group_with(
        &mut self,
        params: Vec<Param<F>>,
        options: GroupOptions,
        rule: R,
    ) -> Result<(), OptimError> {
        check_group(&rule, &options)?;
        let mut seen: HashSet<NodeId> = self.groups.iter().flat_map(|g| g.params.iter().map(|p| p.id())).collect();
        if let Some(p) = params.iter().find(|p| !seen.insert(p.id())) {
            return Err(OptimError::DuplicateParameter(format!("{p:?}")));
        }
        self.groups.push(ParamGroup { params, options, rule });
        Ok(())
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup<F, R>] {
        &self.groups
    }

    /// The parameter groups, to change options or rule hyperparameters between steps.
    pub fn groups_mut(&mut self) -> &mut [ParamGroup<F, R>] {
        &mut self.groups
    }

    /// Sets the learning rate of group `group` only.
    ///
    /// # Panics
    /// If `lr` is negative or not finite, or there is no such group.
    #[track_caller]
    pub fn set_group_lr(&mut self, group: usize, lr: f64) {
        if let Err(e) = non_negative(self.groups[group].rule.name(), "lr", lr) {
            panic!("Optim::set_group_lr: {e}");
        }
        self.groups[group].options.lr = lr;
    }

    /// How many updates `param` has taken (0 if none, or if it is not in this optimizer).
    pub fn step_count(&self, param: &Param<F>) -> u64 {
        self.state.get(&param.id()).map_or(0, |s| s.step)
    }

    /// The state of `param`, once it has taken a step.
    pub fn param_state(&self, param: &Param<F>) -> Option<&R::State> {
        self.state.get(&param.id()).map(|s| &s.state)
    }
}

/// A group's options and its rule's hyperparameters, as PyTorch's constructors check them.
fn check_group<F: Float, R: UpdateRule<F>>(rule: &R, options: &GroupOptions) -> Result<(), OptimError> {
    non_negative(rule.name(), "lr", options.lr)?;
    non_negative(rule.name(), "weight_decay", options.weight_decay)?;
    rule.validate()
}

fn key(g: usize, i: usize, name: &str) -> String {
    format!("state.{g}.{i}.{name}")
}

/// The most steps a checkpoint may record: 2^53, where an `f64` count stops being exact. No run
/// comes near it (centuries at a microsecond a step), so more is a corrupt file; and `u64`
/// arithmetic on the count stays far from overflowing.
const MAX_STEP: u64 = 1 << 53;

/// A saved count (of steps, iterations or evaluations) as a `u64`, or why it cannot be one.
pub(crate) fn parse_count(s: f64, what: &str) -> Result<u64, String> {
    if !s.is_finite() {
        Err(format!("{what} {s} is not finite"))
    } else if s < 0.0 {
        Err(format!("{what} {s} is negative"))
    } else if s.fract() != 0.0 {
        Err(format!("{what} {s} is not a whole number"))
    } else if s > MAX_STEP as f64 {
        Err(format!("{what} {s} is more steps than a run can take (at most 2^53)"))
    } else {
        Ok(s as u64)
    }
}

/// `Ok` if every element of `t` is finite, else which one is not.
pub(crate) fn all_finite<F: Float>(t: &Tensor<F>) -> Result<(), String> {
    match t.to_vec().into_iter().enumerate().find(|(_, x)| !x.is_finite()) {
        None => Ok(()),
        Some((i, x)) => Err(format!("element {i} is {}", Element::to_f64(x))),
    }
}

impl<F: Float, R: UpdateRule<F>> Optimizer<F> for Optim<F, R> {
    #[track_caller]
    fn step(&mut self, grads: &Grads<F>) {
        for (gi, group) in self.groups.iter().enumerate() {
            // Options can change between steps (groups_mut, set_momentum): a value out of range
            // would give NaN weights or silent ascent.
            if let Err(e) = check_group(&group.rule, &group.options) {
                panic!("Optimizer::step: parameter group {gi}: {e}");
            }
            let opts = &group.options;
            let rule = &group.rule;
            for p in &group.params {
                let Some(grad) = grads.get_param(p) else { continue };
                let slot =
                    self.state.entry(p.id()).or_insert_with(|| Slot { step: 0, state: rule.init_state(&p.value()) });
                slot.step += 1;
                p.update(|t| {
                    assert_eq!(t.shape(), grad.shape(), "Optimizer::step: gradient shape differs from parameter {p:?}");
                    let wd = opts.weight_decay;
                    match rule.weight_decay() {
                        WeightDecay::L2 if wd != 0.0 => {
                            let mut g = grad.clone();
                            g.add_scaled_(t, F::from_f64(wd));
                            rule.update(opts, t, &g, &mut slot.state, slot.step);
                        }
                        WeightDecay::Decoupled if wd != 0.0 => {
                            t.mul_scalar_(F::from_f64(1.0 - opts.lr * wd));
                            rule.update(opts, t, grad, &mut slot.state, slot.step);
                        }
                        _ => rule.update(opts, t, grad, &mut slot.state, slot.step),
                    }
                });
            }
        }
    }

    fn lr(&self) -> f64 {
        self.groups[0].options.lr
    }

    fn group_lrs(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g.options.lr).collect()
    }

    #[track_caller]
    fn set_group_lrs(&mut self, lrs: &[f64]) {
        assert_eq!(
            lrs.len(),
            self.groups.len(),
            "Optimizer::set_group_lrs: {} lrs for {} parameter groups",
            lrs.len(),
            self.groups.len()
        );
        for (group, &lr) in self.groups.iter().zip(lrs) {
            if let Err(e) = non_negative(group.rule.name(), "lr", lr) {
                panic!("Optimizer::set_group_lrs: {e}");
            }
        }
        for (group, &lr) in self.groups.iter_mut().zip(lrs) {
            group.options.lr = lr;
        }
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        if let Err(e) = non_negative(self.groups[0].rule.name(), "lr", lr) {
            panic!("Optimizer::set_lr: {e}");
        }
        self.groups.iter_mut().for_each(|g| g.options.lr = lr);
    }
    fn momentum(&self) -> Option<f64> {
        // Rules are small configurations: a clone lends `momentum_mut` its `&mut`.
        self.groups[0].rule.clone().momentum_mut().copied()
    }
    fn set_momentum(&mut self, momentum: f64) -> bool {
        if self.groups[0].rule.clone().momentum_mut().is_none() {
            return false;
        }
        for g in &mut self.groups {
            if let Some(m) = g.rule.momentum_mut() {
                *m = momentum;
            }
        }
        true
    }

    fn state_dict(&self) -> BTreeMap<String, Tensor<F>> {
        let mut out = BTreeMap::new();
        for (gi, group) in self.groups.iter().enumerate() {
            for (pi, p) in group.params.iter().enumerate() {
                let Some(slot) = self.state.get(&p.id()) else { continue };
                out.insert(key(gi, pi, "step"), Tensor::scalar(F::from_f64(slot.step as f64)));
                let mut state = slot.state.clone();
                for (name, t) in state.tensors_mut() {
                    out.insert(key(gi, pi, name), t.clone());
                }
            }
        }
        out
    }

    fn load_state_dict(&mut self, saved: &BTreeMap<String, Tensor<F>>) -> Result<(), OptimError> {
        let mut used: HashSet<&str> = HashSet::new();
        let mut loaded = HashMap::new();
        for (gi, group) in self.groups.iter().enumerate() {
            for (pi, p) in group.params.iter().enumerate() {
                let step_key = key(gi, pi, "step");
                let Some((sk, step)) = saved.get_key_value(&step_key) else { continue };
                used.insert(sk.as_str());
                if step.numel() != 1 {
                    return Err(OptimError::ShapeMismatch {
                        key: step_key,
                        expected: vec![],
                        found: step.shape().to_vec(),
                    });
                }
                let s = parse_count(Element::to_f64(step.item()), "step count")
                    .map_err(|reason| OptimError::InvalidValue { key: step_key, reason })?;
                let value = p.value();
                let mut state = group.rule.init_state(&value);
                for (name, slot) in state.tensors_mut() {
                    let k = key(gi, pi, name);
                    let (sk, t) = saved.get_key_value(&k).ok_or_else(|| OptimError::MissingKey(k.clone()))?;
                    if t.shape() != slot.shape() {
                        return Err(OptimError::ShapeMismatch {
                            key: k,
                            expected: slot.shape().to_vec(),
                            found: t.shape().to_vec(),
                        });
                    }
                    all_finite(t).map_err(|reason| OptimError::InvalidValue { key: k, reason })?;
                    *slot = t.clone();
                    used.insert(sk.as_str());
                }
                state
                    .validate()
                    .map_err(|(name, reason)| OptimError::InvalidValue { key: key(gi, pi, name), reason })?;
                loaded.insert(p.id(), Slot { step: s, state });
            }
        }
        if let Some(k) = saved.keys().find(|k| !used.contains(k.as_str())) {
            // A state entry whose parameter has no step entry, or a name this optimizer lacks.
            let known = self.groups.iter().enumerate().any(|(gi, g)| {
                g.params.iter().enumerate().any(|(pi, p)| {
                    let mut s = g.rule.init_state(&p.value());
                    s.tensors_mut().iter().any(|(n, _)| key(gi, pi, n) == *k)
                })
            });
            return Err(if known {
                let param = k.rsplit_once('.').map_or(k.as_str(), |(head, _)| head);
                OptimError::MissingKey(format!("{param}.step"))
            } else {
                OptimError::UnexpectedKey(k.clone())
            });
        }
        self.state = loaded;
        Ok(())
    }
}
