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
        let g = Tensor::from_fn(want.shape(), |i| f(i, 4));
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
