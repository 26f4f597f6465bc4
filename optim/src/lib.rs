//! `ferrograd-optim`: optimizers that update [`Param`](ferrograd_autograd::Param)s from
//! [`Grads`](ferrograd_autograd::Grads), learning-rate schedules and gradient clipping.
//!
//! Every optimizer is the shared driver [`Optim`] over an [`UpdateRule`]: [`Sgd`], [`Adam`]
//! (and AdamW via [`Adam::adamw`]), [`RmsProp`], [`Adagrad`], [`Lion`], or your own. Updates
//! match PyTorch's formulas step for step (checked against trajectories recorded with
//! PyTorch, `tests/fixtures/gen_optim.py`). [`Lbfgs`] (PyTorch's `LBFGS`, with an optional
//! strong-Wolfe line search) re-evaluates the loss through [`Optimizer::step_closure`].
//!
//! Schedules ([`StepLR`], [`CosineAnnealingLR`], [`OneCycleLR`], ...) are bound to their
//! optimizer: `StepLR::on(&mut opt, ..)` takes each group's base lr from it, and
//! [`BoundScheduler::step`] writes the lr, and the momentum when the schedule cycles it, into
//! the optimizer (see the `scheduler` docs on [`LrScheduler`]). With the `testing` feature,
//! `testing::Conformance` checks an optimizer of your own in one call.
//!
//! ```
//! use ferrograd_autograd::{Param, Var};
//! use ferrograd_optim::{Adam, GroupOptions, Optim, Optimizer, StepLR};
//! use ferrograd_tensor::Tensor;
//! let w = Param::new(Tensor::from_vec(vec![0.0f32, 0.0], &[2, 1]));
//! let x = Var::constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]));
//! let y = Var::constant(Tensor::from_vec(vec![3.0, 7.0], &[2, 1]));
//! let mut opt = Optim::new(Adam::default(), vec![w.clone()], GroupOptions::lr(0.1));
//! let mut sched = StepLR::on(&mut opt, 100, 0.5); // halves the optimizer's lr every 100 steps
//! for _ in 0..300 {
//!     let loss = (&x.matmul(&w.var()) - &y).square().mean();
//!     opt.step(&loss.backward());
//!     sched.step(&mut opt);
//! }
//! assert_eq!(opt.lr(), 0.0125);
//! let w = w.value().to_vec();
//! assert!((w[0] - 1.0).abs() < 0.05 && (w[1] - 1.0).abs() < 0.05);
//! ```

#![warn(missing_docs)]

mod adagrad;
mod adam;
mod clip;
mod error;
mod kernel;
mod lbfgs;
mod lion;
mod optimizer;
mod rmsprop;
mod scheduler;
mod sgd;
#[cfg(feature = "testing")]
pub mod testing;

pub use adagrad::{Adagrad, AdagradState};
pub use adam::{Adam, AdamState};
pub use clip::{clip_grad_norm, clip_grad_value, try_clip_grad_norm, ClipOptions, NonFiniteGrad};
pub use error::OptimError;
pub use lbfgs::{Lbfgs, LbfgsOptions, LineSearch};
pub use lion::Lion;
pub use optimizer::{GroupOptions, Optim, Optimizer, ParamGroup, RuleState, UpdateRule, WeightDecay};
pub use rmsprop::{RmsProp, RmsPropState};
pub use scheduler::{
    BoundScheduler, ChainedScheduler, ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, ExponentialLR,
    LinearLR, LrScheduler, MultiStepLR, OneCycleLR, PlateauMode, PlateauOptions, PlateauState, ReduceLROnPlateau,
    SequentialLR, StepLR, ThresholdMode,
};
pub use sgd::{Sgd, SgdState};
