//! Matrix products: [`Tensor::matmul`] with PyTorch's semantics (1-D, 2-D, batched with NumPy
//! broadcasting of the batch dims), the checked [`Tensor::mm`] and [`Tensor::dot`], and the thread
//! count they use.
//!
//! Every product is one matrixmultiply sgemm/dgemm call per batch entry (or per block of one),
//! given the operands' own row and column strides: matrixmultiply accepts any strides for A and
//! B (negative and zero included), so transposed, stepped, flipped and broadcast views are
//! multiplied where they lie, never copied. Broadcast batch dims are stride 0 in the per-batch
//! offsets. The output is a fresh contiguous tensor.
//!
//! One exception: a single f32 product whose left operand's rows are contiguous (a layer's
//! `x W^T` and `g W`, and [`Tensor::linear`], whose bias then starts the sums) runs on the
//! packed kernel of `packed_gemm`, which packs only B and reads A in place (see `packed_f32`).
//!
//! Threading is ours, not matrixmultiply's: its `threading` feature fixes the thread count once
//! per process and splits even a 128x128 product over the pool, which made that size slower
//! (81 vs 131 GFLOP/s on 2 cores). So the workspace builds matrixmultiply single-threaded, and a
//! product is split here only when each thread gets at least [`min_work_per_thread`]
//! multiply-adds: whole batch entries go to threads first, and a single large product is cut
//! into row blocks (or column blocks when it is wider than tall) of the output, or, when its
//! depth dwarfs its output, into two halves of the depth whose products are added (a cut made by
//! shape alone, so the same bits on any thread count; see `depth_halves`). The threads come
//! from a persistent pool of workers that spin briefly before parking (module `threads`),
//! because spawning scoped threads per call made 256x256 products slower than one thread (120
//! vs 150 GFLOP/s).

use std::borrow::Cow;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::packed_gemm::{Kernel, PackedB};
use crate::element::{retype_ref, Float};
use crate::iter::for_each_offset;
use crate::layout::{broadcast_shapes, Layout, Shape};
use crate::tensor::Tensor;

/// Threads matmul may use; 0 until first asked for, then the default or the user's choice.
static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Default of [`min_work_per_thread`]: 2^19 multiply-adds, about 8-10 µs of single-threaded
/// f32 work, so 128x128x64 products use 2 threads and 64x64x64 ones stay on 1. The pool's workers
/// spin for 100 µs after a job, so back-to-back regions of a training step start in well under a
/// microsecond (waking a parked worker costs ~8 µs, ~40 µs in the tail on a busy machine). At
/// 2^20 the MLP's 128x128x64 products at batch 128 (the second layer's forward and both its
/// gradients) stayed on one thread, 17% of the main thread's samples in a 2-thread step; the
/// earlier 2^22 left every product of an MLP at batch 32 (32x784x128, 3.2M) on one thread. Raise
/// it with [`set_min_work_per_thread`] on a machine whose cores are shared with other work.
const DEFAULT_MIN_WORK_PER_THREAD: usize = 1 << 19;

static MIN_WORK_PER_THREAD: AtomicUsize = AtomicUsize::new(DEFAULT_MIN_WORK_PER_THREAD);

/// The most threads [`set_num_threads`] accepts.
const MAX_THREADS: usize = 1 << 12;

/// A split narrower than this many rows (or columns) wastes most of the GEMM micro-kernel's tile.
const MIN_BLOCK: usize = 16;

/// The depth from which a product whose depth is at least twice its output's larger side is cut
/// in two halves along the depth ([`depth_halves`]): matrixmultiply's depth block (256) twice.
const MIN_SPLIT_DEPTH: usize = 512;

/// The least output side for [`depth_halves`]: with fewer rows (an MLP at batch 32) the copy of
/// the narrow operand that a row or column split packs twice is small, and the extra partial
/// product and sum made the 2-thread step 6% slower.
const MIN_SPLIT_SIDE: usize = 64;

/// Where a single product `[m, k] x [k, n]` is cut along its depth `k`, if at all: for products
/// like an MLP's first layer (128 x 784 x 128) or a transformer's weight gradients (the depth is
/// the batch's tokens). Cut by output rows, each thread packs all of B again (matrixmultiply
/// packs the operands it is given), so the packing, a third of such a product's time, did not
/// shrink with threads; cut along the depth, each thread packs half of A and half of B, and the
/// two partial products are added.
///
/// The cut depends on the shape alone, never on the thread count, and one thread computes the
/// same two halves in turn: the sum `(first half) + (second half)` is the same bits on any number
/// of threads.
fn depth_halves(entries: usize, m: usize, k: usize, n: usize) -> Option<usize> {
    (entries == 1 && m.min(n) >= MIN_SPLIT_SIDE && k >= MIN_SPLIT_DEPTH && k >= 2 * m.max(n)).then_some(k / 2)
}

