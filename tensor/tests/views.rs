//! The core of `Tensor`: zero-copy views, reshaping, element access, casts and constructors.
//!
//! Every view is checked against a reference computed by row-major index arithmetic on the
//! source's `to_vec()`, over random shapes and layouts (transposed, stepped, flipped, offset,
//! broadcast); `to_vec` itself is checked against the storage read through shape, strides and
//! offset.

use ferrograd_tensor::rand::rngs::StdRng;
use ferrograd_tensor::rand::SeedableRng;
use ferrograd_tensor::testing::{any_distinct_layout, any_layout, shape, shape_in, tensor, with_layout, LayoutKind};
use ferrograd_tensor::{Tensor, TensorError};
use proptest::prelude::*;
use proptest::sample::Index;
use LayoutKind::{Contiguous, Flipped, Stepped};

fn ravel(m: &[usize], shape: &[usize]) -> usize {
    m.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

fn unravel(mut p: usize, shape: &[usize]) -> Vec<usize> {
    let mut m = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        m[k] = p % shape[k];
        p /= shape[k];
    }
    m
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The reference for a view: element `m` of an output of `shape` is the source's element
/// `source(m)`, read from the source's row-major values.
fn reference<E: Copy>(
    x: &[E],
    x_shape: &[usize],
    shape: &[usize],
    source: impl Fn(Vec<usize>) -> Vec<usize>,
) -> Vec<E> {
    (0..numel(shape)).map(|p| x[ravel(&source(unravel(p, shape)), x_shape)]).collect()
}

/// A tensor of rank >= 1 in any layout, with a dim of it.
fn with_dim() -> impl Strategy<Value = (Tensor<f64>, usize)> {
    (shape_in(1, 4, 4), any::<Index>()).prop_flat_map(|(s, i)| {
        let d = i.index(s.len());
        (any_layout::<f64>(s), Just(d))
    })
}

/// `d` as a positive or a negative dim of a rank-`rank` tensor.
fn signed(d: usize, rank: usize, negative: bool) -> isize {
    if negative {
        d as isize - rank as isize
    } else {
        d as isize
    }
}

/// Whether the non-size-1 dims are evenly strided, i.e. flattening needs no copy.
fn uniformly_strided(shape: &[usize], strides: &[isize]) -> bool {
    let dims: Vec<(usize, isize)> = shape.iter().zip(strides).filter(|(&n, _)| n != 1).map(|(&n, &s)| (n, s)).collect();
    dims.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0 as isize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn to_vec_and_at_read_through_the_layout(x in tensor::<f64>(4, 4)) {
        let st = x.storage();
        let want: Vec<f64> = (0..x.numel())
            .map(|p| {
                let m = unravel(p, x.shape());
                let off = x.offset() as isize + m.iter().zip(x.strides()).map(|(&i, &s)| i as isize * s).sum::<isize>();
                st[off as usize]
            })
            .collect();
        prop_assert_eq!(x.to_vec(), want.clone());
        for (p, &w) in want.iter().enumerate() {
            prop_assert_eq!(x.at(&unravel(p, x.shape())), w);
        }
    }

    #[test]
    fn transpose_swaps_two_dims(
        (x, a, b, neg) in (shape_in(1, 4, 4), any::<Index>(), any::<Index>(), any::<bool>())
            .prop_flat_map(|(s, i, j, neg)| {
                let (a, b) = (i.index(s.len()), j.index(s.len()));
                (any_layout::<f64>(s), Just(a), Just(b), Just(neg))
            })
    ) {
        let r = x.rank();
        let y = x.transpose(signed(a, r, neg), b as isize);
        prop_assert!(y.shares_storage(&x));
        let mut shape = x.shape().to_vec();
        shape.swap(a, b);
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), reference(&x.to_vec(), x.shape(), &shape, |mut m| { m.swap(a, b); m }));
    }

    #[test]
    fn t_transposes_matrices_and_keeps_vectors(x in shape(2, 5).prop_flat_map(any_layout::<i64>)) {
        let y = x.t();
        prop_assert!(y.shares_storage(&x));
        if x.rank() < 2 {
            prop_assert_eq!(&y, &x);
        } else {
            let shape = [x.shape()[1], x.shape()[0]];
            prop_assert_eq!(y.shape(), &shape);
            prop_assert_eq!(y.to_vec(), reference(&x.to_vec(), x.shape(), &shape, |m| vec![m[1], m[0]]));
        }
    }

    #[test]
    fn permute_reorders_dims(
        (x, perm) in shape(4, 4).prop_flat_map(|s| {
            let r = s.len();
            (any_layout::<f64>(s), Just((0..r).collect::<Vec<usize>>()).prop_shuffle())
        })
    ) {
        let y = x.permute(&perm);
        prop_assert!(y.shares_storage(&x));
        let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        prop_assert_eq!(y.shape(), shape.as_slice());
        let want = reference(&x.to_vec(), x.shape(), &shape, |m| {
            let mut src = vec![0; m.len()];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = m[i];
            }
            src
        });
        prop_assert_eq!(y.to_vec(), want);
    }

    #[test]
    fn narrow_keeps_a_range(((x, d), start, len, neg) in (with_dim(), any::<Index>(), any::<Index>(), any::<bool>())) {
        let size = x.shape()[d];
        let start = start.index(size + 1);
        let len = len.index(size - start + 1);
        let y = x.narrow(signed(d, x.rank(), neg), start, len);
        prop_assert!(y.shares_storage(&x));
        let mut shape = x.shape().to_vec();
        shape[d] = len;
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), reference(&x.to_vec(), x.shape(), &shape, |mut m| { m[d] += start; m }));
    }

    #[test]
    fn slice_takes_every_step_th(((x, d), start, end, step) in (with_dim(), 0usize..6, 0usize..7, 1usize..=3)) {
        let y = x.slice(d as isize, start, end, step);
        prop_assert!(y.shares_storage(&x));
        // Python's range(start, min(end, size), step), start clamped like a Python slice.
        let size = x.shape()[d];
        let picked: Vec<usize> = (start.min(size)..end.min(size)).step_by(step).collect();
        let mut shape = x.shape().to_vec();
        shape[d] = picked.len();
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), reference(&x.to_vec(), x.shape(), &shape, |mut m| { m[d] = picked[m[d]]; m }));
    }

    #[test]
    fn select_fixes_a_dim(((x, d), i, neg) in (with_dim(), any::<Index>(), any::<bool>())) {
        let i = i.index(x.shape()[d]);
        let y = x.select(signed(d, x.rank(), neg), i);
        prop_assert!(y.shares_storage(&x));
        let mut shape = x.shape().to_vec();
        shape.remove(d);
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), reference(&x.to_vec(), x.shape(), &shape, |mut m| { m.insert(d, i); m }));
    }

    #[test]
    fn flip_reverses_dims(
        (x, dims) in shape(4, 4).prop_flat_map(|s| {
            let r = s.len();
            (any_layout::<f64>(s), proptest::sample::subsequence((0..r).collect::<Vec<usize>>(), 0..=r))
        })
    ) {
        let signed_dims: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
        let y = x.flip(&signed_dims);
        prop_assert!(y.shares_storage(&x));
        prop_assert_eq!(y.shape(), x.shape());
        let want = reference(&x.to_vec(), x.shape(), x.shape(), |mut m| {
            for &d in &dims {
                m[d] = x.shape()[d] - 1 - m[d];
            }
            m
        });
        prop_assert_eq!(y.to_vec(), want);
        prop_assert_eq!(y.flip(&signed_dims), x);
    }

    #[test]
    fn unsqueeze_then_squeeze_dim_round_trips(
        (x, d, neg) in (tensor::<f64>(4, 4), any::<Index>(), any::<bool>())
            .prop_map(|(x, i, neg)| { let d = i.index(x.rank() + 1); (x, d, neg) })
    ) {
        let y = x.unsqueeze(signed(d, x.rank() + 1, neg));
        prop_assert!(y.shares_storage(&x));
        let mut shape = x.shape().to_vec();
        shape.insert(d, 1);
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), x.to_vec());
        let z = y.squeeze_dim(d as isize);
        prop_assert!(z.shares_storage(&x));
        prop_assert_eq!(z, x);
    }

    #[test]
    fn squeeze_drops_every_size_one_dim(x in shape(5, 2).prop_flat_map(any_layout::<f64>)) {
        let y = x.squeeze();
        prop_assert!(y.shares_storage(&x));
        let shape: Vec<usize> = x.shape().iter().copied().filter(|&n| n != 1).collect();
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), x.to_vec());
    }

    #[test]
    fn squeeze_dim_keeps_larger_dims(((x, d), neg) in (with_dim(), any::<bool>())) {
        let y = x.squeeze_dim(signed(d, x.rank(), neg));
        prop_assert!(y.shares_storage(&x));
        let mut shape = x.shape().to_vec();
        if shape[d] == 1 {
            shape.remove(d);
        }
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), x.to_vec());
    }

    #[test]
    fn expand_repeats_size_one_dims(
        (x, target) in (shape(3, 4), prop::collection::vec(1usize..=3, 0..=2), prop::collection::vec(1usize..=3, 3))
            .prop_flat_map(|(s, lead, grow)| {
                // Size-1 dims grow to a random size; other dims keep theirs.
                let mut target = lead;
                target.extend(s.iter().zip(&grow).map(|(&n, &g)| if n == 1 { g } else { n }));
                (any_layout::<f64>(s), Just(target))
            })
    ) {
        let y = x.expand(&target);
        prop_assert!(y.shares_storage(&x));
        prop_assert_eq!(y.shape(), target.as_slice());
        let lead = target.len() - x.rank();
        for (k, &st) in y.strides().iter().enumerate() {
            if k < lead || (x.shape()[k - lead] == 1 && target[k] > 1) {
                prop_assert_eq!(st, 0);
            }
        }
        let want = reference(&x.to_vec(), x.shape(), &target, |m| {
            m[lead..].iter().zip(x.shape()).map(|(&i, &n)| if n == 1 { 0 } else { i }).collect()
        });
        prop_assert_eq!(y.to_vec(), want);
        prop_assert_eq!(x.broadcast_to(&target), y);
    }

    #[test]
    fn reshape_keeps_row_major_order_and_views_when_it_can(
        (x, target) in shape_in(1, 4, 4).prop_flat_map(|s| {
            let factors = s.clone();
            (any_layout::<f64>(s), Just(factors).prop_shuffle(), prop::collection::vec(any::<bool>(), 4))
        }).prop_map(|(x, factors, cuts)| {
            // Regroup the dims' sizes, shuffled, into a new shape of the same element count.
            let mut target = vec![1usize];
            for (f, &cut) in factors.iter().zip(&cuts) {
                if cut {
                    target.push(1);
                }
                *target.last_mut().unwrap() *= f;
            }
            (x, target)
        })
    ) {
        let y = x.reshape(&target);
        prop_assert_eq!(y.shape(), target.as_slice());
        prop_assert_eq!(y.to_vec(), x.to_vec());
        if x.is_contiguous() {
            prop_assert!(y.shares_storage(&x));
            prop_assert_eq!(x.view(&target), y);
        }
        let flat = x.reshape(&[x.numel()]);
        prop_assert_eq!(flat.shares_storage(&x), uniformly_strided(x.shape(), x.strides()));
        prop_assert_eq!(flat.to_vec(), x.to_vec());
    }

    #[test]
    fn splitting_a_dim_is_always_a_view(
        ((x, d), k) in (shape_in(1, 3, 3), any::<Index>(), 1usize..=3)
            .prop_flat_map(|(s, i, k)| {
                let d = i.index(s.len());
                let mut s = s;
                s[d] *= k;
                ((any_distinct_layout::<f64>(s), Just(d)), Just(k))
            })
    ) {
        let mut target = x.shape().to_vec();
        target[d] /= k;
        target.insert(d, k);
        let y = x.view(&target);
        prop_assert!(y.shares_storage(&x));
        prop_assert_eq!(y.to_vec(), x.to_vec());
    }

    #[test]
    fn flatten_merges_a_dim_range(
        (x, a, b) in (shape_in(1, 4, 4), any::<Index>(), any::<Index>()).prop_flat_map(|(s, i, j)| {
            let (a, b) = (i.index(s.len()), j.index(s.len()));
            (any_layout::<f64>(s), Just(a.min(b)), Just(a.max(b)))
        })
    ) {
        let y = x.flatten(a as isize, b as isize - x.rank() as isize);
        let mut shape = x.shape()[..a].to_vec();
        shape.push(x.shape()[a..=b].iter().product());
        shape.extend_from_slice(&x.shape()[b + 1..]);
        prop_assert_eq!(y.shape(), shape.as_slice());
        prop_assert_eq!(y.to_vec(), x.to_vec());
    }

    #[test]
    fn contiguous_copies_only_when_needed(
        (x, kind) in (shape(4, 4), prop::sample::select(vec![Contiguous, Flipped, Stepped]))
            .prop_flat_map(|(s, k)| (with_layout::<f64>(s, k), Just(k)))
    ) {
        let y = x.contiguous();
        prop_assert!(y.is_contiguous());
        prop_assert_eq!(y.as_slice().map(<[f64]>::to_vec), Some(x.to_vec()));
        if kind == Contiguous {
            prop_assert!(y.shares_storage(&x));
        }
        if !x.is_contiguous() {
            prop_assert!(!y.shares_storage(&x));
        }
    }

    #[test]
    fn cast_converts_like_as(x in tensor::<f64>(3, 4)) {
        let v = x.to_vec();
        let want_i64: Vec<i64> = v.iter().map(|&a| a as i64).collect();
        let want_u8: Vec<u8> = v.iter().map(|&a| a as u8).collect();
        let want_f32: Vec<f32> = v.iter().map(|&a| a as f32).collect();
        let want_bool: Vec<bool> = v.iter().map(|&a| a != 0.0).collect();
        prop_assert_eq!(x.cast::<i64>().to_vec(), want_i64);
        prop_assert_eq!(x.cast::<u8>().to_vec(), want_u8);
        prop_assert_eq!(x.cast::<f32>().to_vec(), want_f32);
        prop_assert_eq!(x.cast::<bool>().to_vec(), want_bool);
        prop_assert_eq!(x.cast::<f64>(), x.clone());
        let c = x.cast::<i64>();
        prop_assert_eq!(c.shape(), x.shape());
    }

    #[test]
    fn item_reads_the_single_element(x in shape(3, 1).prop_flat_map(any_layout::<i64>)) {
        prop_assert_eq!(x.item(), x.to_vec()[0]);
    }

    #[test]
    fn arange_matches_a_counting_loop(start in -6i64..6, end in -6i64..6, step in prop_oneof![-3i64..0, 1i64..4]) {
        let mut want = vec![];
        let mut v = start;
        while (step > 0 && v < end) || (step < 0 && v > end) {
            want.push(v);
            v += step;
        }
        prop_assert_eq!(Tensor::arange(start, end, step).to_vec(), want.clone());
        let f = Tensor::<f64>::arange(start as f64 / 2.0, end as f64 / 2.0, step as f64 / 2.0);
        prop_assert_eq!(f.to_vec(), want.iter().map(|&w| w as f64 / 2.0).collect::<Vec<_>>());
    }

    #[test]
    fn linspace_is_evenly_spaced_with_exact_ends(start in -5.0f64..5.0, end in -5.0f64..5.0, steps in 0usize..8) {
        let v = Tensor::linspace(start, end, steps).to_vec();
        prop_assert_eq!(v.len(), steps);
        if steps > 0 {
            prop_assert_eq!(v[0], start);
        }
        if steps > 1 {
            prop_assert_eq!(v[steps - 1], end);
            let h = (end - start) / (steps - 1) as f64;
            for (i, &x) in v.iter().enumerate() {
                prop_assert!((x - (start + i as f64 * h)).abs() <= 1e-12);
            }
        }
    }

    #[test]
    fn rand_constructors_are_seeded(seed in any::<u64>(), s in shape(3, 4)) {
        let a = Tensor::<f32>::rand_uniform(&s, -1.0, 2.0, &mut StdRng::seed_from_u64(seed));
        let b = Tensor::<f32>::rand_uniform(&s, -1.0, 2.0, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.shape(), s.as_slice());
        prop_assert!(a.to_vec().iter().all(|&v| (-1.0..2.0).contains(&v)));
        let n = Tensor::<f64>::rand_normal(&s, 3.0, 0.5, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(n, Tensor::<f64>::rand_normal(&s, 3.0, 0.5, &mut StdRng::seed_from_u64(seed)));
    }
}

