//! Fused batch normalisation in training mode, over the channels (dim 1) of an `[N, C, ...]`
//! input: the forward computes each channel's mean and biased variance (two passes, so no
//! cancellation) and writes `x * alpha + beta` with `alpha = weight / sqrt(var + eps)` and
//! `beta = bias - mean * alpha`, as PyTorch's CPU kernel does; the backward computes each
//! channel's `sum(g)` and `sum(g * (x - mean))` in one pass and the input's gradient in a second.
//!
//! The channel statistics are split over threads by ranges of channels, and the elementwise
//! passes by ranges of `[n, c]` rows; each statistic is summed in the same order whatever the
//! split (each row's elements over 32 interleaved sums, then the rows in order), so the bits
//! are the same on any thread count.
//!
//! The loops run a row at a time, so they pay on rows of at least [`LONG_ROW`] elements (a
//! convolution's output planes); on `[N, C]` input, one element a row, the same formula in
//! broadcast tensor ops is 3-4x faster, and `BatchNorm1d`/`BatchNorm2d` use the op only on long
//! rows.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::conv::dense;
use super::matmul::{
    elementwise_min_per_thread, parallel_collect, parallel_for_each, parts_for, threads_for, unit_chunks,
};
use super::simd_map::run_widest;
use crate::element::Float;
use crate::tensor::Tensor;

/// The outputs of [`Tensor::batch_norm_forward`].
#[derive(Clone, Debug)]
pub struct BatchNormForward<E: Float> {
    /// The normalised (and scaled, shifted) input, in the input's shape.
    pub out: Tensor<E>,
    /// Each channel's mean, `[C]`.
    pub mean: Tensor<E>,
    /// Each channel's biased variance, `[C]` (PyTorch's running variance takes the unbiased one,
    /// this times `m / (m - 1)` for `m` values per channel).
    pub var: Tensor<E>,
    /// Each channel's `1 / sqrt(var + eps)`, `[C]`.
    pub rstd: Tensor<E>,
}

/// The gradients of [`Tensor::batch_norm_backward`].
#[derive(Clone, Debug)]
pub struct BatchNormGrads<E: Float> {
    /// The input's gradient, in the input's shape.
    pub input: Tensor<E>,
    /// The weight's gradient, `[C]`, if asked for.
    pub weight: Option<Tensor<E>>,
    /// The bias's gradient, `[C]`, if asked for.
    pub bias: Option<Tensor<E>>,
}

/// Partial sums a channel statistic keeps: two AVX-512 vectors of f32, so the adds of a row
/// overlap instead of waiting on one another.
const LANES: usize = 32;

/// The least row (elements per `[n, c]`) on which the fused op beats broadcast tensor ops.
pub const LONG_ROW: usize = LANES;

/// The sum of `f(x)` over `xs`, in [`LANES`] interleaved partial sums added pairwise at the end
/// (a fixed order, so deterministic).
#[inline(always)]
fn sum_map<E: Float>(xs: &[E], f: impl Fn(E) -> E) -> E {
    if xs.len() < LANES {
        // A row shorter than the lanes (`[N, C]` input: one element) in sequence.
        return xs.iter().fold(E::zero(), |a, &x| a + f(x));
    }
    let mut acc = [E::zero(); LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(x);
    }
    tree(acc)
}

/// `sum(g)` and `sum(g (x - mu))` over a row of `g` and `x`, each as [`sum_map`] (one pass).
#[inline(always)]
fn sums_gx<E: Float>(g: &[E], x: &[E], mu: E) -> (E, E) {
    let x = &x[..g.len()];
    if g.len() < LANES {
        return g.iter().zip(x).fold((E::zero(), E::zero()), |(a, b), (&g, &v)| (a + g, b + g * (v - mu)));
    }
    let (mut sg, mut sgx) = ([E::zero(); LANES], [E::zero(); LANES]);
    let (mut cg, mut cx) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    for (gc, xc) in (&mut cg).zip(&mut cx) {
        for (((a, b), &g), &v) in sg.iter_mut().zip(&mut sgx).zip(gc).zip(xc) {
            *a += g;
            *b += g * (v - mu);
        }
    }
    for (((a, b), &g), &v) in sg.iter_mut().zip(&mut sgx).zip(cg.remainder()).zip(cx.remainder()) {
        *a += g;
        *b += g * (v - mu);
    }
    (tree(sg), tree(sgx))
}

/// The partial sums added pairwise.
#[inline(always)]
fn tree<E: Float>(mut acc: [E; LANES]) -> E {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            let right = acc[i + width];
            acc[i] += right;
        }
        width /= 2;
    }
    acc[0]
}

/// The `[N, C, S]` extents of an input of rank >= 2 (`S` the product of the dims after 1).
#[track_caller]
fn extents(op: &str, shape: &[usize]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "{op}: expected an input of shape [N, C, ...], got {shape:?}");
    (shape[0], shape[1], shape[2..].iter().product())
}

