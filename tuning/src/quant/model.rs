//! Post-training quantization of Linear/Conv2d models into [`QuantizedSequential`]: dynamic
//! (activation ranges measured on each batch), static (ranges calibrated once on sample batches)
//! or from quantization-aware training; save and load.
//!
//! Every int8 layer takes and returns f32: it quantizes its input, runs the int8 GEMM and
//! requantizes the accumulators to f32. ReLU, Flatten and the poolings run on those f32 values.
//! For max pooling this loses nothing: quantization is monotone, so quantizing the maximum of a
//! window gives the maximum of the quantized window, and pooling before the next layer's
//! quantization equals pooling in uint8.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrograd_nn::checkpoint::{load_any_tensors, save_any_tensors};
use ferrograd_nn::layers::{AvgPool2d, Conv2d, Linear, MaxPool2d};
use ferrograd_nn::{AnyTensor, NnError};
use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};

use super::fake::{QatConv2d, QatLinear};
use super::gemm::{gemm_dequantize, Dequantize, PackedA, PackedB};
use super::observer::{MinMaxObserver, Observer, ObserverConfig};
use super::qconv::{check_options, QuantizedConv2d};
use super::qtensor::{QDtype, QParams, QScheme};
use super::simd::min_max;

/// A layer of the float model to convert, in order (a `Sequential` cannot be inspected, so the
/// caller lists what it built).
#[derive(Clone, Copy, Debug)]
pub enum FloatLayer<'a> {
    /// A trained Linear layer.
    Linear(&'a Linear<f32>),
    /// A Linear layer trained with fake quantization.
    Qat(&'a QatLinear),
    /// A trained Conv2d layer (any stride, padding, dilation and groups).
    Conv2d(&'a Conv2d<f32>),
    /// A Conv2d layer trained with fake quantization.
    QatConv2d(&'a QatConv2d),
    /// ReLU.
    ReLU,
    /// Flatten from dim 1 on.
    Flatten,
    /// 2-D max pooling.
    MaxPool2d(MaxPool2d),
    /// 2-D average pooling.
    AvgPool2d(AvgPool2d),
}

impl FloatLayer<'_> {
    /// The float forward pass of this layer (QAT layers without fake quantization).
    #[track_caller]
    fn forward(&self, x: Tensor<f32>) -> Tensor<f32> {
        match self {
            FloatLayer::Linear(l) => float_linear_forward(&x, l),
            FloatLayer::Qat(q) => float_linear_forward(&x, &q.linear),
            FloatLayer::Conv2d(c) => float_conv(&x, c),
            FloatLayer::QatConv2d(q) => float_conv(&x, &q.conv),
            FloatLayer::ReLU => x.relu(),
            FloatLayer::Flatten => x.flatten(1, -1),
            FloatLayer::MaxPool2d(p) => x.max_pool2d(&p.options),
            FloatLayer::AvgPool2d(p) => x.avg_pool2d(&p.options),
        }
    }

    /// Whether the layer becomes an int8 layer that quantizes its input.
    fn has_weights(&self) -> bool {
        matches!(self, FloatLayer::Linear(_) | FloatLayer::Qat(_) | FloatLayer::Conv2d(_) | FloatLayer::QatConv2d(_))
    }
}

/// How a quantized Linear or Conv2d quantizes its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InputQuant {
    /// Affine uint8 with the range of each batch.
    Dynamic,
    /// Affine uint8 with a fixed scale and zero point.
    Static {
        /// Scale.
        scale: f32,
        /// Zero point, in `[0, 255]`.
        zero_point: i32,
    },
}

impl InputQuant {
    /// The `(scale, zero_point)` that quantizes the input `xs`: the fixed pair, or affine uint8
    /// over the batch's own range (NaN ignored).
    pub(super) fn scale_zero_point(self, xs: &[f32]) -> (f32, i32) {
        match self {
            InputQuant::Static { scale, zero_point } => (scale, zero_point),
            InputQuant::Dynamic => {
                let (lo, hi) = min_max(xs);
                let p = QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None);
                (p.scale[0], p.zero_point[0])
            }
        }
    }
}

