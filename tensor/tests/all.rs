//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `attention`, `conv_shift`, `determinism`, `matmul` and `pool_fast`
//! set the process-wide thread count and work thresholds, so they keep binaries of their own.

#[path = "caller_location.rs"]
mod caller_location;
#[path = "conv.rs"]
mod conv;
#[path = "elementwise.rs"]
mod elementwise;
#[path = "index.rs"]
mod index;
#[path = "quant_conv.rs"]
mod quant_conv;
#[path = "reduce.rs"]
mod reduce;
#[path = "views.rs"]
mod views;
