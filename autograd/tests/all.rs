//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `buffer_cache` checks the process-wide cache switch before and
//! after the first backward pass, and `threads` sets the thread count, so they keep binaries of
//! their own.
//!
//! `common` (the helpers) is compiled once, at the root; the modules `use crate::common`.

#[path = "caller_location.rs"]
mod caller_location;
mod common;
#[path = "elementwise.rs"]
mod elementwise;
#[path = "engine.rs"]
mod engine;
#[path = "linalg_conv.rs"]
mod linalg_conv;
#[path = "ready_hook.rs"]
mod ready_hook;
#[path = "reduce.rs"]
mod reduce;
#[path = "rnn_cell.rs"]
mod rnn_cell;
#[path = "shape_index.rs"]
mod shape_index;
#[path = "triangle_mask.rs"]
mod triangle_mask;
