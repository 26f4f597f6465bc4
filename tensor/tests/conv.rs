//! Convolution and pooling kernels against plain reference loops, over random geometries and
//! non-contiguous layouts, for f32 and f64; the backward kernels also against the adjoint
//! identities they must satisfy.

use ferrograd_tensor::testing::any_layout;
use ferrograd_tensor::{Conv1dOptions, Conv2dOptions, Float, Pool2dOptions, Tensor};
use proptest::prelude::*;

// ---------------------------------------------------------------- convolution references

/// One convolution geometry: input `[n, groups * cg, h, w]`, weight `[groups * og, cg, kh, kw]`.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    opts: Conv2dOptions,
}

impl Case {
    fn c(&self) -> usize {
        self.groups * self.cg
    }
    fn o(&self) -> usize {
        self.groups * self.og
    }
    fn out_hw(&self) -> [usize; 2] {
        let size = |i: usize, s: usize| {
            (s + 2 * self.opts.padding[i] - self.opts.dilation[i] * (self.k[i] - 1) - 1) / self.opts.stride[i] + 1
        };
        [size(0, self.h), size(1, self.w)]
    }
    fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.c(), self.h, self.w]
    }
    fn w_shape(&self) -> Vec<usize> {
        vec![self.o(), self.cg, self.k[0], self.k[1]]
    }
    fn y_shape(&self) -> Vec<usize> {
        let [ho, wo] = self.out_hw();
        vec![self.n, self.o(), ho, wo]
    }

    /// Calls `f(y index, x index, w index)` for every multiply of the convolution (padding taps
    /// skipped): the seven loops every reference below is built from.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [ho, wo] = self.out_hw();
        let (c, o, [kh, kw]) = (self.c(), self.o(), self.k);
        let Conv2dOptions { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], .. } = self.opts;
        for n in 0..self.n {
            for oc in 0..o {
                let g = oc / self.og;
                for oh in 0..ho {
                    for ow in 0..wo {
                        for ci in 0..self.cg {
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let ih = (oh * sh + ki * dh) as isize - ph as isize;
                                    let iw = (ow * sw + kj * dw) as isize - pw as isize;
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
        }
    }
}

/// Sums of products in f64 with the sum of their magnitudes and their count, to scale the
/// tolerance.
struct Acc {
    val: Vec<f64>,
    mag: Vec<f64>,
    terms: Vec<usize>,
}

impl Acc {
    fn new(n: usize) -> Self {
        Acc { val: vec![0.0; n], mag: vec![0.0; n], terms: vec![0; n] }
    }
    fn add(&mut self, i: usize, a: f64, b: f64) {
        self.val[i] += a * b;
        self.mag[i] += (a * b).abs();
        self.terms[i] += 1;
    }
}

fn f64s<E: Float>(t: &Tensor<E>) -> Vec<f64> {
    t.to_vec().into_iter().map(|v| v.to_f64()).collect()
}

fn ref_forward(case: &Case, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Acc {
    let y_shape = case.y_shape();
    let mut acc = Acc::new(y_shape.iter().product());
    if let Some(b) = bias {
        let per_channel = y_shape[2] * y_shape[3];
        for (i, v) in acc.val.iter_mut().enumerate() {
            *v = b[(i / per_channel) % case.o()];
        }
    }
    case.for_each_tap(|yi, xi, wi| acc.add(yi, x[xi], w[wi]));
    acc
}

fn ref_input_grad(case: &Case, gy: &[f64], w: &[f64]) -> Acc {
    let mut acc = Acc::new(case.x_shape().iter().product());
    case.for_each_tap(|yi, xi, wi| acc.add(xi, gy[yi], w[wi]));
    acc
}

fn ref_weight_grad(case: &Case, x: &[f64], gy: &[f64]) -> Acc {
    let mut acc = Acc::new(case.w_shape().iter().product());
    case.for_each_tap(|yi, xi, wi| acc.add(wi, gy[yi], x[xi]));
    acc
}

/// Every element within a few ulps of the magnitude of the terms summed into it (growing with
/// the square root of their count, as rounding errors of a long sum do).
fn assert_close<E: Float>(what: &str, got: &Tensor<E>, shape: &[usize], want: &Acc) {
    assert_eq!(got.shape(), shape, "{what}: shape");
    let eps = E::epsilon().to_f64();
    for (i, (g, ((v, m), t))) in f64s(got).iter().zip(want.val.iter().zip(&want.mag).zip(&want.terms)).enumerate() {
        let tol = 8.0 * eps * (m + v.abs() + 1.0) * (1.0 + (*t as f64).sqrt());
        assert!((g - v).abs() <= tol, "{what}: element {i} is {g}, expected {v} (tolerance {tol})");
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=3, 1usize..=3, 1usize..=3, any::<bool>()),
        ([1usize..=3, 1..=3], [1usize..=3, 1..=3], [1usize..=2, 1..=2], [0usize..=2, 0..=2], [0usize..=4, 0..=4]),
    )
        .prop_map(|((n, groups, cg, og, pointwise), (k, stride, dilation, padding, extra))| {
            // A quarter of the cases take the 1x1, stride-1, unpadded path that skips im2col.
            let (k, stride, padding) = if pointwise { ([1, 1], [1, 1], [0, 0]) } else { (k, stride, padding) };
            // The smallest input the dilated kernel fits once padded, plus some slack.
            let size = |i: usize| (dilation[i] * (k[i] - 1) + 1).saturating_sub(2 * padding[i]).max(1) + extra[i];
            Case {
                n,
                groups,
                cg,
                og,
                h: size(0),
                w: size(1),
                k,
                opts: Conv2dOptions { stride, padding, dilation, groups },
            }
        })
}

type Operands<E> = (Case, Tensor<E>, Tensor<E>, Option<Tensor<E>>, Tensor<E>);

/// A case with its input, weight, optional bias and an output gradient, each in any layout.
fn operands<E: Float>() -> impl Strategy<Value = Operands<E>> {
    (case_strategy(), 0..4).prop_flat_map(|(case, b)| {
        (
            Just(case.clone()),
            any_layout::<E>(case.x_shape()),
            any_layout::<E>(case.w_shape()),
            any_layout::<E>(vec![case.o()]).prop_map(move |t| (b > 0).then_some(t)),
            any_layout::<E>(case.y_shape()),
        )
    })
}

fn check_conv2d<E: Float>((case, x, w, bias, gy): Operands<E>) {
    let (xv, wv, gv) = (f64s(&x), f64s(&w), f64s(&gy));
    let bv = bias.as_ref().map(f64s);
    let y = x.conv2d(&w, bias.as_ref(), &case.opts);
    assert_close("conv2d", &y, &case.y_shape(), &ref_forward(&case, &xv, &wv, bv.as_deref()));
    let gx = Tensor::conv2d_input_grad(&gy, &w, &case.x_shape(), &case.opts);
    assert_close("conv2d_input_grad", &gx, &case.x_shape(), &ref_input_grad(&case, &gv, &wv));
    let gw = Tensor::conv2d_weight_grad(&x, &gy, &case.w_shape(), &case.opts);
    assert_close("conv2d_weight_grad", &gw, &case.w_shape(), &ref_weight_grad(&case, &xv, &gv));

    // The adjoint identities <conv(x, w), g> = <x, input_grad(g, w)> = <w, weight_grad(x, g)>.
    let y0 = f64s(&x.conv2d(&w, None, &case.opts));
    let (lhs, via_x, via_w) = (dot(&y0, &gv), dot(&xv, &f64s(&gx)), dot(&wv, &f64s(&gw)));
    let scale: f64 = y0.iter().zip(&gv).map(|(a, b)| (a * b).abs()).sum::<f64>() + 1.0;
    let tol = 1e3 * E::epsilon().to_f64() * scale;
    assert!((lhs - via_x).abs() <= tol, "adjoint: <conv(x, w), g> = {lhs} but <x, input_grad> = {via_x}");
    assert!((lhs - via_w).abs() <= tol, "adjoint: <conv(x, w), g> = {lhs} but <w, weight_grad> = {via_w}");
}

/// Runs the 1-D kernels on a case of unit height and checks them against the 2-D reference.
fn check_conv1d<E: Float>((case, x, w, bias, gy): Operands<E>) {
    let squeeze = |t: &Tensor<E>| t.select(2, 0);
    let (x1, w1, gy1) = (squeeze(&x), squeeze(&w), squeeze(&gy));
    let opts = Conv1dOptions {
        stride: case.opts.stride[1],
        padding: case.opts.padding[1],
        dilation: case.opts.dilation[1],
        groups: case.opts.groups,
    };
    let drop_h = |s: Vec<usize>| vec![s[0], s[1], s[3]];
    let (xv, wv, gv) = (f64s(&x), f64s(&w), f64s(&gy));
    let bv = bias.as_ref().map(f64s);
    let y = x1.conv1d(&w1, bias.as_ref(), &opts);
    assert_close("conv1d", &y, &drop_h(case.y_shape()), &ref_forward(&case, &xv, &wv, bv.as_deref()));
    let gx = Tensor::conv1d_input_grad(&gy1, &w1, x1.shape(), &opts);
    assert_close("conv1d_input_grad", &gx, x1.shape(), &ref_input_grad(&case, &gv, &wv));
    let gw = Tensor::conv1d_weight_grad(&x1, &gy1, w1.shape(), &opts);
    assert_close("conv1d_weight_grad", &gw, w1.shape(), &ref_weight_grad(&case, &xv, &gv));
}

/// The same operands with the height dim cut to 1 (stride, padding and dilation along it reset).
fn unit_height<E: Float>() -> impl Strategy<Value = Operands<E>> {
    (case_strategy(), 0..4).prop_flat_map(|(mut case, b)| {
        case.h = 1;
        case.k[0] = 1;
        case.opts.stride[0] = 1;
        case.opts.padding[0] = 0;
        case.opts.dilation[0] = 1;
        (
            Just(case.clone()),
            any_layout::<E>(case.x_shape()),
            any_layout::<E>(case.w_shape()),
            any_layout::<E>(vec![case.o()]).prop_map(move |t| (b > 0).then_some(t)),
            any_layout::<E>(case.y_shape()),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn conv2d_f32_matches_reference(ops in operands::<f32>()) {
        check_conv2d(ops);
    }

    #[test]
    fn conv2d_f64_matches_reference(ops in operands::<f64>()) {
        check_conv2d(ops);
    }

    #[test]
    fn conv1d_f32_matches_reference(ops in unit_height::<f32>()) {
        check_conv1d(ops);
    }

    #[test]
    fn conv1d_f64_matches_reference(ops in unit_height::<f64>()) {
        check_conv1d(ops);
    }
}

/// A batch whose unrolled input exceeds one im2col chunk, so the kernels loop over chunks.
#[test]
fn conv2d_over_several_batch_chunks_matches_reference() {
    let case = Case {
        n: 3,
        groups: 1,
        cg: 4,
        og: 2,
        h: 180,
        w: 180,
        k: [3, 3],
        opts: Conv2dOptions { padding: [1, 1], ..Default::default() },
    };
    let fill = |shape: Vec<usize>, seed: usize| {
        Tensor::<f64>::from_fn(&shape, |i| (((i * 7919 + seed) % 1000) as f64 - 500.0) / 250.0)
    };
    let (x, w, gy) = (fill(case.x_shape(), 1), fill(case.w_shape(), 2), fill(case.y_shape(), 3));
    let (xv, wv, gv) = (f64s(&x), f64s(&w), f64s(&gy));
    assert_close("conv2d", &x.conv2d(&w, None, &case.opts), &case.y_shape(), &ref_forward(&case, &xv, &wv, None));
    let gx = Tensor::conv2d_input_grad(&gy, &w, &case.x_shape(), &case.opts);
    assert_close("conv2d_input_grad", &gx, &case.x_shape(), &ref_input_grad(&case, &gv, &wv));
    let gw = Tensor::conv2d_weight_grad(&x, &gy, &case.w_shape(), &case.opts);
    assert_close("conv2d_weight_grad", &gw, &case.w_shape(), &ref_weight_grad(&case, &xv, &gv));
}

#[test]
fn conv2d_of_an_empty_batch_is_empty() {
    let x = Tensor::<f32>::zeros(&[0, 2, 5, 5]);
    let w = Tensor::<f32>::ones(&[3, 2, 3, 3]);
    let y = x.conv2d(&w, None, &Conv2dOptions::default());
    assert_eq!(y.shape(), &[0, 3, 3, 3]);
    let gw = Tensor::conv2d_weight_grad(&x, &y, w.shape(), &Conv2dOptions::default());
    assert_eq!(gw.to_vec(), vec![0.0; 54]);
}

#[test]
#[should_panic(expected = "conv2d: input [1, 3, 5, 5] and weight [4, 1, 3, 3]: 3 input and 4 output channels")]
fn conv2d_rejects_channels_not_divisible_by_groups() {
    let opts = Conv2dOptions { groups: 2, ..Default::default() };
    Tensor::<f32>::zeros(&[1, 3, 5, 5]).conv2d(&Tensor::zeros(&[4, 1, 3, 3]), None, &opts);
}

#[test]
#[should_panic(expected = "conv2d: input [1, 4, 5, 5] and weight [4, 3, 3, 3]: weight has 3 input channels")]
fn conv2d_rejects_mismatched_weight_channels() {
    Tensor::<f32>::zeros(&[1, 4, 5, 5]).conv2d(&Tensor::zeros(&[4, 3, 3, 3]), None, &Conv2dOptions::default());
}

#[test]
#[should_panic(expected = "conv2d: input [1, 1, 4, 4] and weight [1, 1, 3, 3]: kernel (dilated extent 5)")]
fn conv2d_rejects_a_kernel_larger_than_the_padded_input() {
    let opts = Conv2dOptions { dilation: [2, 1], ..Default::default() };
    Tensor::<f32>::zeros(&[1, 1, 4, 4]).conv2d(&Tensor::zeros(&[1, 1, 3, 3]), None, &opts);
}

#[test]
#[should_panic(expected = "conv2d: input [1, 4, 4] and weight [1, 1, 3, 3]: expected rank-4 input and weight")]
fn conv2d_rejects_a_wrong_rank() {
    Tensor::<f32>::zeros(&[1, 4, 4]).conv2d(&Tensor::zeros(&[1, 1, 3, 3]), None, &Conv2dOptions::default());
}

#[test]
#[should_panic(expected = "conv2d: bias [3] does not match weight [2, 1, 1, 1]")]
fn conv2d_rejects_a_mismatched_bias() {
    let (x, w) = (Tensor::<f32>::zeros(&[1, 1, 2, 2]), Tensor::zeros(&[2, 1, 1, 1]));
    x.conv2d(&w, Some(&Tensor::zeros(&[3])), &Conv2dOptions::default());
}

#[test]
#[should_panic(expected = "conv2d_input_grad: grad_out [1, 2, 3, 3] does not match the output shape [1, 2, 2, 2]")]
fn conv2d_input_grad_rejects_a_mismatched_grad_out() {
    let (gy, w) = (Tensor::<f32>::zeros(&[1, 2, 3, 3]), Tensor::zeros(&[2, 1, 3, 3]));
    Tensor::conv2d_input_grad(&gy, &w, &[1, 1, 4, 4], &Conv2dOptions::default());
}

#[test]
#[should_panic(expected = "conv1d: input [1, 2, 3, 4] and weight [1, 2, 3]: expected rank-3 input and weight")]
fn conv1d_rejects_a_wrong_rank() {
    Tensor::<f32>::zeros(&[1, 2, 3, 4]).conv1d(&Tensor::zeros(&[1, 2, 3]), None, &Conv1dOptions::default());
}

// ---------------------------------------------------------------- pooling references

#[derive(Clone, Debug)]
struct PoolCase {
    shape: Vec<usize>,
    opts: Pool2dOptions,
}

impl PoolCase {
    fn hw(&self) -> (usize, usize) {
        let r = self.shape.len();
        (self.shape[r - 2], self.shape[r - 1])
    }
    fn out_hw(&self) -> (usize, usize) {
        let (h, w) = self.hw();
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = self.opts;
        ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1)
    }
    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.shape.clone();
        let r = s.len();
        (s[r - 2], s[r - 1]) = self.out_hw();
        s
    }
    fn planes(&self) -> usize {
        self.shape[..self.shape.len() - 2].iter().product()
    }

    /// Calls `f(plane, output index in plane, padded window positions)` where each position is
    /// `Some(index in plane)` or `None` for padding, in row-major window order.
    fn for_each_window(&self, mut f: impl FnMut(usize, usize, &[Option<usize>])) {
        let ((h, w), (ho, wo)) = (self.hw(), self.out_hw());
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = self.opts;
        for plane in 0..self.planes() {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut win = vec![];
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let ih = (oh * sh + ki) as isize - ph as isize;
                            let iw = (ow * sw + kj) as isize - pw as isize;
                            let inside = ih >= 0 && iw >= 0 && ih < h as isize && iw < w as isize;
                            win.push(inside.then(|| ih as usize * w + iw as usize));
                        }
                    }
                    f(plane, oh * wo + ow, &win);
                }
            }
        }
    }
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        (1usize..=2, 1usize..=3, any::<bool>(), any::<bool>()),
        ([1usize..=3, 1..=3], [1usize..=3, 1..=3], [0usize..=1, 0..=1], [0usize..=4, 0..=4]),
    )
        .prop_map(|((n, c, batched, count_include_pad), (kernel, stride, pad, extra))| {
            let padding = [pad[0].min(kernel[0] / 2), pad[1].min(kernel[1] / 2)];
            let size = |i: usize| kernel[i].saturating_sub(2 * padding[i]).max(1) + extra[i];
            let mut shape = vec![c, size(0), size(1)];
            if batched {
                shape.insert(0, n);
            }
            PoolCase { shape, opts: Pool2dOptions { kernel, stride, padding, count_include_pad } }
        })
}

