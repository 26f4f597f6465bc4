//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `determinism` sets the process-wide thread count, so it keeps a
//! binary of its own.

#[path = "fuzz_replay.rs"]
mod fuzz_replay;
#[path = "mnist_training.rs"]
mod mnist_training;
