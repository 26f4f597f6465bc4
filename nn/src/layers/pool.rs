//! `MaxPool2d` and `AvgPool2d`, as PyTorch's, over `[N, C, H, W]` (or `[C, H, W]`) inputs.

use ferrograd_autograd::Var;
use ferrograd_tensor::{Float, Pool2dOptions};

use crate::Module;

/// 2-D max pooling. `MaxPool2d::new([2, 2])` uses stride = kernel and no padding, as PyTorch.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::MaxPool2d, Module};
/// use ferrograd_tensor::Tensor;
/// let pool = MaxPool2d::new([2, 2]);
/// let y: Var<f32> = pool.forward(&Var::constant(Tensor::ones(&[1, 1, 4, 4])));
/// assert_eq!(y.shape(), &[1, 1, 2, 2]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
#[module(any_float)]
pub struct MaxPool2d {
    /// Kernel, stride and padding.
    #[module(skip)]
    pub options: Pool2dOptions,
}

impl MaxPool2d {
    /// Windows of `kernel` with stride = kernel and no padding.
    pub fn new(kernel: [usize; 2]) -> Self {
        MaxPool2d { options: Pool2dOptions::new(kernel) }
    }

    /// Explicit kernel, stride and padding.
    pub fn with_options(options: Pool2dOptions) -> Self {
        MaxPool2d { options }
    }
}

impl MaxPool2d {
    /// Pools `input` (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        input.max_pool2d(&self.options)
    }
}

/// 2-D average pooling. `AvgPool2d::new([2, 2])` uses stride = kernel, no padding and counts
/// padding in the divisor, as PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
#[module(any_float)]
pub struct AvgPool2d {
    /// Kernel, stride, padding and whether padding counts in the divisor.
    #[module(skip)]
    pub options: Pool2dOptions,
}

impl AvgPool2d {
    /// Windows of `kernel` with stride = kernel and no padding.
    pub fn new(kernel: [usize; 2]) -> Self {
        AvgPool2d { options: Pool2dOptions::new(kernel) }
    }

    /// Explicit kernel, stride, padding and divisor rule.
    pub fn with_options(options: Pool2dOptions) -> Self {
        AvgPool2d { options }
    }
}

impl AvgPool2d {
    /// Pools `input` (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        input.avg_pool2d(&self.options)
    }
}
