//! Cross-validation splitters: scikit-learn's folds where there is no shuffling
//! (`fixtures/gen_cv.py`, output in `fixtures/cv_sklearn.rs`), and the properties a splitter
//! owes its user over random sizes: every sample tested exactly once, class proportions kept,
//! groups never split, same seed same folds.

use std::collections::{BTreeMap, BTreeSet};

use ferrograd_tuning::cv::{
    bootstrap_632, cross_validate, train_test_split, Bootstrap, Fold, GroupKFold, KFold, RepeatedKFold, ShuffleSplit,
    Splitter, StratifiedKFold, TimeSeriesSplit,
};
use ferrograd_tuning::TuningError;
use proptest::prelude::*;

#[allow(dead_code)]
mod sklearn {
    include!("fixtures/cv_sklearn.rs");
}

fn tests_of(folds: &[Fold]) -> Vec<Vec<usize>> {
    folds.iter().map(|f| f.test.clone()).collect()
}

#[test]
fn unshuffled_folds_match_sklearn() {
    for &(n, k, want) in sklearn::KFOLD {
        assert_eq!(tests_of(&KFold::new(k).split(n).unwrap()), want, "KFold({k}) of {n}");
    }
    for &(labels, k, want) in sklearn::STRATIFIED {
        let folds = StratifiedKFold::new(k, labels).split(labels.len()).unwrap();
        assert_eq!(tests_of(&folds), want, "StratifiedKFold({k}) of {labels:?}");
    }
    for &(n, k, gap, test_size, max_train, want) in sklearn::TIME_SERIES {
        let mut s = TimeSeriesSplit::new(k).gap(gap);
        if test_size > 0 {
            s = s.test_size(test_size);
        }
        if max_train > 0 {
            s = s.max_train_size(max_train);
        }
        let got: Vec<(Vec<usize>, Vec<usize>)> = s.split(n).unwrap().into_iter().map(|f| (f.train, f.test)).collect();
        let want: Vec<(Vec<usize>, Vec<usize>)> = want.iter().map(|(a, b)| (a.to_vec(), b.to_vec())).collect();
        assert_eq!(got, want, "TimeSeriesSplit({k}, gap {gap}) of {n}");
    }
}

/// Train and test of a fold are sorted, disjoint, and together all of `0..n`.
fn assert_complementary(folds: &[Fold], n: usize) {
    for f in folds {
        let test: BTreeSet<usize> = f.test.iter().copied().collect();
        let train: BTreeSet<usize> = f.train.iter().copied().collect();
        assert_eq!(train.len() + test.len(), n);
        assert!(train.is_disjoint(&test));
        assert!(f.test.windows(2).all(|w| w[0] < w[1]) && f.train.windows(2).all(|w| w[0] < w[1]));
    }
}

