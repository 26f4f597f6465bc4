//! Quantization-aware training: fake quantization with a straight-through estimator, and
//! Linear and Conv2d layers that fake-quantize their weights (per output channel) and inputs
//! (per tensor) exactly as the int8 layers they convert to will quantize them.

use std::sync::Mutex;

use ferrograd_autograd::{CustomOp, Param, Var};
use ferrograd_nn::layers::{Conv2d, Linear};
use ferrograd_nn::Module;
use ferrograd_tensor::{Element, Float, Tensor};

use super::observer::{MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverConfig};
use super::qtensor::QParams;

struct FakeQuantizeOp {
    params: QParams,
}

impl FakeQuantizeOp {
    /// Per element: the integer before clamping and the channel's parameters.
    fn for_each<F: Float>(&self, x: &Tensor<F>, f: impl Fn(i32, usize) -> F) -> Tensor<F> {
        let shape = x.shape().to_vec();
        let p = &self.params;
        let (channels, inner) = match p.axis {
            None => (1, 1),
            Some(a) => {
                assert!(
                    a < shape.len() && shape[a] == p.channels(),
                    "fake_quantize: axis {a} of shape {shape:?} does not have {} channels",
                    p.channels()
                );
                (shape[a], shape[a + 1..].iter().product())
            }
        };
        let v = x.to_vec();
        Tensor::from_vec(
            v.iter()
                .enumerate()
                .map(|(i, &xv)| {
                    let c = (i / inner) % channels;
                    // In f32, exactly as the int8 model will quantize.
                    let q = p.quantize_unclamped(xv.to_f64() as f32, c);
                    f(q, c)
                })
                .collect(),
            &shape,
        )
    }
}

impl<F: Float> CustomOp<F> for FakeQuantizeOp {
    fn name(&self) -> &'static str {
        "fake_quantize"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F> {
        let (p, lo, hi) = (&self.params, self.params.dtype.qmin(), self.params.dtype.qmax());
        self.for_each(inputs[0], |q, c| {
            <F as Element>::from_f64(f64::from(q.clamp(lo, hi) - p.zero_point[c]) * f64::from(p.scale[c]))
        })
    }

    fn backward(&self, inputs: &[Var<F>], _output: &Var<F>, grad: &Var<F>) -> Vec<Option<Var<F>>> {
        let mask = fake_quantize_mask(inputs[0].data(), &self.params);
        vec![Some(grad * &Var::constant(mask))]
    }
}

/// The straight-through estimator's mask: 1 where `qmin <= round(x / scale) + zero_point <= qmax`
/// (the gradient passes), 0 where the value is clamped (PyTorch's
/// `fake_quantize_per_tensor_affine` / `_per_channel_affine` backward).
pub fn fake_quantize_mask<F: Float>(x: &Tensor<F>, params: &QParams) -> Tensor<F> {
    let (lo, hi) = (params.dtype.qmin(), params.dtype.qmax());
    FakeQuantizeOp { params: params.clone() }
        .for_each(x, |q, _| if (lo..=hi).contains(&q) { F::one() } else { F::zero() })
}

/// `dequantize(quantize(x))` as a differentiable op: the forward pass rounds and clamps like
/// the int8 model will, the backward pass is the straight-through estimator (the gradient
/// times [`fake_quantize_mask`]).
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::quant::{fake_quantize, QDtype, QParams, QScheme};
/// let p = QParams::from_min_max(&[0.0], &[2.55], QDtype::Uint8, QScheme::Affine, None);
/// let x = Var::leaf(Tensor::from_vec(vec![0.333f32, 3.0], &[2]));
/// let y = fake_quantize(&x, &p);
/// assert!((y.to_vec()[0] - 0.33).abs() < 1e-6 && (y.to_vec()[1] - 2.55).abs() < 1e-6);
/// let g = y.sum().backward();
/// assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0, 0.0]);
/// ```
#[track_caller]
pub fn fake_quantize<F: Float>(x: &Var<F>, params: &QParams) -> Var<F> {
    Var::apply_op(FakeQuantizeOp { params: params.clone() }, &[x])
}

/// The input side of a QAT layer: a moving-average observer updated in training mode, and the
/// fake quantization of the input once it has seen a batch.
#[derive(Debug)]
struct InputFakeQuant {
    observer: Mutex<MovingAverageMinMaxObserver>,
    observed: Mutex<bool>,
    training: Mutex<bool>,
}

impl InputFakeQuant {
    fn new(averaging_constant: f32) -> Self {
        InputFakeQuant {
            observer: Mutex::new(MovingAverageMinMaxObserver::new(ObserverConfig::activations(), averaging_constant)),
            observed: Mutex::new(false),
            training: Mutex::new(true),
        }
    }

    fn qparams(&self) -> Option<QParams> {
        self.observed.lock().unwrap().then(|| self.observer.lock().unwrap().qparams())
    }