/// A Linear layer with int8 weights (symmetric, per output channel) and uint8 inputs.
#[derive(Clone, Debug)]
pub struct QuantizedLinear {
    weight: Tensor<i8>,
    packed: PackedB,
    weight_scale: Vec<f32>,
    bias: Option<Vec<f32>>,
    input: InputQuant,
}

impl QuantizedLinear {
    /// Quantizes a float weight `[out, in]` (and bias `[out]`).
    ///
    /// # Panics
    /// If the weight is not 2-D or the bias length differs from `out`.
    #[track_caller]
    pub fn new(weight: &Tensor<f32>, bias: Option<&Tensor<f32>>, input: InputQuant) -> Self {
        assert!(weight.rank() == 2, "QuantizedLinear: weight shape {:?} is not [out, in]", weight.shape());
        let mut obs = MinMaxObserver::new(ObserverConfig::weights());
        obs.observe(weight);
        let p = obs.qparams();
        let (out, inp) = (weight.shape()[0], weight.shape()[1]);
        let w: Vec<i8> = weight.to_vec().iter().enumerate().map(|(i, &v)| p.quantize_value(v, i / inp) as i8).collect();
        // A `match`, not a closure: a panic inside a closure would lose the caller's location.
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.shape(), &[out], "QuantizedLinear: bias shape {:?} for {out} outputs", b.shape());
                Some(b.to_vec())
            }
            None => None,
        };
        Self::from_parts(Tensor::from_vec(w, &[out, inp]), p.scale, bias, input)
    }

    fn from_parts(weight: Tensor<i8>, weight_scale: Vec<f32>, bias: Option<Vec<f32>>, input: InputQuant) -> Self {
        let (out, inp) = (weight.shape()[0], weight.shape()[1]);
        let packed = PackedB::new(&weight.to_vec(), out, inp);
        QuantizedLinear { weight, packed, weight_scale, bias, input }
    }

    /// The int8 weight `[out, in]`.
    pub fn weight(&self) -> &Tensor<i8> {
        &self.weight
    }

    /// The weight's scales, one per output.
    pub fn weight_scale(&self) -> &[f32] {
        &self.weight_scale
    }

    /// How the input is quantized.
    pub fn input_quant(&self) -> InputQuant {
        self.input
    }

    /// `x [batch, in] -> [batch, out]`: quantize `x` to uint8, int8 GEMM, dequantize to f32.
    /// The quantized input goes to a per-thread buffer reused from call to call (it keeps the
    /// size of the largest input seen), and the dequantize step runs on each GEMM tile.
    ///
    /// # Panics
    /// If `x` is not `[batch, in]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        self.forward_impl(x, false)
    }

    /// `relu(forward(x))`, with the ReLU fused into the GEMM's output pass (the same values as
    /// [`QuantizedLinear::forward`] followed by `max(y, 0)`).
    ///
    /// # Panics
    /// If `x` is not `[batch, in]`.
    #[track_caller]
    pub fn forward_relu(&self, x: &Tensor<f32>) -> Tensor<f32> {
        self.forward_impl(x, true)
    }

    #[track_caller]
    fn forward_impl(&self, x: &Tensor<f32>, relu: bool) -> Tensor<f32> {
        thread_local! {
            // The quantized input of the last call on this thread: its buffer is reused.
            static PACKED_INPUT: RefCell<PackedA> = RefCell::new(PackedA::default());
        }
        let k = self.packed.k();
        assert!(x.rank() == 2 && x.shape()[1] == k, "QuantizedLinear: input shape {:?} is not [batch, {k}]", x.shape());
        let (m, n) = (x.shape()[0], self.packed.n());
        let x = x.contiguous();
        let xs = x.as_slice().expect("a contiguous tensor has a slice");
        let (scale, zero_point) = self.input.scale_zero_point(xs);
        let stage = Dequantize {
            a_scale: scale,
            a_zero: zero_point,
            w_scale: &self.weight_scale,
            bias: self.bias.as_deref(),
            relu,
        };
        let mut y = vec![0.0f32; m * n];
        PACKED_INPUT.with_borrow_mut(|a| {
            a.quantize(xs, m, k, scale, zero_point);
            gemm_dequantize(a, &self.packed, &stage, &mut y);
        });
        Tensor::from_vec(y, &[m, n])
    }
}

