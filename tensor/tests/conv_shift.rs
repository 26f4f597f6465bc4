//! The stride-1 `f32` convolution kernels (padded-plane sweeps) against plain reference loops on
//! shapes the small proptests of `conv.rs` do not reach: many channels (every tile tail of the
//! kernels), kernels up to 5x5, wide planes, padding beyond the kernel's reach, and batches
//! split over threads unevenly, with one and several threads giving the same answers bit for bit.

use ferrograd_tensor::{set_min_work_per_thread, set_num_threads, Conv2dOptions, Tensor};
use proptest::prelude::*;

/// Input `[n, groups * cg, h, w]`, weight `[groups * og, cg, kh, kw]`, stride 1.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl Case {
    fn opts(&self) -> Conv2dOptions {
        Conv2dOptions { stride: [1, 1], padding: self.padding, dilation: self.dilation, groups: self.groups }
    }
    fn out(&self) -> [usize; 2] {
        let size = |i: usize, s: usize| s + 2 * self.padding[i] - self.dilation[i] * (self.k[i] - 1);
        [size(0, self.h), size(1, self.w)]
    }
    fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.groups * self.cg, self.h, self.w]
    }
    fn w_shape(&self) -> Vec<usize> {
        vec![self.groups * self.og, self.cg, self.k[0], self.k[1]]
    }
    fn y_shape(&self) -> Vec<usize> {
        let [ho, wo] = self.out();
        vec![self.n, self.groups * self.og, ho, wo]
    }

    /// Calls `f(y index, x index, w index)` for every multiply of the convolution.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let ([ho, wo], [kh, kw]) = (self.out(), self.k);
        let (c, o) = (self.groups * self.cg, self.groups * self.og);
        for n in 0..self.n {
            for oc in 0..o {
                let g = oc / self.og;
                for (oh, ow) in (0..ho).flat_map(|oh| (0..wo).map(move |ow| (oh, ow))) {
                    for (ci, ki, kj) in
                        (0..self.cg).flat_map(|ci| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| (ci, ki, kj))))
                    {
                        let ih = (oh + ki * self.dilation[0]) as isize - self.padding[0] as isize;
                        let iw = (ow + kj * self.dilation[1]) as isize - self.padding[1] as isize;
                        if ih < 0 || iw < 0 || ih >= self.h as isize || iw >= self.w as isize {
                            continue;
                        }
                        let xi = ((n * c + g * self.cg + ci) * self.h + ih as usize) * self.w + iw as usize;
                        let wi = ((oc * self.cg + ci) * kh + ki) * kw + kj;
                        f(((n * o + oc) * ho + oh) * wo + ow, xi, wi);
                    }
                }
            }
        }
    }
}

/// Reference sums in f64 with the magnitude of their terms, for the tolerance.
fn reference(len: usize, case: &Case, mut term: impl FnMut(usize, usize, usize) -> (usize, f64)) -> Vec<(f64, f64)> {
    let mut acc = vec![(0.0, 0.0); len];
    case.for_each_tap(|yi, xi, wi| {
        let (i, v) = term(yi, xi, wi);
        acc[i].0 += v;
        acc[i].1 += v.abs();
    });
    acc
}

#[track_caller]
fn assert_close(what: &str, got: &Tensor<f32>, want: &[(f64, f64)]) {
    let got = got.to_vec();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &(v, mag))) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * (mag + 1.0);
        assert!((g as f64 - v).abs() <= tol, "{what}: element {i} is {g}, expected {v} (tolerance {tol})");
    }
}

fn fill(shape: &[usize], seed: usize) -> Tensor<f32> {
    Tensor::from_fn(shape, |i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 700.0)
}

/// The three kernels of `case` against the reference, returning their results.
fn check(case: &Case, bias: bool) -> [Tensor<f32>; 3] {
    let (x, w, gy) = (fill(&case.x_shape(), 1), fill(&case.w_shape(), 2), fill(&case.y_shape(), 3));
    let b = bias.then(|| fill(&[case.groups * case.og], 4));
    let (xv, wv, gv) = (x.to_vec(), w.to_vec(), gy.to_vec());
    let y = x.conv2d(&w, b.as_ref(), &case.opts());
    let mut want = reference(gv.len(), case, |yi, xi, wi| (yi, xv[xi] as f64 * wv[wi] as f64));
    if let Some(b) = &b {
        let ([ho, wo], bv) = (case.out(), b.to_vec());
        for (i, v) in want.iter_mut().enumerate() {
            v.0 += bv[(i / (ho * wo)) % bv.len()] as f64;
            v.1 += bv[(i / (ho * wo)) % bv.len()].abs() as f64;
        }
    }
    assert_close(&format!("conv2d {case:?}"), &y, &want);
    let gx = Tensor::conv2d_input_grad(&gy, &w, &case.x_shape(), &case.opts());
    let want = reference(xv.len(), case, |yi, xi, wi| (xi, gv[yi] as f64 * wv[wi] as f64));
    assert_close(&format!("conv2d_input_grad {case:?}"), &gx, &want);
    let gw = Tensor::conv2d_weight_grad(&x, &gy, &case.w_shape(), &case.opts());
    let want = reference(wv.len(), case, |yi, xi, wi| (wi, gv[yi] as f64 * xv[xi] as f64));
    assert_close(&format!("conv2d_weight_grad {case:?}"), &gw, &want);
    [y, gx, gw]
}

