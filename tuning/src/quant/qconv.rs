//! An int8 Conv2d layer; its kernel is `ferrograd_tensor::quant::conv`.

use ferrograd_tensor::quant::conv::{conv2d_dequantize, max_pool_output, PackedConv2d};
use ferrograd_tensor::quant::gemm::Dequantize;
use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};

use super::model::InputQuant;
use super::observer::{MinMaxObserver, Observer, ObserverConfig};

/// A Conv2d with int8 weights (symmetric, per output channel) and uint8 inputs (per tensor):
/// the input is quantized (padding with the zero point, which stands for 0.0), convolved with
/// the int8 weights in exact i32 arithmetic and the accumulators are dequantized to f32 with
/// the bias added, by the kernel of `ferrograd_tensor::quant::conv` (direct AVX-512 VNNI for
/// stride 1, else im2col into the int8 GEMM; the weights are packed for both once, here).
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
    /// The weight packed for the kernel.
    packed: PackedConv2d,
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
        let s = weight.shape();
        let packed = PackedConv2d::new(&weight.to_vec(), [s[0], s[1], s[2], s[3]], options);
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
        let cin = ws[1] * o.groups;
        assert!(
            x.rank() == 4 && x.shape()[1] == cin,
            "QuantizedConv2d: input shape {:?} does not match weight shape {ws:?} with {} groups",
            x.shape(),
            o.groups
        );
        // The checks here, so that they report the caller's line and the layer's name.
        let Some([oh, ow]) = self.packed.output_size(x.shape()[2], x.shape()[3]) else {
            panic!("QuantizedConv2d: input {:?} smaller than the kernel {ws:?}", x.shape());
        };
        if let Some(Err(problem)) = max_pool.map(|p| max_pool_output(p, oh, ow)) {
            panic!("QuantizedConv2d: {problem}");
        }
        let x = x.contiguous();
        let xs = x.as_slice().expect("a contiguous tensor has a slice");
        let (a_scale, a_zero) = self.input.scale_zero_point(xs);
        let stage = Dequantize { a_scale, a_zero, w_scale: &self.weight_scale, bias: self.bias.as_deref(), relu };
        conv2d_dequantize(&x, &self.packed, &stage, max_pool)
    }
}

/// Checks a conv weight shape `[out, in / groups, kh, kw]` against its options (see
/// `ferrograd_tensor::quant::conv::check_conv2d_options`).
pub(super) fn check_options(weight_shape: &[usize], o: &Conv2dOptions) -> Result<(), String> {
    ferrograd_tensor::quant::conv::check_conv2d_options(weight_shape, o)
}
