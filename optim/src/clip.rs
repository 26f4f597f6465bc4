//! Gradient clipping by global norm and by value (`torch.nn.utils.clip_grad_norm_`,
//! `clip_grad_value_`), applied to [`Grads`] before the optimizer step.
//!
//! A non-finite norm (a NaN or infinite gradient, or squares overflowing) cannot be clipped:
//! [`try_clip_grad_norm`] refuses by default (PyTorch's `error_if_nonfinite=True`) with an
//! error naming every parameter whose gradient holds NaN or infinity, and leaves the gradients
//! as they were. [`clip_grad_norm`] keeps PyTorch's default call instead: it returns the
//! non-finite norm and scales by it, as PyTorch does.

use ferrograd_autograd::{Grads, Param};
use ferrograd_tensor::{Element, Float, Tensor};

use crate::error::require;
use crate::kernel::dense;
use crate::OptimError;

/// The options of [`try_clip_grad_norm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipOptions {
    /// The p of the norm: any p > 0 (2.0 for the Euclidean norm), or `f64::INFINITY` for the
    /// largest magnitude.
    pub norm_type: f64,
    /// Refuse to clip when the total norm is NaN or infinite, returning
    /// [`OptimError::NonFiniteGradNorm`] (PyTorch's `error_if_nonfinite`). On by default here,
    /// off by default in PyTorch (kept for its backward compatibility): scaling by a NaN norm
    /// makes every gradient NaN and the next step every weight, with no message.
    pub error_if_nonfinite: bool,
}

impl Default for ClipOptions {
    /// The Euclidean norm, refusing non-finite norms.
    fn default() -> Self {
        ClipOptions { norm_type: 2.0, error_if_nonfinite: true }
    }
}

/// A parameter whose gradient holds non-finite values, as [`OptimError::NonFiniteGradNorm`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteGrad {
    /// The parameter's position in the slice given to the clipping function.
    pub index: usize,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How many gradient elements are NaN.
    pub nan: usize,
    /// How many are infinite.
    pub infinite: usize,
}

impl std::fmt::Display for NonFiniteGrad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "parameter {} (shape {:?}): {} NaN, {} infinite", self.index, self.shape, self.nan, self.infinite)
    }
}

/// Scales the gradients of `params` so that their joint `norm_type`-norm is at most `max_norm`,
/// and returns the norm before clipping. `norm_type` is a p > 0 (2.0 for the Euclidean norm) or
/// `f64::INFINITY` (largest magnitude). As PyTorch's `clip_grad_norm_` with its defaults: the
/// scale is `min(1, max_norm / (total_norm + 1e-6))`; parameters without a gradient are
/// skipped; a NaN norm is returned and scales every gradient to NaN, an infinite one scales
/// finite gradients to zero. To stop on a non-finite norm with a message naming the parameters,
/// use [`try_clip_grad_norm`].
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::clip_grad_norm;
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![3.0f64, 4.0], &[2]));
/// let mut grads = (w.var().square().sum() * 0.5).backward(); // gradient (3, 4), norm 5
/// let norm = clip_grad_norm(&mut grads, &[w.clone()], 1.0, 2.0);
/// assert_eq!(norm, 5.0);
/// let g = grads.get_param(&w).unwrap().to_vec();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
///
/// # Panics
/// If `norm_type` is not positive, or `max_norm` is negative or NaN.
#[track_caller]
pub fn clip_grad_norm<F: Float>(grads: &mut Grads<F>, params: &[Param<F>], max_norm: f64, norm_type: f64) -> f64 {
    match try_clip_grad_norm(grads, params, max_norm, ClipOptions { norm_type, error_if_nonfinite: false }) {
        Ok(norm) => norm,
        Err(e) => panic!("clip_grad_norm: {e}"),
    }
}

