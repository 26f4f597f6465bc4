//! Loss functions and weight penalties, as differentiable [`Var`] computations.
//!
//! Each loss takes the model's output (and a target) as `Var`s and returns a `Var`, so
//! `loss.backward()` reaches the parameters. Names, formulas and defaults follow
//! `torch.nn.functional`: the short form (`cross_entropy(&logits, &targets)`) uses PyTorch's
//! defaults, the `_with` form takes an options struct with [`Default`]. Shape mismatches between
//! input and target are programming errors and panic naming the loss and both shapes.
//!
//! Everything that can overflow is computed in log space: cross-entropy goes through
//! `log_softmax`, BCE-with-logits through `softplus`, so logits of ±1e4 give finite losses and
//! finite gradients.
//!
//! ```
//! use ferrograd_autograd::Var;
//! use ferrograd_nn::loss::cross_entropy;
//! use ferrograd_tensor::Tensor;
//! let logits = Var::leaf(Tensor::from_vec(vec![2.0f32, 0.5, -1.0, 0.1, 0.2, 3.0], &[2, 3]));
//! let targets = Tensor::from_vec(vec![0i64, 2], &[2]);
//! let loss = cross_entropy(&logits, &targets);
//! let grads = loss.backward();
//! assert!(loss.item() > 0.0);
//! assert_eq!(grads.get(&logits).unwrap().shape(), &[2, 3]);
//! ```

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Element, Float, Tensor};

/// How per-element losses are combined, as PyTorch's `reduction` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Keep one loss per element (per sample for cross-entropy and NLL).
    None,
    /// Average (for class-index targets with `ignore_index`: over the non-ignored samples).
    #[default]
    Mean,
    /// Sum.
    Sum,
}

fn c<F: Float>(v: f64) -> F {
    <F as Element>::from_f64(v)
}

#[track_caller]
fn reduce<F: Float>(loss: Var<F>, reduction: Reduction) -> Var<F> {
    match reduction {
        Reduction::None => loss,
        Reduction::Mean => loss.mean(),
        Reduction::Sum => loss.sum(),
    }
}

#[track_caller]
fn same_shape(op: &str, a: &[usize], b: &[usize]) {
    assert_eq!(a, b, "{op}: input shape {a:?} and target shape {b:?} differ");
}

/// Mean squared error `mean((input - target)²)`.
#[track_caller]
pub fn mse_loss<F: Float>(input: &Var<F>, target: &Var<F>) -> Var<F> {
    mse_loss_with(input, target, Reduction::Mean)
}

/// Squared error `(input - target)²` with a chosen reduction.
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn mse_loss_with<F: Float>(input: &Var<F>, target: &Var<F>, reduction: Reduction) -> Var<F> {
    same_shape("mse_loss", input.shape(), target.shape());
    reduce((input - target).square(), reduction)
}

/// Mean absolute error `mean(|input - target|)`.
#[track_caller]
pub fn l1_loss<F: Float>(input: &Var<F>, target: &Var<F>) -> Var<F> {
    l1_loss_with(input, target, Reduction::Mean)
}

/// Absolute error `|input - target|` with a chosen reduction.
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn l1_loss_with<F: Float>(input: &Var<F>, target: &Var<F>, reduction: Reduction) -> Var<F> {
    same_shape("l1_loss", input.shape(), target.shape());
    reduce((input - target).abs(), reduction)
}

/// Options of [`smooth_l1_loss_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmoothL1Options {
    /// Where the loss switches from quadratic to linear (PyTorch's default 1.0; 0 gives L1).
    pub beta: f64,
    /// How the per-element losses are combined.
    pub reduction: Reduction,
}

impl Default for SmoothL1Options {
    fn default() -> Self {
        SmoothL1Options { beta: 1.0, reduction: Reduction::Mean }
    }
}

/// Smooth L1 (Huber-like) loss with `beta = 1`, averaged.
#[track_caller]
pub fn smooth_l1_loss<F: Float>(input: &Var<F>, target: &Var<F>) -> Var<F> {
    smooth_l1_loss_with(input, target, &SmoothL1Options::default())
}

