//! `Conv1d` and `Conv2d`, as `torch.nn.Conv1d` / `torch.nn.Conv2d` (cross-correlation over
//! `[N, C, L]` / `[N, C, H, W]` inputs).

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Conv1dOptions, Conv2dOptions, Float};
use rand::Rng;

use super::{default_bias, default_weight};
use crate::Module;

/// Options of [`Conv2d`]: PyTorch's defaults are stride 1, padding 0, dilation 1, one group and
/// a bias.
///
/// ```
/// use ferrograd_nn::layers::Conv2dConfig;
/// let c = Conv2dConfig { padding: [1, 1], ..Default::default() };
/// assert!(c.bias);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output positions (height, width).
    pub stride: [usize; 2],
    /// Zeros added on both sides (height, width).
    pub padding: [usize; 2],
    /// Spacing between kernel taps (height, width).
    pub dilation: [usize; 2],
    /// Channel groups; `in_channels` and `out_channels` must be divisible by it.
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, bias: true }
    }
}

/// Options of [`Conv1d`], as [`Conv2dConfig`] along one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dConfig {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on both sides.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups; `in_channels` and `out_channels` must be divisible by it.
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
}

impl Default for Conv1dConfig {
    fn default() -> Self {
        Conv1dConfig { stride: 1, padding: 0, dilation: 1, groups: 1, bias: true }
    }
}

#[track_caller]
fn check_groups(layer: &str, in_channels: usize, out_channels: usize, groups: usize) {
    assert!(
        groups > 0 && in_channels.is_multiple_of(groups) && out_channels.is_multiple_of(groups),
        "{layer}: in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}"
    );
}

/// A 2-D convolution: `[N, in, H, W]` to `[N, out, H', W']`; `weight` is
/// `[out, in / groups, kh, kw]`.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::{Conv2d, Conv2dConfig}, Module};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let cfg = Conv2dConfig { padding: [1, 1], ..Default::default() };
/// let conv = Conv2d::<f32>::with_config(3, 8, [3, 3], cfg, &mut StdRng::seed_from_u64(0));
/// assert_eq!(conv.forward(&Var::constant(Tensor::ones(&[2, 3, 5, 5]))).shape(), &[2, 8, 5, 5]);
/// ```
#[derive(Debug, Module)]
pub struct Conv2d<F: Float = f32> {
    /// `[out, in / groups, kh, kw]`.
    pub weight: Param<F>,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Param<F>>,
    /// Stride, padding, dilation and groups.
    #[module(skip)]
    pub options: Conv2dOptions,
}

impl<F: Float> Conv2d<F> {
    /// A layer with PyTorch's default options and initialisation (kaiming_uniform(a = sqrt(5))
    /// weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) bias).
    pub fn new(in_channels: usize, out_channels: usize, kernel: [usize; 2], rng: &mut impl Rng) -> Self {
        Self::with_config(in_channels, out_channels, kernel, Conv2dConfig::default(), rng)
    }

    /// A layer with explicit options.
    ///
    /// # Panics
    /// If the channel counts are not divisible by `groups`.
    #[track_caller]
    pub fn with_config(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        config: Conv2dConfig,
        rng: &mut impl Rng,
    ) -> Self {
        check_groups("Conv2d", in_channels, out_channels, config.groups);
        let shape = [out_channels, in_channels / config.groups, kernel[0], kernel[1]];
        let weight = default_weight(&shape, rng);
        let fan_in = shape[1] * kernel[0] * kernel[1];
        let bias = config.bias.then(|| default_bias(out_channels, fan_in, rng));
        let options = Conv2dOptions {
            stride: config.stride,
            padding: config.padding,
            dilation: config.dilation,
            groups: config.groups,
        };
        Conv2d { weight, bias, options }
    }

    /// The forward pass with explicit parameter values.
    #[track_caller]
    pub fn forward_with(&self, input: &Var<F>, weight: &Var<F>, bias: Option<&Var<F>>) -> Var<F> {
        input.conv2d(weight, bias, &self.options)
    }
}

impl<F: Float> Conv2d<F> {
    /// The forward pass with the layer's own parameters (also [`Module::forward`]).
    #[track_caller]
    pub fn forward(&self, input: &Var<F>) -> Var<F> {
        let bias = self.bias.as_ref().map(Param::var);
        self.forward_with(input, &self.weight.var(), bias.as_ref())
    }
}

/// A 1-D convolution: `[N, in, L]` to `[N, out, L']`; `weight` is `[out, in / groups, k]`.
#[derive(Debug, Module)]
pub struct Conv1d<F: Float = f32> {
    /// `[out, in / groups, k]`.
    pub weight: Param<F>,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Param<F>>,
    /// Stride, padding, dilation and groups.
    #[module(skip)]
    pub options: Conv1dOptions,
}

impl<F: Float> Conv1d<F> {
    /// A layer with PyTorch's default options and initialisation.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, rng: &mut impl Rng) -> Self {
        Self::with_config(in_channels, out_channels, kernel, Conv1dConfig::default(), rng)
    }

    /// A layer with explicit options.
    ///
    /// # Panics
    /// If the channel counts are not divisible by `groups`.
    #[track_caller]
    pub fn with_config(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv1dConfig,
        rng: &mut impl Rng,
    ) -> Self {
        check_groups("Conv1d", in_channels, out_channels, config.groups);
        let shape = [out_channels, in_channels / config.groups, kernel];
        let weight = default_weight(&shape, rng);
        let bias = config.bias.then(|| default_bias(out_channels, shape[1] * kernel, rng));
        let options = Conv1dOptions {
            stride: config.stride,
            padding: config.padding,
            dilation: config.dilation,
            groups: config.groups,
        };
        Conv1d { weight, bias, options }
    }

    /// The forward pass with explicit parameter values.
    #[track_caller]
    pub fn forward_with(&self, input: &Var<F>, weight: &Var<F>, bias: Option<&Var<F>>) -> Var<F> {
        input.conv1d(weight, bias, &self.options)
    }
}

impl<F: Float> Conv1d<F> {
    /// The forward pass with the layer's own parameters (also [`Module::forward`]).
    #[track_caller]
    pub fn forward(&self, input: &Var<F>) -> Var<F> {
        let bias = self.bias.as_ref().map(Param::var);
        self.forward_with(input, &self.weight.var(), bias.as_ref())
    }
}
