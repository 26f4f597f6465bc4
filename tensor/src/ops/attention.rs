//! Fused scaled dot-product attention kernels: the forward and the backward of
//! `softmax(q kᵀ · scale + bias, masked) v`, one `[L, S]` block at a time.
//!
//! Done with separate tensor ops, attention writes and re-reads several `[.., L, S]` temporaries
//! (scores, scaled, masked, max, exp, sum, probabilities; more in backward), each a fresh
//! allocation the size of all the scores. Here each (batch, head) entry is one GEMM into its own
//! block of the saved probabilities, one pass over each row for bias, mask and softmax, one GEMM
//! out; backward is four GEMMs and one row pass per entry, over a scratch block that stays in
//! cache. Masks are read through their broadcast strides, never materialised at `[.., L, S]`;
//! a causal mask is a flag. Entries are split over the matmul thread pool.
//!
//! These are building blocks for the attention op of `ferrograd-nn`, which records them with
//! their gradients; most users want `ferrograd_nn::functional::scaled_dot_product_attention`.

use crate::element::{DType, Float};
use crate::layout::broadcast_shapes;
use crate::ops::matmul::{min_work_per_thread, num_threads, parallel_ranges, with_packing};
use crate::ops::packed_gemm::Kernel;
use crate::ops::simd_map;
use crate::ops::unary::exp_f32;
use crate::tensor::Tensor;

/// The masks of [`Tensor::attention_forward`], each broadcast to the scores `[.., L, S]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionMasks<'a, E: Float> {
    /// Added to the scaled scores.
    pub bias: Option<&'a Tensor<E>>,
    /// `true` where a query may attend to a key.
    pub keep: Option<&'a Tensor<bool>>,
    /// Query `i` sees keys `0..=i` (top-left aligned).
    pub causal: bool,
    /// Multiplies the probabilities before they meet `v` (dropout's `0` or `1 / (1 - p)`).
    pub dropout: Option<&'a Tensor<E>>,
}

/// What [`Tensor::attention_forward`] returns.
#[derive(Clone, Debug)]
pub struct AttentionForward<E: Float> {
    /// `[.., L, Ev]`.
    pub out: Tensor<E>,
    /// The probabilities `[.., L, S]` (before dropout); rows with every key masked are zero.
    pub probs: Tensor<E>,
}

/// What [`Tensor::attention_backward`] returns, each at the broadcast batch shape.
#[derive(Clone, Debug)]
pub struct AttentionGrads<E: Float> {
    /// `[.., L, E]`.
    pub q: Tensor<E>,
    /// `[.., S, E]`.
    pub k: Tensor<E>,
    /// `[.., S, Ev]`.
    pub v: Tensor<E>,
    /// The gradient of the scores `[.., L, S]` (that of an additive bias), if asked for.
    pub scores: Option<Tensor<E>>,
}

/// A pointer the threads of one call write disjoint entries through.
#[derive(Clone, Copy)]
struct SyncPtr<E>(*mut E);
// SAFETY (both impls): every thread writes only the entries of its own range of (batch, head)
// entries, and the buffers outlive the threads because `parallel_ranges` returns only after every
// job has finished.
unsafe impl<E: Send> Send for SyncPtr<E> {}
unsafe impl<E: Send> Sync for SyncPtr<E> {}

impl<E> SyncPtr<E> {
    fn get(self) -> *mut E {
        self.0
    }
}

/// Where the entries of a fresh output (`out`, or a gradient) go: `[rows, cols]` blocks one after
/// another, or interleaved across the last batch dim as the input it follows is. Multi-head
/// attention's q, k and v are `[B, L, H, E]` projections permuted to `[B, H, L, E]`: their heads
/// lie inside their rows. An output following such an input is written `[B, L, H, E]` and
/// returned as the same permuted view, so that putting the heads back together (permute, then
/// reshape) is a view, not a copy, in the forward and in the backward (PyTorch's fused attention
/// returns its output in that layout too).
#[derive(Clone, Copy)]
struct Blocks {
    /// The last batch dim's size if interleaved, else 1.
    inner: usize,
    rows: usize,
    cols: usize,
}

