//! An int8 Conv2d through im2col and the int8 GEMM.

use std::ops::Range;

use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};

use super::gemm::{gemm_u8i8, PackedB};
use super::model::InputQuant;
use super::simd::min_max;
use super::observer::{MinMaxObserver, Observer, ObserverConfig};
use super::qtensor::{quantize_u8, QDtype, QParams, QScheme};

/// A Conv2d with int8 weights (symmetric, per output channel) and uint8 inputs (per tensor):
/// the input is quantized, unfolded into patches (im2col, padding with the zero point, which
/// stands for 0.0) and multiplied with each group's weight `[out / groups, in / groups * kh * kw]`
/// by the int8 GEMM; the accumulators are requantized to f32 with the bias added.
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
        let bias = bias.map(|b| {
            assert_eq!(b.shape(), &[out], "QuantizedConv2d: bias shape {:?} for {out} outputs", b.shape());
            b.to_vec()
        });
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
    pub fn forward_fused(&self, x: &Tensor<f32>, relu: bool, max_pool: Option<&Pool2dOptions>) -> Tensor<f32> {
        self.forward_impl(x, relu, max_pool)
    }

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
            assert!(size + 2 * p >= eff, "QuantizedConv2d: input {:?} smaller than the kernel {ws:?}", x.shape());
            (size + 2 * p - eff) / s + 1
        };
        let oh = span(h, kh, o.dilation[0], o.stride[0], o.padding[0]);
        let ow = span(w, kw, o.dilation[1], o.stride[1], o.padding[1]);
        let x = x.contiguous();
        let xs = x.as_slice().expect("a contiguous tensor has a slice");
        let (scale, zero_point) = match self.input {
            InputQuant::Static { scale, zero_point } => (scale, zero_point),
            InputQuant::Dynamic => {
                let (lo, hi) = min_max(xs);
                let p = QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None);
                (p.scale[0], p.zero_point[0])
            }
        };
        let geometry = Geometry { n, cin, h, w, oh, ow, kh, kw, options: *o };
        let padded = geometry.pad(&quantize_u8(xs, scale, zero_point), zero_point as u8);
        let (og, positions) = (out / o.groups, oh * ow);
        let accumulators: Vec<Vec<i32>> = (self.packed.iter().enumerate())
            .map(|(g, packed)| gemm_u8i8(&geometry.im2col(&padded, g * cg..(g + 1) * cg), n * positions, packed))
            .collect();
        // Requantized as `dequantize_accumulators` does, `(acc - zero_point * Σ_k w) * scale +
        // bias`, and moved from [n, oh * ow, out / groups] per group to [n, out, oh * ow], in
        // the output's order.
        let per_channel: Vec<(i32, f32, f32)> = (0..out)
            .map(|c| {
                let row_sum = self.packed[c / og].row_sums()[c % og];
                (zero_point * row_sum, scale * self.weight_scale[c], self.bias.as_ref().map_or(0.0, |b| b[c]))
            })
            .collect();
        let pool = max_pool.map(|p| PlanePool::new(*p, oh, ow));
        let (yh, yw) = pool.as_ref().map_or((oh, ow), |p| (p.ho, p.wo));
        let mut y = Vec::with_capacity(n * out * yh * yw);
        let mut plane = Vec::with_capacity(if pool.is_some() { positions } else { 0 });
        for b in 0..n {
            for (c, &(offset, multiplier, bias)) in per_channel.iter().enumerate() {
                let acc = &accumulators[c / og][b * positions * og + c % og..][..(positions - 1) * og + 1];
                let values = (0..positions).map(|p| (acc[p * og] - offset) as f32 * multiplier + bias);
                let target = if pool.is_some() {
                    plane.clear();
                    &mut plane
                } else {
                    &mut y
                };
                if relu {
                    target.extend(values.map(|v| v.max(0.0)));
                } else {
                    target.extend(values);
                }
                if let Some(pool) = &pool {
                    pool.apply(&plane, &mut y);
                }
            }
        }
        Tensor::from_vec(y, &[n, out, yh, yw])
    }
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

/// Bytes copied at once by [`Geometry::im2col`]; buffers carry this much slack at their end.
const WORD: usize = 8;

impl Geometry {
    /// Padded plane height and width.
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.options.padding[0], self.w + 2 * self.options.padding[1])
    }

    /// The quantized input `[n, cin, h, w]` with each plane surrounded by its padding, filled
    /// with the zero point (which stands exactly for 0.0), plus [`WORD`] bytes of slack.
    fn pad(&self, q: &[u8], zero_point: u8) -> Vec<u8> {
        let (hp, wp) = self.padded();
        let [ph, pw] = self.options.padding;
        let mut out = vec![zero_point; self.n * self.cin * hp * wp + WORD];
        for (plane, src) in q.chunks_exact(self.h * self.w).enumerate() {
            for (y, row) in src.chunks_exact(self.w).enumerate() {
                out[(plane * hp + y + ph) * wp + pw..][..self.w].copy_from_slice(row);
            }
        }
        out
    }

    /// Patches of input channels `channels` of the padded input: one row per output position
    /// (`n * oh * ow` rows), columns in the weight's `(in, kh, kw)` order.
    ///
    /// Without dilation along the width, the `kw` taps of a kernel row are contiguous in the
    /// padded input and are copied [`WORD`] bytes at a time: a copy may run up to `WORD - 1`
    /// bytes past its segment, into the place of the next segment, which is written after it
    /// (rows and segments are written in increasing order; the slack absorbs the last one).
    fn im2col(&self, padded: &[u8], channels: Range<usize>) -> Vec<u8> {
        let Geometry { n, cin, oh, ow, kh, kw, options: o, .. } = *self;
        let (hp, wp) = self.padded();
        let k = channels.len() * kh * kw;
        let len = n * oh * ow * k;
        let mut cols = vec![0u8; len + WORD];
        let (plane, [sy, sx], [dy, dx]) = (hp * wp, o.stride, o.dilation);
        // Where each kernel row `(c, ky)` starts, relative to the patch's top-left corner in
        // the first channel of the group.
        let rows: Vec<usize> =
            (0..channels.len()).flat_map(|c| (0..kh).map(move |ky| c * plane + ky * dy * wp)).collect();
        let mut dst = 0;
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let corner = (b * cin + channels.start) * plane + oy * sy * wp + ox * sx;
                    for &row in &rows {
                        let src = corner + row;
                        if dx == 1 {
                            let mut j = 0;
                            while j < kw {
                                cols[dst + j..][..WORD].copy_from_slice(&padded[src + j..][..WORD]);
                                j += WORD;
                            }
                        } else {
                            for kx in 0..kw {
                                cols[dst + kx] = padded[src + kx * dx];
                            }
                        }
                        dst += kw;
                    }
                }
            }
        }
        cols.truncate(len);
        cols
    }
}
