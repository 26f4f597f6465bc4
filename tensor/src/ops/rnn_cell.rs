//! Fused pointwise parts of the LSTM and GRU cells: every gate's activation, the new state and
//! what backward needs, in one pass over the gate block, and the matching backward in one pass.
//!
//! Unfused, one LSTM step is about ten elementwise ops forward and twenty backward, each a pass
//! over memory and a new buffer; here it is one of each. The two matrix products of a step stay
//! with the caller (`gx = x W_ihᵀ + b`, `gh = h W_hhᵀ + b_hh`). In f32 the activations use
//! branch-free polynomial forms of `exp` and `tanh` that the compiler vectorises (a few units in
//! the last place from the libm ones); f64 uses libm's, to the last bit of the unfused ops.

use std::any::Any;
use std::ops::Range;

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
