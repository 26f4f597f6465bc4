//! Fused pointwise parts of the LSTM and GRU cells: every gate's activation, the new state and
//! what backward needs, in one pass over the gate block, and the matching backward in one pass.
//!
//! Unfused, one LSTM step is about ten elementwise ops forward and twenty backward, each a pass
//! over memory and a new buffer; here it is one of each. The two matrix products of a step stay
//! with the caller (`gx = x W_ihᵀ + b`, `gh = h W_hhᵀ + b_hh`). In f32 the activations use
//! branch-free polynomial forms of `exp` and `tanh` that the compiler vectorises (a few units in
//! the last place from the libm ones); f64 uses libm's, to the last bit of the unfused ops.

use std::any::{Any, TypeId};
use std::ops::Range;

use super::packed_gemm::{Kernel, PackedA, PackedB, Start};
use crate::element::Float;
use crate::tensor::Tensor;

/// `e^x` in f32 for `x` in [-87, 88] (clamped outside): Cephes' `expf` polynomial after
/// reduction by `ln 2`, with round-to-nearest by the 1.5 * 2^23 trick so that it vectorises.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut y = 1.987_569_1e-4_f32;
    y = y * r + 1.398_2e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 0.166_666_65;
    y = y * r + 0.5;
    y = y * r * r + r + 1.0;
    // 2^n for n in [-126, 127], built in the exponent field.
    y * f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23)
}

/// `tanh` in f32: the rational minimax form Eigen uses inside ±7.9, ±1 outside (where f32's
/// `tanh` is within an ulp of 1).
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let c = x.clamp(-7.905_311, 7.905_311);
    let x2 = c * c;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 + -8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619e-4;
    p = p * x2 + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_7e-3;
    q = q * x2 + 4.893_525e-3;
    // Tiny inputs: tanh x = x to the last bit, which the rational form misses by an ulp or so.
    if x.abs() < 4e-4 {
        x
    } else if x.abs() > 7.905_311 {
        1f32.copysign(x)
    } else {
        c * p / q
    }
}

