//! The worker pool behind every split kernel (matrix products, convolutions, pooling,
//! elementwise passes, attention, the optimizers' steps): a fixed set of workers that spin for a
//! short while after each job before they park, so the many small parallel regions of a
//! training step (a dozen to a few dozen, of 10-500 µs each) do not each pay a wake-up.
//!
//! `thread_tree`, used before, parked its workers on a channel right after each job: waking one
//! took ~8 µs (median on a 2-core VM, ~40 µs in the tail), paid by every region. Here a worker
//! that finished a job watches its slot for [`SPIN`] before parking, so back-to-back regions
//! start in well under a microsecond, and an idle process still sleeps.
//!
//! One region runs at a time: a second thread that asks for workers while another holds them
//! (or a job that asks from inside a region) runs its whole region on itself. Kernels cut their
//! work by their shapes, never by the threads that run it, so that changes no result.

use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a worker keeps watching its slot after a job before it parks.
const SPIN: Duration = Duration::from_micros(100);

/// How long the caller spins on the workers' completion before it yields its core.
const WAIT_SPIN: Duration = Duration::from_micros(50);

/// One region: part `i` of `f` runs on worker `i - 1` (part 0 on the caller).
///
/// Aligned to its own cache lines (it lives on the caller's stack, whose other lines the
/// caller writes while the workers read `f` and count `pending` down).
#[repr(align(128))]
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    /// Workers still running their part.
    pending: AtomicUsize,
    /// The first worker panic's payload.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// A worker's mailbox: the job it is to run (null when idle) and the part it runs.
///
/// An idle worker reads `job` in a tight loop, so the slot has its own cache lines (128 bytes:
/// the adjacent-line prefetcher pairs lines). Unpadded, its 32-byte heap cell sits wherever
/// malloc puts it, possibly beside data the main thread writes all the time, and each such write
/// would pull the line away from the spinning core and back (false sharing).
#[repr(align(128))]
struct Slot {
    job: AtomicPtr<Job<'static>>,
    part: AtomicUsize,
}

struct Worker {
    slot: Arc<Slot>,
    thread: Thread,
}

/// The workers; locked for the duration of a region.
static POOL: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

thread_local! {
    /// Set on the pool's workers: a region started from inside a job runs serially there.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

fn spawn_worker() -> Worker {
    let slot = Arc::new(Slot { job: AtomicPtr::new(ptr::null_mut()), part: AtomicUsize::new(0) });
    let mine = slot.clone();
    let handle = thread::Builder::new()
        .name("ferrograd-worker".into())
        .spawn(move || {
            IN_WORKER.with(|w| w.set(true));
            let mut idle_since = Instant::now();
            let mut spins = 0u32;
            loop {
                let p = mine.job.load(Ordering::Acquire);
                if !p.is_null() {
                    // SAFETY: the caller that stored `p` keeps the job alive until `pending`
                    // reaches 0, which happens only after this worker's decrement below.
                    let job = unsafe { &*p };
                    let part = mine.part.load(Ordering::Relaxed);
                    if let Err(e) = catch_unwind(AssertUnwindSafe(|| (job.f)(part))) {
                        job.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                    }
                    mine.job.store(ptr::null_mut(), Ordering::Relaxed);
                    // The job may be gone right after this: nothing touches it later.
                    job.pending.fetch_sub(1, Ordering::Release);
                    idle_since = Instant::now();
                    spins = 0;
                    continue;
                }
                spins += 1;
                if !spins.is_multiple_of(64) || idle_since.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                // A job stored before this park left the thread's token set: park returns at once.
                thread::park();
                idle_since = Instant::now();
            }
        })
        .expect("ferrograd: spawning a worker thread");
    Worker { slot, thread: handle.thread().clone() }
}

/// Waits for the workers of a job, also when the caller's own part unwinds.
struct WaitAll<'a, 'j>(&'a Job<'j>);

impl Drop for WaitAll<'_, '_> {
    fn drop(&mut self) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.0.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() > WAIT_SPIN {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs `f(0)`, ..., `f(parts - 1)`, each part on its own thread (part 0 on the caller), and
/// returns when all are done; a panic in any part is resumed here. Runs every part on the caller
/// when the pool is busy (another region, or called from inside a part).
pub(crate) fn run_parts(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 || IN_WORKER.with(Cell::get) {
        return (0..parts).for_each(f);
    }
    let mut pool = match POOL.try_lock() {
        Ok(pool) => pool,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return (0..parts).for_each(f),
    };
    while pool.len() < parts - 1 {
        pool.push(spawn_worker());
    }
    let job = Job { f, pending: AtomicUsize::new(parts - 1), panic: Mutex::new(None) };
    {
        let _wait = WaitAll(&job);
        // SAFETY (lifetime erasure): `_wait` blocks, even while unwinding, until every worker
        // has decremented `pending`, after which none reads the job again; so the job outlives
        // every use of this pointer.
        let p = &job as *const Job<'_> as *mut Job<'static>;
        for (i, w) in pool[..parts - 1].iter().enumerate() {
            w.slot.part.store(i + 1, Ordering::Relaxed);
            w.slot.job.store(p, Ordering::Release);
            w.thread.unpark();
        }
        f(0);
    }
    drop(pool);
    if let Some(e) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(e);
    }
}

/// Runs `f` over `0..units` split into `threads` nearly equal ranges, one per thread.
pub(crate) fn run_ranges(units: usize, threads: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let threads = threads.min(units).max(1);
    run_parts(threads, &|i| f(i * units / threads..(i + 1) * units / threads));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_nested_regions_run_inline_and_panics_reach_the_caller() {
        for parts in [1, 2, 3, 5] {
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            run_parts(parts, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                // A region inside a part of a parallel region runs all its parts on this thread.
                let me = thread::current().id();
                if parts > 1 {
                    run_parts(3, &|_| assert_eq!(thread::current().id(), me));
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{parts} parts");
        }
        for bad in [0, 1] {
            let caught = catch_unwind(|| run_parts(2, &|i| assert!(i != bad, "part {i} fails")));
            let msg = caught.expect_err("the panic reaches the caller");
            let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(text, format!("part {bad} fails"));
        }
        // The pool still works after a panic.
        let sum = AtomicUsize::new(0);
        run_ranges(100, 2, &|r| {
            sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 4950);
    }
}
