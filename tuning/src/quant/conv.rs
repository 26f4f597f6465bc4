//! An int8 Conv2d through im2col and the int8 GEMM.

use std::cell::{Cell, RefCell};
use std::ops::Range;

use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};

use super::gemm::{gemm_blocks, Kernel, PackedB, MR, NR};
use super::model::InputQuant;
use super::observer::{MinMaxObserver, Observer, ObserverConfig};
use super::simd::quantize_u8_into;

/// A Conv2d with int8 weights (symmetric, per output channel) and uint8 inputs (per tensor):
/// the input is quantized, unfolded into patches (im2col, padding with the zero point, which
/// stands for 0.0) and multiplied with each group's weight `[out / groups, in / groups * kh * kw]`
/// by the int8 GEMM; the accumulators are requantized to f32 with the bias added. The patches
/// are made a few output positions at a time, just before the GEMM kernel reads them, and each
/// tile of accumulators is requantized straight into the `[n, out, oh, ow]` output, so that
/// neither the patch matrix nor an i32 matrix is ever stored.
///
/// ```
/// use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};
/// use ferrograd_tuning::quant::{InputQuant, QuantizedConv2d};
/// let w = Tensor::from_fn(&[4, 2, 3, 3], |i| (i as f32 * 0.37).sin());
/// let conv = QuantizedConv2d::new(&w, None, Conv2dOptions::default(), InputQuant::Dynamic);
/// assert_eq!(conv.forward(&Tensor::ones(&[1, 2, 5, 5])).shape(), &[1, 4, 3, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct QuantizedConv2d {
    weight: Tensor<i8>,
    /// One packed weight per group.
    packed: Vec<PackedB>,
    weight_scale: Vec<f32>,
    bias: Option<Vec<f32>>,
    options: Conv2dOptions,
    input: InputQuant,
}