#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// The logistic function in any precision, as the unfused `sigmoid` computes it.
#[inline(always)]
fn sigmoid<E: Float>(x: E) -> E {
    if x >= E::zero() {
        E::one() / (E::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (E::one() + e)
    }
}

/// An activation [`activate`] applies.
#[derive(Clone, Copy)]
enum Act {
    Sigmoid,
    Tanh,
}

/// Applies `act` in place to columns `cols` of every row (`width` long) of `v`: in f32 through
/// the polynomial forms, as plain loops over slices that the compiler vectorises; otherwise
/// through libm. A `Vec`, not a slice, because only a sized value downcasts to its f32 form.
#[allow(clippy::ptr_arg)]
fn activate<E: Float>(v: &mut Vec<E>, width: usize, cols: Range<usize>, act: Act) {
    if width == 0 {
        return;
    }
    if let Some(v) = (v as &mut dyn Any).downcast_mut::<Vec<f32>>() {
        for row in v.chunks_exact_mut(width) {
            let s = &mut row[cols.clone()];
            match act {
                Act::Sigmoid => s.iter_mut().for_each(|x| *x = sigmoid_f32(*x)),
                Act::Tanh => s.iter_mut().for_each(|x| *x = tanh_f32(*x)),
            }
        }
    } else {
        for row in v.chunks_exact_mut(width) {
            let s = &mut row[cols.clone()];
            match act {
                Act::Sigmoid => s.iter_mut().for_each(|x| *x = sigmoid(*x)),
                Act::Tanh => s.iter_mut().for_each(|x| *x = x.tanh()),
            }
        }
    }
}

/// What [`Tensor::fused_lstm_cell`] returns: the new state, and the values its backward reads.
#[derive(Clone, Debug)]
pub struct LstmCellParts<E: Float> {
    /// The new hidden state `h' = o * tanh(c')`, `[B, H]`.
    pub h: Tensor<E>,
    /// The new cell state `c' = f * c + i * g`, `[B, H]`.
    pub c: Tensor<E>,
    /// The activated gates `[sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)]`, `[B, 4H]`.
    pub gates: Tensor<E>,
    /// `tanh(c')`, `[B, H]`.
    pub tanh_c: Tensor<E>,
}

/// What [`Tensor::fused_gru_cell`] returns: the new state, and the values its backward reads.
#[derive(Clone, Debug)]
pub struct GruCellParts<E: Float> {
    /// The new hidden state `h' = (1 - z) * n + z * h`, `[B, H]`.
    pub h: Tensor<E>,
    /// The activated gates `[r, z, n]`, `[B, 3H]`.
    pub gates: Tensor<E>,
}

/// The gate block's batch and hidden sizes, checked against the state's shape.
#[track_caller]
fn cell_dims(op: &str, gates: usize, gx: &[usize], gh: &[usize], state: &[usize]) -> (usize, usize) {
    assert!(
        gx.len() == 2 && gx == gh && state.len() == 2 && gx[0] == state[0] && gx[1] == gates * state[1],
        "{op}: gate blocks {gx:?} and {gh:?} must both be [B, {gates} * H] for a state {state:?} [B, H]"
    );
    (state[0], state[1])
}

impl<E: Float> Tensor<E> {
    /// The pointwise part of an LSTM step, PyTorch's gate order (input, forget, cell, output):
    /// with `a = gx + gh` split into `[a_i, a_f, a_g, a_o]`, `c' = σ(a_f) c + σ(a_i) tanh(a_g)`
    /// and `h' = σ(a_o) tanh(c')`. `gx` and `gh` are `[B, 4H]`, `c` is `[B, H]`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let gx = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.25], &[1, 4]);
    /// let gh = Tensor::zeros(&[1, 4]);
    /// let c = Tensor::from_vec(vec![0.3f32], &[1, 1]);
    /// let s = Tensor::fused_lstm_cell(&gx, &gh, &c);
    /// let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    /// let c_new = sig(-1.0) * 0.3 + sig(0.5) * 2f32.tanh();
    /// assert!((s.c.item() - c_new).abs() < 1e-6);
    /// assert!((s.h.item() - sig(0.25) * c_new.tanh()).abs() < 1e-6);
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit (the message names all three).
    #[track_caller]
    pub fn fused_lstm_cell(gx: &Tensor<E>, gh: &Tensor<E>, c: &Tensor<E>) -> LstmCellParts<E> {
        let (b, h) = cell_dims("fused_lstm_cell", 4, gx.shape(), gh.shape(), c.shape());
        if h == 0 {
            let empty = || Tensor::zeros(&[b, 0]);
            return LstmCellParts { h: empty(), c: empty(), gates: empty(), tanh_c: empty() };
        }
        let (gx, gh, c) = (gx.contiguous(), gh.contiguous(), c.contiguous());
        let (gx, gh, c_prev) = (slice(&gx), slice(&gh), slice(&c));
        let mut gates: Vec<E> = gx.iter().zip(gh).map(|(&x, &y)| x + y).collect();
        activate(&mut gates, 4 * h, 0..2 * h, Act::Sigmoid);
        activate(&mut gates, 4 * h, 2 * h..3 * h, Act::Tanh);
        activate(&mut gates, 4 * h, 3 * h..4 * h, Act::Sigmoid);
        let mut c_new = vec![E::zero(); b * h];
        for ((row, cp), cn) in gates.chunks_exact(4 * h).zip(c_prev.chunks_exact(h)).zip(c_new.chunks_exact_mut(h)) {
            let [i, f, g, _] = quarters(row, h);
            for j in 0..h {
                cn[j] = f[j] * cp[j] + i[j] * g[j];
            }
        }
        let mut tanh_c = c_new.clone();
        activate(&mut tanh_c, h, 0..h, Act::Tanh);
        let mut h_new = vec![E::zero(); b * h];
        for ((row, tc), hn) in gates.chunks_exact(4 * h).zip(tanh_c.chunks_exact(h)).zip(h_new.chunks_exact_mut(h)) {
            let o = &row[3 * h..4 * h];
            for j in 0..h {
                hn[j] = o[j] * tc[j];
            }
        }
        LstmCellParts {
            h: Tensor::from_vec(h_new, &[b, h]),
            c: Tensor::from_vec(c_new, &[b, h]),
            gates: Tensor::from_vec(gates, &[b, 4 * h]),
            tanh_c: Tensor::from_vec(tanh_c, &[b, h]),
        }
    }

    /// The backward of [`Tensor::fused_lstm_cell`]: from the saved `gates` and `tanh_c`, the
    /// previous cell state `c` and the gradients of `h'` and `c'` (`None`: zero), the gradient
    /// of the gate pre-activations `a = gx + gh` (`[B, 4H]`, that of `gx` and of `gh` alike) and
    /// of `c` (`[B, H]`).
    ///
    /// # Panics
    /// If the shapes do not fit.
    #[track_caller]
    pub fn fused_lstm_cell_backward(
        gates: &Tensor<E>,
        c: &Tensor<E>,
        tanh_c: &Tensor<E>,
        dh: Option<&Tensor<E>>,
        dc: Option<&Tensor<E>>,
    ) -> (Tensor<E>, Tensor<E>) {
        let (b, h) = cell_dims("fused_lstm_cell_backward", 4, gates.shape(), gates.shape(), c.shape());
        for (what, t) in [("tanh_c", Some(tanh_c)), ("dh", dh), ("dc", dc)] {
            if let Some(t) = t {
                assert!(
                    t.shape() == c.shape(),
                    "fused_lstm_cell_backward: {what} {:?} is not {:?}",
                    t.shape(),
                    c.shape()
                );
            }
        }
        let zeros = Tensor::zeros(&[b, h]);
        let (gates, c, tanh_c) = (gates.contiguous(), c.contiguous(), tanh_c.contiguous());
        let (dh, dc) = (dh.unwrap_or(&zeros).contiguous(), dc.unwrap_or(&zeros).contiguous());
        let (act, cp, tc, dh, dc) = (slice(&gates), slice(&c), slice(&tanh_c), slice(&dh), slice(&dc));
        let mut da = vec![E::zero(); b * 4 * h];
        let mut dcp = vec![E::zero(); b * h];
        let one = E::one();
        for r in 0..b {
            let block = r * 4 * h..(r + 1) * 4 * h;
            let [i, f, g, o] = quarters(&act[block.clone()], h);
            let (di, rest) = da[block].split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dg, d_o) = rest.split_at_mut(h);
            let rows = r * h..(r + 1) * h;
            let (cp, tc, dh, dc, dcp) =
                (&cp[rows.clone()], &tc[rows.clone()], &dh[rows.clone()], &dc[rows.clone()], &mut dcp[rows]);
            let (di, df, dg, d_o, cp, tc, dh, dc, dcp) = (
                &mut di[..h],
                &mut df[..h],
                &mut dg[..h],
                &mut d_o[..h],
                &cp[..h],
                &tc[..h],
                &dh[..h],
                &dc[..h],
                &mut dcp[..h],
            );
            for j in 0..h {
                let t = tc[j];
                let dct = dc[j] + dh[j] * o[j] * (one - t * t);
                di[j] = dct * g[j] * i[j] * (one - i[j]);
                df[j] = dct * cp[j] * f[j] * (one - f[j]);
                dg[j] = dct * i[j] * (one - g[j] * g[j]);
                d_o[j] = dh[j] * t * o[j] * (one - o[j]);
                dcp[j] = dct * f[j];
            }
        }
        (Tensor::from_vec(da, &[b, 4 * h]), Tensor::from_vec(dcp, &[b, h]))
    }

    /// The pointwise part of a GRU step, PyTorch's gate order (reset, update, new): with
    /// `gx = x W_ihᵀ + b_ih` and `gh = h W_hhᵀ + b_hh` split in three, `r = σ(gx_r + gh_r)`,
    /// `z = σ(gx_z + gh_z)`, `n = tanh(gx_n + r gh_n)` and `h' = (1 - z) n + z h`. `gx` and
    /// `gh` are `[B, 3H]`, `h` is `[B, H]`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let gx = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[1, 3]);
    /// let gh = Tensor::from_vec(vec![0.1f64, 0.2, -0.3], &[1, 3]);
    /// let h = Tensor::from_vec(vec![0.7f64], &[1, 1]);
    /// let s = Tensor::fused_gru_cell(&gx, &gh, &h);
    /// let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    /// let (r, z) = (sig(0.6), sig(-0.8));
    /// let n = (2.0 - r * 0.3).tanh();
    /// assert!((s.h.item() - ((1.0 - z) * n + z * 0.7)).abs() < 1e-12);
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit (the message names all three).
    #[track_caller]
    pub fn fused_gru_cell(gx: &Tensor<E>, gh: &Tensor<E>, h: &Tensor<E>) -> GruCellParts<E> {
        let (b, hs) = cell_dims("fused_gru_cell", 3, gx.shape(), gh.shape(), h.shape());
        if hs == 0 {
            return GruCellParts { h: Tensor::zeros(&[b, 0]), gates: Tensor::zeros(&[b, 0]) };
        }
        let (gx, gh, h) = (gx.contiguous(), gh.contiguous(), h.contiguous());
        let (gx, gh, hp) = (slice(&gx), slice(&gh), slice(&h));
        let mut gates: Vec<E> = gx.iter().zip(gh).map(|(&x, &y)| x + y).collect();
        activate(&mut gates, 3 * hs, 0..2 * hs, Act::Sigmoid);
        // n's pre-activation is gx_n + r * gh_n, not the sum just stored.
        for ((row, x), y) in gates.chunks_exact_mut(3 * hs).zip(gx.chunks_exact(3 * hs)).zip(gh.chunks_exact(3 * hs)) {
            let (r, n) = row.split_at_mut(2 * hs);
            let (r, n, xn, yn) = (&r[..hs], &mut n[..hs], &x[2 * hs..], &y[2 * hs..]);
            for j in 0..hs {
                n[j] = xn[j] + r[j] * yn[j];
            }
        }
        activate(&mut gates, 3 * hs, 2 * hs..3 * hs, Act::Tanh);
        let mut h_new = vec![E::zero(); b * hs];
        for ((row, hp), hn) in gates.chunks_exact(3 * hs).zip(hp.chunks_exact(hs)).zip(h_new.chunks_exact_mut(hs)) {
            let (z, n) = (&row[hs..2 * hs], &row[2 * hs..]);
            for j in 0..hs {
                hn[j] = n[j] + z[j] * (hp[j] - n[j]);
            }
        }
        GruCellParts { h: Tensor::from_vec(h_new, &[b, hs]), gates: Tensor::from_vec(gates, &[b, 3 * hs]) }
    }

    /// The backward of [`Tensor::fused_gru_cell`]: from the saved `gates`, the step's `gh` and
    /// `h` and the gradient `dh` of `h'`, the gradients of `gx` (`[B, 3H]`), `gh` (`[B, 3H]`)
    /// and `h` (`[B, H]`, the direct path only; the one through `gh` is the caller's product).
    ///
    /// # Panics
    /// If the shapes do not fit.
    #[track_caller]
    pub fn fused_gru_cell_backward(
        gates: &Tensor<E>,
        gh: &Tensor<E>,
        h: &Tensor<E>,
        dh: &Tensor<E>,
    ) -> (Tensor<E>, Tensor<E>, Tensor<E>) {
        let (b, hs) = cell_dims("fused_gru_cell_backward", 3, gates.shape(), gh.shape(), h.shape());
        assert!(dh.shape() == h.shape(), "fused_gru_cell_backward: dh {:?} is not {:?}", dh.shape(), h.shape());
        let (gates, gh, h, dh) = (gates.contiguous(), gh.contiguous(), h.contiguous(), dh.contiguous());
        let (act, gh, hp, dh) = (slice(&gates), slice(&gh), slice(&h), slice(&dh));
        let mut dgx = vec![E::zero(); b * 3 * hs];
        let mut dgh = vec![E::zero(); b * 3 * hs];
        let mut dhp = vec![E::zero(); b * hs];
        let one = E::one();
        for r in 0..b {
            let block = r * 3 * hs..(r + 1) * 3 * hs;
            let (a, y) = (&act[block.clone()], &gh[block.clone()]);
            let (xr, rest) = dgx[block.clone()].split_at_mut(hs);
            let (xz, xn) = rest.split_at_mut(hs);
            let (yr, rest) = dgh[block].split_at_mut(hs);
            let (yz, yn) = rest.split_at_mut(hs);
            let rows = r * hs..(r + 1) * hs;
            let (hp, dh, dhp) = (&hp[rows.clone()], &dh[rows.clone()], &mut dhp[rows]);
            for j in 0..hs {
                let (rg, z, n) = (a[j], a[hs + j], a[2 * hs + j]);
                let dan = dh[j] * (one - z) * (one - n * n);
                let dar = dan * y[2 * hs + j] * rg * (one - rg);
                let daz = dh[j] * (hp[j] - n) * z * (one - z);
                (xr[j], xz[j], xn[j]) = (dar, daz, dan);
                (yr[j], yz[j], yn[j]) = (dar, daz, dan * rg);
                dhp[j] = dh[j] * z;
            }
        }
        (Tensor::from_vec(dgx, &[b, 3 * hs]), Tensor::from_vec(dgh, &[b, 3 * hs]), Tensor::from_vec(dhp, &[b, hs]))
    }
}