fn pool_operands<E: Float>() -> impl Strategy<Value = (PoolCase, Tensor<E>, Tensor<E>)> {
    pool_case().prop_flat_map(|case| {
        (Just(case.clone()), any_layout::<E>(case.shape.clone()), any_layout::<E>(case.out_shape()))
    })
}

fn check_pooling<E: Float>((case, x, gy): (PoolCase, Tensor<E>, Tensor<E>)) {
    let (h, w) = case.hw();
    let (xv, gv) = (x.to_vec(), gy.to_vec());
    let per_plane = gv.len() / case.planes();
    let (mut max_y, mut max_i, mut avg_y) = (vec![], vec![], vec![]);
    let mut max_gx = vec![E::zero(); xv.len()];
    let mut avg_gx = vec![0.0f64; xv.len()];
    case.for_each_window(|plane, i, win| {
        let base = plane * h * w;
        let inside: Vec<usize> = win.iter().flatten().copied().collect();
        let (mut best, mut arg) = (E::neg_infinity(), inside[0]);
        for &j in &inside {
            if xv[base + j] > best {
                (best, arg) = (xv[base + j], j);
            }
        }
        max_y.push(best);
        max_i.push(arg as i64);
        max_gx[base + arg] += gv[plane * per_plane + i];
        let count = if case.opts.count_include_pad { win.len() } else { inside.len() };
        avg_y.push(inside.iter().map(|&j| xv[base + j].to_f64()).sum::<f64>() / count as f64);
        for &j in &inside {
            avg_gx[base + j] += gv[plane * per_plane + i].to_f64() / count as f64;
        }
    });
    let (y, idx) = x.max_pool2d_with_indices(&case.opts);
    assert_eq!(y.shape(), case.out_shape().as_slice());
    assert_eq!(y.to_vec(), max_y, "max_pool2d values");
    assert_eq!(idx.to_vec(), max_i, "max_pool2d indices");
    assert_eq!(x.max_pool2d(&case.opts), y);
    // Each index points at its output's value in the output's own plane.
    for (k, (&v, &i)) in y.to_vec().iter().zip(&idx.to_vec()).enumerate() {
        assert_eq!(xv[(k / per_plane) * h * w + i as usize], v, "index of output {k}");
    }
    // Exact: every input element receives its gradients in the same order as the reference.
    let gx = Tensor::max_pool2d_backward(&gy, &idx, &case.shape);
    assert_eq!(gx.to_vec(), max_gx, "max_pool2d_backward");

    let tol = |v: f64| 8.0 * E::epsilon().to_f64() * (v.abs() + 4.0);
    let avg = x.avg_pool2d(&case.opts);
    assert_eq!(avg.shape(), case.out_shape().as_slice());
    for (k, (g, v)) in f64s(&avg).iter().zip(&avg_y).enumerate() {
        assert!((g - v).abs() <= tol(*v), "avg_pool2d: element {k} is {g}, expected {v}");
    }
    let agx = Tensor::avg_pool2d_backward(&gy, &case.shape, &case.opts);
    assert_eq!(agx.shape(), case.shape.as_slice());
    for (k, (g, v)) in f64s(&agx).iter().zip(&avg_gx).enumerate() {
        assert!((g - v).abs() <= 4.0 * tol(*v), "avg_pool2d_backward: element {k} is {g}, expected {v}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pooling_f32_matches_reference(ops in pool_operands::<f32>()) {
        check_pooling(ops);
    }

    #[test]
    fn pooling_f64_matches_reference(ops in pool_operands::<f64>()) {
        check_pooling(ops);
    }
}

#[test]
fn max_pool2d_propagates_nan_and_pads_with_minus_infinity() {
    let x = Tensor::<f32>::from_vec(vec![-5.0, f32::NAN, -7.0, -1.0], &[1, 1, 2, 2]);
    let opts = Pool2dOptions { stride: [1, 1], padding: [1, 1], ..Pool2dOptions::new([2, 2]) };
    let (y, idx) = x.max_pool2d_with_indices(&opts);
    let y = y.to_vec();
    // Windows that see the NaN are NaN; the others take their largest real element, never padding.
    assert_eq!((y[0], y[3], y[6], y[7], y[8]), (-5.0, -5.0, -7.0, -1.0, -1.0));
    assert!(y[1].is_nan() && y[2].is_nan() && y[4].is_nan() && y[5].is_nan());
    assert_eq!(idx.to_vec(), vec![0, 1, 1, 0, 1, 1, 2, 3, 3]);
}

#[test]
fn avg_pool2d_divisor_follows_count_include_pad() {
    let x = Tensor::<f64>::ones(&[1, 2, 2]);
    let with_pad = Pool2dOptions { padding: [1, 1], stride: [1, 1], ..Pool2dOptions::new([2, 2]) };
    assert_eq!(x.avg_pool2d(&with_pad).to_vec(), vec![0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]);
    let without = Pool2dOptions { count_include_pad: false, ..with_pad };
    assert_eq!(x.avg_pool2d(&without).to_vec(), vec![1.0; 9]);
}

#[test]
#[should_panic(expected = "max_pool2d: input [1, 1, 4, 4] with Pool2dOptions")]
fn max_pool2d_rejects_padding_over_half_the_kernel() {
    let opts = Pool2dOptions { padding: [2, 0], ..Pool2dOptions::new([3, 3]) };
    Tensor::<f32>::zeros(&[1, 1, 4, 4]).max_pool2d(&opts);
}

#[test]
#[should_panic(expected = "avg_pool2d: input [4, 4] with")]
fn avg_pool2d_rejects_a_wrong_rank() {
    Tensor::<f32>::zeros(&[4, 4]).avg_pool2d(&Pool2dOptions::new([2, 2]));
}

#[test]
#[should_panic(expected = "max_pool2d_backward: index 4 is outside the 4-element plane of input [1, 1, 2, 2]")]
fn max_pool2d_backward_rejects_an_index_outside_the_plane() {
    let gy = Tensor::<f32>::ones(&[1, 1, 1, 1]);
    Tensor::max_pool2d_backward(&gy, &Tensor::from_vec(vec![4i64], &[1, 1, 1, 1]), &[1, 1, 2, 2]);
}

#[test]
#[should_panic(expected = "avg_pool2d_backward: grad_out [1, 1, 2, 2] does not match the pooled shape [1, 1, 1, 1]")]
fn avg_pool2d_backward_rejects_a_mismatched_grad_out() {
    Tensor::avg_pool2d_backward(&Tensor::<f32>::ones(&[1, 1, 2, 2]), &[1, 1, 2, 2], &Pool2dOptions::new([2, 2]));
}
