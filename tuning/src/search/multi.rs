//! Multi-objective building blocks, shared by [`Study::best_trials`](super::Study::best_trials),
//! the NSGA-II sampler and multi-objective TPE: Pareto dominance, non-dominated sorting,
//! crowding distance, hypervolume and each point's hypervolume contribution.
//!
//! Every function here works on *losses*: points whose coordinates are all minimised. Turn a
//! trial's values into losses with [`losses`] (a maximised objective is negated). A point is any
//! `AsRef<[f64]>` (a `Vec<f64>`, an array, a slice), and every point of one call has the same
//! number of coordinates (a programming error otherwise, which panics naming the function).
//!
//! ```
//! use ferrograd_tuning::search::multi::{hypervolume, non_dominated_ranks, pareto_front};
//! let points = [[1.0, 4.0], [2.0, 2.0], [3.0, 3.0], [4.0, 1.0]];
//! assert_eq!(non_dominated_ranks(&points), vec![0, 0, 1, 0]);
//! assert_eq!(pareto_front(&points), vec![0, 1, 3]);
//! // The front's staircase up to (5, 5): 4 x 1 + 3 x 2 + 1 x 1.
//! assert_eq!(hypervolume(&points, &[5.0, 5.0]), 11.0);
//! ```

use std::cmp::Ordering;

use super::study::Direction;
use super::trial::{FrozenTrial, TrialState};

/// The losses (smaller is better) of `values` under `directions`: maximised values negated.
/// Panics when the lengths differ.
#[track_caller]
pub fn losses(values: &[f64], directions: &[Direction]) -> Vec<f64> {
    assert_eq!(
        values.len(),
        directions.len(),
        "multi::losses: {} values for {} directions",
        values.len(),
        directions.len()
    );
    values.iter().zip(directions).map(|(v, d)| d.loss(*v)).collect()
}

/// Whether loss vector `a` Pareto-dominates `b`: no coordinate worse, at least one better.
///
/// ```
/// use ferrograd_tuning::search::multi::dominates;
/// assert!(dominates(&[1.0, 2.0], &[1.0, 3.0]));
/// assert!(!dominates(&[1.0, 2.0], &[1.0, 2.0]));
/// assert!(!dominates(&[0.0, 3.0], &[1.0, 2.0]));
/// ```
#[track_caller]
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    assert_eq!(a.len(), b.len(), "multi::dominates: points of {} and {} coordinates", a.len(), b.len());
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

#[track_caller]
fn dimension<P: AsRef<[f64]>>(points: &[P], op: &str) -> usize {
    let d = points.first().map_or(0, |p| p.as_ref().len());
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p.as_ref().len(), d, "multi::{op}: point {i} has {} coordinates, point 0 has {d}", p.as_ref().len());
    }
    d
}

fn lex(a: &[f64], b: &[f64]) -> Ordering {
    a.iter().zip(b).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

/// The non-domination rank of every point: 0 for the Pareto front, 1 for the front of what is
/// left, and so on (the fronts of NSGA-II's fast non-dominated sort). Equal points share a rank.
/// Two objectives take `O(n log n)`; more take `O(m n²)`.
///
/// ```
/// use ferrograd_tuning::search::multi::non_dominated_ranks;
/// let ranks = non_dominated_ranks(&[vec![1.0, 1.0], vec![2.0, 2.0], vec![0.0, 3.0], vec![2.0, 2.0]]);
/// assert_eq!(ranks, vec![0, 1, 0, 1]);
/// ```
#[track_caller]
pub fn non_dominated_ranks<P: AsRef<[f64]>>(points: &[P]) -> Vec<usize> {
    let d = dimension(points, "non_dominated_ranks");
    let n = points.len();
    if n == 0 {
        return Vec::new();
    }
    if d == 1 {
        // Distinct values in increasing order are ranks 0, 1, ...
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| points[i].as_ref()[0].total_cmp(&points[j].as_ref()[0]));
        let mut ranks = vec![0; n];
        for k in 1..n {
            let (prev, cur) = (order[k - 1], order[k]);
            ranks[cur] = ranks[prev] + usize::from(points[prev].as_ref()[0] < points[cur].as_ref()[0]);
        }
        return ranks;
    }
    if d == 2 {
        return ranks_2d(points);
    }
    // Deb's fast non-dominated sort.
    let mut dominated_by = vec![0usize; n];
    let mut dominating: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (points[i].as_ref(), points[j].as_ref());
            if dominates(a, b) {
                dominating[i].push(j);
                dominated_by[j] += 1;
            } else if dominates(b, a) {
                dominating[j].push(i);
                dominated_by[i] += 1;
            }
        }
    }
    let mut ranks = vec![0; n];
    let mut front: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    let mut rank = 0;
    while !front.is_empty() {
        let mut next = Vec::new();
        for &i in &front {
            ranks[i] = rank;
            for &j in &dominating[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        front = next;
        rank += 1;
    }
    ranks
}

/// Two objectives: sweep the points in lexicographic order; a point's front is the first one
/// whose smallest second loss so far is above the point's (each front's smallest second loss
/// increases with the rank, so a binary search finds it).
fn ranks_2d<P: AsRef<[f64]>>(points: &[P]) -> Vec<usize> {
    let n = points.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| lex(points[i].as_ref(), points[j].as_ref()));
    let mut ranks = vec![0; n];
    let mut min_y: Vec<f64> = Vec::new();
    for k in 0..n {
        let i = order[k];
        let p = points[i].as_ref();
        if k > 0 && lex(points[order[k - 1]].as_ref(), p).is_eq() {
            ranks[i] = ranks[order[k - 1]];
            continue;
        }
        let r = min_y.partition_point(|&m| m <= p[1]);
        if r == min_y.len() {
            min_y.push(p[1]);
        } else {
            min_y[r] = p[1];
        }
        ranks[i] = r;
    }
    ranks
}