#[test]
fn fill_constructors() {
    let z = Tensor::<f32>::zeros(&[2, 3]);
    assert_eq!((z.shape(), z.to_vec()), (&[2usize, 3][..], vec![0.0; 6]));
    assert!(z.is_contiguous());
    assert_eq!(Tensor::<i64>::ones(&[4]).to_vec(), vec![1; 4]);
    assert_eq!(Tensor::full(&[3, 1], true).to_vec(), vec![true; 3]);
    assert_eq!(Tensor::full(&[], 7u8).to_vec(), vec![7]);
    assert_eq!(Tensor::<f64>::zeros_like(&Tensor::ones(&[2, 2])), Tensor::zeros(&[2, 2]));
    assert_eq!(Tensor::<f64>::zeros(&[2, 0, 3]).numel(), 0);
    assert_eq!(Tensor::from_fn(&[2, 2], |i| i as i32 * 10).to_vec(), vec![0, 10, 20, 30]);
    assert_eq!(Tensor::scalar(2.5f32).item(), 2.5);
}

#[test]
fn eye_is_the_identity() {
    for n in 0..5 {
        let e = Tensor::<f64>::eye(n);
        assert_eq!(e.shape(), &[n, n]);
        for i in 0..n {
            for j in 0..n {
                assert_eq!(e.at(&[i, j]), if i == j { 1.0 } else { 0.0 });
            }
        }
    }
}