/// What [`Tensor::lstm_sequence`] returns: the output sequence and the final state, and (kept
/// private) what its backward, [`Tensor::lstm_sequence_backward`], reads.
#[derive(Clone, Debug)]
pub struct LstmSequenceParts<E: Float> {
    /// The hidden state after every step, `[T, B, H]`; zero at padded steps.
    pub output: Tensor<E>,
    /// The final hidden state `[B, H]` (each sequence's state after its last valid step).
    pub h: Tensor<E>,
    /// The final cell state `[B, H]`.
    pub c: Tensor<E>,
    saved: SequenceSaved<E>,
}

/// What the backward of a sequence reads, every `[T, ..]` buffer in the order the steps ran
/// (time order backwards for the reverse direction).
#[derive(Clone, Debug)]
struct SequenceSaved<E: Float> {
    /// The activated gates, `[T, B, 4H]` (pre-activations at padded steps).
    gates: Vec<E>,
    /// The cell state each step read.
    c_prev: Vec<E>,
    /// `tanh` of the cell state each step wrote (zero at padded steps).
    tanh_c: Vec<E>,
    /// The hidden state each step read, kept only with padding: otherwise it is the previous
    /// step's output (`h0` for the first).
    h_prev: Option<Vec<E>>,
    /// The output in run order (the output tensor's storage unless reversed).
    out: Tensor<E>,
    h0: Option<Tensor<E>>,
    bias: bool,
}

