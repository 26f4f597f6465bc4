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

/// One region: parts `0..parts` of `f`, each claimed by whichever thread takes the next index
/// from `next` (the caller and the workers that picked the job up).
///
/// Aligned to its own cache lines (it lives on the caller's stack, whose other lines the
/// caller writes while the workers read `f` and count `next` up and `pending` down).
#[repr(align(128))]
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    parts: usize,
    /// The next part to run.
    next: AtomicUsize,
    /// Workers that were handed the job and have not yet finished with it or given it back.
    pending: AtomicUsize,
    /// The first worker panic's payload.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job<'_> {
    /// Runs parts until none is left unclaimed.
    fn run_claimed(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.parts {
                return;
            }
            (self.f)(i);
        }
    }
}

/// A worker's mailbox: the job it is to run (null when idle).
///
/// An idle worker reads `job` in a tight loop, so the slot has its own cache lines (128 bytes:
/// the adjacent-line prefetcher pairs lines). Unpadded, its heap cell sits wherever malloc puts
/// it, possibly beside data the main thread writes all the time, and each such write would pull
/// the line away from the spinning core and back (false sharing).
///
/// The worker takes the job by swapping the pointer back to null; the caller, once every part
/// is claimed, takes back the jobs no worker took (a worker still parked or descheduled then
/// costs the caller nothing).
#[repr(align(128))]
struct Slot {
    job: AtomicPtr<Job<'static>>,
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
    let slot = Arc::new(Slot { job: AtomicPtr::new(ptr::null_mut()) });
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
                    // Taken back by the caller meanwhile (it ran every part itself).
                    if mine.job.compare_exchange(p, ptr::null_mut(), Ordering::Acquire, Ordering::Relaxed).is_err() {
                        continue;
                    }
                    // SAFETY: the slot held `p` until this worker swapped it out, so the caller
                    // did not take the job back and counts this worker in `pending`; it keeps
                    // the job alive until `pending` reaches 0, which needs the decrement below.
                    let job = unsafe { &*p };
                    if let Err(e) = catch_unwind(AssertUnwindSafe(|| job.run_claimed())) {
                        job.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                    }
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

/// Ends a region, also when the caller's own parts unwind: no part is claimed after it, the
/// workers that never took the job are relieved of it, and the ones that did are waited for.
struct WaitAll<'a, 'j> {
    job: &'a Job<'j>,
    p: *mut Job<'static>,
    workers: &'a [Worker],
}

impl Drop for WaitAll<'_, '_> {
    fn drop(&mut self) {
        // Normally every part is claimed already; after a panic of the caller's part, the
        // remaining ones are skipped.
        self.job.next.store(self.job.parts, Ordering::Relaxed);
        for w in self.workers {
            if w.slot.job.compare_exchange(self.p, ptr::null_mut(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.job.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.job.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() > WAIT_SPIN {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs `f(0)`, ..., `f(parts - 1)` on up to `threads` threads (the caller and `threads - 1`
/// workers) and returns when all are done; a panic in any part is resumed here. Each thread
/// claims the next unclaimed part until none is left, so which thread runs a part depends on
/// timing: `f(i)` must compute the same whichever thread runs it (kernels cut their work by
/// shape, and each part writes its own output). Runs every part on the caller when the pool is
/// busy (another region, or called from inside a part).
pub(crate) fn run_parts(parts: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) {
    let helpers = threads.min(parts).saturating_sub(1);
    if helpers == 0 || IN_WORKER.with(Cell::get) {
        return (0..parts).for_each(f);
    }
    let mut pool = match POOL.try_lock() {
        Ok(pool) => pool,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return (0..parts).for_each(f),
    };
    while pool.len() < helpers {
        pool.push(spawn_worker());
    }
    let job = Job { f, parts, next: AtomicUsize::new(0), pending: AtomicUsize::new(helpers), panic: Mutex::new(None) };
    {
        // SAFETY (lifetime erasure): `_wait` takes the job back from every worker that did not
        // take it and blocks, even while unwinding, until each one that did has decremented
        // `pending`, after which none reads the job again; so the job outlives every use of
        // this pointer.
        let p = &job as *const Job<'_> as *mut Job<'static>;
        let workers = &pool[..helpers];
        let _wait = WaitAll { job: &job, p, workers };
        for w in workers {
            w.slot.job.store(p, Ordering::Release);
            w.thread.unpark();
        }
        job.run_claimed();
    }
    drop(pool);
    if let Some(e) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(e);
    }
}

/// Runs `f` over `0..units` cut into `chunks` nearly equal ranges (at most `units`), claimed by
/// up to `threads` threads.
pub(crate) fn run_ranges(units: usize, chunks: usize, threads: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let chunks = chunks.min(units).max(1);
    run_parts(chunks, threads, &|i| f(i * units / chunks..(i + 1) * units / chunks));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_nested_regions_run_inline_and_panics_reach_the_caller() {
        for (parts, threads) in [(1, 2), (2, 2), (3, 2), (5, 2), (5, 3), (64, 2), (7, 7)] {
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            run_parts(parts, threads, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                // A region inside a part of a parallel region runs all its parts on this thread.
                let me = thread::current().id();
                if parts > 1 {
                    run_parts(3, 3, &|_| assert_eq!(thread::current().id(), me));
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{parts} parts on {threads} threads");
        }
        for bad in [0, 1] {
            let caught = catch_unwind(|| run_parts(2, 2, &|i| assert!(i != bad, "part {i} fails")));
            let msg = caught.expect_err("the panic reaches the caller");
            let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(text, format!("part {bad} fails"));
        }
        // The pool still works after a panic, also when regions follow each other closely (a
        // worker that did not take one job in time must not run it later).
        for _ in 0..1000 {
            let sum = AtomicUsize::new(0);
            run_ranges(100, 4, 2, &|r| {
                sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
            });
            assert_eq!(sum.into_inner(), 4950);
        }
    }
}