fn case(
    n: usize,
    (groups, cg, og): (usize, usize, usize),
    [h, w]: [usize; 2],
    k: [usize; 2],
    padding: [usize; 2],
) -> Case {
    Case { n, groups, cg, og, h, w, k, padding, dilation: [1, 1] }
}

/// LeNet's convolutions and shapes around them, on one thread and on several threads with every
/// batch split (the thread settings are process-wide, so this is the only test that sets them).
#[test]
fn threads_split_the_batch_and_agree_with_one_thread() {
    let cases = [
        case(7, (1, 1, 6), [28, 28], [5, 5], [2, 2]),
        case(5, (1, 6, 16), [14, 14], [5, 5], [0, 0]),
        case(3, (2, 3, 5), [9, 17], [3, 4], [1, 2]),
        case(1, (1, 2, 9), [6, 6], [3, 3], [1, 1]),
    ];
    for c in &cases {
        set_num_threads(1);
        let one = check(c, true);
        for threads in [2, 3] {
            set_num_threads(threads);
            set_min_work_per_thread(0);
            let many = check(c, true);
            for (a, b) in one.iter().zip(&many) {
                for (u, v) in a.to_vec().iter().zip(b.to_vec()) {
                    assert!(u.to_bits() == v.to_bits(), "{c:?} with {threads} threads: {u} vs {v}");
                }
            }
        }
        set_num_threads(1);
        set_min_work_per_thread(1 << 22);
    }
}

#[test]
fn every_tile_tail_of_the_kernels_matches_reference() {
    for og in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 17] {
        for cg in [1, 3] {
            check(&case(2, (1, cg, og), [7, 11], [3, 2], [1, 0]), og % 2 == 0);
        }
    }
}

#[test]
fn wide_planes_and_long_sweeps_match_reference() {
    check(&case(2, (1, 2, 3), [3, 70], [1, 5], [0, 2]), true);
    check(&case(1, (1, 1, 2), [40, 33], [5, 5], [2, 2]), false);
}

#[test]
fn padding_beyond_the_kernel_reach_matches_reference() {
    // Some outputs read nothing but padding; the input gradient crops more than it keeps.
    check(&case(2, (1, 2, 3), [4, 5], [2, 3], [2, 3]), true);
    check(&case(1, (2, 1, 2), [3, 3], [1, 1], [1, 0]), false);
}

#[test]
fn unit_and_empty_outputs_match_reference() {
    check(&case(3, (1, 2, 4), [5, 5], [5, 5], [0, 0]), true);
    check(&case(0, (1, 2, 4), [5, 5], [3, 3], [1, 1]), true);
    check(&case(2, (1, 2, 4), [1, 1], [1, 1], [0, 0]), true);
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=2, 1usize..=4, 1usize..=10),
        ([1usize..=5, 1..=5], [1usize..=2, 1..=2], [0usize..=3, 0..=3], [0usize..=12, 0..=12]),
    )
        .prop_map(|((n, groups, cg, og), (k, dilation, padding, extra))| {
            let size = |i: usize| (dilation[i] * (k[i] - 1) + 1).saturating_sub(2 * padding[i]).max(1) + extra[i];
            Case { n, groups, cg, og, h: size(0), w: size(1), k, padding, dilation }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn stride_one_f32_matches_reference(case in case_strategy(), bias in any::<bool>()) {
        check(&case, bias);
    }
}

#[test]
fn no_output_channels_give_an_empty_weight_gradient() {
    let opts = Conv2dOptions { padding: [1, 1], ..Default::default() };
    let gw = Tensor::conv2d_weight_grad(
        &Tensor::<f32>::ones(&[3, 2, 5, 5]),
        &Tensor::ones(&[3, 0, 5, 5]),
        &[0, 2, 3, 3],
        &opts,
    );
    assert_eq!(gw.shape(), &[0, 2, 3, 3]);
}
