//! Pruners on hand-built trials whose outcome follows from the rules, worked out in comments.

use ferrograd_tuning::search::{
    Direction, FrozenTrial, HyperbandPruner, MedianPruner, NopPruner, PatientPruner, PercentilePruner, Pruner,
    TrialState,
};

fn trial(number: u64, state: TrialState, steps: &[(u64, f64)]) -> FrozenTrial {
    let mut t = FrozenTrial::new(state);
    t.number = number;
    for &(s, v) in steps {
        t = t.with_intermediate(s, v);
    }
    if state == TrialState::Complete {
        t = t.with_values(&[steps.last().map_or(0.0, |s| s.1)]);
    }
    t
}

#[test]
fn hyperband_brackets_and_budgets() {
    // 81 / 1 = 3^4: five brackets; s = 4..0 get ceil(5 * 3^s / (s + 1)) = 81, 34, 15, 8, 5.
    let p = HyperbandPruner::new(1, Some(81), 3).unwrap();
    assert_eq!(p.n_brackets(), Some(5));
    assert_eq!(p.bracket_budgets(), Some(vec![81, 34, 15, 8, 5]));
    // 10 / 1 lies between 3^2 and 3^3: three brackets. 17 / 2 = 8.5 between 2^3 and 2^4: four.
    assert_eq!(HyperbandPruner::new(1, Some(10), 3).unwrap().n_brackets(), Some(3));
    assert_eq!(HyperbandPruner::new(2, Some(17), 2).unwrap().n_brackets(), Some(4));
    assert!(HyperbandPruner::new(0, Some(9), 3).is_err());
    assert!(HyperbandPruner::new(4, Some(3), 3).is_err());
    assert!(HyperbandPruner::new(1, Some(9), 1).is_err());
    // Trials fall into brackets in proportion to the budgets.
    let mut counts = [0usize; 5];
    for n in 0..143_000 {
        counts[p.bracket(n).unwrap()] += 1;
    }
    for (c, b) in counts.iter().zip([81.0, 34.0, 15.0, 8.0, 5.0]) {
        let share = *c as f64 / 143_000.0;
        assert!((share - b / 143.0).abs() < 0.01, "{counts:?}");
    }
}

#[test]
fn hyperband_auto_waits_for_a_complete_trial() {
    let p = HyperbandPruner::default();
    let running = trial(1, TrialState::Running, &[(0, 9.0), (1, 9.0), (2, 9.0), (3, 9.0)]);
    assert!(!p.prune(std::slice::from_ref(&running), Direction::Minimize, &running));
    assert_eq!(p.n_brackets(), None);
    // A trial completed at step 8: max_resource 9 = 3^2, three brackets.
    let done = trial(0, TrialState::Complete, &[(8, 1.0)]);
    let _ = p.prune(&[done, running.clone()], Direction::Minimize, &running);
    assert_eq!(p.n_brackets(), Some(3));
}

#[test]
fn hyperband_trials_compete_within_their_bracket() {
    // Three brackets: rungs at 1, 3, 9 (bracket 0), 3, 9 (bracket 1) and 9 (bracket 2).
    let p = HyperbandPruner::new(1, Some(9), 3).unwrap();
    let in_bracket = |b: usize| (0..).filter(|n| p.bracket(*n) == Some(b)).take(4).collect::<Vec<u64>>();
    let zero = in_bracket(0);
    let one = in_bracket(1);
    let mut trials: Vec<FrozenTrial> = zero[..3]
        .iter()
        .zip([0.1, 0.2, 0.3])
        .map(|(&n, v)| trial(n, TrialState::Complete, &[(1, v), (3, v), (9, v)]))
        .collect();
    // In bracket 0 at rung 1: values 0.1, 0.2, 0.3 and ours 0.9; the best 4 / 3 = 1 goes on,
    // 0.9 is not it.
    let bad0 = trial(zero[3], TrialState::Running, &[(1, 0.9)]);
    trials.push(bad0.clone());
    assert!(p.prune(&trials, Direction::Minimize, &bad0));
    // Maximising, 0.9 is the best.
    assert!(!p.prune(&trials, Direction::Maximize, &bad0));
    // In bracket 1 there is no rung at step 1, and at rung 3 it is the only trial of its bracket
    // (the bracket-0 trials' 0.1, 0.2, 0.3 at step 3 do not compete): it goes on both times.
    trials.pop();
    let bad1 = trial(one[0], TrialState::Running, &[(1, 0.9)]);
    trials.push(bad1.clone());
    assert!(!p.prune(&trials, Direction::Minimize, &bad1));
    trials.pop();
    let bad1 = trial(one[0], TrialState::Running, &[(1, 0.9), (3, 0.9)]);
    trials.push(bad1.clone());
    assert!(!p.prune(&trials, Direction::Minimize, &bad1));
}