/// Sets how many threads matrix products may use (including the calling thread), for the whole
/// process. Like PyTorch's `torch.set_num_threads`.
///
/// The default is the `MATMUL_NUM_THREADS` environment variable if it holds a positive number,
/// else [`std::thread::available_parallelism`]. Small products run on the calling thread
/// whatever this says (see [`min_work_per_thread`]).
///
/// ```
/// ferrograd_tensor::set_num_threads(1);
/// assert_eq!(ferrograd_tensor::num_threads(), 1);
/// ```
///
/// # Panics
/// If `n` is 0 or above 4096.
#[track_caller]
pub fn set_num_threads(n: usize) {
    assert!((1..=MAX_THREADS).contains(&n), "set_num_threads: expected 1..={MAX_THREADS} threads, got {n}");
    NUM_THREADS.store(n, Ordering::Relaxed);
}

/// The number of threads matrix products may use (see [`set_num_threads`]).
pub fn num_threads() -> usize {
    match NUM_THREADS.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok());
            let n = from_env
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .min(MAX_THREADS);
            NUM_THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the least work, in multiply-adds, that a product must give each thread before it is
/// split (default 2^19, about 8-10 µs of f32 work). Raise it on a busy machine, lower it on one with
/// idle cores; 0 splits every product that can be split.
pub fn set_min_work_per_thread(mul_adds: usize) {
    MIN_WORK_PER_THREAD.store(mul_adds, Ordering::Relaxed);
}

/// The least work per thread, in multiply-adds, before a product is split (see
/// [`set_min_work_per_thread`]).
pub fn min_work_per_thread() -> usize {
    MIN_WORK_PER_THREAD.load(Ordering::Relaxed)
}

/// Runs `f` over `0..units` split into `threads` nearly equal ranges on the shared pool (for
/// kernels other than matmul that split their own work).
pub(crate) fn parallel_ranges(units: usize, threads: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    crate::threads::run_ranges(units, threads, threads, f);
}

/// Runs `f` on every item on the pool that matrix products use, with up to [`num_threads`]
/// threads, each taking the next item not yet taken (a single item runs on the calling thread).
/// Which thread runs an item depends on timing, so `f` must not depend on it; more items than
/// threads balance the load when one thread is slowed down. For kernels outside this crate that split their own
/// work, e.g. an optimizer step cut into [`threads_for`] chunks of its parameter: each item
/// holds the disjoint `&mut` slices one thread writes.
///
/// ```
/// let mut data = vec![1.0f32; 1000];
/// let threads = ferrograd_tensor::threads_for(data.len(), 100);
/// let chunks: Vec<&mut [f32]> = data.chunks_mut(1000usize.div_ceil(threads)).collect();
/// ferrograd_tensor::parallel_for_each(chunks, &|c: &mut [f32]| c.iter_mut().for_each(|x| *x *= 2.0));
/// assert!(data.iter().all(|&x| x == 2.0));
/// ```
pub fn parallel_for_each<T: Send>(items: Vec<T>, f: &(impl Fn(T) + Sync)) {
    if items.len() <= 1 {
        items.into_iter().for_each(f);
        return;
    }
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    crate::threads::run_parts(slots.len(), num_threads(), &|i| {
        if let Some(t) = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take() {
            f(t);
        }
    });
}

/// Multiply-adds that one element of an elementwise pass counts for against
/// [`min_work_per_thread`].
const ELEMENTWISE_WORK: usize = 16;

/// The least elements per thread before an elementwise pass over a tensor is split:
/// [`min_work_per_thread`] / 16, so 2^15 at the default (10-30 µs of work against ~8 µs to wake
/// a parked worker; LeNet's activations at batch 64 hold 100k-300k elements), 0 when that is 0.
///
/// ```
/// let threads = ferrograd_tensor::threads_for(1 << 20, ferrograd_tensor::elementwise_min_per_thread());
/// assert!(threads >= 1);
/// ```
pub fn elementwise_min_per_thread() -> usize {
    min_work_per_thread() / ELEMENTWISE_WORK
}

