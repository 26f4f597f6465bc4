//! An int8 Conv2d through im2col and the int8 GEMM.

use std::ops::Range;

use ferrograd_tensor::{Conv2dOptions, Tensor};

use super::gemm::{dequantize_accumulators, gemm_u8i8, PackedB};
use super::model::{min_max, InputQuant};
use super::observer::{MinMaxObserver, Observer, ObserverConfig};
use super::qtensor::{quantize_u8, QDtype, QParams, QScheme};

/// A Conv2d with int8 weights (symmetric, per output channel) and uint8 inputs (per tensor):
/// the input is quantized, unfolded into patches (im2col, padding with the zero point, which
/// stands for 0.0) and multiplied with each group's weight `[out / groups, in / groups * kh * kw]`
/// by the int8 GEMM; the accumulators are requantized to f32 with the bias added.
///
/// ```
/// use ferrograd_tensor::{Conv2dOptions, Tensor};
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
        let q = quantize_u8(xs, scale, zero_point);
        let geometry = Geometry { n, h, w, oh, ow, kh, kw, options: *o };
        let (og, positions) = (out / o.groups, oh * ow);
        let mut y = vec![0f32; n * out * positions];
        for (g, packed) in self.packed.iter().enumerate() {
            let cols = geometry.im2col(&q, cin, g * cg..(g + 1) * cg, zero_point as u8);
            let acc = gemm_u8i8(&cols, n * positions, packed);
            let channels = g * og..(g + 1) * og;
            let bias = self.bias.as_ref().map(|b| &b[channels.clone()]);
            let yg = dequantize_accumulators(&acc, packed, scale, zero_point, &self.weight_scale[channels], bias);
            // [n, oh * ow, og] -> the group's channels of [n, out, oh * ow].
            for b in 0..n {
                for (pos, row) in yg[b * positions * og..(b + 1) * positions * og].chunks_exact(og).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        y[(b * out + g * og + j) * positions + pos] = v;
                    }
                }
            }
        }
        Tensor::from_vec(y, &[n, out, oh, ow])
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
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    options: Conv2dOptions,
}

impl Geometry {
    /// Patches of input channels `channels` of `q` (`[n, cin, h, w]`): one row per output
    /// position, columns in the weight's `(in, kh, kw)` order; outside the input, `pad`.
    fn im2col(&self, q: &[u8], cin: usize, channels: Range<usize>, pad: u8) -> Vec<u8> {
        let Geometry { n, h, w, oh, ow, kh, kw, options: o } = *self;
        let k = channels.len() * kh * kw;
        let mut cols = vec![pad; n * oh * ow * k];
        // The output columns `ox` whose tap `kx` lands inside the input, for each `kx`.
        let inside = |kx: usize| -> Range<usize> {
            let off = kx * o.dilation[1];
            let first = o.padding[1].saturating_sub(off).div_ceil(o.stride[1]);
            let end = (w + o.padding[1]).checked_sub(off).map_or(0, |e| e.div_ceil(o.stride[1])).min(ow);
            first.min(end)..end
        };
        let ranges: Vec<Range<usize>> = (0..kw).map(inside).collect();
        for b in 0..n {
            for oy in 0..oh {
                let rows = &mut cols[(b * oh + oy) * ow * k..][..ow * k];
                for (ci, c) in channels.clone().enumerate() {
                    for ky in 0..kh {
                        let iy = (oy * o.stride[0] + ky * o.dilation[0]) as isize - o.padding[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let src = &q[((b * cin + c) * h + iy as usize) * w..][..w];
                        for (kx, range) in ranges.iter().enumerate() {
                            let col = (ci * kh + ky) * kw + kx;
                            for ox in range.clone() {
                                rows[ox * k + col] = src[ox * o.stride[1] + kx * o.dilation[1] - o.padding[1]];
                            }
                        }
                    }
                }
            }
        }
        cols
    }
}
