//! Finite-difference checks of gradients: `gradcheck` compares every entry of the Jacobian an op
//! reports through backward with central differences, and `gradgradcheck` does the same for the
//! gradient of the gradient. Both are public: users check their own ops and models with them.

use std::fmt;

use ferrograd_tensor::Tensor;

use crate::backward::{grad_with, BackwardOptions};
use crate::mode::{enable_grad, no_grad};
use crate::Var;

/// Tolerances of [`gradcheck_with`]: an entry passes when
/// `|analytic - numeric| <= atol + rtol * |numeric|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcheckOptions {
    /// Step of the central differences.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    /// PyTorch's defaults: eps 1e-6, atol 1e-5, rtol 1e-3.
    fn default() -> Self {
        GradcheckOptions { eps: 1e-6, atol: 1e-5, rtol: 1e-3 }
    }
}

/// The first Jacobian entry where backward and finite differences disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckError {
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// The element of that input, as a multi-index.
    pub input_index: Vec<usize>,
    /// The element of the output, as a multi-index.
    pub output_index: Vec<usize>,
    /// The derivative backward reported.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
}

impl fmt::Display for GradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck: d output{:?} / d input {} {:?}: analytic {} but numeric {}",
            self.output_index, self.input, self.input_index, self.analytic, self.numeric
        )
    }
}

impl std::error::Error for GradcheckError {}

// The three helpers below are shared with ferrograd-nn's module checks (`nn::check`), which
// perturb parameters and inputs the same way; they are not part of the documented API.

/// The multi-index of flat row-major position `i` in `shape`.
#[doc(hidden)]
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Inputs whose layout repeats elements (broadcast views) are made contiguous: a perturbation
/// must move one logical element, not every element that shares its storage.
#[doc(hidden)]
pub fn perturbable(t: &Tensor<f64>) -> Tensor<f64> {
    let repeats = t.strides().iter().zip(t.shape()).any(|(&s, &d)| s == 0 && d > 1);
    if repeats {
        t.contiguous()
    } else {
        t.clone()
    }
}

/// `t` with one logical element moved by `delta`, in the same layout (so the op under test
/// still sees strided inputs).
#[doc(hidden)]
pub fn nudged(t: &Tensor<f64>, idx: &[usize], delta: f64) -> Tensor<f64> {
    let mut storage = t.storage().to_vec();
    storage[t.layout().index_of(idx)] += delta;
    Tensor::from_parts(storage, t.layout().clone()).expect("same layout over a same-sized storage")
}

/// Checks the gradients of `f` at `inputs` against central differences, with default tolerances.
///
/// `f` receives one leaf per input (in the inputs' own layouts, except broadcast views, which are
/// made contiguous) and may return any shape: every entry of the Jacobian is compared.
///
/// ```
/// use ferrograd_autograd::check::gradcheck;
/// use ferrograd_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[3]);
/// gradcheck(|v| v[0].sin().mul(&v[0]), &[x]).unwrap();
/// ```
pub fn gradcheck(f: impl Fn(&[Var<f64>]) -> Var<f64>, inputs: &[Tensor<f64>]) -> Result<(), GradcheckError> {
    gradcheck_with(f, inputs, &GradcheckOptions::default())
}