#[test]
fn rand_uniform_moments_and_seeds() {
    let a = Tensor::<f64>::rand_uniform(&[20_000], 2.0, 4.0, &mut StdRng::seed_from_u64(1)).to_vec();
    let b = Tensor::<f64>::rand_uniform(&[20_000], 2.0, 4.0, &mut StdRng::seed_from_u64(2)).to_vec();
    assert_ne!(a, b, "different seeds give different samples");
    let mean = a.iter().sum::<f64>() / a.len() as f64;
    let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / a.len() as f64;
    // U[2, 4): mean 3, variance 1/3. The standard error of the mean is about 0.004.
    assert!((mean - 3.0).abs() < 0.05, "mean {mean}");
    assert!((var - 1.0 / 3.0).abs() < 0.03, "variance {var}");
    assert!(a.iter().all(|&v| (2.0..4.0).contains(&v)));
}

#[test]
fn rand_normal_moments() {
    let a = Tensor::<f32>::rand_normal(&[20_000], -1.0, 2.0, &mut StdRng::seed_from_u64(7)).to_vec();
    let n = a.len() as f64;
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    // The standard error of the mean is about 0.014; of the std about 0.01.
    assert!((mean + 1.0).abs() < 0.1, "mean {mean}");
    assert!((std - 2.0).abs() < 0.1, "std {std}");
}