/// Smooth L1 loss: `0.5 d² / beta` where `|d| < beta`, else `|d| - 0.5 beta`, with
/// `d = input - target`.
///
/// # Panics
/// If the shapes differ or `beta` is negative.
#[track_caller]
pub fn smooth_l1_loss_with<F: Float>(input: &Var<F>, target: &Var<F>, opts: &SmoothL1Options) -> Var<F> {
    same_shape("smooth_l1_loss", input.shape(), target.shape());
    assert!(opts.beta >= 0.0, "smooth_l1_loss: beta must be >= 0, got {}", opts.beta);
    let d = input - target;
    let abs = d.abs();
    let loss = if opts.beta == 0.0 {
        abs
    } else {
        let quadratic = d.square().mul_scalar(c(0.5 / opts.beta));
        let linear = abs.sub_scalar(c(0.5 * opts.beta));
        Var::where_(&abs.data().lt_scalar(c(opts.beta)), &quadratic, &linear)
    };
    reduce(loss, opts.reduction)
}

/// Options of [`cross_entropy_with`], [`cross_entropy_probs_with`] and [`nll_loss_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOptions {
    /// How the per-sample losses are combined.
    pub reduction: Reduction,
    /// Mixes the target with the uniform distribution: `(1 - ε) target + ε / C` (0 to 1; NLL
    /// ignores it).
    pub label_smoothing: f64,
    /// A class-index target equal to this contributes nothing and is left out of the mean
    /// (PyTorch's default -100; `None` to treat every value as a class). Unused for
    /// probability targets.
    pub ignore_index: Option<i64>,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { reduction: Reduction::Mean, label_smoothing: 0.0, ignore_index: Some(-100) }
    }
}

/// Cross-entropy between logits `[N, C]` (or `[N, C, d1, ..]`) and class indices `[N]` (or
/// `[N, d1, ..]`), averaged over the samples.
#[track_caller]
pub fn cross_entropy<F: Float>(logits: &Var<F>, targets: &Tensor<i64>) -> Var<F> {
    cross_entropy_with(logits, targets, &CrossEntropyOptions::default())
}

/// Cross-entropy from logits and class indices, with label smoothing, reduction and
/// ignore_index, as `torch.nn.functional.cross_entropy`.
///
/// # Panics
/// If the target shape is not the logits' shape without dim 1, a target is out of `0..C` (and
/// not `ignore_index`), or `label_smoothing` is outside `[0, 1]`.
#[track_caller]
pub fn cross_entropy_with<F: Float>(logits: &Var<F>, targets: &Tensor<i64>, opts: &CrossEntropyOptions) -> Var<F> {
    check_smoothing("cross_entropy", opts.label_smoothing);
    check_class_dims("cross_entropy", logits.shape(), targets.shape());
    let log_probs = logits.log_softmax(1);
    indexed_loss("cross_entropy", &log_probs, targets, opts.label_smoothing, opts)
}

/// Negative log-likelihood of class indices under log-probabilities `[N, C]` (or
/// `[N, C, d1, ..]`), averaged: `-mean(log_probs[i, target[i]])`.
#[track_caller]
pub fn nll_loss<F: Float>(log_probs: &Var<F>, targets: &Tensor<i64>) -> Var<F> {
    nll_loss_with(log_probs, targets, &CrossEntropyOptions::default())
}

/// NLL loss with reduction and ignore_index (`label_smoothing` is not used).
///
/// # Panics
/// As [`cross_entropy_with`].
#[track_caller]
pub fn nll_loss_with<F: Float>(log_probs: &Var<F>, targets: &Tensor<i64>, opts: &CrossEntropyOptions) -> Var<F> {
    indexed_loss("nll_loss", log_probs, targets, 0.0, opts)
}

#[track_caller]
fn check_smoothing(op: &str, eps: f64) {
    assert!((0.0..=1.0).contains(&eps), "{op}: label_smoothing must be in [0, 1], got {eps}");
}

#[track_caller]
fn check_class_dims(op: &str, input: &[usize], target: &[usize]) {
    assert!(input.len() >= 2, "{op}: input must be [N, C, ..], got shape {input:?}");
    let mut expected = input.to_vec();
    expected.remove(1);
    assert_eq!(expected, target, "{op}: input shape {input:?} needs target shape {expected:?}, got {target:?}");
}

