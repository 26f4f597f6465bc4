//! The int8 Conv2d against a plain reference in exact integer arithmetic: same quantized input,
//! direct convolution of the integers, the same requantize formula; outputs must be bit-equal
//! (integer sums are exact whatever the order). Also the GEMM kernels at the column counts of
//! small convolutions (half-width panels, counts that are not a multiple of the panel width).

use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};
use ferrograd_tuning::quant::gemm::{gemm_u8i8_with, Kernel, PackedB};
use ferrograd_tuning::quant::{InputQuant, QDtype, QParams, QScheme, QuantizedConv2d};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor<f32> {
    Tensor::rand_uniform(shape, lo, hi, &mut StdRng::seed_from_u64(seed))
}

/// `conv.forward(x)` computed plainly: quantize each input value with `QParams`, convolve the
/// integers (padding is the zero point), `(acc - zero_point * Σ w) * (scale * w_scale) + bias`.
fn reference(conv: &QuantizedConv2d, x: &Tensor<f32>, scale: f32, zero_point: i32) -> Vec<f32> {
    let p = QParams {
        scale: vec![scale],
        zero_point: vec![zero_point],
        dtype: QDtype::Uint8,
        scheme: QScheme::Affine,
        axis: None,
    };
    let o = conv.options();
    let ws = conv.weight().shape().to_vec();
    let (out, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let w = conv.weight().to_vec();
    let [n, cin, h, wd] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let q: Vec<i32> = x.to_vec().iter().map(|&v| p.quantize_value(v, 0)).collect();
    let span = |size: usize, k: usize, d: usize, s: usize, pad: usize| (size + 2 * pad - d * (k - 1) - 1) / s + 1;
    let oh = span(h, kh, o.dilation[0], o.stride[0], o.padding[0]);
    let ow = span(wd, kw, o.dilation[1], o.stride[1], o.padding[1]);
    let og = out / o.groups;
    let mut y = Vec::with_capacity(n * out * oh * ow);
    for b in 0..n {
        for c in 0..out {
            let g = c / og;
            let row_sum: i32 = w[c * cg * kh * kw..(c + 1) * cg * kh * kw].iter().map(|&v| i32::from(v)).sum();
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i32;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * o.stride[0] + ky * o.dilation[0]) as isize - o.padding[0] as isize;
                                let ix = (ox * o.stride[1] + kx * o.dilation[1]) as isize - o.padding[1] as isize;
                                let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd;
                                let a = if inside {
                                    q[((b * cin + g * cg + ci) * h + iy as usize) * wd + ix as usize]
                                } else {
                                    zero_point
                                };
                                acc += a * i32::from(w[((c * cg + ci) * kh + ky) * kw + kx]);
                            }
                        }
                    }
                    let bias = conv.bias().map_or(0.0, |bias| bias[c]);
                    y.push((acc - zero_point * row_sum) as f32 * (scale * conv.weight_scale()[c]) + bias);
                }
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn check(n: usize, groups: usize, cg: usize, og: usize, k: [usize; 2], o: Conv2dOptions, hw: [usize; 2], seed: u64) {
    let x = uniform(&[n, cg * groups, hw[0], hw[1]], -0.5, 1.5, seed);
    let w = uniform(&[og * groups, cg, k[0], k[1]], -0.4, 0.4, seed + 1);
    let bias = uniform(&[og * groups], -0.2, 0.2, seed + 2);
    let (scale, zero_point) = (2.0 / 255.0, 60);
    let conv = QuantizedConv2d::new(&w, Some(&bias), o, InputQuant::Static { scale, zero_point });
    let expected = reference(&conv, &x, scale, zero_point);
    let y = conv.forward(&x);
    assert_eq!(y.to_vec(), expected, "{o:?}, {og} x {groups} outputs");
    // The fused ReLU and pooling only select and clamp values already checked.
    let pool = Pool2dOptions::new([2, 2]);
    if y.shape()[2] >= 2 && y.shape()[3] >= 2 {
        let unfused = y.map(|v| v.max(0.0)).max_pool2d(&pool);
        assert_eq!(conv.forward_fused(&x, true, Some(&pool)).to_vec(), unfused.to_vec(), "{o:?} fused");
    }
}

#[test]
fn lenet_convolutions_are_exact() {
    let pad2 = Conv2dOptions { padding: [2, 2], ..Default::default() };
    check(3, 1, 1, 6, [5, 5], pad2, [28, 28], 1);
    check(3, 1, 6, 16, [5, 5], Conv2dOptions::default(), [14, 14], 2);
}

#[test]
fn output_channel_counts_around_the_panel_widths_are_exact() {
    for og in [1, 15, 16, 17, 31, 32, 33, 48, 49] {
        check(2, 1, 3, og, [3, 3], Conv2dOptions::default(), [5, 6], og as u64);
    }
}

proptest! {
    // Small convolutions, each checked element by element; 40 cases cover every option.
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn random_convolutions_are_exact(
        n in 1usize..3, groups in 1usize..3, cg in 1usize..4, og in 1usize..40,
        kh in 1usize..4, kw in 1usize..10, sh in 1usize..3, sw in 1usize..3,
        ph in 0usize..3, pw in 0usize..3, dh in 1usize..3, dw in 1usize..3,
        extra_h in 0usize..5, extra_w in 0usize..5, seed in 0u64..1000,
    ) {
        let o = Conv2dOptions { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups };
        let h = (dh * (kh - 1) + 1 + extra_h).saturating_sub(2 * ph).max(1);
        let w = (dw * (kw - 1) + 1 + extra_w).saturating_sub(2 * pw).max(1);
        check(n, groups, cg, og, [kh, kw], o, [h, w], seed);
    }
}

/// Every kernel, full and half-width panels, against the plain sum.
#[test]
fn gemm_kernels_agree_at_narrow_column_counts() {
    let mut rng = StdRng::seed_from_u64(7);
    let kernels: Vec<Kernel> =
        [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.is_available()).collect();
    for (m, k, n) in [(9, 25, 6), (17, 150, 16), (8, 7, 1), (13, 33, 17), (5, 3, 40), (3, 64, 48), (1, 1, 49)] {
        let a: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
        let b: Vec<i8> = (0..n * k).map(|_| rng.random()).collect();
        let expected: Vec<i32> = (0..m * n)
            .map(|i| (0..k).map(|t| i32::from(a[i / n * k + t]) * i32::from(b[i % n * k + t])).sum())
            .collect();
        let packed = PackedB::new(&b, n, k);
        for &kernel in &kernels {
            assert_eq!(gemm_u8i8_with(kernel, &a, m, &packed), expected, "{kernel:?} at {m}x{k}x{n}");
        }
    }
}
