//! Normalisation layers: `BatchNorm1d`, `BatchNorm2d` and `LayerNorm`, as PyTorch's.
//!
//! Batch norm in training normalises with the batch's statistics (biased variance) and moves
//! the running statistics towards them (`running = (1 - momentum) * running + momentum * batch`,
//! with the unbiased variance); in evaluation it normalises with the running statistics.
//! PyTorch's `num_batches_tracked` counter is not kept: it only matters for `momentum=None`
//! (a cumulative average), which is not offered; drop that entry when loading a PyTorch
//! state dict.

use std::sync::atomic::{AtomicBool, Ordering};

use ferrograd_autograd::{InputGrads, Param, Var};
use ferrograd_tensor::{Float, Tensor, BATCH_NORM_LONG_ROW};

use crate::Module;

/// Options of [`BatchNorm1d`] and [`BatchNorm2d`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root (default `1e-5`).
    pub eps: f64,
    /// Weight of the batch statistics in the running-statistics update (default `0.1`).
    pub momentum: f64,
    /// Whether the layer has a learned per-channel scale `weight` and shift `bias` (default `true`).
    pub affine: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { eps: 1e-5, momentum: 0.1, affine: true }
    }
}

/// The shared computation of BatchNorm1d/2d over `[N, C, ...]`.
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn batch_norm<F: Float>(
    layer: &str,
    input: &Var<F>,
    running_mean: &Param<F>,
    running_var: &Param<F>,
    weight: Option<&Var<F>>,
    bias: Option<&Var<F>>,
    training: bool,
    config: &BatchNormConfig,
) -> Var<F> {
    let c = running_mean.numel();
    let rank = input.rank();
    assert!(
        rank >= 2 && input.shape()[1] == c,
        "{layer}: input shape {:?} does not have {c} channels in dim 1",
        input.shape()
    );
    let mut stat_shape = vec![1; rank];
    stat_shape[1] = c;
    let (mean, var) = if training {
        let n = input.numel() / c.max(1);
        assert!(
            n > 1,
            "{layer}: expected more than 1 value per channel when training, got input shape {:?}",
            input.shape()
        );
        // The fused op pays on long rows (a convolution's planes); on `[N, C]` the Var ops below
        // vectorise over the channels and are faster.
        let fits = |p: Option<&Var<F>>| p.is_none_or(|p| p.shape() == [c]);
        if fits(weight) && fits(bias) && n / input.shape()[0] >= BATCH_NORM_LONG_ROW {
            return fused_batch_norm(input, (running_mean, running_var), weight, bias, config);
        }
        let dims: Vec<isize> = (0..rank as isize).filter(|&d| d != 1).collect();
        let mean = input.mean_dims(&dims, true);
        let var = input.var_dims(&dims, 0, true);
        let running = (running_mean, running_var);
        update_running(running, mean.data().reshape(&[c]), var.data().reshape(&[c]), n, config.momentum);
        (mean, var)
    } else {
        // Evaluation: `x * alpha + beta` per channel, alpha = weight / sqrt(running_var + eps)
        // and beta = bias - running_mean * alpha, as PyTorch's CPU kernel (two passes over the
        // input, not four).
        let rstd = Var::constant(running_var.value().add_scalar(F::from_f64(config.eps)).rsqrt());
        let alpha = match weight {
            Some(w) => w.reshape(&[c]) * rstd,
            None => rstd,
        };
        let shift = Var::constant(running_mean.value()) * &alpha;
        let beta = match bias {
            Some(b) => b.reshape(&[c]) - shift,
            None => -shift,
        };
        return input * alpha.reshape(&stat_shape) + beta.reshape(&stat_shape);
    };
    let normed = (input - &mean) * var.add_scalar(F::from_f64(config.eps)).rsqrt();
    let scaled = match weight {
        Some(w) => normed * w.reshape(&stat_shape),
        None => normed,
    };
    match bias {
        Some(b) => scaled + b.reshape(&stat_shape),
        None => scaled,
    }
}

/// Moves the running statistics towards a batch's: `running = (1 - momentum) running + momentum
/// batch`, with the batch's unbiased variance (`var`, biased, times `n / (n - 1)`).
fn update_running<F: Float>(
    (running_mean, running_var): (&Param<F>, &Param<F>),
    mean: Tensor<F>,
    var: Tensor<F>,
    n: usize,
    momentum: f64,
) {
    let m = F::from_f64(momentum);
    let batch_var = var.mul_scalar(F::from_f64(n as f64 / (n - 1) as f64));
    for (buffer, batch) in [(running_mean, mean), (running_var, batch_var)] {
        buffer.update(|t| {
            t.mul_scalar_(F::one() - m);
            t.add_scaled_(&batch, m);
        });
    }
}