/// What [`Tensor::lstm_sequence_backward`] returns.
#[derive(Clone, Debug)]
pub struct LstmSequenceGrads<E: Float> {
    /// The gradient of the input projections `gx`, `[T, B, 4H]` (zero at padded steps), if
    /// asked for.
    pub gx: Option<Tensor<E>>,
    /// The gradient of the bias `[4H]`, if the forward had one.
    pub bias: Option<Tensor<E>>,
    /// The gradient of `w_hh`, `[4H, H]`.
    pub w_hh: Tensor<E>,
    /// The gradient `Σ_t dA_tᵀ x_t` (`[4H, I]`) of the input weights `w_ih` of projections
    /// `gx = x w_ihᵀ`, if the backward was given `x`.
    pub w_ih: Option<Tensor<E>>,
    /// The gradient of the initial hidden state `[B, H]`, if asked for.
    pub h0: Option<Tensor<E>>,
    /// The gradient of the initial cell state `[B, H]`.
    pub c0: Tensor<E>,
}

/// `(T, B, H)` of an LSTM sequence, checked.
#[track_caller]
fn sequence_dims(op: &str, gx: &[usize], w_hh: &[usize], lengths: Option<&[usize]>) -> (usize, usize, usize) {
    assert!(
        gx.len() == 3 && w_hh.len() == 2 && w_hh[0] == 4 * w_hh[1] && gx[2] == w_hh[0],
        "{op}: input projections {gx:?} and w_hh {w_hh:?} must be [T, B, 4 * H] and [4 * H, H]"
    );
    let (steps, batch, hidden) = (gx[0], gx[1], w_hh[1]);
    if let Some(lens) = lengths {
        assert!(
            lens.len() == batch && lens.iter().all(|&l| l <= steps),
            "{op}: lengths {lens:?} must be {batch} values in 0..={steps} (input projections {gx:?})"
        );
    }
    (steps, batch, hidden)
}

/// A state tensor as a `[B, H]` vector (zeros if `None`), checked.
#[track_caller]
fn state_vec<E: Float>(op: &str, what: &str, s: Option<&Tensor<E>>, batch: usize, hidden: usize) -> Vec<E> {
    match s {
        Some(s) => {
            assert!(s.shape() == [batch, hidden], "{op}: {what} {:?} is not [{batch}, {hidden}]", s.shape());
            s.contiguous().to_vec()
        }
        None => vec![E::zero(); batch * hidden],
    }
}

/// `v`'s blocks of `block` elements in reverse order.
fn reverse_blocks<E: Copy>(v: &[E], block: usize) -> Vec<E> {
    if block == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(v.len());
    for b in v.chunks_exact(block).rev() {
        out.extend_from_slice(b);
    }
    out
}

impl<E: Float> Tensor<E> {
    /// A whole LSTM sequence (one layer, one direction) in one op: from the input projections
    /// `gx = x W_ihᵀ` of every step (`[T, B, 4H]`, PyTorch's gate order), an optional `bias`
    /// (`[4H]`, `b_ih + b_hh`) added at every step, the recurrent weights `w_hh` (`[4H, H]`) and
    /// the initial state (`[B, H]` each, zeros if `None`), runs the steps `0..T` (backwards if
    /// `reverse`), each one matrix product `h W_hhᵀ` added in place to the step's projections
    /// and one fused pass as [`Tensor::fused_lstm_cell`].
    ///
    /// `lengths[b]` (each in `0..=T`) is the number of valid steps of sequence `b`: at a padded
    /// step `t >= lengths[b]` the state does not change and the output is zero, so the reverse
    /// direction starts at each sequence's last valid step.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let (t, b, h) = (3, 2, 4);
    /// let gx = Tensor::from_fn(&[t, b, 4 * h], |i| (i as f64 * 0.37).sin());
    /// let w = Tensor::from_fn(&[4 * h, h], |i| (i as f64 * 0.11).cos() * 0.3);
    /// let seq = Tensor::lstm_sequence(&gx, None, &w, None, None, None, false);
    /// // The same as three fused cells.
    /// let (mut hs, mut cs) = (Tensor::zeros(&[b, h]), Tensor::zeros(&[b, h]));
    /// for s in 0..t {
    ///     let step = Tensor::fused_lstm_cell(&gx.select(0, s), &hs.matmul(&w.t()), &cs);
    ///     (hs, cs) = (step.h, step.c);
    /// }
    /// assert!(seq.h.sub(&hs).abs().max().item() < 1e-12);
    /// assert!(seq.c.sub(&cs).abs().max().item() < 1e-12);
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit or a length exceeds `T` (the message names them).
    #[track_caller]
    pub fn lstm_sequence(
        gx: &Tensor<E>,
        bias: Option<&Tensor<E>>,
        w_hh: &Tensor<E>,
        h0: Option<&Tensor<E>>,
        c0: Option<&Tensor<E>>,
        lengths: Option<&[usize]>,
        reverse: bool,
    ) -> LstmSequenceParts<E> {
        const OP: &str = "lstm_sequence";
        let (steps, batch, h) = sequence_dims(OP, gx.shape(), w_hh.shape(), lengths);
        let g = 4 * h;
        if let Some(b) = bias {
            assert!(b.shape() == [g], "{OP}: bias {:?} is not [{g}] (w_hh {:?})", b.shape(), w_hh.shape());
        }
        let mut hs = state_vec(OP, "h0", h0, batch, h);
        let mut cs = state_vec(OP, "c0", c0, batch, h);
        let masked = lengths.is_some_and(|l| l.iter().any(|&l| l < steps));
        let valid = |t: usize, r: usize| lengths.is_none_or(|l| t < l[r]);
        let gx = gx.contiguous();
        let gxs = slice(&gx);
        let bias = bias.map(Tensor::contiguous);
        let bias = bias.as_ref().map(slice);
        let (n, ng) = (steps * batch * h, steps * batch * g);
        // Every buffer grows one step at a time, in run order: no zero-filling pass.
        let mut gates: Vec<E> = Vec::with_capacity(ng);
        let (mut out, mut c_prev, mut tanh_c) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut h_prev = masked.then(|| Vec::with_capacity(n));
        // The per-step product h W_hhᵀ: in f32, Wᵀ packed once for the packed kernel; otherwise
        // Wᵀ once, contiguous, for E::gemm (which packs it every step).
        let packed = pack_f32(w_hh, true);
        let w_t = if packed.is_some() { Tensor::zeros(&[0]) } else { w_hh.t().contiguous() };
        let w_t = slice(&w_t);
        let mut ok = vec![true; batch];
        for s in 0..steps {
            let t = if reverse { steps - 1 - s } else { s };
            let start = gates.len();
            let block = &gxs[t * batch * g..(t + 1) * batch * g];
            let product = (s > 0 || h0.is_some()) && h > 0 && batch > 0;
            match (&packed, as_f32_ref(block)) {
                // In f32 the packed kernel starts from the step's projections and the bias, and
                // writes the gate block once (no copy of the projections, no bias pass).
                (Some(p), Some(d)) if product => {
                    let start_at = Start::Sum { d, ldd: g, bias: bias.and_then(as_f32_ref) };
                    gates.resize(start + batch * g, E::zero());
                    let c = as_f32(&mut gates[start..]).expect("packed only in f32");
                    p.gemm_from(batch, as_f32_ref(&hs).expect("packed only in f32"), h, start_at, c, g);
                }
                _ => {
                    gates.extend_from_slice(block);
                    if let Some(b) = bias {
                        for row in gates[start..].chunks_exact_mut(g) {
                            for (x, &y) in row.iter_mut().zip(b) {
                                *x += y;
                            }
                        }
                    }
                    if product {
                        step_product(packed.as_ref(), w_t, batch, h, g, &hs, true, &mut gates[start..]);
                    }
                }
            }
            if let Some(hp) = &mut h_prev {
                hp.extend_from_slice(&hs);
            }
            c_prev.extend_from_slice(&cs);
            let (end, start) = (out.len() + batch * h, out.len());
            out.resize(end, E::zero());
            tanh_c.resize(end, E::zero());
            for (r, ok) in ok.iter_mut().enumerate() {
                *ok = valid(t, r);
            }
            sequence_forward_step(
                &mut gates[start * 4..],
                &mut cs,
                &mut tanh_c[start..],
                &mut out[start..],
                &mut hs,
                h,
                &ok,
            );
        }
        let out = Tensor::from_vec(out, &[steps, batch, h]);
        let output = if reverse {
            Tensor::from_vec(reverse_blocks(slice(&out), batch * h), &[steps, batch, h])
        } else {
            out.clone()
        };
        LstmSequenceParts {
            output,
            h: Tensor::from_vec(hs, &[batch, h]),
            c: Tensor::from_vec(cs, &[batch, h]),
            saved: SequenceSaved {
                gates,
                c_prev,
                tanh_c,
                h_prev,
                out,
                h0: h0.map(Tensor::contiguous),
                bias: bias.is_some(),
            },
        }
    }

