//! Fused layer normalisation over the trailing elements of each row: the forward computes each
//! row's mean and reciprocal standard deviation and writes the normalised, scaled and shifted
//! row in one pass over it; the backward computes the input's gradient row by row from the
//! saved statistics and accumulates the weight's and bias's gradients in the same pass. On
//! several threads the rows are split in ranges, and the weight's and bias's sums in ranges of
//! columns (each still summed over the rows in order, so the bits match one thread's).

use std::mem::MaybeUninit;
use std::ops::Range;

use super::matmul::{elementwise_min_per_thread, parallel_for_each, parts_for, threads_for, unit_chunks};
use super::simd_map::{self, collect_with};
use crate::element::Float;
use crate::tensor::Tensor;

/// A range of columns with its pieces of the weight's and bias's gradient sums.
type ColumnPart<'a, E> = (Range<usize>, Option<&'a mut [E]>, Option<&'a mut [E]>);

/// One optional piece of a sum of `n` columns per part of [`unit_chunks`]`(.., n, 1, cols)`.
fn pieces<E>(v: Option<&mut Vec<E>>, n: usize, cols: usize) -> Vec<Option<&mut [E]>> {
    match v {
        Some(v) => unit_chunks(v, n, 1, cols).into_iter().map(|(_, piece)| Some(piece)).collect(),
        None => (0..cols).map(|_| None).collect(),
    }
}

/// Adds one row's terms to the weight's and bias's gradient sums (`dw += g x̂`, `db += g`) over
/// the columns the slices hold: the one accumulation both the one-pass loop and the
/// column-split one run, so their bits agree.
#[inline(always)]
fn add_row_sums<E: Float>(row: &[E], gr: &[E], mu: E, r: E, dw: Option<&mut [E]>, db: Option<&mut [E]>) {
    if let Some(dw) = dw {
        for ((dw, &g), &v) in dw.iter_mut().zip(gr).zip(row) {
            *dw += g * ((v - mu) * r);
        }
    }
    if let Some(db) = db {
        for (db, &g) in db.iter_mut().zip(gr) {
            *db += g;
        }
    }
}

/// The outputs of [`Tensor::layer_norm_forward`].
#[derive(Clone, Debug)]
pub struct LayerNormForward<E: Float> {
    /// The normalised (and scaled, shifted) input, in the input's shape.
    pub out: Tensor<E>,
    /// Each row's mean, `[rows]`.
    pub mean: Tensor<E>,
    /// Each row's `1 / sqrt(var + eps)` (biased variance), `[rows]`.
    pub rstd: Tensor<E>,
}

/// The gradients of [`Tensor::layer_norm_backward`].
#[derive(Clone, Debug)]
pub struct LayerNormGrads<E: Float> {
    /// The input's gradient, in the input's shape.
    pub input: Tensor<E>,
    /// The weight's gradient, `[n]`, if a weight was given.
    pub weight: Option<Tensor<E>>,
    /// The bias's gradient, `[n]`, if asked for.
    pub bias: Option<Tensor<E>>,
}

/// `Σ_i f(a[i], b[i])` over 8 interleaved partial sums: lane `j` adds the terms `j, j + 8, ...`
/// in order, and the lanes are combined in a fixed order, so the result is deterministic and the
/// same on every instruction set. Whole chunks of 8 run as one 8-wide vector add (indexing a
/// partial sum by `i % 8`, the loop had compiled to scalar adds through the stack).
#[inline(always)]
fn sum8<E: Float>(a: &[E], b: &[E], f: impl Fn(E, E) -> E) -> E {
    let mut acc = [E::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += f(x[j], y[j]);
        }
    }
    for (j, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[j] += f(x, y);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// The input's gradient of one row into `d`, from the row, its output gradient `gr`, mean `mu`
/// and reciprocal standard deviation `r` (the weight `ws` if any; `gw` is scratch for ĝ).
/// Inlined into `run_widest` closures as [`forward_rows`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_row<E: Float>(
    row: &[E],
    gr: &[E],
    d: &mut [MaybeUninit<E>],
    mu: E,
    r: E,
    gw: &mut [E],
    ws: Option<&[E]>,
    inv_n: E,
) {
    match ws {
        Some(ws) => {
            for ((gw, &g), &w) in gw.iter_mut().zip(gr).zip(ws) {
                *gw = g * w;
            }
        }
        None => gw.copy_from_slice(gr),
    }
    let mean_g = sum8(gw, gw, |g, _| g) * inv_n;
    let mean_gx = sum8(gw, row, |g, v| g * ((v - mu) * r)) * inv_n;
    for ((d, &g), &v) in d.iter_mut().zip(&*gw).zip(row) {
        d.write(r * (g - mean_g - (v - mu) * r * mean_gx));
    }
}