#[track_caller]
fn check_channels<E: Float>(op: &str, what: &str, t: Option<&Tensor<E>>, c: usize) {
    if let Some(t) = t {
        assert!(t.shape() == [c], "{op}: {what} of shape {:?} is not [{c}], one value per channel", t.shape());
    }
}

/// Per channel `c`, the sum over `i` in `0..n` (in order) of `row(i, c)`, the `K` sums of row
/// `[i, c]`, compiled for the widest instruction set (the same bits) and split over threads by
/// ranges of channels when each holds `per_channel` elements.
fn channel_sums<E: Float, const K: usize>(
    (n, channels): (usize, usize),
    per_channel: usize,
    row: impl Fn(usize, usize) -> [E; K] + Sync,
) -> Vec<[E; K]> {
    let min_channels = elementwise_min_per_thread().div_ceil(per_channel.max(1));
    parallel_collect(channels, min_channels, &|chs: Range<usize>| {
        chs.map(|ch| {
            run_widest(
                #[inline(always)]
                || {
                    let mut acc = [E::zero(); K];
                    for i in 0..n {
                        for (a, r) in acc.iter_mut().zip(row(i, ch)) {
                            *a += r;
                        }
                    }
                    acc
                },
            )
        })
    })
}

/// A vector of `rows` rows of `s` elements, row `r` written by `f(r, row)` (which must write all
/// of it), compiled for the widest instruction set and split over threads by ranges of rows.
fn rows_with<E: Float>(rows: usize, s: usize, f: impl Fn(usize, &mut [MaybeUninit<E>]) + Sync) -> Vec<E> {
    let len = rows * s;
    let mut out = Vec::with_capacity(len);
    let run = |range: Range<usize>, o: &mut [MaybeUninit<E>]| {
        run_widest(
            #[inline(always)]
            || {
                for (r, o) in range.zip(o.chunks_exact_mut(s)) {
                    f(r, o);
                }
            },
        )
    };
    let threads = threads_for(len, elementwise_min_per_thread()).min(rows);
    let parts = unit_chunks(&mut out.spare_capacity_mut()[..len], rows, s, parts_for(threads, rows));
    if threads > 1 {
        parallel_for_each(parts, &|(r, o)| run(r, o));
    } else {
        parts.into_iter().for_each(|(r, o)| run(r, o));
    }
    // SAFETY: the parts cover all `len` elements, and `f` wrote every element of each row.
    unsafe { out.set_len(len) };
    out
}

impl<E: Float> Tensor<E> {
    /// Batch normalisation of an `[N, C, ...]` input with its own statistics, as
    /// `torch.nn.functional.batch_norm` in training mode: each channel's mean and biased
    /// variance over every dim but 1, and `(x - mean) / sqrt(var + eps) * weight + bias`
    /// (computed as PyTorch's CPU kernel does, `x * alpha + beta` per channel). `weight` and
    /// `bias` are `[C]`. Also returns the statistics, which
    /// [`batch_norm_backward`](Self::batch_norm_backward) takes.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// // Channel 0 holds 1 and 3, channel 1 holds 10 and 14.
    /// let x = Tensor::from_vec(vec![1.0f64, 10.0, 3.0, 14.0], &[2, 2]);
    /// let f = x.batch_norm_forward(None, None, 0.0);
    /// assert_eq!(f.out.to_vec(), vec![-1.0, -1.0, 1.0, 1.0]);
    /// assert_eq!(f.mean.to_vec(), vec![2.0, 12.0]);
    /// assert_eq!(f.var.to_vec(), vec![1.0, 4.0]);
    /// ```
    ///
    /// # Panics
    /// If the input has rank below 2 or no elements, or `weight`/`bias` are not `[C]`.
    #[track_caller]
    pub fn batch_norm_forward(
        &self,
        weight: Option<&Tensor<E>>,
        bias: Option<&Tensor<E>>,
        eps: f64,
    ) -> BatchNormForward<E> {
        let op = "batch_norm_forward";
        let (n, c, s) = extents(op, self.shape());
        assert!(self.numel() > 0, "{op}: input of shape {:?} has no elements", self.shape());
        check_channels(op, "weight", weight, c);
        check_channels(op, "bias", bias, c);
        let xs = dense(self);
        let xs = &xs[..];
        let row = |i: usize, ch: usize| &xs[(i * c + ch) * s..][..s];
        let inv_m = E::from_f64(1.0 / (n * s) as f64);
        // Each row's partial sums, then the rows in order.
        let sums = channel_sums(
            (n, c),
            n * s,
            #[inline(always)]
            |i, ch| [sum_map(row(i, ch), |v| v)],
        );
        let means: Vec<E> = sums.iter().map(|&[sum]| sum * inv_m).collect();
        let sums = channel_sums(
            (n, c),
            n * s,
            #[inline(always)]
            |i, ch| {
                let mean = means[ch];
                [sum_map(row(i, ch), |v| (v - mean) * (v - mean))]
            },
        );
        let vars: Vec<E> = sums.iter().map(|&[sum]| sum * inv_m).collect();
        let eps = E::from_f64(eps);
        let rstds: Vec<E> = vars.iter().map(|&v| (v + eps).sqrt().recip()).collect();
        let (ws, bs) = (weight.map(dense), bias.map(dense));
        let alpha: Vec<E> = (0..c).map(|ch| ws.as_ref().map_or(rstds[ch], |w| rstds[ch] * w[ch])).collect();
        let beta: Vec<E> = (0..c).map(|ch| bs.as_ref().map_or(E::zero(), |b| b[ch]) - means[ch] * alpha[ch]).collect();
        let out = rows_with(
            n * c,
            s,
            #[inline(always)]
            |r, o| {
                let (a, b) = (alpha[r % c], beta[r % c]);
                for (o, &v) in o.iter_mut().zip(&xs[r * s..][..s]) {
                    o.write(v * a + b);
                }
            },
        );
        BatchNormForward {
            out: Tensor::from_vec(out, self.shape()),
            mean: Tensor::from_vec(means, &[c]),
            var: Tensor::from_vec(vars, &[c]),
            rstd: Tensor::from_vec(rstds, &[c]),
        }
    }