/// A layer of a [`QuantizedSequential`].
#[derive(Clone, Debug)]
pub enum QuantizedLayer {
    /// An int8 Linear.
    Linear(Box<QuantizedLinear>),
    /// An int8 Conv2d.
    Conv2d(Box<QuantizedConv2d>),
    /// ReLU (on f32).
    ReLU,
    /// Flatten from dim 1 on.
    Flatten,
    /// 2-D max pooling (on f32; see the module's documentation).
    MaxPool2d(Pool2dOptions),
    /// 2-D average pooling (on f32).
    AvgPool2d(Pool2dOptions),
}

/// An int8 model: f32 in, f32 out, int8 GEMMs inside.
///
/// ```
/// use ferrograd_nn::layers::{Conv2d, Linear, MaxPool2d};
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::quant::{FloatLayer, QuantizedSequential};
/// use rand::{rngs::StdRng, SeedableRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// let (conv, fc) = (Conv2d::new(1, 4, [3, 3], &mut rng), Linear::new(4 * 3 * 3, 3, &mut rng));
/// let layers = [
///     FloatLayer::Conv2d(&conv),
///     FloatLayer::ReLU,
///     FloatLayer::MaxPool2d(MaxPool2d::new([2, 2])),
///     FloatLayer::Flatten,
///     FloatLayer::Linear(&fc),
/// ];
/// let q = QuantizedSequential::dynamic(&layers);
/// assert_eq!(q.forward(&Tensor::ones(&[5, 1, 8, 8])).shape(), &[5, 3]);
/// assert_eq!(q.weight_bytes(), 4 * 3 * 3 + 36 * 3);
/// ```
#[derive(Clone, Debug)]
pub struct QuantizedSequential {
    layers: Vec<QuantizedLayer>,
}

fn float_linear(l: &Linear<f32>) -> (Tensor<f32>, Option<Tensor<f32>>) {
    (l.weight.value(), l.bias.as_ref().map(|b| b.value()))
}

#[track_caller]
fn float_linear_forward(x: &Tensor<f32>, l: &Linear<f32>) -> Tensor<f32> {
    let (w, b) = float_linear(l);
    let y = x.matmul(&w.t());
    match b {
        Some(b) => Tensor::add(&y, &b),
        None => y,
    }
}

#[track_caller]
fn float_conv(x: &Tensor<f32>, c: &Conv2d<f32>) -> Tensor<f32> {
    x.conv2d(&c.weight.value(), c.bias.as_ref().map(|b| b.value()).as_ref(), &c.options)
}

impl QuantizedSequential {
    /// Dynamic quantization: int8 weights, each batch's activations quantized with its own range.
    /// QAT layers are taken as their float layers.
    pub fn dynamic(layers: &[FloatLayer]) -> Self {
        Self::convert(layers, |_, _| InputQuant::Dynamic)
    }

    /// Static quantization: runs the float model over `batches`, feeding the input of each
    /// Linear and Conv2d to an observer from `observer` (e.g.
    /// `|| Box::new(MinMaxObserver::new(ObserverConfig::activations()))`), and fixes the input
    /// parameters to what it reports (must be uint8). QAT layers run as their float layers.
    ///
    /// # Panics
    /// If `batches` is empty or an observer proposes non-uint8 parameters.
    #[track_caller]
    pub fn calibrated(
        layers: &[FloatLayer],
        batches: &[Tensor<f32>],
        observer: impl Fn() -> Box<dyn Observer>,
    ) -> Self {
        assert!(!batches.is_empty(), "QuantizedSequential::calibrated: no calibration batches");
        let mut observers: Vec<Box<dyn Observer>> = layers.iter().map(|_| observer()).collect();
        for batch in batches {
            let mut x = batch.clone();
            for (layer, obs) in layers.iter().zip(observers.iter_mut()) {
                if layer.has_weights() {
                    obs.observe(&x);
                }
                x = layer.forward(x);
            }
        }
        Self::convert(layers, |i, _| {
            let p = observers[i].qparams();
            assert_eq!(p.dtype, QDtype::Uint8, "QuantizedSequential::calibrated: activations must be uint8");
            InputQuant::Static { scale: p.scale[0], zero_point: p.zero_point[0] }
        })
    }

