//! Metrics the [`Learner`](crate::Learner) accumulates over an epoch, batch by batch.
//!
//! A [`Metric`] sees each batch's output and targets ([`Metric::update`]) and gives one number
//! for the epoch ([`Metric::compute`]); the Learner keeps one copy for training and one for
//! validation (logged as `name` and `val_name`). Its running state is a few numbers
//! ([`Metric::state`]) so a resumed run continues the epoch's figures where it stopped.
//! scikit-learn-style metrics over whole arrays (F1, confusion matrices) live in
//! `ferrograd_tuning::metrics`; a metric that needs them collects predictions here and calls
//! them in `compute`.

use ferrograd_tensor::{Element, Float, Tensor};

/// A figure accumulated over the batches of an epoch.
///
/// ```
/// use ferrograd_tensor::Tensor;
/// use ferrograd_train::{Accuracy, Metric};
/// let mut acc = Accuracy::new();
/// let logits = Tensor::from_vec(vec![0.1f32, 0.9, 0.8, 0.2], &[2, 2]);
/// acc.update(&logits, &Tensor::from_vec(vec![1i64, 1], &[2]));
/// acc.update(&logits, &Tensor::from_vec(vec![1i64, 0], &[2]));
/// assert_eq!(Metric::<f32>::compute(&acc), 0.75); // Accuracy is a metric for every float type
/// ```
pub trait Metric<F: Float = f32, Y: Element = i64> {
    /// The name in the logs (`accuracy`; validation adds `val_`).
    fn name(&self) -> &str;
    /// Forgets the epoch so far.
    fn reset(&mut self);
    /// Adds one batch: the model's output and the targets.
    fn update(&mut self, output: &Tensor<F>, targets: &Tensor<Y>);
    /// The value over the batches seen since the last reset (NaN before any).
    fn compute(&self) -> f64;
    /// The running state as numbers (saved in a run directory mid-epoch).
    fn state(&self) -> Vec<f64>;
    /// Restores [`Metric::state`]; `false` if `state` is not one this metric wrote.
    fn load_state(&mut self, state: &[f64]) -> bool;
}

fn load_counts(into: &mut [f64], state: &[f64]) -> bool {
    if state.len() != into.len() || state.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return false;
    }
    into.copy_from_slice(state);
    true
}

#[track_caller]
fn check_rows<F: Float, Y: Element>(op: &str, output: &Tensor<F>, targets: &Tensor<Y>) {
    assert!(
        output.rank() == 2 && targets.rank() == 1 && output.shape()[0] == targets.shape()[0],
        "{op}: expects outputs [batch, classes] and class indices [batch], got {:?} and {:?}",
        output.shape(),
        targets.shape()
    );
}

/// The fraction of samples whose highest-scoring class (`argmax` over dim 1 of `[batch,
/// classes]` outputs; ties go to the lower index) is the target class.
#[derive(Clone, Debug, Default)]
pub struct Accuracy {
    counts: [f64; 2],
}

impl Accuracy {
    /// A metric named `accuracy`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<F: Float> Metric<F, i64> for Accuracy {
    fn name(&self) -> &str {
        "accuracy"
    }
    fn reset(&mut self) {
        self.counts = [0.0; 2];
    }
    #[track_caller]
    fn update(&mut self, output: &Tensor<F>, targets: &Tensor<i64>) {
        check_rows("Accuracy", output, targets);
        let hits = output.argmax(1, false).eq(targets).to_vec().iter().filter(|&&b| b).count();
        self.counts[0] += hits as f64;
        self.counts[1] += targets.numel() as f64;
    }
    fn compute(&self) -> f64 {
        self.counts[0] / self.counts[1]
    }
    fn state(&self) -> Vec<f64> {
        self.counts.to_vec()
    }
    fn load_state(&mut self, state: &[f64]) -> bool {
        load_counts(&mut self.counts, state)
    }
}

/// The fraction of samples whose target class is among the `k` highest-scoring ones (ties
/// broken toward the lower class index, as `argmax`), named `top{k}_accuracy`.
#[derive(Clone, Debug)]
pub struct TopKAccuracy {
    k: usize,
    name: String,
    counts: [f64; 2],
}

impl TopKAccuracy {
    /// Top-`k` accuracy.
    ///
    /// # Panics
    /// If `k` is 0.
    #[track_caller]
    pub fn new(k: usize) -> Self {
        assert!(k > 0, "TopKAccuracy: k must be at least 1");
        TopKAccuracy { k, name: format!("top{k}_accuracy"), counts: [0.0; 2] }
    }
}

impl<F: Float> Metric<F, i64> for TopKAccuracy {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.counts = [0.0; 2];
    }
    #[track_caller]
    fn update(&mut self, output: &Tensor<F>, targets: &Tensor<i64>) {
        check_rows("TopKAccuracy", output, targets);
        let c = output.shape()[1];
        let scores = output.contiguous().to_vec();
        for (row, &label) in scores.chunks(c.max(1)).zip(targets.to_vec().iter()) {
            let y = usize::try_from(label).ok().filter(|&l| l < c).unwrap_or_else(|| {
                panic!("TopKAccuracy: target class {label} is outside 0..{c}");
            });
            let target = row[y];
            let ahead = row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < y)).count();
            self.counts[0] += f64::from(u8::from(ahead < self.k));
        }
        self.counts[1] += targets.numel() as f64;
    }
    fn compute(&self) -> f64 {
        self.counts[0] / self.counts[1]
    }
    fn state(&self) -> Vec<f64> {
        self.counts.to_vec()
    }
    fn load_state(&mut self, state: &[f64]) -> bool {
        load_counts(&mut self.counts, state)
    }
}

