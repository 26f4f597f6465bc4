//! Metrics against hand-worked examples (zero-division cases included) and against values
//! computed by scikit-learn (`fixtures/gen_metrics.py`, output in `fixtures/metrics_sklearn.rs`).

use ferrograd_tensor::Tensor;
use ferrograd_tuning::metrics::{
    accuracy, confusion_matrix, f1_score, mae, mse, precision, precision_recall_f1, r2, recall, top_k_accuracy,
    Average, ClassOptions, Score, ZeroDivision,
};
use ferrograd_tuning::TuningError;

#[allow(dead_code)]
mod sklearn {
    include!("fixtures/metrics_sklearn.rs");
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12
}

fn assert_close_all(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: {got:?} vs {want:?}");
    assert!(got.iter().zip(want).all(|(&a, &b)| close(a, b)), "{name}: {got:?} vs {want:?}");
}

fn values(s: &Score) -> Vec<f64> {
    match s {
        Score::Scalar(v) => vec![*v],
        Score::PerClass(v) => v.clone(),
    }
}

#[test]
fn precision_recall_f1_match_sklearn() {
    for case in sklearn::PRF_CASES {
        let options = ClassOptions {
            n_classes: case.n_classes,
            average: match case.average {
                "macro" => Average::Macro,
                "micro" => Average::Micro,
                "weighted" => Average::Weighted,
                _ => Average::PerClass,
            },
            zero_division: match case.zero_division {
                "zero" => ZeroDivision::Zero,
                "one" => ZeroDivision::One,
                _ => ZeroDivision::NaN,
            },
        };
        let r = precision_recall_f1(case.y_true, case.y_pred, &options).unwrap();
        let tag = format!("{} {} {} {:?}", case.name, case.average, case.zero_division, case.n_classes);
        assert_close_all(&format!("precision {tag}"), &values(&r.precision), case.precision);
        assert_close_all(&format!("recall {tag}"), &values(&r.recall), case.recall);
        assert_close_all(&format!("f1 {tag}"), &values(&r.f1), case.f1);
    }
}

#[test]
fn accuracy_and_confusion_match_sklearn() {
    for case in sklearn::LABEL_CASES {
        assert!(close(accuracy(case.y_true, case.y_pred).unwrap(), case.accuracy));
        let m = confusion_matrix(case.y_true, case.y_pred, case.n_classes).unwrap();
        assert_eq!(m.shape(), &[case.n_classes, case.n_classes]);
        assert_eq!(m.to_vec(), case.confusion);
    }
}

#[test]
fn top_k_matches_sklearn() {
    for case in sklearn::TOPK_CASES {
        let scores = Tensor::from_slice(case.scores, &[case.y_true.len(), case.n_classes]);
        assert!(close(top_k_accuracy(&scores, case.y_true, case.k).unwrap(), case.accuracy), "k = {}", case.k);
    }
}

#[test]
fn regression_matches_sklearn() {
    for case in sklearn::REGRESSION_CASES {
        assert!(close(mse(case.y_true, case.y_pred).unwrap(), case.mse));
        assert!(close(mae(case.y_true, case.y_pred).unwrap(), case.mae));
        assert!(close(r2(case.y_true, case.y_pred).unwrap(), case.r2));
    }
}

/// R² of a single sample is undefined (its SS_tot is 0 whatever the prediction): scikit-learn's
/// `r2_score` returns NaN with an `UndefinedMetricWarning` for fewer than two samples, before its
/// constant-`y_true` rule could answer 1 or 0 (issue 18, item 11).
#[test]
fn r2_of_one_sample_is_nan_as_in_sklearn() {
    assert!(r2(&[1.0f64], &[1.0f64]).unwrap().is_nan());
    assert!(r2(&[1.0f32], &[3.0f32]).unwrap().is_nan());
    // Two samples are enough, and a constant y_true keeps scikit-learn's force_finite answers.
    assert_eq!(r2(&[1.0f64, 1.0], &[1.0, 1.0]).unwrap(), 1.0);
    assert_eq!(r2(&[1.0f64, 1.0], &[1.0, 2.0]).unwrap(), 0.0);
}