/// Every index in exactly one test fold, and train = the complement of test.
fn assert_partition(folds: &[Fold], n: usize) {
    assert_complementary(folds, n);
    let mut seen = vec![0usize; n];
    for f in folds {
        for &i in &f.test {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "test counts {seen:?}");
}

fn labels_strategy() -> impl Strategy<Value = (Vec<i64>, usize)> {
    (2usize..6, 2usize..5).prop_flat_map(|(k, n_classes)| {
        // At least k members per class, then random extra samples.
        (proptest::collection::vec(0..n_classes as i64, 0..60), Just(k), Just(n_classes)).prop_map(
            |(mut extra, k, n_classes)| {
                for c in 0..n_classes as i64 {
                    extra.extend(std::iter::repeat_n(c * 3 - 2, k));
                }
                for l in extra.iter_mut() {
                    if *l >= 0 && *l < n_classes as i64 {
                        *l = *l * 3 - 2;
                    }
                }
                (extra, k)
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kfold_partitions(n in 2usize..200, k in 2usize..12, seed in any::<u64>(), shuffle in any::<bool>()) {
        prop_assume!(k <= n);
        let s = if shuffle { KFold::new(k).shuffle(seed) } else { KFold::new(k) };
        let folds = s.split(n).unwrap();
        prop_assert_eq!(folds.len(), k);
        assert_partition(&folds, n);
        let sizes: Vec<usize> = folds.iter().map(|f| f.test.len()).collect();
        prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        prop_assert_eq!(folds, s.split(n).unwrap());
    }

    #[test]
    fn stratified_keeps_proportions((labels, k) in labels_strategy(), seed in any::<u64>(), shuffle in any::<bool>()) {
        let n = labels.len();
        let mut s = StratifiedKFold::new(k, &labels);
        if shuffle {
            s = s.shuffle(seed);
        }
        let folds = s.split(n).unwrap();
        assert_partition(&folds, n);
        let classes: BTreeSet<i64> = labels.iter().copied().collect();
        for c in classes {
            let total = labels.iter().filter(|&&l| l == c).count() as f64;
            for f in &folds {
                let in_fold = f.test.iter().filter(|&&i| labels[i] == c).count() as f64;
                // The class's share of this fold is its share of the whole, within one sample.
                prop_assert!((in_fold - total / k as f64).abs() < 1.0, "class {} fold count {} of {}", c, in_fold, total);
            }
        }
        prop_assert_eq!(folds, s.split(n).unwrap());
    }

    #[test]
    fn groups_never_straddle(groups in proptest::collection::vec(0i64..15, 2..120), k in 2usize..6) {
        let n = groups.len();
        let distinct = groups.iter().collect::<BTreeSet<_>>().len();
        let s = GroupKFold::new(k, &groups);
        match s.split(n) {
            Err(TuningError::TooFewGroups { n_groups, .. }) => prop_assert!(n_groups < k && n_groups == distinct),
            Err(TuningError::TooFewSamples { .. }) => prop_assert!(n < k),
            Err(e) => prop_assert!(false, "unexpected {}", e),
            Ok(folds) => {
                assert_partition(&folds, n);
                for f in &folds {
                    let test: BTreeSet<i64> = f.test.iter().map(|&i| groups[i]).collect();
                    prop_assert!(f.train.iter().all(|&i| !test.contains(&groups[i])));
                }
            }
        }
    }

    #[test]
    fn shuffle_split_sizes(n in 2usize..300, test_size in 0.01f64..0.99, splits in 1usize..5, seed in any::<u64>()) {
        let s = ShuffleSplit::new(splits, test_size, seed);
        match s.split(n) {
            Ok(folds) => {
                prop_assert_eq!(folds.len(), splits);
                let n_test = (test_size * n as f64).ceil() as usize;
                for f in &folds {
                    prop_assert_eq!(f.test.len(), n_test);
                    let all: BTreeSet<usize> = f.train.iter().chain(&f.test).copied().collect();
                    prop_assert_eq!(all.len(), n);
                }
                prop_assert_eq!(folds, s.split(n).unwrap());
            }
            Err(TuningError::TooFewSamples { .. }) => prop_assert!((test_size * n as f64).ceil() as usize >= n),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }

    #[test]
    fn time_series_never_trains_on_the_future(n in 4usize..200, k in 2usize..6, gap in 0usize..4) {
        if let Ok(folds) = TimeSeriesSplit::new(k).gap(gap).split(n) {
            prop_assert_eq!(folds.len(), k);
            for f in &folds {
                prop_assert!(f.train.last().unwrap() + gap < f.test[0]);
            }
            prop_assert_eq!(*folds.last().unwrap().test.last().unwrap(), n - 1);
        }
    }

    #[test]
    fn stratified_train_test_split(labels in proptest::collection::vec(0i64..4, 8..100), seed in any::<u64>()) {
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for &l in &labels {
            *counts.entry(l).or_default() += 1;
        }
        prop_assume!(counts.values().all(|&c| c >= 2));
        let n = labels.len();
        let split = train_test_split(n, 0.25, seed, Some(&labels)).unwrap();
        let n_test = (0.25 * n as f64).ceil() as usize;
        prop_assert_eq!(split.test.len(), n_test);
        assert_complementary(std::slice::from_ref(&split), n);
        for (&c, &total) in &counts {
            let in_test = split.test.iter().filter(|&&i| labels[i] == c).count() as f64;
            prop_assert!((in_test - total as f64 * n_test as f64 / n as f64).abs() < 1.0);
        }
    }
}

#[test]
fn seeds_decide_the_folds() {
    let a = KFold::new(5).shuffle(1).split(100).unwrap();
    assert_eq!(a, KFold::new(5).shuffle(1).split(100).unwrap());
    assert_ne!(a, KFold::new(5).shuffle(2).split(100).unwrap());
    assert_ne!(a, KFold::new(5).split(100).unwrap());
    let labels: Vec<i64> = (0..100).map(|i| i % 3).collect();
    let s = StratifiedKFold::new(5, &labels);
    assert_ne!(s.clone().shuffle(1).split(100).unwrap(), s.clone().shuffle(2).split(100).unwrap());
    assert_ne!(ShuffleSplit::new(2, 0.3, 1).split(50).unwrap(), ShuffleSplit::new(2, 0.3, 2).split(50).unwrap());
    assert_ne!(train_test_split(50, 0.3, 1, None).unwrap(), train_test_split(50, 0.3, 2, None).unwrap());
    assert_ne!(Bootstrap::new(2, 1).split(50).unwrap(), Bootstrap::new(2, 2).split(50).unwrap());
}

#[test]
fn repeated_kfold_repeats_different_partitions() {
    let folds = RepeatedKFold::new(4, 3, 9).split(40).unwrap();
    assert_eq!(folds.len(), 12);
    for rep in folds.chunks(4) {
        assert_partition(rep, 40);
    }
    assert_ne!(tests_of(&folds[0..4]), tests_of(&folds[4..8]));
    assert_eq!(folds, RepeatedKFold::new(4, 3, 9).split(40).unwrap());
}

#[test]
fn bootstrap_out_of_bag() {
    let n = 1000;
    let folds = Bootstrap::new(20, 3).split(n).unwrap();
    let mut oob_fraction = 0.0;
    for f in &folds {
        assert_eq!(f.train.len(), n);
        let drawn: BTreeSet<usize> = f.train.iter().copied().collect();
        assert!(f.test.iter().all(|i| !drawn.contains(i)));
        assert_eq!(drawn.len() + f.test.len(), n);
        oob_fraction += f.test.len() as f64 / n as f64 / folds.len() as f64;
    }
    // (1 - 1/n)^n -> 1/e = 0.368.
    assert!((oob_fraction - 0.368).abs() < 0.01, "out-of-bag fraction {oob_fraction}");
    assert!((bootstrap_632(0.1, 0.3) - (0.368 * 0.1 + 0.632 * 0.3)).abs() < 1e-15);
}

#[test]
fn bad_requests_are_typed_errors() {
    assert!(matches!(KFold::new(1).split(10), Err(TuningError::TooFewSplits { n_splits: 1, .. })));
    assert!(matches!(KFold::new(11).split(10), Err(TuningError::TooFewSamples { n_samples: 10, .. })));
    assert!(matches!(
        StratifiedKFold::new(3, &[0i64, 0, 0, 1, 1, 2, 2, 2]).split(8),
        Err(TuningError::ClassTooSmall { class: 1, count: 2, needed: 3, .. })
    ));
    assert!(matches!(StratifiedKFold::new(2, &[0i64, 1]).split(3), Err(TuningError::LengthMismatch { .. })));
    assert!(matches!(GroupKFold::new(3, &[1i64, 1, 2, 2]).split(4), Err(TuningError::TooFewGroups { .. })));
    assert!(matches!(GroupKFold::new(2, &[1i64, 2]).split(3), Err(TuningError::LengthMismatch { .. })));
    assert!(matches!(RepeatedKFold::new(2, 0, 0).split(10), Err(TuningError::OutOfRange { .. })));
    assert!(matches!(RepeatedKFold::new(20, 2, 0).split(10), Err(TuningError::TooFewSamples { .. })));
    for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(ShuffleSplit::new(3, bad, 0).split(10), Err(TuningError::OutOfRange { .. })), "{bad}");
        assert!(matches!(train_test_split(10, bad, 0, None), Err(TuningError::OutOfRange { .. })), "{bad}");
    }
    assert!(matches!(ShuffleSplit::new(0, 0.5, 0).split(10), Err(TuningError::OutOfRange { .. })));
    assert!(matches!(train_test_split(1, 0.5, 0, None), Err(TuningError::TooFewSamples { .. })));
    assert!(matches!(train_test_split(10, 0.95, 0, None), Err(TuningError::TooFewSamples { .. })));
    assert!(matches!(
        train_test_split(4, 0.5, 0, Some(&[0, 0, 0, 1])),
        Err(TuningError::ClassTooSmall { class: 1, count: 1, .. })
    ));
    assert!(matches!(train_test_split(4, 0.5, 0, Some(&[0, 0, 1])), Err(TuningError::LengthMismatch { .. })));
    assert!(matches!(TimeSeriesSplit::new(5).split(5), Err(TuningError::TooFewSamples { .. })));
    assert!(matches!(TimeSeriesSplit::new(3).gap(10).split(12), Err(TuningError::TooFewSamples { .. })));
    assert!(matches!(Bootstrap::new(0, 0).split(10), Err(TuningError::OutOfRange { .. })));
    assert!(matches!(Bootstrap::new(3, 0).split(1), Err(TuningError::TooFewSamples { .. })));
    let msg = StratifiedKFold::new(3, &[0i64, 0, 0, 1, 1]).split(5).unwrap_err().to_string();
    assert_eq!(msg, "StratifiedKFold: class 1 has 2 member(s), fewer than the 3 it needs");
}

#[test]
fn cross_validate_gathers_scores() {
    let folds = KFold::new(4).split(8).unwrap();
    let results = cross_validate(&KFold::new(4), 8, |i, train, test| {
        assert_eq!((train, test), (folds[i].train.as_slice(), folds[i].test.as_slice()));
        Ok::<_, TuningError>(BTreeMap::from([("a".to_string(), i as f64), ("b".to_string(), 1.0)]))
    })
    .unwrap();
    assert_eq!(results.folds.len(), 4);
    assert_eq!(results.values("a"), Some(vec![0.0, 1.0, 2.0, 3.0]));
    let a = results.summary("a").unwrap();
    assert_eq!(a.mean, 1.5);
    assert!((a.std - 1.25f64.sqrt()).abs() < 1e-15);
    assert_eq!(results.summaries().len(), 2);
    assert_eq!(results.std("b"), Some(0.0));
    assert_eq!(results.mean("c"), None);
}

#[test]
fn cross_validate_reports_failures() {
    let r = cross_validate(&KFold::new(3), 9, |i, _, _| {
        if i == 1 {
            Err("diverged")
        } else {
            Ok(BTreeMap::from([("acc".to_string(), 0.5)]))
        }
    });
    match r {
        Err(TuningError::Fold { fold: 1, source }) => assert_eq!(source.to_string(), "diverged"),
        other => panic!("expected a fold error, got {other:?}"),
    }
    let r = cross_validate(&KFold::new(2), 4, |i, _, _| {
        Ok::<_, TuningError>(BTreeMap::from([(if i == 0 { "acc" } else { "loss" }.to_string(), 0.5)]))
    });
    assert!(matches!(r, Err(TuningError::MetricNames { fold: 1, .. })));
    assert!(matches!(
        cross_validate(&KFold::new(5), 3, |_, _, _| Ok::<_, TuningError>(BTreeMap::new())),
        Err(TuningError::TooFewSamples { .. })
    ));
}