#[test]
fn try_from_vec_reports_typed_errors() {
    assert_eq!(
        Tensor::try_from_vec(vec![1.0f32; 5], &[2, 3]).unwrap_err(),
        TensorError::DataLength { op: "try_from_vec", len: 5, shape: vec![2, 3], expected: 6 }
    );
    assert_eq!(
        Tensor::<u8>::try_from_vec(vec![], &[usize::MAX, 2]).unwrap_err(),
        TensorError::ShapeOverflow { op: "try_from_vec", shape: vec![usize::MAX, 2] }
    );
    // No elements, but strides that would not fit in isize.
    let huge = [0, 1usize << 62, 1usize << 62];
    assert_eq!(
        Tensor::<f32>::try_from_vec(vec![], &huge).unwrap_err(),
        TensorError::ShapeOverflow { op: "try_from_vec", shape: huge.to_vec() }
    );
    assert_eq!(Tensor::try_from_slice(&[1i32, 2], &[2, 1]).unwrap().to_vec(), vec![1, 2]);
    let e = Tensor::try_from_vec(vec![1i64; 5], &[2, 3]).unwrap_err();
    assert_eq!(e.to_string(), "try_from_vec: 5 elements do not fit shape [2, 3] (6 elements)");
}

#[test]
fn empty_tensors_are_contiguous() {
    let x = Tensor::<f32>::zeros(&[3, 0, 2]);
    assert!(x.is_contiguous());
    assert_eq!(x.as_slice(), Some(&[][..]));
    // A narrowed empty view whose offset lies past the end of the empty storage.
    let y = Tensor::<f32>::zeros(&[0, 5]).narrow(1, 3, 2);
    assert_eq!(y.as_slice(), Some(&[][..]));
    assert_eq!(y.contiguous().shape(), &[0, 2]);
}

