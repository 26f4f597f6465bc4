//! The integration tests that share no process-wide state, as modules of one test binary.
//!
//! One binary per file compiled the crate's generic kernels again for every file (each test binary
//! instantiates `Tensor<f32>` and `Tensor<f64>` code at opt-level 2): most of the README's test
//! command was spent compiling. `search_sqlite` and `search_postgres` run their own binaries as
//! worker processes, and `search_interop` needs Python, so they keep binaries of their own.
//!
//! `common` (the helpers) is compiled once, at the root; the modules `use crate::common`.

#[path = "caller_location.rs"]
mod caller_location;
mod common;
#[path = "cv.rs"]
mod cv;
#[path = "distill.rs"]
mod distill;
#[path = "early_stopping.rs"]
mod early_stopping;
#[path = "fake_quant_torch.rs"]
mod fake_quant_torch;
#[path = "metrics.rs"]
mod metrics;
#[path = "plots.rs"]
mod plots;
#[path = "qconv_exact.rs"]
mod qconv_exact;
#[path = "quant.rs"]
mod quant;
#[path = "quant_cnn.rs"]
mod quant_cnn;
#[path = "quant_load_limits.rs"]
mod quant_load_limits;
#[path = "quant_simd.rs"]
mod quant_simd;
#[path = "search.rs"]
mod search;
#[path = "search_cmaes.rs"]
mod search_cmaes;
#[path = "search_gp.rs"]
mod search_gp;
#[path = "search_importance.rs"]
mod search_importance;
#[path = "search_multi.rs"]
mod search_multi;
#[path = "search_nsga2.rs"]
mod search_nsga2;
#[path = "search_pruners.rs"]
mod search_pruners;
#[path = "search_qmc.rs"]
mod search_qmc;
#[path = "search_storage.rs"]
mod search_storage;
#[path = "search_tpe.rs"]
mod search_tpe;