/// Which mean error a [`MeanError`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    Squared,
    Absolute,
}

/// The mean squared (`mse`) or absolute (`mae`) difference between outputs and targets of the
/// same shape, over every element of the epoch.
#[derive(Clone, Debug)]
pub struct MeanError {
    kind: ErrorKind,
    sums: [f64; 2],
}

impl MeanError {
    /// The mean squared error, named `mse`.
    pub fn squared() -> Self {
        MeanError { kind: ErrorKind::Squared, sums: [0.0; 2] }
    }

    /// The mean absolute error, named `mae`.
    pub fn absolute() -> Self {
        MeanError { kind: ErrorKind::Absolute, sums: [0.0; 2] }
    }
}

impl<F: Float> Metric<F, F> for MeanError {
    fn name(&self) -> &str {
        match self.kind {
            ErrorKind::Squared => "mse",
            ErrorKind::Absolute => "mae",
        }
    }
    fn reset(&mut self) {
        self.sums = [0.0; 2];
    }
    #[track_caller]
    fn update(&mut self, output: &Tensor<F>, targets: &Tensor<F>) {
        assert_eq!(
            output.shape(),
            targets.shape(),
            "MeanError: outputs {:?} and targets {:?} must have the same shape",
            output.shape(),
            targets.shape()
        );
        let (o, t) = (output.to_vec(), targets.to_vec());
        let sum: f64 = o
            .iter()
            .zip(&t)
            .map(|(&a, &b)| {
                let d = a.to_f64() - b.to_f64();
                match self.kind {
                    ErrorKind::Squared => d * d,
                    ErrorKind::Absolute => d.abs(),
                }
            })
            .sum();
        self.sums[0] += sum;
        self.sums[1] += o.len() as f64;
    }
    fn compute(&self) -> f64 {
        self.sums[0] / self.sums[1]
    }
    fn state(&self) -> Vec<f64> {
        self.sums.to_vec()
    }
    fn load_state(&mut self, state: &[f64]) -> bool {
        load_counts(&mut self.sums, state)
    }
}

/// The sample-weighted mean of per-batch values (the Learner's `loss` and the extra values a
/// step logs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Mean {
    sum: f64,
    count: f64,
}

impl Mean {
    pub(crate) fn add(&mut self, value: f64, weight: usize) {
        self.sum += value * weight as f64;
        self.count += weight as f64;
    }
    pub(crate) fn value(&self) -> f64 {
        self.sum / self.count
    }
    pub(crate) fn state(&self) -> [f64; 2] {
        [self.sum, self.count]
    }
    pub(crate) fn from_state(s: [f64; 2]) -> Self {
        Mean { sum: s[0], count: s[1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor<f32> {
        Tensor::from_vec(v, shape)
    }

    #[test]
    fn accuracy_over_batches_is_the_pooled_fraction() {
        let mut m = Accuracy::new();
        Metric::<f32, i64>::update(&mut m, &t(vec![1.0, 0.0, 0.0, 1.0], &[2, 2]), &Tensor::from_vec(vec![0, 0], &[2]));
        Metric::<f32, i64>::update(&mut m, &t(vec![1.0, 0.0], &[1, 2]), &Tensor::from_vec(vec![0], &[1]));
        assert_eq!(Metric::<f32, i64>::compute(&m), 2.0 / 3.0);
        let state = Metric::<f32, i64>::state(&m);
        let mut fresh = Accuracy::new();
        assert!(Metric::<f32, i64>::load_state(&mut fresh, &state));
        assert_eq!(Metric::<f32, i64>::compute(&fresh), 2.0 / 3.0);
        assert!(!Metric::<f32, i64>::load_state(&mut fresh, &[1.0]));
        Metric::<f32, i64>::reset(&mut m);
        assert!(Metric::<f32, i64>::compute(&m).is_nan());
    }

    #[test]
    fn top_k_ties_go_to_the_lower_index() {
        // Row 0: target 2 ties with class 0 and 1 -> rank 2 (two classes ahead).
        let out = t(vec![0.5, 0.5, 0.5, 0.1, 0.9, 0.3], &[2, 3]);
        let y = Tensor::from_vec(vec![2i64, 2], &[2]);
        let mut top2 = TopKAccuracy::new(2);
        Metric::<f32, i64>::update(&mut top2, &out, &y);
        assert_eq!(Metric::<f32, i64>::compute(&top2), 0.5);
        let mut top3 = TopKAccuracy::new(3);
        Metric::<f32, i64>::update(&mut top3, &out, &y);
        assert_eq!(Metric::<f32, i64>::compute(&top3), 1.0);
    }

    #[test]
    fn mean_errors() {
        let mut mse = MeanError::squared();
        let mut mae = MeanError::absolute();
        let (o, y) = (t(vec![1.0, 2.0, 4.0], &[3]), t(vec![1.0, 0.0, 1.0], &[3]));
        Metric::<f32, f32>::update(&mut mse, &o, &y);
        Metric::<f32, f32>::update(&mut mae, &o, &y);
        assert_eq!(Metric::<f32, f32>::compute(&mse), 13.0 / 3.0);
        assert_eq!(Metric::<f32, f32>::compute(&mae), 5.0 / 3.0);
    }
}
