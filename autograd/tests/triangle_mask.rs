//! gradcheck and gradgradcheck of the ops attention builds masks with: `tril`/`triu` at every
//! diagonal offset and `masked_fill` with a mask broadcast from a random smaller shape, over
//! random shapes and non-contiguous layouts; and their values against an index-by-index reference.

use crate::common;

use common::check;
use ferrograd_tensor::testing::{any_layout, shape_in};
use ferrograd_tensor::Tensor;
use proptest::prelude::*;

fn batch_of_matrices() -> impl Strategy<Value = Tensor<f64>> {
    shape_in(2, 4, 4).prop_flat_map(any_layout::<f64>)
}

/// The element at row-major position `k` of `shape`, as `(row, col)` of the last two dims.
fn row_col(k: usize, shape: &[usize]) -> (isize, isize) {
    let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    (((k / c) % r) as isize, (k % c) as isize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn tril_triu_values_and_gradients(x in batch_of_matrices(), diagonal in -4isize..5) {
        let xs = std::slice::from_ref(&x);
        let (lo, up) = (x.tril(diagonal).to_vec(), x.triu(diagonal).to_vec());
        for (k, v) in x.to_vec().into_iter().enumerate() {
            let (i, j) = row_col(k, x.shape());
            prop_assert_eq!(lo[k], if j - i <= diagonal { v } else { 0.0 });
            prop_assert_eq!(up[k], if j - i >= diagonal { v } else { 0.0 });
        }
        check(|v| v[0].tril(diagonal), xs, true)?;
        check(|v| v[0].triu(diagonal), xs, true)?;
        // Together they cover every element, the diagonal twice.
        check(|v| &v[0].tril(diagonal) + &v[0].triu(diagonal + 1), xs, true)?;
    }

    #[test]
    fn masked_fill_with_broadcast_masks(x in batch_of_matrices(), seed in 0u64..1000, keep in proptest::collection::vec(any::<bool>(), 4)) {
        // The mask's shape: a suffix of x's, with some dims set to 1 (broadcast).
        let s = x.shape();
        let mshape: Vec<usize> = s[1..].iter().zip(&keep).map(|(&d, &k)| if k { d } else { 1 }).collect();
        let mask = Tensor::from_fn(&mshape, |i| (i as u64 * 2654435761 + seed).is_multiple_of(3));
        let xs = std::slice::from_ref(&x);
        check(|v| v[0].masked_fill(&mask, -2.5), xs, true)?;
        check(|v| v[0].tril(0).masked_fill(&mask, 0.0).exp(), xs, true)?;
        let bm = mask.broadcast_to(s).to_vec();
        let y = x.masked_fill(&mask, -2.5).to_vec();
        for (k, v) in x.to_vec().into_iter().enumerate() {
            prop_assert_eq!(y[k], if bm[k] { -2.5 } else { v });
        }
    }
}

#[test]
fn triangle_masks_match_tril_of_ones() {
    for (r, c) in [(1, 1), (3, 5), (5, 3), (4, 4)] {
        for d in -5..6 {
            let ones = Tensor::<bool>::full(&[r, c], true);
            assert_eq!(Tensor::tril_mask(r, c, d).to_vec(), ones.tril(d).to_vec(), "tril_mask({r}, {c}, {d})");
            assert_eq!(Tensor::triu_mask(r, c, d).to_vec(), ones.triu(d).to_vec(), "triu_mask({r}, {c}, {d})");
        }
    }
}