    /// The backward of [`Tensor::lstm_sequence`] (same `w_hh`, `lengths` and `reverse`): from
    /// the saved parts and the gradients of the output sequence and of the final `h` and `c`
    /// (`None`: zero), runs the recurrence backwards, one product `dA_t W_hh` per step, then
    /// the gradient of `w_hh` as ONE product over all steps, `Σ_t dA_tᵀ h_{t-1}`. The gradient
    /// of the initial hidden state (one more product) only if `need_h0`.
    ///
    /// Given the input `x` (`[T, B, I]`, time order) of projections `gx = x w_ihᵀ`, also the
    /// gradient of `w_ih`, `Σ_t dA_tᵀ x_t`: in f32 accumulated step by step with `w_hh`'s, from
    /// the same packed `dA_t` (cuDNN's layer-level split, without a second pass over `dA`).
    /// The gradient of `gx` itself only if `need_gx`: in f32 without it, the gate gradients
    /// live in one step's buffer, which stays in cache, instead of a `[T, B, 4H]` one.
    ///
    /// # Panics
    /// If the shapes do not fit.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn lstm_sequence_backward(
        parts: &LstmSequenceParts<E>,
        w_hh: &Tensor<E>,
        lengths: Option<&[usize]>,
        reverse: bool,
        d_out: Option<&Tensor<E>>,
        dh_n: Option<&Tensor<E>>,
        dc_n: Option<&Tensor<E>>,
        need_h0: bool,
        x: Option<&Tensor<E>>,
        need_gx: bool,
    ) -> LstmSequenceGrads<E> {
        const OP: &str = "lstm_sequence_backward";
        let (steps, batch, h) = (parts.output.shape()[0], parts.output.shape()[1], parts.output.shape()[2]);
        sequence_dims(OP, &[steps, batch, 4 * h], w_hh.shape(), lengths);
        let g = 4 * h;
        if let Some(d) = d_out {
            assert!(d.shape() == [steps, batch, h], "{OP}: d_out {:?} is not [{steps}, {batch}, {h}]", d.shape());
        }
        let x = x.map(|x| {
            assert!(
                x.rank() == 3 && x.shape()[..2] == [steps, batch],
                "{OP}: input {:?} is not [{steps}, {batch}, I]",
                x.shape()
            );
            x.contiguous()
        });
        let inputs = x.as_ref().map_or(0, |x| x.shape()[2]);
        let x = x.as_ref().map(slice);
        let mut dw_ih = x.map(|_| vec![E::zero(); g * inputs]);
        let sv = &parts.saved;
        let mut dh = state_vec(OP, "dh_n", dh_n, batch, h);
        let mut dc = state_vec(OP, "dc_n", dc_n, batch, h);
        // Every step's dA (`[T, B, 4H]`), or one step's, reused: the other precisions' weight
        // gradients read all of them after the recurrence.
        let keep_da = need_gx || TypeId::of::<E>() != TypeId::of::<f32>();
        let mut da = vec![E::zero(); if keep_da { steps * batch * g } else { batch * g }];
        let mut dw = vec![E::zero(); g * h];
        let mut db = sv.bias.then(|| vec![E::zero(); g]);
        let masked = sv.h_prev.is_some();
        let valid = |t: usize, r: usize| lengths.is_none_or(|l| t < l[r]);
        if h > 0 && batch > 0 && steps > 0 {
            // dA_t W_hh: in f32 through W packed once for the packed kernel, else E::gemm.
            let packed = pack_f32(w_hh, false);
            let w = w_hh.contiguous();
            let w = slice(&w);
            let d_out = d_out.map(Tensor::contiguous);
            let d_out = d_out.as_ref().map(slice);
            let mut tmp = vec![E::zero(); batch * h];
            let mut ok = vec![true; batch];
            let one = E::one();
            // In f32, dW_hh += dA_tᵀ h_{t-1} at every step, while dA_t is still in cache: dA_t
            // packed transposed (read in place, its columns are 2 KB apart at H = 128, which
            // thrashes a few L1 sets) and h_{t-1} packed, both into buffers reused step after
            // step.
            let mut dw_packs = packed.as_ref().map(|_| {
                let kernel = Kernel::best();
                let empty = || PackedB::new(kernel, &[], 0, 0, 0, 1);
                (PackedA::new(kernel), empty(), empty())
            });
            let out = slice(&sv.out);
            for s in (0..steps).rev() {
                let t = if reverse { steps - 1 - s } else { s };
                for (r, ok) in ok.iter_mut().enumerate() {
                    *ok = valid(t, r);
                }
                let (sg, sh) = (s * batch * g..(s + 1) * batch * g, s * batch * h..(s + 1) * batch * h);
                let dg = if keep_da { sg.clone() } else { 0..batch * g };
                if masked && !keep_da {
                    // Rows of sequences that did not run this step keep a zero gradient.
                    da.fill(E::zero());
                }
                sequence_backward_step(
                    &sv.gates[sg.clone()],
                    &sv.c_prev[sh.clone()],
                    &sv.tanh_c[sh.clone()],
                    d_out.map(|d| &d[t * batch * h..(t + 1) * batch * h]),
                    &mut dh,
                    &mut dc,
                    &mut da[dg.clone()],
                    db.as_deref_mut(),
                    h,
                    &ok,
                );
                if let Some((pa, pb, pb_x)) = &mut dw_packs {
                    // h_{t-1}: the previous step's output without padding, h0 (if given) at the
                    // first step.
                    let hp = match &sv.h_prev {
                        Some(hp) => Some(&hp[sh.clone()]),
                        None if s > 0 => Some(&out[sh.start - batch * h..sh.start]),
                        None => sv.h0.as_ref().map(slice),
                    };
                    let f32s = "packed only in f32";
                    if hp.is_some() || x.is_some() {
                        pa.pack(as_f32_ref(&da[dg.clone()]).expect(f32s), g, batch, 1, g);
                    }
                    if let Some(hp) = hp {
                        pb.repack(as_f32_ref(hp).expect(f32s), batch, h, h, 1);
                        pb.gemm_packed_a(pa, true, as_f32(&mut dw).expect(f32s), h);
                    }
                    if let (Some(x), Some(dw_ih)) = (x, dw_ih.as_deref_mut()) {
                        let xt = &x[t * batch * inputs..(t + 1) * batch * inputs];
                        pb_x.repack(as_f32_ref(xt).expect(f32s), batch, inputs, inputs, 1);
                        pb_x.gemm_packed_a(pa, true, as_f32(dw_ih).expect(f32s), inputs);
                    }
                }
                if s == 0 && !need_h0 {
                    break;
                }
                // dh_{t-1} = dA_t W_hh for the sequences that ran step t; the others keep theirs.
                let target = if masked { &mut tmp } else { &mut dh };
                step_product(packed.as_ref(), w, batch, g, h, &da[dg], false, target);
                if masked {
                    for r in (0..batch).filter(|&r| valid(t, r)) {
                        dh[r * h..(r + 1) * h].copy_from_slice(&tmp[r * h..(r + 1) * h]);
                    }
                }
            }
            // Other precisions: dW_hh = Σ_t dA_tᵀ h_{t-1} as one [4H, T*B] x [T*B, H] product,
            // dA read transposed. Without padding h_{t-1} is the previous step's output, and h0
            // (if given) the first step's.
            let mut acc = |rows: usize, a: &[E], b: &[E]| {
                // SAFETY: `a` is [rows, 4H] and `b` [rows, H], row-major; `dw` is a separate
                // [4H, H] buffer, accumulated into (beta = 1).
                unsafe {
                    E::gemm(
                        g,
                        rows,
                        h,
                        one,
                        a.as_ptr(),
                        1,
                        g as isize,
                        b.as_ptr(),
                        h as isize,
                        1,
                        one,
                        dw.as_mut_ptr(),
                        h as isize,
                        1,
                    );
                }
            };
            match &sv.h_prev {
                _ if dw_packs.is_some() => {}
                Some(hp) => acc(steps * batch, &da, hp),
                None => {
                    if steps > 1 {
                        acc((steps - 1) * batch, &da[batch * g..], out);
                    }
                    if let Some(h0) = &sv.h0 {
                        acc(batch, &da[..batch * g], slice(h0));
                    }
                }
            }
        }
        let da = if reverse && keep_da { reverse_blocks(&da, batch * g) } else { da };
        // Other precisions: dW_ih = dAᵀ x, one [4H, T*B] x [T*B, I] product (both in time
        // order now).
        if let (Some(x), Some(dw_ih)) = (x, dw_ih.as_deref_mut()) {
            if h > 0 && batch > 0 && steps > 0 && inputs > 0 && as_f32_ref(&da).is_none() {
                // SAFETY: `da` is [T*B, 4H] and `x` [T*B, I], row-major (contiguous); `dw_ih`
                // is a separate [4H, I] buffer, written (beta = 0).
                unsafe {
                    E::gemm(
                        g,
                        steps * batch,
                        inputs,
                        E::one(),
                        da.as_ptr(),
                        1,
                        g as isize,
                        x.as_ptr(),
                        inputs as isize,
                        1,
                        E::zero(),
                        dw_ih.as_mut_ptr(),
                        inputs as isize,
                        1,
                    );
                }
            }
        }
        LstmSequenceGrads {
            gx: need_gx.then(|| Tensor::from_vec(da, &[steps, batch, g])),
            bias: db.map(|d| Tensor::from_vec(d, &[g])),
            w_hh: Tensor::from_vec(dw, &[g, h]),
            w_ih: dw_ih.map(|d| Tensor::from_vec(d, &[g, inputs])),
            h0: need_h0.then(|| Tensor::from_vec(dh, &[batch, h])),
            c0: Tensor::from_vec(dc, &[batch, h]),
        }
    }
}

