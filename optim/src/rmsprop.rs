//! RMSprop (`torch.optim.RMSprop`), plain, centered and with momentum.

use ferrograd_tensor::{Float, Tensor};

use crate::error::{fraction, non_negative as option_non_negative};
use crate::kernel::{c, dense, ftz, non_negative, zeros_like};
use crate::{GroupOptions, OptimError, RuleState, UpdateRule, WeightDecay};

/// RMSprop's rule as PyTorch's: `s = alpha * s + (1 - alpha) * g²`; centered:
/// `a = lerp(a, g, 1 - alpha)`, `avg = sqrt(s - a²) + eps`, else `avg = sqrt(s) + eps`; with
/// momentum `buf = momentum * buf + g / avg`, `param -= lr * buf`, else `param -= lr * g / avg`.
/// Weight decay is L2. PyTorch's defaults: lr 0.01, alpha 0.99, eps 1e-8.
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{GroupOptions, Optim, Optimizer, RmsProp};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
/// let rule = RmsProp { centered: true, momentum: 0.9, ..RmsProp::default() };
/// let mut opt = Optim::new(rule, vec![w.clone()], GroupOptions::lr(0.01));
/// opt.step(&w.var().square().sum().backward());
/// assert!(w.value().item() < 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsProp {
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Momentum factor (0: none).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the raw second moment.
    pub centered: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp { alpha: 0.99, eps: 1e-8, momentum: 0.0, centered: false, maximize: false }
    }
}

/// RMSprop's per-parameter state.
#[derive(Debug, Clone)]
pub struct RmsPropState<F: Float> {
    /// Running average of the squared gradient.
    pub square_avg: Tensor<F>,
    /// Momentum buffer, when `momentum > 0`.
    pub momentum_buffer: Option<Tensor<F>>,
    /// Running average of the gradient, when centered.
    pub grad_avg: Option<Tensor<F>>,
}

impl<F: Float> RuleState<F> for RmsPropState<F> {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        let mut v = vec![("square_avg", &mut self.square_avg)];
        v.extend(self.momentum_buffer.iter_mut().map(|t| ("momentum_buffer", t)));
        v.extend(self.grad_avg.iter_mut().map(|t| ("grad_avg", t)));
        v
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        non_negative("square_avg", &self.square_avg)
    }
}

impl<F: Float> UpdateRule<F> for RmsProp {
    type State = RmsPropState<F>;

    fn init_state(&self, param: &Tensor<F>) -> RmsPropState<F> {
        RmsPropState {
            square_avg: zeros_like(param),
            momentum_buffer: (self.momentum > 0.0).then(|| zeros_like(param)),
            grad_avg: self.centered.then(|| zeros_like(param)),
        }
    }

    fn update(
        &self,
        group: &GroupOptions,
        param: &mut Tensor<F>,
        grad: &Tensor<F>,
        state: &mut RmsPropState<F>,
        _: u64,
    ) {
        let (alpha, w, eps, mom): (F, F, F, F) = (c(self.alpha), c(1.0 - self.alpha), c(self.eps), c(self.momentum));
        let (lr, wd): (F, F) = (c(group.lr), c(group.weight_decay));
        let sign: F = c(if self.maximize { -1.0 } else { 1.0 });
        let g = dense(grad);
        let p = param.as_mut_slice();
        let s = state.square_avg.as_mut_slice();
        let mut a = state.grad_avg.as_mut().map(|t| t.as_mut_slice());
        let mut b = state.momentum_buffer.as_mut().map(|t| t.as_mut_slice());
        for i in 0..p.len() {
            let gi = sign * g[i] + wd * p[i];
            s[i] = ftz(s[i] * alpha + w * (gi * gi));
            let avg = match a.as_deref_mut() {
                Some(a) => {
                    a[i] = ftz(a[i] + w * (gi - a[i]));
                    (s[i] + -(a[i] * a[i])).sqrt() + eps
                }
                None => s[i].sqrt() + eps,
            };
            match b.as_deref_mut() {
                Some(b) => {
                    b[i] = ftz(b[i] * mom + gi / avg);
                    p[i] += (-lr) * b[i];
                }
                None => p[i] += (-lr) * (gi / avg),
            }
        }
    }

    /// PyTorch's checks (eps and momentum finite and `>= 0`), with alpha in `[0, 1]` (PyTorch
    /// checks only `alpha >= 0`; above 1 the squared average turns negative and its root NaN).
    fn validate(&self) -> Result<(), OptimError> {
        fraction("RmsProp", "alpha", self.alpha)?;
        option_non_negative("RmsProp", "eps", self.eps)?;
        option_non_negative("RmsProp", "momentum", self.momentum)
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        Some(&mut self.momentum)
    }

    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::InRule
    }
}
