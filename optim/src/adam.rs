//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`), with AMSGrad, as one fused loop
//! over parameter, gradient and moments.

use ferrograd_tensor::{parallel_for_each, threads_for, Float, Tensor};

use crate::error::{decay, non_negative as option_non_negative};
use crate::kernel::{c, dense, ftz, non_negative, zeros_like};
use crate::{GroupOptions, OptimError, RuleState, UpdateRule, WeightDecay};

/// Adam's rule, PyTorch's `_single_tensor_adam` step for step:
/// `m = lerp(m, g, 1 - beta1)`, `v = beta2 * v + (1 - beta2) * g²`,
/// `param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)` (with `v` replaced by
/// its running maximum under `amsgrad`). Weight decay is L2 (`g += wd * param`), or decoupled
/// (`param *= 1 - lr * wd` first) for AdamW ([`Adam::adamw`]).
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{Adam, GroupOptions, Optim, Optimizer};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f32, -1.0], &[2]));
/// let mut opt = Optim::new(Adam::adamw(), vec![w.clone()], GroupOptions::lr(0.1).weight_decay(0.01));
/// opt.step(&w.var().square().sum().backward());
/// // The first Adam step moves each coordinate by about lr.
/// assert!((w.value().to_vec()[0] - 0.899).abs() < 1e-3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Decoupled weight decay (AdamW) instead of L2.
    pub decoupled_weight_decay: bool,
}

impl Default for Adam {
    fn default() -> Self {
        Adam { betas: (0.9, 0.999), eps: 1e-8, amsgrad: false, maximize: false, decoupled_weight_decay: false }
    }
}

impl Adam {
    /// AdamW: Adam with decoupled weight decay. PyTorch's `AdamW` defaults to weight decay
    /// 0.01; here it is the group's `weight_decay`, so set it there.
    pub fn adamw() -> Self {
        Adam { decoupled_weight_decay: true, ..Adam::default() }
    }
}

/// Adam's per-parameter state.
#[derive(Debug, Clone)]
pub struct AdamState<F: Float> {
    /// First moment estimate.
    pub exp_avg: Tensor<F>,
    /// Second moment estimate.
    pub exp_avg_sq: Tensor<F>,
    /// Running maximum of the second moment, under AMSGrad.
    pub max_exp_avg_sq: Option<Tensor<F>>,
}

impl<F: Float> RuleState<F> for AdamState<F> {
    fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor<F>)> {
        let mut v = vec![("exp_avg", &mut self.exp_avg), ("exp_avg_sq", &mut self.exp_avg_sq)];
        v.extend(self.max_exp_avg_sq.iter_mut().map(|t| ("max_exp_avg_sq", t)));
        v
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        non_negative("exp_avg_sq", &self.exp_avg_sq)?;
        self.max_exp_avg_sq.as_ref().map_or(Ok(()), |t| non_negative("max_exp_avg_sq", t))
    }
}

impl<F: Float> UpdateRule<F> for Adam {
    type State = AdamState<F>;

    fn init_state(&self, param: &Tensor<F>) -> AdamState<F> {
        AdamState {
            exp_avg: zeros_like(param),
            exp_avg_sq: zeros_like(param),
            max_exp_avg_sq: self.amsgrad.then(|| zeros_like(param)),
        }
    }

