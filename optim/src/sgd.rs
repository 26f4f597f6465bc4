//! Stochastic gradient descent with momentum, dampening and Nesterov momentum, as
//! `torch.optim.SGD`.

use ferrograd_tensor::{Float, Tensor};

use crate::error::{fraction, non_negative, require};
use crate::kernel::{c, dense, ftz, zeros_like};
use crate::{GroupOptions, OptimError, RuleState, UpdateRule, WeightDecay};

/// SGD's rule (`torch.optim.SGD`): with `d = grad + weight_decay * param` (negated if
/// `maximize`), `buf = momentum * buf + (1 - dampening) * d` (`buf = d` at the first step),
/// `d = d + momentum * buf` if `nesterov` else `buf`, and `param -= lr * d`.
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
/// let sgd = Sgd { momentum: 0.9, nesterov: true, ..Sgd::default() };
/// let mut opt = Optim::new(sgd, vec![w.clone()], GroupOptions::lr(0.1).weight_decay(1e-4));
/// for _ in 0..3 {
///     opt.step(&w.var().square().sum().backward());
/// }
/// assert!(w.value().item() < 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Momentum factor (0: plain SGD, no buffer kept).
    pub momentum: f64,
    /// Dampening of the gradient's contribution to the momentum buffer.
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`, as in PyTorch).
    pub nesterov: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, maximize: false }
    }
}

/// SGD's per-parameter state.
#[derive(Debug, Clone)]
pub struct SgdState<F: Float> {
    /// The momentum buffer, kept when `momentum != 0`.
    pub momentum_buffer: Option<Tensor<F>>,
}

impl<F: Float> RuleState<F> for SgdState<F> {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        self.momentum_buffer.iter_mut().map(|t| ("momentum_buffer", t)).collect()
    }
}

impl<F: Float> UpdateRule<F> for Sgd {
    type State = SgdState<F>;

    fn init_state(&self, param: &Tensor<F>) -> SgdState<F> {
        SgdState { momentum_buffer: (self.momentum != 0.0).then(|| zeros_like(param)) }
    }

    fn update(
        &self,
        group: &GroupOptions,
        param: &mut Tensor<F>,
        grad: &Tensor<F>,
        state: &mut SgdState<F>,
        step: u64,
    ) {
        let g = dense(grad);
        let p = param.as_mut_slice();
        let (lr, wd): (F, F) = (c(group.lr), c(group.weight_decay));
        let sign: F = c(if self.maximize { -1.0 } else { 1.0 });
        let Some(buf) = state.momentum_buffer.as_mut() else {
            p.iter_mut().zip(g.iter()).for_each(|(p, &g)| *p = *p + (-lr) * (sign * g + wd * *p));
            return;
        };
        let (mom, keep): (F, F) = (c(self.momentum), c(1.0 - self.dampening));
        let (first, nesterov) = (step == 1, self.nesterov);
        let b = buf.as_mut_slice();
        for ((p, b), &g) in p.iter_mut().zip(b.iter_mut()).zip(g.iter()) {
            let d = sign * g + wd * *p;
            *b = if first { d } else { ftz(*b * mom + keep * d) };
            let step_dir = if nesterov { d + mom * *b } else { *b };
            *p += (-lr) * step_dir;
        }
    }

    /// PyTorch's checks: momentum finite and `>= 0`; Nesterov needs a momentum `> 0` and zero
    /// dampening. Dampening must also lie in `[0, 1]` (PyTorch does not check it; outside, the
    /// buffer would grow against the gradient).
    fn validate(&self) -> Result<(), OptimError> {
        non_negative("Sgd", "momentum", self.momentum)?;
        fraction("Sgd", "dampening", self.dampening)?;
        if self.nesterov {
            require("Sgd", "momentum", self.momentum, self.momentum > 0.0, "Nesterov momentum needs a momentum > 0")?;
            require(
                "Sgd",
                "dampening",
                self.dampening,
                self.dampening == 0.0,
                "Nesterov momentum needs zero dampening",
            )?;
        }
        Ok(())
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        Some(&mut self.momentum)
    }

    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::InRule
    }
}