/// Normalises rows of `n` elements of `xs` into `out` (scaled by `ws`, shifted by `bs` if given)
/// and writes each row's mean and reciprocal standard deviation. Inlined into the callers'
/// `run_widest` closures, so it is compiled for the widest vectors: the same bits, 16 f32 lanes
/// on AVX-512 where the crate's baseline gives 4.
#[inline(always)]
fn forward_rows<E: Float>(
    xs: &[E],
    out: &mut [MaybeUninit<E>],
    (means, rstds): (&mut [E], &mut [E]),
    n: usize,
    (ws, bs): (Option<&[E]>, Option<&[E]>),
    eps: E,
) {
    let inv_n = E::from_f64(1.0 / n as f64);
    for (((row, o), m), rs) in xs.chunks_exact(n).zip(out.chunks_exact_mut(n)).zip(means).zip(rstds) {
        let mean = sum8(row, row, |v, _| v) * inv_n;
        let var = sum8(row, row, |v, _| (v - mean) * (v - mean)) * inv_n;
        let rstd = (var + eps).sqrt().recip();
        match (ws, bs) {
            (Some(ws), Some(bs)) => {
                for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(ws).zip(bs) {
                    o.write((v - mean) * rstd * w + b);
                }
            }
            (Some(ws), None) => {
                for ((o, &v), &w) in o.iter_mut().zip(row).zip(ws) {
                    o.write((v - mean) * rstd * w);
                }
            }
            (None, Some(bs)) => {
                for ((o, &v), &b) in o.iter_mut().zip(row).zip(bs) {
                    o.write((v - mean) * rstd + b);
                }
            }
            (None, None) => {
                for (o, &v) in o.iter_mut().zip(row) {
                    o.write((v - mean) * rstd);
                }
            }
        }
        *m = mean;
        *rs = rstd;
    }
}

#[track_caller]
fn check_param<E: Float>(op: &str, what: &str, p: Option<&Tensor<E>>, n: usize) {
    if let Some(p) = p {
        assert!(p.numel() == n, "{op}: {what} of shape {:?} does not have the {n} elements of a row", p.shape());
    }
}

impl<E: Float> Tensor<E> {
    /// Layer normalisation of each row of `n` trailing elements (`n` the product of the
    /// normalised dims): `(x - mean) / sqrt(var + eps) * weight + bias`, with the biased
    /// variance, as `torch.nn.functional.layer_norm`. `weight` and `bias` hold `n` elements (any
    /// shape). Also returns each row's mean and reciprocal standard deviation, which
    /// [`layer_norm_backward`](Self::layer_norm_backward) takes.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 3.0, 2.0, 6.0], &[2, 2]);
    /// let f = x.layer_norm_forward(2, None, None, 0.0);
    /// assert_eq!(f.out.to_vec(), vec![-1.0, 1.0, -1.0, 1.0]);
    /// assert_eq!(f.mean.to_vec(), vec![2.0, 4.0]);
    /// ```
    ///
    /// # Panics
    /// If `n` is 0 or does not divide the input's size, or `weight`/`bias` do not hold `n` elements.
    #[track_caller]
    pub fn layer_norm_forward(
        &self,
        n: usize,
        weight: Option<&Tensor<E>>,
        bias: Option<&Tensor<E>>,
        eps: f64,
    ) -> LayerNormForward<E> {
        assert!(
            n > 0 && self.numel().is_multiple_of(n),
            "layer_norm_forward: rows of {n} elements do not tile input of shape {:?}",
            self.shape()
        );
        check_param("layer_norm_forward", "weight", weight, n);
        check_param("layer_norm_forward", "bias", bias, n);
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let w = weight.map(|w| w.contiguous());
        let b = bias.map(|b| b.contiguous());
        let (ws, bs) = (w.as_ref().and_then(|w| w.as_slice()), b.as_ref().and_then(|b| b.as_slice()));
        let rows = xs.len() / n;
        let eps = E::from_f64(eps);
        let (mut means, mut rstds) = (vec![E::zero(); rows], vec![E::zero(); rows]);
        // Rows are independent: ranges of rows on their own threads give the same bits.
        let threads = threads_for(xs.len(), elementwise_min_per_thread()).min(rows);
        // The output is written whole by the rows' loop, never zero-filled first (that was half
        // a percent of the transformer benchmark's step, as was the input gradient's below).
        let out = collect_with(xs.len(), |out| {
            if threads > 1 {
                let cut = parts_for(threads, rows);
                let stats =
                    unit_chunks(&mut means, rows, 1, cut).into_iter().zip(unit_chunks(&mut rstds, rows, 1, cut));
                let parts: Vec<_> = unit_chunks(out, rows, n, cut)
                    .into_iter()
                    .zip(stats)
                    .map(|((r, o), ((_, m), (_, rs)))| (&xs[r.start * n..r.end * n], o, m, rs))
                    .collect();
                parallel_for_each(parts, &|(x, o, m, rs)| {
                    simd_map::run_widest(
                        #[inline(always)]
                        || forward_rows(x, o, (m, rs), n, (ws, bs), eps),
                    )
                });
            } else {
                simd_map::run_widest(
                    #[inline(always)]
                    || forward_rows(xs, out, (&mut means, &mut rstds), n, (ws, bs), eps),
                );
            }
        });
        LayerNormForward {
            out: Tensor::from_vec(out, self.shape()),
            mean: Tensor::from_vec(means, &[rows]),
            rstd: Tensor::from_vec(rstds, &[rows]),
        }
    }