/// [`clip_grad_norm`] with options, returning an error instead of panicking: an
/// [`OptimError::InvalidOption`] for a bad `norm_type` or `max_norm`, and, with
/// `error_if_nonfinite` (the default), an [`OptimError::NonFiniteGradNorm`] when the total norm
/// is NaN or infinite, naming each parameter whose gradient holds NaN or infinity. On error the
/// gradients are unchanged.
///
/// ```
/// use ferrograd_autograd::{Grads, Param};
/// use ferrograd_optim::{try_clip_grad_norm, ClipOptions, OptimError};
/// use ferrograd_tensor::Tensor;
/// let (a, b) = (Param::new(Tensor::<f32>::zeros(&[2])), Param::new(Tensor::<f32>::zeros(&[3])));
/// let mut grads = Grads::default();
/// grads.insert(a.id(), Tensor::from_vec(vec![1.0, 2.0], &[2]));
/// grads.insert(b.id(), Tensor::from_vec(vec![f32::NAN, 1.0, f32::INFINITY], &[3]));
/// let err = try_clip_grad_norm(&mut grads, &[a, b], 1.0, ClipOptions::default()).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "clip_grad_norm: the gradients' total 2-norm is NaN (parameter 1 (shape [3]): 1 NaN, 1 infinite); \
///      gradients left unchanged"
/// );
/// ```
pub fn try_clip_grad_norm<F: Float>(
    grads: &mut Grads<F>,
    params: &[Param<F>],
    max_norm: f64,
    options: ClipOptions,
) -> Result<f64, OptimError> {
    let norm_type = options.norm_type;
    require("clip_grad_norm", "norm_type", norm_type, norm_type > 0.0, "must be > 0 (or infinite)")?;
    require("clip_grad_norm", "max_norm", max_norm, max_norm >= 0.0, "must be >= 0")?;
    let present: Vec<_> =
        params.iter().enumerate().filter_map(|(i, p)| grads.get_param(p).map(|g| (i, p.id(), g))).collect();
    let total = total_norm(present.iter().map(|(_, _, g)| *g), norm_type);
    if !total.is_finite() && options.error_if_nonfinite {
        let offenders = present
            .iter()
            .filter_map(|(index, _, g)| {
                let values = dense(g);
                let nan = values.iter().filter(|x| x.is_nan()).count();
                let infinite = values.iter().filter(|x| x.is_infinite()).count();
                (nan + infinite > 0).then(|| NonFiniteGrad { index: *index, shape: g.shape().to_vec(), nan, infinite })
            })
            .collect();
        return Err(OptimError::NonFiniteGradNorm { norm: total, norm_type, params: offenders });
    }
    // `if` rather than `f64::min`, which would turn a NaN coefficient into 1 and leave the
    // gradients as they were.
    let coef = max_norm / (total + 1e-6);
    let coef = if coef > 1.0 { 1.0 } else { coef };
    let ids: Vec<_> = present.into_iter().map(|(_, id, _)| id).collect();
    for id in ids {
        let mut g = grads.remove(id).expect("present above");
        g.mul_scalar_(F::from_f64(coef));
        grads.insert(id, g);
    }
    Ok(total)
}

/// The `norm_type`-norm of all elements of `grads` together: NaN if any is NaN, infinite if
/// any is infinite. Powers are summed in f64 in one pass; should the sum overflow from finite
/// elements (|x| above 1e154 in f64), it is summed again scaled by the largest magnitude, so
/// that the norm is as exact as PyTorch's.
fn total_norm<'a, F: Float>(grads: impl Iterator<Item = &'a Tensor<F>> + Clone, norm_type: f64) -> f64 {
    let power = |a: f64| if norm_type == 2.0 { a * a } else { a.powf(norm_type) };
    let (mut largest, mut sum) = (0.0f64, 0.0f64);
    for g in grads.clone() {
        for &x in dense(g).iter() {
            let a = Element::to_f64(x).abs();
            // Not `f64::max`, which drops a NaN: the norm must carry it, as PyTorch's does.
            if a > largest || a.is_nan() {
                largest = a;
            }
            if norm_type != f64::INFINITY {
                sum += power(a);
            }
        }
        if largest.is_nan() {
            return f64::NAN;
        }
    }
    if norm_type == f64::INFINITY || !largest.is_finite() {
        return largest;
    }
    if sum.is_finite() {
        return sum.powf(1.0 / norm_type);
    }
    let mut scaled = 0.0f64;
    for g in grads {
        for &x in dense(g).iter() {
            scaled += power(Element::to_f64(x).abs() / largest);
        }
    }
    largest * scaled.powf(1.0 / norm_type)
}

/// Clamps every gradient element of `params` to `[-clip, clip]` (NaN stays NaN, as in PyTorch).
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::clip_grad_value;
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![3.0f32, -0.5], &[2]));
/// let mut grads = (w.var().square().sum() * 0.5).backward();
/// clip_grad_value(&mut grads, &[w.clone()], 1.0);
/// assert_eq!(grads.get_param(&w).unwrap().to_vec(), vec![1.0, -0.5]);
/// ```
pub fn clip_grad_value<F: Float>(grads: &mut Grads<F>, params: &[Param<F>], clip: f64) {
    let c = F::from_f64(clip);
    for p in params {
        if let Some(mut g) = grads.remove(p.id()) {
            g.clamp_(-c, c);
            grads.insert(p.id(), g);
        }
    }
}
