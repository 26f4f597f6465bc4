//! Observers: record the range of the values a tensor takes and turn it into [`QParams`].

use ferrograd_tensor::Tensor;

use super::qtensor::{QDtype, QParams, QScheme};

/// Watches tensors (weights once, activations over calibration batches) and proposes parameters.
pub trait Observer {
    /// Records one tensor.
    fn observe(&mut self, x: &Tensor<f32>);
    /// Parameters for the range seen so far.
    ///
    /// # Panics
    /// If nothing was observed.
    fn qparams(&self) -> QParams;
}

/// What an observer produces: integer type, scheme, and per-tensor (`axis: None`) or per-channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverConfig {
    /// Integer type.
    pub dtype: QDtype,
    /// Scheme.
    pub scheme: QScheme,
    /// Channel axis for per-channel parameters.
    pub axis: Option<usize>,
}

impl ObserverConfig {
    /// Affine uint8 per tensor: activations.
    pub fn activations() -> Self {
        ObserverConfig { dtype: QDtype::Uint8, scheme: QScheme::Affine, axis: None }
    }

    /// Symmetric int8 per output channel (axis 0): weights.
    pub fn weights() -> Self {
        ObserverConfig { dtype: QDtype::Int8, scheme: QScheme::Symmetric, axis: Some(0) }
    }
}

/// Per-channel (or whole-tensor) minima and maxima of `x`.
///
/// # Panics
/// If `axis` is out of range or `x` is empty.
pub fn channel_min_max(x: &Tensor<f32>, axis: Option<usize>) -> (Vec<f32>, Vec<f32>) {
    assert!(x.numel() > 0, "channel_min_max: empty tensor of shape {:?}", x.shape());
    let (channels, inner) = match axis {
        None => (1, 1),
        Some(a) => {
            assert!(a < x.rank(), "channel_min_max: axis {a} out of range for shape {:?}", x.shape());
            (x.shape()[a], x.shape()[a + 1..].iter().product())
        }
    };
    let mut lo = vec![f32::INFINITY; channels];
    let mut hi = vec![f32::NEG_INFINITY; channels];
    for (i, v) in x.to_vec().into_iter().enumerate() {
        let c = (i / inner) % channels;
        lo[c] = lo[c].min(v);
        hi[c] = hi[c].max(v);
    }
    (lo, hi)
}

/// The running minimum and maximum (PyTorch's `MinMaxObserver` / `PerChannelMinMaxObserver`).
///
/// ```
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::quant::{MinMaxObserver, Observer, ObserverConfig};
/// let mut obs = MinMaxObserver::new(ObserverConfig::activations());
/// obs.observe(&Tensor::from_vec(vec![0.0f32, 2.0], &[2]));
/// obs.observe(&Tensor::from_vec(vec![-0.55f32, 1.0], &[2]));
/// assert_eq!(obs.range(), (vec![-0.55], vec![2.0]));
/// ```
#[derive(Clone, Debug)]
pub struct MinMaxObserver {
    config: ObserverConfig,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl MinMaxObserver {
    /// An observer that has seen nothing.
    pub fn new(config: ObserverConfig) -> Self {
        MinMaxObserver { config, min: Vec::new(), max: Vec::new() }
    }

    /// The range seen so far, per channel.
    pub fn range(&self) -> (Vec<f32>, Vec<f32>) {
        (self.min.clone(), self.max.clone())
    }
}

impl Observer for MinMaxObserver {
    fn observe(&mut self, x: &Tensor<f32>) {
        let (lo, hi) = channel_min_max(x, self.config.axis);
        if self.min.is_empty() {
            (self.min, self.max) = (lo, hi);
        } else {
            self.min.iter_mut().zip(lo).for_each(|(m, v)| *m = m.min(v));
            self.max.iter_mut().zip(hi).for_each(|(m, v)| *m = m.max(v));
        }
    }

