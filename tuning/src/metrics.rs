//! Metrics of classification and regression, with scikit-learn's definitions.
//!
//! Labels come as anything implementing [`Labels`] (`[i64]`, `Vec<i64>`, `Tensor<i64>`), real
//! values as anything implementing [`Values`] (slices, vectors and tensors of `f32`/`f64`).
//! Every metric returns a [`TuningError`] on bad data (lengths that differ, no samples, a label
//! out of range) instead of panicking, so a scoring closure can use `?`.
//!
//! Precision, recall and F1 follow `sklearn.metrics.precision_recall_fscore_support`, including
//! its zero-division rule: a ratio whose denominator is zero takes the [`ZeroDivision`] value
//! (0 by default, what scikit-learn returns after its warning).

use std::borrow::Cow;

use ferrograd_tensor::{Element, Float, Tensor};

use crate::TuningError;

/// Class labels, one per sample: `[i64]`, `Vec<i64>`, `[i64; N]` or a `Tensor<i64>` of any shape
/// (read in row-major order).
pub trait Labels {
    /// The labels as a slice (borrowed when possible).
    fn labels(&self) -> Cow<'_, [i64]>;
}

impl Labels for [i64] {
    fn labels(&self) -> Cow<'_, [i64]> {
        Cow::Borrowed(self)
    }
}

impl Labels for Vec<i64> {
    fn labels(&self) -> Cow<'_, [i64]> {
        Cow::Borrowed(self)
    }
}

impl<const N: usize> Labels for [i64; N] {
    fn labels(&self) -> Cow<'_, [i64]> {
        Cow::Borrowed(self)
    }
}

impl Labels for Tensor<i64> {
    fn labels(&self) -> Cow<'_, [i64]> {
        match self.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.to_vec()),
        }
    }
}

/// Real values, one per sample: slices, vectors and arrays of `f32` or `f64`, or a float tensor
/// of any shape (read in row-major order). Regression metrics compute in `f64`.
pub trait Values {
    /// The values widened to `f64`.
    fn values(&self) -> Vec<f64>;
}

impl Values for [f64] {
    fn values(&self) -> Vec<f64> {
        self.to_vec()
    }
}

impl Values for [f32] {
    fn values(&self) -> Vec<f64> {
        self.iter().map(|&v| f64::from(v)).collect()
    }
}

impl Values for Vec<f64> {
    fn values(&self) -> Vec<f64> {
        self.as_slice().values()
    }
}

impl Values for Vec<f32> {
    fn values(&self) -> Vec<f64> {
        self.as_slice().values()
    }
}

impl<const N: usize> Values for [f64; N] {
    fn values(&self) -> Vec<f64> {
        self.as_slice().values()
    }
}

impl<const N: usize> Values for [f32; N] {
    fn values(&self) -> Vec<f64> {
        self.as_slice().values()
    }
}

impl<F: Float> Values for Tensor<F> {
    fn values(&self) -> Vec<f64> {
        self.to_vec().into_iter().map(Element::to_f64).collect()
    }
}

/// How per-class precision, recall or F1 are combined (scikit-learn's `average`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Average {
    /// The unweighted mean over classes.
    #[default]
    Macro,
    /// The ratio of the summed true positives, false positives and false negatives over classes
    /// (for single-label data, micro precision = micro recall = micro F1 = accuracy).
    Micro,
    /// The mean over classes weighted by each class's support (its count in `y_true`).
    Weighted,
    /// No averaging: one value per class (scikit-learn's `average=None`).
    PerClass,
}

/// The value a ratio takes when its denominator is zero (scikit-learn's `zero_division`).
///
/// Precision of a class never predicted, recall of a class absent from `y_true`, and F1 of a
/// class neither predicted nor present are such ratios. With [`ZeroDivision::NaN`], averages
/// skip the NaN classes (NaN only if every class is NaN), like scikit-learn.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum ZeroDivision {
    /// 0, scikit-learn's default (`"warn"`), without the warning.
    #[default]
    Zero,
    /// 1.
    One,
    /// NaN, left out of averages.
    NaN,
}

