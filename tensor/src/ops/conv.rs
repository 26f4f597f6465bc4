//! Convolutions over `[N, C, L]` and `[N, C, H, W]` inputs and the kernels of their gradients.
//!
//! Stride-1 `f32` convolutions on CPUs with AVX-512 skip unrolling: every kernel tap reads a
//! contiguous run of the (padded) input planes, which AVX-512 kernels sweep directly, splitting
//! the batch over threads (module `shift`). Everything else is im2col + GEMM: a chunk of the
//! batch is unrolled into a matrix with one row per (channel, kernel offset) and one column per
//! (sample, output position), so each group of each chunk is one GEMM with the weight. Chunks are sized to stay in L2 cache rather than to make
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
        // A `match`, not a closure: a panic inside a closure would lose the caller's location.
        match Self::check(x, w, spatial, opts) {
            Ok(geo) => geo,
            Err(why) => panic!("{op}: input {x:?} and weight {w:?}: {why}"),
        }
    }

    /// The geometry, or why the shapes and options do not make a convolution.
    fn check(x: &[usize], w: &[usize], spatial: usize, opts: &Conv2dOptions) -> Result<Self, String> {
        let rank = spatial + 2;
        if x.len() != rank || w.len() != rank {
            return Err(format!("expected rank-{rank} input and weight"));
        }
        // Lift 1-D shapes to 2-D with a unit height.
        let lift = |s: &[usize]| if spatial == 1 { [s[0], s[1], 1, s[2]] } else { [s[0], s[1], s[2], s[3]] };
        let ([n, c, h, wd], [o, cg, kh, kw]) = (lift(x), lift(w));
        let Conv2dOptions { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups } = *opts;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || groups == 0 {
            return Err(format!(
                "stride {:?}, dilation {:?} and groups {groups} must be positive",
                opts.stride, opts.dilation
            ));
        }
        if c % groups != 0 || o % groups != 0 {
            return Err(format!("{c} input and {o} output channels are not both divisible by groups {groups}"));
        }
        if cg != c / groups {
            return Err(format!(
                "weight has {cg} input channels, expected {} ({c} channels / {groups} groups)",
                c / groups
            ));
        }
        let out_size = |size: usize, pad: usize, k: usize, d: usize, s: usize| {
            let eff = d * (k.max(1) - 1) + 1;
            if k == 0 || size + 2 * pad < eff {
                return Err(format!(
                    "kernel (dilated extent {eff}) is larger than the padded input ({})",
                    size + 2 * pad
                ));
            }
            Ok((size + 2 * pad - eff) / s + 1)
        };
        let ho = out_size(h, ph, kh, dh, sh)?;
        let wo = out_size(wd, pw, kw, dw, sw)?;
        Ok(Geometry { spatial, n, c, h, w: wd, o, groups, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo })
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
        #[cfg(target_arch = "x86_64")]
        if let (Some(x), Some(w), true) = (shift::f32s(x), shift::f32s(w), shift::usable(self)) {
            return shift::from_f32s(shift::forward(
                self,
                x,
                w,
                bias.map(|b| shift::f32s(b).expect("bias is f32 like x")),
            ));
        }
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
        #[cfg(target_arch = "x86_64")]
        if let (Some(gy), Some(w), true) = (shift::f32s(gy), shift::f32s(w), shift::usable(self)) {
            return shift::from_f32s(shift::input_grad(self, gy, w));
        }
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
        #[cfg(target_arch = "x86_64")]
        if let (Some(x), Some(gy), true) = (shift::f32s(x), shift::f32s(gy), shift::usable(self)) {
            return shift::from_f32s(shift::weight_grad(self, x, gy));
        }
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

/// Stride-1 convolutions of `f32` without unrolling the input.
///
/// Each input plane is padded once (a copy only when there is padding) to `hp x wp`; output
/// position `(oh, ow)` is then sweep index `q = oh * wp + ow`, and the input tap `(c, ki, kj)`
/// it reads is `q + c * hp * wp + ki * dh * wp + kj * dw`: for every tap, the whole sweep reads
/// one contiguous run of the padded planes. So the forward pass is a GEMM whose right operand
/// rows are shifted windows of the input itself, computed by AVX-512 kernels straight from the
/// planes; sweep positions with `ow >= wo` are computed and dropped (`wp / wo` extra work,
/// against im2col's copy of `kh * kw` times the input). The weight gradient is the same sweep
/// with the reduction along `q` (the output gradient laid out with row pitch `wp`, its extra
/// columns masked off), and the input gradient is
/// its adjoint: for every tap, the output gradient summed over output channels is added back
/// into the padded planes at the tap's offset, and the padding is cropped. Samples are split
/// across threads. Other convolutions (strided, `f64`, or without AVX-512) take im2col + GEMM.
#[cfg(target_arch = "x86_64")]
mod shift {
    use std::any::{Any, TypeId};
    use std::mem::MaybeUninit;

    use super::super::matmul::{
        elementwise_min_per_thread, fill_uninit, min_work_per_thread, num_threads, parallel_collect, parallel_for_each,
        parts_for, unit_chunks,
    };
    use super::Geometry;
    use crate::element::Element;

    /// `s` as `f32`s when `E` is `f32`.
    pub(super) fn f32s<E: Element>(s: &[E]) -> Option<&[f32]> {
        // SAFETY: `E` is `f32` (same type id), so the slice's elements already are `f32`s.
        (TypeId::of::<E>() == TypeId::of::<f32>())
            .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
    }

    /// A vector of `f32` as the `Vec<E>` it is (only called where `E` is `f32`).
    pub(super) fn from_f32s<E: Element>(v: Vec<f32>) -> Vec<E> {
        *(Box::new(v) as Box<dyn Any>).downcast::<Vec<E>>().expect("conv: f32 result for an f32 element type")
    }

    /// Threads for a batch of `n` samples of `work` multiply-adds each: as many as [`num_threads`]
    /// allows while each gets at least [`min_work_per_thread`] and one sample.
    fn batch_threads(n: usize, work: usize) -> usize {
        let total = n.saturating_mul(work);
        num_threads().min(n).min(total / min_work_per_thread().max(1)).max(1)
    }

    /// Whether the kernels apply: stride 1 and a CPU with AVX-512.
    pub(super) fn usable(geo: &Geometry) -> bool {
        geo.sh == 1 && geo.sw == 1 && std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The sweep over a sample's padded planes, in 16-lane vectors.
    pub(super) struct Sweep {
        /// Padded width and plane size.
        wp: usize,
        plane: usize,
        /// Sweep positions `0..qv` stay inside the padded planes for every tap.
        qv: usize,
        /// Per vector: the lanes below `qv` (safe to load) ...
        pub(super) load: Vec<u16>,
        /// ... the lanes that are output positions (`ow < wo`) ...
        pub(super) valid: Vec<u16>,
        /// ... and the output index of its first valid lane.
        pub(super) start: Vec<usize>,
        /// Per tap `(c, ki, kj)` of a group: its offset from the sweep position.
        pub(super) offs: Vec<usize>,
        /// Output positions, `ho * wo`: the valid lanes of all vectors.
        pub(super) outputs: usize,
    }

    impl Sweep {
        /// The sweep of a stride-1 convolution of `cg` planes of `hp x wp` (padding included).
        fn new(geo: &Geometry, cg: usize, hp: usize, wp: usize) -> Self {
            let (ho, wo, plane) = (geo.ho, geo.wo, hp * wp);
            let qv = if ho * wo == 0 { 0 } else { (ho - 1) * wp + wo };
            let nq = qv.div_ceil(16);
            let (mut load, mut valid, mut start) = (vec![0; nq], vec![0; nq], vec![0; nq]);
            for j in 0..nq {
                let q0 = 16 * j;
                start[j] = q0 / wp * wo + (q0 % wp).min(wo);
                for (l, q) in (q0..q0 + 16).enumerate() {
                    if q < qv {
                        load[j] |= 1 << l;
                        if q % wp < wo {
                            valid[j] |= 1 << l;
                        }
                    }
                }
            }
            let mut offs = Vec::with_capacity(cg * geo.kh * geo.kw);
            for c in 0..cg {
                for ki in 0..geo.kh {
                    offs.extend((0..geo.kw).map(|kj| c * plane + ki * geo.dh * wp + kj * geo.dw));
                }
            }
            Sweep { wp, plane, qv, load, valid, start, offs, outputs: ho * wo }
        }

        /// Elements a group's planes must hold for every tap of the sweep to stay inside them.
        pub(super) fn extent(&self) -> usize {
            self.offs.iter().max().map_or(0, |&o| o + self.qv)
        }

        /// Vectors per sweep.
        fn nq(&self) -> usize {
            self.load.len()
        }
    }

    /// Copies `c` planes of `h x w` from `src` into the interiors of the `hp x wp` planes of
    /// `dst`, at row `ph` and column `pw` (the borders of `dst` are left as they are: zero).
    fn pad_planes(src: &[f32], (c, h, w): (usize, usize, usize), (ph, pw): (usize, usize), s: &Sweep, dst: &mut [f32]) {
        for ch in 0..c {
            let plane = &mut dst[ch * s.plane..][..s.plane];
            for (r, row) in src[ch * h * w..][..h * w].chunks_exact(w).enumerate() {
                plane[(r + ph) * s.wp + pw..][..w].copy_from_slice(row);
            }
        }
    }

    /// The forward convolution of dense `x` and `w` (see the module doc), as a dense `[n, o, p]`.
    pub(super) fn forward(geo: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (p, og, cg, kg) = (geo.p(), geo.og(), geo.cg(), geo.kg());
        let (hp, wp) = (geo.h + 2 * geo.ph, geo.w + 2 * geo.pw);
        let sweep = Sweep::new(geo, cg, hp, wp);
        let padded = geo.ph > 0 || geo.pw > 0;
        let (x_len, y_len) = (geo.c * geo.h * geo.w, geo.o * p);
        // Left uninitialised: the kernel writes every output (zero-filling first made LeNet's
        // first convolution 1.17x slower).
        let len = geo.n * y_len;
        let mut y: Vec<f32> = Vec::with_capacity(len);
        let threads = batch_threads(geo.n, geo.o * kg * sweep.nq() * 16);
        let parts = unit_chunks(&mut y.spare_capacity_mut()[..len], geo.n, y_len, parts_for(threads, geo.n));
        parallel_for_each(parts, &|(range, ys): (std::ops::Range<usize>, &mut [MaybeUninit<f32>])| {
            let mut buf = if padded { vec![0.0; geo.c * sweep.plane] } else { Vec::new() };
            for (b, yb) in range.zip(ys.chunks_exact_mut(y_len)) {
                let xb = &x[b * x_len..][..x_len];
                let planes = if padded {
                    pad_planes(xb, (geo.c, geo.h, geo.w), (geo.ph, geo.pw), &sweep, &mut buf);
                    &buf[..]
                } else {
                    xb
                };
                for g in 0..geo.groups {
                    avx512::forward(
                        &planes[g * cg * sweep.plane..],
                        &sweep,
                        &w[g * og * kg..][..og * kg],
                        bias.map(|b| &b[g * og..][..og]),
                        &mut yb[g * og * p..][..og * p],
                    );
                }
            }
        });
        // SAFETY: the parts cover `0..len`, and `avx512::forward` wrote every element of each
        // group's outputs of each sample in them.
        unsafe { y.set_len(len) };
        y
    }

    /// A zeroed buffer whose start is aligned to a cache line, so the sweep rows in it (whole
    /// vectors of 16) are read without loads split across lines.
    struct Aligned {
        store: Vec<f32>,
        len: usize,
    }

    impl Aligned {
        fn zeros(len: usize) -> Self {
            Aligned { store: vec![0.0; len + 15], len }
        }

        fn get(&mut self) -> &mut [f32] {
            let at = self.store.as_ptr().align_offset(64).min(15);
            &mut self.store[at..at + self.len]
        }
    }

    /// Lays out the `o` output gradient planes of one sample (`ho x wo` each) as sweep rows of
    /// `16 * nq` elements with row pitch `wp`; the extra columns and the tail stay as they are
    /// in `dst` (zero).
    fn sweep_rows(gy: &[f32], geo: &Geometry, s: &Sweep, dst: &mut [f32]) {
        let nqw = s.nq() * 16;
        for (src, dst) in gy.chunks_exact(geo.p()).zip(dst.chunks_exact_mut(nqw)) {
            for (row, d) in src.chunks_exact(geo.wo).zip(dst.chunks_mut(s.wp)) {
                d[..geo.wo].copy_from_slice(row);
            }
        }
    }

    /// The input gradient of dense `gy` and `w`: the adjoint of the forward sweep, which adds
    /// `sum over o of w[o][k] * gy[o][q]` into the padded planes at `q + offs[k]` for every tap
    /// `k` (output gradient rows laid out as sweep rows), then crops the padding.
    pub(super) fn input_grad(geo: &Geometry, gy: &[f32], w: &[f32]) -> Vec<f32> {
        let (og, cg, kg) = (geo.og(), geo.cg(), geo.kg());
        let (hp, wp) = (geo.h + 2 * geo.ph, geo.w + 2 * geo.pw);
        let sweep = Sweep::new(geo, cg, hp, wp);
        let padded = geo.ph > 0 || geo.pw > 0;
        let (nqw, x_len, y_len) = (sweep.nq() * 16, geo.c * geo.h * geo.w, geo.o * geo.p());
        // Taps with the channel varying fastest: consecutive read-modify-writes of a tile then
        // go to different planes instead of overlapping by all but one element.
        let mut taps: Vec<usize> = (0..kg).collect();
        taps.sort_by_key(|&k| (k % (geo.kh * geo.kw), k));
        // Zeroed on the threads.
        let mut gx = Vec::with_capacity(geo.n * x_len);
        let threads = batch_threads(geo.n, geo.o * kg * nqw);
        let parts = unit_chunks(&mut gx.spare_capacity_mut()[..geo.n * x_len], geo.n, x_len, parts_for(threads, geo.n));
        parallel_for_each(parts, &|(range, gxs): (std::ops::Range<usize>, &mut [MaybeUninit<f32>])| {
            let gxs = fill_uninit(gxs, 0.0);
            let mut rows = Aligned::zeros(geo.o * nqw);
            let rows = rows.get();
            let mut buf = if padded { vec![0.0; geo.c * sweep.plane] } else { Vec::new() };
            for (b, gxb) in range.zip(gxs.chunks_exact_mut(x_len)) {
                sweep_rows(&gy[b * y_len..][..y_len], geo, &sweep, rows);
                let planes = if padded {
                    buf.fill(0.0);
                    &mut buf[..]
                } else {
                    &mut gxb[..]
                };
                for g in 0..geo.groups {
                    avx512::input_grad(
                        &rows[g * og * nqw..][..og * nqw],
                        &sweep,
                        &taps,
                        &w[g * og * kg..][..og * kg],
                        &mut planes[g * cg * sweep.plane..],
                    );
                }
                if padded {
                    for (src, dst) in buf.chunks_exact(sweep.plane).zip(gxb.chunks_exact_mut(geo.h * geo.w)) {
                        for (r, d) in dst.chunks_exact_mut(geo.w).enumerate() {
                            d.copy_from_slice(&src[(r + geo.ph) * wp + geo.pw..][..geo.w]);
                        }
                    }
                }
            }
        });
        // SAFETY: the parts cover `0..n * x_len` and `fill_uninit` wrote each of them.
        unsafe { gx.set_len(geo.n * x_len) };
        gx
    }

    /// L1-sized batch chunks of the weight gradient: as many samples (at least one) as keep the
    /// operands of a kernel tile within 40 KiB, so the tile's sweeps over the chunk run from L1
    /// (on LeNet's 6->16 layer, 4 samples a chunk ran 1.1x faster than 2; on its 1->6 layer, 1
    /// ran 1.3x faster than 2).
    const WEIGHT_GRAD_CHUNK_FLOATS: usize = 10 << 10;

    /// The most blocks the weight gradient cuts a batch into (so the most threads it uses): each
    /// block holds 16 lanes of partial sums per weight.
    const WEIGHT_GRAD_MAX_BLOCKS: usize = 8;

    /// The least work, in multiply-adds, of a block of the weight gradient: the default of
    /// [`min_work_per_thread`], so that by default it uses as many threads as before it had
    /// blocks, without more partial sums to clear and add (with 8 blocks on LeNet's 6->16 layer at
    /// batch 64, the weight gradient took 7% more CPU time than with 1).
    const WEIGHT_GRAD_BLOCK_WORK: usize = 1 << 22;

    /// The weight gradient of dense `x` and `gy` (see the module doc).
    ///
    /// A reduction over the batch, bit-identical whatever the thread count: the batch is cut
    /// into blocks of whole chunks by the shapes alone (as many blocks as chunks, up to
    /// [`WEIGHT_GRAD_MAX_BLOCKS`], each of at least [`WEIGHT_GRAD_BLOCK_WORK`], rounded down to a
    /// power of two), each block sums its samples into its own lanes from zero, and the blocks'
    /// lanes are added in block order; threads take whole blocks. (Summing per thread made
    /// training differ between 1 and 2 threads.)
    pub(super) fn weight_grad(geo: &Geometry, x: &[f32], gy: &[f32]) -> Vec<f32> {
        let (p, og, cg, kg) = (geo.p(), geo.og(), geo.cg(), geo.kg());
        let (hp, wp) = (geo.h + 2 * geo.ph, geo.w + 2 * geo.pw);
        let sweep = Sweep::new(geo, cg, hp, wp);
        let padded = geo.ph > 0 || geo.pw > 0;
        let (nqw, x_len) = (sweep.nq() * 16, geo.c * geo.h * geo.w);
        let (xs, gs) = (geo.c * sweep.plane, geo.o * nqw);
        // One tile's operands: up to 8 gradient rows and the group's planes per sample.
        let per_sample = og.min(8) * nqw + cg * sweep.plane;
        let per_chunk = (WEIGHT_GRAD_CHUNK_FLOATS / per_sample.max(1)).clamp(1, geo.n.max(1));
        let chunks = geo.n.div_ceil(per_chunk);
        let work = geo.o * kg * nqw;
        // A power of two, so that 2 (or 4, 8) threads get equal shares: LeNet's 6->16 layer at
        // batch 64 made 5 blocks, 2 for one thread and 3 for the other, which then waited.
        let blocks = chunks.min(WEIGHT_GRAD_MAX_BLOCKS).min(geo.n.saturating_mul(work) / WEIGHT_GRAD_BLOCK_WORK).max(1);
        let blocks = 1 << blocks.ilog2();
        // Samples of block `b`: chunks `b * chunks / blocks` up to the next block's first.
        let block =
            |b: usize| (b * chunks / blocks * per_chunk).min(geo.n)..((b + 1) * chunks / blocks * per_chunk).min(geo.n);
        let threads = batch_threads(geo.n, work).min(blocks);
        // Per block, 16 lanes of partial sums per weight.
        let lanes = geo.o * kg * 16;
        if lanes == 0 {
            return Vec::new();
        }
        // Zeroed on the threads.
        let mut partials = Vec::with_capacity(blocks * lanes);
        let items = unit_chunks(&mut partials.spare_capacity_mut()[..blocks * lanes], blocks, lanes, threads);
        parallel_for_each(items, &|(blocks, accs): (std::ops::Range<usize>, &mut [MaybeUninit<f32>])| {
            let accs = fill_uninit(accs, 0.0);
            let mut xbuf = if padded { vec![0.0; per_chunk * xs] } else { Vec::new() };
            let mut gstore = Aligned::zeros(per_chunk * gs);
            let gbuf = gstore.get();
            for (samples, acc) in blocks.map(block).zip(accs.chunks_exact_mut(lanes)) {
                for n0 in samples.clone().step_by(per_chunk) {
                    let nb = per_chunk.min(samples.end - n0);
                    let xc = if padded {
                        for (b, dst) in xbuf.chunks_exact_mut(xs).take(nb).enumerate() {
                            pad_planes(
                                &x[(n0 + b) * x_len..][..x_len],
                                (geo.c, geo.h, geo.w),
                                (geo.ph, geo.pw),
                                &sweep,
                                dst,
                            );
                        }
                        &xbuf[..nb * xs]
                    } else {
                        &x[n0 * x_len..][..nb * x_len]
                    };
                    sweep_rows(&gy[n0 * geo.o * p..][..nb * geo.o * p], geo, &sweep, gbuf);
                    for g in 0..geo.groups {
                        avx512::weight_grad(
                            (&xc[g * cg * sweep.plane..], xs),
                            (&gbuf[g * og * nqw..nb * gs], gs),
                            nb,
                            &sweep,
                            (og, kg),
                            &mut acc[g * og * kg * 16..][..og * kg * 16],
                        );
                    }
                }
            }
        });
        // SAFETY: the items cover `0..blocks * lanes` and `fill_uninit` wrote each of them.
        unsafe { partials.set_len(blocks * lanes) };
        // Per weight, its lanes summed over the blocks in block order, then its 16 lanes: the
        // same additions on any thread count. Split over threads by weights (on one thread, the
        // sum of LeNet's 6->16 layer's 4 blocks of 38k lanes took 1% of a 2-thread step).
        let min_weights = elementwise_min_per_thread().div_ceil(16 * blocks);
        parallel_collect(lanes / 16, min_weights, &|weights: std::ops::Range<usize>| {
            let partials = &partials;
            weights.map(move |w| {
                let mut sum = [0.0f32; 16];
                sum.copy_from_slice(&partials[w * 16..][..16]);
                for acc in partials[lanes..].chunks_exact(lanes) {
                    sum.iter_mut().zip(&acc[w * 16..][..16]).for_each(|(s, a)| *s += a);
                }
                sum.iter().sum::<f32>()
            })
        })
    }

    /// The AVX-512 kernels, behind safe entry points that check every extent they touch.
    mod avx512 {
        use super::Sweep;
        use std::arch::x86_64::*;
        use std::mem::MaybeUninit;
        use std::ops::Range;

        /// `y[o][..] = bias[o] + sum over taps k of w[o][k] * planes[sweep + offs[k]]`, for the
        /// `og` output channels of one group and sample (`y` is `og x p`, every element written).
        pub(super) fn forward(planes: &[f32], s: &Sweep, w: &[f32], bias: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
            let kg = s.offs.len();
            let og = y.len().checked_div(s.outputs).unwrap_or(0);
            assert!(planes.len() >= s.extent() && w.len() == og * kg, "conv: shift forward operands");
            assert!(bias.is_none_or(|b| b.len() == og) && y.len() == og * s.outputs, "conv: shift forward output");
            let args = Fwd {
                x: planes.as_ptr(),
                w: w.as_ptr(),
                bias: bias.map(<[f32]>::as_ptr),
                y: y.as_mut_ptr().cast(),
                p: s.outputs,
                og,
                kg,
            };
            // SAFETY: avx512f was detected (`usable`); every tap offset plus every loaded sweep
            // position stays inside `planes` (extent), `w` holds `og` rows of `kg` taps, and
            // the valid lanes of each vector land inside `y`'s rows (checked above).
            unsafe {
                match og {
                    7.. => fwd_sweep::<8, 3>(&args, s),
                    3..=6 => fwd_sweep::<6, 4>(&args, s),
                    _ => fwd_sweep::<2, 8>(&args, s),
                }
            }
        }

        struct Fwd {
            x: *const f32,
            w: *const f32,
            bias: Option<*const f32>,
            y: *mut f32,
            p: usize,
            og: usize,
            kg: usize,
        }

        /// `MR` output channels by `NV` sweep vectors at a time; channel rows past `og` repeat
        /// the last one and are not stored.
        #[target_feature(enable = "avx512f")]
        unsafe fn fwd_sweep<const MR: usize, const NV: usize>(a: &Fwd, s: &Sweep) {
            let mut j = s.load.len() / NV * NV;
            // SAFETY: as the caller's, over vectors `0..j` and then the rest in smaller blocks.
            unsafe {
                fwd_tiles::<MR, NV>(a, s, 0..j);
                while j < s.load.len() {
                    let step = tail_block(s.load.len() - j);
                    match step {
                        4 => fwd_tiles::<MR, 4>(a, s, j..j + 4),
                        2 => fwd_tiles::<MR, 2>(a, s, j..j + 2),
                        _ => fwd_tiles::<MR, 1>(a, s, j..j + 1),
                    }
                    j += step;
                }
            }
        }

        /// The block of sweep vectors to take next when `left` remain after the full blocks, so
        /// no tile computes vectors that are all masked off (a third of the work on a sweep of 9
        /// vectors in blocks of 4).
        fn tail_block(left: usize) -> usize {
            match left {
                4.. => 4,
                2 | 3 => 2,
                _ => 1,
            }
        }

        /// The tiles of [`fwd_sweep`] over sweep vectors `js`, `NV` at a time.
        #[target_feature(enable = "avx512f")]
        unsafe fn fwd_tiles<const MR: usize, const NV: usize>(a: &Fwd, s: &Sweep, js: Range<usize>) {
            let nq = js.end;
            if a.og == 0 {
                return;
            }
            for j0 in js.step_by(NV) {
                let (mut lm, mut vm) = ([0u16; NV], [0u16; NV]);
                let n = NV.min(nq - j0);
                lm[..n].copy_from_slice(&s.load[j0..j0 + n]);
                vm[..n].copy_from_slice(&s.valid[j0..j0 + n]);
                let xq = a.x.wrapping_add(16 * j0);
                for o0 in (0..a.og).step_by(MR) {
                    let row = |r: usize| (o0 + r).min(a.og - 1);
                    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
                    if let Some(bias) = a.bias {
                        for (r, acc) in acc.iter_mut().enumerate() {
                            // SAFETY: `row(r) < og`, the length of the bias.
                            *acc = [_mm512_set1_ps(unsafe { *bias.add(row(r)) }); NV];
                        }
                    }
                    let mut wr = [a.w; MR];
                    for (r, wr) in wr.iter_mut().enumerate() {
                        *wr = a.w.wrapping_add(row(r) * a.kg);
                    }
                    for (k, &off) in s.offs.iter().enumerate() {
                        let p = xq.wrapping_add(off);
                        let mut xv = [_mm512_setzero_ps(); NV];
                        for v in 0..NV {
                            // SAFETY: only lanes below `qv` are read, inside the planes.
                            xv[v] = unsafe { _mm512_maskz_loadu_ps(lm[v], p.wrapping_add(16 * v)) };
                        }
                        for r in 0..MR {
                            // SAFETY: `k < kg` in a row of `w`.
                            let wk = _mm512_set1_ps(unsafe { *wr[r].add(k) });
                            for v in 0..NV {
                                acc[r][v] = _mm512_fmadd_ps(wk, xv[v], acc[r][v]);
                            }
                        }
                    }
                    for (r, acc) in acc.iter().enumerate().take(a.og - o0) {
                        let mut d = a.y.wrapping_add((o0 + r) * a.p + s.start[j0]);
                        for v in 0..NV {
                            let n = vm[v].count_ones();
                            let packed = _mm512_maskz_compress_ps(vm[v], acc[v]);
                            // SAFETY: the valid lanes of the vector are the next `n` outputs of
                            // the row, inside `y`.
                            unsafe { _mm512_mask_storeu_ps(d, ((1u32 << n) - 1) as u16, packed) };
                            d = d.wrapping_add(n as usize);
                        }
                    }
                }
            }
        }

        /// Adds `sum over o of w[o][k] * rows[o][q]` into `planes[q + offs[k]]` for every tap `k`
        /// of one group and sample, taking the taps in the order of `taps`.
        pub(super) fn input_grad(rows: &[f32], s: &Sweep, taps: &[usize], w: &[f32], planes: &mut [f32]) {
            let (kg, nqw) = (s.offs.len(), s.load.len() * 16);
            let og = w.len().checked_div(kg).unwrap_or(0);
            if og == 0 || nqw == 0 {
                return;
            }
            assert!(
                w.len() == og * kg && rows.len() == og * nqw && planes.len() >= s.extent(),
                "conv: shift input_grad"
            );
            assert!(taps.len() == kg && taps.iter().all(|&k| k < kg), "conv: shift input_grad taps");
            let args = Ig { rows: rows.as_ptr(), w: w.as_ptr(), planes: planes.as_mut_ptr(), og, kg, taps };
            // SAFETY: avx512f was detected (`usable`); the rows hold `og` sweeps of `nqw`, every
            // tap is an index below `kg` into the rows of `w`, and the lanes below `qv` of every
            // tap stay inside `planes` (extent), which is a unique borrow.
            unsafe {
                let mut j = s.load.len() / 4 * 4;
                ig_tiles::<6, 4>(&args, s, 0..j);
                while j < s.load.len() {
                    let step = tail_block(s.load.len() - j);
                    match step {
                        2 => ig_tiles::<6, 2>(&args, s, j..j + 2),
                        _ => ig_tiles::<6, 1>(&args, s, j..j + 1),
                    }
                    j += step;
                }
            }
        }

        struct Ig<'a> {
            rows: *const f32,
            w: *const f32,
            planes: *mut f32,
            og: usize,
            kg: usize,
            taps: &'a [usize],
        }

        /// `NK` taps by `NV` sweep vectors at a time, summed over the output channels in
        /// registers, then added into the planes; taps past the end repeat the last one and are
        /// not added.
        #[target_feature(enable = "avx512f")]
        unsafe fn ig_tiles<const NK: usize, const NV: usize>(a: &Ig<'_>, s: &Sweep, js: Range<usize>) {
            let (nq, nqw) = (js.end, s.load.len() * 16);
            for j0 in js.step_by(NV) {
                // Only the lanes that are output positions: the others must not carry `0 * inf`
                // from the weights into the planes.
                let mut lm = [0u16; NV];
                let n = NV.min(nq - j0);
                lm[..n].copy_from_slice(&s.valid[j0..j0 + n]);
                for t0 in (0..a.kg).step_by(NK) {
                    let mut tap = [0usize; NK];
                    for (kk, tap) in tap.iter_mut().enumerate() {
                        *tap = a.taps[(t0 + kk).min(a.kg - 1)];
                    }
                    let mut acc = [[_mm512_setzero_ps(); NV]; NK];
                    for o in 0..a.og {
                        let row = a.rows.wrapping_add(o * nqw + 16 * j0);
                        let mut g = [_mm512_setzero_ps(); NV];
                        for v in 0..NV {
                            // SAFETY: vectors below `nq` of a row of `nqw` elements (others masked).
                            g[v] = unsafe { _mm512_maskz_loadu_ps(lm[v], row.wrapping_add(16 * v)) };
                        }
                        for kk in 0..NK {
                            // SAFETY: `o < og` and `tap[kk] < kg`, inside `w`.
                            let wk = _mm512_set1_ps(unsafe { *a.w.add(o * a.kg + tap[kk]) });
                            for v in 0..NV {
                                acc[kk][v] = _mm512_fmadd_ps(wk, g[v], acc[kk][v]);
                            }
                        }
                    }
                    for (kk, acc) in acc.iter().enumerate().take(a.kg - t0) {
                        let p = a.planes.wrapping_add(s.offs[tap[kk]] + 16 * j0);
                        for v in 0..NV {
                            let d = p.wrapping_add(16 * v);
                            // SAFETY: only valid lanes (below `qv`) are touched, inside the planes.
                            unsafe {
                                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(lm[v], d), acc[v]);
                                _mm512_mask_storeu_ps(d, lm[v], sum);
                            }
                        }
                    }
                }
            }
        }

        /// Adds, lane by lane, `sum over samples and sweep vectors of gy[o][q] * x[q + offs[k]]`
        /// into `acc[o][k]` (16 lanes each) for a batch chunk of `nb` samples of one group:
        /// `x` and `gy` are the group's planes and output gradient rows (pitch `16 * nq`) of the
        /// chunk's first sample, with the given sample strides.
        pub(super) fn weight_grad(
            (x, xs): (&[f32], usize),
            (gy, gs): (&[f32], usize),
            nb: usize,
            s: &Sweep,
            (og, kg): (usize, usize),
            acc: &mut [f32],
        ) {
            let nqw = s.load.len() * 16;
            if nb == 0 || og == 0 || kg == 0 || nqw == 0 {
                return;
            }
            assert!(x.len() >= (nb - 1) * xs + s.extent(), "conv: shift weight_grad input");
            assert!(gy.len() >= (nb - 1) * gs + og * nqw && acc.len() == og * kg * 16, "conv: shift weight_grad");
            let args = Wg { x: x.as_ptr(), xs, gy: gy.as_ptr(), gs, nb, og, kg, acc: acc.as_mut_ptr() };
            // SAFETY: avx512f was detected (`usable`), and the extents were checked above: the
            // valid lanes of every tap stay inside each sample's planes, every gradient row holds
            // `nqw` elements, and `acc` holds 16 lanes per weight.
            unsafe {
                match og {
                    7.. => wg_tiles::<8, 3>(&args, s),
                    3..=6 => wg_tiles::<6, 4>(&args, s),
                    _ => wg_tiles::<2, 8>(&args, s),
                }
            }
        }

        struct Wg {
            x: *const f32,
            xs: usize,
            gy: *const f32,
            gs: usize,
            nb: usize,
            og: usize,
            kg: usize,
            acc: *mut f32,
        }

        /// `MR` output channels by `NK` taps at a time; rows and taps past the end repeat the
        /// last one and are not stored.
        #[target_feature(enable = "avx512f")]
        unsafe fn wg_tiles<const MR: usize, const NK: usize>(a: &Wg, s: &Sweep) {
            let nqw = s.load.len() * 16;
            for o0 in (0..a.og).step_by(MR) {
                let mut gr = [0usize; MR];
                for (r, gr) in gr.iter_mut().enumerate() {
                    *gr = (o0 + r).min(a.og - 1) * nqw;
                }
                for k0 in (0..a.kg).step_by(NK) {
                    let mut off = [0usize; NK];
                    for (kk, off) in off.iter_mut().enumerate() {
                        *off = s.offs[(k0 + kk).min(a.kg - 1)];
                    }
                    let mut acc = [[_mm512_setzero_ps(); NK]; MR];
                    for b in 0..a.nb {
                        let (xb, gb) = (a.x.wrapping_add(b * a.xs), a.gy.wrapping_add(b * a.gs));
                        for (j, &m) in s.valid.iter().enumerate() {
                            let mut xv = [_mm512_setzero_ps(); NK];
                            for kk in 0..NK {
                                // SAFETY: only valid lanes are read, inside the sample's planes.
                                xv[kk] = unsafe { _mm512_maskz_loadu_ps(m, xb.wrapping_add(off[kk] + 16 * j)) };
                            }
                            for r in 0..MR {
                                // SAFETY: vector `j` of a gradient row of `nqw` elements.
                                let g = unsafe { _mm512_loadu_ps(gb.add(gr[r] + 16 * j)) };
                                for kk in 0..NK {
                                    acc[r][kk] = _mm512_fmadd_ps(g, xv[kk], acc[r][kk]);
                                }
                            }
                        }
                    }
                    for (r, acc) in acc.iter().enumerate().take(a.og - o0) {
                        for (kk, &v) in acc.iter().enumerate().take(a.kg - k0) {
                            // SAFETY: weight `(o0 + r, k0 + kk)` is inside `acc` (og x kg x 16).
                            unsafe {
                                let d = a.acc.add(((o0 + r) * a.kg + k0 + kk) * 16);
                                _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), v));
                            }
                        }
                    }
                }
            }
        }
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
    let b = bias?;
    assert!(
        b.shape() == [weight[0]],
        "{op}: bias {:?} does not match weight {weight:?}: expected [{}]",
        b.shape(),
        weight[0]
    );
    Some(b.to_vec())
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