    /// Conversion after quantization-aware training: QAT layers use the input ranges their
    /// observers learned; plain Linear and Conv2d layers are quantized dynamically.
    pub fn from_qat(layers: &[FloatLayer]) -> Self {
        let learned = |p: Option<QParams>| {
            p.map_or(InputQuant::Dynamic, |p| InputQuant::Static { scale: p.scale[0], zero_point: p.zero_point[0] })
        };
        Self::convert(layers, |_, layer| match layer {
            FloatLayer::Qat(q) => learned(q.input_qparams()),
            FloatLayer::QatConv2d(q) => learned(q.input_qparams()),
            _ => InputQuant::Dynamic,
        })
    }

    /// Quantizes the weights of each layer; `input` says how layer `i` quantizes its input (only
    /// asked for layers with weights).
    fn convert(layers: &[FloatLayer], input: impl Fn(usize, &FloatLayer) -> InputQuant) -> Self {
        let conv = |c: &Conv2d<f32>, input: InputQuant| {
            let (w, b) = (c.weight.value(), c.bias.as_ref().map(|b| b.value()));
            QuantizedLayer::Conv2d(Box::new(QuantizedConv2d::new(&w, b.as_ref(), c.options, input)))
        };
        let linear = |l: &Linear<f32>, input: InputQuant| {
            let (w, b) = float_linear(l);
            QuantizedLayer::Linear(Box::new(QuantizedLinear::new(&w, b.as_ref(), input)))
        };
        let layers = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| match layer {
                FloatLayer::Linear(l) => linear(l, input(i, layer)),
                FloatLayer::Qat(q) => linear(&q.linear, input(i, layer)),
                FloatLayer::Conv2d(c) => conv(c, input(i, layer)),
                FloatLayer::QatConv2d(q) => conv(&q.conv, input(i, layer)),
                FloatLayer::ReLU => QuantizedLayer::ReLU,
                FloatLayer::Flatten => QuantizedLayer::Flatten,
                FloatLayer::MaxPool2d(p) => QuantizedLayer::MaxPool2d(p.options),
                FloatLayer::AvgPool2d(p) => QuantizedLayer::AvgPool2d(p.options),
            })
            .collect();
        QuantizedSequential { layers }
    }

    /// The layers.
    pub fn layers(&self) -> &[QuantizedLayer] {
        &self.layers
    }

    /// The forward pass on a float batch. A ReLU and a max pooling that follow a Conv2d
    /// run fused into it ([`QuantizedConv2d::forward_fused`]).
    #[track_caller]
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let mut x = x.clone();
        let mut layers = self.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            x = match layer {
                QuantizedLayer::Linear(l) => {
                    if layers.next_if(|l| matches!(l, QuantizedLayer::ReLU)).is_some() {
                        l.forward_relu(&x)
                    } else {
                        l.forward(&x)
                    }
                }
                QuantizedLayer::Conv2d(c) => {
                    let relu = layers.next_if(|l| matches!(l, QuantizedLayer::ReLU)).is_some();
                    let pool = match layers.peek().copied() {
                        Some(QuantizedLayer::MaxPool2d(p)) => {
                            layers.next();
                            Some(p)
                        }
                        _ => None,
                    };
                    c.forward_fused(&x, relu, pool)
                }
                QuantizedLayer::ReLU => x.relu(),
                QuantizedLayer::Flatten => x.flatten(1, -1),
                QuantizedLayer::MaxPool2d(p) => x.max_pool2d(p),
                QuantizedLayer::AvgPool2d(p) => x.avg_pool2d(p),
            };
        }
        x
    }

    /// Bytes of the int8 weights (scales and biases not counted).
    pub fn weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                QuantizedLayer::Linear(q) => q.weight().numel(),
                QuantizedLayer::Conv2d(q) => q.weight().numel(),
                _ => 0,
            })
            .sum()
    }

    /// Saves the model as safetensors: `layers` (i64 kinds: 0 Linear, 1 ReLU, 2 Flatten,
    /// 3 Conv2d, 4 MaxPool2d, 5 AvgPool2d) and, per layer `i`:
    /// - Linear and Conv2d: `i.weight` (i8, `[out, in]` or `[out, in / groups, kh, kw]`),
    ///   `i.weight_scale` (f32 `[out]`), `i.bias` (if any) and, when static, `i.input_scale` (f32)
    ///   and `i.input_zero_point` (i32);
    /// - Conv2d: also `i.options`, i64 `[stride h, w, padding h, w, dilation h, w, groups]`;
    /// - pooling: `i.options`, i64 `[kernel h, w, stride h, w, padding h, w, count_include_pad]`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), NnError> {
        let mut t: BTreeMap<String, AnyTensor> = BTreeMap::new();
        let kinds: Vec<i64> = self
            .layers
            .iter()
            .map(|l| match l {
                QuantizedLayer::Linear(_) => LINEAR,
                QuantizedLayer::ReLU => RELU,
                QuantizedLayer::Flatten => FLATTEN,
                QuantizedLayer::Conv2d(_) => CONV2D,
                QuantizedLayer::MaxPool2d(_) => MAX_POOL2D,
                QuantizedLayer::AvgPool2d(_) => AVG_POOL2D,
            })
            .collect();
        t.insert("layers".into(), Tensor::from_vec(kinds.clone(), &[kinds.len()]).into());
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                QuantizedLayer::Linear(l) => {
                    put_int8(&mut t, i, l.weight.clone().into(), &l.weight_scale, l.bias.as_deref(), l.input)
                }
                QuantizedLayer::Conv2d(c) => {
                    put_int8(&mut t, i, c.weight().clone().into(), c.weight_scale(), c.bias(), c.input_quant());
                    let o = c.options();
                    let [s, p, d] = [o.stride, o.padding, o.dilation];
                    put_options(&mut t, i, [s[0], s[1], p[0], p[1], d[0], d[1], o.groups]);
                }
                QuantizedLayer::MaxPool2d(o) | QuantizedLayer::AvgPool2d(o) => {
                    let [k, s, p] = [o.kernel, o.stride, o.padding];
                    put_options(&mut t, i, [k[0], k[1], s[0], s[1], p[0], p[1], usize::from(o.count_include_pad)]);
                }
                QuantizedLayer::ReLU | QuantizedLayer::Flatten => {}
            }
        }
        save_any_tensors(path, &t)
    }

    /// Loads a model written by [`QuantizedSequential::save`]. A file that is not such a model
    /// (missing or extra tensors, wrong types or shapes, invalid scales or options, or conv
    /// options under which one sample of the smallest input would need over 1 GiB) gives
    /// [`NnError::Format`] naming the problem.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, NnError> {
        let path = path.as_ref();
        let mut r = Reader { path: path.to_path_buf(), tensors: load_any_tensors(path)? };
        let kinds =
            r.take("layers").and_then(AnyTensor::into_typed::<i64>).ok_or_else(|| r.bad("no i64 tensor `layers`"))?;
        let mut layers = Vec::new();
        for (i, kind) in kinds.to_vec().into_iter().enumerate() {
            layers.push(match kind {
                RELU => QuantizedLayer::ReLU,
                FLATTEN => QuantizedLayer::Flatten,
                LINEAR => {
                    let (weight, scale, bias, input) = r.take_int8(i, 2)?;
                    QuantizedLayer::Linear(Box::new(QuantizedLinear::from_parts(weight, scale, bias, input)))
                }
                CONV2D => {
                    let (weight, scale, bias, input) = r.take_int8(i, 4)?;
                    let [s0, s1, p0, p1, d0, d1, groups] = r.take_options(i)?;
                    let options = Conv2dOptions { stride: [s0, s1], padding: [p0, p1], dilation: [d0, d1], groups };
                    check_options(weight.shape(), &options)
                        .and_then(|()| check_conv_sizes(weight.shape(), &options))
                        .map_err(|e| r.bad(&format!("layer {i}: {e}")))?;
                    QuantizedLayer::Conv2d(Box::new(QuantizedConv2d::from_parts(weight, scale, bias, options, input)))
                }
                MAX_POOL2D | AVG_POOL2D => {
                    let [k0, k1, s0, s1, p0, p1, count_include_pad] = r.take_options(i)?;
                    if k0 == 0 || k1 == 0 || s0 == 0 || s1 == 0 || 2 * p0 > k0 || 2 * p1 > k1 || count_include_pad > 1 {
                        return Err(r.bad(&format!("layer {i}: invalid pooling options")));
                    }
                    let o = Pool2dOptions {
                        kernel: [k0, k1],
                        stride: [s0, s1],
                        padding: [p0, p1],
                        count_include_pad: count_include_pad == 1,
                    };
                    if kind == MAX_POOL2D {
                        QuantizedLayer::MaxPool2d(o)
                    } else {
                        QuantizedLayer::AvgPool2d(o)
                    }
                }
                other => return Err(r.bad(&format!("unknown layer kind {other} at position {i}"))),
            });
        }
        if let Some(extra) = r.tensors.keys().next() {
            return Err(r.bad(&format!("unexpected tensor `{extra}`")));
        }
        Ok(QuantizedSequential { layers })
    }
}

