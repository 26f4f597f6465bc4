//! Quantization parameters and the quantized tensor type.

use ferrograd_tensor::Tensor;

/// The integer type of quantized values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QDtype {
    /// `i8`, `[-128, 127]`: weights.
    Int8,
    /// `u8`, `[0, 255]`: activations (with an affine scheme, ReLU outputs use the whole range).
    Uint8,
}

impl QDtype {
    /// Smallest representable value.
    pub fn qmin(self) -> i32 {
        match self {
            QDtype::Int8 => -128,
            QDtype::Uint8 => 0,
        }
    }

    /// Largest representable value.
    pub fn qmax(self) -> i32 {
        match self {
            QDtype::Int8 => 127,
            QDtype::Uint8 => 255,
        }
    }
}

/// How a real range maps to the integer range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QScheme {
    /// Centred on zero: `scale = max|x| / 127.5`, zero point 0 (int8) or 128 (uint8).
    Symmetric,
    /// `[min(x, 0), max(x, 0)]` onto `[qmin, qmax]` with an integer zero point.
    Affine,
}

/// Scales and zero points, one pair for the whole tensor or one per channel along `axis`.
///
/// ```
/// use ferrograd_tuning::quant::{QDtype, QParams, QScheme};
/// let p = QParams::from_min_max(&[-1.0], &[3.0], QDtype::Uint8, QScheme::Affine, None);
/// assert!((p.scale[0] - 4.0 / 255.0).abs() < 1e-7);
/// assert_eq!(p.zero_point[0], 64);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    /// The integer type.
    pub dtype: QDtype,
    /// The scheme the parameters were derived with.
    pub scheme: QScheme,
    /// Step between consecutive integers, per channel (one entry when per-tensor).
    pub scale: Vec<f32>,
    /// The integer that represents 0.0, per channel.
    pub zero_point: Vec<i32>,
    /// The channel axis, or `None` for per-tensor parameters.
    pub axis: Option<usize>,
}

impl QParams {
    /// Parameters for observed ranges `min[c] ..= max[c]` (one entry per channel, or one).
    ///
    /// # Panics
    /// If `min` and `max` have different lengths or are empty.
    pub fn from_min_max(min: &[f32], max: &[f32], dtype: QDtype, scheme: QScheme, axis: Option<usize>) -> Self {
        assert!(
            min.len() == max.len() && !min.is_empty(),
            "QParams::from_min_max: {} minima and {} maxima",
            min.len(),
            max.len()
        );
        let (qmin, qmax) = (dtype.qmin(), dtype.qmax());
        let mut scale = Vec::with_capacity(min.len());
        let mut zero_point = Vec::with_capacity(min.len());
        for (&lo, &hi) in min.iter().zip(max) {
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            match scheme {
                QScheme::Symmetric => {
                    let amax = (-lo).max(hi);
                    scale.push((amax / ((qmax - qmin) as f32 / 2.0)).max(f32::EPSILON));
                    zero_point.push((qmin + qmax + 1) / 2);
                }
                QScheme::Affine => {
                    let s = ((hi - lo) / (qmax - qmin) as f32).max(f32::EPSILON);
                    scale.push(s);
                    zero_point.push((qmin - (lo / s).round_ties_even() as i32).clamp(qmin, qmax));
                }
            }
        }
        QParams { dtype, scheme, scale, zero_point, axis }
    }

    /// Number of channels (1 when per-tensor).
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// `clamp(round(x * (1 / scale)) + zero_point, qmin, qmax)` for channel `ch`, rounding half
    /// to even as PyTorch does (`std::nearbyint`).
    #[inline]
    pub fn quantize_value(&self, x: f32, ch: usize) -> i32 {
        self.quantize_unclamped(x, ch).clamp(self.dtype.qmin(), self.dtype.qmax())
    }

    /// `round(x * (1 / scale)) + zero_point` for channel `ch`, rounding half to even, before
    /// clamping to the integer range: PyTorch's expression, so fake quantization and its mask
    /// match `torch.fake_quantize_per_*_affine` bit for bit. The int8 layers round the same f32
    /// product, so every quantizing path (tensors, fake quantization, inference) agrees. NaN
    /// gives `i32::MIN` (below every range, as x86's conversion gives PyTorch) and values past
    /// the i32 range saturate.
    #[inline]
    pub fn quantize_unclamped(&self, x: f32, ch: usize) -> i32 {
        let r = (x * (1.0 / self.scale[ch])).round_ties_even();
        if r.is_nan() {
            i32::MIN
        } else {
            (r as i32).saturating_add(self.zero_point[ch])
        }
    }