/// The points grouped by rank: the Pareto front first (each front's indices ascending).
#[track_caller]
pub fn non_dominated_fronts<P: AsRef<[f64]>>(points: &[P]) -> Vec<Vec<usize>> {
    let ranks = non_dominated_ranks(points);
    let mut fronts = vec![Vec::new(); ranks.iter().max().map_or(0, |r| r + 1)];
    for (i, r) in ranks.into_iter().enumerate() {
        fronts[r].push(i);
    }
    fronts
}

/// The indices (ascending) of the points no other point dominates.
#[track_caller]
pub fn pareto_front<P: AsRef<[f64]>>(points: &[P]) -> Vec<usize> {
    non_dominated_ranks(points).iter().enumerate().filter(|(_, r)| **r == 0).map(|(i, _)| i).collect()
}

/// NSGA-II's crowding distance of each point of one front: for every objective, the points at
/// the extremes get infinity and the others the gap between their neighbours divided by the
/// objective's range, summed over objectives (an objective whose values are all equal, or whose
/// range is not finite, adds nothing). Larger means more isolated.
///
/// ```
/// use ferrograd_tuning::search::multi::crowding_distance;
/// let d = crowding_distance(&[[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]]);
/// assert_eq!(d[0], f64::INFINITY);
/// assert_eq!(d[1], 3.0 / 4.0 + 3.0 / 4.0);
/// assert_eq!(d[3], f64::INFINITY);
/// ```
#[track_caller]
pub fn crowding_distance<P: AsRef<[f64]>>(points: &[P]) -> Vec<f64> {
    let d = dimension(points, "crowding_distance");
    let n = points.len();
    let mut dist = vec![0.0; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let mut order: Vec<usize> = (0..n).collect();
    for m in 0..d {
        let v = |i: usize| points[i].as_ref()[m];
        order.sort_by(|&i, &j| v(i).total_cmp(&v(j)).then(i.cmp(&j)));
        let width = v(order[n - 1]) - v(order[0]);
        if width == 0.0 || !width.is_finite() {
            continue;
        }
        dist[order[0]] = f64::INFINITY;
        dist[order[n - 1]] = f64::INFINITY;
        for k in 1..n - 1 {
            dist[order[k]] += (v(order[k + 1]) - v(order[k - 1])) / width;
        }
    }
    dist
}

/// The hypervolume (Lebesgue measure) of the region dominated by `points` and bounded by
/// `reference`, exactly: a sweep for two objectives (`O(n log n)`), slices of two-dimensional
/// staircases for three (`O(n²)`), and the WFG recursion for more (exponential in the worst
/// case; fine for fronts of tens of points). Points not strictly better than `reference` in every
/// coordinate add nothing. Panics when `reference` has another length than the points.
///
/// ```
/// use ferrograd_tuning::search::multi::hypervolume;
/// assert_eq!(hypervolume(&[[1.0, 2.0], [2.0, 1.0]], &[3.0, 3.0]), 3.0);
/// assert_eq!(hypervolume(&[[0.0, 0.0, 0.0]], &[1.0, 2.0, 3.0]), 6.0);
/// ```
#[track_caller]
pub fn hypervolume<P: AsRef<[f64]>>(points: &[P], reference: &[f64]) -> f64 {
    let pts = inside(points, reference, "hypervolume");
    hv(pts, reference)
}

/// The points strictly better than `reference` in every coordinate, as owned vectors.
#[track_caller]
fn inside<P: AsRef<[f64]>>(points: &[P], reference: &[f64], op: &str) -> Vec<Vec<f64>> {
    let d = dimension(points, op);
    assert!(
        points.is_empty() || d == reference.len(),
        "multi::{op}: points of {d} coordinates, reference point of {}",
        reference.len()
    );
    points
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .map(<[f64]>::to_vec)
        .collect()
}

/// Hypervolume of points all strictly inside the reference box.
fn hv(mut pts: Vec<Vec<f64>>, r: &[f64]) -> f64 {
    match (pts.len(), r.len()) {
        (0, _) => 0.0,
        (1, _) => pts[0].iter().zip(r).map(|(x, r)| r - x).product(),
        (_, 1) => r[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        (_, 2) => hv_2d(&mut pts, r),
        (_, 3) => hv_3d(&mut pts, r),
        _ => hv_wfg(pts, r),
    }
}

fn hv_2d(pts: &mut [Vec<f64>], r: &[f64]) -> f64 {
    pts.sort_by(|a, b| lex(a, b));
    let mut area = 0.0;
    let mut y = r[1];
    for p in pts.iter() {
        if p[1] < y {
            area += (r[0] - p[0]) * (y - p[1]);
            y = p[1];
        }
    }
    area
}

/// Slices along the third objective: between consecutive third coordinates, the area of the
/// staircase (kept non-dominated, sorted by the first coordinate) of the points below.
fn hv_3d(pts: &mut [Vec<f64>], r: &[f64]) -> f64 {
    pts.sort_by(|a, b| a[2].total_cmp(&b[2]));
    let mut stair: Vec<(f64, f64)> = Vec::new();
    let mut volume = 0.0;
    for (k, p) in pts.iter().enumerate() {
        let (x, y) = (p[0], p[1]);
        // The staircase's points with first coordinate <= x come first; the last of them has the
        // smallest second coordinate among them.
        let pos = stair.partition_point(|&(sx, _)| sx <= x);
        let dominated = pos > 0 && stair[pos - 1].1 <= y;
        if !dominated {
            // Drop the points p dominates (first >= x, second >= y), which follow it.
            let start = stair.partition_point(|&(sx, _)| sx < x);
            let mut end = start;
            while end < stair.len() && stair[end].1 >= y {
                end += 1;
            }
            stair.splice(start..end, [(x, y)]);
        }
        let next_z = pts.get(k + 1).map_or(r[2], |q| q[2]);
        if next_z > p[2] {
            let mut area = 0.0;
            let mut top = r[1];
            for &(sx, sy) in &stair {
                area += (r[0] - sx) * (top - sy);
                top = sy;
            }
            volume += area * (next_z - p[2]);
        }
    }
    volume
}

/// WFG: the volume is the sum over points (sorted by the first coordinate) of what each adds
/// beyond the points after it, that is its box minus the volume of the later points limited to
/// its box.
fn hv_wfg(mut pts: Vec<Vec<f64>>, r: &[f64]) -> f64 {
    let front = pareto_front(&pts);
    if front.len() < pts.len() {
        pts = front.into_iter().map(|i| std::mem::take(&mut pts[i])).collect();
    }
    if pts.len() <= 1 || r.len() <= 3 {
        return hv(pts, r);
    }
    pts.sort_by(|a, b| lex(a, b));
    let mut total = 0.0;
    for i in 0..pts.len() {
        total += exclusive(&pts[i], &pts[i + 1..], r);
    }
    total
}

/// The volume `p` dominates that none of `others` does.
fn exclusive(p: &[f64], others: &[Vec<f64>], r: &[f64]) -> f64 {
    let own: f64 = p.iter().zip(r).map(|(x, r)| r - x).product();
    if others.is_empty() {
        return own;
    }
    let limited: Vec<Vec<f64>> = others.iter().map(|q| q.iter().zip(p).map(|(a, b)| a.max(*b)).collect()).collect();
    own - hv_wfg(limited, r)
}

/// Each point's hypervolume contribution: how much [`hypervolume`] shrinks without it. Zero for
/// a dominated point, for a point outside the reference box, and for a point that has an equal
/// twin. Two objectives on a non-dominated set take `O(n log n)`; otherwise each front point
/// costs one hypervolume of the others limited to its box.
///
/// ```
/// use ferrograd_tuning::search::multi::hypervolume_contributions;
/// let c = hypervolume_contributions(&[[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]], &[3.0, 3.0]);
/// assert_eq!(c, vec![1.0, 1.0, 0.0]);
/// ```
#[track_caller]
pub fn hypervolume_contributions<P: AsRef<[f64]>>(points: &[P], reference: &[f64]) -> Vec<f64> {
    let n = points.len();
    let mut out = vec![0.0; n];
    let d = dimension(points, "hypervolume_contributions");
    if n == 0 {
        return out;
    }
    assert_eq!(
        d,
        reference.len(),
        "multi::hypervolume_contributions: points of {d} coordinates, reference point of {}",
        reference.len()
    );
    let candidates: Vec<usize> =
        (0..n).filter(|&i| points[i].as_ref().iter().zip(reference).all(|(x, r)| x < r)).collect();
    let cand_pts: Vec<&[f64]> = candidates.iter().map(|&i| points[i].as_ref()).collect();
    let ranks = non_dominated_ranks(&cand_pts);
    let mut front: Vec<usize> = candidates.iter().zip(&ranks).filter(|(_, r)| **r == 0).map(|(i, _)| *i).collect();
    front.sort_by(|&i, &j| lex(points[i].as_ref(), points[j].as_ref()));
    let twin = |k: usize| {
        let p = points[front[k]].as_ref();
        (k > 0 && lex(points[front[k - 1]].as_ref(), p).is_eq())
            || (k + 1 < front.len() && lex(points[front[k + 1]].as_ref(), p).is_eq())
    };
    if d == 2 && front.len() == candidates.len() {
        // Sorted by the first loss, the front's second loss decreases: each point owns the box
        // between its neighbours.
        for k in 0..front.len() {
            if twin(k) {
                continue;
            }
            let p = points[front[k]].as_ref();
            let right =
                front[k + 1..].iter().map(|&j| points[j].as_ref()).find(|q| q[0] > p[0]).map_or(reference[0], |q| q[0]);
            let above = front[..k]
                .iter()
                .rev()
                .map(|&j| points[j].as_ref())
                .find(|q| q[1] > p[1])
                .map_or(reference[1], |q| q[1]);
            out[front[k]] = (right - p[0]) * (above - p[1]);
        }
        return out;
    }
    for k in 0..front.len() {
        if twin(k) {
            continue;
        }
        let p = points[front[k]].as_ref();
        // A dominated point still counts: what only `p` dominates it may cover in part.
        let others: Vec<Vec<f64>> =
            candidates.iter().filter(|&&i| i != front[k]).map(|&i| points[i].as_ref().to_vec()).collect();
        out[front[k]] = exclusive(p, &others, reference).max(0.0);
    }
    out
}

/// Constraint values of a trial, as Optuna records them: the system attribute `constraints` (a
/// list, Optuna's older form and NSGA-II's `constraints_func`) and each `constraints:<key>`
/// ([`Trial::set_constraint`](super::Trial::set_constraint)). Empty when the trial has none.
pub fn trial_constraints(trial: &FrozenTrial) -> Vec<f64> {
    let mut out: Vec<f64> = trial
        .system_attrs
        .get("constraints")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    out.extend(
        trial.system_attrs.iter().filter(|(k, _)| k.starts_with("constraints:")).filter_map(|(_, v)| v.as_f64()),
    );
    out
}

/// The complete trials on the Pareto front of `trials` under `directions`, by number (Optuna's
/// `best_trials`). When any trial carries constraints, only feasible trials (every constraint
/// `<= 0`) are considered.
pub fn pareto_trials<'t>(trials: &'t [FrozenTrial], directions: &[Direction]) -> Vec<&'t FrozenTrial> {
    let constrained = trials.iter().any(|t| !trial_constraints(t).is_empty());
    let complete: Vec<&FrozenTrial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.values.len() == directions.len())
        .filter(|t| !constrained || trial_constraints(t).iter().all(|c| *c <= 0.0))
        .collect();
    let points: Vec<Vec<f64>> = complete.iter().map(|t| losses(&t.values, directions)).collect();
    pareto_front(&points).into_iter().map(|i| complete[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_2d_with_ties() {
        let pts = [[1.0, 1.0], [1.0, 1.0], [1.0, 2.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]];
        assert_eq!(non_dominated_ranks(&pts), vec![0, 0, 1, 0, 0, 2]);
    }

    #[test]
    fn hv_3d_two_boxes() {
        // Reference (2, 2, 2): [1,2]x[0,2]x[0,2] = 4 and
        // [0,2]x[1,2]x[1,2] = 2, overlap [1,2]x[1,2]x[1,2] = 1.
        assert_eq!(hypervolume(&[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], &[2.0, 2.0, 2.0]), 5.0);
    }
}