/// Batch norm in training mode as one op: [`Tensor::batch_norm_forward`] and
/// [`Tensor::batch_norm_backward`] (two passes over the input each, against about ten for the
/// same formula in Var ops); under create_graph the backward is the same formula in Var ops.
#[track_caller]
fn fused_batch_norm<F: Float>(
    input: &Var<F>,
    running: (&Param<F>, &Param<F>),
    weight: Option<&Var<F>>,
    bias: Option<&Var<F>>,
    config: &BatchNormConfig,
) -> Var<F> {
    let c = running.0.numel();
    let eps = config.eps;
    let fwd = input.data().batch_norm_forward(weight.map(|w| w.data()), bias.map(|b| b.data()), eps);
    update_running(running, fwd.mean.clone(), fwd.var, input.numel() / c, config.momentum);
    let zero = Var::constant(Tensor::zeros(&[]));
    let (x, w, has_bias) = (input.clone(), weight.cloned(), bias.is_some());
    let (mean, rstd) = (fwd.mean, fwd.rstd);
    Var::from_op("batch_norm", fwd.out, [input, weight.unwrap_or(&zero), bias.unwrap_or(&zero)], move |ctx, g| {
        let needs = |i| ctx.needs_input_grad(i);
        if !ctx.create_graph() {
            let gr = x.data().batch_norm_backward(
                g.data(),
                &mean,
                &rstd,
                w.as_ref().map(|w| w.data()),
                w.is_some() && needs(1),
                has_bias && needs(2),
            );
            return [
                needs(0).then(|| Var::constant(gr.input)),
                gr.weight.map(Var::constant),
                gr.bias.map(Var::constant),
            ]
            .into_iter()
            .collect();
        }
        let dims: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
        let mut stat_shape = vec![1; x.rank()];
        stat_shape[1] = c;
        let w = w.as_ref().map(|w| w.reshape(&stat_shape));
        grads_in_var_ops(&x, g, w.as_ref(), (&dims, &dims), eps, [needs(0), needs(1), has_bias && needs(2)])
    })
}

/// The gradients of a normalisation `(x - mean) rstd * w + b` (statistics over `stat_dims`,
/// `w` broadcasting against `x`) in Var ops, for the fused ops' backward under create_graph: the
/// statistics are rebuilt from `x` so that their own dependence on it is recorded. `w` and `b`'s
/// gradients are summed over `param_dims`; `needs` says which of x, w and b want one.
fn grads_in_var_ops<F: Float>(
    x: &Var<F>,
    g: &Var<F>,
    w: Option<&Var<F>>,
    (stat_dims, param_dims): (&[isize], &[isize]),
    eps: f64,
    needs: [bool; 3],
) -> InputGrads<F> {
    let mu = x.mean_dims(stat_dims, true);
    let r = x.var_dims(stat_dims, 0, true).add_scalar(F::from_f64(eps)).rsqrt();
    let xhat = &(x - &mu) * &r;
    let gw = match w {
        Some(w) => g * w,
        None => g.clone(),
    };
    let dx = needs[0].then(|| {
        let mean_g = gw.mean_dims(stat_dims, true);
        let mean_gx = (&gw * &xhat).mean_dims(stat_dims, true);
        &r * &(&(&gw - &mean_g) - &(&xhat * &mean_gx))
    });
    let dw = w.filter(|_| needs[1]).map(|_| (g * &xhat).sum_dims(param_dims, false));
    let db = needs[2].then(|| g.sum_dims(param_dims, false));
    [dx, dw, db].into_iter().collect()
}