#[test]
fn views_of_scalars() {
    let s = Tensor::scalar(3i32);
    assert_eq!(s.transpose(0, -1), s);
    assert_eq!(s.t(), s);
    assert_eq!(s.unsqueeze(0).shape(), &[1]);
    assert_eq!(s.unsqueeze(-1).shape(), &[1]);
    assert_eq!(s.squeeze_dim(0).shape(), &[] as &[usize]);
    assert_eq!(s.flatten(0, 0).shape(), &[1]);
    assert_eq!(s.expand(&[2, 2]).to_vec(), vec![3; 4]);
    assert_eq!(s.reshape(&[1, 1]).shape(), &[1, 1]);
}

macro_rules! panics {
    ($name:ident, $expected:literal, $body:expr) => {
        #[test]
        #[should_panic(expected = $expected)]
        fn $name() {
            let _ = $body;
        }
    };
}

panics!(
    transpose_bad_dim,
    "transpose: dim 2 is out of range for a tensor of rank 2",
    Tensor::<f32>::zeros(&[2, 3]).transpose(0, 2)
);
panics!(t_of_rank_3, "t: expects a tensor of rank <= 2, got shape [2, 3, 4]", Tensor::<f32>::zeros(&[2, 3, 4]).t());
panics!(
    permute_repeat,
    "permute: [0, 0] is not a permutation of the dims of shape [2, 3]",
    Tensor::<f32>::zeros(&[2, 3]).permute(&[0, 0])
);
panics!(
    permute_short,
    "permute: [1] is not a permutation of the dims of shape [2, 3]",
    Tensor::<f32>::zeros(&[2, 3]).permute(&[1])
);
panics!(
    narrow_past_end,
    "narrow: range 2..5 is out of bounds for dim 1 of shape [2, 4]",
    Tensor::<f32>::zeros(&[2, 4]).narrow(1, 2, 3)
);
panics!(slice_step_zero, "slice: step must be positive, got 0", Tensor::<f32>::zeros(&[4]).slice(0, 0, 4, 0));
panics!(
    select_past_end,
    "select: index 3 is out of range for dim 0 of shape [3, 2]",
    Tensor::<f32>::zeros(&[3, 2]).select(0, 3)
);
panics!(flip_bad_dim, "flip: dim -3 is out of range for a tensor of rank 2", Tensor::<f32>::zeros(&[2, 3]).flip(&[-3]));
panics!(
    unsqueeze_bad_dim,
    "unsqueeze: dim 3 is out of range for a tensor of rank 2 (expected -3..=2)",
    Tensor::<f32>::zeros(&[2, 3]).unsqueeze(3)
);
panics!(
    squeeze_dim_bad_dim,
    "squeeze_dim: dim 2 is out of range for a tensor of rank 2",
    Tensor::<f32>::zeros(&[2, 1]).squeeze_dim(2)
);
panics!(
    expand_incompatible,
    "broadcast_to: shape [2, 3] cannot be broadcast to [3, 3]",
    Tensor::<f32>::zeros(&[2, 3]).expand(&[3, 3])
);
panics!(
    expand_fewer_dims,
    "broadcast_to: shape [2, 3] cannot be broadcast to [3]",
    Tensor::<f32>::zeros(&[2, 3]).broadcast_to(&[3])
);
panics!(
    view_needs_copy,
    "view: shape [3, 2] (strides [1, 3]) cannot be viewed as [6]; use reshape",
    Tensor::<f32>::zeros(&[2, 3]).t().view(&[6])
);
panics!(
    view_wrong_numel,
    "view: shape [2, 3] (6 elements) cannot become [4] (4 elements)",
    Tensor::<f32>::zeros(&[2, 3]).view(&[4])
);
panics!(
    reshape_wrong_numel,
    "reshape: shape [2, 3] (6 elements) cannot become [7] (7 elements)",
    Tensor::<f32>::zeros(&[2, 3]).reshape(&[7])
);
panics!(
    flatten_reversed,
    "flatten: start dim 2 is after end dim 0 for shape [2, 3, 4]",
    Tensor::<f32>::zeros(&[2, 3, 4]).flatten(2, 0)
);
panics!(item_of_many, "item: tensor of shape [2] has 2 elements, expected 1", Tensor::<f32>::zeros(&[2]).item());
panics!(at_past_end, "at: index [2, 0] is out of range for shape [2, 3]", Tensor::<f32>::zeros(&[2, 3]).at(&[2, 0]));
panics!(at_wrong_rank, "at: index [0] is out of range for shape [2, 3]", Tensor::<f32>::zeros(&[2, 3]).at(&[0]));
panics!(size_bad_dim, "size: dim -3 is out of range for a tensor of rank 2", Tensor::<f32>::zeros(&[2, 3]).size(-3));
panics!(
    from_vec_wrong_len,
    "from_vec: try_from_vec: 5 elements do not fit shape [2, 3] (6 elements)",
    Tensor::from_vec(vec![0u8; 5], &[2, 3])
);
panics!(arange_zero_step, "arange: step must be non-zero", Tensor::<i64>::arange(0, 3, 0));
panics!(
    rand_uniform_empty_range,
    "rand_uniform: lo 1 must be below hi 1",
    Tensor::<f32>::rand_uniform(&[2], 1.0, 1.0, &mut StdRng::seed_from_u64(0))
);
panics!(
    rand_normal_negative_std,
    "rand_normal: std -1 must be finite and non-negative",
    Tensor::<f64>::rand_normal(&[2], 0.0, -1.0, &mut StdRng::seed_from_u64(0))
);