    fn qparams(&self) -> QParams {
        assert!(!self.min.is_empty(), "MinMaxObserver::qparams: nothing observed");
        let c = self.config;
        QParams::from_min_max(&self.min, &self.max, c.dtype, c.scheme, c.axis)
    }
}

/// An exponential moving average of each batch's minimum and maximum
/// (`min += c * (batch_min - min)`), PyTorch's `MovingAverageMinMaxObserver`; the first batch
/// sets the range.
#[derive(Clone, Debug)]
pub struct MovingAverageMinMaxObserver {
    inner: MinMaxObserver,
    averaging_constant: f32,
}

impl MovingAverageMinMaxObserver {
    /// An observer with averaging constant `c` in `(0, 1]` (PyTorch's default is 0.01).
    ///
    /// # Panics
    /// If `c` is outside `(0, 1]`.
    pub fn new(config: ObserverConfig, averaging_constant: f32) -> Self {
        assert!(
            averaging_constant > 0.0 && averaging_constant <= 1.0,
            "MovingAverageMinMaxObserver: averaging constant {averaging_constant} not in (0, 1]"
        );
        MovingAverageMinMaxObserver { inner: MinMaxObserver::new(config), averaging_constant }
    }

    /// The averaged range, per channel.
    pub fn range(&self) -> (Vec<f32>, Vec<f32>) {
        self.inner.range()
    }
}

impl Observer for MovingAverageMinMaxObserver {
    fn observe(&mut self, x: &Tensor<f32>) {
        let (lo, hi) = channel_min_max(x, self.inner.config.axis);
        let c = self.averaging_constant;
        if self.inner.min.is_empty() {
            (self.inner.min, self.inner.max) = (lo, hi);
        } else {
            self.inner.min.iter_mut().zip(lo).for_each(|(m, v)| *m += c * (v - *m));
            self.inner.max.iter_mut().zip(hi).for_each(|(m, v)| *m += c * (v - *m));
        }
    }

    fn qparams(&self) -> QParams {
        self.inner.qparams()
    }
}

/// Clips outliers: the range is the `percentile`-th and `(100 - percentile)`-th percentiles of
/// each batch (exact, by selection), averaged over batches. Per tensor only.
///
/// With `percentile = 100` it is the mean over batches of the batch minima and maxima.
#[derive(Clone, Debug)]
pub struct PercentileObserver {
    config: ObserverConfig,
    percentile: f64,
    sum_lo: f64,
    sum_hi: f64,
    batches: usize,
}

impl PercentileObserver {
    /// An observer keeping the central range up to `percentile` (e.g. 99.99).
    ///
    /// # Panics
    /// If `config.axis` is set or `percentile` is not in `(50, 100]`.
    pub fn new(config: ObserverConfig, percentile: f64) -> Self {
        assert!(config.axis.is_none(), "PercentileObserver: per-tensor only, got axis {:?}", config.axis);
        assert!(
            percentile > 50.0 && percentile <= 100.0,
            "PercentileObserver: percentile {percentile} not in (50, 100]"
        );
        PercentileObserver { config, percentile, sum_lo: 0.0, sum_hi: 0.0, batches: 0 }
    }

    /// The averaged `(low, high)` percentiles.
    pub fn range(&self) -> (f32, f32) {
        let n = self.batches.max(1) as f64;
        ((self.sum_lo / n) as f32, (self.sum_hi / n) as f32)
    }
}

/// The value of rank `round(p / 100 * (n - 1))` in ascending order (nearest-rank percentile).
pub fn percentile(values: &mut [f32], p: f64) -> f32 {
    assert!(!values.is_empty(), "percentile: no values");
    let k = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    *values.select_nth_unstable_by(k, f32::total_cmp).1
}

impl Observer for PercentileObserver {
    fn observe(&mut self, x: &Tensor<f32>) {
        let mut v = x.to_vec();
        assert!(!v.is_empty(), "PercentileObserver: empty tensor");
        self.sum_hi += f64::from(percentile(&mut v, self.percentile));
        self.sum_lo += f64::from(percentile(&mut v, 100.0 - self.percentile));
        self.batches += 1;
    }

    fn qparams(&self) -> QParams {
        assert!(self.batches > 0, "PercentileObserver::qparams: nothing observed");
        let (lo, hi) = self.range();
        QParams::from_min_max(&[lo], &[hi], self.config.dtype, self.config.scheme, None)
    }
}