macro_rules! batch_norm_layer {
    ($name:ident, $ranks:expr, $shapes:literal, $example_shape:expr) => {
        #[doc = concat!("Batch normalisation over ", $shapes, " inputs, as `torch.nn.", stringify!($name), "`.")]
        ///
        /// Starts in training mode; `weight` starts at 1, `bias` at 0, `running_mean` at 0 and
        /// `running_var` at 1.
        ///
        /// ```
        /// use ferrograd_autograd::Var;
        #[doc = concat!("use ferrograd_nn::{layers::", stringify!($name), ", Module};")]
        /// use ferrograd_tensor::Tensor;
        #[doc = concat!("let bn = ", stringify!($name), "::<f32>::new(3);")]
        #[doc = concat!("let x = Var::constant(Tensor::arange(0.0, 24.0, 1.0).reshape(&", stringify!($example_shape), "));")]
        /// let y = bn.forward(&x);
        /// assert!(y.mean().item().abs() < 1e-5);
        /// bn.eval();
        /// assert!(!bn.is_training());
        /// ```
        #[derive(Debug, Module)]
        pub struct $name<F: Float = f32> {
            /// Per-channel scale `[C]`, if affine.
            pub weight: Option<Param<F>>,
            /// Per-channel shift `[C]`, if affine.
            pub bias: Option<Param<F>>,
            /// Running mean `[C]` (a buffer).
            #[module(buffer)]
            pub running_mean: Param<F>,
            /// Running (unbiased) variance `[C]` (a buffer).
            #[module(buffer)]
            pub running_var: Param<F>,
            #[module(skip)]
            config: BatchNormConfig,
            #[module(training)]
            training: AtomicBool,
        }

        impl<F: Float> $name<F> {
            /// A layer over `num_features` channels with PyTorch's defaults.
            pub fn new(num_features: usize) -> Self {
                Self::with_config(num_features, BatchNormConfig::default())
            }

            /// A layer with explicit options.
            pub fn with_config(num_features: usize, config: BatchNormConfig) -> Self {
                let c = [num_features];
                $name {
                    weight: config.affine.then(|| Param::new(Tensor::ones(&c))),
                    bias: config.affine.then(|| Param::new(Tensor::zeros(&c))),
                    running_mean: Param::new(Tensor::zeros(&c)),
                    running_var: Param::new(Tensor::ones(&c)),
                    config,
                    training: AtomicBool::new(true),
                }
            }

            /// The options.
            pub fn config(&self) -> &BatchNormConfig {
                &self.config
            }

            /// Whether the layer is in training mode.
            pub fn is_training(&self) -> bool {
                self.training.load(Ordering::Relaxed)
            }

            /// The forward pass with explicit `weight` and `bias` values (the running
            /// statistics are still this layer's, and are updated in training mode).
            #[track_caller]
            pub fn forward_with(&self, input: &Var<F>, weight: Option<&Var<F>>, bias: Option<&Var<F>>) -> Var<F> {
                assert!(
                    $ranks.contains(&input.rank()),
                    concat!(stringify!($name), ": expected ", $shapes, " input, got shape {:?}"),
                    input.shape()
                );
                batch_norm(
                    stringify!($name),
                    input,
                    &self.running_mean,
                    &self.running_var,
                    weight,
                    bias,
                    self.is_training(),
                    &self.config,
                )
            }
        }

        impl<F: Float> $name<F> {
            /// The forward pass with the layer's own parameters (also [`Module::forward`]).
            #[track_caller]
            pub fn forward(&self, input: &Var<F>) -> Var<F> {
                let weight = self.weight.as_ref().map(Param::var);
                let bias = self.bias.as_ref().map(Param::var);
                self.forward_with(input, weight.as_ref(), bias.as_ref())
            }
        }
    };
}

batch_norm_layer!(BatchNorm1d, [2usize, 3], "`[N, C]` or `[N, C, L]`", [2, 3, 4]);
batch_norm_layer!(BatchNorm2d, [4usize], "`[N, C, H, W]`", [2, 3, 2, 2]);

/// Options of [`LayerNorm`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormConfig {
    /// Added to the variance before the square root (default `1e-5`).
    pub eps: f64,
    /// Whether the layer has a learned elementwise `weight` (and `bias`) (default `true`).
    pub elementwise_affine: bool,
    /// Whether an affine layer also has a `bias` (default `true`).
    pub bias: bool,
}

impl Default for LayerNormConfig {
    fn default() -> Self {
        LayerNormConfig { eps: 1e-5, elementwise_affine: true, bias: true }
    }
}

/// Layer normalisation over the trailing `normalized_shape` dimensions, as `torch.nn.LayerNorm`:
/// each sample is normalised with its own mean and biased variance, then scaled and shifted
/// elementwise. Same in training and evaluation.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::LayerNorm, Module};
/// use ferrograd_tensor::Tensor;
/// let ln = LayerNorm::<f64>::new(&[4]);
/// let y = ln.forward(&Var::constant(Tensor::arange(0.0, 8.0, 1.0).reshape(&[2, 4])));
/// assert!(y.sum_dims(&[1], false).to_vec().iter().all(|s| s.abs() < 1e-9));
/// ```
#[derive(Debug, Module)]
pub struct LayerNorm<F: Float = f32> {
    /// Elementwise scale of shape `normalized_shape`, if affine.
    pub weight: Option<Param<F>>,
    /// Elementwise shift of shape `normalized_shape`, if affine with bias.
    pub bias: Option<Param<F>>,
    #[module(skip)]
    normalized_shape: Vec<usize>,
    #[module(skip)]
    eps: f64,
}

impl<F: Float> LayerNorm<F> {
    /// A layer over trailing dimensions `normalized_shape`, weight 1 and bias 0.
    pub fn new(normalized_shape: &[usize]) -> Self {
        Self::with_config(normalized_shape, LayerNormConfig::default())
    }