    /// Observes `input` (in training mode), then fake-quantizes it with the current range.
    #[track_caller]
    fn apply(&self, input: &Var<f32>) -> Var<f32> {
        if *self.training.lock().unwrap() {
            self.observer.lock().unwrap().observe(input.data());
            *self.observed.lock().unwrap() = true;
        }
        match self.qparams() {
            Some(p) => fake_quantize(input, &p),
            None => input.clone(),
        }
    }

    fn set_training(&self, training: bool) {
        *self.training.lock().unwrap() = training;
    }
}

/// Symmetric int8 parameters per output channel (axis 0) from a weight's current range.
fn weight_qparams(weight: &Param<f32>) -> QParams {
    let mut obs = MinMaxObserver::new(ObserverConfig::weights());
    obs.observe(&weight.value());
    obs.qparams()
}

/// A Linear layer trained with fake quantization: weights symmetric int8 per output channel
/// (from their current range), inputs affine uint8 per tensor with a moving-average observer
/// (updated in training mode). [`super::QuantizedSequential::from_qat`] turns it into int8.
#[derive(Debug)]
pub struct QatLinear {
    /// The float layer being trained.
    pub linear: Linear<f32>,
    input: InputFakeQuant,
}

impl QatLinear {
    /// Wraps a (usually pre-trained) Linear; `averaging_constant` drives the input observer.
    pub fn new(linear: Linear<f32>, averaging_constant: f32) -> Self {
        QatLinear { linear, input: InputFakeQuant::new(averaging_constant) }
    }

    /// The weight's quantization parameters (symmetric int8 per output channel).
    pub fn weight_qparams(&self) -> QParams {
        weight_qparams(&self.linear.weight)
    }

    /// The input's quantization parameters, or `None` before any training batch.
    pub fn input_qparams(&self) -> Option<QParams> {
        self.input.qparams()
    }
}

impl Module<f32> for QatLinear {
    #[track_caller]
    fn forward(&self, input: &Var<f32>) -> Var<f32> {
        let x = self.input.apply(input);
        let w = fake_quantize(&self.linear.weight.var(), &self.weight_qparams());
        let bias = self.linear.bias.as_ref().map(Param::var);
        self.linear.forward_with(&x, &w, bias.as_ref())
    }

    fn params(&self) -> Vec<(&str, &Param<f32>)> {
        self.linear.params()
    }

    fn set_training_self(&self, training: bool) {
        self.input.set_training(training);
    }
}

/// A Conv2d trained with fake quantization, like [`QatLinear`]: the weight
/// `[out, in / groups, kh, kw]` symmetric int8 per output channel, the input affine uint8 per
/// tensor with a moving-average observer; the bias stays f32. The gradient reaches the float
/// weight and input through the straight-through estimator.
/// [`super::QuantizedSequential::from_qat`] turns it into a [`super::QuantizedConv2d`].
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Conv2d, Module};
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::quant::QatConv2d;
/// use rand::{rngs::StdRng, SeedableRng};
/// let qat = QatConv2d::new(Conv2d::new(2, 3, [3, 3], &mut StdRng::seed_from_u64(0)), 0.01);
/// let x = Var::constant(Tensor::from_fn(&[1, 2, 5, 5], |i| (i as f32 * 0.1).sin()));
/// let g = qat.forward(&x).sum().backward();
/// assert_eq!(g.get(&qat.conv.weight.var()).unwrap().shape(), &[3, 2, 3, 3]);
/// assert!(qat.input_qparams().is_some());
/// ```
#[derive(Debug)]
pub struct QatConv2d {
    /// The float layer being trained.
    pub conv: Conv2d<f32>,
    input: InputFakeQuant,
}

impl QatConv2d {
    /// Wraps a (usually pre-trained) Conv2d; `averaging_constant` drives the input observer.
    pub fn new(conv: Conv2d<f32>, averaging_constant: f32) -> Self {
        QatConv2d { conv, input: InputFakeQuant::new(averaging_constant) }
    }

    /// The weight's quantization parameters (symmetric int8 per output channel).
    pub fn weight_qparams(&self) -> QParams {
        weight_qparams(&self.conv.weight)
    }

    /// The input's quantization parameters, or `None` before any training batch.
    pub fn input_qparams(&self) -> Option<QParams> {
        self.input.qparams()
    }
}

impl Module<f32> for QatConv2d {
    #[track_caller]
    fn forward(&self, input: &Var<f32>) -> Var<f32> {
        let x = self.input.apply(input);
        let w = fake_quantize(&self.conv.weight.var(), &self.weight_qparams());
        let bias = self.conv.bias.as_ref().map(Param::var);
        self.conv.forward_with(&x, &w, bias.as_ref())
    }

    fn params(&self) -> Vec<(&str, &Param<f32>)> {
        self.conv.params()
    }

    fn set_training_self(&self, training: bool) {
        self.input.set_training(training);
    }
}