    /// `(q - zero_point) * scale` for channel `ch`.
    #[inline]
    pub fn dequantize_value(&self, q: i32, ch: usize) -> f32 {
        (q - self.zero_point[ch]) as f32 * self.scale[ch]
    }

    /// The channel of each element of a contiguous tensor of `shape`: a function of the flat index.
    fn channel_of(&self, shape: &[usize]) -> impl Fn(usize) -> usize {
        let (inner, channels) = match self.axis {
            None => (1, 1),
            Some(a) => {
                assert!(
                    a < shape.len() && shape[a] == self.channels(),
                    "QParams: axis {a} of shape {shape:?} does not have {} channels",
                    self.channels()
                );
                (shape[a + 1..].iter().product::<usize>(), shape[a])
            }
        };
        move |i| (i / inner) % channels
    }
}

/// The integer data of a [`QTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum QData {
    /// Signed 8-bit values.
    I8(Tensor<i8>),
    /// Unsigned 8-bit values.
    U8(Tensor<u8>),
}

/// A quantized tensor: 8-bit integers plus the [`QParams`] that map them back to reals.
///
/// ```
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::quant::{QDtype, QParams, QScheme, QTensor};
/// let x = Tensor::from_vec(vec![-1.0f32, 0.0, 0.5, 2.0], &[2, 2]);
/// let p = QParams::from_min_max(&[-1.0], &[2.0], QDtype::Int8, QScheme::Symmetric, None);
/// let q = QTensor::quantize(&x, p);
/// let back = q.dequantize();
/// for (a, b) in x.to_vec().iter().zip(back.to_vec()) {
///     assert!((a - b).abs() <= 0.5 * q.params().scale[0]);
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    data: QData,
    params: QParams,
}

impl QTensor {
    /// Quantizes `x` with `params`.
    ///
    /// # Panics
    /// If `params` is per-channel and `x`'s size along the axis is not the number of channels.
    pub fn quantize(x: &Tensor<f32>, params: QParams) -> Self {
        let shape = x.shape().to_vec();
        let ch = params.channel_of(&shape);
        let values = x.to_vec();
        let data = match params.dtype {
            QDtype::Int8 => QData::I8(Tensor::from_vec(
                values.iter().enumerate().map(|(i, &v)| params.quantize_value(v, ch(i)) as i8).collect(),
                &shape,
            )),
            QDtype::Uint8 => QData::U8(Tensor::from_vec(
                values.iter().enumerate().map(|(i, &v)| params.quantize_value(v, ch(i)) as u8).collect(),
                &shape,
            )),
        };
        QTensor { data, params }
    }

    /// A quantized tensor from its parts.
    ///
    /// # Panics
    /// If the data type does not match `params.dtype` or the channel count does not match.
    pub fn from_parts(data: QData, params: QParams) -> Self {
        let (dtype, shape) = match &data {
            QData::I8(t) => (QDtype::Int8, t.shape().to_vec()),
            QData::U8(t) => (QDtype::Uint8, t.shape().to_vec()),
        };
        assert_eq!(dtype, params.dtype, "QTensor::from_parts: data type and parameters differ");
        let _ = params.channel_of(&shape);
        QTensor { data, params }
    }

    /// The real values `(q - zero_point) * scale`.
    pub fn dequantize(&self) -> Tensor<f32> {
        let shape = self.shape().to_vec();
        let ch = self.params.channel_of(&shape);
        let ints: Vec<i32> = match &self.data {
            QData::I8(t) => t.to_vec().into_iter().map(i32::from).collect(),
            QData::U8(t) => t.to_vec().into_iter().map(i32::from).collect(),
        };
        Tensor::from_vec(
            ints.iter().enumerate().map(|(i, &q)| self.params.dequantize_value(q, ch(i))).collect(),
            &shape,
        )
    }

    /// The integer data.
    pub fn data(&self) -> &QData {
        &self.data
    }

    /// The quantization parameters.
    pub fn params(&self) -> &QParams {
        &self.params
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match &self.data {
            QData::I8(t) => t.shape(),
            QData::U8(t) => t.shape(),
        }
    }
}
