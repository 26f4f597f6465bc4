//! The buffer cache's default comes on when the process's first backward pass ends, not
//! before (the first step's buffers are mapped with malloc's defaults; see
//! `ferrograd_tensor::set_buffer_caching`). One test in its own binary: the switch is
//! process-wide.

use ferrograd_autograd::Var;
use ferrograd_tensor::{buffer_caching, Tensor};

#[test]
fn caching_starts_after_the_first_backward_pass() {
    let env_off = std::env::var("FERROGRAD_BUFFER_CACHE").is_ok_and(|v| matches!(v.trim(), "0" | "off" | "false"));
    // Allocating large tensors and building a graph does not switch it on.
    let w = Var::leaf(Tensor::<f32>::ones(&[512, 512]));
    let x = Var::constant(Tensor::<f32>::ones(&[64, 512]));
    let loss = x.matmul(&w).sum();
    assert!(!buffer_caching(), "caching was on before any backward pass");
    let grads = loss.backward();
    assert_eq!(grads.get(&w).unwrap().shape(), &[512, 512]);
    let supported = cfg!(all(target_os = "linux", target_env = "gnu"));
    assert_eq!(buffer_caching(), supported && !env_off, "after the first backward pass (env off: {env_off})");
    // An explicit choice holds across later passes.
    ferrograd_tensor::set_buffer_caching(false);
    let _ = x.matmul(&w).sum().backward();
    assert!(!buffer_caching(), "a later backward pass overrode set_buffer_caching(false)");
    ferrograd_tensor::set_buffer_caching(true);
    assert_eq!(buffer_caching(), supported);
}
