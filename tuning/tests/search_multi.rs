//! Multi-objective pieces against brute-force references on random point sets: ranks by peeling
//! fronts with the definition of dominance, hypervolume by inclusion-exclusion over every subset
//! of points, contributions as the volume lost without each point.

use ferrograd_tuning::search::multi::{
    crowding_distance, dominates, hypervolume, hypervolume_contributions, non_dominated_fronts, non_dominated_ranks,
    pareto_front,
};
use ferrograd_tuning::search::{Direction, SearchError, Study, TrialState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_points(rng: &mut StdRng, n: usize, d: usize, integer: bool) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| {
            (0..d).map(|_| if integer { rng.random_range(0..6) as f64 } else { rng.random_range(0.0..1.0) }).collect()
        })
        .collect()
}

/// Peels fronts: a point's rank is the round in which nothing left dominates it.
fn brute_ranks(points: &[Vec<f64>]) -> Vec<usize> {
    let n = points.len();
    let mut ranks = vec![usize::MAX; n];
    let mut rank = 0;
    while ranks.contains(&usize::MAX) {
        let left: Vec<usize> = (0..n).filter(|&i| ranks[i] == usize::MAX).collect();
        let front: Vec<usize> =
            left.iter().copied().filter(|&i| !left.iter().any(|&j| dominates(&points[j], &points[i]))).collect();
        for i in front {
            ranks[i] = rank;
        }
        rank += 1;
    }
    ranks
}

/// Inclusion-exclusion: the union of boxes [p, r] is the alternating sum over subsets of the
/// box of their coordinate-wise maximum.
fn brute_hv(points: &[Vec<f64>], r: &[f64]) -> f64 {
    let pts: Vec<&Vec<f64>> = points.iter().filter(|p| p.iter().zip(r).all(|(x, r)| x < r)).collect();
    let n = pts.len();
    let mut total = 0.0;
    for mask in 1u32..(1 << n) {
        let mut corner = vec![f64::NEG_INFINITY; r.len()];
        for (i, p) in pts.iter().enumerate() {
            if mask & (1 << i) != 0 {
                for (c, x) in corner.iter_mut().zip(p.iter()) {
                    *c = c.max(*x);
                }
            }
        }
        let vol: f64 = corner.iter().zip(r).map(|(c, r)| r - c).product();
        total += if mask.count_ones() % 2 == 1 { vol } else { -vol };
    }
    total
}

#[test]
fn ranks_match_peeling() {
    let mut rng = StdRng::seed_from_u64(1);
    for case in 0..300 {
        let d = 1 + case % 4;
        let n = rng.random_range(0..40);
        let pts = random_points(&mut rng, n, d, case % 2 == 0);
        let ranks = non_dominated_ranks(&pts);
        assert_eq!(ranks, brute_ranks(&pts), "case {case}: {pts:?}");
        let fronts = non_dominated_fronts(&pts);
        for (r, f) in fronts.iter().enumerate() {
            assert!(f.iter().all(|&i| ranks[i] == r));
        }
        let front: Vec<usize> = (0..n).filter(|&i| ranks[i] == 0).collect();
        assert_eq!(pareto_front(&pts), front);
    }
}

#[test]
fn hypervolume_matches_inclusion_exclusion() {
    let mut rng = StdRng::seed_from_u64(2);
    for case in 0..400 {
        let d = 1 + case % 5;
        let n = rng.random_range(0..11);
        let integer = case % 3 == 0;
        let pts = random_points(&mut rng, n, d, integer);
        let r: Vec<f64> = (0..d).map(|_| if integer { 5.0 } else { rng.random_range(0.7..1.1) }).collect();
        let (got, want) = (hypervolume(&pts, &r), brute_hv(&pts, &r));
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "case {case}: {got} vs {want} for {pts:?} ref {r:?}"
        );
    }
}

