//! Checking where a panic is reported: every shape or argument check of an op must name the
//! line of the code that called the op (`#[track_caller]` all the way down), not a line inside
//! ferrograd. [`catch_panic`] runs a closure and returns where it panicked and with what
//! message; [`assert_panics_here!`](crate::assert_panics_here) asserts that the panic is reported
//! at the macro's own line, which is what a test of an op (or of a user's own op) wants.
//!
//! ```
//! use ferrograd_tensor::{assert_panics_here, Tensor};
//! let (a, b) = (Tensor::<f32>::zeros(&[2, 3]), Tensor::<f32>::zeros(&[4]));
//! assert_panics_here!(a.add(&b), "add", "[2, 3]", "[4]");
//! ```

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// Where a panic was raised and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaughtPanic {
    /// The source file of the reported location, as `file!()` spells it.
    pub file: String,
    /// The line of the reported location (1-based).
    pub line: u32,
    /// The column of the reported location (1-based).
    pub column: u32,
    /// The panic message (empty if the payload was not a string).
    pub message: String,
}

thread_local! {
    /// Whether [`catch_panic`] is running on this thread (panics are then recorded, not printed).
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<CaughtPanic>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that records panics on threads inside
/// [`catch_panic`] and hands every other panic to the hook that was there before. The state is
/// per thread, so tests running in parallel do not see each other's panics.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                return previous(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let caught = info.location().map(|l| CaughtPanic {
                file: l.file().to_string(),
                line: l.line(),
                column: l.column(),
                message: message.clone(),
            });
            CAUGHT.with(|c| *c.borrow_mut() = caught);
        }));
    });
}

/// Runs `f`; if it panics, returns where the panic was reported and its message (nothing is
/// printed), else `None`. Safe to call from tests running in parallel.
///
/// This replaces the process's panic hook once with one that delegates to the previous hook for
/// panics outside `catch_panic`; a hook set later by other code takes precedence over it.
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Option<CaughtPanic> {
    install_hook();
    let was_catching = CATCHING.with(|c| c.replace(true));
    CAUGHT.with(|c| c.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was_catching));
    let caught = CAUGHT.with(|c| c.borrow_mut().take());
    match result {
        Ok(_) => None,
        Err(_) => Some(caught.unwrap_or_else(|| CaughtPanic {
            file: String::new(),
            line: 0,
            column: 0,
            message: "<the panic hook saw no location>".into(),
        })),
    }
}

/// Asserts that an expression panics, that the panic is reported at the line of this macro call
/// in the calling file (so the op carried its caller's location through `#[track_caller]`), and
/// that the message contains each of the given fragments (the op's name, the shapes).
///
/// Keep the call on one line, since the line compared is the macro call's: if rustfmt would
/// break it, bind the operands to shorter names first.
///
/// ```
/// use ferrograd_tensor::{assert_panics_here, Tensor};
/// let x = Tensor::<f32>::zeros(&[2, 3]);
/// assert_panics_here!(x.view(&[4]), "view", "[2, 3]", "[4]");
/// ```
#[macro_export]
macro_rules! assert_panics_here {
    ($e:expr $(, $fragment:expr)* $(,)?) => {{
        let (file, line) = (file!(), line!());
        match $crate::testing::catch_panic(|| $e) {
            None => panic!("`{}` did not panic", stringify!($e)),
            Some(p) => {
                assert!(
                    p.file == file && p.line == line,
                    "`{}` panicked at {}:{}, expected its caller's line {}:{} (message: {})",
                    stringify!($e),
                    p.file,
                    p.line,
                    file,
                    line,
                    p.message
                );
                $(
                    assert!(
                        p.message.contains($fragment),
                        "`{}` panicked with \"{}\", which does not mention {:?}",
                        stringify!($e),
                        p.message,
                        $fragment
                    );
                )*
            }
        }
    }};
}
