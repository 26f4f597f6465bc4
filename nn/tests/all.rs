//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `kill_during_save` runs its own binary as a child process and kills
//! it, so it keeps a binary of its own.

#[path = "attention.rs"]
mod attention;
#[path = "attention_props.rs"]
mod attention_props;
#[path = "batch_norm.rs"]
mod batch_norm;
#[path = "caller_location.rs"]
mod caller_location;
#[path = "check.rs"]
mod check;
#[path = "checkpoint.rs"]
mod checkpoint;
#[path = "data.rs"]
mod data;
#[path = "derive.rs"]
mod derive;
#[path = "layer_norm.rs"]
mod layer_norm;
#[path = "layers.rs"]
mod layers;
#[path = "loss.rs"]
mod loss;
#[path = "rnn.rs"]
mod rnn;
