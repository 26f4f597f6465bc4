//! The unpadded pooling kernels (every window inside the plane: the 2x2 stride-2 pools of LeNet,
//! stride equal to the kernel in general, and other strides) against a plain per-window
//! reference, over random shapes with odd sides (the last rows and columns that fill no window
//! are dropped), non-contiguous inputs, ties, `-inf` and NaN, for f32 and f64. Padded geometries
//! are covered by `tests/conv.rs`.

use ferrograd_tensor::rand::SeedableRng;
use ferrograd_tensor::testing::any_layout;
use ferrograd_tensor::{Float, Pool2dOptions, Tensor};
use proptest::prelude::*;

/// An unpadded pooling: input shape (rank 3 or 4) and options with zero padding.
#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    opts: Pool2dOptions,
}

impl Case {
    fn planes(&self) -> usize {
        self.shape[..self.shape.len() - 2].iter().product()
    }
    fn hw(&self) -> (usize, usize) {
        let r = self.shape.len();
        (self.shape[r - 2], self.shape[r - 1])
    }
    fn out_hw(&self) -> (usize, usize) {
        let ((h, w), [kh, kw], [sh, sw]) = (self.hw(), self.opts.kernel, self.opts.stride);
        ((h - kh) / sh + 1, (w - kw) / sw + 1)
    }
    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.shape.clone();
        let r = s.len();
        (s[r - 2], s[r - 1]) = self.out_hw();
        s
    }
    /// The in-plane indices of output `(oh, ow)`'s window, in row-major order.
    fn window(&self, oh: usize, ow: usize) -> Vec<usize> {
        let ((_, w), [kh, kw], [sh, sw]) = (self.hw(), self.opts.kernel, self.opts.stride);
        (0..kh).flat_map(|i| (0..kw).map(move |j| (oh * sh + i) * w + ow * sw + j)).collect()
    }
}

/// Kernels 1..=3 per side; stride equal to the kernel half of the time (the common layer), else
/// 1..=3; sides that leave 0..=4 rows and columns past the last full window, so odd sides drop
/// their remainder.
fn case() -> impl Strategy<Value = Case> {
    let geometry = ([1usize..=3, 1..=3], [1usize..=3, 1..=3], any::<bool>(), [0usize..=4, 0..=4]);
    ((1usize..=2, 1usize..=3, any::<bool>()), geometry).prop_map(
        |((n, c, batched), (kernel, stride, stride_is_kernel, extra))| {
            let stride = if stride_is_kernel { kernel } else { stride };
            let side = |i: usize| kernel[i] + stride[i] * (extra[i] / 2) + extra[i] % 2;
            let mut shape = vec![c, side(0), side(1)];
            if batched {
                shape.insert(0, n);
            }
            Case { shape, opts: Pool2dOptions { kernel, stride, padding: [0, 0], count_include_pad: true } }
        },
    )
}

/// Elements from a small set so windows hold ties, with some `-inf` and NaN.
fn element<E: Float>() -> impl Strategy<Value = E> {
    prop_oneof![
        8 => (-3i32..=3).prop_map(|v| E::from_f64(f64::from(v))),
        1 => Just(E::neg_infinity()),
        1 => Just(E::nan()),
    ]
}

/// `values` in `shape`, laid out as `layout` picks: contiguous, with `H` and `W` transposed in
/// storage, every other column of a wider tensor, or flipped along both sides.
fn laid_out<E: Float>(shape: &[usize], values: Vec<E>, layout: u8) -> Tensor<E> {
    let r = shape.len();
    let mut stored = shape.to_vec();
    match layout {
        1 => {
            stored.swap(r - 2, r - 1);
            Tensor::from_vec(values, &stored).transpose(-2, -1)
        }
        2 => {
            stored[r - 1] *= 2;
            let wide: Vec<E> = values.into_iter().flat_map(|v| [v, E::from_f64(9.0)]).collect();
            Tensor::from_vec(wide, &stored).slice(-1, 0, stored[r - 1], 2)
        }
        3 => Tensor::from_vec(values, shape).flip(&[-2, -1]),
        _ => Tensor::from_vec(values, shape),
    }
}

/// `case`, an input in one of four layouts and an output gradient in any layout.
fn operands<E: Float>() -> impl Strategy<Value = (Case, Tensor<E>, Tensor<E>)> {
    case().prop_flat_map(|case| {
        let n: usize = case.shape.iter().product();
        let shape = case.shape.clone();
        let x = (prop::collection::vec(element::<E>(), n), 0u8..4).prop_map(move |(v, l)| laid_out(&shape, v, l));
        let gy = any_layout::<E>(case.out_shape());
        (Just(case), x, gy)
    })
}

