//! Thread-local modes: whether ops record the graph (`no_grad`), and anomaly detection.

use std::cell::Cell;
use std::panic::Location;

use ferrograd_tensor::{Float, Tensor};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// Restores a thread-local flag when dropped, so a panic inside the closure cannot leave the
/// mode switched.
struct Restore(&'static std::thread::LocalKey<Cell<bool>>, bool);

impl Drop for Restore {
    fn drop(&mut self) {
        self.0.with(|c| c.set(self.1));
    }
}

fn with_flag<R>(key: &'static std::thread::LocalKey<Cell<bool>>, value: bool, f: impl FnOnce() -> R) -> R {
    let previous = key.with(|c| c.replace(value));
    let _restore = Restore(key, previous);
    f()
}

/// Runs `f` without recording the graph: ops return constants, at the cost of the tensor ops only.
///
/// ```
/// use ferrograd_autograd::{no_grad, Var};
/// use ferrograd_tensor::Tensor;
/// let w = Var::leaf(Tensor::<f32>::ones(&[2]));
/// let y = no_grad(|| &w * 2.0);
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&GRAD_ENABLED, false, f)
}

/// Runs `f` with the graph recorded, even inside [`no_grad`].
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&GRAD_ENABLED, true, f)
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|c| c.get())
}

/// Runs `f` with anomaly detection: the first op whose forward output, or whose gradient during
/// a backward inside `f`, holds NaN or Inf panics with the op's name and the source location
/// that created it. It checks every value, so it is for debugging, not for training runs.
///
/// ```should_panic
/// use ferrograd_autograd::{detect_anomaly, Var};
/// use ferrograd_tensor::Tensor;
/// let x = Var::leaf(Tensor::from_vec(vec![-1.0f64], &[1]));
/// detect_anomaly(|| x.sqrt()); // panics: sqrt produced NaN at this line
/// ```
pub fn detect_anomaly<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&ANOMALY, true, f)
}

/// Switches anomaly detection on or off for this thread (see [`detect_anomaly`]).
pub fn set_detect_anomaly(on: bool) {
    ANOMALY.with(|c| c.set(on));
}

/// Runs a backward closure with forward checks off: the engine checks the gradients it returns
/// and names the op they belong to, which is more useful than the helper op that overflowed.
pub(crate) fn suspend_anomaly<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&ANOMALY, false, f)
}

/// Whether anomaly detection is on for this thread.
pub fn anomaly_enabled() -> bool {
    ANOMALY.with(|c| c.get())
}

fn first_non_finite<F: Float>(t: &Tensor<F>) -> Option<(usize, F)> {
    t.to_vec().into_iter().enumerate().find(|(_, v)| !v.is_finite())
}

#[track_caller]
pub(crate) fn check_forward<F: Float>(op: &str, location: &Location<'_>, out: &Tensor<F>) {
    if let Some((i, v)) = first_non_finite(out) {
        panic!(
            "anomaly: op `{op}` created at {location} produced {v} at element {i} of its output (shape {:?})",
            out.shape()
        );
    }
}

pub(crate) fn check_backward<F: Float>(op: &str, location: &Location<'_>, input: usize, grad: &Tensor<F>) {
    if let Some((i, v)) = first_non_finite(grad) {
        panic!(
            "anomaly: the backward of op `{op}` created at {location} produced {v} at element {i} of the \
             gradient of its input {input} (shape {:?})",
            grad.shape()
        );
    }
}