/// y_true = [0, 1, 2, 2], y_pred = [0, 1, 1, 1]: class 0 tp 1; class 1 tp 1, fp 2; class 2 fn 2
/// and never predicted, so its precision is 0/0.
#[test]
fn hand_worked_zero_division() {
    let (t, p) = ([0i64, 1, 2, 2], [0i64, 1, 1, 1]);
    let per_class = |zd| ClassOptions { average: Average::PerClass, zero_division: zd, ..ClassOptions::default() };
    let r = precision_recall_f1(&t, &p, &per_class(ZeroDivision::Zero)).unwrap();
    assert_eq!(r.precision, Score::PerClass(vec![1.0, 1.0 / 3.0, 0.0]));
    assert_eq!(r.recall, Score::PerClass(vec![1.0, 1.0, 0.0]));
    // F1 of class 2 is 2*0 / (0 + 0 + 2) = 0, a real zero, whatever zero_division says.
    assert_eq!(r.f1, Score::PerClass(vec![1.0, 0.5, 0.0]));
    assert_eq!(r.support, vec![1, 1, 2]);
    let r = precision_recall_f1(&t, &p, &per_class(ZeroDivision::One)).unwrap();
    assert_eq!(r.precision, Score::PerClass(vec![1.0, 1.0 / 3.0, 1.0]));
    assert_eq!(r.f1, Score::PerClass(vec![1.0, 0.5, 0.0]));
    let r = precision_recall_f1(&t, &p, &per_class(ZeroDivision::NaN)).unwrap();
    assert!(r.precision.per_class().unwrap()[2].is_nan());
    // Macro precision skips the NaN class: (1 + 1/3) / 2.
    let macro_nan =
        ClassOptions { average: Average::Macro, zero_division: ZeroDivision::NaN, ..ClassOptions::default() };
    let p_macro = precision(&t, &p, &macro_nan).unwrap().scalar().unwrap();
    assert!(close(p_macro, (1.0 + 1.0 / 3.0) / 2.0));
    // Micro: tp 2, fp 2, fn 2 -> 0.5 for all three, and equal to accuracy.
    let micro = ClassOptions::average(Average::Micro);
    assert_eq!(precision(&t, &p, &micro).unwrap(), Score::Scalar(0.5));
    assert_eq!(recall(&t, &p, &micro).unwrap(), Score::Scalar(0.5));
    assert_eq!(f1_score(&t, &p, &micro).unwrap(), Score::Scalar(accuracy(&t, &p).unwrap()));
    // Weighted recall: (1*1 + 1*1 + 2*0) / 4.
    assert_eq!(recall(&t, &p, &ClassOptions::average(Average::Weighted)).unwrap(), Score::Scalar(0.5));
}

/// A class listed by n_classes but absent from both inputs has every ratio 0/0: it counts
/// with the zero-division value in the macro average, and not at all with NaN.
#[test]
fn hand_worked_absent_class() {
    let (t, p) = ([0i64, 0, 1, 1], [0i64, 0, 1, 1]);
    let opts = |zd| ClassOptions { n_classes: Some(3), average: Average::Macro, zero_division: zd };
    assert!(close(f1_score(&t, &p, &opts(ZeroDivision::Zero)).unwrap().scalar().unwrap(), 2.0 / 3.0));
    assert_eq!(f1_score(&t, &p, &opts(ZeroDivision::One)).unwrap(), Score::Scalar(1.0));
    assert_eq!(f1_score(&t, &p, &opts(ZeroDivision::NaN)).unwrap(), Score::Scalar(1.0));
    // Without n_classes only the labels present count.
    assert_eq!(f1_score(&t, &p, &ClassOptions::default()).unwrap(), Score::Scalar(1.0));
}

#[test]
fn tensors_are_accepted() {
    let t = Tensor::from_vec(vec![0i64, 1, 1, 0], &[2, 2]);
    let p = Tensor::from_vec(vec![0i64, 1, 0, 0], &[4]);
    assert_eq!(accuracy(&t, &p).unwrap(), 0.75);
    let yt = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    let yp = Tensor::from_vec(vec![1.0f32, 2.0, 4.0], &[3]);
    assert!(close(mse(&yt, &yp).unwrap(), 1.0 / 3.0));
    assert!(close(mae(&yt, &yp).unwrap(), 1.0 / 3.0));
    assert!(close(r2(&yt, &yp).unwrap(), 0.5));
    // A transposed (non-contiguous) label tensor is read in its logical order.
    let tt = Tensor::from_vec(vec![0i64, 1, 2, 3], &[2, 2]).t();
    assert_eq!(accuracy(&tt, &[0i64, 2, 1, 3]).unwrap(), 1.0);
    // A narrowed (offset) view is read from its offset.
    let view = Tensor::from_vec(vec![9i64, 0, 1], &[3]).narrow(0, 1, 2);
    assert_eq!(accuracy(&view, &[0i64, 1]).unwrap(), 1.0);
}

