//! Gradient clipping by global norm and by value (`torch.nn.utils.clip_grad_norm_`,
//! `clip_grad_value_`), applied to [`Grads`] before the optimizer step.

use ferrograd_autograd::{Grads, Param};
use ferrograd_tensor::{Element, Float};

use crate::kernel::dense;

/// Scales the gradients of `params` so that their joint `norm_type`-norm is at most `max_norm`,
/// and returns the norm before clipping. `norm_type` is a p ≥ 1 (2.0 for the Euclidean norm) or
/// `f64::INFINITY` (largest magnitude). As PyTorch: the scale is
/// `min(1, max_norm / (total_norm + 1e-6))`; parameters without a gradient are skipped.
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
/// If `norm_type` is not finite-and-positive or infinite.
pub fn clip_grad_norm<F: Float>(grads: &mut Grads<F>, params: &[Param<F>], max_norm: f64, norm_type: f64) -> f64 {
    assert!(norm_type > 0.0, "clip_grad_norm: norm_type must be positive or infinite, got {norm_type}");
    let present: Vec<_> = params.iter().filter_map(|p| grads.get_param(p).map(|g| (p.id(), g))).collect();
    let (mut acc, inf) = (0.0f64, norm_type == f64::INFINITY);
    for (_, g) in &present {
        for &x in dense(g).iter() {
            let a = Element::to_f64(x).abs();
            acc = if inf {
                acc.max(a)
            } else if norm_type == 2.0 {
                acc + a * a
            } else {
                acc + a.powf(norm_type)
            };
        }
    }
    let total = if inf { acc } else { acc.powf(1.0 / norm_type) };
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    let ids: Vec<_> = present.into_iter().map(|(id, _)| id).collect();
    for id in ids {
        let mut g = grads.remove(id).expect("present above");
        g.mul_scalar_(F::from_f64(coef));
        grads.insert(id, g);
    }
    total
}

/// Clamps every gradient element of `params` to `[-clip, clip]`.
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
