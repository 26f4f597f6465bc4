//! Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
//! interpolated momentum, with decoupled weight decay. Not in PyTorch's core; the reference
//! trajectory comes from the paper's algorithm written out in the fixture script.

use ferrograd_tensor::{Float, Tensor};

use crate::error::decay;
use crate::kernel::{c, dense, ftz, zeros_like};
use crate::{GroupOptions, OptimError, UpdateRule, WeightDecay};

/// Lion's rule: `param *= 1 - lr * wd`, `param -= lr * sign(beta1 * m + (1 - beta1) * g)`,
/// `m = beta2 * m + (1 - beta2) * g`. The paper suggests an lr 3-10x smaller than AdamW's and a
/// weight decay as much larger.
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{GroupOptions, Lion, Optim, Optimizer};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64, -1.0], &[2]));
/// let mut opt = Optim::new(Lion::default(), vec![w.clone()], GroupOptions::lr(0.1));
/// opt.step(&w.var().square().sum().backward());
/// assert_eq!(w.value().to_vec(), vec![0.9, -0.9]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lion {
    /// Interpolation factor of the update direction, and decay of the momentum.
    pub betas: (f64, f64),
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for Lion {
    fn default() -> Self {
        Lion { betas: (0.9, 0.99), maximize: false }
    }
}

impl<F: Float> UpdateRule<F> for Lion {
    /// The momentum (saved as `buf`).
    type State = Tensor<F>;

    fn init_state(&self, param: &Tensor<F>) -> Tensor<F> {
        zeros_like(param)
    }

    fn update(&self, group: &GroupOptions, param: &mut Tensor<F>, grad: &Tensor<F>, m: &mut Tensor<F>, _: u64) {
        let (b1, w1, b2, w2): (F, F, F, F) =
            (c(self.betas.0), c(1.0 - self.betas.0), c(self.betas.1), c(1.0 - self.betas.1));
        let neg_lr: F = c(-group.lr);
        let sign: F = c(if self.maximize { -1.0 } else { 1.0 });
        let g = dense(grad);
        let p = param.as_mut_slice();
        let m = m.as_mut_slice();
        for ((p, m), &g) in p.iter_mut().zip(m.iter_mut()).zip(g.iter()) {
            let gi = sign * g;
            let u = b1 * *m + w1 * gi;
            let s = if u > F::zero() {
                F::one()
            } else if u < F::zero() {
                -F::one()
            } else {
                F::zero()
            };
            *p += neg_lr * s;
            *m = ftz(b2 * *m + w2 * gi);
        }
    }

    /// Betas in `[0, 1)`, as Adam's (Lion is not in PyTorch's core).
    fn validate(&self) -> Result<(), OptimError> {
        decay("Lion", "betas.0", self.betas.0)?;
        decay("Lion", "betas.1", self.betas.1)
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        Some(&mut self.betas.0)
    }

    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::Decoupled
    }
}