    /// A layer with explicit options.
    pub fn with_config(normalized_shape: &[usize], config: LayerNormConfig) -> Self {
        let affine = config.elementwise_affine;
        LayerNorm {
            weight: affine.then(|| Param::new(Tensor::ones(normalized_shape))),
            bias: (affine && config.bias).then(|| Param::new(Tensor::zeros(normalized_shape))),
            normalized_shape: normalized_shape.to_vec(),
            eps: config.eps,
        }
    }

    /// The trailing shape normalised over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The forward pass with explicit `weight` and `bias` values.
    ///
    /// # Panics
    /// If the input's shape does not end with `normalized_shape`.
    #[track_caller]
    pub fn forward_with(&self, input: &Var<F>, weight: Option<&Var<F>>, bias: Option<&Var<F>>) -> Var<F> {
        let k = self.normalized_shape.len();
        assert!(
            input.rank() >= k && input.shape()[input.rank() - k..] == self.normalized_shape[..],
            "LayerNorm: input shape {:?} does not end with normalized_shape {:?}",
            input.shape(),
            self.normalized_shape
        );
        let n: usize = self.normalized_shape.iter().product();
        let fits = |p: Option<&Var<F>>| p.is_none_or(|p| p.shape() == &self.normalized_shape[..]);
        if n > 0 && input.numel() > 0 && fits(weight) && fits(bias) {
            return fused_layer_norm(input, k, weight, bias, self.eps);
        }
        composed_layer_norm(input, k, weight, bias, self.eps)
    }
}

/// Layer norm over the last `k` dims in Var ops (broadcasting weights, empty inputs, and the
/// fused op's create_graph backward).
fn composed_layer_norm<F: Float>(
    input: &Var<F>,
    k: usize,
    weight: Option<&Var<F>>,
    bias: Option<&Var<F>>,
    eps: f64,
) -> Var<F> {
    let dims: Vec<isize> = (input.rank() - k..input.rank()).map(|d| d as isize).collect();
    let mean = input.mean_dims(&dims, true);
    let var = input.var_dims(&dims, 0, true);
    let normed = (input - &mean) * var.add_scalar(F::from_f64(eps)).rsqrt();
    let scaled = match weight {
        Some(w) => normed * w,
        None => normed,
    };
    match bias {
        Some(b) => scaled + b,
        None => scaled,
    }
}

/// Layer norm over the last `k` dims as one op: [`Tensor::layer_norm_forward`] and
/// [`Tensor::layer_norm_backward`] (one pass each over the rows); under create_graph the
/// backward is the same formula in Var ops.
#[track_caller]
fn fused_layer_norm<F: Float>(
    input: &Var<F>,
    k: usize,
    weight: Option<&Var<F>>,
    bias: Option<&Var<F>>,
    eps: f64,
) -> Var<F> {
    let n = input.shape()[input.rank() - k..].iter().product();
    let fwd = input.data().layer_norm_forward(n, weight.map(|w| w.data()), bias.map(|b| b.data()), eps);
    let zero = Var::constant(Tensor::zeros(&[]));
    let (x, w, has_bias) = (input.clone(), weight.cloned(), bias.is_some());
    let (mean, rstd) = (fwd.mean, fwd.rstd);
    Var::from_op("layer_norm", fwd.out, [input, weight.unwrap_or(&zero), bias.unwrap_or(&zero)], move |ctx, g| {
        let needs = |i| ctx.needs_input_grad(i);
        if !ctx.create_graph() {
            let gr = x.data().layer_norm_backward(
                g.data(),
                &mean,
                &rstd,
                w.as_ref().map(|w| w.data()),
                needs(1),
                has_bias && needs(2),
            );
            let pshape = |p: &Var<F>| p.shape().to_vec();
            return [
                needs(0).then(|| Var::constant(gr.input)),
                gr.weight.and_then(|t| w.as_ref().map(|w| Var::constant(t.reshape(&pshape(w))))),
                gr.bias.map(|t| Var::constant(t.reshape(&pshape(&x)[x.rank() - k..]))),
            ]
            .into_iter()
            .collect();
        }
        let dims: Vec<isize> = (x.rank() - k..x.rank()).map(|d| d as isize).collect();
        let lead: Vec<isize> = (0..x.rank() - k).map(|d| d as isize).collect();
        grads_in_var_ops(&x, g, w.as_ref(), (&dims, &lead), eps, [needs(0), needs(1), has_bias && needs(2)])
    })
}

impl<F: Float> LayerNorm<F> {
    /// The forward pass with the layer's own parameters (also [`Module::forward`]).
    ///
    /// # Panics
    /// If the input's shape does not end with `normalized_shape`.
    #[track_caller]
    pub fn forward(&self, input: &Var<F>) -> Var<F> {
        let weight = self.weight.as_ref().map(Param::var);
        let bias = self.bias.as_ref().map(Param::var);
        self.forward_with(input, weight.as_ref(), bias.as_ref())
    }
}
