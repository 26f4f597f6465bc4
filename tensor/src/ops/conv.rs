//! Convolutions over `[N, C, L]` and `[N, C, H, W]` inputs and the kernels of their gradients.
//!
//! Everything is im2col + GEMM: a chunk of the batch is unrolled into a matrix with one row per
//! (channel, kernel offset) and one column per (sample, output position), so each group of each
//! chunk is one GEMM with the weight. Chunks are sized to stay in L2 cache rather than to make
//! one GEMM over the whole batch: unrolling and packing dominate at small channel counts.
//! The input gradient is the transposed product scattered back with col2im; the weight gradient
//! is the output gradient times the unrolled input. A 1x1 kernel with stride 1 and no padding
//! needs no unrolling: the input is already the patch matrix. 1-D convolutions run through the
//! same kernels with a unit height. Autograd builds conv's backward on these associated
//! functions; the bias gradient is a plain sum over `N, H, W`.

use std::borrow::Cow;

use crate::element::{Element, Float};
use crate::tensor::Tensor;

/// Options of a 2-D convolution: `[height, width]` pairs, as PyTorch's `nn.Conv2d`.
///
/// ```
/// use ferrograd_tensor::Conv2dOptions;
/// let opts = Conv2dOptions { stride: [2, 2], padding: [1, 1], ..Default::default() };
/// assert_eq!(opts.dilation, [1, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step between output positions along height and width.
    pub stride: [usize; 2],
    /// Zeros added on both sides of the input along height and width.
    pub padding: [usize; 2],
    /// Spacing between kernel taps along height and width.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels are split into `groups` independent parts.
    pub groups: usize,
}

impl Default for Conv2dOptions {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        Conv2dOptions { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

/// Options of a 1-D convolution, as PyTorch's `nn.Conv1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dOptions {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on both sides of the input.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups: input and output channels are split into `groups` independent parts.
    pub groups: usize,
}

impl Default for Conv1dOptions {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        Conv1dOptions { stride: 1, padding: 0, dilation: 1, groups: 1 }
    }
}

impl Conv1dOptions {
    /// The equivalent 2-D options over a unit height.
    fn to_2d(self) -> Conv2dOptions {
        Conv2dOptions {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// The elements of `t` in row-major order: borrowed when already contiguous, else copied once.
pub(super) fn dense<E: Element>(t: &Tensor<E>) -> Cow<'_, [E]> {
    match t.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_vec()),
    }
}

/// The output positions `lo..hi` (within `0..out`) whose input index
/// `pos * stride + offset - pad` falls inside `0..size`.
#[inline]
fn valid_range(offset: usize, pad: usize, stride: usize, size: usize, out: usize) -> (usize, usize) {
    let lo = if offset >= pad { 0 } else { (pad - offset).div_ceil(stride) };
    let hi = if size + pad <= offset { 0 } else { (size + pad - offset).div_ceil(stride) };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// Zeroes `d`; most padding segments are empty, where even a call to `memset` costs.
#[inline(always)]
fn zero<E: Float>(d: &mut [E]) {
    if !d.is_empty() {
        d.fill(E::zero());
    }
}

/// Copies the first `dst.len()` elements of `src` into `dst` inline: im2col rows are a few dozen
/// elements, where a call to `memcpy` costs more than the copy itself.
#[inline(always)]
fn copy_short<E: Copy>(dst: &mut [E], src: &[E]) {
    let src = &src[..dst.len()];
    let (mut d, mut s) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    for (d, s) in d.by_ref().zip(s.by_ref()) {
        let s: &[E; 8] = s.try_into().expect("chunks of 8");
        d.copy_from_slice(s);
    }
    d.into_remainder().iter_mut().zip(s.remainder()).for_each(|(d, &s)| *d = s);
}

/// A matrix inside a slice, addressed by a row and a column stride, for [`gemm`].
#[derive(Clone, Copy)]
struct Mat<'a, E> {
    data: &'a [E],
    rs: usize,
    cs: usize,
}

fn mat<E>(data: &[E], rs: usize, cs: usize) -> Mat<'_, E> {
    Mat { data, rs, cs }
}