#[test]
fn median_interval_steps_and_n_min_trials() {
    // Complete trials at 0 on steps 0..=10; ours at 1 (worse) on every step it reports.
    let complete: Vec<FrozenTrial> =
        (0..3).map(|n| trial(n, TrialState::Complete, &(0..=10).map(|s| (s, 0.0)).collect::<Vec<_>>())).collect();
    let pruner = MedianPruner::new(0, 2).interval_steps(3);
    let judge = |steps: &[u64]| {
        let t = trial(9, TrialState::Running, &steps.iter().map(|s| (*s, 1.0)).collect::<Vec<_>>());
        let mut all = complete.clone();
        all.push(t.clone());
        pruner.prune(&all, Direction::Minimize, &t)
    };
    // Pruning steps are 2, 5, 8: at 2 it is judged (and pruned); at 3 and 4 its previous report
    // is already at or past 2, so it is not judged; at 5 it is again.
    assert!(!judge(&[0, 1]));
    assert!(judge(&[0, 1, 2]));
    assert!(!judge(&[0, 1, 2, 3]));
    assert!(!judge(&[0, 1, 2, 3, 4]));
    assert!(judge(&[0, 1, 2, 3, 4, 5]));
    // Reports at 4 then 6: the previous report (4) came before the pruning step 5.
    assert!(judge(&[4, 6]));
    // n_min_trials: three complete trials reported step 2; asking for four disables pruning.
    let t = trial(9, TrialState::Running, &[(2, 1.0)]);
    let mut all = complete.clone();
    all.push(t.clone());
    assert!(MedianPruner::new(0, 0).n_min_trials(3).prune(&all, Direction::Minimize, &t));
    assert!(!MedianPruner::new(0, 0).n_min_trials(4).prune(&all, Direction::Minimize, &t));
    // The same options on the percentile pruner (keep the best 25%: 1.0 is above 0.0).
    assert!(PercentilePruner::new(25.0, 0, 0).unwrap().interval_steps(2).prune(&all, Direction::Minimize, &t));
}

#[test]
fn patient_pruner_by_hand() {
    let judge = |p: &PatientPruner, dir: Direction, values: &[f64]| {
        let t =
            trial(0, TrialState::Running, &values.iter().enumerate().map(|(s, v)| (s as u64, *v)).collect::<Vec<_>>());
        p.prune(std::slice::from_ref(&t), dir, &t)
    };
    let p = PatientPruner::new(2, 0.0).unwrap();
    // Patience 2: the last three reports against the ones before.
    // Before [5, 4] best 4, after [3, 3.5, 3.2] best 3: improving, kept.
    assert!(!judge(&p, Direction::Minimize, &[5.0, 4.0, 3.0, 3.5, 3.2]));
    // Before [5, 3] best 3, after best 3.2: worse, pruned.
    assert!(judge(&p, Direction::Minimize, &[5.0, 3.0, 4.0, 3.4, 3.2]));
    // Too few reports to tell (patience + 1 = 3 or fewer).
    assert!(!judge(&p, Direction::Minimize, &[1.0, 2.0, 3.0]));
    // A tolerance of 0.5: 3.2 is within 3 + 0.5, kept.
    assert!(!judge(&PatientPruner::new(2, 0.5).unwrap(), Direction::Minimize, &[5.0, 3.0, 4.0, 3.4, 3.2]));
    // Maximising: before best 3, after best 2.9: pruned.
    assert!(judge(&p, Direction::Maximize, &[1.0, 3.0, 2.0, 2.5, 2.9]));
    // A wrapped pruner that never prunes has the last word.
    let wrapped = PatientPruner::new(2, 0.0).unwrap().wrapping(NopPruner);
    assert!(!judge(&wrapped, Direction::Minimize, &[5.0, 3.0, 4.0, 3.4, 3.2]));
    assert!(PatientPruner::new(2, -1.0).is_err());
}

/// fixtures/wilcoxon_optuna.json (gen_wilcoxon.py, Optuna 5.1 and scipy): the best trial's and a
/// running trial's intermediate values; Optuna's decision with `p_threshold` just below and just
/// above scipy's p-value. Exact, permutation and normal-approximation cases, both directions.
#[test]
fn wilcoxon_matches_optuna() {
    use ferrograd_tuning::search::WilcoxonPruner;
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wilcoxon_optuna.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let mut pruned = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let dir = if case["direction"] == "maximize" { Direction::Maximize } else { Direction::Minimize };
        let best_v = floats(&case["best"]);
        let cur_v = floats(&case["current"]);
        let steps = |v: &[f64]| v.iter().enumerate().map(|(s, x)| (s as u64, *x)).collect::<Vec<_>>();
        let mut best = trial(0, TrialState::Complete, &steps(&best_v));
        best = best.with_values(&[best_v.iter().sum::<f64>() / best_v.len() as f64]);
        let current = trial(1, TrialState::Running, &steps(&cur_v));
        let all = [best, current.clone()];
        for d in case["decisions"].as_array().unwrap() {
            let p = WilcoxonPruner::new(d["p_threshold"].as_f64().unwrap(), 2).unwrap();
            let want = d["prune"].as_bool().unwrap();
            pruned += usize::from(want);
            assert_eq!(
                p.prune(&all, dir, &current),
                want,
                "n {} {} {:?}: scipy p {} threshold {}",
                case["n"],
                case["kind"],
                dir,
                case["p"],
                d["p_threshold"]
            );
        }
    }
    assert!(pruned > 20);
}

#[test]
fn wilcoxon_waits_for_startup_steps_and_a_best_trial() {
    use ferrograd_tuning::search::WilcoxonPruner;
    let p = WilcoxonPruner::new(0.5, 4).unwrap();
    let current = trial(1, TrialState::Running, &[(0, 9.0), (1, 9.0), (2, 9.0)]);
    // No complete trial: nothing to compare with.
    assert!(!p.prune(std::slice::from_ref(&current), Direction::Minimize, &current));
    // Three shared steps, four needed.
    let best = trial(0, TrialState::Complete, &[(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
    assert!(!p.prune(&[best.clone(), current.clone()], Direction::Minimize, &current));
    // With a fourth step all four differences are +8: exact p = 1 / 16 < 0.5.
    let current = trial(1, TrialState::Running, &[(0, 9.0), (1, 9.0), (2, 9.0), (3, 9.0)]);
    assert!(p.prune(&[best.clone(), current.clone()], Direction::Minimize, &current));
    assert!(WilcoxonPruner::new(1.5, 2).is_err());
}