/// A vector of `len` elements built in parallel: `0..len` is cut into [`parts_for`] consecutive
/// ranges for [`threads_for`]`(len, min_per_thread)` threads, and `f(range)` yields the elements
/// of each range, on whichever thread of the pool claims it. Each element comes from the same call of `f`
/// whatever the thread count, so a pure `f` gives bit-identical vectors on any number of threads.
///
/// For elementwise kernels over large tensors, e.g. a gradient `g * f'(x)`:
///
/// ```
/// let (g, x) = (vec![2.0f32; 100_000], vec![3.0f32; 100_000]);
/// let out = ferrograd_tensor::parallel_collect(g.len(), 1 << 15, &|r: std::ops::Range<usize>| {
///     g[r.clone()].iter().zip(&x[r]).map(|(&g, &x)| g * x)
/// });
/// assert!(out.len() == 100_000 && out.iter().all(|&v| v == 6.0));
/// ```
///
/// # Panics
/// If a call of `f` yields a number of elements other than its range's length (or panics).
pub fn parallel_collect<T: Send, I: Iterator<Item = T>>(
    len: usize,
    min_per_thread: usize,
    f: &(impl Fn(Range<usize>) -> I + Sync),
) -> Vec<T> {
    let threads = threads_for(len, min_per_thread);
    let parts = parts_for(threads, len / min_per_thread.max(1));
    if threads <= 1 {
        let out: Vec<T> = f(0..len).collect();
        assert_eq!(out.len(), len, "parallel_collect: the range 0..{len} yielded {} elements", out.len());
        return out;
    }
    let mut out: Vec<T> = Vec::with_capacity(len);
    let parts = unit_chunks(&mut out.spare_capacity_mut()[..len], len, 1, parts);
    let wrong = std::sync::atomic::AtomicBool::new(false);
    parallel_for_each(parts, &|(r, part): (Range<usize>, &mut [MaybeUninit<T>])| {
        let (mut items, mut written) = (f(r), 0);
        for (slot, v) in part.iter_mut().zip(&mut items) {
            slot.write(v);
            written += 1;
        }
        if written != part.len() || items.next().is_some() {
            wrong.store(true, Ordering::Relaxed);
        }
    });
    // As the one-thread path, which panics on a longer or shorter iterator.
    assert!(
        !wrong.into_inner(),
        "parallel_collect: a range of 0..{len} yielded a number of elements other than its length"
    );
    // SAFETY: the parts cover `0..len` of the spare capacity, each was written element by
    // element (counted above), and `parallel_for_each` returned after every part was done.
    unsafe { out.set_len(len) };
    out
}

/// Writes `v` over every element of `s` and returns it initialised: kernels that split their
/// output over threads clear each part on its own thread (one thread zeroing a LeNet gradient
/// of 1.2 MB took 4% of a 2-thread step).
pub(crate) fn fill_uninit<T: Copy>(s: &mut [MaybeUninit<T>], v: T) -> &mut [T] {
    s.fill(MaybeUninit::new(v));
    // SAFETY: every element was written just above, and `MaybeUninit<T>` has the layout of `T`.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Threads for a pass over `len` elements that pays only with at least `min_per_thread`
/// elements per thread: between 1 and [`num_threads`].
///
/// ```
/// ferrograd_tensor::set_num_threads(2);
/// assert_eq!(ferrograd_tensor::threads_for(10, 100), 1);
/// assert_eq!(ferrograd_tensor::threads_for(1000, 100), 2);
/// ```
pub fn threads_for(len: usize, min_per_thread: usize) -> usize {
    num_threads().min(len / min_per_thread.max(1)).max(1)
}

/// Parts to cut a pass over `units` independent units into when it runs on `threads` threads:
/// [`PARTS_PER_THREAD`] per thread (at most `units`), 1 on one thread. The threads claim parts
/// as they become free, so a thread that starts late (a worker waking from park) or is slowed
/// down leaves its share to the others instead of making them wait at the end.
///
/// Only for passes whose units are computed the same way whichever part holds them
/// (elementwise maps, samples of a batch, planes of a pooling): a reduction across units must
/// cut its work by shape alone.
///
/// ```
/// assert_eq!(ferrograd_tensor::parts_for(1, 1000), 1);
/// assert_eq!(ferrograd_tensor::parts_for(2, 1000), 8);
/// assert_eq!(ferrograd_tensor::parts_for(2, 3), 3);
/// ```
pub fn parts_for(threads: usize, units: usize) -> usize {
    if threads <= 1 {
        1
    } else {
        threads.saturating_mul(PARTS_PER_THREAD).min(units).max(1)
    }
}

/// `data` (`per` elements a unit: a row, a sample, a plane) cut into `parts` runs of whole
/// units, with their unit ranges: part `i` holds units `i * units / parts..(i + 1) * units /
/// parts`. The pieces a split region hands its threads.
pub(crate) fn unit_chunks<T>(data: &mut [T], units: usize, per: usize, parts: usize) -> Vec<(Range<usize>, &mut [T])> {
    assert!(data.len() == units * per && parts > 0, "unit_chunks: {} elements for {units} x {per}", data.len());
    let mut rest = data;
    (0..parts)
        .map(|i| {
            let r = i * units / parts..(i + 1) * units / parts;
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * per);
            rest = tail;
            (r, part)
        })
        .collect()
}

/// Parts per thread of [`parts_for`]: enough that a worker starting ~10 µs late into a
/// 100 µs region costs the region ~1/8 of that, few enough that the claims (one atomic add
/// each) and per-part set-up stay negligible.
const PARTS_PER_THREAD: usize = 4;

