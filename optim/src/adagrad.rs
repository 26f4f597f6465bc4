//! Adagrad (`torch.optim.Adagrad`).

use ferrograd_tensor::{Float, Tensor};

use crate::error::non_negative as option_non_negative;
use crate::kernel::{c, dense, non_negative};
use crate::{GroupOptions, OptimError, RuleState, UpdateRule, WeightDecay};

/// Adagrad's rule as PyTorch's: `clr = lr / (1 + (t - 1) * lr_decay)`, `sum += g²`,
/// `param -= clr * g / (sqrt(sum) + eps)`. Weight decay is L2. PyTorch's defaults: lr 0.01,
/// eps 1e-10.
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{Adagrad, GroupOptions, Optim, Optimizer};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64], &[1]));
/// let mut opt = Optim::new(Adagrad::default(), vec![w.clone()], GroupOptions::lr(0.5));
/// opt.step(&w.var().square().sum().backward());
/// assert!((w.value().item() - 0.5).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adagrad {
    /// Learning-rate decay per step.
    pub lr_decay: f64,
    /// Starting value of the squared-gradient sum.
    pub initial_accumulator_value: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad { lr_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10, maximize: false }
    }
}

/// Adagrad's per-parameter state.
#[derive(Debug, Clone)]
pub struct AdagradState<F: Float> {
    /// The sum of squared gradients.
    pub sum: Tensor<F>,
}

impl<F: Float> RuleState<F> for AdagradState<F> {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        vec![("sum", &mut self.sum)]
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        non_negative("sum", &self.sum)
    }
}

impl<F: Float> UpdateRule<F> for Adagrad {
    type State = AdagradState<F>;

    fn init_state(&self, param: &Tensor<F>) -> AdagradState<F> {
        AdagradState { sum: Tensor::full(param.shape(), c(self.initial_accumulator_value)) }
    }

    fn update(
        &self,
        group: &GroupOptions,
        param: &mut Tensor<F>,
        grad: &Tensor<F>,
        state: &mut AdagradState<F>,
        step: u64,
    ) {
        let clr = group.lr / (1.0 + (step - 1) as f64 * self.lr_decay);
        let (neg_clr, wd, eps): (F, F, F) = (c(-clr), c(group.weight_decay), c(self.eps));
        let sign: F = c(if self.maximize { -1.0 } else { 1.0 });
        let g = dense(grad);
        let p = param.as_mut_slice();
        let s = state.sum.as_mut_slice();
        for ((p, s), &g) in p.iter_mut().zip(s.iter_mut()).zip(g.iter()) {
            let gi = sign * g + wd * *p;
            *s += gi * gi;
            *p += neg_clr * (gi / (s.sqrt() + eps));
        }
    }

    /// PyTorch's checks: lr_decay, initial_accumulator_value and eps finite and `>= 0`.
    fn validate(&self) -> Result<(), OptimError> {
        option_non_negative("Adagrad", "lr_decay", self.lr_decay)?;
        option_non_negative("Adagrad", "initial_accumulator_value", self.initial_accumulator_value)?;
        option_non_negative("Adagrad", "eps", self.eps)
    }

    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::InRule
    }
}