/// The activations of the sequence kernels.
trait Activations<E> {
    fn sigmoid(x: E) -> E;
    fn tanh(x: E) -> E;
}

/// libm's, in any precision (as the unfused ops).
struct Libm;

impl<E: Float> Activations<E> for Libm {
    #[inline(always)]
    fn sigmoid(x: E) -> E {
        sigmoid(x)
    }
    #[inline(always)]
    fn tanh(x: E) -> E {
        x.tanh()
    }
}

/// f32's branch-free polynomial forms, which vectorise.
struct Poly;

impl Activations<f32> for Poly {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        sigmoid_f32(x)
    }
    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        tanh_f32(x)
    }
}

/// `v` as f32s if `E` is f32.
fn as_f32<E: Float>(v: &mut [E]) -> Option<&mut [f32]> {
    (TypeId::of::<E>() == TypeId::of::<f32>()).then(|| {
        // SAFETY: `E` is `f32` (same `TypeId`), so this is the same slice at its own type.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) }
    })
}

/// `v` as f32s if `E` is f32.
fn as_f32_ref<E: Float>(v: &[E]) -> Option<&[f32]> {
    (TypeId::of::<E>() == TypeId::of::<f32>()).then(|| {
        // SAFETY: `E` is `f32` (same `TypeId`), so this is the same slice at its own type.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) }
    })
}