/// Panics unless an `rows x cols` matrix with strides `rs, cs` fits in `len` elements.
#[inline]
fn check_extent(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) {
    if rows > 0 && cols > 0 {
        assert!((rows - 1) * rs + (cols - 1) * cs < len, "conv: GEMM operand out of bounds");
    }
}

/// `C = A B + beta C` with `A: m x k`, `B: k x n` and `C: m x n` (strides `(rsc, 1)` in `c`).
#[allow(clippy::too_many_arguments)]
fn gemm<E: Float>(m: usize, k: usize, n: usize, a: Mat<'_, E>, b: Mat<'_, E>, beta: E, c: &mut [E], rsc: usize) {
    check_extent(m, k, a.rs, a.cs, a.data.len());
    check_extent(k, n, b.rs, b.cs, b.data.len());
    check_extent(m, n, rsc, 1, c.len());
    // SAFETY: the extents were checked against each slice just above, and `c` is a unique borrow,
    // so it cannot alias `a` or `b`.
    unsafe {
        E::gemm(
            m,
            k,
            n,
            E::one(),
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        )
    }
}

/// Bytes of the unrolled input per batch chunk: the unrolled matrix and GEMM's packed copy of it
/// stay in a core's L2 cache (a chunk of 2^16 f32 ran 1.4x faster than 2^20 on LeNet shapes).
const CHUNK_BYTES: usize = 1 << 18;

/// matrixmultiply splits a GEMM across its threads once `m * k + k * n` reaches 2^15 (with two
/// or more threads). For the small GEMMs of small-channel convolutions that costs more than it
/// gains (LeNet shapes ran 1.3-4x slower with two threads than with one), so chunks stay below
/// it when a single sample allows.
const GEMM_SERIAL_LIMIT: usize = 1 << 15;