/// The most bytes a loaded convolution may need for one sample of the smallest input it accepts
/// (its padded input and its output): 1 GiB. Ordinary paddings and dilations need a few
/// kilobytes; options that need more are either damage or an attempt to make the first forward
/// pass exhaust memory, and are refused at load.
const MAX_CONV_BYTES_PER_SAMPLE: u128 = 1 << 30;

/// Checks what a convolution's options imply before any forward pass: for one sample of the
/// smallest input the layer accepts (each side at least 1 and at least the dilated kernel less
/// the padding), the padded input (one byte per element) and the output (f32) must fit in
/// [`MAX_CONV_BYTES_PER_SAMPLE`]. Sizes are computed in `u128` with checked arithmetic, so no
/// option overflows them.
fn check_conv_sizes(weight_shape: &[usize], o: &Conv2dOptions) -> Result<(), String> {
    let (out, cg, kernel) = (weight_shape[0] as u128, weight_shape[1] as u128, [weight_shape[2], weight_shape[3]]);
    let side = |i: usize| -> Option<(u128, u128)> {
        let (k, d, p, s) = (kernel[i] as u128, o.dilation[i] as u128, o.padding[i] as u128, o.stride[i] as u128);
        let extent = d.checked_mul(k - 1)? + 1;
        let padded = (2 * p + 1).max(extent);
        Some((padded, (padded - extent) / s + 1))
    };
    let bytes = side(0).zip(side(1)).and_then(|((ph, oh), (pw, ow))| {
        let input = (cg * o.groups as u128).checked_mul(ph)?.checked_mul(pw)?;
        let output = out.checked_mul(oh)?.checked_mul(ow)?.checked_mul(4)?;
        input.checked_add(output)
    });
    match bytes {
        Some(b) if b <= MAX_CONV_BYTES_PER_SAMPLE => Ok(()),
        _ => Err(format!(
            "padding {:?}, dilation {:?} and stride {:?} with weight shape {weight_shape:?} need more than \
             {MAX_CONV_BYTES_PER_SAMPLE} bytes for one sample of the smallest input",
            o.padding, o.dilation, o.stride
        )),
    }
}