impl Blocks {
    /// The layout for an output of `[rows, cols]` entries over `batch` that follows `like`.
    fn following<T: crate::element::Element>(like: &Tensor<T>, batch: &[usize], rows: usize, cols: usize) -> Blocks {
        let (r, st) = (like.rank(), like.strides());
        let inner = match batch.last() {
            Some(&h) if r >= 3 && rows > 1 && like.shape()[r - 3] == h && st[r - 3] > 0 && st[r - 3] < st[r - 2] => h,
            _ => 1,
        };
        Blocks { inner, rows, cols }
    }

    /// Where entry `b`'s block starts.
    fn offset(self, b: usize) -> usize {
        (b / self.inner) * self.rows * self.inner * self.cols + (b % self.inner) * self.cols
    }

    /// The stride between a block's rows.
    fn ld(self) -> usize {
        self.inner * self.cols
    }

    /// The tensor of `batch` entries held in `data`.
    fn tensor<T: crate::element::Element>(self, data: Vec<T>, batch: &[usize]) -> Tensor<T> {
        let mut shape = batch.to_vec();
        if self.inner == 1 {
            shape.extend([self.rows, self.cols]);
            return Tensor::from_vec(data, &shape);
        }
        shape.pop();
        shape.extend([self.rows, self.inner, self.cols]);
        Tensor::from_vec(data, &shape).transpose(-3, -2)
    }
}

/// A tensor read where it lies as a batch of `[rows, cols]` blocks (a mask broadcast to the
/// scores, or an operand to its batch): storage, the offset of each entry, and row/column
/// strides. The operands are not copied to contiguous blocks: the products read them through
/// their strides, so the heads of a projection (a permuted view) cost no copy on the way in
/// (nor on the way out: see [`Blocks`]).
struct BlockView<'a, T> {
    data: &'a [T],
    offsets: Vec<usize>,
    rs: isize,
    cs: isize,
}

impl<'a, T: crate::element::Element> BlockView<'a, T> {
    fn new(t: &'a Tensor<T>, full: &[usize]) -> Self {
        let b = t.broadcast_to(full);
        let r = full.len();
        let (rs, cs) = (b.strides()[r - 2], b.strides()[r - 1]);
        let mut offsets = Vec::new();
        crate::iter::for_each_offset(&full[..r - 2], [&b.strides()[..r - 2]], [b.offset()], |[o]| offsets.push(o));
        BlockView { data: t.storage(), offsets, rs, cs }
    }

    /// `t` broadcast to `batch` followed by its own last two dims.
    fn batched(t: &'a Tensor<T>, batch: &[usize]) -> Self {
        let r = t.rank();
        let mut full = batch.to_vec();
        full.extend_from_slice(&t.shape()[r - 2..]);
        BlockView::new(t, &full)
    }

    /// Where entry `n`'s block starts (a pointer for the products, which read it through `rs`
    /// and `cs`).
    #[inline]
    fn entry(&self, n: usize) -> *const T {
        self.data.as_ptr().wrapping_add(self.offsets[n])
    }

    #[inline]
    fn at(&self, n: usize, i: usize, j: usize) -> T {
        self.data[(self.offsets[n] as isize + i as isize * self.rs + j as isize * self.cs) as usize]
    }
}

