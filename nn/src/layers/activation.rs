//! Activation layers: stateless wrappers of the `Var` ops, for use in a
//! [`Sequential`](super::Sequential). Names follow PyTorch.

use ferrograd_autograd::Var;
use ferrograd_tensor::Float;

use crate::Module;

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Module)]
        #[module(any_float)]
        pub struct $name;

        impl $name {
            /// Applies the activation elementwise (also [`Module::forward`]).
            #[track_caller]
            pub fn forward<F: Float>(&self, $x: &Var<F>) -> Var<F> {
                $body
            }
        }
    };
}

activation!(
    /// `max(x, 0)`.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_nn::{layers::ReLU, Module};
    /// use ferrograd_tensor::Tensor;
    /// let y = ReLU.forward(&Var::constant(Tensor::from_vec(vec![-1.0f32, 2.0], &[2])));
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0]);
    /// ```
    ReLU,
    |x| x.relu()
);
activation!(
    /// `x * sigmoid(x)` (also called Swish).
    SiLU,
    |x| x.silu()
);
activation!(
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    |x| x.sigmoid()
);
activation!(
    /// Hyperbolic tangent.
    Tanh,
    |x| x.tanh()
);

/// `x` for `x >= 0`, `negative_slope * x` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Module)]
#[module(any_float)]
pub struct LeakyReLU {
    /// The slope for negative inputs (PyTorch's default `0.01`).
    #[module(skip)]
    pub negative_slope: f64,
}

impl LeakyReLU {
    /// With an explicit slope.
    pub fn new(negative_slope: f64) -> Self {
        LeakyReLU { negative_slope }
    }
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU { negative_slope: 0.01 }
    }
}

impl LeakyReLU {
    /// Applies the activation (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        input.leaky_relu(F::from_f64(self.negative_slope))
    }
}

/// Gaussian error linear unit `x * Φ(x)`; with `tanh_approximation`, PyTorch's
/// `approximate='tanh'` form.
#[allow(clippy::upper_case_acronyms)] // PyTorch's name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Module)]
#[module(any_float)]
pub struct GELU {
    /// Use the tanh approximation instead of the exact erf form (default `false`).
    #[module(skip)]
    pub tanh_approximation: bool,
}

impl GELU {
    /// Applies the activation (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        if self.tanh_approximation {
            input.gelu_tanh()
        } else {
            input.gelu()
        }
    }
}

/// Softmax along `dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
#[module(any_float)]
pub struct Softmax {
    /// The dimension that sums to one (negative counts from the end).
    #[module(skip)]
    pub dim: isize,
}

impl Softmax {
    /// Softmax along `dim`.
    pub fn new(dim: isize) -> Self {
        Softmax { dim }
    }
}

impl Softmax {
    /// Applies the activation (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        input.softmax(self.dim)
    }
}

/// `log(softmax(x))` along `dim`, computed stably.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
#[module(any_float)]
pub struct LogSoftmax {
    /// The dimension normalised over (negative counts from the end).
    #[module(skip)]
    pub dim: isize,
}

impl LogSoftmax {
    /// Log-softmax along `dim`.
    pub fn new(dim: isize) -> Self {
        LogSoftmax { dim }
    }
}

impl LogSoftmax {
    /// Applies the activation (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        input.log_softmax(self.dim)
    }
}