const LINEAR: i64 = 0;
const RELU: i64 = 1;
const FLATTEN: i64 = 2;
const CONV2D: i64 = 3;
const MAX_POOL2D: i64 = 4;
const AVG_POOL2D: i64 = 5;

/// Writes the tensors of an int8 layer `i` (see [`QuantizedSequential::save`]).
fn put_int8(
    t: &mut BTreeMap<String, AnyTensor>,
    i: usize,
    weight: AnyTensor,
    weight_scale: &[f32],
    bias: Option<&[f32]>,
    input: InputQuant,
) {
    let n = weight_scale.len();
    t.insert(format!("{i}.weight"), weight);
    t.insert(format!("{i}.weight_scale"), Tensor::from_vec(weight_scale.to_vec(), &[n]).into());
    if let Some(b) = bias {
        t.insert(format!("{i}.bias"), Tensor::from_vec(b.to_vec(), &[n]).into());
    }
    if let InputQuant::Static { scale, zero_point } = input {
        t.insert(format!("{i}.input_scale"), Tensor::from_vec(vec![scale], &[1]).into());
        t.insert(format!("{i}.input_zero_point"), Tensor::from_vec(vec![zero_point], &[1]).into());
    }
}

/// Writes the 7 integers of layer `i`'s options.
fn put_options(t: &mut BTreeMap<String, AnyTensor>, i: usize, v: [usize; 7]) {
    let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    t.insert(format!("{i}.options"), Tensor::from_vec(v, &[7]).into());
}