#[test]
fn contributions_are_the_volume_lost() {
    let mut rng = StdRng::seed_from_u64(3);
    for case in 0..300 {
        let d = 2 + case % 3;
        let n = rng.random_range(1..10);
        let integer = case % 2 == 0;
        let pts = random_points(&mut rng, n, d, integer);
        let r: Vec<f64> = vec![if integer { 5.0 } else { 1.0 }; d];
        let all = brute_hv(&pts, &r);
        let got = hypervolume_contributions(&pts, &r);
        for (i, g) in got.iter().enumerate() {
            let mut rest = pts.clone();
            rest.remove(i);
            let want = all - brute_hv(&rest, &r);
            assert!((g - want).abs() <= 1e-12, "case {case} point {i}: {g} vs {want} for {pts:?}");
        }
    }
}

#[test]
fn hypervolume_of_many_random_points_3d_and_5d_agrees_with_its_front() {
    // Larger sets than inclusion-exclusion can take: dominated points must not change the volume.
    let mut rng = StdRng::seed_from_u64(4);
    for d in [3, 5] {
        let pts = random_points(&mut rng, 60, d, false);
        let front: Vec<Vec<f64>> = pareto_front(&pts).into_iter().map(|i| pts[i].clone()).collect();
        let r = vec![1.0; d];
        let (a, b) = (hypervolume(&pts, &r), hypervolume(&front, &r));
        assert!((a - b).abs() < 1e-12 && a > 0.0 && a < 1.0, "{d}-D: {a} vs {b}");
    }
}

#[test]
fn crowding_distance_by_hand() {
    // Objective 0 spans 0..4, objective 1 spans 0..8: the middle points get the neighbours' gaps.
    let d = crowding_distance(&[[0.0, 8.0], [1.0, 6.0], [2.0, 2.0], [4.0, 0.0]]);
    assert_eq!(d[0], f64::INFINITY);
    assert_eq!(d[3], f64::INFINITY);
    assert_eq!(d[1], 2.0 / 4.0 + 6.0 / 8.0);
    assert_eq!(d[2], 3.0 / 4.0 + 6.0 / 8.0);
    // A constant objective adds nothing.
    let d = crowding_distance(&[[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]]);
    assert_eq!(d[1], 3.0 / 3.0);
}

#[test]
fn best_trials_is_the_pareto_front_of_complete_trials() {
    let study = Study::builder().directions(&[Direction::Minimize, Direction::Maximize]).seed(3).build();
    study
        .optimize(40, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            let y = t.suggest_float("y", 0.0, 1.0, false)?;
            if t.number() % 7 == 3 {
                return Err(t.pruned());
            }
            Ok::<_, SearchError>([x + y, x - y])
        })
        .unwrap();
    let trials = study.trials();
    let best = study.best_trials();
    assert!(!best.is_empty());
    let complete: Vec<_> = trials.iter().filter(|t| t.state == TrialState::Complete).collect();
    for t in &complete {
        let dominated =
            complete.iter().any(|o| o.values[0] <= t.values[0] && o.values[1] >= t.values[1] && o.values != t.values);
        assert_eq!(best.iter().any(|b| b.number == t.number), !dominated, "trial {}", t.number);
    }
    assert!(best.iter().all(|t| t.state == TrialState::Complete));
}

#[test]
fn best_trials_keeps_feasible_trials_only() {
    let study = Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).build();
    study
        .optimize(30, |t| {
            let x = t.suggest_float("x", 0.0, 1.0, false)?;
            t.set_constraint("c", x - 0.5)?;
            Ok::<_, SearchError>([x, 1.0 - x])
        })
        .unwrap();
    let best = study.best_trials();
    let feasible = study.trials().iter().filter(|t| t.is_feasible()).count();
    // Every feasible trial trades one objective for the other; no infeasible one is kept.
    assert_eq!(best.len(), feasible);
    assert!(best.iter().all(|t| t.params["x"].as_f64().unwrap() <= 0.5 && t.constraints().len() == 1));
}

#[test]
fn best_trials_of_one_objective_are_the_ties_for_best() {
    let study = Study::builder().build();
    study.optimize(12, |t| t.suggest_int("k", 0, 3, 1, false).map(|k| (k as f64 - 1.0).abs())).unwrap();
    let best = study.best_trials();
    let want: Vec<u64> = study.trials().iter().filter(|t| t.value == Some(0.0)).map(|t| t.number).collect();
    assert_eq!(best.iter().map(|t| t.number).collect::<Vec<_>>(), want);
}