impl ZeroDivision {
    fn value(self) -> f64 {
        match self {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::NaN => f64::NAN,
        }
    }
}

/// Options of [`precision`], [`recall`], [`f1_score`] and [`precision_recall_f1`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct ClassOptions {
    /// The classes are `0..n`; `None` takes the sorted labels present in `y_true` or `y_pred`
    /// (scikit-learn's default `labels=None`). A class listed but absent from both counts in
    /// the macro average with its zero-division value.
    pub n_classes: Option<usize>,
    /// How classes are combined.
    pub average: Average,
    /// The value of a ratio with a zero denominator.
    pub zero_division: ZeroDivision,
}

impl ClassOptions {
    /// Options with this averaging and the defaults otherwise.
    pub fn average(average: Average) -> Self {
        ClassOptions { average, ..Self::default() }
    }
}

/// A metric's value: one number, or one per class with [`Average::PerClass`].
#[derive(Clone, Debug, PartialEq)]
pub enum Score {
    /// An averaged value.
    Scalar(f64),
    /// One value per class, in the order of [`PrecisionRecallF1::classes`].
    PerClass(Vec<f64>),
}

impl Score {
    /// The averaged value, or `None` for per-class scores.
    pub fn scalar(&self) -> Option<f64> {
        match self {
            Score::Scalar(v) => Some(*v),
            Score::PerClass(_) => None,
        }
    }

    /// The per-class values, or `None` for an averaged score.
    pub fn per_class(&self) -> Option<&[f64]> {
        match self {
            Score::Scalar(_) => None,
            Score::PerClass(v) => Some(v),
        }
    }
}

/// Precision, recall and F1 computed together, with the classes and their supports.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionRecallF1 {
    /// The classes the per-class values refer to.
    pub classes: Vec<i64>,
    /// Precision: `tp / (tp + fp)`.
    pub precision: Score,
    /// Recall: `tp / (tp + fn)`.
    pub recall: Score,
    /// F1: `2 tp / (2 tp + fp + fn)`, the harmonic mean of precision and recall.
    pub f1: Score,
    /// The number of samples of each class in `y_true`.
    pub support: Vec<usize>,
}

/// Both label sequences of a metric, borrowed when possible.
type LabelPair<'a> = (Cow<'a, [i64]>, Cow<'a, [i64]>);

fn check_pair<'a>(
    op: &'static str,
    y_true: &'a (impl Labels + ?Sized),
    y_pred: &'a (impl Labels + ?Sized),
) -> Result<LabelPair<'a>, TuningError> {
    let (t, p) = (y_true.labels(), y_pred.labels());
    if t.len() != p.len() {
        return Err(TuningError::LengthMismatch { op, what: "y_pred", expected: t.len(), found: p.len() });
    }
    if t.is_empty() {
        return Err(TuningError::Empty { op });
    }
    Ok((t, p))
}

/// The fraction of samples whose predicted label equals the true one.
///
/// ```
/// use ferrograd_tuning::metrics::accuracy;
/// assert_eq!(accuracy(&[0, 1, 2, 2], &[0, 2, 2, 2]).unwrap(), 0.75);
/// ```
///
/// # Errors
/// Inputs of different lengths, or no samples.
pub fn accuracy(y_true: &(impl Labels + ?Sized), y_pred: &(impl Labels + ?Sized)) -> Result<f64, TuningError> {
    let (t, p) = check_pair("accuracy", y_true, y_pred)?;
    Ok(t.iter().zip(p.iter()).filter(|(a, b)| a == b).count() as f64 / t.len() as f64)
}

