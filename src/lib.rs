//! ferrograd: a CPU deep-learning framework in Rust.
//!
//! This facade re-exports the workspace crates so one dependency gives the whole framework:
//! [`tensor`] (strided tensors and kernels). The [`prelude`] brings the everyday names into scope.
//!
//! ```
//! use ferrograd::prelude::*;
//! let a = Tensor::<f32>::ones(&[2, 3]);
//! assert_eq!(a.shape(), &[2, 3]);
//! ```

pub use ferrograd_tensor as tensor;

/// The names most programs need: `use ferrograd::prelude::*;`.
pub mod prelude {
    pub use ferrograd_tensor::{DType, Element, Float, Num, Tensor, TensorError};
}