    /// The backward of [`layer_norm_forward`](Self::layer_norm_forward) at input `self`, from
    /// the output's gradient `grad` and the saved `mean` and `rstd`: with `x̂ = (x - mean) rstd`
    /// and `ĝ = grad * weight`, the input's gradient is `rstd (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))` per
    /// row, the weight's `Σ_rows grad x̂` (if `weight` is given and `weight_grad`) and the bias's
    /// `Σ_rows grad` (if `bias_grad`), all in one pass over the rows.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 3.0], &[1, 2]);
    /// let f = x.layer_norm_forward(2, None, None, 0.0);
    /// let g = x.layer_norm_backward(&Tensor::ones(&[1, 2]), &f.mean, &f.rstd, None, false, true);
    /// assert_eq!(g.input.to_vec(), vec![0.0, 0.0]); // a shift does not change the output
    /// assert_eq!(g.bias.unwrap().to_vec(), vec![1.0, 1.0]);
    /// ```
    ///
    /// # Panics
    /// If shapes disagree: `grad` not the input's shape, `mean`/`rstd` not one entry per row,
    /// `weight` not a row's size.
    #[track_caller]
    pub fn layer_norm_backward(
        &self,
        grad: &Tensor<E>,
        mean: &Tensor<E>,
        rstd: &Tensor<E>,
        weight: Option<&Tensor<E>>,
        weight_grad: bool,
        bias_grad: bool,
    ) -> LayerNormGrads<E> {
        let rows = mean.numel();
        assert!(
            grad.shape() == self.shape() && rstd.numel() == rows && rows > 0 && self.numel().is_multiple_of(rows),
            "layer_norm_backward: input {:?}, grad {:?}, mean {:?}, rstd {:?}",
            self.shape(),
            grad.shape(),
            mean.shape(),
            rstd.shape()
        );
        let n = self.numel() / rows;
        check_param("layer_norm_backward", "weight", weight, n);
        let (x, g, mean, rstd) = (self.contiguous(), grad.contiguous(), mean.contiguous(), rstd.contiguous());
        let (xs, gs) = (x.as_slice().expect("contiguous"), g.as_slice().expect("contiguous"));
        let (ms, rs) = (mean.as_slice().expect("contiguous"), rstd.as_slice().expect("contiguous"));
        let w = weight.map(|w| w.contiguous());
        let ws = w.as_ref().and_then(|w| w.as_slice());
        let inv_n = E::from_f64(1.0 / n as f64);
        let mut dw = ws.filter(|_| weight_grad).map(|_| vec![E::zero(); n]);
        let mut db = bias_grad.then(|| vec![E::zero(); n]);
        let threads = threads_for(xs.len(), elementwise_min_per_thread()).min(rows);
        // `input_row` writes every row of the input's gradient: no zero-filling first.
        let dx = if threads > 1 {
            // Ranges of rows for the input's gradient, then ranges of columns for the weight's
            // and bias's sums, each column summed over the rows in order: the same additions in
            // the same order as the one-pass loop below, so the same bits on any thread count.
            let dx = collect_with(xs.len(), |dx| {
                let parts = unit_chunks(dx, rows, n, parts_for(threads, rows));
                parallel_for_each(parts, &|(rr, d): (Range<usize>, &mut [MaybeUninit<E>])| {
                    let mut gw = vec![E::zero(); n];
                    let (x, g) = (&xs[rr.start * n..rr.end * n], &gs[rr.start * n..rr.end * n]);
                    simd_map::run_widest(
                        #[inline(always)]
                        || {
                            for (((row, gr), d), (&mu, &r)) in x
                                .chunks_exact(n)
                                .zip(g.chunks_exact(n))
                                .zip(d.chunks_exact_mut(n))
                                .zip(ms[rr.clone()].iter().zip(&rs[rr.clone()]))
                            {
                                input_row(row, gr, d, mu, r, &mut gw, ws, inv_n);
                            }
                        },
                    )
                });
            });
            if dw.is_some() || db.is_some() {
                let cols = threads.min(n);
                let ranges = (0..cols).map(|i| i * n / cols..(i + 1) * n / cols);
                let parts: Vec<ColumnPart<'_, E>> = ranges
                    .zip(pieces(dw.as_mut(), n, cols).into_iter().zip(pieces(db.as_mut(), n, cols)))
                    .map(|(cr, (dw, db))| (cr, dw, db))
                    .collect();
                parallel_for_each(parts, &|(cr, mut dw, mut db): ColumnPart<'_, E>| {
                    simd_map::run_widest(
                        #[inline(always)]
                        || {
                            for ((row, gr), (&mu, &r)) in
                                xs.chunks_exact(n).zip(gs.chunks_exact(n)).zip(ms.iter().zip(rs))
                            {
                                let (row, gr) = (&row[cr.clone()], &gr[cr.clone()]);
                                add_row_sums(row, gr, mu, r, dw.as_deref_mut(), db.as_deref_mut());
                            }
                        },
                    )
                });
            }
            dx
        } else {
            collect_with(xs.len(), |dx| {
                let mut gw = vec![E::zero(); n];
                simd_map::run_widest(
                    #[inline(always)]
                    || {
                        for ((((row, gr), d), &mu), &r) in
                            xs.chunks_exact(n).zip(gs.chunks_exact(n)).zip(dx.chunks_exact_mut(n)).zip(ms).zip(rs)
                        {
                            // The weight's and bias's sums in the same pass as the row's gradient.
                            add_row_sums(row, gr, mu, r, dw.as_deref_mut(), db.as_deref_mut());
                            input_row(row, gr, d, mu, r, &mut gw, ws, inv_n);
                        }
                    },
                )
            })
        };
        let pshape = |w: Option<&Tensor<E>>| w.map_or_else(|| vec![n], |w| w.shape().to_vec());
        LayerNormGrads {
            input: Tensor::from_vec(dx, self.shape()),
            weight: dw.map(|dw| Tensor::from_vec(dw, &pshape(weight))),
            bias: db.map(|db| Tensor::from_vec(db, &[n])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum8` is the interleaved sum its doc defines (lane `i % 8` adds term `i`, in order), bit
    /// for bit, at every length around the chunk size, in the baseline build and inside
    /// `run_widest`.
    #[test]
    fn sum8_is_the_interleaved_sum_bit_for_bit() {
        for len in 0..70usize {
            let a: Vec<f32> = (0..len).map(|i| ((i * 7919) % 613) as f32 * 0.37 - 100.0).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 + ((i * 31) % 17) as f32 * 1e-3).collect();
            let mut acc = [0f32; 8];
            for i in 0..len {
                acc[i % 8] += a[i] * b[i];
            }
            let want = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
            assert_eq!(sum8(&a, &b, |x, y| x * y).to_bits(), want.to_bits(), "len {len}");
            let wide = simd_map::run_widest(
                #[inline(always)]
                || sum8(&a, &b, |x, y| x * y),
            );
            assert_eq!(wide.to_bits(), want.to_bits(), "len {len}, widest vectors");
        }
    }
}