    /// The backward of [`batch_norm_forward`](Self::batch_norm_forward) at input `self`, from
    /// the output's gradient `grad` and the forward's `mean` and `rstd`: the input's gradient
    /// `(g - mean(g) - (x - mean) * sum(g (x - mean)) * rstd² / m) * rstd * weight` per
    /// channel (`m` values per channel), and, if asked for, the weight's (`sum(g x̂)`) and the
    /// bias's (`sum(g)`).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 10.0, 3.0, 14.0], &[2, 2]);
    /// let f = x.batch_norm_forward(None, None, 0.0);
    /// // A gradient that only shifts the output has no effect on the input.
    /// let g = x.batch_norm_backward(&Tensor::ones(&[2, 2]), &f.mean, &f.rstd, None, false, true);
    /// assert_eq!(g.input.to_vec(), vec![0.0; 4]);
    /// assert_eq!(g.bias.unwrap().to_vec(), vec![2.0, 2.0]);
    /// ```
    ///
    /// # Panics
    /// If the input has rank below 2 or no elements, `grad` has another shape, or `mean`,
    /// `rstd` or `weight` are not `[C]`.
    #[track_caller]
    pub fn batch_norm_backward(
        &self,
        grad: &Tensor<E>,
        mean: &Tensor<E>,
        rstd: &Tensor<E>,
        weight: Option<&Tensor<E>>,
        weight_grad: bool,
        bias_grad: bool,
    ) -> BatchNormGrads<E> {
        let op = "batch_norm_backward";
        let (n, c, s) = extents(op, self.shape());
        assert!(self.numel() > 0, "{op}: input of shape {:?} has no elements", self.shape());
        assert!(
            grad.shape() == self.shape(),
            "{op}: gradient of shape {:?} for an input of shape {:?}",
            grad.shape(),
            self.shape()
        );
        check_channels(op, "mean", Some(mean), c);
        check_channels(op, "rstd", Some(rstd), c);
        check_channels(op, "weight", weight, c);
        let (xs, gs) = (dense(self), dense(grad));
        let (xs, gs) = (&xs[..], &gs[..]);
        let (means, rstds, ws) = (dense(mean), dense(rstd), weight.map(dense));
        // Per channel, sum(g) and sum(g (x - mean)).
        let sums = channel_sums(
            (n, c),
            n * s,
            #[inline(always)]
            |i, ch| {
                let at = (i * c + ch) * s;
                let (sg, sgx) = sums_gx(&gs[at..][..s], &xs[at..][..s], means[ch]);
                [sg, sgx]
            },
        );
        let inv_m = E::from_f64(1.0 / (n * s) as f64);
        // gx = (g - mean_g - (x - mean) k) a, with k = sum(g (x - mean)) rstd² / m and
        // a = rstd weight.
        let coefs: Vec<(E, E, E, E)> = (0..c)
            .map(|ch| {
                let [sg, sgx] = sums[ch];
                let r = rstds[ch];
                let a = ws.as_ref().map_or(r, |w| r * w[ch]);
                (means[ch], sg * inv_m, sgx * r * r * inv_m, a)
            })
            .collect();
        let gx = rows_with(
            n * c,
            s,
            #[inline(always)]
            |row, o| {
                let (mu, mg, k, a) = coefs[row % c];
                let at = row * s;
                for ((o, &g), &v) in o.iter_mut().zip(&gs[at..][..s]).zip(&xs[at..][..s]) {
                    o.write((g - mg - (v - mu) * k) * a);
                }
            },
        );
        BatchNormGrads {
            input: Tensor::from_vec(gx, self.shape()),
            weight: weight_grad.then(|| Tensor::from_vec((0..c).map(|ch| sums[ch][1] * rstds[ch]).collect(), &[c])),
            bias: bias_grad.then(|| Tensor::from_vec(sums.iter().map(|&[sg, _]| sg).collect(), &[c])),
        }
    }
}