/// The per-sample loss `-(1 - ε) logp[target] - ε/C Σ_c logp[c]` of class-index targets, with
/// ignored samples masked out of both the sum and the mean's count.
#[track_caller]
fn indexed_loss<F: Float>(
    op: &str,
    log_probs: &Var<F>,
    targets: &Tensor<i64>,
    eps: f64,
    opts: &CrossEntropyOptions,
) -> Var<F> {
    check_class_dims(op, log_probs.shape(), targets.shape());
    let classes = log_probs.shape()[1];
    let ignored = match opts.ignore_index {
        Some(ig) => targets.eq_scalar(ig),
        None => Tensor::full(targets.shape(), false),
    };
    for (t, skip) in targets.to_vec().into_iter().zip(ignored.to_vec()) {
        assert!(skip || (0..classes as i64).contains(&t), "{op}: target {t} is out of range for {classes} classes");
    }
    let safe = targets.masked_fill(&ignored, 0).unsqueeze(1);
    let picked = log_probs.gather(1, &safe).squeeze_dim(1);
    let mut loss = picked.neg();
    if eps > 0.0 {
        let uniform = log_probs.sum_dims(&[1], false).mul_scalar(c(-eps / classes as f64));
        loss = loss.mul_scalar(c(1.0 - eps)).add(&uniform);
    }
    let any_ignored = ignored.any();
    if any_ignored {
        loss = loss.masked_fill(&ignored, F::zero());
    }
    match opts.reduction {
        Reduction::Mean if any_ignored => {
            let kept = ignored.to_vec().iter().filter(|&&s| !s).count();
            loss.sum().div_scalar(c(kept as f64))
        }
        r => reduce(loss, r),
    }
}

/// Cross-entropy between logits `[N, C, ..]` and target probabilities of the same shape,
/// averaged over the samples.
#[track_caller]
pub fn cross_entropy_probs<F: Float>(logits: &Var<F>, target_probs: &Var<F>) -> Var<F> {
    cross_entropy_probs_with(logits, target_probs, &CrossEntropyOptions::default())
}

/// Cross-entropy with probability targets: `-Σ_c t'[c] log_softmax(logits)[c]` per sample with
/// `t' = (1 - ε) t + ε / C`. Differentiable in the target too.
///
/// # Panics
/// If the shapes differ, the rank is below 2 or `label_smoothing` is outside `[0, 1]`.
#[track_caller]
pub fn cross_entropy_probs_with<F: Float>(
    logits: &Var<F>,
    target_probs: &Var<F>,
    opts: &CrossEntropyOptions,
) -> Var<F> {
    same_shape("cross_entropy_probs", logits.shape(), target_probs.shape());
    assert!(logits.rank() >= 2, "cross_entropy_probs: input must be [N, C, ..], got shape {:?}", logits.shape());
    check_smoothing("cross_entropy_probs", opts.label_smoothing);
    let eps = opts.label_smoothing;
    let classes = logits.shape()[1] as f64;
    let target = if eps > 0.0 {
        target_probs.mul_scalar(c(1.0 - eps)).add_scalar(c(eps / classes))
    } else {
        target_probs.clone()
    };
    let loss = (logits.log_softmax(1) * target).sum_dims(&[1], false).neg();
    reduce(loss, opts.reduction)
}

/// Options of [`binary_cross_entropy_with_logits_with`].
#[derive(Clone, Debug, Default)]
pub struct BceWithLogitsOptions<F: Float = f32> {
    /// How the per-element losses are combined.
    pub reduction: Reduction,
    /// Weight of the positive term, broadcast against the logits (usually one per class, the
    /// last dim): `negatives / positives` balances a rare class.
    pub pos_weight: Option<Tensor<F>>,
}

/// Binary cross-entropy from logits against targets in `[0, 1]`, averaged.
#[track_caller]
pub fn binary_cross_entropy_with_logits<F: Float>(logits: &Var<F>, targets: &Var<F>) -> Var<F> {
    binary_cross_entropy_with_logits_with(logits, targets, &BceWithLogitsOptions::default())
}

