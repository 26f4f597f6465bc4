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

/// The most blocks a region's parts are cut into (see [`Job::run_claimed`]); with more threads,
/// several share a block.
const BLOCKS: usize = 8;

/// One region: parts `0..parts` of `f`, cut into one block of consecutive parts per thread
/// (the caller's first). Each thread runs its own block's parts in order, then claims the
/// unclaimed ones of the others (the caller and the workers that picked the job up).
///
/// Aligned to its own cache lines (it lives on the caller's stack, whose other lines the
/// caller writes while the workers read `f` and count `claimed` and `pending`).
#[repr(align(128))]
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    parts: usize,
    /// How many blocks the parts are cut into: one per thread, at most [`BLOCKS`].
    blocks: usize,
    /// Parts claimed so far from each block (counted past its end once it is exhausted).
    claimed: [Counter; BLOCKS],
    /// Workers that were handed the job and have not yet finished with it or given it back.
    pending: AtomicUsize,
    /// The first worker panic's payload.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// One block's claim counter, on cache lines of its own: each thread counts its own block up
/// while the others only look at it once they run out of work.
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicUsize);

impl Job<'_> {
    /// Runs parts until none is left unclaimed: first those of block `me` (the caller is 0,
    /// worker `i` of the pool is `i + 1`), then the others' leftovers, block by block.
    ///
    /// Kernels cut their output into parts in memory order, so with a block per thread a
    /// thread keeps working on the same share of each tensor from one region to the next, the
    /// share whose lines its own core's cache holds (claimed one by one, 8 parts alternated
    /// between the threads: each pass read half of its input from the other core's cache).
    /// A thread that is late (a worker waking from park) is covered for by the others.
    fn run_claimed(&self, me: usize) {
        let own = me % self.blocks;
        for b in (own..self.blocks).chain(0..own) {
            let (start, end) = (b * self.parts / self.blocks, (b + 1) * self.parts / self.blocks);
            loop {
                let i = start.saturating_add(self.claimed[b].0.fetch_add(1, Ordering::Relaxed));
                if i >= end {
                    break;
                }
                (self.f)(i);
            }
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
    /// The worker's block in every job: its place in the pool plus one (the caller is 0).
    index: usize,
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

fn spawn_worker(index: usize) -> Worker {
    let slot = Arc::new(Slot { job: AtomicPtr::new(ptr::null_mut()), index });
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
                    if let Err(e) = catch_unwind(AssertUnwindSafe(|| job.run_claimed(mine.index))) {
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
        for c in &self.job.claimed {
            c.0.store(self.job.parts, Ordering::Relaxed);
        }
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
/// runs a block of consecutive parts (the caller the first), then helps with the others' until
/// none is left, so which thread runs a part depends on timing: `f(i)` must compute the same
/// whichever thread runs it (kernels cut their work by shape, and each part writes its own
/// output). Runs every part on the caller when the pool is busy (another region, or called from
/// inside a part).
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
        let index = pool.len() + 1;
        pool.push(spawn_worker(index));
    }
    let job = Job {
        f,
        parts,
        blocks: (helpers + 1).min(BLOCKS),
        claimed: Default::default(),
        pending: AtomicUsize::new(helpers),
        panic: Mutex::new(None),
    };
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
        job.run_claimed(0);
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
        // More threads than blocks (12 against 8) share blocks; fewer parts than threads leave
        // some threads without a block of their own.
        for (parts, threads) in [(1, 2), (2, 2), (3, 2), (5, 2), (5, 3), (64, 2), (7, 7), (20, 12), (3, 12)] {
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
