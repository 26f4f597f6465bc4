//! `matmul`, `mm` and `dot` against a triple-loop f64 reference with PyTorch's shape rules, over
//! random shapes (1-D operands, broadcast batch dims) and every layout the testing strategies
//! make (transposed, stepped, flipped, broadcast), for f32 and f64, single- and multi-threaded.

use ferrograd_tensor::testing::{any_layout, broadcastable_shapes, with_layout, LayoutKind};
use ferrograd_tensor::{
    min_work_per_thread, num_threads, set_min_work_per_thread, set_num_threads, Element, Float, Tensor,
};
use proptest::prelude::*;
use rand::SeedableRng;

/// `torch.matmul` of row-major data, index by index: the output shape, the values, and for each
/// value the sum of `|a| |b|` over its products (the scale of its rounding error).
fn reference(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let pa: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
    let pb: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
    let (m, k, n) = (pa[pa.len() - 2], pa[pa.len() - 1], pb[pb.len() - 1]);
    assert_eq!(k, pb[pb.len() - 2]);
    let rank = (pa.len() - 2).max(pb.len() - 2);
    // Batch dims padded with leading ones to the common rank.
    let pad = |p: &[usize]| {
        let mut v = vec![1; rank - (p.len() - 2)];
        v.extend_from_slice(&p[..p.len() - 2]);
        v
    };
    let (ba, bb) = (pad(&pa), pad(&pb));
    let batch: Vec<usize> = ba.iter().zip(&bb).map(|(&x, &y)| x.max(y)).collect();
    let entries: usize = batch.iter().product();
    let (mut out, mut bound) = (vec![], vec![]);
    for t in 0..entries {
        // Row-major multi-index of entry t, then the matching entry of each operand.
        let mut idx = vec![0; rank];
        let mut rest = t;
        for d in (0..rank).rev() {
            idx[d] = rest % batch[d];
            rest /= batch[d];
        }
        let (mut ea, mut eb) = (0, 0);
        for d in 0..rank {
            ea = ea * ba[d] + if ba[d] == 1 { 0 } else { idx[d] };
            eb = eb * bb[d] + if bb[d] == 1 { 0 } else { idx[d] };
        }
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut s_abs) = (0.0, 0.0);
                for p in 0..k {
                    let x = a[(ea * m + i) * k + p] * b[(eb * k + p) * n + j];
                    s += x;
                    s_abs += x.abs();
                }
                out.push(s);
                bound.push(s_abs);
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    (shape, out, bound)
}

fn to_f64<E: Element>(t: &Tensor<E>) -> Vec<f64> {
    t.to_vec().into_iter().map(Element::to_f64).collect()
}

/// `a.matmul(b)` equals the reference up to rounding, has its shape, and is contiguous.
fn check<E: Float>(a: &Tensor<E>, b: &Tensor<E>) -> Result<(), TestCaseError> {
    check_product(&a.matmul(b), a, b)
}

/// `got` is the product of `a` and `b` by the reference, up to rounding, and contiguous.
fn check_product<E: Float>(got: &Tensor<E>, a: &Tensor<E>, b: &Tensor<E>) -> Result<(), TestCaseError> {
    let (shape, want, bound) = reference(&to_f64(a), a.shape(), &to_f64(b), b.shape());
    prop_assert_eq!(got.shape(), shape.as_slice());
    prop_assert!(got.is_contiguous());
    let k = a.shape()[a.rank() - 1] as f64;
    let eps = E::epsilon().to_f64();
    for (i, ((g, w), s)) in to_f64(got).iter().zip(&want).zip(&bound).enumerate() {
        prop_assert!(
            (g - w).abs() <= (k + 2.0) * eps * s,
            "element {}: got {}, want {} (a {:?}, b {:?})",
            i,
            g,
            w,
            a,
            b
        );
    }
    Ok(())
}