impl QuantizedConv2d {
    /// Quantizes a float weight `[out, in / groups, kh, kw]` (and bias `[out]`).
    ///
    /// # Panics
    /// If the weight is not 4-D, the bias length differs from `out`, or `options` are invalid
    /// (zero stride, dilation or groups, or `groups` not dividing `out`).
    #[track_caller]
    pub fn new(weight: &Tensor<f32>, bias: Option<&Tensor<f32>>, options: Conv2dOptions, input: InputQuant) -> Self {
        assert!(weight.rank() == 4, "QuantizedConv2d: weight shape {:?} is not [out, in, kh, kw]", weight.shape());
        if let Err(problem) = check_options(weight.shape(), &options) {
            panic!("QuantizedConv2d: {problem}");
        }
        let out = weight.shape()[0];
        let per_out = weight.numel() / out.max(1);
        let mut obs = MinMaxObserver::new(ObserverConfig::weights());
        obs.observe(weight);
        let p = obs.qparams();
        let w: Vec<i8> =
            weight.to_vec().iter().enumerate().map(|(i, &v)| p.quantize_value(v, i / per_out) as i8).collect();
        // A `match`, not a closure: a panic inside a closure would lose the caller's location.
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.shape(), &[out], "QuantizedConv2d: bias shape {:?} for {out} outputs", b.shape());
                Some(b.to_vec())
            }
            None => None,
        };
        Self::from_parts(Tensor::from_vec(w, weight.shape()), p.scale, bias, options, input)
    }

    /// A layer from already quantized parts (as [`super::QuantizedSequential::load`] reads them);
    /// the caller has checked them with [`check_options`] and the lengths of scale and bias.
    pub(super) fn from_parts(
        weight: Tensor<i8>,
        weight_scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        options: Conv2dOptions,
        input: InputQuant,
    ) -> Self {
        let w = weight.to_vec();
        let (out, groups) = (weight.shape()[0], options.groups);
        let per_out = weight.numel() / out.max(1);
        let og = out / groups;
        let packed =
            (0..groups).map(|g| PackedB::new(&w[g * og * per_out..(g + 1) * og * per_out], og, per_out)).collect();
        QuantizedConv2d { weight, packed, weight_scale, bias, options, input }
    }

    /// The int8 weight `[out, in / groups, kh, kw]`.
    pub fn weight(&self) -> &Tensor<i8> {
        &self.weight
    }

    /// The weight's scales, one per output channel.
    pub fn weight_scale(&self) -> &[f32] {
        &self.weight_scale
    }

    /// The bias, one per output channel.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Stride, padding, dilation and groups.
    pub fn options(&self) -> Conv2dOptions {
        self.options
    }

    /// How the input is quantized.
    pub fn input_quant(&self) -> InputQuant {
        self.input
    }

    /// `x [n, in, h, w] -> [n, out, oh, ow]`.
    ///
    /// # Panics
    /// If `x` is not 4-D with the weight's input channels, or smaller than the kernel.
    #[track_caller]
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        self.forward_impl(x, false, None)
    }

    /// `forward(x)`, then a ReLU when `relu`, then `max_pool` when given, in one pass: each
    /// output plane is requantized, rectified and pooled while it is in cache, and the
    /// unpooled output is never stored. Equal to the unfused layers (max pooling only selects
    /// values, it never rounds).
    ///
    /// ```
    /// use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};
    /// use ferrograd_tuning::quant::{InputQuant, QuantizedConv2d};
    /// let w = Tensor::from_fn(&[4, 2, 3, 3], |i| (i as f32 * 0.37).sin());
    /// let conv = QuantizedConv2d::new(&w, None, Conv2dOptions::default(), InputQuant::Dynamic);
    /// let x = Tensor::from_fn(&[2, 2, 6, 6], |i| (i as f32 * 0.11).cos());
    /// let pool = Pool2dOptions::new([2, 2]);
    /// let unfused = conv.forward(&x).map(|v| v.max(0.0)).max_pool2d(&pool);
    /// assert_eq!(conv.forward_fused(&x, true, Some(&pool)).to_vec(), unfused.to_vec());
    /// ```
    ///
    /// # Panics
    /// As [`QuantizedConv2d::forward`], and if the pooling options do not fit the output
    /// (as [`Tensor::max_pool2d`]).
    #[track_caller]
    pub fn forward_fused(&self, x: &Tensor<f32>, relu: bool, max_pool: Option<&Pool2dOptions>) -> Tensor<f32> {
        self.forward_impl(x, relu, max_pool)
    }

    #[track_caller]
    fn forward_impl(&self, x: &Tensor<f32>, relu: bool, max_pool: Option<&Pool2dOptions>) -> Tensor<f32> {
        let ws = self.weight.shape();
        let o = &self.options;
        let (out, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let cin = cg * o.groups;
        assert!(
            x.rank() == 4 && x.shape()[1] == cin,
            "QuantizedConv2d: input shape {:?} does not match weight shape {ws:?} with {} groups",
            x.shape(),
            o.groups
        );
        let (n, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
        let span = |size: usize, k: usize, d: usize, s: usize, p: usize| {
            let eff = d * (k - 1) + 1;
            (size + 2 * p >= eff).then(|| (size + 2 * p - eff) / s + 1)
        };
        // The check outside the closure, so that it reports the caller's line.
        let (Some(oh), Some(ow)) = (
            span(h, kh, o.dilation[0], o.stride[0], o.padding[0]),
            span(w, kw, o.dilation[1], o.stride[1], o.padding[1]),
        ) else {
            panic!("QuantizedConv2d: input {:?} smaller than the kernel {ws:?}", x.shape());
        };
        let x = x.contiguous();
        let xs = x.as_slice().expect("a contiguous tensor has a slice");
        let (scale, zero_point) = self.input.scale_zero_point(xs);
        let geometry = Geometry { n, cin, h, w, oh, ow, kh, kw, options: *o };
        let (og, positions) = (out / o.groups, oh * ow);
        let m = n * positions;
        // Requantized as `dequantize_accumulators` does, `(acc - zero_point * Σ_k w) * scale +
        // bias`, and written from each tile (rows: positions, columns: the group's channels)
        // straight to its place in `[n, out, oh * ow]`.
        let offsets: Vec<i32> = (0..out).map(|c| zero_point * self.packed[c / og].row_sums()[c % og]).collect();
        let multipliers: Vec<f32> = self.weight_scale.iter().map(|s| scale * s).collect();
        let biases = self.bias.clone().unwrap_or_else(|| vec![0.0; out]);
        #[allow(clippy::manual_map)] // `map` would run the check in a closure, losing the caller's line.
        let pool = match max_pool {
            Some(p) => Some(PlanePool::new(*p, oh, ow)),
            None => None,
        };
        let (yh, yw) = pool.as_ref().map_or((oh, ow), |p| (p.ho, p.wo));
        let mut y = Vec::with_capacity(n * out * yh * yw);
        let mut padded = PADDED.take();
        geometry.pad_quantized(xs, scale, zero_point, &mut padded);
        UNPOOLED.with_borrow_mut(|unpooled| {
            // Before pooling the output goes to a buffer kept from call to call (a fresh one
            // costs a page fault per 4 KiB written).
            let target: &mut Vec<f32> = if pool.is_some() { &mut *unpooled } else { &mut y };
            target.resize(n * out * positions, 0.0);
            let kernel = Kernel::best();
            let rows = geometry.kernel_rows(cg);
            for (g, packed) in self.packed.iter().enumerate() {
                let fill = |r0: usize, buf: &mut [u8], kp: usize| {
                    geometry.fill_rows(&padded, &rows, g * cg, r0..(r0 + MR).min(m), buf, kp)
                };
                gemm_blocks(kernel, m, packed, WORD, fill, |r0, j0, tile| {
                    let channels = j0..og.min(j0 + NR);
                    let (b, p) = (r0 / positions, r0 % positions);
                    let plane = |b: usize, j: usize| (b * out + g * og + j) * positions;
                    let params = |j: usize| {
                        let c = g * og + j;
                        (offsets[c], multipliers[c], biases[c])
                    };
                    let requantize = |acc: i32, (offset, multiplier, bias): (i32, f32, f32)| {
                        let x = (acc - offset) as f32 * multiplier + bias;
                        if relu {
                            x.max(0.0)
                        } else {
                            x
                        }
                    };
                    if p + MR <= positions {
                        // The whole tile is in one image: MR consecutive positions per channel,
                        // requantized and stored as one short vector.
                        for j in channels {
                            let acc: [i32; MR] = std::array::from_fn(|i| tile[i * NR + j - j0]);
                            let dst: &mut [f32; MR] =
                                (&mut target[plane(b, j) + p..][..MR]).try_into().expect("MR outputs");
                            let params = params(j);
                            for (d, &a) in dst.iter_mut().zip(&acc) {
                                *d = requantize(a, params);
                            }
                        }
                    } else {
                        let (mut b, mut p) = (b, p);
                        for acc in tile.chunks_exact(NR).take(m - r0) {
                            for j in channels.clone() {
                                target[plane(b, j) + p] = requantize(acc[j - j0], params(j));
                            }
                            (b, p) = if p + 1 == positions { (b + 1, 0) } else { (b, p + 1) };
                        }
                    }
                });
            }
            if let Some(pool) = &pool {
                for plane in unpooled.chunks_exact(positions) {
                    pool.apply(plane, &mut y);
                }
            }
        });
        PADDED.set(padded);
        Tensor::from_vec(y, &[n, out, yh, yw])
    }
}

thread_local! {
    /// The unpooled output of [`QuantizedConv2d::forward_fused`], reused from call to call.
    static UNPOOLED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The quantized, padded input of [`QuantizedConv2d::forward`], reused from call to call (a
    /// fresh one over 128 KiB is mapped and faulted in page by page on every call).
    static PADDED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Max pooling of one `h x w` plane, as [`Tensor::max_pool2d`] (padding never wins).
struct PlanePool {
    options: Pool2dOptions,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl PlanePool {
    #[track_caller]
    fn new(options: Pool2dOptions, h: usize, w: usize) -> Self {
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = options;
        assert!(
            kh > 0
                && kw > 0
                && sh > 0
                && sw > 0
                && 2 * ph <= kh
                && 2 * pw <= kw
                && h + 2 * ph >= kh
                && w + 2 * pw >= kw,
            "QuantizedConv2d: max pooling {options:?} does not fit an output of {h} x {w}"
        );
        PlanePool { options, h, w, ho: (h + 2 * ph - kh) / sh + 1, wo: (w + 2 * pw - kw) / sw + 1 }
    }

    /// Appends the `ho x wo` maxima of `plane` to `out`.
    fn apply(&self, plane: &[f32], out: &mut Vec<f32>) {
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = self.options;
        // NaN wins, as in `Tensor::max_pool2d`.
        let max = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
        if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0) {
            // LeNet's pooling, in the general path's order of visits.
            for py in 0..self.ho {
                let (r0, r1) =
                    (&plane[2 * py * self.w..][..2 * self.wo], &plane[(2 * py + 1) * self.w..][..2 * self.wo]);
                out.extend(
                    r0.chunks_exact(2).zip(r1.chunks_exact(2)).map(|(a, b)| max(max(max(a[0], a[1]), b[0]), b[1])),
                );
            }
            return;
        }
        // The window of output `i` clipped to the plane; never empty since padding <= kernel / 2.
        let window =
            |i: usize, s: usize, p: usize, k: usize, size: usize| (i * s).saturating_sub(p)..(i * s + k - p).min(size);
        for py in 0..self.ho {
            let rows = window(py, sh, ph, kh, self.h);
            for px in 0..self.wo {
                let cols = window(px, sw, pw, kw, self.w);
                let mut m = f32::NEG_INFINITY;
                for r in rows.clone() {
                    m = plane[r * self.w + cols.start..r * self.w + cols.end].iter().fold(m, |m, &v| max(m, v));
                }
                out.push(m);
            }
        }
    }
}

/// Checks a conv weight shape `[out, in / groups, kh, kw]` against its options: positive
/// stride, dilation and groups, kernel dims and `out` positive, and `groups` dividing `out`.
pub(super) fn check_options(weight_shape: &[usize], o: &Conv2dOptions) -> Result<(), String> {
    if o.stride.contains(&0) || o.dilation.contains(&0) || o.groups == 0 {
        return Err(format!(
            "stride {:?}, dilation {:?} and groups {} must be positive",
            o.stride, o.dilation, o.groups
        ));
    }
    if weight_shape.contains(&0) {
        return Err(format!("weight shape {weight_shape:?} has an empty dimension"));
    }
    if !weight_shape[0].is_multiple_of(o.groups) {
        return Err(format!("{} groups do not divide {} output channels", o.groups, weight_shape[0]));
    }
    Ok(())
}

/// Sizes of one convolution.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    options: Conv2dOptions,
}

/// Bytes copied at once by [`Geometry::fill_rows`]; buffers carry this much slack at their end.
const WORD: usize = 8;

impl Geometry {
    /// Padded plane height and width.
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.options.padding[0], self.w + 2 * self.options.padding[1])
    }

    /// Replaces `out` with the input `[n, cin, h, w]` quantized to uint8, each plane surrounded
    /// by its padding, filled with the zero point (which stands exactly for 0.0), plus [`WORD`]
    /// bytes of slack.
    fn pad_quantized(&self, x: &[f32], scale: f32, zero_point: i32, out: &mut Vec<u8>) {
        let (hp, wp) = self.padded();
        let [ph, pw] = self.options.padding;
        out.clear();
        out.resize(self.n * self.cin * hp * wp + WORD, zero_point as u8);
        if (ph, pw) == (0, 0) {
            quantize_u8_into(x, scale, zero_point, &mut out[..x.len()]);
            return;
        }
        for (plane, src) in x.chunks_exact(self.h * self.w).enumerate() {
            for (y, row) in src.chunks_exact(self.w).enumerate() {
                quantize_u8_into(row, scale, zero_point, &mut out[(plane * hp + y + ph) * wp + pw..][..self.w]);
            }
        }
    }

    /// Where each kernel row `(c, ky)` of a group of `channels` input channels starts, relative
    /// to a patch's top-left corner in the group's first channel of the padded input.
    fn kernel_rows(&self, channels: usize) -> Vec<usize> {
        let (hp, wp) = self.padded();
        let dy = self.options.dilation[0];
        (0..channels).flat_map(|c| (0..self.kh).map(move |ky| c * hp * wp + ky * dy * wp)).collect()
    }

    /// Patches of the padded input for output positions `positions` (of `n * oh * ow`), one
    /// row of `buf` each at a stride of `kp` bytes, columns in the weight's `(in, kh, kw)` order
    /// from input channel `first` on; `rows` from [`Geometry::kernel_rows`].
    ///
    /// Without dilation along the width, the `kw` taps of a kernel row are contiguous in the
    /// padded input and are copied [`WORD`] bytes at a time: a copy may run up to `WORD - 1`
    /// bytes past its segment, into the place of the next segment or the row's padding, which
    /// is written after it or never counted (`buf` has `WORD` bytes of slack for the last row).
    fn fill_rows(
        &self,
        padded: &[u8],
        rows: &[usize],
        first: usize,
        positions: Range<usize>,
        buf: &mut [u8],
        kp: usize,
    ) {
        let Geometry { cin, oh, ow, kw, options: o, .. } = *self;
        let (hp, wp) = self.padded();
        let ([sy, sx], dx) = (o.stride, o.dilation[1]);
        // The coordinates of the first position, then stepped (a division per row cost as much
        // as the copies).
        let (mut b, mut oy, mut ox) = (positions.start / (oh * ow), positions.start / ow % oh, positions.start % ow);
        // What the copies of one position may touch past its corner and its row of `buf`.
        let src_span = rows.iter().max().map_or(0, |&r| r + WORD);
        let dst_span = rows.len().saturating_sub(1) * kw + WORD;
        for i in 0..positions.len() {
            let corner = (b * cin + first) * hp * wp + oy * sy * wp + ox * sx;
            ox += 1;
            if ox == ow {
                ox = 0;
                oy += 1;
                if oy == oh {
                    oy = 0;
                    b += 1;
                }
            }
            let mut dst = i * kp;
            if dx == 1 && kw <= WORD {
                // One copy per kernel row (LeNet's 5 x 5), bounds checked once per position: with
                // a check per copy, the checks took as long as the copies.
                let src = &padded[corner..corner + src_span];
                let dst = &mut buf[dst..dst + dst_span];
                for (t, &row) in rows.iter().enumerate() {
                    // SAFETY: `row + WORD <= src_span` and `t * kw + WORD <= dst_span` (as
                    // `t < rows.len()`), so both ranges are inside their slices, which do not
                    // overlap (one is borrowed mutably).
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(row), dst.as_mut_ptr().add(t * kw), WORD) };
                }
                continue;
            }
            for &row in rows {
                let src = corner + row;
                if dx == 1 {
                    let mut j = 0;
                    while j < kw {
                        buf[dst + j..][..WORD].copy_from_slice(&padded[src + j..][..WORD]);
                        j += WORD;
                    }
                } else {
                    for kx in 0..kw {
                        buf[dst + kx] = padded[src + kx * dx];
                    }
                }
                dst += kw;
            }
        }
    }
}
