//! The fused attention kernels against the same computation from separate ops, over random
//! shapes, layouts, broadcast batch dims and masks (additive, boolean, causal, dropout).

use ferrograd_tensor::testing::any_layout;
use ferrograd_tensor::{AttentionMasks, Tensor};
use proptest::prelude::*;

/// `softmax(q kᵀ · scale + bias, masked)`, fully masked rows zero, from separate ops.
fn reference_probs(
    q: &Tensor<f64>,
    k: &Tensor<f64>,
    scale: f64,
    bias: &Tensor<f64>,
    keep: &Tensor<bool>,
    causal: bool,
) -> Tensor<f64> {
    let s = q.matmul(&k.transpose(-2, -1)).mul_scalar(scale).add(bias);
    let (l, n) = (s.shape()[s.rank() - 2], s.shape()[s.rank() - 1]);
    let mut keep = keep.broadcast_to(s.shape()).contiguous();
    if causal {
        keep = keep.logical_and(&Tensor::tril_mask(l, n, 0));
    }
    let s = s.masked_fill(&keep.logical_not(), f64::NEG_INFINITY);
    let any = keep.map(|b| if b { 1.0 } else { 0.0 }).sum_dims(&[-1], true).gt_scalar(0.0);
    let p = s.masked_fill(&any.logical_not(), 0.0).softmax(-1);
    p.masked_fill(&keep.logical_not(), 0.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fused_attention_matches_separate_ops(
        ((h, l, s, e), q) in (1usize..4, 1usize..5, 1usize..5, 1usize..4)
            .prop_flat_map(|d| (Just(d), any_layout::<f64>(vec![2, d.0, d.1, d.3]))),
        ev in 1usize..4,
        causal in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let f = |i: usize, salt: u64| ((i as u64 * 2654435761 + seed * 97 + salt) % 1000) as f64 / 250.0 - 2.0;
        let k = Tensor::from_fn(&[2, 1, s, e], |i| f(i, 1)); // broadcast over heads
        let v = Tensor::from_fn(&[2, h, s, ev], |i| f(i, 2)).transpose(0, 1).contiguous().transpose(0, 1);
        let bias = Tensor::from_fn(&[l, s], |i| f(i, 3));
        let keep = Tensor::from_fn(&[2, 1, 1, s], |i| !(i as u64 + seed).is_multiple_of(3));
        let drop = Tensor::from_fn(&[2, h, l, s], |i| if (i as u64 * 7 + seed).is_multiple_of(4) { 0.0 } else { 4.0 / 3.0 });
        let masks = AttentionMasks { bias: Some(&bias), keep: Some(&keep), causal, dropout: Some(&drop) };
        let fwd = q.attention_forward(&k, &v, 0.7, &masks);
        let p = reference_probs(&q, &k, 0.7, &bias, &keep, causal);
        prop_assert!(fwd.probs.max_abs_diff(&p) < 1e-12);
        let want = p.mul(&drop).matmul(&v);
        prop_assert!(fwd.out.max_abs_diff(&want) < 1e-12);

        // Backward: the gradient of sum(out * g) with respect to v is (p * drop)ᵀ g, and the
        // scores' gradient is p * (dp - rowsum(dp * p)) with dp = (g vᵀ) * drop.
        // The output's gradient as merged heads hand it back: a [2, l, h, ev] buffer seen as
        // [2, h, l, ev].
        let g = Tensor::from_fn(&[2, l, h, ev], |i| f(i, 4)).transpose(1, 2);
        let gr = q.attention_backward(&k, &v, &fwd.probs, Some(&drop), &g, 0.7, true);
        let pd = p.mul(&drop);
        prop_assert!(gr.v.max_abs_diff(&pd.transpose(-2, -1).matmul(&g)) < 1e-12);
        let dp = g.matmul(&v.transpose(-2, -1)).mul(&drop);
        let ds = p.mul(&dp.sub(&dp.mul(&p).sum_dims(&[-1], true)));
        prop_assert!(gr.scores.as_ref().unwrap().max_abs_diff(&ds) < 1e-12);
        prop_assert!(gr.q.max_abs_diff(&ds.matmul(&k).mul_scalar(0.7)) < 1e-12);
        prop_assert!(gr.k.max_abs_diff(&ds.transpose(-2, -1).matmul(&q).mul_scalar(0.7)) < 1e-12);
    }
}

/// Split over threads, every (batch, head) entry is computed as on one thread: same bits.
#[test]
fn threaded_entries_give_the_same_bits() {
    let f = |shape: &[usize], salt: usize| {
        Tensor::<f32>::from_fn(shape, |i| ((i * 7919 + salt) % 1000) as f32 / 500.0 - 1.0)
    };
    let (q, k, v) = (f(&[3, 4, 9, 8], 1), f(&[3, 4, 11, 8], 2), f(&[3, 4, 11, 5], 3));
    let keep = Tensor::from_fn(&[3, 1, 1, 11], |i| i % 4 != 1);
    let masks = AttentionMasks { keep: Some(&keep), causal: true, ..Default::default() };
    let g = f(&[3, 4, 9, 5], 4);
    let run = || {
        let fw = q.attention_forward(&k, &v, 0.3, &masks);
        let gr = q.attention_backward(&k, &v, &fw.probs, None, &g, 0.3, false);
        [fw.out, fw.probs, gr.q, gr.k, gr.v].map(|t| t.to_vec())
    };
    ferrograd_tensor::set_num_threads(1);
    let one = run();
    let work = ferrograd_tensor::min_work_per_thread();
    ferrograd_tensor::set_num_threads(2);
    ferrograd_tensor::set_min_work_per_thread(0);
    let two = run();
    ferrograd_tensor::set_min_work_per_thread(work);
    assert_eq!(one, two);
}

/// The operands are read where they lie: heads cut from a projection (a permuted view, as
/// `MultiheadAttention` makes them), a broadcast key and a strided gradient give the same bits
/// as their contiguous copies.
#[test]
fn strided_operands_give_the_same_bits_as_contiguous_copies() {
    let f = |shape: &[usize], salt: usize| {
        Tensor::<f32>::from_fn(shape, |i| ((i * 7919 + salt) % 1000) as f32 / 500.0 - 1.0)
    };
    // [batch, tokens, 3 * heads * dim] split into q, k, v and heads: [batch, heads, tokens, dim].
    let qkv = f(&[3, 9, 3 * 4 * 8], 1);
    let heads = |i: usize| qkv.narrow(2, i * 32, 32).reshape(&[3, 9, 4, 8]).permute(&[0, 2, 1, 3]);
    let (q, k, v) = (heads(0), f(&[3, 1, 9, 8], 2).broadcast_to(&[3, 4, 9, 8]), heads(2));
    let g = f(&[3, 9, 4, 8], 3).permute(&[0, 2, 1, 3]);
    assert!(!q.is_contiguous() && !v.is_contiguous() && !g.is_contiguous());
    let masks = AttentionMasks { causal: true, ..Default::default() };
    let run = |q: &Tensor<f32>, k: &Tensor<f32>, v: &Tensor<f32>, g: &Tensor<f32>| {
        let fw = q.attention_forward(k, v, 0.3, &masks);
        let gr = q.attention_backward(k, v, &fw.probs, None, g, 0.3, false);
        [fw.out, fw.probs, gr.q, gr.k, gr.v].map(|t| t.to_vec())
    };
    assert_eq!(run(&q, &k, &v, &g), run(&q.contiguous(), &k.contiguous(), &v.contiguous(), &g.contiguous()));
    // The output and the gradients of q and v follow their heads-inside-rows layout, so putting
    // the heads back together is a view; k's broadcast heads and contiguous inputs give
    // contiguous blocks.
    let fw = q.attention_forward(&k, &v, 0.3, &masks);
    let gr = q.attention_backward(&k, &v, &fw.probs, None, &g, 0.3, false);
    let merged = |t: &Tensor<f32>| t.permute(&[0, 2, 1, 3]).is_contiguous();
    assert!(
        merged(&fw.out) && merged(&gr.q) && merged(&gr.v),
        "{:?} {:?} {:?}",
        fw.out.strides(),
        gr.q.strides(),
        gr.v.strides()
    );
    assert!(gr.k.is_contiguous() && fw.probs.is_contiguous());
    let fw = q.contiguous().attention_forward(&k, &v, 0.3, &masks);
    assert!(fw.out.is_contiguous());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// f32 runs most of the entries' products on the packed kernel (A read where it lies, B
    /// packed by rows or by columns) and the rest on matrixmultiply: over sizes across the
    /// kernel's tiles and every layout of the operands, it matches the f64 kernels (checked
    /// against separate ops above) on the same values within f32 rounding.
    #[test]
    fn f32_attention_matches_f64_within_rounding(
        ((l, s, e, ev), q) in (1usize..40, 1usize..40, 1usize..40, 1usize..40)
            .prop_flat_map(|d| (Just(d), any_layout::<f32>(vec![2, 2, d.0, d.2]))),
        k_by_columns in any::<bool>(),
        v_by_columns in any::<bool>(),
        causal in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let f = |i: usize, salt: u64| ((i as u64 * 2654435761 + seed * 97 + salt) % 1000) as f32 / 250.0 - 2.0;
        // [2, 2, rows, cols], stored row-major or column-major.
        let stored = |rows: usize, cols: usize, by_columns: bool, salt: u64| {
            if by_columns {
                Tensor::from_fn(&[2, 2, cols, rows], |i| f(i, salt)).transpose(-2, -1)
            } else {
                Tensor::from_fn(&[2, 2, rows, cols], |i| f(i, salt))
            }
        };
        let (k, v) = (stored(s, e, k_by_columns, 1), stored(s, ev, v_by_columns, 2));
        let g = Tensor::from_fn(&[2, l, 2, ev], |i| f(i, 4)).transpose(1, 2);
        let wide = |t: &Tensor<f32>| t.map(|x| x as f64);
        let narrow = {
            let masks = AttentionMasks { causal, ..Default::default() };
            let fw = q.attention_forward(&k, &v, 0.3, &masks);
            let gr = q.attention_backward(&k, &v, &fw.probs, None, &g, 0.3, false);
            [fw.out, fw.probs, gr.q, gr.k, gr.v]
        };
        let (q, k, v, g) = (wide(&q), wide(&k), wide(&v), wide(&g));
        let masks = AttentionMasks { causal, ..Default::default() };
        let fw = q.attention_forward(&k, &v, 0.3, &masks);
        let gr = q.attention_backward(&k, &v, &fw.probs, None, &g, 0.3, false);
        for (name, got, want) in ["out", "probs", "q", "k", "v"].into_iter().zip(narrow).zip([fw.out, fw.probs, gr.q, gr.k, gr.v]).map(|((n, a), b)| (n, a, b)) {
            let size = want.abs().max().to_vec()[0].max(1.0);
            let diff = wide(&got).max_abs_diff(&want);
            prop_assert!(diff <= 2e-5 * size, "{name}: {diff} off, largest {size}");
        }
    }
}
