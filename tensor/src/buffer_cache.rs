//! Buffer caching: the memory of a freed tensor stays in the process heap for the next tensor
//! of a similar size, so a training loop's activations and gradients stop faulting pages in on
//! every step.
//!
//! Tensor storage is a plain `Vec` from the global allocator, which on Linux is glibc's malloc
//! unless the program chose another. glibc serves blocks from 128 KiB upward with a fresh `mmap`
//! and unmaps them on free (its dynamic threshold rises only after such a free), and it trims
//! the heap top back to the kernel once more than 128 KiB lies free there: every step then
//! re-faults the same buffers, zero-filled by the kernel (up to 1.45x on mid-size ops and 16% of
//! a LeNet step, see issue 17). With caching on, ferrograd asks malloc (`mallopt`) to serve
//! blocks up to 32 MiB (its upper limit for the threshold) from the heap and not to trim it:
//! malloc's own size-binned free lists become the cache, with no copy of the allocator in this
//! crate and `Tensor`'s API unchanged.
//!
//! The switch happens when the first backward pass of the process ends (autograd calls
//! [`backward_pass_finished`]), not at the first allocation: the first step runs with malloc's
//! defaults, so its large buffers are mapped exactly and the heap holds only the long-lived
//! small blocks (parameters, optimizer bookkeeping) when caching starts. Switched on at start-up
//! instead, the first step's large buffers were carved from the heap among those small blocks,
//! and the fragmentation raised LeNet-5's peak RSS by 10.7% (12.2 -> 13.5 MiB); switched on
//! after the first pass it is level with caching off (12.4 MiB both) and the steady state still
//! takes no page faults (`benches/alloc.rs`). Peak memory is the loop's high-water mark, as
//! before; what changes is that the memory freed after a peak is kept for the next step rather
//! than given back.
//!
//! On by default; `FERROGRAD_BUFFER_CACHE=0` in the environment leaves malloc untouched, and
//! [`set_buffer_caching`] switches at run time (an explicit choice is never overridden by the
//! first pass). On targets other than Linux with glibc this is a no-op switch (their allocators
//! keep freed memory by themselves or have other knobs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Decides the default once: at the end of the first backward pass, or never if
/// [`set_buffer_caching`] came first.
static DEFAULT: Once = Once::new();
static ON: AtomicBool = AtomicBool::new(false);

/// Blocks up to this size come from the heap when caching is on: glibc's largest accepted
/// mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
const CACHED_BLOCK_MAX: i32 = 32 << 20;

/// Free memory at the heap top kept rather than trimmed when caching is on.
const KEEP_FREE: i32 = 1 << 30;

/// glibc's initial mmap and trim thresholds, restored when caching is switched off.
const GLIBC_DEFAULT_THRESHOLD: i32 = 128 << 10;

/// Called by autograd when a backward pass ends: the first call applies the default (on, unless
/// `FERROGRAD_BUFFER_CACHE` is `0`, `off` or `false`); later calls cost one atomic load. Not
/// meant to be called by users; [`set_buffer_caching`] is the switch.
#[doc(hidden)]
pub fn backward_pass_finished() {
    DEFAULT.call_once(|| {
        let off = std::env::var("FERROGRAD_BUFFER_CACHE").is_ok_and(|v| matches!(v.trim(), "0" | "off" | "false"));
        if !off {
            apply(true);
        }
    });
}

/// Turns buffer caching on or off for the whole process (see the module docs of
/// `buffer_cache`): on, freed tensor buffers up to 32 MiB stay in the heap for reuse; off,
/// glibc's initial thresholds (128 KiB) apply again. By default caching comes on by itself when
/// the process's first backward pass ends, unless the environment variable
/// `FERROGRAD_BUFFER_CACHE` is `0`, `off` or `false`; calling this function replaces that
/// default.
///
/// ```
/// ferrograd_tensor::set_buffer_caching(false);
/// assert!(!ferrograd_tensor::buffer_caching());
/// ferrograd_tensor::set_buffer_caching(true);
/// ```
pub fn set_buffer_caching(on: bool) {
    DEFAULT.call_once(|| {});
    apply(on);
}

/// Whether buffer caching is on (see [`set_buffer_caching`]): `false` before the first backward
/// pass unless it was switched on explicitly, and always `false` where it is not supported.
pub fn buffer_caching() -> bool {
    ON.load(Ordering::Relaxed)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply(on: bool) {
    use std::os::raw::c_int;
    // glibc's malloc.h: `int mallopt (int param, int value)` and its parameter numbers.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    let (mmap, trim) =
        if on { (CACHED_BLOCK_MAX, KEEP_FREE) } else { (GLIBC_DEFAULT_THRESHOLD, GLIBC_DEFAULT_THRESHOLD) };
    // SAFETY: mallopt only sets allocator tuning values under malloc's own lock; both values are
    // in the ranges glibc accepts (it returns 0 and changes nothing otherwise). Measured reason:
    // re-faulted buffers cost up to 16% of a LeNet step (benches/alloc.rs).
    let ok = unsafe { mallopt(M_MMAP_THRESHOLD, mmap) == 1 && mallopt(M_TRIM_THRESHOLD, trim) == 1 };
    ON.store(on && ok, Ordering::Relaxed);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply(_on: bool) {
    ON.store(false, Ordering::Relaxed);
}
