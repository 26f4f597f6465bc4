//! Reductions, `sum_to`, softmax and log_softmax against index-by-index references in f64, over
//! random shapes, random dim subsets, both `keepdim`s and every layout the testing strategies make.

use ferrograd_tensor::testing::{any_layout, broadcastable_shapes, shape, shape_in};
use ferrograd_tensor::{Element, Float, Num, Tensor};
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::TestCaseError;

type Check = Result<(), TestCaseError>;

// ------------------------------------------------------------------ strategies

/// Signed dims to reduce: a random subset of `0..rank` in random order, each possibly negative.
fn dims_of(rank: usize) -> impl Strategy<Value = Vec<isize>> {
    (
        subsequence((0..rank).collect::<Vec<usize>>(), 0..=rank).prop_shuffle(),
        prop::collection::vec(any::<bool>(), rank),
    )
        .prop_map(move |(dims, neg)| {
            dims.into_iter().map(|d| if neg[d] { d as isize - rank as isize } else { d as isize }).collect()
        })
}

/// A tensor in any layout, dims to reduce over, and `keepdim`.
fn case<E: Element>(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Tensor<E>, Vec<isize>, bool)> {
    shape(max_rank, max_dim)
        .prop_flat_map(|s| (Just(s.len()), any_layout::<E>(s)))
        .prop_flat_map(|(rank, t)| (Just(t), dims_of(rank), any::<bool>()))
}

/// A tensor in any layout and one signed dim of it (rank >= 1).
fn dim_case<E: Element>(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Tensor<E>, isize, bool)> {
    shape_in(1, max_rank, max_dim).prop_flat_map(|s| {
        let rank = s.len() as isize;
        (any_layout::<E>(s), -rank..rank, any::<bool>())
    })
}

/// A tensor of `shape` holding `values`, stored permuted and with some dims flipped, so that
/// hand-picked data (NaNs, ties, huge logits) is also tested in non-contiguous layouts.
fn arranged<E: Element>(
    shape: Vec<usize>,
    values: impl Strategy<Value = f64> + Clone,
) -> impl Strategy<Value = Tensor<E>> {
    let rank = shape.len();
    let n: usize = shape.iter().product();
    (
        Just((0..rank).collect::<Vec<usize>>()).prop_shuffle(),
        subsequence((0..rank).collect::<Vec<usize>>(), 0..=rank),
        prop::collection::vec(values, n),
    )
        .prop_map(move |(perm, flips, data)| {
            let stored: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let mut inv = vec![0; rank];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            let flips: Vec<isize> = flips.into_iter().map(|d| d as isize).collect();
            Tensor::from_vec(data.into_iter().map(E::from_f64).collect(), &stored).permute(&inv).flip(&flips)
        })
}

/// Small integers (many ties) with an occasional NaN.
fn tie_or_nan() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![8 => (-2i32..=2).prop_map(f64::from), 1 => Just(f64::NAN)]
}

// ------------------------------------------------------------------ reference