#[test]
fn top_k_hand_worked_and_ties() {
    let s = Tensor::from_vec(vec![0.1f64, 0.5, 0.4, 0.7, 0.2, 0.1, 0.3, 0.3, 0.3], &[3, 3]);
    assert!(close(top_k_accuracy(&s, &[2, 2, 1], 1).unwrap(), 0.0));
    assert!(close(top_k_accuracy(&s, &[2, 2, 1], 2).unwrap(), 2.0 / 3.0));
    assert!(close(top_k_accuracy(&s, &[2, 2, 1], 3).unwrap(), 1.0));
    assert!(close(top_k_accuracy(&s, &[2, 2, 1], 10).unwrap(), 1.0));
    // A tied row counts the lowest index first, like argmax.
    assert_eq!(top_k_accuracy(&s.narrow(0, 2, 1), &[0], 1).unwrap(), 1.0);
    assert_eq!(top_k_accuracy(&s.narrow(0, 2, 1), &[1], 1).unwrap(), 0.0);
    let argmax = s.argmax(1, false);
    let labels = [0i64, 1, 2];
    assert_eq!(top_k_accuracy(&s, &labels, 1).unwrap(), accuracy(&argmax, &labels).unwrap());
}

#[test]
fn r2_constant_target() {
    assert_eq!(r2(&[3.0, 3.0, 3.0], &[3.0, 3.0, 3.0]).unwrap(), 1.0);
    assert_eq!(r2(&[3.0, 3.0, 3.0], &[3.0, 3.0, 2.0]).unwrap(), 0.0);
    assert!(close(r2(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0]).unwrap(), 0.0));
    assert!(close(r2(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -3.0));
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(matches!(accuracy(&[0i64, 1], &[0i64]), Err(TuningError::LengthMismatch { expected: 2, found: 1, .. })));
    assert!(matches!(accuracy(&[0i64; 0], &[0i64; 0]), Err(TuningError::Empty { .. })));
    assert!(matches!(mse(&[0.0f64; 0], &[0.0f64; 0]), Err(TuningError::Empty { .. })));
    assert!(matches!(r2(&[1.0f32], &[1.0f32, 2.0]), Err(TuningError::LengthMismatch { .. })));
    assert!(matches!(
        confusion_matrix(&[0i64, 3], &[0i64, 1], 3),
        Err(TuningError::LabelOutOfRange { label: 3, n_classes: 3, .. })
    ));
    assert!(matches!(confusion_matrix(&[0i64, -1], &[0i64, 1], 3), Err(TuningError::LabelOutOfRange { .. })));
    let opts = ClassOptions { n_classes: Some(2), ..ClassOptions::default() };
    assert!(matches!(precision(&[0i64, 2], &[0i64, 1], &opts), Err(TuningError::LabelOutOfRange { .. })));
    let s = Tensor::from_vec(vec![0.1f32, 0.9], &[1, 2]);
    assert!(matches!(top_k_accuracy(&s, &[0i64], 0), Err(TuningError::OutOfRange { .. })));
    assert!(matches!(top_k_accuracy(&s, &[2i64], 1), Err(TuningError::LabelOutOfRange { .. })));
    assert!(matches!(top_k_accuracy(&s, &[0i64, 1], 1), Err(TuningError::LengthMismatch { .. })));
    assert!(matches!(top_k_accuracy(&s.reshape(&[2]), &[0i64, 1], 1), Err(TuningError::OutOfRange { .. })));
    let msg = confusion_matrix(&[0i64, 3], &[0i64, 1], 3).unwrap_err().to_string();
    assert_eq!(msg, "confusion_matrix: label 3 is outside 0..3");
}