/// `c[i * ldc + j] = alpha Σ_kk a[i rsa + kk csa] b[kk rsb + j csb]` for `i < m`, `j < n`: one
/// (batch, head) entry's product. In f32, a product whose left operand has contiguous rows
/// (`q kᵀ`, `p v`, `g vᵀ`, `ds k`) runs on the packed kernel that `matmul` uses for layers: B
/// packed into this thread's packing buffer (`matmul`'s, reused by every entry and call), A read
/// where it lies. The transposed left operands (`pᵀ g`, `dsᵀ q`), f64, CPUs without AVX2 and
/// negative strides go to `E::gemm`: transposing A into a scratch block first, or packing it,
/// made the 256-key SDPA benchmark 6-31% slower than leaving those two to matrixmultiply. At the
/// transformer benchmark's 64 x 32 x 64 entries, matrixmultiply's packing of both operands was
/// a third of the attention's product time.
///
/// # Safety
/// As `E::gemm` with `beta = 0`: `a`, `b` valid for reads at every element the strides
/// address, `c` valid for writes at its `m` rows of `n`, and nothing else writes them.
#[allow(clippy::too_many_arguments)]
unsafe fn product<E: Float>(
    (m, k, n): (usize, usize, usize),
    alpha: E,
    (a, rsa, csa): (*const E, isize, isize),
    (b, rsb, csb): (*const E, isize, isize),
    c: *mut E,
    ldc: usize,
) {
    let kernel = Kernel::best();
    let f32_ok = std::any::TypeId::of::<E>() == std::any::TypeId::of::<f32>() && kernel != Kernel::Scalar;
    if !f32_ok || csa != 1 || m == 0 || n == 0 || k == 0 || rsa < 0 || rsb < 0 || csb < 0 {
        // SAFETY: the caller's contract is `E::gemm`'s.
        unsafe { E::gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, E::zero(), c, ldc as isize, 1) };
        return;
    }
    let (a, b, c) = (a.cast::<f32>(), b.cast::<f32>(), c.cast::<f32>());
    let (rsa, rsb, csb) = (rsa as usize, rsb as usize, csb as usize);
    // SAFETY: `E` is `f32` (checked above); the strides are non-negative, so these are the
    // elements the contract says are readable, from the first to the last one addressed.
    let b = unsafe { std::slice::from_raw_parts(b, (k - 1) * rsb + (n - 1) * csb + 1) };
    // SAFETY: as for `b`.
    let a = unsafe { std::slice::from_raw_parts(a, (m - 1) * rsa + k) };
    with_packing(kernel, b, k, n, rsb, csb, &|packed| {
        // SAFETY: `c`'s `m` rows of `n` are this call's to write (the contract); `a` holds
        // `m` rows of depth `k` at stride `rsa`.
        unsafe { packed.gemm_to(m, a, rsa, None, c, ldc) }
    });
    let alpha = alpha.to_f64() as f32;
    if alpha != 1.0 {
        for i in 0..m {
            // SAFETY: row `i` of `c`, just written by this call.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n) };
            row.iter_mut().for_each(|x| *x *= alpha);
        }
    }
}

/// Splits `n` entries of `work` multiply-adds each over the pool when it pays.
fn for_entries(n: usize, work: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    let threads = num_threads().min(n).min((n * work / min_work_per_thread().max(1)).max(1));
    if threads <= 1 {
        f(0..n)
    } else {
        parallel_ranges(n, threads, f)
    }
}

/// The batch shape `q`, `k`, `v` and the masks broadcast to.
#[track_caller]
fn batch_shapes<E: Float>(q: &Tensor<E>, k: &Tensor<E>, v: &Tensor<E>, masks: &AttentionMasks<'_, E>) -> Vec<usize> {
    const OP: &str = "attention_forward";
    let (rq, rk, rv) = (q.rank(), k.rank(), v.rank());
    assert!(
        rq >= 2
            && rk >= 2
            && rv >= 2
            && q.shape()[rq - 1] == k.shape()[rk - 1]
            && k.shape()[rk - 2] == v.shape()[rv - 2],
        "{OP}: query {:?}, key {:?} and value {:?} are not [.., L, E], [.., S, E], [.., S, Ev]",
        q.shape(),
        k.shape(),
        v.shape()
    );
    let mut batch = broadcast_shapes(&q.shape()[..rq - 2], &k.shape()[..rk - 2])
        .and_then(|b| broadcast_shapes(&b, &v.shape()[..rv - 2]))
        .unwrap_or_else(|| {
            panic!(
                "{OP}: the batch dims of query {:?}, key {:?} and value {:?} do not broadcast",
                q.shape(),
                k.shape(),
                v.shape()
            )
        })
        .to_vec();
    let (l, s) = (q.shape()[rq - 2], k.shape()[rk - 2]);
    let mut scores = batch.clone();
    scores.extend([l, s]);
    for shape in [masks.bias.map(|b| b.shape()), masks.keep.map(|m| m.shape()), masks.dropout.map(|d| d.shape())]
        .into_iter()
        .flatten()
    {
        let full = broadcast_shapes(&scores, shape);
        assert!(full.is_some(), "{OP}: a mask of shape {shape:?} does not broadcast to the scores' shape {scores:?}");
        scores = full.expect("checked").to_vec();
    }
    batch.clear();
    batch.extend_from_slice(&scores[..scores.len() - 2]);
    assert!(
        scores[scores.len() - 2..] == [l, s],
        "{OP}: a mask broadcasts the scores [L, S] = [{l}, {s}] to {:?}",
        &scores[scores.len() - 2..]
    );
    batch
}