/// Operand shapes for matmul: either side may be a vector; matrices get batch dims that broadcast
/// against each other (dropped leading dims, size-1 dims).
fn matmul_shapes(max_mn: usize, max_k: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (broadcastable_shapes(2, 3), any::<bool>(), any::<bool>(), 1..=max_mn, 1..=max_k, 1..=max_mn).prop_map(
        |((ba, bb), a_vec, b_vec, m, k, n)| {
            let a = if a_vec { vec![k] } else { [ba, vec![m, k]].concat() };
            let b = if b_vec { vec![k] } else { [bb, vec![k, n]].concat() };
            (a, b)
        },
    )
}

fn operands<E: Element>(max_mn: usize, max_k: usize) -> impl Strategy<Value = (Tensor<E>, Tensor<E>)> {
    matmul_shapes(max_mn, max_k).prop_flat_map(|(a, b)| (any_layout::<E>(a), any_layout::<E>(b)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matmul_f64_matches_reference((a, b) in operands::<f64>(5, 5)) {
        check(&a, &b)?;
    }

    #[test]
    fn matmul_f32_matches_reference((a, b) in operands::<f32>(5, 5)) {
        check(&a, &b)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Transposed (permuted) operands, the case matrixmultiply reads through column strides.
    #[test]
    fn matmul_of_transposed_views((sa, sb) in matmul_shapes(6, 6)) {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let a = with_layout::<f32>(sa, LayoutKind::Permuted).new_tree(&mut runner).unwrap().current();
        let b = with_layout::<f32>(sb, LayoutKind::Permuted).new_tree(&mut runner).unwrap().current();
        check(&a, &b)?;
    }

    #[test]
    fn mm_matches_reference(
        (a, b) in (1..=5usize, 1..=5usize, 1..=5usize)
            .prop_flat_map(|(m, k, n)| (any_layout::<f32>(vec![m, k]), any_layout::<f32>(vec![k, n])))
    ) {
        check_product(&a.mm(&b), &a, &b)?;
    }

    #[test]
    fn dot_matches_reference(
        (u, v) in (1..=6usize).prop_flat_map(|k| (any_layout::<f64>(vec![k]), any_layout::<f64>(vec![k])))
    ) {
        check_product(&u.dot(&v), &u, &v)?;
    }
}

/// f32 products of 8 rows or more (rows, depth and width around the packed kernel's micro-tile,
/// panel, depth pass and row block): against the reference in every layout, and the same bits on
/// 1, 2 and 3 threads (with the work threshold lowered so that they are split at all).
fn check_packed_sizes(a: &Tensor<f32>, b: &Tensor<f32>) -> Result<(), TestCaseError> {
    let (old_threads, old_min_work) = (num_threads(), min_work_per_thread());
    let mut first: Option<Vec<u32>> = None;
    let mut result = Ok(());
    for threads in [1, 2, 3] {
        set_num_threads(threads);
        set_min_work_per_thread(if threads == 1 { old_min_work } else { 0 });
        let got = a.matmul(b);
        result = result.and(check_product(&got, a, b));
        let bits: Vec<u32> = got.to_vec().iter().map(|v| v.to_bits()).collect();
        match &first {
            None => first = Some(bits),
            Some(want) if *want != bits => {
                result = result.and(Err(TestCaseError::fail(format!(
                    "{:?} x {:?}: other bits on {threads} threads",
                    a.shape(),
                    b.shape()
                ))));
            }
            Some(_) => {}
        }
    }
    set_num_threads(old_threads);
    set_min_work_per_thread(old_min_work);
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matmul_f32_of_many_rows_matches_reference(
        (a, b) in (8..=40usize, 1..=300usize, 1..=70usize)
            .prop_flat_map(|(m, k, n)| (any_layout::<f32>(vec![m, k]), any_layout::<f32>(vec![k, n])))
    ) {
        check_packed_sizes(&a, &b)?;
    }
}

/// Row blocks, depth passes and panels all more than one, with a partial last one of each.
#[test]
fn matmul_f32_large_row_major_products() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (m, k, n) in [(457, 300, 70), (200, 257, 33), (9, 513, 100), (600, 40, 70)] {
        let a = Tensor::<f32>::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&[n, k], -1.0, 1.0, &mut rng);
        check_packed_sizes(&a, &w.t()).unwrap();
        check_packed_sizes(&a, &w.t().contiguous()).unwrap();
    }
}

/// The threaded split (batch entries, row blocks, column blocks) on shapes big enough to cut,
/// with the work threshold lowered so these small products are split at all.
#[test]
fn threaded_products_match_reference() {
    let (old_threads, old_min_work) = (num_threads(), min_work_per_thread());
    set_num_threads(3);
    set_min_work_per_thread(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    let result = runner.run(&operands::<f64>(40, 6), |(a, b)| check(&a, &b));
    set_num_threads(old_threads);
    set_min_work_per_thread(old_min_work);
    result.unwrap();
}

#[test]
fn transposed_and_flipped_operands() {
    let a = Tensor::<f64>::from_fn(&[4, 3], |i| (i * 7 % 11) as f64);
    let b = Tensor::<f64>::from_fn(&[3, 4], |i| (i * 5 % 13) as f64 - 6.0);
    let cases = [(a.t(), a.clone()), (b.clone(), b.t()), (a.t(), b.t()), (a.flip(&[0]), b.flip(&[0, 1]))];
    for (x, y) in cases {
        assert!(!x.is_contiguous() || !y.is_contiguous());
        check(&x, &y).unwrap();
    }
}

#[test]
fn broadcast_batch_dims_example() {
    let a = Tensor::<f32>::from_fn(&[2, 1, 3, 4], |i| i as f32 * 0.5);
    let b = Tensor::<f32>::from_fn(&[5, 4, 6], |i| 1.0 - i as f32 * 0.01);
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[2, 5, 3, 6]);
    // Entry [1, 3] is a[1, 0] @ b[3].
    let want = a.select(0, 1).select(0, 0).matmul(&b.select(0, 3));
    assert_eq!(c.select(0, 1).select(0, 3), want);
}

#[test]
fn zero_sizes() {
    let z = Tensor::<f32>::zeros(&[2, 0]).matmul(&Tensor::zeros(&[0, 3]));
    assert_eq!((z.shape(), z.to_vec()), (&[2usize, 3][..], vec![0.0; 6]));
    let z = Tensor::<f64>::ones(&[3, 0]).t().matmul(&Tensor::ones(&[3, 2]));
    assert_eq!((z.shape(), z.to_vec()), (&[0usize, 2][..], vec![]));
    let z = Tensor::<f64>::ones(&[0]).dot(&Tensor::ones(&[0]));
    assert_eq!((z.shape(), z.item()), (&[][..], 0.0));
    let z = Tensor::<f32>::ones(&[0, 2, 3]).matmul(&Tensor::ones(&[3, 4]));
    assert_eq!(z.shape(), &[0, 2, 4]);
    let z = Tensor::<f32>::ones(&[2, 1, 3, 0]).matmul(&Tensor::ones(&[3, 0, 4]));
    assert_eq!((z.shape(), z.to_vec()), (&[2usize, 3, 3, 4][..], vec![0.0; 72]));
}

#[test]
fn vector_cases() {
    let v = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0], &[3]);
    let m = Tensor::<f64>::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
    assert_eq!(v.matmul(&m), Tensor::from_vec(vec![4.0, 5.0], &[2]));
    assert_eq!(m.t().matmul(&v), Tensor::from_vec(vec![4.0, 5.0], &[2]));
    assert_eq!(v.matmul(&v), Tensor::scalar(14.0));
    let batched = Tensor::<f64>::ones(&[4, 2, 3]).matmul(&v);
    assert_eq!(batched, Tensor::full(&[4, 2], 6.0));
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 3] and [4, 5] are not compatible (3 != 4)")]
fn inner_size_mismatch() {
    Tensor::<f32>::zeros(&[2, 3]).matmul(&Tensor::zeros(&[4, 5]));
}