/// The output pointer shared by the threads of one product.
#[derive(Clone, Copy)]
struct OutPtr<E>(*mut E);
// SAFETY (both impls): the threads of one product write disjoint blocks of the output through
// copies of this pointer (see `multiply`), and the output outlives them because `parallel_ranges`
// returns only after every job has finished.
unsafe impl<E: Send> Send for OutPtr<E> {}
unsafe impl<E: Send> Sync for OutPtr<E> {}

impl<E> OutPtr<E> {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather than its field).
    fn get(self) -> *mut E {
        self.0
    }
}

/// The operands of `C[e] = A[e] B[e]` for every batch entry `e`, C contiguous `[entries, m, n]`.
struct Product<'a, E> {
    a: &'a [E],
    b: &'a [E],
    m: usize,
    k: usize,
    n: usize,
    a_strides: (isize, isize),
    b_strides: (isize, isize),
}

impl<E: Float> Product<'_, E> {
    /// Writes output rows `lo..hi` (`split_rows`) or output columns `lo..hi` of entry `entry`,
    /// whose A and B start at storage offsets `oa` and `ob`.
    ///
    /// # Safety
    /// `out` has room for `(entry + 1) * m * n` elements; `oa` and `ob` index the first element
    /// of non-empty `m x k` and `k x n` views of `a` and `b` with `a_strides` and `b_strides`;
    /// `lo < hi <= m` (or `n`); nothing else accesses those output elements meanwhile.
    unsafe fn block(
        &self,
        out: *mut E,
        entry: usize,
        (oa, ob): (usize, usize),
        split_rows: bool,
        lo: usize,
        hi: usize,
    ) {
        let (m, k, n) = (self.m, self.k, self.n);
        let ((rsa, csa), (rsb, csb)) = (self.a_strides, self.b_strides);
        // SAFETY: per the contract, `oa`/`ob` are elements of `a`/`b`, and moving `lo` rows down
        // A or `lo` columns along B lands on another element of the view; C's block is inside
        // `out` and written by this call alone.
        unsafe {
            let (a, b, c) = (self.a.as_ptr().add(oa), self.b.as_ptr().add(ob), out.add(entry * m * n));
            if split_rows {
                let (a, c) = (a.offset(lo as isize * rsa), c.add(lo * n));
                E::gemm(hi - lo, k, n, E::one(), a, rsa, csa, b, rsb, csb, E::zero(), c, n as isize, 1);
            } else {
                let (b, c) = (b.offset(lo as isize * csb), c.add(lo));
                E::gemm(m, k, hi - lo, E::one(), a, rsa, csa, b, rsb, csb, E::zero(), c, n as isize, 1);
            }
        }
    }

    /// Writes the single entry's product over depths `depths` only (all of C, `m x n`
    /// row-major) into `out`: one half of a depth split (see [`depth_halves`]).
    ///
    /// # Safety
    /// As [`Product::block`] for entry 0, with `depths` a non-empty range inside `0..k` in place
    /// of the row or column range.
    unsafe fn depth_block(&self, out: *mut E, (oa, ob): (usize, usize), depths: Range<usize>) {
        let (m, n) = (self.m, self.n);
        let ((rsa, csa), (rsb, csb)) = (self.a_strides, self.b_strides);
        // SAFETY: per the contract, moving `depths.start` along A's columns and B's rows lands
        // on elements of the views, and `depths.len()` more stay inside them; C is `out`'s
        // m x n elements, written by this call alone.
        unsafe {
            let a = self.a.as_ptr().add(oa).offset(depths.start as isize * csa);
            let b = self.b.as_ptr().add(ob).offset(depths.start as isize * rsb);
            E::gemm(m, depths.len(), n, E::one(), a, rsa, csa, b, rsb, csb, E::zero(), out, n as isize, 1);
        }
    }
}