/// The same bits, NaN equal to NaN.
fn same<E: Float>(a: E, b: E) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn check<E: Float>((case, x, gy): (Case, Tensor<E>, Tensor<E>)) {
    let ((h, w), (ho, wo)) = (case.hw(), case.out_hw());
    let (xv, gv) = (x.to_vec(), gy.to_vec());
    let area = E::from_f64((case.opts.kernel[0] * case.opts.kernel[1]) as f64);
    let (mut max_y, mut max_i, mut avg_y) = (vec![], vec![], vec![]);
    let (mut max_gx, mut avg_gx) = (vec![E::zero(); xv.len()], vec![0.0f64; xv.len()]);
    for p in 0..case.planes() {
        let (xp, base) = (&xv[p * h * w..][..h * w], p * h * w);
        for oh in 0..ho {
            for ow in 0..wo {
                let win = case.window(oh, ow);
                let g = gv[(p * ho + oh) * wo + ow];
                // PyTorch's rule: a larger value or any NaN takes over, so the first maximum
                // wins a tie and the last NaN wins among NaNs.
                let (mut best, mut arg) = (E::neg_infinity(), win[0]);
                for &j in &win {
                    if xp[j] > best || xp[j].is_nan() {
                        (best, arg) = (xp[j], j);
                    }
                }
                max_y.push(best);
                max_i.push(arg as i64);
                max_gx[base + arg] += g;
                avg_y.push(win.iter().map(|&j| xp[j].to_f64()).sum::<f64>() / area.to_f64());
                for &j in &win {
                    avg_gx[base + j] += g.to_f64() / area.to_f64();
                }
            }
        }
    }
    let (y, idx) = x.max_pool2d_with_indices(&case.opts);
    assert_eq!(y.shape(), case.out_shape().as_slice());
    assert_eq!(idx.to_vec(), max_i, "max_pool2d indices");
    let yv = y.to_vec();
    assert!(yv.iter().zip(&max_y).all(|(&a, &b)| same(a, b)), "max_pool2d values {yv:?}, expected {max_y:?}");
    let plain = x.max_pool2d(&case.opts).to_vec();
    assert!(plain.iter().zip(&yv).all(|(&a, &b)| same(a, b)), "max_pool2d and its indexed form differ");
    let gx = Tensor::max_pool2d_backward(&gy, &idx, &case.shape).to_vec();
    assert!(gx.iter().zip(&max_gx).all(|(&a, &b)| same(a, b)), "max_pool2d_backward {gx:?}, expected {max_gx:?}");

    let tol = |v: f64| 8.0 * E::epsilon().to_f64() * (v.abs() + 4.0);
    for (k, (a, b)) in x.avg_pool2d(&case.opts).to_vec().iter().zip(&avg_y).enumerate() {
        let a = (*a).to_f64();
        // NaN and infinities carry through the sum as in the reference.
        let ok = if b.is_finite() { (a - b).abs() <= tol(*b) } else { a == *b || (a.is_nan() && b.is_nan()) };
        assert!(ok, "avg_pool2d: element {k} is {a}, expected {b}");
    }
    let agx = Tensor::avg_pool2d_backward(&gy, &case.shape, &case.opts);
    for (k, (a, b)) in agx.to_vec().iter().zip(&avg_gx).enumerate() {
        assert!(((*a).to_f64() - b).abs() <= 4.0 * tol(*b), "avg_pool2d_backward: element {k} is {a:?}, expected {b}");
    }
}

/// Poolings big enough to be cut into blocks of planes (LeNet's second 2x2 pool: 25 outputs a
/// plane) and split over threads, against the reference on 1, 2 and 3 threads.
#[test]
fn pooling_split_over_planes_and_threads_matches_reference() {
    let (old_threads, old_work) = (ferrograd_tensor::num_threads(), ferrograd_tensor::min_work_per_thread());
    // Every pooling of two planes or more is split.
    ferrograd_tensor::set_min_work_per_thread(0);
    let mut rng = ferrograd_tensor::rand::rngs::StdRng::seed_from_u64(7);
    for (shape, k, s) in [(vec![4, 100, 10, 10], 2, 2), (vec![3, 5, 9, 11], 3, 2), (vec![7, 12, 13], 2, 1)] {
        let case = Case { shape: shape.clone(), opts: Pool2dOptions { stride: [s, s], ..Pool2dOptions::new([k, k]) } };
        // Values from a small set, so windows hold ties.
        let x = Tensor::<f32>::rand_uniform(&shape, -3.0, 3.0, &mut rng).map(|v| v.round());
        let gy = Tensor::<f32>::rand_uniform(&case.out_shape(), -1.0, 1.0, &mut rng);
        for threads in [1, 2, 3] {
            ferrograd_tensor::set_num_threads(threads);
            check((case.clone(), x.clone(), gy.clone()));
        }
    }
    ferrograd_tensor::set_num_threads(old_threads);
    ferrograd_tensor::set_min_work_per_thread(old_work);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn unpadded_pooling_f32_matches_reference(ops in operands::<f32>()) {
        check(ops);
    }

    #[test]
    fn unpadded_pooling_f64_matches_reference(ops in operands::<f64>()) {
        check(ops);
    }
}

/// Windows of PyTorch 2.x, from
/// `F.max_pool2d(torch.tensor([[[[n, 1, 1, n], [n, 3, n, 3]]]]), 2, return_indices=True)` and
/// the same with ties: `tensor([[[[nan, nan]]]]), tensor([[[[4, 6]]]])`; ties go to the first.
#[test]
fn max_pool2d_picks_the_last_nan_and_the_first_tie_as_pytorch() {
    let n = f32::NAN;
    let x = Tensor::<f32>::from_vec(vec![n, 1.0, 1.0, n, n, 3.0, n, 3.0], &[1, 1, 2, 4]);
    let (y, idx) = x.max_pool2d_with_indices(&Pool2dOptions::new([2, 2]));
    assert!(y.to_vec().iter().all(|v| v.is_nan()));
    assert_eq!(idx.to_vec(), vec![4, 6]);
    let x = Tensor::<f64>::from_vec(vec![2.0, 3.0, 2.0, 2.0, 1.0, 3.0, 2.0, f64::NEG_INFINITY], &[1, 2, 4]);
    let (y, idx) = x.max_pool2d_with_indices(&Pool2dOptions::new([2, 2]));
    assert_eq!((y.to_vec(), idx.to_vec()), (vec![3.0, 2.0], vec![1, 2]));
}