impl<E: Float> Tensor<E> {
    /// `softmax(self kᵀ · scale + bias, masked) v` with `self` the query `[.., L, E]`, `k`
    /// `[.., S, E]`, `v` `[.., S, Ev]` (batch dims broadcast, and the masks with them), and the
    /// probabilities it used. A row whose every key is masked gets zero probabilities.
    ///
    /// The probabilities are contiguous. The output is too, unless the query's heads lie inside
    /// its rows (the last batch dim's stride is below the rows', as for heads split from one
    /// `[B, L, H, E]` projection and permuted to `[B, H, L, E]`): then the output is laid out
    /// `[B, L, H, Ev]` and returned as the same permuted view, so that merging the heads back is
    /// a view. [`attention_backward`](Self::attention_backward)'s gradients follow `q`, `k` and
    /// `v` the same way.
    ///
    /// ```
    /// use ferrograd_tensor::{AttentionMasks, Tensor};
    /// let q = Tensor::<f64>::zeros(&[2, 3, 4]);
    /// let kv = Tensor::<f64>::ones(&[2, 5, 4]);
    /// let masks = AttentionMasks { causal: true, ..Default::default() };
    /// let f = q.attention_forward(&kv, &kv, 0.5, &masks);
    /// assert_eq!(f.out.shape(), &[2, 3, 4]);
    /// assert_eq!(f.probs.to_vec()[..5], [1.0, 0.0, 0.0, 0.0, 0.0]); // query 0 sees key 0 only
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit (the message names the shapes).
    #[track_caller]
    pub fn attention_forward(
        &self,
        k: &Tensor<E>,
        v: &Tensor<E>,
        scale: E,
        masks: &AttentionMasks<'_, E>,
    ) -> AttentionForward<E> {
        let batch = batch_shapes(self, k, v, masks);
        let n: usize = batch.iter().product();
        let (l, e) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        let (s, ev) = (k.shape()[k.rank() - 2], v.shape()[v.rank() - 1]);
        let (q, k, v) =
            (BlockView::batched(self, &batch), BlockView::batched(k, &batch), BlockView::batched(v, &batch));
        let mut full = batch.clone();
        full.extend([l, s]);
        let bias = masks.bias.map(|b| BlockView::new(b, &full));
        let keep = masks.keep.map(|m| BlockView::new(m, &full));
        let drop = masks.dropout.map(|d| BlockView::new(d, &full));
        // Zero-filled although every entry's product writes all of its blocks: left
        // uninitialised (so the kernels' stores met lines not yet in cache), the transformer
        // benchmark's packed product loop took 900 perf samples in 60 steps instead of 270,
        // against about 200 for the memsets.
        let mut probs: Vec<E> = vec![E::zero(); n * l * s];
        let mut out: Vec<E> = vec![E::zero(); n * l * ev];
        let (pp, po) = (SyncPtr(probs.as_mut_ptr()), SyncPtr(out.as_mut_ptr()));
        let ob = Blocks::following(self, &batch, l, ev);
        let causal = masks.causal;
        for_entries(n, l * s * (e + ev), &|range| {
            let mut scratch = if drop.is_some() { vec![E::zero(); l * s] } else { Vec::new() };
            for b in range {
                // Entry b's blocks of `probs` and `out` are written by this thread only.
                let pb = pp.get().wrapping_add(b * l * s);
                // SAFETY: q is [l, e] and k [s, e] (kᵀ read with the strides swapped) where they lie,
                // entry b of the views; entry b's [l, s] block of `probs` (room for n entries).
                unsafe { product((l, e, s), scale, (q.entry(b), q.rs, q.cs), (k.entry(b), k.cs, k.rs), pb, s) };
                // SAFETY: entry b's l * s elements of `probs` (initialised), which only this
                // thread touches while the slice lives.
                let p = unsafe { std::slice::from_raw_parts_mut(pb, l * s) };
                // The row pass (masks, max, exponentials, sum) compiled for the widest vectors.
                simd_map::run_widest(
                    #[inline(always)]
                    || {
                        for i in 0..l {
                            let row = &mut p[i * s..(i + 1) * s];
                            if let Some(bias) = &bias {
                                row.iter_mut().enumerate().for_each(|(j, x)| *x += bias.at(b, i, j));
                            }
                            if let Some(keep) = &keep {
                                row.iter_mut().enumerate().for_each(|(j, x)| {
                                    if !keep.at(b, i, j) {
                                        *x = E::neg_infinity()
                                    }
                                });
                            }
                            // Keys after a causal query's position get probability 0 without an exp.
                            let end = if causal { (i + 1).min(s) } else { s };
                            row[end..].fill(E::zero());
                            softmax_row(&mut row[..end]);
                        }
                    },
                );
                let src = match &drop {
                    Some(d) => {
                        for (idx, (o, &x)) in scratch.iter_mut().zip(p.iter()).enumerate() {
                            *o = x * d.at(b, idx / s.max(1), idx % s.max(1));
                        }
                        scratch.as_slice()
                    }
                    None => &*p,
                };
                // SAFETY: src is [l, s] and out's entry [l, ev] row-major, v [s, ev] where it lies.
                unsafe {
                    product(
                        (l, s, ev),
                        E::one(),
                        (src.as_ptr(), s as isize, 1),
                        (v.entry(b), v.rs, v.cs),
                        po.get().add(ob.offset(b)),
                        ob.ld(),
                    );
                }
            }
        });
        AttentionForward { out: ob.tensor(out, &batch), probs: Tensor::from_vec(probs, &full) }
    }

