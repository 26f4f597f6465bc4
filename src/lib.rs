//! ferrograd: a CPU deep-learning framework in Rust.
//!
//! This facade re-exports the workspace crates, so one dependency gives the whole framework, and
//! its [`prelude`] brings what a training program uses into scope with one line.
//!
//! | module | crate | what it is for |
//! |---|---|---|
//! | [`tensor`] | `ferrograd-tensor` | `Tensor<E>`: strided n-dimensional arrays over f32, f64 and integer types, zero-copy views, broadcasting, and every CPU kernel (elementwise, reductions, matmul, convolution, pooling, indexing) |
//! | [`autograd`] | `ferrograd-autograd` | `Var` and `Param`: define-by-run reverse-mode differentiation, `backward`/`grad` with higher-order gradients, `no_grad`, hooks, custom ops, anomaly mode, `gradcheck` |
//! | [`nn`] | `ferrograd-nn` and `ferrograd-derive` | `Module` and `#[derive(Module)]`, layers with PyTorch's names and initialisation, losses, data loading and augmentation, safetensors checkpoints, `gradcheck_module` |
//! | [`optim`] | `ferrograd-optim` | optimizers (SGD, Adam, AdamW, RMSprop, Adagrad, Lion, your own `UpdateRule`), learning-rate schedules, gradient clipping |
//! | [`distributed`] | `ferrograd-distributed` | data-parallel training over MPI: `DistributedSampler`, and with the `mpi` feature tensor collectives, `DistributedDataParallel`, rank-0 checkpoints (`Learner::distributed` in `train`) |
//! | [`tuning`] | `ferrograd-tuning` | hyperparameter search, cross-validation, early stopping, metrics, distillation, int8 quantization |
//! | `testing` (feature `testing`) | `ferrograd-tensor` | proptest strategies for tensors in every layout, and `proptest` itself |
//!
//! `ferrograd-derive` holds the `#[derive(Module)]` procedural macro only; it is used through
//! [`nn::Module`] or the prelude, which name the trait and the derive together.
//!
//! ```
//! use ferrograd::prelude::*;
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! #[derive(Module)]
//! struct Mlp {
//!     fc1: Linear,
//!     fc2: Linear,
//!     drop: Dropout,
//! }
//!
//! impl Mlp {
//!     fn forward(&self, x: &Var) -> Var {
//!         self.fc2.forward(&self.drop.forward(&self.fc1.forward(x).relu()))
//!     }
//! }
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let model = Mlp { fc1: Linear::new(2, 16, &mut rng), fc2: Linear::new(16, 1, &mut rng), drop: Dropout::new(0.1, 0) };
//! let mut opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(0.05));
//! let x = Var::constant(Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]));
//! let y = Var::constant(Tensor::from_vec(vec![0.0, 1.0, 1.0, 0.0], &[4, 1]));
//! for _ in 0..300 {
//!     let loss = mse_loss(&model.forward(&x), &y);
//!     opt.step(&loss.backward());
//! }
//! model.eval();
//! assert!(mse_loss(&model.forward(&x), &y).item() < 0.05);
//! ```

pub use ferrograd_autograd as autograd;
pub use ferrograd_distributed as distributed;
pub use ferrograd_optim as optim;
pub use ferrograd_tensor as tensor;
#[cfg(feature = "testing")]
pub use ferrograd_tensor::testing;
pub use ferrograd_train as train;
pub use ferrograd_tuning as tuning;

/// Modules, layers, losses, data and checkpoints: `ferrograd-nn`, whose `#[derive(Module)]` works
/// from a crate that depends on `ferrograd` alone.
pub mod nn {
    /// `#[derive(Module)]`: see `ferrograd_nn::Module`. This re-export's expansion names
    /// `::ferrograd::nn`, so the crate using it needs no direct dependency on `ferrograd-nn`.
    pub use ferrograd_derive::FacadeModule as Module;
    pub use ferrograd_nn::*;
}

/// The names a training program needs: `use ferrograd::prelude::*;`.
///
/// Tensors and their options, `Var`/`Param`/`Grads` and the autograd entry points, `Module`
/// (trait and derive), every layer, every loss, datasets and the loader, checkpoints, and every
/// optimizer, schedule and clipping function.
pub mod prelude {
    pub use ferrograd_autograd::{enable_grad, grad, no_grad, BackwardOptions, Grads, Param, Var};
    pub use ferrograd_nn::data::{DataLoader, Dataset, TensorDataset};
    pub use ferrograd_nn::layers::*;
    pub use ferrograd_nn::loss::*;
    pub use ferrograd_nn::{load_module, save_module, TrainingFlag};
    pub use ferrograd_optim::*;
    pub use ferrograd_tensor::{
        Conv1dOptions, Conv2dOptions, DType, Element, Float, Num, PadMode, Pool2dOptions, Tensor, TensorError,
    };

    pub use crate::nn::Module;
}