/// The fraction of samples whose true label is among the `k` highest scores of its row of
/// `scores` (`[n_samples, n_classes]`, logits or probabilities).
///
/// Ties are broken toward the lower class index, like `argmax`, so `k = 1` gives the accuracy
/// of `scores.argmax(1)`. (scikit-learn's `top_k_accuracy_score` breaks ties the other way;
/// the two agree whenever the scores are distinct.) `k >= n_classes` gives 1.
///
/// ```
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::metrics::top_k_accuracy;
/// let scores = Tensor::from_vec(vec![0.1f32, 0.5, 0.4, 0.7, 0.2, 0.1], &[2, 3]);
/// assert_eq!(top_k_accuracy(&scores, &[2, 1], 1).unwrap(), 0.0);
/// assert_eq!(top_k_accuracy(&scores, &[2, 1], 2).unwrap(), 1.0);
/// ```
///
/// # Errors
/// `scores` not of rank 2, a label count other than its rows, no samples, `k = 0`, or a label
/// outside `0..n_classes`.
pub fn top_k_accuracy<F: Float>(
    scores: &Tensor<F>,
    y_true: &(impl Labels + ?Sized),
    k: usize,
) -> Result<f64, TuningError> {
    const OP: &str = "top_k_accuracy";
    if scores.rank() != 2 {
        return Err(TuningError::OutOfRange {
            op: OP,
            name: "scores.rank()",
            value: scores.rank().to_string(),
            expected: "scores must be [n_samples, n_classes]",
        });
    }
    if k == 0 {
        return Err(TuningError::OutOfRange { op: OP, name: "k", value: "0".into(), expected: "k >= 1" });
    }
    let (n, c) = (scores.shape()[0], scores.shape()[1]);
    let t = y_true.labels();
    if t.len() != n {
        return Err(TuningError::LengthMismatch { op: OP, what: "y_true", expected: n, found: t.len() });
    }
    if n == 0 {
        return Err(TuningError::Empty { op: OP });
    }
    let s = scores.contiguous().to_vec();
    let mut hits = 0usize;
    for (row, &label) in s.chunks(c.max(1)).zip(t.iter()) {
        let y = class_index(OP, label, c)?;
        let target = row[y];
        // The label's rank: classes scoring higher, plus tied classes with a lower index.
        let ahead = row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < y)).count();
        if ahead < k {
            hits += 1;
        }
    }
    Ok(hits as f64 / n as f64)
}

fn class_index(op: &'static str, label: i64, n_classes: usize) -> Result<usize, TuningError> {
    usize::try_from(label).ok().filter(|&l| l < n_classes).ok_or(TuningError::LabelOutOfRange { op, label, n_classes })
}

/// The confusion matrix `[n_classes, n_classes]`: entry `(i, j)` counts the samples of true
/// class `i` predicted as class `j` (scikit-learn's orientation: rows are truths).
///
/// ```
/// use ferrograd_tuning::metrics::confusion_matrix;
/// let m = confusion_matrix(&[0, 1, 1, 2], &[0, 1, 2, 2], 3).unwrap();
/// assert_eq!(m.to_vec(), vec![1, 0, 0, 0, 1, 1, 0, 0, 1]);
/// ```
///
/// # Errors
/// Inputs of different lengths, no samples, or a label outside `0..n_classes`.
pub fn confusion_matrix(
    y_true: &(impl Labels + ?Sized),
    y_pred: &(impl Labels + ?Sized),
    n_classes: usize,
) -> Result<Tensor<i64>, TuningError> {
    const OP: &str = "confusion_matrix";
    let (t, p) = check_pair(OP, y_true, y_pred)?;
    let mut m = vec![0i64; n_classes * n_classes];
    for (&a, &b) in t.iter().zip(p.iter()) {
        let (i, j) = (class_index(OP, a, n_classes)?, class_index(OP, b, n_classes)?);
        m[i * n_classes + j] += 1;
    }
    Ok(Tensor::from_vec(m, &[n_classes, n_classes]))
}

