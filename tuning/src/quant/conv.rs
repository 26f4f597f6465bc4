//! An int8 Conv2d through im2col and the int8 GEMM.

use ferrograd_tensor::{Conv2dOptions, Tensor};

use super::gemm::{dequantize_accumulators, gemm_u8i8, PackedB};
use super::model::InputQuant;
use super::observer::{MinMaxObserver, Observer, ObserverConfig};
use super::qtensor::{quantize_u8, QDtype, QParams, QScheme};

/// A Conv2d (one group) with int8 weights (symmetric, per output channel) and uint8 inputs:
/// the input is quantized, unfolded into patches (im2col, padding with the zero point, which
/// stands for 0.0) and multiplied with the weight `[out, in * kh * kw]` by the int8 GEMM.
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
    packed: PackedB,
    weight_scale: Vec<f32>,
    bias: Option<Vec<f32>>,
    options: Conv2dOptions,
    input: InputQuant,
}

impl QuantizedConv2d {
    /// Quantizes a float weight `[out, in, kh, kw]` (and bias `[out]`).
    ///
    /// # Panics
    /// If the weight is not 4-D, the bias length differs from `out`, or `options.groups != 1`.
    pub fn new(weight: &Tensor<f32>, bias: Option<&Tensor<f32>>, options: Conv2dOptions, input: InputQuant) -> Self {
        assert!(weight.rank() == 4, "QuantizedConv2d: weight shape {:?} is not [out, in, kh, kw]", weight.shape());
        assert_eq!(options.groups, 1, "QuantizedConv2d: only one group is supported");
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
        let packed = PackedB::new(&w, out, per_out);
        QuantizedConv2d {
            weight: Tensor::from_vec(w, weight.shape()),
            packed,
            weight_scale: p.scale,
            bias,
            options,
            input,
        }
    }

    /// The int8 weight `[out, in, kh, kw]`.
    pub fn weight(&self) -> &Tensor<i8> {
        &self.weight
    }

    /// `x [n, in, h, w] -> [n, out, oh, ow]`.
    ///
    /// # Panics
    /// If `x` is not 4-D with the weight's input channels, or smaller than the kernel.
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let ws = self.weight.shape();
        let (out, cin, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        assert!(
            x.rank() == 4 && x.shape()[1] == cin,
            "QuantizedConv2d: input shape {:?} does not match weight shape {ws:?}",
            x.shape()
        );
        let (n, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
        let o = &self.options;
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
                let (lo, hi) = xs.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                let p = QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None);
                (p.scale[0], p.zero_point[0])
            }
        };
        let q = quantize_u8(xs, scale, zero_point);
        // im2col: one row per output position, columns in the weight's (in, kh, kw) order.
        let k = cin * kh * kw;
        let mut cols = vec![zero_point as u8; n * oh * ow * k];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = &mut cols[((b * oh + oy) * ow + ox) * k..][..k];
                    for c in 0..cin {
                        for ky in 0..kh {
                            let iy = (oy * o.stride[0] + ky * o.dilation[0]) as isize - o.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * o.stride[1] + kx * o.dilation[1]) as isize - o.padding[1] as isize;
                                if ix >= 0 && ix < w as isize {
                                    row[(c * kh + ky) * kw + kx] =
                                        q[((b * cin + c) * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        let acc = gemm_u8i8(&cols, n * oh * ow, &self.packed);
        let y =
            dequantize_accumulators(&acc, &self.packed, scale, zero_point, &self.weight_scale, self.bias.as_deref());
        Tensor::from_vec(y, &[n, oh, ow, out]).permute(&[0, 3, 1, 2]).contiguous()
    }
}