/// Sizes of one convolution, validated: the input is `[n, c, h, w]`, the weight
/// `[o, c / groups, kh, kw]`, the output `[n, o, ho, wo]` (1-D convolutions have `h = kh = 1`).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    spatial: usize,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    groups: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// Validates `x` (input) and `w` (weight) shapes of a convolution with `spatial` (1 or 2)
    /// spatial dims, panicking with `op` and both shapes.
    #[track_caller]
    fn new(op: &str, x: &[usize], w: &[usize], spatial: usize, opts: &Conv2dOptions) -> Self {
        let fail = |why: String| -> ! { panic!("{op}: input {x:?} and weight {w:?}: {why}") };
        let rank = spatial + 2;
        if x.len() != rank || w.len() != rank {
            fail(format!("expected rank-{rank} input and weight"));
        }
        // Lift 1-D shapes to 2-D with a unit height.
        let lift = |s: &[usize]| if spatial == 1 { [s[0], s[1], 1, s[2]] } else { [s[0], s[1], s[2], s[3]] };
        let ([n, c, h, wd], [o, cg, kh, kw]) = (lift(x), lift(w));
        let Conv2dOptions { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups } = *opts;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || groups == 0 {
            fail(format!(
                "stride {:?}, dilation {:?} and groups {groups} must be positive",
                opts.stride, opts.dilation
            ));
        }
        if c % groups != 0 || o % groups != 0 {
            fail(format!("{c} input and {o} output channels are not both divisible by groups {groups}"));
        }
        if cg != c / groups {
            fail(format!("weight has {cg} input channels, expected {} ({c} channels / {groups} groups)", c / groups));
        }
        let out_size = |size: usize, pad: usize, k: usize, d: usize, s: usize| {
            let eff = d * (k.max(1) - 1) + 1;
            if k == 0 || size + 2 * pad < eff {
                fail(format!("kernel (dilated extent {eff}) is larger than the padded input ({})", size + 2 * pad));
            }
            (size + 2 * pad - eff) / s + 1
        };
        let ho = out_size(h, ph, kh, dh, sh);
        let wo = out_size(wd, pw, kw, dw, sw);
        Geometry { spatial, n, c, h, w: wd, o, groups, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo }
    }

    /// The output shape, `[n, o, ho, wo]` (or `[n, o, wo]` in 1-D).
    fn out_shape(&self) -> Vec<usize> {
        if self.spatial == 1 {
            vec![self.n, self.o, self.wo]
        } else {
            vec![self.n, self.o, self.ho, self.wo]
        }
    }

    /// The input shape, `[n, c, h, w]` (or `[n, c, w]` in 1-D).
    fn in_shape(&self) -> Vec<usize> {
        if self.spatial == 1 {
            vec![self.n, self.c, self.w]
        } else {
            vec![self.n, self.c, self.h, self.w]
        }
    }

    fn cg(&self) -> usize {
        self.c / self.groups
    }

    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of the unrolled matrix per group: `c / groups * kh * kw`.
    fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output positions per sample.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// A 1x1 kernel with unit stride and no padding: the input is its own im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    /// Samples per chunk of the unrolled matrix, for a kernel whose per-group GEMM has
    /// `m * k + k * n = fixed + per_column * columns`: within [`CHUNK_BYTES`], and below
    /// [`GEMM_SERIAL_LIMIT`] where one sample alone does not already exceed it.
    fn chunk<E>(&self, fixed: usize, per_column: usize) -> usize {
        let elems = CHUNK_BYTES / std::mem::size_of::<E>();
        let by_cache = elems / (self.c * self.kh * self.kw * self.p()).max(1);
        let by_threads = GEMM_SERIAL_LIMIT.saturating_sub(fixed) / (per_column * self.p()).max(1);
        by_cache.min(by_threads).clamp(1, self.n.max(1))
    }

    /// Unrolls samples `n0..n0 + nb` of the dense input `x` into `col`, a
    /// `[c * kh * kw, nb * ho * wo]` row-major matrix (padding reads as zero).
    fn im2col<E: Float>(&self, x: &[E], n0: usize, nb: usize, col: &mut [E]) {
        let (hw, p, wo, sw) = (self.h * self.w, self.p(), self.wo, self.sw);
        let ld = nb * p;
        for c in 0..self.c {
            for ki in 0..self.kh {
                let (oh_lo, oh_hi) = valid_range(ki * self.dh, self.ph, self.sh, self.h, self.ho);
                for kj in 0..self.kw {
                    let (ow_lo, ow_hi) = valid_range(kj * self.dw, self.pw, sw, self.w, wo);
                    let r = (c * self.kh + ki) * self.kw + kj;
                    let row = &mut col[r * ld..(r + 1) * ld];
                    if oh_lo == oh_hi || ow_lo == ow_hi {
                        row.fill(E::zero());
                        continue;
                    }
                    // Offset in the plane of the first valid tap, and between valid output rows.
                    let first =
                        (oh_lo * self.sh + ki * self.dh - self.ph) * self.w + ow_lo * sw + kj * self.dw - self.pw;
                    let (pitch, n_w, full) = (self.sh * self.w, ow_hi - ow_lo, ow_lo == 0 && ow_hi == wo);
                    for (b, dst) in row.chunks_exact_mut(p).enumerate() {
                        let plane = &x[((n0 + b) * self.c + c) * hw..][..hw];
                        zero(&mut dst[..oh_lo * wo]);
                        zero(&mut dst[oh_hi * wo..]);
                        let rows = dst[oh_lo * wo..oh_hi * wo].chunks_exact_mut(wo).zip(plane[first..].chunks(pitch));
                        if full && sw == 1 {
                            rows.for_each(|(d, s)| copy_short(d, s));
                            continue;
                        }
                        for (d, s) in rows {
                            zero(&mut d[..ow_lo]);
                            zero(&mut d[ow_hi..]);
                            let d = &mut d[ow_lo..ow_hi];
                            if sw == 1 {
                                copy_short(d, s);
                            } else {
                                d.iter_mut().zip(s.iter().step_by(sw)).take(n_w).for_each(|(o, &i)| *o = i);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Geometry::im2col`]: adds every element of `col` into the input position
    /// it was read from, in the dense gradient `gx` (padding positions are dropped).
    fn col2im<E: Float>(&self, col: &[E], n0: usize, nb: usize, gx: &mut [E]) {
        let (hw, p, wo, sw) = (self.h * self.w, self.p(), self.wo, self.sw);
        let ld = nb * p;
        for c in 0..self.c {
            for ki in 0..self.kh {
                let (oh_lo, oh_hi) = valid_range(ki * self.dh, self.ph, self.sh, self.h, self.ho);
                for kj in 0..self.kw {
                    let (ow_lo, ow_hi) = valid_range(kj * self.dw, self.pw, sw, self.w, wo);
                    if oh_lo == oh_hi || ow_lo == ow_hi {
                        continue;
                    }
                    let r = (c * self.kh + ki) * self.kw + kj;
                    let first =
                        (oh_lo * self.sh + ki * self.dh - self.ph) * self.w + ow_lo * sw + kj * self.dw - self.pw;
                    let pitch = self.sh * self.w;
                    for (b, src) in col[r * ld..(r + 1) * ld].chunks_exact(p).enumerate() {
                        let plane = &mut gx[((n0 + b) * self.c + c) * hw..][..hw];
                        let rows = src[oh_lo * wo..oh_hi * wo].chunks_exact(wo).zip(plane[first..].chunks_mut(pitch));
                        for (s, d) in rows {
                            let s = &s[ow_lo..ow_hi];
                            if sw == 1 {
                                d.iter_mut().zip(s).for_each(|(o, &v)| *o += v);
                            } else {
                                d.iter_mut().step_by(sw).zip(s).for_each(|(o, &v)| *o += v);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Copies samples `n0..n0 + nb` of a dense `[n, o, p]` tensor into `[o, nb * p]` order, the
    /// layout whose group slices are GEMM operands next to an im2col matrix.
    fn gather_channel_major<E: Float>(&self, y: &[E], n0: usize, nb: usize, out: &mut [E]) {
        let p = self.p();
        for o in 0..self.o {
            for b in 0..nb {
                out[(o * nb + b) * p..][..p].copy_from_slice(&y[((n0 + b) * self.o + o) * p..][..p]);
            }
        }
    }

    /// The forward convolution of dense input `x` and weight `w`, as a dense `[n, o, p]` buffer.
    fn forward<E: Float>(&self, x: &[E], w: &[E], bias: Option<&[E]>) -> Vec<E> {
        let (p, og, cg, kg) = (self.p(), self.og(), self.cg(), self.kg());
        if self.is_pointwise() {
            let mut y = vec![E::zero(); self.n * self.o * p];
            for b in 0..self.n {
                for g in 0..self.groups {
                    let wg = mat(&w[g * og * kg..], kg, 1);
                    let xg = mat(&x[(b * self.c + g * cg) * p..], p, 1);
                    gemm(og, cg, p, wg, xg, E::zero(), &mut y[(b * self.o + g * og) * p..], p);
                }
            }
            if let Some(bias) = bias {
                for (row, &bv) in y.chunks_exact_mut(p).zip(bias.iter().cycle()) {
                    row.iter_mut().for_each(|v| *v += bv);
                }
            }
            return y;
        }
        let nb = self.chunk::<E>(og * kg, kg);
        let mut col = vec![E::zero(); self.groups * kg * nb * p];
        let mut tmp = vec![E::zero(); self.o * nb * p];
        // Filled in order, chunk after chunk, so it needs no zeroing first.
        let mut y = Vec::with_capacity(self.n * self.o * p);
        for n0 in (0..self.n).step_by(nb) {
            let nb = nb.min(self.n - n0);
            let ld = nb * p;
            self.im2col(x, n0, nb, &mut col);
            for g in 0..self.groups {
                let wg = mat(&w[g * og * kg..], kg, 1);
                let colg = mat(&col[g * kg * ld..], ld, 1);
                gemm(og, kg, ld, wg, colg, E::zero(), &mut tmp[g * og * ld..], ld);
            }
            for b in 0..nb {
                for o in 0..self.o {
                    let bv = bias.map_or(E::zero(), |b| b[o]);
                    y.extend(tmp[o * ld + b * p..][..p].iter().map(|&t| t + bv));
                }
            }
        }
        y
    }

    /// The gradient w.r.t. the input of dense output gradient `gy` and weight `w`.
    fn input_grad<E: Float>(&self, gy: &[E], w: &[E]) -> Vec<E> {
        let (p, og, cg, kg) = (self.p(), self.og(), self.cg(), self.kg());
        let mut gx = vec![E::zero(); self.n * self.c * self.h * self.w];
        if self.is_pointwise() {
            for b in 0..self.n {
                for g in 0..self.groups {
                    let wgt = mat(&w[g * og * kg..], 1, kg);
                    let gyg = mat(&gy[(b * self.o + g * og) * p..], p, 1);
                    gemm(cg, og, p, wgt, gyg, E::zero(), &mut gx[(b * self.c + g * cg) * p..], p);
                }
            }
            return gx;
        }
        let nb = self.chunk::<E>(kg * og, og);
        let mut col = vec![E::zero(); self.groups * kg * nb * p];
        let mut gyt = vec![E::zero(); self.o * nb * p];
        for n0 in (0..self.n).step_by(nb) {
            let nb = nb.min(self.n - n0);
            let ld = nb * p;
            self.gather_channel_major(gy, n0, nb, &mut gyt);
            for g in 0..self.groups {
                let wgt = mat(&w[g * og * kg..], 1, kg);
                let gyg = mat(&gyt[g * og * ld..], ld, 1);
                gemm(kg, og, ld, wgt, gyg, E::zero(), &mut col[g * kg * ld..], ld);
            }
            self.col2im(&col, n0, nb, &mut gx);
        }
        gx
    }

    /// The gradient w.r.t. the weight of dense input `x` and output gradient `gy`.
    fn weight_grad<E: Float>(&self, x: &[E], gy: &[E]) -> Vec<E> {
        let (p, og, cg, kg) = (self.p(), self.og(), self.cg(), self.kg());
        let mut gw = vec![E::zero(); self.o * kg];
        if self.is_pointwise() {
            for b in 0..self.n {
                for g in 0..self.groups {
                    let gyg = mat(&gy[(b * self.o + g * og) * p..], p, 1);
                    let xgt = mat(&x[(b * self.c + g * cg) * p..], 1, p);
                    gemm(og, p, cg, gyg, xgt, E::one(), &mut gw[g * og * kg..], kg);
                }
            }
            return gw;
        }
        let nb = self.chunk::<E>(0, og + kg);
        let mut col = vec![E::zero(); self.groups * kg * nb * p];
        let mut gyt = vec![E::zero(); self.o * nb * p];
        for n0 in (0..self.n).step_by(nb) {
            let nb = nb.min(self.n - n0);
            let ld = nb * p;
            self.im2col(x, n0, nb, &mut col);
            self.gather_channel_major(gy, n0, nb, &mut gyt);
            for g in 0..self.groups {
                let gyg = mat(&gyt[g * og * ld..], ld, 1);
                let colgt = mat(&col[g * kg * ld..], 1, ld);
                gemm(og, ld, kg, gyg, colgt, E::one(), &mut gw[g * og * kg..], kg);
            }
        }
        gw
    }
}

/// Checks a gradient's shape against the output shape the geometry implies.
#[track_caller]
fn check_grad_out(op: &str, geo: &Geometry, grad_out: &[usize], x: &[usize], w: &[usize]) {
    let expected = geo.out_shape();
    assert!(
        grad_out == expected.as_slice(),
        "{op}: grad_out {grad_out:?} does not match the output shape {expected:?} of input {x:?} and weight {w:?}"
    );
}

/// Checks a bias against the output channels and returns its values.
#[track_caller]
fn bias_values<E: Float>(op: &str, bias: Option<&Tensor<E>>, weight: &[usize]) -> Option<Vec<E>> {
    bias.map(|b| {
        assert!(
            b.shape() == [weight[0]],
            "{op}: bias {:?} does not match weight {weight:?}: expected [{}]",
            b.shape(),
            weight[0]
        );
        b.to_vec()
    })
}

impl<E: Float> Tensor<E> {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) of an `[N, C, H, W]` input with
    /// an `[O, C / groups, kh, kw]` weight and an optional `[O]` bias: `[N, O, Ho, Wo]` with
    /// `Ho = (H + 2 padding - dilation (kh - 1) - 1) / stride + 1` (likewise `Wo`).
    ///
    /// # Panics
    /// If the ranks are not 4, the channels do not divide into `groups`, the weight's input
    /// channels differ from `C / groups`, the bias is not `[O]`, or the dilated kernel is larger
    /// than the padded input.
    ///
    /// ```
    /// use ferrograd_tensor::{Conv2dOptions, Tensor};
    /// let x = Tensor::<f32>::ones(&[1, 1, 4, 4]);
    /// let w = Tensor::<f32>::ones(&[2, 1, 3, 3]);
    /// let y = x.conv2d(&w, None, &Conv2dOptions { padding: [1, 1], ..Default::default() });
    /// assert_eq!(y.shape(), &[1, 2, 4, 4]);
    /// assert_eq!(y.at(&[0, 1, 0, 0]), 4.0); // a corner sees 2x2 of the input
    /// assert_eq!(y.at(&[0, 1, 1, 1]), 9.0);
    /// ```
    #[track_caller]
    pub fn conv2d(&self, weight: &Tensor<E>, bias: Option<&Tensor<E>>, opts: &Conv2dOptions) -> Tensor<E> {
        let geo = Geometry::new("conv2d", self.shape(), weight.shape(), 2, opts);
        let bias = bias_values("conv2d", bias, weight.shape());
        let y = geo.forward(&dense(self), &dense(weight), bias.as_deref());
        Tensor::from_vec(y, &geo.out_shape())
    }

    /// The gradient of [`Tensor::conv2d`] w.r.t. its input, given the output gradient `grad_out`
    /// `[N, O, Ho, Wo]`: a transposed convolution. `input_shape` fixes the size when a stride
    /// leaves some input rows or columns unread (they get zero gradient).
    ///
    /// # Panics
    /// As [`Tensor::conv2d`] for `input_shape` and the weight, or if `grad_out` does not have the
    /// output shape they imply.
    ///
    /// ```
    /// use ferrograd_tensor::{Conv2dOptions, Tensor};
    /// let w = Tensor::<f32>::ones(&[1, 1, 2, 2]);
    /// let gy = Tensor::<f32>::ones(&[1, 1, 2, 2]);
    /// let gx = Tensor::conv2d_input_grad(&gy, &w, &[1, 1, 3, 3], &Conv2dOptions::default());
    /// assert_eq!(gx.to_vec(), vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn conv2d_input_grad(
        grad_out: &Tensor<E>,
        weight: &Tensor<E>,
        input_shape: &[usize],
        opts: &Conv2dOptions,
    ) -> Tensor<E> {
        let op = "conv2d_input_grad";
        let geo = Geometry::new(op, input_shape, weight.shape(), 2, opts);
        check_grad_out(op, &geo, grad_out.shape(), input_shape, weight.shape());
        let gx = geo.input_grad(&dense(grad_out), &dense(weight));
        Tensor::from_vec(gx, &geo.in_shape())
    }

    /// The gradient of [`Tensor::conv2d`] w.r.t. its weight, given the input and the output
    /// gradient `grad_out` `[N, O, Ho, Wo]`; the result has `weight_shape`.
    ///
    /// # Panics
    /// As [`Tensor::conv2d`] for the input and `weight_shape`, or if `grad_out` does not have the
    /// output shape they imply.
    ///
    /// ```
    /// use ferrograd_tensor::{Conv2dOptions, Tensor};
    /// let x = Tensor::<f32>::arange(0.0, 9.0, 1.0).reshape(&[1, 1, 3, 3]);
    /// let gy = Tensor::<f32>::ones(&[1, 1, 2, 2]);
    /// let gw = Tensor::conv2d_weight_grad(&x, &gy, &[1, 1, 2, 2], &Conv2dOptions::default());
    /// assert_eq!(gw.to_vec(), vec![8.0, 12.0, 20.0, 24.0]);
    /// ```
    #[track_caller]
    pub fn conv2d_weight_grad(
        input: &Tensor<E>,
        grad_out: &Tensor<E>,
        weight_shape: &[usize],
        opts: &Conv2dOptions,
    ) -> Tensor<E> {
        let op = "conv2d_weight_grad";
        let geo = Geometry::new(op, input.shape(), weight_shape, 2, opts);
        check_grad_out(op, &geo, grad_out.shape(), input.shape(), weight_shape);
        let gw = geo.weight_grad(&dense(input), &dense(grad_out));
        Tensor::from_vec(gw, weight_shape)
    }

    /// 1-D convolution (cross-correlation, as PyTorch's `conv1d`) of an `[N, C, L]` input with an
    /// `[O, C / groups, k]` weight and an optional `[O]` bias: `[N, O, Lo]` with
    /// `Lo = (L + 2 padding - dilation (k - 1) - 1) / stride + 1`.
    ///
    /// # Panics
    /// As [`Tensor::conv2d`], with rank-3 input and weight.
    ///
    /// ```
    /// use ferrograd_tensor::{Conv1dOptions, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 4]);
    /// let w = Tensor::<f32>::from_vec(vec![1.0, -1.0], &[1, 1, 2]);
    /// let y = x.conv1d(&w, None, &Conv1dOptions::default());
    /// assert_eq!(y.to_vec(), vec![-1.0, -1.0, -1.0]);
    /// ```
    #[track_caller]
    pub fn conv1d(&self, weight: &Tensor<E>, bias: Option<&Tensor<E>>, opts: &Conv1dOptions) -> Tensor<E> {
        let geo = Geometry::new("conv1d", self.shape(), weight.shape(), 1, &opts.to_2d());
        let bias = bias_values("conv1d", bias, weight.shape());
        let y = geo.forward(&dense(self), &dense(weight), bias.as_deref());
        Tensor::from_vec(y, &geo.out_shape())
    }

    /// The gradient of [`Tensor::conv1d`] w.r.t. its input (see [`Tensor::conv2d_input_grad`]).
    ///
    /// # Panics
    /// As [`Tensor::conv1d`] for `input_shape` and the weight, or if `grad_out` does not have the
    /// output shape they imply.
    #[track_caller]
    pub fn conv1d_input_grad(
        grad_out: &Tensor<E>,
        weight: &Tensor<E>,
        input_shape: &[usize],
        opts: &Conv1dOptions,
    ) -> Tensor<E> {
        let op = "conv1d_input_grad";
        let geo = Geometry::new(op, input_shape, weight.shape(), 1, &opts.to_2d());
        check_grad_out(op, &geo, grad_out.shape(), input_shape, weight.shape());
        let gx = geo.input_grad(&dense(grad_out), &dense(weight));
        Tensor::from_vec(gx, &geo.in_shape())
    }

    /// The gradient of [`Tensor::conv1d`] w.r.t. its weight (see [`Tensor::conv2d_weight_grad`]).
    ///
    /// # Panics
    /// As [`Tensor::conv1d`] for the input and `weight_shape`, or if `grad_out` does not have the
    /// output shape they imply.
    #[track_caller]
    pub fn conv1d_weight_grad(
        input: &Tensor<E>,
        grad_out: &Tensor<E>,
        weight_shape: &[usize],
        opts: &Conv1dOptions,
    ) -> Tensor<E> {
        let op = "conv1d_weight_grad";
        let geo = Geometry::new(op, input.shape(), weight_shape, 1, &opts.to_2d());
        check_grad_out(op, &geo, grad_out.shape(), input.shape(), weight_shape);
        let gw = geo.weight_grad(&dense(input), &dense(grad_out));
        Tensor::from_vec(gw, weight_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for offset in 0..5 {
            for pad in 0..4 {
                for stride in 1..4 {
                    for size in 0..6 {
                        for out in 0..6 {
                            let ok: Vec<usize> = (0..out)
                                .filter(|&p| {
                                    let i = (p * stride + offset) as isize - pad as isize;
                                    i >= 0 && i < size as isize
                                })
                                .collect();
                            let (lo, hi) = valid_range(offset, pad, stride, size, out);
                            assert_eq!((lo..hi).collect::<Vec<_>>(), ok, "{offset} {pad} {stride} {size} {out}");
                        }
                    }
                }
            }
        }
    }
}