/// Precision, recall and F1 in one pass, as `sklearn.metrics.precision_recall_fscore_support`
/// with `beta = 1`.
///
/// ```
/// use ferrograd_tuning::metrics::{precision_recall_f1, Average, ClassOptions, Score};
/// // Class 2 is never predicted: its precision is 0/0, which counts as 0.
/// let r = precision_recall_f1(&[0, 1, 2], &[0, 1, 1], &ClassOptions::average(Average::PerClass)).unwrap();
/// assert_eq!(r.precision, Score::PerClass(vec![1.0, 0.5, 0.0]));
/// assert_eq!(r.recall, Score::PerClass(vec![1.0, 1.0, 0.0]));
/// ```
///
/// # Errors
/// Inputs of different lengths, no samples, or (with `n_classes` set) a label outside
/// `0..n_classes`.
pub fn precision_recall_f1(
    y_true: &(impl Labels + ?Sized),
    y_pred: &(impl Labels + ?Sized),
    options: &ClassOptions,
) -> Result<PrecisionRecallF1, TuningError> {
    const OP: &str = "precision_recall_f1";
    let (t, p) = check_pair(OP, y_true, y_pred)?;
    let classes: Vec<i64> = match options.n_classes {
        Some(n) => {
            for &l in t.iter().chain(p.iter()) {
                class_index(OP, l, n)?;
            }
            (0..n as i64).collect()
        }
        None => {
            let mut c: Vec<i64> = t.iter().chain(p.iter()).copied().collect();
            c.sort_unstable();
            c.dedup();
            c
        }
    };
    let position = |l: i64| classes.binary_search(&l).expect("every label is a class");
    let k = classes.len();
    let (mut tp, mut fp, mut fnn, mut support) = (vec![0usize; k], vec![0usize; k], vec![0usize; k], vec![0usize; k]);
    for (&a, &b) in t.iter().zip(p.iter()) {
        let (i, j) = (position(a), position(b));
        support[i] += 1;
        if i == j {
            tp[i] += 1;
        } else {
            fp[j] += 1;
            fnn[i] += 1;
        }
    }
    let zd = options.zero_division.value();
    let ratio = |num: usize, den: usize| if den == 0 { zd } else { num as f64 / den as f64 };
    let per_class = |f: &dyn Fn(usize, usize, usize) -> (usize, usize)| -> Vec<f64> {
        (0..k)
            .map(|c| {
                let (num, den) = f(tp[c], fp[c], fnn[c]);
                ratio(num, den)
            })
            .collect()
    };
    let prec_of = |tp: usize, fp: usize, _fn: usize| (tp, tp + fp);
    let rec_of = |tp: usize, _fp: usize, fnn: usize| (tp, tp + fnn);
    let f1_of = |tp: usize, fp: usize, fnn: usize| (2 * tp, 2 * tp + fp + fnn);
    let combine = |f: &dyn Fn(usize, usize, usize) -> (usize, usize)| -> Score {
        match options.average {
            Average::PerClass => Score::PerClass(per_class(f)),
            Average::Micro => {
                let (num, den) = f(tp.iter().sum(), fp.iter().sum(), fnn.iter().sum());
                Score::Scalar(ratio(num, den))
            }
            Average::Macro => Score::Scalar(nan_average(&per_class(f), None)),
            Average::Weighted => Score::Scalar(nan_average(&per_class(f), Some(&support))),
        }
    };
    Ok(PrecisionRecallF1 {
        precision: combine(&prec_of),
        recall: combine(&rec_of),
        f1: combine(&f1_of),
        classes,
        support,
    })
}

/// The (weighted) mean of the non-NaN values, NaN if every value is NaN (scikit-learn's
/// `_nanaverage`: when the remaining weights sum to zero it falls back to the plain mean).
fn nan_average(values: &[f64], weights: Option<&[usize]>) -> f64 {
    let kept: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (v, weights.map_or(1.0, |w| w[i] as f64)))
        .collect();
    if kept.is_empty() {
        return f64::NAN;
    }
    let total: f64 = kept.iter().map(|(_, w)| w).sum();
    if total == 0.0 {
        kept.iter().map(|(v, _)| v).sum::<f64>() / kept.len() as f64
    } else {
        kept.iter().map(|(v, w)| v * w).sum::<f64>() / total
    }
}

/// Precision, `tp / (tp + fp)`, combined over classes as `options.average` says.
///
/// ```
/// use ferrograd_tuning::metrics::{precision, Average, ClassOptions};
/// let p = precision(&[0, 0, 1, 1], &[0, 1, 1, 1], &ClassOptions::average(Average::Macro)).unwrap();
/// assert!((p.scalar().unwrap() - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
/// ```
///
/// # Errors
/// As [`precision_recall_f1`].
pub fn precision(
    y_true: &(impl Labels + ?Sized),
    y_pred: &(impl Labels + ?Sized),
    options: &ClassOptions,
) -> Result<Score, TuningError> {
    Ok(precision_recall_f1(y_true, y_pred, options)?.precision)
}