/// In f32, the recurrent weights `w` (`[4H, H]`) packed as the right-hand operand of the
/// per-step product: `Wᵀ` (`[H, 4H]`) if `transposed` (forward), `W` itself otherwise
/// (backward). `None` in other precisions, which keep E::gemm.
fn pack_f32<E: Float>(w: &Tensor<E>, transposed: bool) -> Option<PackedB> {
    let w = w.contiguous();
    let data = as_f32_ref(slice(&w))?;
    let (g, h) = (w.shape()[0], w.shape()[1]);
    let kernel = Kernel::best();
    Some(if transposed { PackedB::new(kernel, data, h, g, 1, h) } else { PackedB::new(kernel, data, g, h, h, 1) })
}

/// A step's recurrent product `c[m, n] = a[m, k] · B` (`+=` if `accumulate`), every operand
/// row-major and dense: through `packed` (B packed by [`pack_f32`]) when given, else E::gemm
/// on `b` (`[k, n]`).
#[allow(clippy::too_many_arguments)]
fn step_product<E: Float>(
    packed: Option<&PackedB>,
    b: &[E],
    m: usize,
    k: usize,
    n: usize,
    a: &[E],
    accumulate: bool,
    c: &mut [E],
) {
    if let Some(p) = packed {
        let (a, c) = (as_f32_ref(a).expect("packed only in f32"), as_f32(c).expect("packed only in f32"));
        p.gemm(m, a, k, accumulate, c, n);
        return;
    }
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "step_product: operands too short");
    let beta = if accumulate { E::one() } else { E::zero() };
    // SAFETY: `a` is [m, k], `b` [k, n] and `c` [m, n], row-major and in bounds (asserted);
    // `c` is borrowed mutably, so it overlaps neither of the others.
    unsafe {
        E::gemm(
            m,
            k,
            n,
            E::one(),
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// One step of [`Tensor::lstm_sequence`] after its product: activates the step's gate block
/// `pre` (`[B, 4H]`) in place and, for the rows `ok` marks, updates the state `c`, `h` and
/// writes `tanh(c')` and the output row.
#[allow(clippy::too_many_arguments)]
fn sequence_forward_step<E: Float>(
    pre: &mut [E],
    c: &mut [E],
    tc: &mut [E],
    y: &mut [E],
    hs: &mut [E],
    h: usize,
    ok: &[bool],
) {
    if let (Some(pre), Some(c), Some(tc), Some(y), Some(hs)) =
        (as_f32(pre), as_f32(c), as_f32(tc), as_f32(y), as_f32(hs))
    {
        // The instruction set the packed products use (every AVX-512F CPU also has AVX2 and FMA).
        match Kernel::best() {
            // SAFETY: `best` checked that the CPU has AVX-512F.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { forward_rows_avx512::<f32, Poly>(pre, c, tc, y, hs, h, ok) },
            // SAFETY: `best` checked that the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { forward_rows_avx2::<f32, Poly>(pre, c, tc, y, hs, h, ok) },
            Kernel::Scalar => forward_rows::<f32, Poly>(pre, c, tc, y, hs, h, ok),
        }
    } else {
        forward_rows::<E, Libm>(pre, c, tc, y, hs, h, ok);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows_avx512<E: Float, A: Activations<E>>(
    pre: &mut [E],
    c: &mut [E],
    tc: &mut [E],
    y: &mut [E],
    hs: &mut [E],
    h: usize,
    ok: &[bool],
) {
    forward_rows::<E, A>(pre, c, tc, y, hs, h, ok);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows_avx2<E: Float, A: Activations<E>>(
    pre: &mut [E],
    c: &mut [E],
    tc: &mut [E],
    y: &mut [E],
    hs: &mut [E],
    h: usize,
    ok: &[bool],
) {
    forward_rows::<E, A>(pre, c, tc, y, hs, h, ok);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_rows<E: Float, A: Activations<E>>(
    pre: &mut [E],
    c: &mut [E],
    tc: &mut [E],
    y: &mut [E],
    hs: &mut [E],
    h: usize,
    ok: &[bool],
) {
    for (r, _) in ok.iter().enumerate().filter(|(_, &ok)| ok) {
        let row = &mut pre[r * 4 * h..(r + 1) * 4 * h];
        let (ifg, o) = row.split_at_mut(3 * h);
        let (i_f, g) = ifg.split_at_mut(2 * h);
        i_f.iter_mut().for_each(|x| *x = A::sigmoid(*x));
        g.iter_mut().for_each(|x| *x = A::tanh(*x));
        o.iter_mut().for_each(|x| *x = A::sigmoid(*x));
        let (i, f) = i_f.split_at(h);
        let rows = r * h..(r + 1) * h;
        let (c, tc, y, hs) = (&mut c[rows.clone()], &mut tc[rows.clone()], &mut y[rows.clone()], &mut hs[rows]);
        let (f, g, o, tc, y, hs) = (&f[..h], &g[..h], &o[..h], &mut tc[..h], &mut y[..h], &mut hs[..h]);
        for j in 0..h {
            let cn = f[j] * c[j] + i[j] * g[j];
            c[j] = cn;
            let t = A::tanh(cn);
            tc[j] = t;
            y[j] = o[j] * t;
            hs[j] = y[j];
        }
    }
}

/// One step of [`Tensor::lstm_sequence_backward`] before its product: for the rows `ok`
/// marks, the gate gradients `da` (`[B, 4H]`) from the step's saved values and the incoming
/// `dh` (plus the output's gradient `d_out`), `dc` becoming the previous cell state's; `db`
/// accumulates the rows of `da`.
#[allow(clippy::too_many_arguments)]
fn sequence_backward_step<E: Float>(
    act: &[E],
    cp: &[E],
    tc: &[E],
    d_out: Option<&[E]>,
    dh: &mut [E],
    dc: &mut [E],
    da: &mut [E],
    db: Option<&mut [E]>,
    h: usize,
    ok: &[bool],
) {
    // As in `sequence_forward_step`.
    match Kernel::best() {
        // SAFETY: `best` checked that the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { backward_rows_avx512(act, cp, tc, d_out, dh, dc, da, db, h, ok) },
        // SAFETY: `best` checked that the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { backward_rows_avx2(act, cp, tc, d_out, dh, dc, da, db, h, ok) },
        Kernel::Scalar => backward_rows(act, cp, tc, d_out, dh, dc, da, db, h, ok),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_rows_avx512<E: Float>(
    act: &[E],
    cp: &[E],
    tc: &[E],
    d_out: Option<&[E]>,
    dh: &mut [E],
    dc: &mut [E],
    da: &mut [E],
    db: Option<&mut [E]>,
    h: usize,
    ok: &[bool],
) {
    backward_rows(act, cp, tc, d_out, dh, dc, da, db, h, ok);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_rows_avx2<E: Float>(
    act: &[E],
    cp: &[E],
    tc: &[E],
    d_out: Option<&[E]>,
    dh: &mut [E],
    dc: &mut [E],
    da: &mut [E],
    db: Option<&mut [E]>,
    h: usize,
    ok: &[bool],
) {
    backward_rows(act, cp, tc, d_out, dh, dc, da, db, h, ok);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows<E: Float>(
    act: &[E],
    cp: &[E],
    tc: &[E],
    d_out: Option<&[E]>,
    dh: &mut [E],
    dc: &mut [E],
    da: &mut [E],
    mut db: Option<&mut [E]>,
    h: usize,
    ok: &[bool],
) {
    let one = E::one();
    for (r, _) in ok.iter().enumerate().filter(|(_, &ok)| ok) {
        let (rows, grow) = (r * h..(r + 1) * h, r * 4 * h..(r + 1) * 4 * h);
        let [i, f, g, o] = quarters(&act[grow.clone()], h);
        let (cp, tc, dh, dc) = (&cp[rows.clone()], &tc[rows.clone()], &mut dh[rows.clone()], &mut dc[rows.clone()]);
        if let Some(d_out) = d_out {
            for (x, y) in dh.iter_mut().zip(&d_out[rows]) {
                *x += *y;
            }
        }
        let (di, rest) = da[grow].split_at_mut(h);
        let (df, rest) = rest.split_at_mut(h);
        let (dg, d_o) = rest.split_at_mut(h);
        let (cp, tc, dh, dc, df, dg, d_o) =
            (&cp[..h], &tc[..h], &dh[..h], &mut dc[..h], &mut df[..h], &mut dg[..h], &mut d_o[..h]);
        for j in 0..h {
            let (t, dhj) = (tc[j], dh[j]);
            let dct = dc[j] + dhj * o[j] * (one - t * t);
            di[j] = dct * g[j] * i[j] * (one - i[j]);
            df[j] = dct * cp[j] * f[j] * (one - f[j]);
            dg[j] = dct * i[j] * (one - g[j] * g[j]);
            d_o[j] = dhj * t * o[j] * (one - o[j]);
            dc[j] = dct * f[j];
        }
        if let Some(db) = db.as_deref_mut() {
            for (b, d) in db.iter_mut().zip(&da[r * 4 * h..(r + 1) * 4 * h]) {
                *b += *d;
            }
        }
    }
}

/// The four gate blocks of one row, each exactly `h` long.
fn quarters<E>(row: &[E], h: usize) -> [&[E]; 4] {
    [&row[..h], &row[h..2 * h], &row[2 * h..3 * h], &row[3 * h..4 * h]]
}

fn slice<E: Float>(t: &Tensor<E>) -> &[E] {
    t.as_slice().expect("made contiguous")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_activations_stay_within_a_few_ulp_of_libm() {
        let (mut worst_exp, mut worst_tanh, mut worst_sig) = (0f64, 0f64, 0f64);
        for k in -200_000..=200_000 {
            let x = k as f32 * 4.3e-4; // [-86, 86]
            let e = (exp_f32(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            worst_exp = worst_exp.max(e);
            let y = x / 8.0;
            worst_tanh = worst_tanh.max((tanh_f32(y) as f64 - (y as f64).tanh()).abs());
            let s = 1.0 / (1.0 + (-(y as f64)).exp());
            worst_sig = worst_sig.max((sigmoid_f32(y) as f64 - s).abs());
        }
        assert!(worst_exp < 2.5e-7, "exp: relative error {worst_exp}");
        assert!(worst_tanh < 6e-7, "tanh: absolute error {worst_tanh}");
        assert!(worst_sig < 2e-7, "sigmoid: absolute error {worst_sig}");
        // Saturated tails and the exact zero.
        assert_eq!((tanh_f32(50.0), tanh_f32(-50.0), tanh_f32(0.0)), (1.0, -1.0, 0.0));
        assert_eq!((sigmoid_f32(200.0), sigmoid_f32(0.0)), (1.0, 0.5));
        // Zero-width states.
        let e = Tensor::<f32>::zeros(&[2, 0]);
        assert_eq!(Tensor::fused_lstm_cell(&e, &e, &e).h.shape(), &[2, 0]);
        assert_eq!(Tensor::fused_gru_cell(&e, &e, &e).h.shape(), &[2, 0]);
        assert!(sigmoid_f32(-200.0) < 1e-37);
        assert!(tanh_f32(f32::NAN).is_nan() && sigmoid_f32(f32::NAN).is_nan());
    }
}
