//! `Linear`: `y = x Wᵀ + b`, as `torch.nn.Linear`.

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::Float;
use rand::Rng;

use super::{default_bias, default_weight};
use crate::Module;

/// Options of [`Linear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearConfig {
    /// Whether the layer adds a learned bias (default `true`).
    pub bias: bool,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig { bias: true }
    }
}

/// A fully connected layer: input `[.., in_features]` to output `[.., out_features]`.
///
/// `weight` is `[out_features, in_features]` like PyTorch's, so checkpoints match.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Linear, Module};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let fc = Linear::<f32>::new(3, 2, &mut StdRng::seed_from_u64(0));
/// let y = fc.forward(&Var::constant(Tensor::ones(&[4, 3])));
/// assert_eq!(y.shape(), &[4, 2]);
/// ```
#[derive(Debug, Module)]
pub struct Linear<F: Float = f32> {
    /// `[out_features, in_features]`.
    pub weight: Param<F>,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Param<F>>,
}

impl<F: Float> Linear<F> {
    /// A layer with a bias, initialised as PyTorch does: weight kaiming_uniform(a = sqrt(5)), bias
    /// U(-1/sqrt(in), 1/sqrt(in)).
    pub fn new(in_features: usize, out_features: usize, rng: &mut impl Rng) -> Self {
        Self::with_config(in_features, out_features, LinearConfig::default(), rng)
    }

    /// A layer with explicit options.
    pub fn with_config(in_features: usize, out_features: usize, config: LinearConfig, rng: &mut impl Rng) -> Self {
        let weight = default_weight(&[out_features, in_features], rng);
        let bias = config.bias.then(|| default_bias(out_features, in_features, rng));
        Linear { weight, bias }
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The forward pass with explicit parameter values (`weight` `[out, in]`, `bias` `[out]`).
    ///
    /// # Panics
    /// If the input's last dimension is not the weight's `in`.
    #[track_caller]
    pub fn forward_with(&self, input: &Var<F>, weight: &Var<F>, bias: Option<&Var<F>>) -> Var<F> {
        assert!(
            input.rank() >= 1 && input.shape()[input.rank() - 1] == weight.shape()[1],
            "Linear: input shape {:?} does not end in in_features of weight shape {:?}",
            input.shape(),
            weight.shape()
        );
        input.linear(weight, bias)
    }
}

impl<F: Float> Linear<F> {
    /// The forward pass: `input Wᵀ + b` (also [`Module::forward`]).
    ///
    /// # Panics
    /// If the input's last dimension is not `in_features`.
    #[track_caller]
    pub fn forward(&self, input: &Var<F>) -> Var<F> {
        let bias = self.bias.as_ref().map(Param::var);
        self.forward_with(input, &self.weight.var(), bias.as_ref())
    }
}