/// `a @ b` for layouts already promoted to rank >= 2, with the batch dims broadcast to `batch`.
fn multiply<E: Float>(a: &Tensor<E>, la: &Layout, b: &Tensor<E>, lb: &Layout, batch: &[usize]) -> Vec<E> {
    let (ra, rb) = (la.rank(), lb.rank());
    let (m, k, n) = (la.shape[ra - 2], la.shape[ra - 1], lb.shape[rb - 1]);
    let entries: usize = batch.iter().product();
    let len = entries * m * n;
    if len == 0 || k == 0 {
        return vec![E::zero(); len];
    }
    // Per-entry operand offsets, visited in the output's row-major entry order.
    let for_each_entry = |f: &mut dyn FnMut([usize; 2])| {
        if batch.is_empty() {
            return f([la.offset, lb.offset]);
        }
        let batch_strides = |l: &Layout, r: usize| {
            Layout::new(Shape::from_slice(&l.shape[..r - 2]), l.strides[..r - 2].into(), 0)
                .broadcast_strides(batch)
                .expect("batch dims broadcast")
        };
        let (sa, sb) = (batch_strides(la, ra), batch_strides(lb, rb));
        for_each_offset(batch, [&sa, &sb], [la.offset, lb.offset], f);
    };
    let job = Product {
        a: &a.storage,
        b: &b.storage,
        m,
        k,
        n,
        a_strides: (la.strides[ra - 2], la.strides[ra - 1]),
        b_strides: (lb.strides[rb - 2], lb.strides[rb - 1]),
    };
    if entries == 1 {
        if let Some(out) = packed_f32(&job, (la.offset, lb.offset), None) {
            return out;
        }
    }
    // Left uninitialised: with beta = 0 sgemm/dgemm write every element of C without reading it
    // (zero-filling first cost 3-4% at n = 64 and 256 against direct sgemm).
    let mut out: Vec<E> = Vec::with_capacity(len);
    let c = OutPtr(out.as_mut_ptr());

    if let Some(half) = depth_halves(entries, m, k, n) {
        let mut second: Vec<E> = Vec::with_capacity(len);
        let c2 = OutPtr(second.as_mut_ptr());
        let offsets = (la.offset, lb.offset);
        let work = m.saturating_mul(k).saturating_mul(n);
        let threads = num_threads().min(work / min_work_per_thread().max(1)).clamp(1, 2);
        let part = |i: usize| {
            let (depths, dst) = if i == 0 { (0..half, c) } else { (half..k, c2) };
            // SAFETY: the single entry's operands start at `offsets` (entries == 1); `depths`
            // is a non-empty range inside 0..k (0 < half < k); each part writes its own buffer
            // of room `len`, which nothing else touches.
            unsafe { job.depth_block(dst.get(), offsets, depths) };
        };
        if threads > 1 {
            crate::threads::run_parts(2, threads, &part);
        } else {
            part(0);
            part(1);
        }
        // SAFETY: each part's product wrote all `len` elements of its buffer.
        unsafe {
            out.set_len(len);
            second.set_len(len);
        }
        crate::ops::simd_map::run_widest(
            #[inline(always)]
            || out.iter_mut().zip(&second).for_each(|(x, &y)| *x += y),
        );
        return out;
    }

    // Whole batch entries split best (nothing is packed twice); cut each entry into row (or
    // column) blocks only as far as needed for every thread to get the same number of units.
    let work = entries.saturating_mul(m).saturating_mul(k).saturating_mul(n);
    let threads = num_threads().min(work / min_work_per_thread().max(1)).max(1);
    let split_rows = m >= n;
    let span = if split_rows { m } else { n };
    let parts = (threads / gcd(entries, threads)).min((span / MIN_BLOCK).max(1));
    let threads = threads.min(entries * parts);
    if threads == 1 {
        let mut entry = 0;
        for_each_entry(&mut |[oa, ob]| {
            // SAFETY: entries are visited once each, in order, with their operands' offsets;
            // `out` has room for all of them and the sizes are non-zero (checked above).
            unsafe { job.block(c.get(), entry, (oa, ob), true, 0, m) };
            entry += 1;
        });
    } else {
        let mut offsets = Vec::with_capacity(entries);
        for_each_entry(&mut |[oa, ob]| offsets.push((oa, ob)));
        parallel_ranges(entries * parts, threads, &|units| {
            for u in units {
                let (entry, part) = (u / parts, u % parts);
                let (lo, hi) = (part * span / parts, (part + 1) * span / parts);
                // SAFETY: unit `u` is the only one writing block `part` of `entry`; offsets and
                // sizes as in the single-threaded branch.
                unsafe { job.block(c.get(), entry, offsets[entry], split_rows, lo, hi) };
            }
        });
    }
    // SAFETY: the calls above covered every row (or column) block of every entry, and each gemm
    // call with beta = 0 wrote all elements of its block, so all `len` elements are initialised.
    unsafe { out.set_len(len) };
    out
}

/// The fewest output rows for [`packed_f32`]: below one micro-tile, packing all of B for a
/// few rows buys little.
const MIN_PACKED_ROWS: usize = 8;

/// The largest right-hand operand (in f32s) [`packed_f32`] takes: 2 MiB. Layer weights are far
/// below it (784 x 128 is 0.4 MiB); at 1024 x 1024 the packed kernel ran 5-7% slower than
/// matrixmultiply (`cargo bench --bench matmul`), which blocks its columns to keep B in cache.
const MAX_PACKED_B: usize = 1 << 19;

/// The largest packing buffer (in f32s) a thread keeps for its next product: 4 MiB, so any
/// packing of at most [`MAX_PACKED_B`] (plus its panels' zero padding).
const KEEP_PACKING: usize = 1 << 20;