/// Recall, `tp / (tp + fn)`, combined over classes as `options.average` says.
///
/// # Errors
/// As [`precision_recall_f1`].
pub fn recall(
    y_true: &(impl Labels + ?Sized),
    y_pred: &(impl Labels + ?Sized),
    options: &ClassOptions,
) -> Result<Score, TuningError> {
    Ok(precision_recall_f1(y_true, y_pred, options)?.recall)
}

/// F1, `2 tp / (2 tp + fp + fn)`, combined over classes as `options.average` says.
///
/// # Errors
/// As [`precision_recall_f1`].
pub fn f1_score(
    y_true: &(impl Labels + ?Sized),
    y_pred: &(impl Labels + ?Sized),
    options: &ClassOptions,
) -> Result<Score, TuningError> {
    Ok(precision_recall_f1(y_true, y_pred, options)?.f1)
}

fn check_values(
    op: &'static str,
    y_true: &(impl Values + ?Sized),
    y_pred: &(impl Values + ?Sized),
) -> Result<(Vec<f64>, Vec<f64>), TuningError> {
    let (t, p) = (y_true.values(), y_pred.values());
    if t.len() != p.len() {
        return Err(TuningError::LengthMismatch { op, what: "y_pred", expected: t.len(), found: p.len() });
    }
    if t.is_empty() {
        return Err(TuningError::Empty { op });
    }
    Ok((t, p))
}

/// Mean squared error, `mean((y_true - y_pred)^2)`.
///
/// ```
/// use ferrograd_tuning::metrics::mse;
/// assert_eq!(mse(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]).unwrap(), 4.0 / 3.0);
/// ```
///
/// # Errors
/// Inputs of different lengths, or no samples.
pub fn mse(y_true: &(impl Values + ?Sized), y_pred: &(impl Values + ?Sized)) -> Result<f64, TuningError> {
    let (t, p) = check_values("mse", y_true, y_pred)?;
    Ok(t.iter().zip(&p).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / t.len() as f64)
}

/// Mean absolute error, `mean(|y_true - y_pred|)`.
///
/// # Errors
/// Inputs of different lengths, or no samples.
pub fn mae(y_true: &(impl Values + ?Sized), y_pred: &(impl Values + ?Sized)) -> Result<f64, TuningError> {
    let (t, p) = check_values("mae", y_true, y_pred)?;
    Ok(t.iter().zip(&p).map(|(a, b)| (a - b).abs()).sum::<f64>() / t.len() as f64)
}

/// The coefficient of determination, `1 - SS_res / SS_tot`.
///
/// A constant `y_true` makes `SS_tot` zero; like scikit-learn (`force_finite=True`) the score
/// is then 1 for perfect predictions and 0 otherwise, rather than NaN or -inf. With a single
/// sample R² is undefined and the score is NaN, as scikit-learn returns (with its
/// `UndefinedMetricWarning`).
///
/// ```
/// use ferrograd_tuning::metrics::r2;
/// assert_eq!(r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap(), 1.0);
/// assert_eq!(r2(&[2.0, 2.0], &[2.0, 3.0]).unwrap(), 0.0);
/// assert!(r2(&[2.0], &[2.0]).unwrap().is_nan());
/// ```
///
/// # Errors
/// Inputs of different lengths, or no samples.
pub fn r2(y_true: &(impl Values + ?Sized), y_pred: &(impl Values + ?Sized)) -> Result<f64, TuningError> {
    let (t, p) = check_values("r2", y_true, y_pred)?;
    if t.len() < 2 {
        return Ok(f64::NAN);
    }
    let mean = t.iter().sum::<f64>() / t.len() as f64;
    let ss_res: f64 = t.iter().zip(&p).map(|(a, b)| (a - b) * (a - b)).sum();
    let ss_tot: f64 = t.iter().map(|a| (a - mean) * (a - mean)).sum();
    Ok(if ss_tot != 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_res == 0.0 {
        1.0
    } else {
        0.0
    })
}
