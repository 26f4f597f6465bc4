//! Post-training quantization of Linear/ReLU/Flatten models into [`QuantizedSequential`]:
//! dynamic (activation ranges measured on each batch), static (ranges calibrated once on sample
//! batches) or from quantization-aware training; save and load.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use ferrograd_nn::checkpoint::{load_any_tensors, save_any_tensors};
use ferrograd_nn::layers::Linear;
use ferrograd_nn::{AnyTensor, NnError};
use ferrograd_tensor::Tensor;

use super::fake::QatLinear;
use super::gemm::{gemm_dequantize, Dequantize, PackedA, PackedB};
use super::observer::{MinMaxObserver, Observer, ObserverConfig};
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
    /// ReLU.
    ReLU,
    /// Flatten from dim 1 on.
    Flatten,
}

/// How a quantized Linear quantizes its input.
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
    pub fn new(weight: &Tensor<f32>, bias: Option<&Tensor<f32>>, input: InputQuant) -> Self {
        assert!(weight.rank() == 2, "QuantizedLinear: weight shape {:?} is not [out, in]", weight.shape());
        let mut obs = MinMaxObserver::new(ObserverConfig::weights());
        obs.observe(weight);
        let p = obs.qparams();
        let (out, inp) = (weight.shape()[0], weight.shape()[1]);
        let w: Vec<i8> = weight.to_vec().iter().enumerate().map(|(i, &v)| p.quantize_value(v, i / inp) as i8).collect();
        let bias = bias.map(|b| {
            assert_eq!(b.shape(), &[out], "QuantizedLinear: bias shape {:?} for {out} outputs", b.shape());
            b.to_vec()
        });
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
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        self.forward_impl(x, false)
    }

    /// `relu(forward(x))`, with the ReLU fused into the GEMM's output pass (the same values as
    /// [`QuantizedLinear::forward`] followed by `max(y, 0)`).
    ///
    /// # Panics
    /// If `x` is not `[batch, in]`.
    pub fn forward_relu(&self, x: &Tensor<f32>) -> Tensor<f32> {
        self.forward_impl(x, true)
    }

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
        let (scale, zero_point) = match self.input {
            InputQuant::Static { scale, zero_point } => (scale, zero_point),
            InputQuant::Dynamic => {
                let (lo, hi) = min_max(xs);
                let p = QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None);
                (p.scale[0], p.zero_point[0])
            }
        };
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
    /// ReLU (on f32).
    ReLU,
    /// Flatten from dim 1 on.
    Flatten,
}

/// An int8 model: f32 in, f32 out, int8 GEMMs inside.
///
/// ```
/// use ferrograd_nn::layers::Linear;
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::quant::{FloatLayer, QuantizedSequential};
/// use rand::{rngs::StdRng, SeedableRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// let (fc1, fc2) = (Linear::new(8, 16, &mut rng), Linear::new(16, 3, &mut rng));
/// let layers = [FloatLayer::Linear(&fc1), FloatLayer::ReLU, FloatLayer::Linear(&fc2)];
/// let q = QuantizedSequential::dynamic(&layers);
/// assert_eq!(q.forward(&Tensor::ones(&[5, 8])).shape(), &[5, 3]);
/// assert_eq!(q.weight_bytes(), 8 * 16 + 16 * 3);
/// ```
#[derive(Clone, Debug)]
pub struct QuantizedSequential {
    layers: Vec<QuantizedLayer>,
}

fn float_linear(l: &Linear<f32>) -> (Tensor<f32>, Option<Tensor<f32>>) {
    (l.weight.value(), l.bias.as_ref().map(|b| b.value()))
}

fn relu(x: Tensor<f32>) -> Tensor<f32> {
    x.map(|v| v.max(0.0))
}

fn flatten(x: &Tensor<f32>) -> Tensor<f32> {
    let n = x.shape().first().copied().unwrap_or(1);
    x.reshape(&[n, x.numel() / n.max(1)])
}

