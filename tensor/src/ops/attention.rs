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

use crate::element::Float;
use crate::layout::broadcast_shapes;
use crate::ops::matmul::{min_work_per_thread, num_threads, parallel_ranges};
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

/// A mask broadcast to the scores: storage, the offset of each entry, and row/column strides.
struct MaskView<'a, T> {
    data: &'a [T],
    offsets: Vec<usize>,
    rs: isize,
    cs: isize,
}

impl<'a, T: crate::element::Element> MaskView<'a, T> {
    fn new(t: &'a Tensor<T>, full: &[usize]) -> Self {
        let b = t.broadcast_to(full);
        let r = full.len();
        let (rs, cs) = (b.strides()[r - 2], b.strides()[r - 1]);
        let mut offsets = Vec::new();
        crate::iter::for_each_offset(&full[..r - 2], [&b.strides()[..r - 2]], [b.offset()], |[o]| offsets.push(o));
        MaskView { data: t.storage(), offsets, rs, cs }
    }

    #[inline]
    fn at(&self, n: usize, i: usize, j: usize) -> T {
        self.data[(self.offsets[n] as isize + i as isize * self.rs + j as isize * self.cs) as usize]
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

/// `q`, `k`, `v` (and a gradient) broadcast to one batch shape and made contiguous.
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

fn expand<E: Float>(t: &Tensor<E>, batch: &[usize]) -> Tensor<E> {
    let r = t.rank();
    let mut shape = batch.to_vec();
    shape.extend_from_slice(&t.shape()[r - 2..]);
    if t.shape() == shape.as_slice() {
        t.contiguous()
    } else {
        t.broadcast_to(&shape).contiguous()
    }
}

impl<E: Float> Tensor<E> {
    /// `softmax(self kᵀ · scale + bias, masked) v` with `self` the query `[.., L, E]`, `k`
    /// `[.., S, E]`, `v` `[.., S, Ev]` (batch dims broadcast, and the masks with them), and the
    /// probabilities it used. A row whose every key is masked gets zero probabilities.
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
        let (q, k, v) = (expand(self, &batch), expand(k, &batch), expand(v, &batch));
        let n: usize = batch.iter().product();
        let (l, e) = (q.shape()[q.rank() - 2], q.shape()[q.rank() - 1]);
        let (s, ev) = (k.shape()[k.rank() - 2], v.shape()[v.rank() - 1]);
        let mut full = batch.clone();
        full.extend([l, s]);
        let bias = masks.bias.map(|b| MaskView::new(b, &full));
        let keep = masks.keep.map(|m| MaskView::new(m, &full));
        let drop = masks.dropout.map(|d| MaskView::new(d, &full));
        let mut probs = vec![E::zero(); n * l * s];
        let mut out = vec![E::zero(); n * l * ev];
        let (pp, po) = (SyncPtr(probs.as_mut_ptr()), SyncPtr(out.as_mut_ptr()));
        let (qs, ks, vs) = (q.storage(), k.storage(), v.storage());
        let causal = masks.causal;
        for_entries(n, l * s * (e + ev), &|range| {
            let mut scratch = if drop.is_some() { vec![E::zero(); l * s] } else { Vec::new() };
            for b in range {
                // SAFETY: entry b's blocks of `probs` and `out` are written by this thread only.
                let p = unsafe { std::slice::from_raw_parts_mut(pp.get().add(b * l * s), l * s) };
                let (qb, kb, vb) = (&qs[b * l * e..], &ks[b * s * e..], &vs[b * s * ev..]);
                // SAFETY: q is [l, e] row-major, kᵀ is k [s, e] read with strides (1, e), p is [l, s].
                unsafe {
                    E::gemm(
                        l,
                        e,
                        s,
                        scale,
                        qb.as_ptr(),
                        e as isize,
                        1,
                        kb.as_ptr(),
                        1,
                        e as isize,
                        E::zero(),
                        p.as_mut_ptr(),
                        s as isize,
                        1,
                    );
                }
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
                    if causal {
                        row.iter_mut().skip(i + 1).for_each(|x| *x = E::neg_infinity());
                    }
                    softmax_row(row);
                }
                let src = match &drop {
                    Some(d) => {
                        for (idx, (o, &x)) in scratch.iter_mut().zip(p.iter()).enumerate() {
                            *o = x * d.at(b, idx / s.max(1), idx % s.max(1));
                        }
                        scratch.as_slice()
                    }
                    None => &*p,
                };
                // SAFETY: src is [l, s], v [s, ev], out's entry [l, ev], all row-major.
                unsafe {
                    E::gemm(
                        l,
                        s,
                        ev,
                        E::one(),
                        src.as_ptr(),
                        s as isize,
                        1,
                        vb.as_ptr(),
                        ev as isize,
                        1,
                        E::zero(),
                        po.get().add(b * l * ev),
                        ev as isize,
                        1,
                    );
                }
            }
        });
        let mut out_shape = batch.clone();
        out_shape.extend([l, ev]);
        AttentionForward { out: Tensor::from_vec(out, &out_shape), probs: Tensor::from_vec(probs, &full) }
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
        let (q, k, v) = (expand(self, &batch), expand(k, &batch), expand(v, &batch));
        let n: usize = batch.iter().product();
        let (l, e) = (q.shape()[q.rank() - 2], q.shape()[q.rank() - 1]);
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
        let (p, g) = (probs.contiguous(), grad.contiguous());
        let drop = dropout.map(|d| MaskView::new(d, &full));
        let (mut dq, mut dk, mut dv) =
            (vec![E::zero(); n * l * e], vec![E::zero(); n * s * e], vec![E::zero(); n * s * ev]);
        let mut ds_all = if want_scores { vec![E::zero(); n * l * s] } else { Vec::new() };
        let (pq, pk, pv, pds) = (
            SyncPtr(dq.as_mut_ptr()),
            SyncPtr(dk.as_mut_ptr()),
            SyncPtr(dv.as_mut_ptr()),
            SyncPtr(ds_all.as_mut_ptr()),
        );
        let (qs, ks, vs, ps, gs) = (q.storage(), k.storage(), v.storage(), p.storage(), g.storage());
        for_entries(n, l * s * (2 * e + 2 * ev), &|range| {
            let mut local = if want_scores { Vec::new() } else { vec![E::zero(); l * s] };
            let mut pd = if drop.is_some() { vec![E::zero(); l * s] } else { Vec::new() };
            for b in range {
                let (qb, kb, vb) = (&qs[b * l * e..], &ks[b * s * e..], &vs[b * s * ev..]);
                let (pb, gb) = (&ps[b * l * s..(b + 1) * l * s], &gs[b * l * ev..]);
                let ds: &mut [E] = if want_scores {
                    // SAFETY: entry b's block of the scores' gradient is written by this thread only.
                    unsafe { std::slice::from_raw_parts_mut(pds.get().add(b * l * s), l * s) }
                } else {
                    &mut local
                };
                let pdrop: &[E] = match &drop {
                    Some(d) => {
                        for (idx, (o, &x)) in pd.iter_mut().zip(pb).enumerate() {
                            *o = x * d.at(b, idx / s.max(1), idx % s.max(1));
                        }
                        &pd
                    }
                    None => pb,
                };
                // SAFETY (the four products): row-major blocks of the sizes named, transposes read
                // with swapped strides; the outputs are this entry's blocks, written by this thread.
                unsafe {
                    // dv = pdropᵀ g: [s, l] x [l, ev]
                    E::gemm(
                        s,
                        l,
                        ev,
                        E::one(),
                        pdrop.as_ptr(),
                        1,
                        s as isize,
                        gb.as_ptr(),
                        ev as isize,
                        1,
                        E::zero(),
                        pv.get().add(b * s * ev),
                        ev as isize,
                        1,
                    );
                    // dpdrop = g vᵀ: [l, ev] x [ev, s]
                    E::gemm(
                        l,
                        ev,
                        s,
                        E::one(),
                        gb.as_ptr(),
                        ev as isize,
                        1,
                        vb.as_ptr(),
                        1,
                        ev as isize,
                        E::zero(),
                        ds.as_mut_ptr(),
                        s as isize,
                        1,
                    );
                }
                for i in 0..l {
                    let (prow, drow) = (&pb[i * s..(i + 1) * s], &mut ds[i * s..(i + 1) * s]);
                    if let Some(d) = &drop {
                        drow.iter_mut().enumerate().for_each(|(j, x)| *x *= d.at(b, i, j));
                    }
                    let dot = prow.iter().zip(drow.iter()).fold(E::zero(), |acc, (&p, &d)| acc + p * d);
                    drow.iter_mut().zip(prow).for_each(|(d, &p)| *d = p * (*d - dot));
                }
                unsafe {
                    // dq = scale ds k: [l, s] x [s, e]
                    E::gemm(
                        l,
                        s,
                        e,
                        scale,
                        ds.as_ptr(),
                        s as isize,
                        1,
                        kb.as_ptr(),
                        e as isize,
                        1,
                        E::zero(),
                        pq.get().add(b * l * e),
                        e as isize,
                        1,
                    );
                    // dk = scale dsᵀ q: [s, l] x [l, e]
                    E::gemm(
                        s,
                        l,
                        e,
                        scale,
                        ds.as_ptr(),
                        1,
                        s as isize,
                        qb.as_ptr(),
                        e as isize,
                        1,
                        E::zero(),
                        pk.get().add(b * s * e),
                        e as isize,
                        1,
                    );
                }
            }
        });
        let shape = |a: usize, c: usize| {
            let mut sh = batch.clone();
            sh.extend([a, c]);
            sh
        };
        AttentionGrads {
            q: Tensor::from_vec(dq, &shape(l, e)),
            k: Tensor::from_vec(dk, &shape(s, e)),
            v: Tensor::from_vec(dv, &shape(s, ev)),
            scores: want_scores.then(|| Tensor::from_vec(ds_all, &full)),
        }
    }
}

/// Softmax of one row in place; a row of `-inf` becomes zeros.
#[inline]
fn softmax_row<E: Float>(row: &mut [E]) {
    let max = row.iter().fold(E::neg_infinity(), |m, &x| if x > m { x } else { m });
    if max == E::neg_infinity() {
        row.fill(E::zero());
        return;
    }
    let mut sum = E::zero();
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = E::one() / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}
