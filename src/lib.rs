//! ferrograd: a CPU deep-learning framework in Rust.
//!
//! This facade re-exports the workspace crates so one dependency gives the whole framework:
//! [`tensor`] (strided tensors and kernels), [`autograd`] (define-by-run reverse-mode
//! differentiation) and [`nn`] (modules, layers, initialisation). The [`prelude`] brings the
//! everyday names into scope.
//!
//! ```
//! use ferrograd::prelude::*;
//! let w = Var::leaf(Tensor::<f64>::ones(&[2, 3]));
//! let loss = w.square().sum();
//! assert_eq!(loss.backward().get(&w).unwrap().to_vec(), vec![2.0; 6]);
//! ```

pub use ferrograd_autograd as autograd;
pub use ferrograd_nn as nn;
pub use ferrograd_optim as optim;
pub use ferrograd_tensor as tensor;
pub use ferrograd_train as train;
pub use ferrograd_tuning as tuning;

/// The names most programs need: `use ferrograd::prelude::*;`.
pub mod prelude {
    pub use ferrograd_autograd::{grad, no_grad, BackwardOptions, Grads, Var};
    pub use ferrograd_tensor::{
        Conv1dOptions, Conv2dOptions, DType, Element, Float, Num, PadMode, Pool2dOptions, Tensor, TensorError,
    };
}