/// The most output rows for which [`packed_f32`] splits a product by B's column panels rather
/// than by rows: up to here, packing B is a large share of the product (a quarter of an MLP
/// layer's at batch 32), and a row split would leave it to one thread.
const MAX_COLUMN_SPLIT_ROWS: usize = 512;

thread_local! {
    /// The right-hand operand of this thread's last [`packed_f32`] product, whose buffer the
    /// next one packs into (no allocation, no page faults in a training step's products).
    static PACKING: RefCell<Option<PackedB>> = const { RefCell::new(None) };
}

/// A single f32 product whose left operand's rows are contiguous (`x W^T` forward, `g W`
/// backward: a layer's input or output gradient against its weight), plus `bias` on every row
/// if given, on the packed kernel of `packed_gemm`: B is packed once, A is read in place.
/// matrixmultiply packs both operands on every call (and again in every thread of a split
/// product). On a transformer's and an MLP's layer products, one thread, it ran at 0.97-1.38x
/// sgemm's speed, 1.17-1.38x on most (`cargo bench --bench matmul -- layer_`). `None` (the caller uses E::gemm) for f64, for a left operand read by columns (a
/// weight gradient `g^T x`, where packing it cost more than it saved), negative strides, fewer
/// than [`MIN_PACKED_ROWS`] rows, a B larger than [`MAX_PACKED_B`], or a CPU without AVX2.
///
/// On several threads, a product of few rows (an MLP's batch) is cut by B's column panels: each
/// thread packs and multiplies its own panels, so the packing is split too. One of many rows (a
/// transformer's tokens) is cut by rows against one shared packing. Either way every output
/// element is one kernel's sum over the whole depth in the same order: the same bits on any
/// thread count.
fn packed_f32<E: Float>(job: &Product<E>, (oa, ob): (usize, usize), bias: Option<&[E]>) -> Option<Vec<E>> {
    let (m, k, n) = (job.m, job.k, job.n);
    let ((rsa, csa), (rsb, csb)) = (job.a_strides, job.b_strides);
    let kernel = Kernel::best();
    if kernel == Kernel::Scalar
        || m < MIN_PACKED_ROWS
        || k.saturating_mul(n) > MAX_PACKED_B
        || csa != 1
        || rsa < 0
        || rsb < 0
        || csb < 0
    {
        return None;
    }
    let (a, b) = (retype_ref::<E, f32>(&job.a[oa..])?, retype_ref::<E, f32>(&job.b[ob..])?);
    let bias = match bias {
        Some(bias) => Some(retype_ref::<E, f32>(bias)?),
        None => None,
    };
    let (lda, rsb, csb) = (rsa as usize, rsb as usize, csb as usize);
    let len = m * n;
    let mut out: Vec<E> = Vec::with_capacity(len);
    let c = OutPtr(out.as_mut_ptr().cast::<f32>());

    let work = m.saturating_mul(k).saturating_mul(n);
    let (mr, nr) = (kernel.mr(), kernel.nr());
    let (tiles, panels) = (m.div_ceil(mr), n.div_ceil(nr));
    let threads = num_threads().min(work / min_work_per_thread().max(1)).max(1);
    if threads > 1 && panels >= 2 && m <= MAX_COLUMN_SPLIT_ROWS {
        let parts = parts_for(threads, panels);
        crate::threads::run_parts(parts, threads, &|i| {
            let cols = (i * panels / parts * nr).min(n)..((i + 1) * panels / parts * nr).min(n);
            with_packing(kernel, &b[cols.start * csb..], k, cols.len(), rsb, csb, &|packed| {
                // SAFETY: part `i` alone writes columns `cols` of the `m x n` output, which has
                // room for them (capacity `len`, row stride n).
                unsafe { packed.gemm_to(m, a, lda, bias.map(|b| &b[cols.clone()]), c.get().add(cols.start), n) }
            });
        });
    } else {
        with_packing(kernel, b, k, n, rsb, csb, &|packed| {
            let parts = if threads > 1 { parts_for(threads.min(tiles), tiles) } else { 1 };
            let part = |i: usize| {
                let rows = (i * tiles / parts * mr).min(m)..((i + 1) * tiles / parts * mr).min(m);
                // SAFETY: part `i` alone writes rows `rows` of the output (room for all `m`).
                unsafe { packed.gemm_to(rows.len(), &a[rows.start * lda..], lda, bias, c.get().add(rows.start * n), n) }
            };
            if parts == 1 {
                part(0)
            } else {
                crate::threads::run_parts(parts, threads, &part)
            }
        });
    }
    // SAFETY: the parts cover all rows (or all columns) of the output, and `gemm_to` wrote
    // every element of each, so all `len` elements are initialised.
    unsafe { out.set_len(len) };
    Some(out)
}