#[test]
#[should_panic(expected = "matmul: shapes [3] and [4] are not compatible (3 != 4)")]
fn vector_length_mismatch() {
    Tensor::<f32>::zeros(&[3]).matmul(&Tensor::zeros(&[4]));
}

#[test]
#[should_panic(
    expected = "matmul: shapes [2, 2, 3] and [3, 3, 4] are not compatible (batch dims [2] and [3] cannot be broadcast together)"
)]
fn batch_mismatch() {
    Tensor::<f64>::zeros(&[2, 2, 3]).matmul(&Tensor::zeros(&[3, 3, 4]));
}

#[test]
#[should_panic(expected = "matmul: both arguments need to be at least 1-D, got shapes [] and [3]")]
fn scalar_operand() {
    Tensor::<f64>::scalar(1.0).matmul(&Tensor::zeros(&[3]));
}

#[test]
#[should_panic(expected = "mm: expects two 2-D tensors, got shapes [3] and [3, 2]")]
fn mm_needs_matrices() {
    Tensor::<f32>::zeros(&[3]).mm(&Tensor::zeros(&[3, 2]));
}

#[test]
#[should_panic(expected = "mm: shapes [2, 3] and [2, 3] are not compatible (3 != 2)")]
fn mm_inner_size_mismatch() {
    Tensor::<f32>::zeros(&[2, 3]).mm(&Tensor::zeros(&[2, 3]));
}