    /// The gradients of [`Tensor::attention_forward`] with respect to the query (`self`), `k`, `v`
    /// and (if `want_scores`) the scores, from the forward's `probs`, its dropout multipliers and
    /// the output's gradient `grad` `[.., L, Ev]`. Gradients come at the broadcast batch shape;
    /// sum them to the inputs' own shapes.
    ///
    /// ```
    /// use ferrograd_tensor::{AttentionMasks, Tensor};
    /// let q = Tensor::<f64>::from_fn(&[3, 4], |i| i as f64 * 0.1);
    /// let kv = Tensor::<f64>::from_fn(&[5, 4], |i| (i as f64).sin());
    /// let f = q.attention_forward(&kv, &kv, 0.5, &AttentionMasks::default());
    /// let g = q.attention_backward(&kv, &kv, &f.probs, None, &Tensor::ones(&[3, 4]), 0.5, false);
    /// assert_eq!((g.q.shape(), g.k.shape(), g.v.shape()), (&[3, 4][..], &[5, 4][..], &[5, 4][..]));
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit the forward's.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn attention_backward(
        &self,
        k: &Tensor<E>,
        v: &Tensor<E>,
        probs: &Tensor<E>,
        dropout: Option<&Tensor<E>>,
        grad: &Tensor<E>,
        scale: E,
        want_scores: bool,
    ) -> AttentionGrads<E> {
        let masks = AttentionMasks { dropout, ..Default::default() };
        let batch = batch_shapes(self, k, v, &masks);
        let batch = broadcast_shapes(&batch, &probs.shape()[..probs.rank() - 2]).expect("probs fit").to_vec();
        let n: usize = batch.iter().product();
        let (l, e) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        let (s, ev) = (k.shape()[k.rank() - 2], v.shape()[v.rank() - 1]);
        let mut full = batch.clone();
        full.extend([l, s]);
        let mut gshape = batch.clone();
        gshape.extend([l, ev]);
        assert!(
            probs.shape() == full.as_slice() && grad.shape() == gshape.as_slice(),
            "attention_backward: probs {:?} and grad {:?} are not {full:?} and {gshape:?}",
            probs.shape(),
            grad.shape()
        );
        let (bq, bk, bv) = (
            Blocks::following(self, &batch, l, e),
            Blocks::following(k, &batch, s, e),
            Blocks::following(v, &batch, s, ev),
        );
        let (q, k, v) =
            (BlockView::batched(self, &batch), BlockView::batched(k, &batch), BlockView::batched(v, &batch));
        let (p, g) = (probs.contiguous(), BlockView::batched(grad, &batch));
        let drop = dropout.map(|d| BlockView::new(d, &full));
        // Zero-filled, as the forward's outputs.
        let (mut dq, mut dk, mut dv): (Vec<E>, Vec<E>, Vec<E>) =
            (vec![E::zero(); n * l * e], vec![E::zero(); n * s * e], vec![E::zero(); n * s * ev]);
        let mut ds_all = if want_scores { vec![E::zero(); n * l * s] } else { Vec::new() };
        let (pq, pk, pv, pds) = (
            SyncPtr(dq.as_mut_ptr()),
            SyncPtr(dk.as_mut_ptr()),
            SyncPtr(dv.as_mut_ptr()),
            SyncPtr(ds_all.as_mut_ptr()),
        );
        let ps = p.storage();
        for_entries(n, l * s * (2 * e + 2 * ev), &|range| {
            let mut local = if want_scores { Vec::new() } else { vec![E::zero(); l * s] };
            let mut pd = if drop.is_some() { vec![E::zero(); l * s] } else { Vec::new() };
            for b in range {
                let pb = &ps[b * l * s..(b + 1) * l * s];
                // Entry b's block of the scores' gradient, written by this thread only.
                let ds = if want_scores { pds.get().wrapping_add(b * l * s) } else { local.as_mut_ptr() };
                let pdrop: &[E] = match &drop {
                    Some(d) => {
                        for (idx, (o, &x)) in pd.iter_mut().zip(pb).enumerate() {
                            *o = x * d.at(b, idx / s.max(1), idx % s.max(1));
                        }
                        &pd
                    }
                    None => pb,
                };
                // SAFETY (the four products): entry b's blocks of the sizes named, row-major or (q, k,
                // v, g) where they lie, transposes read with swapped strides; the outputs are this
                // entry's blocks, written by this thread.
                unsafe {
                    // dv = pdropᵀ g: [s, l] x [l, ev]
                    product(
                        (s, l, ev),
                        E::one(),
                        (pdrop.as_ptr(), 1, s as isize),
                        (g.entry(b), g.rs, g.cs),
                        pv.get().add(bv.offset(b)),
                        bv.ld(),
                    );
                    // dpdrop = g vᵀ: [l, ev] x [ev, s]
                    product((l, ev, s), E::one(), (g.entry(b), g.rs, g.cs), (v.entry(b), v.cs, v.rs), ds, s);
                }
                // SAFETY: entry b's l * s elements of the scores' gradient, or this thread's own
                // `local` (both initialised), which only this thread touches while the slice lives.
                let ds = unsafe { std::slice::from_raw_parts_mut(ds, l * s) };
                simd_map::run_widest(
                    #[inline(always)]
                    || {
                        for i in 0..l {
                            let (prow, drow) = (&pb[i * s..(i + 1) * s], &mut ds[i * s..(i + 1) * s]);
                            if let Some(d) = &drop {
                                drow.iter_mut().enumerate().for_each(|(j, x)| *x *= d.at(b, i, j));
                            }
                            let dot = dot_lanes(prow, drow);
                            drow.iter_mut().zip(prow).for_each(|(d, &p)| *d = p * (*d - dot));
                        }
                    },
                );
                unsafe {
                    // dq = scale ds k: [l, s] x [s, e]
                    product(
                        (l, s, e),
                        scale,
                        (ds.as_ptr(), s as isize, 1),
                        (k.entry(b), k.rs, k.cs),
                        pq.get().add(bq.offset(b)),
                        bq.ld(),
                    );
                    // dk = scale dsᵀ q: [s, l] x [l, e]
                    product(
                        (s, l, e),
                        scale,
                        (ds.as_ptr(), 1, s as isize),
                        (q.entry(b), q.rs, q.cs),
                        pk.get().add(bk.offset(b)),
                        bk.ld(),
                    );
                }
            }
        });
        AttentionGrads {
            q: bq.tensor(dq, &batch),
            k: bk.tensor(dk, &batch),
            v: bv.tensor(dv, &batch),
            scores: want_scores.then(|| Tensor::from_vec(ds_all, &full)),
        }
    }
}

