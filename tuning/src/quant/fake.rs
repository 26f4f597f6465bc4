//! Quantization-aware training: fake quantization with a straight-through estimator, and a
//! Linear layer that fake-quantizes its weights (per channel) and inputs (per tensor).

use std::sync::Mutex;

use ferrograd_autograd::{CustomOp, Param, Var};
use ferrograd_nn::layers::Linear;
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
pub fn fake_quantize<F: Float>(x: &Var<F>, params: &QParams) -> Var<F> {
    Var::apply_op(FakeQuantizeOp { params: params.clone() }, &[x])
}

/// A Linear layer trained with fake quantization: weights symmetric int8 per output channel
/// (from their current range), inputs affine uint8 per tensor with a moving-average observer
/// (updated in training mode). [`super::QuantizedSequential::from_qat`] turns it into int8.
#[derive(Debug)]
pub struct QatLinear {
    /// The float layer being trained.
    pub linear: Linear<f32>,
    observer: Mutex<MovingAverageMinMaxObserver>,
    observed: Mutex<bool>,
    training: Mutex<bool>,
}

impl QatLinear {
    /// Wraps a (usually pre-trained) Linear; `averaging_constant` drives the input observer.
    pub fn new(linear: Linear<f32>, averaging_constant: f32) -> Self {
        QatLinear {
            linear,
            observer: Mutex::new(MovingAverageMinMaxObserver::new(ObserverConfig::activations(), averaging_constant)),
            observed: Mutex::new(false),
            training: Mutex::new(true),
        }
    }

    /// The weight's quantization parameters (symmetric int8 per output channel).
    pub fn weight_qparams(&self) -> QParams {
        let mut obs = MinMaxObserver::new(ObserverConfig::weights());
        obs.observe(&self.linear.weight.value());
        obs.qparams()
    }

    /// The input's quantization parameters, or `None` before any training batch.
    pub fn input_qparams(&self) -> Option<QParams> {
        self.observed.lock().unwrap().then(|| self.observer.lock().unwrap().qparams())
    }
}

impl Module<f32> for QatLinear {
    fn forward(&self, input: &Var<f32>) -> Var<f32> {
        if *self.training.lock().unwrap() {
            self.observer.lock().unwrap().observe(input.data());
            *self.observed.lock().unwrap() = true;
        }
        let x = match self.input_qparams() {
            Some(p) => fake_quantize(input, &p),
            None => input.clone(),
        };
        let w = fake_quantize(&self.linear.weight.var(), &self.weight_qparams());
        let bias = self.linear.bias.as_ref().map(Param::var);
        self.linear.forward_with(&x, &w, bias.as_ref())
    }

    fn params(&self) -> Vec<(&str, &Param<f32>)> {
        self.linear.params()
    }

    fn set_training_self(&self, training: bool) {
        *self.training.lock().unwrap() = training;
    }
}