#[test]
#[should_panic(expected = "dot: expects two 1-D tensors, got shapes [1, 3] and [3]")]
fn dot_needs_vectors() {
    Tensor::<f32>::zeros(&[1, 3]).dot(&Tensor::zeros(&[3]));
}

#[test]
#[should_panic(expected = "dot: shapes [3] and [2] are not compatible (3 != 2)")]
fn dot_length_mismatch() {
    Tensor::<f32>::zeros(&[3]).dot(&Tensor::zeros(&[2]));
}

#[test]
#[should_panic(expected = "set_num_threads: expected 1..=4096 threads, got 0")]
fn zero_threads() {
    set_num_threads(0);
}

/// `linear` is the product with the transposed weight plus the broadcast bias: against the f64
/// formula within f32 rounding (in f32 with rows in place, the packed kernel starts its sums from
/// the bias, as PyTorch's `addmm` does, so the bits differ from `matmul` then `+`), the same bits
/// on 1 and 3 threads, over leading dims, strided inputs, without a bias (then exactly `matmul`),
/// and empty sizes, with the work threshold 0 on 3 threads so that everything splits.
#[test]
fn linear_is_the_product_plus_the_bias() {
    let (old_threads, old_min_work) = (num_threads(), min_work_per_thread());
    let cases: [(&[usize], usize); 7] =
        [(&[5, 7], 3), (&[2, 3, 7], 4), (&[7], 2), (&[33, 16], 40), (&[0, 5], 3), (&[4, 0], 3), (&[300, 20], 70)];
    let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut first = std::collections::HashMap::new();
    for threads in [1, 3] {
        set_num_threads(threads);
        set_min_work_per_thread(if threads == 1 { old_min_work } else { 0 });
        for &(xs, out) in &cases {
            let k = xs[xs.len() - 1];
            let x = Tensor::<f32>::from_fn(xs, |i| ((i * 7919 % 101) as f32 - 50.0) / 17.0);
            let w = Tensor::<f32>::from_fn(&[out, k], |i| ((i * 31 % 13) as f32 - 6.0) / 5.0);
            let b = Tensor::<f32>::from_fn(&[out], |i| i as f32 * 0.3 - 1.0);
            // the same values as a strided view: a transposed copy transposed back
            let strided = if xs.len() == 2 { x.t().contiguous().t() } else { x.clone() };
            for (layout, x) in [x.clone(), strided].into_iter().enumerate() {
                let got = x.linear(&w, Some(&b));
                let (x64, w64, b64) = (x.cast::<f64>(), w.cast::<f64>(), b.cast::<f64>());
                let want = &x64.matmul(&w64.t()) + &b64;
                let scale = &x64.abs().matmul(&w64.t().abs()) + &b64.abs();
                assert_eq!(got.shape(), want.shape(), "{xs:?} x {out}");
                for ((g, w), s) in got.to_vec().iter().zip(want.to_vec()).zip(scale.to_vec()) {
                    let bound = (k + 1) as f64 * f32::EPSILON as f64 * s;
                    assert!((*g as f64 - w).abs() <= bound, "{xs:?} x {out}: {g} against {w} (bound {bound})");
                }
                let got_bits = bits(&got);
                let want_bits = first.entry((xs, layout)).or_insert_with(|| got_bits.clone());
                assert_eq!(&got_bits, want_bits, "{xs:?} x {out} on {threads} threads");
                assert_eq!(bits(&x.linear(&w, None)), bits(&x.matmul(&w.t())), "{xs:?} x {out}, no bias");
            }
        }
    }
    set_num_threads(old_threads);
    set_min_work_per_thread(old_min_work);
}

