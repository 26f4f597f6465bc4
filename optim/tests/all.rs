//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `reliability` installs a panic hook and `threads` sets the thread
//! count, so they keep binaries of their own.

#[path = "accumulation.rs"]
mod accumulation;
#[path = "conformance.rs"]
mod conformance;
#[path = "driver.rs"]
mod driver;
#[path = "lbfgs.rs"]
mod lbfgs;
#[path = "reference.rs"]
mod reference;
#[path = "sched_bound.rs"]
mod sched_bound;
#[path = "sched_momentum.rs"]
mod sched_momentum;