impl QuantizedSequential {
    /// Dynamic quantization: int8 weights, each batch's activations quantized with its own range.
    /// QAT layers are taken as their float Linear.
    pub fn dynamic(layers: &[FloatLayer]) -> Self {
        Self::convert(layers, |_, _| InputQuant::Dynamic)
    }

    /// Static quantization: runs the float model over `batches`, feeding each Linear's input to
    /// an observer from `observer` (e.g. `|| Box::new(MinMaxObserver::new(ObserverConfig::activations()))`),
    /// and fixes the input parameters to what it reports (must be uint8).
    ///
    /// # Panics
    /// If `batches` is empty or an observer proposes non-uint8 parameters.
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
                x = match layer {
                    FloatLayer::Linear(_) | FloatLayer::Qat(_) => {
                        obs.observe(&x);
                        let (w, b) = match layer {
                            FloatLayer::Linear(l) => float_linear(l),
                            FloatLayer::Qat(q) => float_linear(&q.linear),
                            _ => unreachable!("matched Linear or Qat"),
                        };
                        let y = x.matmul(&w.t());
                        b.map_or(y.clone(), |b| y.add(&b))
                    }
                    FloatLayer::ReLU => relu(x),
                    FloatLayer::Flatten => flatten(&x),
                };
            }
        }
        Self::convert(layers, |i, _| {
            let p = observers[i].qparams();
            assert_eq!(p.dtype, QDtype::Uint8, "QuantizedSequential::calibrated: activations must be uint8");
            InputQuant::Static { scale: p.scale[0], zero_point: p.zero_point[0] }
        })
    }

    /// Conversion after quantization-aware training: QAT layers use the input ranges their
    /// observers learned; plain Linear layers are quantized dynamically.
    pub fn from_qat(layers: &[FloatLayer]) -> Self {
        Self::convert(layers, |_, layer| match layer {
            FloatLayer::Qat(q) => q
                .input_qparams()
                .map_or(InputQuant::Dynamic, |p| InputQuant::Static { scale: p.scale[0], zero_point: p.zero_point[0] }),
            _ => InputQuant::Dynamic,
        })
    }

    fn convert(layers: &[FloatLayer], input: impl Fn(usize, &FloatLayer) -> InputQuant) -> Self {
        let layers = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| match layer {
                FloatLayer::Linear(l) => {
                    let (w, b) = float_linear(l);
                    QuantizedLayer::Linear(Box::new(QuantizedLinear::new(&w, b.as_ref(), input(i, layer))))
                }
                FloatLayer::Qat(q) => {
                    let (w, b) = float_linear(&q.linear);
                    QuantizedLayer::Linear(Box::new(QuantizedLinear::new(&w, b.as_ref(), input(i, layer))))
                }
                FloatLayer::ReLU => QuantizedLayer::ReLU,
                FloatLayer::Flatten => QuantizedLayer::Flatten,
            })
            .collect();
        QuantizedSequential { layers }
    }

    /// The layers.
    pub fn layers(&self) -> &[QuantizedLayer] {
        &self.layers
    }

    /// The forward pass on a float batch.
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                QuantizedLayer::Linear(l) => l.forward(&x),
                QuantizedLayer::ReLU => relu(x),
                QuantizedLayer::Flatten => flatten(&x),
            };
        }
        x
    }

    /// Bytes of the int8 weights (scales and biases not counted).
    pub fn weight_bytes(&self) -> usize {
        self.linears().map(|(_, l)| l.weight.numel()).sum()
    }

    fn linears(&self) -> impl Iterator<Item = (usize, &QuantizedLinear)> {
        self.layers.iter().enumerate().filter_map(|(i, l)| match l {
            QuantizedLayer::Linear(q) => Some((i, &**q)),
            _ => None,
        })
    }

    /// Saves the model as safetensors: `layers` (kinds: 0 Linear, 1 ReLU, 2 Flatten) and, per
    /// Linear `i`, `i.weight` (i8), `i.weight_scale`, `i.bias` (if any) and, when static,
    /// `i.input_scale` and `i.input_zero_point`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), NnError> {
        let mut t: BTreeMap<String, AnyTensor> = BTreeMap::new();
        let kinds: Vec<i64> = self
            .layers
            .iter()
            .map(|l| match l {
                QuantizedLayer::Linear(_) => 0,
                QuantizedLayer::ReLU => 1,
                QuantizedLayer::Flatten => 2,
            })
            .collect();
        t.insert("layers".into(), Tensor::from_vec(kinds.clone(), &[kinds.len()]).into());
        for (i, l) in self.linears() {
            t.insert(format!("{i}.weight"), l.weight.clone().into());
            let n = l.weight_scale.len();
            t.insert(format!("{i}.weight_scale"), Tensor::from_vec(l.weight_scale.clone(), &[n]).into());
            if let Some(b) = &l.bias {
                t.insert(format!("{i}.bias"), Tensor::from_vec(b.clone(), &[n]).into());
            }
            if let InputQuant::Static { scale, zero_point } = l.input {
                t.insert(format!("{i}.input_scale"), Tensor::from_vec(vec![scale], &[1]).into());
                t.insert(format!("{i}.input_zero_point"), Tensor::from_vec(vec![zero_point], &[1]).into());
            }
        }
        save_any_tensors(path, &t)
    }

    /// Loads a model written by [`QuantizedSequential::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, NnError> {
        let path = path.as_ref();
        let mut t = load_any_tensors(path)?;
        let bad = |problem: String| NnError::Format { path: path.to_path_buf(), problem };
        let mut take = |name: String| t.remove(&name);
        let kinds = take("layers".into())
            .and_then(AnyTensor::into_typed::<i64>)
            .ok_or_else(|| bad("no i64 tensor `layers`".into()))?;
        let mut layers = Vec::new();
        for (i, kind) in kinds.to_vec().into_iter().enumerate() {
            layers.push(match kind {
                1 => QuantizedLayer::ReLU,
                2 => QuantizedLayer::Flatten,
                0 => {
                    let weight = take(format!("{i}.weight"))
                        .and_then(AnyTensor::into_typed::<i8>)
                        .filter(|w| w.rank() == 2)
                        .ok_or_else(|| bad(format!("no 2-D i8 tensor `{i}.weight`")))?;
                    let out = weight.shape()[0];
                    let vec_of = |a: Option<AnyTensor>, what: &str| -> Result<Option<Vec<f32>>, NnError> {
                        match a {
                            None => Ok(None),
                            Some(a) => a
                                .into_typed::<f32>()
                                .filter(|v| v.shape() == [out])
                                .map(|v| Some(v.to_vec()))
                                .ok_or_else(|| bad(format!("`{i}.{what}` is not an f32 tensor of shape [{out}]"))),
                        }
                    };
                    let scale = vec_of(take(format!("{i}.weight_scale")), "weight_scale")?
                        .ok_or_else(|| bad(format!("no tensor `{i}.weight_scale`")))?;
                    if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                        return Err(bad(format!("`{i}.weight_scale` has a non-positive or non-finite scale")));
                    }
                    let bias = vec_of(take(format!("{i}.bias")), "bias")?;
                    let input = match (take(format!("{i}.input_scale")), take(format!("{i}.input_zero_point"))) {
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
                                _ => return Err(bad(format!("layer {i}: invalid input scale or zero point"))),
                            }
                        }
                        _ => return Err(bad(format!("layer {i}: input scale without zero point or the reverse"))),
                    };
                    QuantizedLayer::Linear(Box::new(QuantizedLinear::from_parts(weight, scale, bias, input)))
                }
                other => return Err(bad(format!("unknown layer kind {other} at position {i}"))),
            });
        }
        if let Some(extra) = t.keys().next() {
            return Err(bad(format!("unexpected tensor `{extra}`")));
        }
        Ok(QuantizedSequential { layers })
    }
}
