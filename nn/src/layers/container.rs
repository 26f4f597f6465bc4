//! `Sequential` (a chain of modules) and `Flatten`.

use ferrograd_autograd::Var;
use ferrograd_tensor::Float;

use crate::Module;

/// Modules applied in order, each to the previous one's output; children are named `"0"`,
/// `"1"`, ... as in PyTorch, so parameters are `0.weight`, `0.bias`, `2.weight`, ...
///
/// ```
/// use ferrograd_nn::{layers::{Linear, ReLU, Sequential}, Module};
/// use rand::{rngs::StdRng, SeedableRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// let mlp = Sequential::<f32>::new().add(Linear::new(4, 8, &mut rng)).add(ReLU).add(Linear::new(8, 1, &mut rng));
/// let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// ```
#[derive(Module)]
pub struct Sequential<F: Float = f32> {
    #[module(flatten)]
    layers: Vec<Box<dyn Module<F>>>,
}

impl<F: Float> Sequential<F> {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// The chain with `layer` appended (builder style).
    // Keras's name for appending a layer; `Sequential` is not a number, so no `Add` impl is meant.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Module<F> + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a layer.
    pub fn push(&mut self, layer: Box<dyn Module<F>>) {
        self.layers.push(layer);
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the chain has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer at `index`.
    pub fn get(&self, index: usize) -> Option<&dyn Module<F>> {
        self.layers.get(index).map(|m| &**m)
    }
}

impl<F: Float> Default for Sequential<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> std::fmt::Debug for Sequential<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sequential({} layers)", self.layers.len())
    }
}

impl<F: Float> Sequential<F> {
    /// Applies the layers in order (also [`Module::forward`]); an error in any of them reports
    /// the line that called this.
    #[track_caller]
    pub fn forward(&self, input: &Var<F>) -> Var<F> {
        // A loop, not a fold: the caller's location reaches the layers only outside closures.
        let mut x = input.clone();
        for layer in &self.layers {
            x = layer.forward_tracked(&x);
        }
        x
    }
}

/// Flattens dimensions `start_dim..=end_dim` into one (default `1..=-1`: everything but the
/// batch dimension), as `torch.nn.Flatten`.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Flatten, Module};
/// use ferrograd_tensor::Tensor;
/// let y: Var<f32> = Flatten::default().forward(&Var::constant(Tensor::zeros(&[2, 3, 4, 5])));
/// assert_eq!(y.shape(), &[2, 60]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
#[module(any_float)]
pub struct Flatten {
    /// First dimension flattened (negative counts from the end).
    #[module(skip)]
    pub start_dim: isize,
    /// Last dimension flattened, inclusive (negative counts from the end).
    #[module(skip)]
    pub end_dim: isize,
}

impl Flatten {
    /// Flattens `start_dim..=end_dim`.
    pub fn new(start_dim: isize, end_dim: isize) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    /// Flattens the dimensions (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        input.flatten(self.start_dim, self.end_dim)
    }
}