/// [`gradcheck`] with explicit tolerances.
pub fn gradcheck_with(
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    opts: &GradcheckOptions,
) -> Result<(), GradcheckError> {
    let inputs: Vec<Tensor<f64>> = inputs.iter().map(perturbable).collect();
    let leaves: Vec<Var<f64>> = inputs.iter().map(|t| Var::leaf(t.clone())).collect();
    let y = f(&leaves);
    let out_shape = y.shape().to_vec();
    let n_out = y.numel();

    // analytic[i][o * n_in + e]: d output o / d element e of input i, one backward per output.
    let mut analytic: Vec<Vec<f64>> = inputs.iter().map(|t| vec![0.0; n_out * t.numel()]).collect();
    if y.requires_grad() {
        for o in 0..n_out {
            let seed = Tensor::from_fn(&out_shape, |j| if j == o { 1.0 } else { 0.0 });
            let opts = BackwardOptions { retain_graph: true, create_graph: false };
            let grads = grad_with(std::slice::from_ref(&y), &leaves, Some(&[Var::constant(seed)]), opts);
            for (i, g) in grads.into_iter().enumerate() {
                if let Some(g) = g {
                    let n_in = inputs[i].numel();
                    analytic[i][o * n_in..(o + 1) * n_in].copy_from_slice(&g.to_vec());
                }
            }
        }
    }

    for (i, t) in inputs.iter().enumerate() {
        let n_in = t.numel();
        for e in 0..n_in {
            let idx = unravel(e, t.shape());
            let eval = |delta: f64| {
                let args: Vec<Var<f64>> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, u)| Var::constant(if k == i { nudged(u, &idx, delta) } else { u.clone() }))
                    .collect();
                no_grad(|| f(&args)).to_vec()
            };
            let (plus, minus) = (eval(opts.eps), eval(-opts.eps));
            for o in 0..n_out {
                let numeric = (plus[o] - minus[o]) / (2.0 * opts.eps);
                let a = analytic[i][o * n_in + e];
                // Written so that a NaN on either side counts as a failure.
                let close = (a - numeric).abs() <= opts.atol + opts.rtol * numeric.abs();
                if !close {
                    return Err(GradcheckError {
                        input: i,
                        input_index: idx,
                        output_index: unravel(o, &out_shape),
                        analytic: a,
                        numeric,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Checks second derivatives: runs [`gradcheck`] on the map from the inputs and a fixed random
/// output gradient `u` to the vector-Jacobian product `uᵀ J`, computed with `create_graph`.
///
/// ```
/// use ferrograd_autograd::check::gradgradcheck;
/// use ferrograd_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[3]);
/// gradgradcheck(|v| v[0].exp().mul(&v[0]), &[x]).unwrap();
/// ```
pub fn gradgradcheck(f: impl Fn(&[Var<f64>]) -> Var<f64>, inputs: &[Tensor<f64>]) -> Result<(), GradcheckError> {
    gradgradcheck_with(f, inputs, &GradcheckOptions::default())
}

/// [`gradgradcheck`] with explicit tolerances.
pub fn gradgradcheck_with(
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    inputs: &[Tensor<f64>],
    opts: &GradcheckOptions,
) -> Result<(), GradcheckError> {
    let out_shape =
        no_grad(|| f(&inputs.iter().map(|t| Var::constant(t.clone())).collect::<Vec<_>>())).shape().to_vec();
    // A fixed, irregular output gradient: deterministic, and with no symmetry to hide errors.
    let u = Tensor::from_fn(&out_shape, |j| ((j as f64 + 1.0) * 0.618_034).fract() * 2.0 - 0.7);
    let n = inputs.len();
    let vjp = |vars: &[Var<f64>]| {
        // Finite differences call this under no_grad with constants: the first derivative must
        // still be taken, so record it here and make sure the inputs are leaves.
        enable_grad(|| {
            let xs: Vec<Var<f64>> = vars[..n]
                .iter()
                .map(|x| if x.requires_grad() { x.clone() } else { Var::leaf(x.data().clone()) })
                .collect();
            let (xs, u) = (xs.as_slice(), &vars[n..]);
            let y = f(xs);
            let opts = BackwardOptions { retain_graph: true, create_graph: true };
            let grads = grad_with(&[y], xs, Some(u), opts);
            let flat: Vec<Var<f64>> = grads
                .into_iter()
                .zip(xs)
                .map(|(g, x)| g.unwrap_or_else(|| Var::constant(Tensor::zeros(x.shape()))).reshape(&[x.numel()]))
                .collect();
            let refs: Vec<&Var<f64>> = flat.iter().collect();
            Var::cat(&refs, 0)
        })
    };
    let mut all: Vec<Tensor<f64>> = inputs.to_vec();
    all.push(u);
    gradcheck_with(vjp, &all, opts)
}