    fn update(
        &self,
        group: &GroupOptions,
        param: &mut Tensor<F>,
        grad: &Tensor<F>,
        state: &mut AdamState<F>,
        step: u64,
    ) {
        let (beta1, beta2) = self.betas;
        // A float power, as PyTorch's `beta1 ** step`: exact for every step count (an `i32`
        // power wrapped negative at 2^31 steps and made the weights NaN).
        let t = step as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2_sqrt: F = c((1.0 - beta2.powf(t)).sqrt());
        let neg_step_size: F = c(-(group.lr / bias_correction1));
        let (l2, decay): (F, F) = if self.decoupled_weight_decay {
            (F::zero(), c(1.0 - group.lr * group.weight_decay))
        } else {
            (c(group.weight_decay), F::one())
        };
        let (w1, b2, w2, eps): (F, F, F, F) = (c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(self.eps));
        let sign: F = c(if self.maximize { -1.0 } else { 1.0 });

        let k =
            Coefs { sign, l2, decay, w1, b2, w2, eps, inv_bc2_sqrt: F::one() / bias_correction2_sqrt, neg_step_size };
        let g = dense(grad);
        let p = param.as_mut_slice();
        let m = state.exp_avg.as_mut_slice();
        let v = state.exp_avg_sq.as_mut_slice();
        let vmax = state.max_exp_avg_sq.as_mut().map(|t| t.as_mut_slice());
        // Every element is updated on its own, so cutting the parameter into chunks gives the
        // same bits on any thread count.
        let n = p.len();
        let threads = threads_for(n, MIN_ELEMENTS_PER_THREAD);
        if threads == 1 {
            adam_slices(&k, p, &g, m, v, vmax);
            return;
        }
        // One chunk per thread: 4 per thread (`parts_for`) made the MLP's batch-32 step 5-8%
        // slower on 2 threads (A/B, quiet machine).
        let chunk = n.div_ceil(threads);
        let vmax_chunks: Vec<Option<&mut [F]>> = match vmax {
            Some(x) => x.chunks_mut(chunk).map(Some).collect(),
            None => (0..n.div_ceil(chunk)).map(|_| None).collect(),
        };
        let items: Vec<_> = p
            .chunks_mut(chunk)
            .zip(g.chunks(chunk))
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk))
            .zip(vmax_chunks)
            .collect();
        parallel_for_each(items, &|((((p, g), m), v), vmax)| adam_slices(&k, p, g, m, v, vmax));
    }

    fn name(&self) -> &'static str {
        if self.decoupled_weight_decay {
            "AdamW"
        } else {
            "Adam"
        }
    }

    /// PyTorch's checks: betas in `[0, 1)`, eps finite and `>= 0`.
    fn validate(&self) -> Result<(), OptimError> {
        let name = UpdateRule::<F>::name(self);
        decay(name, "betas.0", self.betas.0)?;
        decay(name, "betas.1", self.betas.1)?;
        option_non_negative(name, "eps", self.eps)
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        Some(&mut self.betas.0)
    }

    fn weight_decay(&self) -> WeightDecay {
        WeightDecay::InRule
    }
}

/// Elements per thread below which an Adam step stays on one thread: 2^12, ~10 µs of AVX2 work
/// (an element reads 16 bytes and writes 12, ~2.5 ns on the 2-core machine). A worker still
/// spinning from the previous region starts in under a microsecond, and one that has parked
/// costs the caller nothing (it runs the chunks itself and takes the job back). Larger
/// parameters are cut into chunks, one per thread: the MLP's 784x128 and 128x64 weights and
/// LeNet's 400x120 and 120x84 ones use 2 threads (at 2^15, all of LeNet's step, 6% of it on
/// one thread, stayed there).
const MIN_ELEMENTS_PER_THREAD: usize = 1 << 12;

/// The fused update on one run of elements, with AVX2 where the CPU has it.
fn adam_slices<F: Float>(k: &Coefs<F>, p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], vmax: Option<&mut [F]>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `adam_avx2`.
        unsafe { adam_avx2(k, p, g, m, v, vmax) };
        return;
    }
    adam_kernel(k, p, g, m, v, vmax);
}

/// The constants of one Adam step.
struct Coefs<F> {
    sign: F,
    l2: F,
    decay: F,
    w1: F,
    b2: F,
    w2: F,
    eps: F,
    inv_bc2_sqrt: F,
    neg_step_size: F,
}

/// [`adam_kernel`] compiled for AVX2: the same arithmetic (Rust never fuses `a * b + c` on its
/// own), on 8-wide vectors.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_avx2<F: Float>(k: &Coefs<F>, p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], vmax: Option<&mut [F]>) {
    adam_kernel(k, p, g, m, v, vmax)
}

/// One fused pass over parameter, gradient and moments: `sqrt(v) / sqrt(bc2)` is computed as a
/// product with the reciprocal (one division fewer per element; the difference from PyTorch's
/// division is within an ulp).
#[inline(always)]
fn adam_kernel<F: Float>(k: &Coefs<F>, p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], vmax: Option<&mut [F]>) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    match vmax {
        None => {
            for i in 0..n {
                let gi = k.sign * g[i] + k.l2 * p[i];
                m[i] = ftz(m[i] + k.w1 * (gi - m[i]));
                v[i] = ftz(v[i] * k.b2 + k.w2 * (gi * gi));
                let denom = v[i].sqrt() * k.inv_bc2_sqrt + k.eps;
                p[i] = p[i] * k.decay + k.neg_step_size * (m[i] / denom);
            }
        }
        Some(vmax) => {
            let vmax = &mut vmax[..n];
            for i in 0..n {
                let gi = k.sign * g[i] + k.l2 * p[i];
                m[i] = ftz(m[i] + k.w1 * (gi - m[i]));
                v[i] = ftz(v[i] * k.b2 + k.w2 * (gi * gi));
                vmax[i] = vmax[i].max(v[i]);
                let denom = vmax[i].sqrt() * k.inv_bc2_sqrt + k.eps;
                p[i] = p[i] * k.decay + k.neg_step_size * (m[i] / denom);
            }
        }
    }
}