/// The tensors of a file being loaded, taken out one by one so that leftovers can be reported.
struct Reader {
    path: PathBuf,
    tensors: BTreeMap<String, AnyTensor>,
}

/// An int8 layer's weight, weight scales, bias and input quantization.
type Int8Parts = (Tensor<i8>, Vec<f32>, Option<Vec<f32>>, InputQuant);

impl Reader {
    fn bad(&self, problem: &str) -> NnError {
        NnError::Format { path: self.path.clone(), problem: problem.into() }
    }

    fn take(&mut self, name: &str) -> Option<AnyTensor> {
        self.tensors.remove(name)
    }

    /// An f32 vector of length `len` named `name`, if present.
    fn take_vec(&mut self, name: &str, len: usize) -> Result<Option<Vec<f32>>, NnError> {
        match self.take(name) {
            None => Ok(None),
            Some(a) => a
                .into_typed::<f32>()
                .filter(|v| v.shape() == [len])
                .map(|v| Some(v.to_vec()))
                .ok_or_else(|| self.bad(&format!("`{name}` is not an f32 tensor of shape [{len}]"))),
        }
    }

    /// The tensors of int8 layer `i` whose weight has rank `rank` (see [`QuantizedSequential::save`]).
    fn take_int8(&mut self, i: usize, rank: usize) -> Result<Int8Parts, NnError> {
        let weight = self
            .take(&format!("{i}.weight"))
            .and_then(AnyTensor::into_typed::<i8>)
            .filter(|w| w.rank() == rank && w.numel() > 0)
            .ok_or_else(|| self.bad(&format!("no non-empty {rank}-D i8 tensor `{i}.weight`")))?;
        let out = weight.shape()[0];
        let scale = self
            .take_vec(&format!("{i}.weight_scale"), out)?
            .ok_or_else(|| self.bad(&format!("no tensor `{i}.weight_scale`")))?;
        if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(self.bad(&format!("`{i}.weight_scale` has a non-positive or non-finite scale")));
        }
        let bias = self.take_vec(&format!("{i}.bias"), out)?;
        let input = match (self.take(&format!("{i}.input_scale")), self.take(&format!("{i}.input_zero_point"))) {
            (None, None) => InputQuant::Dynamic,
            (Some(s), Some(z)) => {
                let s = s.into_typed::<f32>().filter(|s| s.numel() == 1).map(|s| s.to_vec()[0]);
                let z = z.into_typed::<i32>().filter(|z| z.numel() == 1).map(|z| z.to_vec()[0]);
                match (s, z) {
                    (Some(scale), Some(zero_point))
                        if scale.is_finite() && scale > 0.0 && (0..=255).contains(&zero_point) =>
                    {
                        InputQuant::Static { scale, zero_point }
                    }
                    _ => return Err(self.bad(&format!("layer {i}: invalid input scale or zero point"))),
                }
            }
            _ => return Err(self.bad(&format!("layer {i}: input scale without zero point or the reverse"))),
        };
        Ok((weight, scale, bias, input))
    }

    /// The 7 non-negative integers of `i.options`.
    fn take_options(&mut self, i: usize) -> Result<[usize; 7], NnError> {
        let v = self
            .take(&format!("{i}.options"))
            .and_then(AnyTensor::into_typed::<i64>)
            .filter(|v| v.shape() == [7])
            .map(|v| v.to_vec())
            .ok_or_else(|| self.bad(&format!("no i64 tensor `{i}.options` of shape [7]")))?;
        let mut out = [0usize; 7];
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = usize::try_from(x)
                .ok()
                .filter(|&x| x <= 1 << 20)
                .ok_or_else(|| self.bad(&format!("`{i}.options` holds {x}, outside [0, 2^20]")))?;
        }
        Ok(out)
    }
}