/// Lanes of [`softmax_row`]'s max and sum: each lane reduces its own stride of the row, in order,
/// and the lanes are combined in a fixed order, so the result does not depend on the vector width
/// (16 fills an AVX-512 register with f32).
const LANES: usize = 16;

/// `sum p[j] d[j]` in [`LANES`] partial sums combined in a fixed order (the same bits on every
/// vector width), so the softmax backward's row pass vectorises.
#[inline(always)]
fn dot_lanes<E: Float>(p: &[E], d: &[E]) -> E {
    let mut sums = [E::zero(); LANES];
    let (pc, dc) = (p.chunks_exact(LANES), d.chunks_exact(LANES));
    let tail = pc.remainder().iter().zip(dc.remainder()).fold(E::zero(), |a, (&x, &y)| a + x * y);
    for (pc, dc) in pc.zip(dc) {
        for ((acc, &x), &y) in sums.iter_mut().zip(pc).zip(dc) {
            *acc += x * y;
        }
    }
    sums.iter().fold(E::zero(), |a, &x| a + x) + tail
}

/// Softmax of one row in place; a row of `-inf` becomes zeros. f32 exponentials go through the
/// branch-free [`exp_f32`] so the row vectorises (within 2-3 ulp of libm's); f64 through libm.
#[inline(always)]
fn softmax_row<E: Float>(row: &mut [E]) {
    let mut lanes = [E::neg_infinity(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes.iter().chain(chunks.remainder()).fold(E::neg_infinity(), |m, &x| if x > m { x } else { m });
    if max == E::neg_infinity() {
        row.fill(E::zero());
        return;
    }
    let exp = |x: E| match E::DTYPE {
        DType::F32 => E::from_f64(exp_f32(x.to_f64() as f32) as f64),
        _ => x.exp(),
    };
    let mut sums = [E::zero(); LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (acc, x) in sums.iter_mut().zip(c) {
            *x = exp(*x - max);
            *acc += *x;
        }
    }
    let mut sum = sums.iter().fold(E::zero(), |a, &x| a + x);
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    let inv = E::one() / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::packed_gemm::Kernel;

    /// Rows of every length around the lane count, with masked (`-inf`) keys and a fully masked
    /// row: each instruction set gives the same bits, and the f32 row is within a few ulp of the
    /// plain f64 softmax.
    #[test]
    fn softmax_row_and_dot_match_f64_and_are_the_same_bits_on_every_instruction_set() {
        #[cfg(target_arch = "x86_64")]
        let kernels = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];
        #[cfg(not(target_arch = "x86_64"))]
        let kernels = [Kernel::Scalar];
        for len in [1usize, 2, 15, 16, 17, 31, 32, 33, 64, 100] {
            for masked in [0usize, 1, 5, len] {
                let row: Vec<f32> = (0..len)
                    .map(|j| {
                        if j % 7 == 3 && j / 7 < masked || masked == len {
                            f32::NEG_INFINITY
                        } else {
                            ((j * 37) % 23) as f32 * 0.7 - 8.0
                        }
                    })
                    .collect();
                let wide: Vec<f64> = row.iter().map(|&x| x as f64).collect();
                let max = wide.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = wide.iter().map(|&x| (x - max).exp()).sum();
                let want: Vec<f64> =
                    wide.iter().map(|&x| if max == f64::NEG_INFINITY { 0.0 } else { (x - max).exp() / sum }).collect();
                let mut scalar = row.clone();
                softmax_row(&mut scalar);
                for (g, w) in scalar.iter().zip(&want) {
                    assert!((*g as f64 - w).abs() <= 1e-6 * w + 1e-30, "len {len}, masked {masked}: {g} against {w}");
                }
                let other: Vec<f32> = (0..len).map(|j| ((j * 13) % 17) as f32 * 0.25 - 2.0).collect();
                let dot_f64: f64 = scalar.iter().zip(&other).map(|(&a, &b)| a as f64 * b as f64).sum();
                let dot = dot_lanes(&scalar, &other);
                assert!((dot as f64 - dot_f64).abs() <= 1e-5, "dot, len {len}: {dot} against {dot_f64}");
                for k in kernels.into_iter().filter(|k| k.available()) {
                    assert_eq!(
                        simd_map::run_with(
                            k,
                            #[inline(always)]
                            || dot_lanes(&scalar, &other)
                        )
                        .to_bits(),
                        dot.to_bits(),
                        "dot at {k:?}"
                    );
                    let mut got = row.clone();
                    simd_map::run_with(
                        k,
                        #[inline(always)]
                        || softmax_row(&mut got),
                    );
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&scalar), "len {len}, masked {masked}, {k:?}");
                }
            }
        }
    }
}