/// Binary cross-entropy from logits: `-[p y log σ(x) + (1 - y) log(1 - σ(x))]` with `p` the
/// positive weight, computed as `(1 - y) x + (1 + (p - 1) y) softplus(-x)` so that it stays
/// finite for any logit. Differentiable in the targets too.
///
/// # Panics
/// If the shapes differ, or `pos_weight` does not broadcast to them.
#[track_caller]
pub fn binary_cross_entropy_with_logits_with<F: Float>(
    logits: &Var<F>,
    targets: &Var<F>,
    opts: &BceWithLogitsOptions<F>,
) -> Var<F> {
    same_shape("binary_cross_entropy_with_logits", logits.shape(), targets.shape());
    if let Some(pw) = &opts.pos_weight {
        assert!(
            pw.layout().broadcast_strides(targets.shape()).is_some(),
            "binary_cross_entropy_with_logits: pos_weight shape {:?} does not broadcast to target shape {:?}",
            pw.shape(),
            targets.shape()
        );
    }
    let neg_part = targets.rsub_scalar(F::one()) * logits;
    let softplus_neg = logits.neg().softplus();
    let loss = match &opts.pos_weight {
        None => neg_part + softplus_neg,
        Some(pw) => {
            let weight = (targets * &Var::constant(pw.sub_scalar(F::one()))).add_scalar(F::one());
            neg_part + weight * softplus_neg
        }
    };
    reduce(loss, opts.reduction)
}

/// The reductions of [`kl_div_with`]: PyTorch's, plus `BatchMean` (sum divided by the batch
/// size), the one that gives the mathematical KL divergence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KlReduction {
    /// One value per element.
    None,
    /// Mean over all elements (PyTorch's default, not the true KL divergence).
    #[default]
    Mean,
    /// Sum over all elements.
    Sum,
    /// Sum divided by the size of dim 0.
    BatchMean,
}

/// Options of [`kl_div_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KlDivOptions {
    /// How the per-element terms are combined.
    pub reduction: KlReduction,
    /// Whether the target holds log-probabilities instead of probabilities.
    pub log_target: bool,
}

/// KL divergence of `target` from the distribution whose log-probabilities are `input`,
/// PyTorch's `kl_div(input, target)` with its default mean reduction.
#[track_caller]
pub fn kl_div<F: Float>(input: &Var<F>, target: &Var<F>) -> Var<F> {
    kl_div_with(input, target, &KlDivOptions::default())
}

/// KL divergence, per element `t (log t - input)` (`0` where `t = 0`), or
/// `exp(t) (t - input)` when `log_target` is set. Differentiable in both arguments.
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn kl_div_with<F: Float>(input: &Var<F>, target: &Var<F>, opts: &KlDivOptions) -> Var<F> {
    same_shape("kl_div", input.shape(), target.shape());
    let loss = if opts.log_target {
        target.exp() * (target - input)
    } else {
        // t log t is taken as 0 at t = 0 (xlogy), and log is only evaluated where t > 0 so
        // that neither the value nor the gradient sees log(0).
        let positive = target.data().gt_scalar(F::zero());
        let safe = Var::where_(&positive, target, &Var::scalar(F::one()));
        let zero = Var::scalar(F::zero());
        let entropy_term = Var::where_(&positive, &(target * safe.log()), &zero);
        entropy_term - target * input
    };
    match opts.reduction {
        KlReduction::None => loss,
        KlReduction::Mean => loss.mean(),
        KlReduction::Sum => loss.sum(),
        KlReduction::BatchMean => {
            let batch = if input.rank() == 0 { 1 } else { input.shape()[0] };
            loss.sum().div_scalar(c(batch as f64))
        }
    }
}

/// `Σ |p|` over every element of every parameter, to add to a loss (times a coefficient) for
/// L1 regularisation: `loss + l1_penalty(&model.parameters()) * 1e-4`.
#[track_caller]
pub fn l1_penalty<F: Float>(params: &[Param<F>]) -> Var<F> {
    penalty(params, false)
}

/// `Σ p²` over every element of every parameter (no factor ½: with coefficient `λ` its
/// gradient is `2 λ p`, so `λ = wd / 2` matches SGD's `weight_decay = wd`).
#[track_caller]
pub fn l2_penalty<F: Float>(params: &[Param<F>]) -> Var<F> {
    penalty(params, true)
}

/// `Σ p²` (`square`) or `Σ |p|` over every element of every parameter. A loop calling the ops
/// directly (not a fold, not a function pointer), so the graph nodes record the caller's line
/// for anomaly mode.
#[track_caller]
fn penalty<F: Float>(params: &[Param<F>], square: bool) -> Var<F> {
    let mut total = Var::scalar(F::zero());
    for p in params {
        let v = p.var();
        total = total + if square { v.square() } else { v.abs() }.sum();
    }
    total
}