/// Runs `f` on `b` (`[k, n]`, strides `rsb`, `csb`) packed for `kernel`, in this thread's
/// kept packing buffer (see [`PACKING`]).
pub(crate) fn with_packing(
    kernel: Kernel,
    b: &[f32],
    k: usize,
    n: usize,
    rsb: usize,
    csb: usize,
    f: &dyn Fn(&PackedB),
) {
    PACKING.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let packed = match slot.take() {
                Some(mut p) if p.kernel() == kernel => {
                    p.repack(b, k, n, rsb, csb);
                    p
                }
                _ => PackedB::new(kernel, b, k, n, rsb, csb),
            };
            f(&packed);
            *slot = (packed.capacity() <= KEEP_PACKING).then_some(packed);
        }
        // Only if a product ran inside another's packing (not done today): pack afresh.
        Err(_) => f(&PackedB::new(kernel, b, k, n, rsb, csb)),
    });
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl<E: Float> Tensor<E> {
    /// Matrix product with exactly `torch.matmul`'s semantics.
    ///
    /// - 1-D · 1-D: the dot product, a 0-d tensor.
    /// - 2-D · 2-D: the matrix product `[m, k] · [k, n] -> [m, n]`.
    /// - 1-D · 2-D: `[k] · [k, n] -> [n]` (a 1 is prepended to the vector, then removed).
    /// - 2-D · 1-D: `[m, k] · [k] -> [m]`.
    /// - N-D: batched over the leading dims, which broadcast NumPy-style, e.g.
    ///   `[2, 1, 3, 4] · [5, 4, 6] -> [2, 5, 3, 6]`; a 1-D operand is promoted as above.
    ///
    /// Operands are read through their own strides (transposed or broadcast views are not
    /// copied); the result is contiguous. Large products use up to [`num_threads`] threads.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// let b = Tensor::from_vec(vec![1.0f32, 0.0, 1.0], &[3]);
    /// assert_eq!(a.matmul(&b).to_vec(), vec![4.0, 10.0]);
    /// // a @ a^T, the transpose is a view.
    /// assert_eq!(a.matmul(&a.t()).to_vec(), vec![14.0, 32.0, 32.0, 77.0]);
    /// let batched = Tensor::<f32>::ones(&[2, 1, 3, 4]).matmul(&Tensor::ones(&[5, 4, 6]));
    /// assert_eq!(batched.shape(), &[2, 5, 3, 6]);
    /// ```
    ///
    /// # Panics
    /// If an operand is 0-d, if the inner sizes differ, or if the batch dims do not broadcast;
    /// the message names both shapes, e.g. `matmul: shapes [2, 3] and [4, 5] are not compatible
    /// (3 != 4)`.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor<E>) -> Tensor<E> {
        self.matmul_op("matmul", other)
    }

    /// The product of two matrices, `[m, k] · [k, n] -> [m, n]` (PyTorch's `mm`).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    /// assert_eq!(a.mm(&Tensor::eye(2)).to_vec(), a.to_vec());
    /// ```
    ///
    /// # Panics
    /// If either operand is not 2-D or the inner sizes differ.
    #[track_caller]
    pub fn mm(&self, other: &Tensor<E>) -> Tensor<E> {
        if self.rank() != 2 || other.rank() != 2 {
            panic!("mm: expects two 2-D tensors, got shapes {:?} and {:?}", self.shape(), other.shape());
        }
        self.matmul_op("mm", other)
    }

    /// The dot product of two vectors of equal length, as a 0-d tensor (PyTorch's `dot`).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// assert_eq!(a.dot(&a).item(), 14.0);
    /// ```
    ///
    /// # Panics
    /// If either operand is not 1-D or the lengths differ.
    #[track_caller]
    pub fn dot(&self, other: &Tensor<E>) -> Tensor<E> {
        if self.rank() != 1 || other.rank() != 1 {
            panic!("dot: expects two 1-D tensors, got shapes {:?} and {:?}", self.shape(), other.shape());
        }
        self.matmul_op("dot", other)
    }

    /// `self · weightᵀ + bias` over the last dim (PyTorch's `nn.functional.linear`): `self`
    /// `[.., in]`, `weight` `[out, in]`, `bias` `[out]`, the result `[.., out]`.
    ///
    /// All leading dims go through one product (the weight packed once). In f32 with the
    /// input's rows contiguous, the bias is where the product's sums start, as in PyTorch's
    /// `addmm` (so the bits can differ from `self.matmul(&weight.t()) + bias` by rounding);
    /// otherwise it is added to the product's rows in place, the same bits as that sum but
    /// without a second output. Without a bias, the result is `self.matmul(&weight.t())`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let w = Tensor::from_vec(vec![1.0, 0.0, 1.0, 1.0, 0.0, -1.0], &[3, 2]);
    /// let b = Tensor::from_vec(vec![0.5, 0.0, 1.0], &[3]);
    /// assert_eq!(x.linear(&w, Some(&b)).to_vec(), vec![1.5, 3.0, -1.0, 3.5, 7.0, -3.0]);
    /// ```
    ///
    /// # Panics
    /// If `self` is 0-d, `weight` is not 2-D with `in` columns, or `bias` is not `[out]`; the
    /// message names the shapes.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor<E>, bias: Option<&Tensor<E>>) -> Tensor<E> {
        let (sx, sw) = (self.shape(), weight.shape());
        if sx.is_empty() || sw.len() != 2 || sw[1] != sx[sx.len() - 1] {
            panic!("linear: input shape {sx:?} does not end in in_features of weight shape {sw:?}");
        }
        let (k, n) = (sw[1], sw[0]);
        if let Some(b) = bias {
            if b.shape() != [n] {
                panic!("linear: bias shape {:?} is not [{n}] for weight shape {sw:?}", b.shape());
            }
        }
        let rows: usize = sx[..sx.len() - 1].iter().product();
        let (x, wt) = (self.reshape(&[rows, k]), weight.t());
        let job = Product {
            a: &x.storage,
            b: &wt.storage,
            m: rows,
            k,
            n,
            a_strides: (x.layout.strides[0], x.layout.strides[1]),
            b_strides: (wt.layout.strides[0], wt.layout.strides[1]),
        };
        // In f32 with rows in place, the bias is where the packed kernel's sums start.
        let bias_data = bias.map(Tensor::contiguous);
        let fused = (rows > 0 && k > 0 && n > 0)
            .then(|| {
                packed_f32(
                    &job,
                    (x.layout.offset, wt.layout.offset),
                    bias_data.as_ref().map(|b| b.as_slice().expect("contiguous")),
                )
            })
            .flatten();
        let bias_added = fused.is_some();
        let mut y = match fused {
            Some(data) => Tensor::from_storage(data, Layout::contiguous(&[rows, n])),
            None => x.matmul(&wt),
        };
        if let (Some(b), false) = (&bias_data, bias_added) {
            let bs = b.as_slice().expect("contiguous");
            let data = std::sync::Arc::get_mut(&mut y.storage).expect("a product's output is not shared");
            let add_rows = |chunk: &mut [E]| {
                crate::ops::simd_map::run_widest(
                    #[inline(always)]
                    || {
                        for row in chunk.chunks_exact_mut(n) {
                            for (y, &b) in row.iter_mut().zip(bs) {
                                *y += b;
                            }
                        }
                    },
                )
            };
            let threads = threads_for(data.len(), elementwise_min_per_thread()).min(rows);
            if threads > 1 {
                let parts = unit_chunks(data, rows, n, parts_for(threads, rows));
                parallel_for_each(parts, &|(_, chunk): (Range<usize>, &mut [E])| add_rows(chunk));
            } else if n > 0 {
                add_rows(data);
            }
        }
        let mut shape = sx.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        y.reshape(&shape)
    }

    #[track_caller]
    fn matmul_op(&self, op: &str, other: &Tensor<E>) -> Tensor<E> {
        let (sa, sb) = (self.shape(), other.shape());
        if sa.is_empty() || sb.is_empty() {
            panic!("{op}: both arguments need to be at least 1-D, got shapes {sa:?} and {sb:?}");
        }
        // A vector is a 1-row matrix on the left and a 1-column matrix on the right (views).
        let la = if sa.len() == 1 { Cow::Owned(self.layout.unsqueeze(0)) } else { Cow::Borrowed(&self.layout) };
        let lb = if sb.len() == 1 { Cow::Owned(other.layout.unsqueeze(1)) } else { Cow::Borrowed(&other.layout) };
        let (ra, rb) = (la.rank(), lb.rank());
        let (m, k, k2, n) = (la.shape[ra - 2], la.shape[ra - 1], lb.shape[rb - 2], lb.shape[rb - 1]);
        if k != k2 {
            panic!("{op}: shapes {sa:?} and {sb:?} are not compatible ({k} != {k2})");
        }
        let (batch_a, batch_b) = (&la.shape[..ra - 2], &lb.shape[..rb - 2]);
        let Some(batch) = broadcast_shapes(batch_a, batch_b) else {
            panic!(
                "{op}: shapes {sa:?} and {sb:?} are not compatible (batch dims {batch_a:?} and {batch_b:?} \
                 cannot be broadcast together)"
            )
        };
        let data = multiply(self, &la, other, &lb, &batch);
        let mut shape = batch;
        if sa.len() > 1 {
            shape.push(m);
        }
        if sb.len() > 1 {
            shape.push(n);
        }
        Tensor::from_storage(data, Layout::contiguous(&shape))
    }
}
