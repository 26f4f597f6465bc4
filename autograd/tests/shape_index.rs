//! gradcheck and gradgradcheck of views, joins, padding and indexing ops over random shapes
//! and non-contiguous layouts.

use crate::common;

use common::check;
use ferrograd_autograd::Var;
use ferrograd_tensor::testing::{any_layout, shape_in};
use ferrograd_tensor::{PadMode, Tensor};
use proptest::prelude::*;

fn rank3() -> impl Strategy<Value = Tensor<f64>> {
    shape_in(3, 3, 4).prop_flat_map(any_layout::<f64>)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn views(x in rank3()) {
        let s = x.shape().to_vec();
        let xs = std::slice::from_ref(&x);
        check(|v| v[0].transpose(0, 2), xs, true)?;
        check(|v| v[0].permute(&[2, 0, 1]), xs, true)?;
        check(|v| v[0].reshape(&[s[0] * s[1], s[2]]), xs, true)?;
        check(|v| v[0].flatten(0, 1), xs, true)?;
        check(|v| v[0].contiguous(), xs, true)?;
        check(|v| v[0].narrow(1, s[1] / 2, s[1] - s[1] / 2), xs, true)?;
        check(|v| v[0].slice(2, 0, s[2], 2), xs, true)?;
        check(|v| v[0].select(0, s[0] - 1), xs, true)?;
        check(|v| v[0].flip(&[0, 2]), xs, true)?;
        check(|v| v[0].unsqueeze(1).squeeze_dim(1), xs, true)?;
        check(|v| v[0].unsqueeze(-1).squeeze(), xs, true)?;
        check(|v| v[0].unsqueeze(0).expand(&[2, s[0], s[1], s[2]]), xs, true)?;
        check(|v| v[0].sum_to(&[s[1], 1]), xs, true)?;
        let t = |v: &[Var<f64>]| v[0].select(0, 0).t();
        check(t, xs, true)?;
    }

    #[test]
    fn joins_and_splits(x in rank3(), extra in 1usize..4) {
        let sx = x.shape().to_vec();
        let other = Tensor::from_fn(&[sx[0], extra, sx[2]], |i| (i as f64 * 0.37).sin());
        check(|v| Var::cat(&[&v[0], &v[1]], 1), &[x.clone(), other.clone()], true)?;
        check(|v| Var::stack(&[&v[0], &v[0].mul_scalar(2.0)], 1), std::slice::from_ref(&x), true)?;
        check(|v| Var::stack(&[&v[0], &v[1]], -1), &[x.clone(), x.map(|a| a * 0.5)], true)?;
        for piece in 0..2 {
            check(|v| v[0].split(2, 1)[piece.min(v[0].split(2, 1).len() - 1)].clone(), std::slice::from_ref(&x), true)?;
            check(|v| v[0].chunk(2, 2)[piece.min(v[0].chunk(2, 2).len() - 1)].clone(), std::slice::from_ref(&x), true)?;
        }
        check(|v| Var::stack(&v[0].unbind(1).iter().rev().collect::<Vec<_>>(), 0), std::slice::from_ref(&x), true)?;
        // Every piece used: the gradient of split is the gradient of all pieces put back.
        check(|v| { let p = v[0].split(1, 0); let r: Vec<&Var<f64>> = p.iter().rev().collect(); Var::cat(&r, 0) }, std::slice::from_ref(&x), true)?;
    }

    #[test]
    fn padding(x in rank3(), before in 0usize..3, after in 0usize..3) {
        let xs = std::slice::from_ref(&x);
        check(|v| v[0].pad(&[(before, after), (after, before)], 0.5), xs, true)?;
        check(|v| v[0].pad_mode(&[(before.min(1), after.min(2))], PadMode::Replicate, 0.0), xs, true)?;
        let s = x.shape()[2];
        let (b, a) = (before.min(s - 1), after.min(s - 1));
        check(|v| v[0].pad_mode(&[(b, a)], PadMode::Reflect, 0.0), xs, true)?;
    }

    #[test]
    fn indexing(x in rank3(), seed in 0u64..1000) {
        let s = x.shape().to_vec();
        let pick = |n: usize, k: usize| Tensor::from_fn(&[k], |i| ((seed as usize + 7 * i) % n) as i64);
        let idx = pick(s[1], 5);
        let xs = std::slice::from_ref(&x);
        check(|v| v[0].index_select(1, &idx), xs, true)?;
        let gidx = Tensor::from_fn(&[s[0], s[1], 2], |i| ((seed as usize + 3 * i) % s[2]) as i64);
        check(|v| v[0].gather(2, &gidx), xs, true)?;
        let src = Tensor::from_fn(&[s[0], s[1], 2], |i| (i as f64 * 0.7).cos());
        check(|v| v[0].scatter_add(2, &gidx, &v[1]), &[x.clone(), src.clone()], true)?;
        let isrc = Tensor::from_fn(&[s[0], 5, s[2]], |i| (i as f64 * 0.3).sin());
        check(|v| v[0].index_add(1, &idx, &v[1]), &[x.clone(), isrc], true)?;
        let mask = Tensor::from_fn(&[s[1], 1], |i| (i + seed as usize).is_multiple_of(2));
        check(|v| v[0].masked_fill(&mask, 3.0), xs, true)?;
        let other = Tensor::from_fn(&[s[2]], |i| i as f64 - 1.5);
        check(|v| Var::where_(&mask, &v[0], &v[1]), &[x.clone(), other], true)?;
    }
}
