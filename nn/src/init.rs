//! Weight initialisation, as `torch.nn.init`.
//!
//! Each function draws a new tensor of the given shape from a caller-supplied random number
//! generator (seed it, e.g. `StdRng::seed_from_u64`, for reproducible models). Layers call these
//! in their `new` constructors with PyTorch's defaults; users call them to re-initialise a
//! parameter with [`Param::set`](ferrograd_autograd::Param::set).
//!
//! Fans follow `torch.nn.init._calculate_fan_in_and_fan_out`: for a weight of shape
//! `[out, in, k...]`, `fan_in = in * prod(k)` and `fan_out = out * prod(k)`.
//!
//! ```
//! use ferrograd_nn::init::{kaiming_uniform, FanMode, Nonlinearity};
//! use rand::{rngs::StdRng, SeedableRng};
//! let mut rng = StdRng::seed_from_u64(0);
//! let w = kaiming_uniform::<f32>(&[64, 32], 0.0, FanMode::FanIn, Nonlinearity::Relu, &mut rng);
//! let bound = (6.0f32 / 32.0).sqrt();
//! assert!(w.to_vec().iter().all(|v| v.abs() <= bound));
//! ```

use ferrograd_tensor::{Float, Tensor};
use rand::Rng;

/// Which fan Kaiming initialisation preserves: the forward pass's variance (`FanIn`, the
/// default) or the backward pass's (`FanOut`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanMode {
    /// Number of inputs feeding each output.
    #[default]
    FanIn,
    /// Number of outputs each input feeds.
    FanOut,
}

/// The nonlinearity that follows a layer, which sets the recommended gain
/// (`torch.nn.init.calculate_gain`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Nonlinearity {
    /// Identity or any linear map (gain 1); also conv layers.
    Linear,
    /// Sigmoid (gain 1).
    Sigmoid,
    /// Tanh (gain 5/3).
    Tanh,
    /// ReLU (gain sqrt(2)).
    Relu,
    /// Leaky ReLU with negative slope `a` (gain sqrt(2 / (1 + a²))): PyTorch's Kaiming default.
    #[default]
    LeakyRelu,
    /// SELU (gain 3/4).
    Selu,
}

/// The recommended gain of a nonlinearity; `param` is the negative slope for
/// [`Nonlinearity::LeakyRelu`] and ignored otherwise.
///
/// ```
/// use ferrograd_nn::init::{calculate_gain, Nonlinearity};
/// assert_eq!(calculate_gain(Nonlinearity::Relu, 0.0), 2f64.sqrt());
/// ```
pub fn calculate_gain(nonlinearity: Nonlinearity, param: f64) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu => (2.0 / (1.0 + param * param)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// `(fan_in, fan_out)` of a weight of `shape` (`[out, in, kernel...]`).
///
/// # Panics
/// If `shape` has fewer than 2 dimensions (as PyTorch, which raises).
///
/// ```
/// use ferrograd_nn::init::fan_in_and_fan_out;
/// assert_eq!(fan_in_and_fan_out(&[16, 3, 5, 5]), (75, 400));
/// ```
#[track_caller]
pub fn fan_in_and_fan_out(shape: &[usize]) -> (usize, usize) {
    assert!(
        shape.len() >= 2,
        "fan_in_and_fan_out: shape {shape:?} has fewer than 2 dimensions, fans cannot be computed"
    );
    let receptive: usize = shape[2..].iter().product();
    (shape[1] * receptive, shape[0] * receptive)
}

/// Samples from U[lo, hi).
#[track_caller]
pub fn uniform<F: Float>(shape: &[usize], lo: f64, hi: f64, rng: &mut impl Rng) -> Tensor<F> {
    Tensor::rand_uniform(shape, F::from_f64(lo), F::from_f64(hi), rng)
}

/// Samples from N(mean, std²).
#[track_caller]
pub fn normal<F: Float>(shape: &[usize], mean: f64, std: f64, rng: &mut impl Rng) -> Tensor<F> {
    Tensor::rand_normal(shape, F::from_f64(mean), F::from_f64(std), rng)
}

/// U(-b, b) with `b = gain * sqrt(6 / (fan_in + fan_out))` (Glorot & Bengio, 2010).
#[track_caller]
pub fn xavier_uniform<F: Float>(shape: &[usize], gain: f64, rng: &mut impl Rng) -> Tensor<F> {
    let (fan_in, fan_out) = fan_in_and_fan_out(shape);
    let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
    symmetric_uniform(shape, bound, rng)
}

/// N(0, std²) with `std = gain * sqrt(2 / (fan_in + fan_out))` (Glorot & Bengio, 2010).
#[track_caller]
pub fn xavier_normal<F: Float>(shape: &[usize], gain: f64, rng: &mut impl Rng) -> Tensor<F> {
    let (fan_in, fan_out) = fan_in_and_fan_out(shape);
    normal(shape, 0.0, gain * (2.0 / (fan_in + fan_out) as f64).sqrt(), rng)
}

/// U(-b, b) with `b = gain * sqrt(3 / fan)` (He et al., 2015); `a` is the negative slope used by
/// [`Nonlinearity::LeakyRelu`]. PyTorch's Linear and Conv weights use `a = sqrt(5)`,
/// `FanIn`, `LeakyRelu`, which gives `b = 1 / sqrt(fan_in)`.
#[track_caller]
pub fn kaiming_uniform<F: Float>(
    shape: &[usize],
    a: f64,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut impl Rng,
) -> Tensor<F> {
    let std = kaiming_std(shape, a, mode, nonlinearity);
    symmetric_uniform(shape, 3f64.sqrt() * std, rng)
}

/// N(0, std²) with `std = gain / sqrt(fan)` (He et al., 2015).
#[track_caller]
pub fn kaiming_normal<F: Float>(
    shape: &[usize],
    a: f64,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut impl Rng,
) -> Tensor<F> {
    normal(shape, 0.0, kaiming_std(shape, a, mode, nonlinearity), rng)
}

#[track_caller]
fn kaiming_std(shape: &[usize], a: f64, mode: FanMode, nonlinearity: Nonlinearity) -> f64 {
    let (fan_in, fan_out) = fan_in_and_fan_out(shape);
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    assert!(fan > 0, "kaiming init: shape {shape:?} has a zero {mode:?}");
    calculate_gain(nonlinearity, a) / (fan as f64).sqrt()
}

/// U(-bound, bound); a zero bound (empty fan) gives zeros, where `Uniform` would refuse.
pub(crate) fn symmetric_uniform<F: Float>(shape: &[usize], bound: f64, rng: &mut impl Rng) -> Tensor<F> {
    if bound > 0.0 {
        uniform(shape, -bound, bound, rng)
    } else {
        Tensor::zeros(shape)
    }
}
