//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `checkpoint` and `resume` run their own binaries as child
//! processes, and `ddp_learner` runs under `mpirun`, so they keep binaries of their own.
//!
//! `common` (the helpers) is compiled once, at the root; the modules `use crate::common`.

mod common;
#[path = "learner.rs"]
mod learner;
#[path = "nan.rs"]
mod nan;
#[path = "plots.rs"]
mod plots;
#[path = "tensorboard.rs"]
mod tensorboard;