/// The elements of each output group in row-major order of the reduced dims, and the output
/// shape, computed from row-major multi-indices.
fn groups(data: &[f64], shape: &[usize], dims: &[isize], keepdim: bool) -> (Vec<Vec<f64>>, Vec<usize>) {
    let rank = shape.len();
    let reduced: Vec<bool> =
        (0..rank).map(|d| dims.iter().any(|&x| x.rem_euclid(rank as isize) as usize == d)).collect();
    let kept: Vec<usize> = (0..rank).filter(|&d| !reduced[d]).collect();
    let mut out = vec![Vec::new(); kept.iter().map(|&d| shape[d]).product()];
    let mut idx = vec![0; rank];
    for (i, &x) in data.iter().enumerate() {
        let mut rest = i;
        for d in (0..rank).rev() {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        let o = kept.iter().fold(0, |o, &d| o * shape[d] + idx[d]);
        out[o].push(x);
    }
    let out_shape = (0..rank)
        .filter_map(|d| match (reduced[d], keepdim) {
            (false, _) => Some(shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    (out, out_shape)
}

fn f64s<E: Element>(t: &Tensor<E>) -> Vec<f64> {
    t.to_vec().into_iter().map(E::to_f64).collect()
}

fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// First index of the best value; a NaN is best and the first one wins.
fn arg_best(g: &[f64], is_max: bool) -> usize {
    if let Some(i) = g.iter().position(|x| x.is_nan()) {
        return i;
    }
    let mut best = 0;
    for (i, &x) in g.iter().enumerate() {
        if (is_max && x > g[best]) || (!is_max && x < g[best]) {
            best = i;
        }
    }
    best
}

fn ref_var(g: &[f64], correction: usize) -> f64 {
    let n = g.len() as f64;
    let mean = g.iter().sum::<f64>() / n;
    g.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (g.len().saturating_sub(correction)) as f64
}

fn ref_logsumexp(g: &[f64]) -> f64 {
    let m = g.iter().copied().fold(f64::NEG_INFINITY, max_nan);
    if !m.is_finite() {
        return m;
    }
    m + g.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Equal within `tol[i]` each, NaN matching NaN and infinities matching exactly.
fn close(got: &[f64], want: &[f64], tol: &[f64]) -> Check {
    prop_assert_eq!(got.len(), want.len());
    for i in 0..got.len() {
        let (g, w) = (got[i], want[i]);
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol[i]
        };
        prop_assert!(ok, "element {}: got {}, want {} (tol {})\ngot  {:?}\nwant {:?}", i, g, w, tol[i], got, want);
    }
    Ok(())
}

// ------------------------------------------------------------------ checks shared by element types

/// `eps` is 0 for integers (exact results expected).
fn check_sum<E: Num>((t, dims, keepdim): (Tensor<E>, Vec<isize>, bool), eps: f64) -> Check {
    let (gs, out_shape) = groups(&f64s(&t), t.shape(), &dims, keepdim);
    let s = t.sum_dims(&dims, keepdim);
    prop_assert_eq!(s.shape(), out_shape.as_slice());
    prop_assert!(s.is_contiguous());
    let want: Vec<f64> = gs.iter().map(|g| g.iter().sum()).collect();
    let tol: Vec<f64> =
        gs.iter().map(|g| (g.len() + 1) as f64 * eps * g.iter().map(|x| x.abs()).sum::<f64>()).collect();
    close(&f64s(&s), &want, &tol)?;

    let all: Vec<f64> = f64s(&t);
    prop_assert_eq!(t.sum().rank(), 0);
    let tol = (all.len() + 1) as f64 * eps * all.iter().map(|x| x.abs()).sum::<f64>();
    close(&f64s(&t.sum()), &[all.iter().sum()], &[tol])
}

/// Callers keep groups small enough that no partial product overflows.
fn check_prod<E: Num>((t, dims, keepdim): (Tensor<E>, Vec<isize>, bool), eps: f64) -> Check {
    let (gs, out_shape) = groups(&f64s(&t), t.shape(), &dims, keepdim);
    let p = t.prod_dims(&dims, keepdim);
    prop_assert_eq!(p.shape(), out_shape.as_slice());
    let want: Vec<f64> = gs.iter().map(|g| g.iter().product()).collect();
    // Relative error per factor, plus room for underflow to 0 of products below f32's range.
    let tol: Vec<f64> =
        gs.iter().zip(&want).map(|(g, w)| 2.0 * (g.len() + 1) as f64 * eps * w.abs() + eps * 1e-30).collect();
    close(&f64s(&p), &want, &tol)?;
    let all: Vec<f64> = f64s(&t);
    let w: f64 = all.iter().product();
    close(&f64s(&t.prod()), &[w], &[2.0 * (all.len() + 1) as f64 * eps * w.abs() + eps * 1e-30])
}

fn check_max_min<E: Num>((t, dims, keepdim): (Tensor<E>, Vec<isize>, bool)) -> Check {
    let (gs, out_shape) = groups(&f64s(&t), t.shape(), &dims, keepdim);
    let exact = vec![0.0; gs.len()];
    let mx = t.max_dims(&dims, keepdim);
    prop_assert_eq!(mx.shape(), out_shape.as_slice());
    let want: Vec<f64> = gs.iter().map(|g| g.iter().copied().fold(f64::NEG_INFINITY, max_nan)).collect();
    close(&f64s(&mx), &want, &exact)?;
    let mn = t.min_dims(&dims, keepdim);
    prop_assert_eq!(mn.shape(), out_shape.as_slice());
    let want: Vec<f64> = gs.iter().map(|g| g.iter().copied().fold(f64::INFINITY, min_nan)).collect();
    close(&f64s(&mn), &want, &exact)?;

    let all = f64s(&t);
    close(&f64s(&t.max()), &[all.iter().copied().fold(f64::NEG_INFINITY, max_nan)], &[0.0])?;
    close(&f64s(&t.min()), &[all.iter().copied().fold(f64::INFINITY, min_nan)], &[0.0])
}

fn check_arg<E: Num>((t, dim, keepdim): (Tensor<E>, isize, bool)) -> Check {
    let (gs, out_shape) = groups(&f64s(&t), t.shape(), &[dim], keepdim);
    for is_max in [true, false] {
        let (values, indices) = if is_max { t.max_dim(dim, keepdim) } else { t.min_dim(dim, keepdim) };
        let arg = if is_max { t.argmax(dim, keepdim) } else { t.argmin(dim, keepdim) };
        prop_assert_eq!(values.shape(), out_shape.as_slice());
        prop_assert_eq!(indices.shape(), out_shape.as_slice());
        let want_idx: Vec<i64> = gs.iter().map(|g| arg_best(g, is_max) as i64).collect();
        prop_assert_eq!(indices.to_vec(), want_idx.clone());
        prop_assert_eq!(arg.to_vec(), want_idx.clone());
        let want_val: Vec<f64> = gs.iter().zip(&want_idx).map(|(g, &i)| g[i as usize]).collect();
        close(&f64s(&values), &want_val, &vec![0.0; gs.len()])?;
    }
    Ok(())
}

fn check_float_stats<E: Float>(
    (t, dims, keepdim): (Tensor<E>, Vec<isize>, bool),
    correction: usize,
    eps: f64,
) -> Check {
    let (gs, out_shape) = groups(&f64s(&t), t.shape(), &dims, keepdim);
    let abs_sum = |g: &[f64]| g.iter().map(|x| x.abs()).sum::<f64>();

    let mean = t.mean_dims(&dims, keepdim);
    prop_assert_eq!(mean.shape(), out_shape.as_slice());
    let want: Vec<f64> = gs.iter().map(|g| g.iter().sum::<f64>() / g.len() as f64).collect();
    let tol: Vec<f64> = gs.iter().map(|g| (g.len() + 2) as f64 * eps * abs_sum(g) / g.len() as f64).collect();
    close(&f64s(&mean), &want, &tol)?;

    let var = t.var_dims(&dims, correction, keepdim);
    prop_assert_eq!(var.shape(), out_shape.as_slice());
    let want: Vec<f64> = gs.iter().map(|g| ref_var(g, correction)).collect();
    // Rounding of each deviation is relative to |x| + |mean|; the sums add a factor n.
    let var_tol: Vec<f64> = gs
        .iter()
        .map(|g| {
            let m = (g.iter().sum::<f64>() / g.len() as f64).abs();
            let scale: f64 = g.iter().map(|x| (x.abs() + m) * (x.abs() + m)).sum();
            8.0 * (g.len() + 2) as f64 * eps * scale / g.len().saturating_sub(correction).max(1) as f64
        })
        .collect();
    close(&f64s(&var), &want, &var_tol)?;

    let std = t.std_dims(&dims, correction, keepdim);
    prop_assert_eq!(std.shape(), out_shape.as_slice());
    let want_std: Vec<f64> = want.iter().map(|v| v.sqrt()).collect();
    // |sqrt(a) - sqrt(b)| <= sqrt(|a - b|).
    let tol: Vec<f64> = var_tol.iter().zip(&want_std).map(|(t, s)| t.sqrt() + 2.0 * eps * s).collect();
    close(&f64s(&std), &want_std, &tol)?;

    let lse = t.logsumexp_dims(&dims, keepdim);
    prop_assert_eq!(lse.shape(), out_shape.as_slice());
    let want: Vec<f64> = gs.iter().map(|g| ref_logsumexp(g)).collect();
    let tol: Vec<f64> =
        gs.iter().zip(&want).map(|(g, w)| 4.0 * (g.len() + 10) as f64 * eps * (w.abs() + 1.0)).collect();
    close(&f64s(&lse), &want, &tol)?;

    let all = f64s(&t);
    let n = all.len() as f64;
    close(&f64s(&t.mean()), &[all.iter().sum::<f64>() / n], &[(n + 2.0) * eps * abs_sum(&all) / n])?;
    let v = ref_var(&all, correction);
    let m = (all.iter().sum::<f64>() / n).abs();
    let scale: f64 = all.iter().map(|x| (x.abs() + m) * (x.abs() + m)).sum();
    let vt = 8.0 * (n + 2.0) * eps * scale / all.len().saturating_sub(correction).max(1) as f64;
    close(&f64s(&t.var(correction)), &[v], &[vt])?;
    close(&f64s(&t.std(correction)), &[v.sqrt()], &[vt.sqrt() + 2.0 * eps * v.sqrt()])?;
    let l = ref_logsumexp(&all);
    close(&f64s(&t.logsumexp()), &[l], &[4.0 * (n + 10.0) * eps * (l.abs() + 1.0)])
}

/// Softmax and log-softmax along `dim` against the f64 reference, and softmax rows summing to 1.
fn check_softmax<E: Float>((t, dim, _): (Tensor<E>, isize, bool), eps: f64) -> Check {
    let rank = t.rank() as isize;
    let d = dim.rem_euclid(rank) as usize;
    let data = f64s(&t);
    let shape = t.shape().to_vec();
    let (p, lp) = (t.softmax(dim), t.log_softmax(dim));
    prop_assert_eq!(p.shape(), t.shape());
    prop_assert_eq!(lp.shape(), t.shape());
    let (p, lp) = (f64s(&p), f64s(&lp));
    let n = shape[d];
    let inner: usize = shape[d + 1..].iter().product();
    // Each row along `dim` is {base + k * inner}, base ranging over the other indices.
    for base in (0..data.len()).filter(|i| (i / inner).is_multiple_of(n)) {
        let row: Vec<usize> = (0..n).map(|k| base + k * inner).collect();
        let xs: Vec<f64> = row.iter().map(|&i| data[i]).collect();
        let lse = ref_logsumexp(&xs);
        let tol = 4.0 * (n + 10) as f64 * eps;
        let got_p: Vec<f64> = row.iter().map(|&i| p[i]).collect();
        let want_p: Vec<f64> = xs.iter().map(|x| (x - lse).exp()).collect();
        close(&got_p, &want_p, &vec![tol; n])?;
        close(&[got_p.iter().sum::<f64>()], &[1.0], &[tol])?;
        let got_lp: Vec<f64> = row.iter().map(|&i| lp[i]).collect();
        prop_assert!(got_lp.iter().all(|v| v.is_finite()), "log_softmax not finite: {:?} of {:?}", got_lp, xs);
        let want_lp: Vec<f64> = xs.iter().map(|x| x - lse).collect();
        let tol_lp: Vec<f64> = want_lp.iter().zip(&xs).map(|(w, x)| tol * (1.0 + w.abs() + x.abs())).collect();
        close(&got_lp, &want_lp, &tol_lp)?;
    }
    Ok(())
}

fn check_sum_to<E: Num>(t: Tensor<E>, target: Vec<usize>, eps: f64) -> Check {
    let s = t.sum_to(&target);
    prop_assert_eq!(s.shape(), target.as_slice());
    if t.shape() == target.as_slice() {
        prop_assert!(s.shares_storage(&t));
    }
    let shape = t.shape().to_vec();
    let lead = shape.len() - target.len();
    let mut want = vec![0.0; target.iter().product()];
    let mut abs = vec![0.0; want.len()];
    let mut idx = vec![0; shape.len()];
    for (i, x) in f64s(&t).into_iter().enumerate() {
        let mut rest = i;
        for d in (0..shape.len()).rev() {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        let o = (0..target.len()).fold(0, |o, j| o * target[j] + if target[j] == 1 { 0 } else { idx[lead + j] });
        want[o] += x;
        abs[o] += x.abs();
    }
    let group = t.numel() / want.len().max(1);
    let tol: Vec<f64> = abs.iter().map(|a| (group + 1) as f64 * eps * a).collect();
    close(&f64s(&s), &want, &tol)
}

/// Orders a broadcastable pair so that the second broadcasts to the first.
fn big_small((a, b): (Vec<usize>, Vec<usize>)) -> (Vec<usize>, Vec<usize>) {
    let fits = |small: &[usize], big: &[usize]| {
        small.len() <= big.len() && small.iter().rev().zip(big.iter().rev()).all(|(&s, &b)| s == b || s == 1)
    };
    if fits(&b, &a) {
        (a, b)
    } else {
        (b, a)
    }
}

const F32: f64 = f32::EPSILON as f64;
const F64: f64 = f64::EPSILON;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sum_f32(c in case::<f32>(4, 5)) { check_sum(c, F32)?; }
    #[test]
    fn sum_f64(c in case::<f64>(4, 5)) { check_sum(c, F64)?; }
    #[test]
    fn sum_i32(c in case::<i32>(4, 5)) { check_sum(c, 0.0)?; }
    #[test]
    fn sum_i64(c in case::<i64>(4, 5)) { check_sum(c, 0.0)?; }

    // Every product stays in range: |x| < 4 gives at most 4^48 for f32 and 4^256 for f64;
    // integers in -3..=3 give at most 3^16 for i32 and 3^27 for i64.
    #[test]
    fn prod_f32(c in case::<f32>(3, 4).prop_filter("small", |c| c.0.numel() <= 48)) { check_prod(c, F32)?; }
    #[test]
    fn prod_f64(c in case::<f64>(4, 4)) { check_prod(c, F64)?; }
    #[test]
    fn prod_i32(c in case::<i32>(2, 4)) { check_prod(c, 0.0)?; }
    #[test]
    fn prod_i64(c in case::<i64>(3, 3)) { check_prod(c, 0.0)?; }

    #[test]
    fn max_min_f32(c in case::<f32>(4, 5)) { check_max_min(c)?; }
    #[test]
    fn max_min_f64(c in case::<f64>(4, 5)) { check_max_min(c)?; }
    #[test]
    fn max_min_i32(c in case::<i32>(4, 5)) { check_max_min(c)?; }
    #[test]
    fn max_min_i64(c in case::<i64>(4, 5)) { check_max_min(c)?; }

    #[test]
    fn max_min_propagate_nan(
        (t, dims, keepdim) in shape(4, 4)
            .prop_flat_map(|s| (Just(s.len()), arranged::<f64>(s, tie_or_nan())))
            .prop_flat_map(|(rank, t)| (Just(t), dims_of(rank), any::<bool>()))
    ) {
        prop_assume!(t.numel() > 0);
        check_max_min((t, dims, keepdim))?;
    }

    #[test]
    fn arg_f32(c in dim_case::<f32>(4, 5)) { check_arg(c)?; }
    #[test]
    fn arg_f64(c in dim_case::<f64>(4, 5)) { check_arg(c)?; }
    // Integers in -3..=3 tie often: the first occurrence must win.
    #[test]
    fn arg_i32_ties(c in dim_case::<i32>(4, 5)) { check_arg(c)?; }
    #[test]
    fn arg_i64_ties(c in dim_case::<i64>(4, 5)) { check_arg(c)?; }

    #[test]
    fn arg_ties_and_nan_f32(
        c in shape_in(1, 4, 5)
            .prop_flat_map(|s| { let r = s.len() as isize; (arranged::<f32>(s, tie_or_nan()), -r..r, any::<bool>()) })
    ) { check_arg(c)?; }

    #[test]
    fn stats_f32(c in case::<f32>(4, 5), correction in 0usize..3) { check_float_stats(c, correction, F32)?; }
    #[test]
    fn stats_f64(c in case::<f64>(4, 5), correction in 0usize..3) { check_float_stats(c, correction, F64)?; }

    #[test]
    fn softmax_f32(c in dim_case::<f32>(4, 5)) { check_softmax(c, F32)?; }
    #[test]
    fn softmax_f64(c in dim_case::<f64>(4, 5)) { check_softmax(c, F64)?; }

    // Logits of +-1e4 (often tied, often 2e4 apart) stay finite and accurate.
    #[test]
    fn softmax_huge_logits_f32(
        c in shape_in(1, 3, 5).prop_flat_map(|s| {
            let r = s.len() as isize;
            let big = prop_oneof![Just(1e4), Just(-1e4), -1e4..1e4f64];
            (arranged::<f32>(s, big), -r..r, any::<bool>())
        })
    ) { check_softmax(c, F32)?; }

    #[test]
    fn sum_to_f32(
        (t, small) in broadcastable_shapes(4, 5)
            .prop_map(big_small)
            .prop_flat_map(|(big, small)| (any_layout::<f32>(big), Just(small)))
    ) { check_sum_to(t, small, F32)?; }

    #[test]
    fn sum_to_f64(
        (t, small) in broadcastable_shapes(4, 5)
            .prop_map(big_small)
            .prop_flat_map(|(big, small)| (any_layout::<f64>(big), Just(small)))
    ) { check_sum_to(t, small, F64)?; }

    #[test]
    fn sum_to_i64(
        (t, small) in broadcastable_shapes(4, 5)
            .prop_map(big_small)
            .prop_flat_map(|(big, small)| (any_layout::<i64>(big), Just(small)))
    ) { check_sum_to(t, small, 0.0)?; }
}

// ------------------------------------------------------------------ edge cases

#[test]
fn empty_dims_reduce_nothing() {
    let t = Tensor::from_vec((0..6).map(f64::from).collect(), &[2, 3]).t();
    for keepdim in [false, true] {
        let s = t.sum_dims(&[], keepdim);
        assert_eq!(s.shape(), &[3, 2]);
        assert!(s.is_contiguous());
        assert_eq!(s.to_vec(), t.to_vec());
        assert_eq!(t.max_dims(&[], keepdim).to_vec(), t.to_vec());
        assert_eq!(t.mean_dims(&[], keepdim).to_vec(), t.to_vec());
        assert_eq!(t.logsumexp_dims(&[], keepdim).to_vec(), t.to_vec());
        assert_eq!(t.var_dims(&[], 0, keepdim).to_vec(), vec![0.0; 6]);
        assert!(t.var_dims(&[], 1, keepdim).to_vec().iter().all(|v| v.is_nan()));
    }
}

#[test]
fn zero_dim_tensors() {
    let x = Tensor::scalar(3.0f32);
    assert_eq!(x.sum().shape(), &[] as &[usize]);
    assert_eq!(x.sum_dims(&[0], true).shape(), &[] as &[usize]);
    assert_eq!(x.sum_dims(&[-1], false).item(), 3.0);
    assert_eq!(x.max_dim(0, false), (Tensor::scalar(3.0), Tensor::scalar(0)));
    assert_eq!(x.softmax(0).item(), 1.0);
    assert_eq!(x.log_softmax(-1).item(), 0.0);
    assert_eq!(x.sum_to(&[]).item(), 3.0);
}

#[test]
fn full_reduction_of_a_matrix_is_0d() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(x.sum_dims(&[0, 1], false).shape(), &[] as &[usize]);
    assert_eq!(x.sum_dims(&[1, -2], true).shape(), &[1, 1]);
    assert_eq!(x.sum_dims(&[1, -2], true).item(), 10.0);
}

#[test]
fn empty_tensors() {
    let x = Tensor::<f64>::zeros(&[0, 3]);
    assert_eq!(x.sum_dims(&[0], false).to_vec(), vec![0.0; 3]);
    assert_eq!(x.prod_dims(&[0], true).to_vec(), vec![1.0; 3]);
    assert!(x.mean_dims(&[0], false).to_vec().iter().all(|v| v.is_nan()));
    assert!(x.var_dims(&[0], 1, false).to_vec().iter().all(|v| v.is_nan()));
    assert_eq!(x.logsumexp_dims(&[0], false).to_vec(), vec![f64::NEG_INFINITY; 3]);
    assert_eq!(x.max_dims(&[1], false).shape(), &[0]);
    assert_eq!(x.argmax(1, true).shape(), &[0, 1]);
    assert_eq!(x.sum().item(), 0.0);
    assert_eq!(x.softmax(0).shape(), &[0, 3]);
    assert_eq!(x.sum_to(&[1, 3]).to_vec(), vec![0.0; 3]);
}

#[test]
fn logsumexp_infinities() {
    let inf = f64::INFINITY;
    let x = Tensor::from_vec(vec![-inf, -inf, 1.0, inf, f64::NAN, inf, 1e308, 1e308], &[4, 2]);
    let l = x.logsumexp_dims(&[1], false).to_vec();
    assert_eq!(l[0], -inf);
    assert_eq!(l[1], inf);
    assert!(l[2].is_nan());
    assert!((l[3] - (1e308 + 2f64.ln())).abs() <= 1e292);
    // The same over dim 0 of the transpose exercises the slab-by-slab traversal.
    let l = x.t().contiguous().logsumexp_dims(&[0], false).to_vec();
    assert_eq!(l[0], -inf);
    assert_eq!(l[1], inf);
    assert!(l[2].is_nan());
    assert!(l[3].is_finite());
}

#[test]
fn sum_to_shares_when_shapes_match() {
    let x = Tensor::<f32>::ones(&[2, 3]);
    assert!(x.sum_to(&[2, 3]).shares_storage(&x));
}

#[test]
fn long_f32_sum_is_accurate() {
    // 10^5 copies of 0.1: a running f32 sum (or eight of them) is off by ~1.3e-4 relative. The
    // pairwise folds do far better within a row, and across the rows of a batch, where runs of
    // up to max(32, 1024 / row length) rows are summed in sequence.
    let n = 100_000;
    let want = 0.1f32 as f64 * n as f64;
    let x = Tensor::<f32>::full(&[n], 0.1);
    assert!((x.sum().item() as f64 - want).abs() / want < 1e-6, "sum {}", x.sum().item());
    for strided in [x.flip(&[0]), Tensor::<f32>::full(&[2 * n], 0.1).slice(0, 1, 2 * n, 2)] {
        let s = strided.sum().item();
        assert!((s as f64 - want).abs() / want < 1e-6, "strided sum {s}");
    }
    let rows = Tensor::<f32>::full(&[n, 16], 0.1);
    for s in rows.sum_dims(&[0], false).to_vec() {
        assert!((s as f64 - want).abs() / want < 1e-5, "batch sum {s}");
    }
    let var = Tensor::<f32>::full(&[n, 3], 0.1).var_dims(&[0], 0, false);
    assert!(var.to_vec().iter().all(|&v| v.abs() < 1e-12), "{var:?}");
}

#[test]
fn long_reductions_match_the_reference() {
    // Long enough that every traversal splits in halves: blocks of more than 1024 elements
    // (contiguous, flipped, stepped) and more than max(32, 1024 / outputs) slabs.
    let data: Vec<f64> = (0..3 * 2500).map(|i| ((i * 37) % 101) as f64 - 50.0).collect();
    let t = Tensor::from_vec(data.clone(), &[2500, 3]);
    let stepped = Tensor::from_vec(data, &[7500]).slice(0, 1, 7500, 3);
    let cases = [
        (t.clone(), 0),
        (t.t(), 1),
        (t.t().contiguous(), 1),
        (t.flip(&[0]), 0),
        (t.t().contiguous().flip(&[1]), 1),
        (stepped.clone(), 0),
        (stepped.reshape(&[50, 50]), 0),
    ];
    for (x, dim) in cases {
        check_sum((x.clone(), vec![dim], false), F64).unwrap();
        check_max_min((x.clone(), vec![dim], true)).unwrap();
        check_arg((x.clone(), dim, false)).unwrap();
        check_float_stats((x.clone(), vec![dim], false), 1, F64).unwrap();
        check_float_stats((x, vec![], false), 0, F64).unwrap();
    }
}

// ------------------------------------------------------------------ shape errors

#[test]
#[should_panic(expected = "sum_dims: dim 2 is out of range")]
fn bad_dim_panics() {
    Tensor::<f32>::zeros(&[2, 3]).sum_dims(&[2], false);
}

#[test]
#[should_panic(expected = "mean_dims: dim -1 is repeated in dims [1, -1]")]
fn repeated_dim_panics() {
    Tensor::<f32>::zeros(&[2, 3]).mean_dims(&[1, -1], false);
}

#[test]
#[should_panic(expected = "argmax: dim -3 is out of range")]
fn bad_arg_dim_panics() {
    Tensor::<f32>::zeros(&[2, 3]).argmax(-3, false);
}

#[test]
#[should_panic(expected = "softmax: dim 2 is out of range")]
fn bad_softmax_dim_panics() {
    Tensor::<f32>::zeros(&[2, 3]).softmax(2);
}

#[test]
#[should_panic(expected = "sum_to: shape [2, 3] cannot be summed to [2]")]
fn sum_to_incompatible_panics() {
    Tensor::<f32>::zeros(&[2, 3]).sum_to(&[2]);
}

#[test]
#[should_panic(expected = "sum_to: shape [3] cannot be summed to [2, 3]")]
fn sum_to_larger_panics() {
    Tensor::<f32>::zeros(&[3]).sum_to(&[2, 3]);
}

#[test]
#[should_panic(expected = "max: cannot reduce zero elements (tensor of shape [0, 2], dims [0, 1])")]
fn max_of_empty_panics() {
    Tensor::<f32>::zeros(&[0, 2]).max();
}

#[test]
#[should_panic(expected = "min_dims: cannot reduce zero elements (tensor of shape [0, 2], dims [0])")]
fn min_over_empty_dim_panics() {
    Tensor::<i32>::zeros(&[0, 2]).min_dims(&[0], false);
}

#[test]
#[should_panic(expected = "argmin: cannot reduce zero elements")]
fn argmin_over_empty_dim_panics() {
    Tensor::<f64>::zeros(&[3, 0]).argmin(1, false);
}