#[test]
#[should_panic(expected = "linear: bias shape [4] is not [3] for weight shape [3, 2]")]
fn linear_bias_shape_mismatch() {
    Tensor::<f32>::zeros(&[5, 2]).linear(&Tensor::zeros(&[3, 2]), Some(&Tensor::zeros(&[4])));
}

#[test]
#[should_panic(expected = "linear: input shape [5, 2] does not end in in_features of weight shape [3, 4]")]
fn linear_weight_shape_mismatch() {
    Tensor::<f32>::zeros(&[5, 2]).linear(&Tensor::zeros(&[3, 4]), None);
}

/// Products deep enough to be cut in two halves along the depth (k at least 512 and twice the
/// output's larger side, both sides at least 64): against the reference, with strided and
/// transposed operands, and the same bits on 1, 2 and 3 threads (the cut depends on the shape
/// alone). Shapes just outside the rule, which take the row and column splits, are in the mix.
#[test]
fn depth_split_products_match_reference_and_thread_counts() {
    let (old_threads, old_min_work) = (num_threads(), min_work_per_thread());
    let shapes = [(64, 600, 64), (128, 784, 128), (65, 1031, 70), (64, 512, 256), (63, 800, 64), (128, 500, 128)];
    for (m, k, n) in shapes {
        let a = Tensor::<f32>::from_fn(&[m, k], |i| ((i * 7919 % 211) as f32 - 105.0) / 50.0);
        let b = Tensor::<f32>::from_fn(&[n, k], |i| ((i * 104_729 % 97) as f32 - 48.0) / 40.0).t();
        let a_strided = a.t().contiguous().t();
        // Per layout of A: a row-major A takes the packed f32 kernel, a column-major one
        // matrixmultiply, whose sums round differently.
        let mut first: [Option<Vec<u32>>; 2] = [None, None];
        for threads in [1, 2, 3] {
            set_num_threads(threads);
            set_min_work_per_thread(if threads == 1 { old_min_work } else { 0 });
            for (x, first) in [&a, &a_strided].into_iter().zip(&mut first) {
                let got = x.matmul(&b);
                check_product(&got, x, &b).unwrap();
                let bits: Vec<u32> = got.to_vec().iter().map(|v| v.to_bits()).collect();
                match first {
                    None => *first = Some(bits),
                    Some(want) => assert_eq!(&bits, want, "{m}x{k}x{n} {:?} on {threads} threads", x.strides()),
                }
            }
            let (a64, b64) = (a.cast::<f64>(), b.cast::<f64>());
            check_product(&a64.matmul(&b64), &a64, &b64).unwrap();
        }
    }
    set_num_threads(old_threads);
    set_min_work_per_thread(old_min_work);
}
