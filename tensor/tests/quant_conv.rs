//! The int8 Conv2d kernel (`quant::conv`) against a plain reference: quantize each input value,
//! convolve the integers directly (padding is the zero point), dequantize with the same f32
//! formula, then ReLU and `Tensor::max_pool2d`. Integer sums are exact whatever their order, so
//! every algorithm and kernel this CPU runs must match the reference bit for bit.

use ferrograd_tensor::quant::conv::{conv2d_dequantize, conv2d_dequantize_with, ConvAlgorithm, PackedConv2d};
use ferrograd_tensor::quant::gemm::{Dequantize, Kernel};
use ferrograd_tensor::rand::rngs::StdRng;
use ferrograd_tensor::rand::{Rng, SeedableRng};
use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};
use proptest::prelude::*;

/// `clamp(round_half_even(x * (1 / scale)) + zero_point, 0, 255)`, as documented in `quant::simd`.
fn quantize(x: f32, scale: f32, zero_point: i32) -> i32 {
    let t = (x * (1.0 / scale)).clamp(-zero_point as f32, (255 - zero_point) as f32);
    t.round_ties_even() as i32 + zero_point
}

struct Case {
    x: Tensor<f32>,
    weight: Vec<i8>,
    shape: [usize; 4],
    options: Conv2dOptions,
    w_scale: Vec<f32>,
    bias: Vec<f32>,
    scale: f32,
    zero_point: i32,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        n: usize,
        groups: usize,
        cg: usize,
        og: usize,
        k: [usize; 2],
        hw: [usize; 2],
        o: Conv2dOptions,
        seed: u64,
    ) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let out = og * groups;
        let shape = [out, cg, k[0], k[1]];
        let x = Tensor::rand_uniform(&[n, cg * groups, hw[0], hw[1]], -0.5, 1.5, &mut rng);
        let weight = (0..out * cg * k[0] * k[1]).map(|_| rng.random::<i8>()).collect();
        let w_scale = (0..out).map(|_| rng.random_range(1e-3f32..1e-2)).collect();
        let bias = (0..out).map(|_| rng.random_range(-0.2f32..0.2)).collect();
        Case {
            x,
            weight,
            shape,
            options: Conv2dOptions { groups, ..o },
            w_scale,
            bias,
            scale: 2.0 / 255.0,
            zero_point: rng.random_range(0..=255),
        }
    }

    fn stage(&self, relu: bool) -> Dequantize<'_> {
        Dequantize {
            a_scale: self.scale,
            a_zero: self.zero_point,
            w_scale: &self.w_scale,
            bias: Some(&self.bias),
            relu,
        }
    }

    /// The plain direct convolution of the quantized integers, dequantized, rectified, pooled.
    fn reference(&self, relu: bool, pool: Option<&Pool2dOptions>) -> Tensor<f32> {
        let ([out, cg, kh, kw], o) = (self.shape, self.options);
        let [n, cin, h, w] = [self.x.shape()[0], self.x.shape()[1], self.x.shape()[2], self.x.shape()[3]];
        let q: Vec<i32> = self.x.to_vec().iter().map(|&v| quantize(v, self.scale, self.zero_point)).collect();
        let span = |size: usize, k: usize, d: usize, s: usize, p: usize| (size + 2 * p - d * (k - 1) - 1) / s + 1;
        let oh = span(h, kh, o.dilation[0], o.stride[0], o.padding[0]);
        let ow = span(w, kw, o.dilation[1], o.stride[1], o.padding[1]);
        let og = out / o.groups;
        let mut y = Vec::with_capacity(n * out * oh * ow);
        for b in 0..n {
            for c in 0..out {
                let g = c / og;
                let taps = &self.weight[c * cg * kh * kw..(c + 1) * cg * kh * kw];
                let row_sum: i32 = taps.iter().map(|&v| i32::from(v)).sum();
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0i32;
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * o.stride[0] + ky * o.dilation[0]) as isize - o.padding[0] as isize;
                                    let ix = (ox * o.stride[1] + kx * o.dilation[1]) as isize - o.padding[1] as isize;
                                    let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                    let a = if inside {
                                        q[((b * cin + g * cg + ci) * h + iy as usize) * w + ix as usize]
                                    } else {
                                        self.zero_point
                                    };
                                    acc += a * i32::from(taps[(ci * kh + ky) * kw + kx]);
                                }
                            }
                        }
                        let v =
                            (acc - self.zero_point * row_sum) as f32 * (self.scale * self.w_scale[c]) + self.bias[c];
                        y.push(if relu { v.max(0.0) } else { v });
                    }
                }
            }
        }
        let y = Tensor::from_vec(y, &[n, out, oh, ow]);
        match pool {
            Some(p) => y.max_pool2d(p),
            None => y,
        }
    }

    /// Every algorithm and kernel this CPU runs for the case, with and without ReLU and pooling.
    fn check(&self) {
        let packed = PackedConv2d::new(&self.weight, self.shape, self.options);
        let kernels = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni];
        let runs: Vec<(ConvAlgorithm, Kernel)> = [ConvAlgorithm::Direct, ConvAlgorithm::Im2col]
            .into_iter()
            .flat_map(|a| kernels.map(|k| (a, k)))
            .filter(|(a, k)| a.supports(*k, &self.options))
            .collect();
        assert!(runs.contains(&(ConvAlgorithm::Im2col, Kernel::Scalar)));
        assert_eq!(runs.contains(&(ConvAlgorithm::Direct, Kernel::Scalar)), self.options.stride == [1, 1]);
        let pool2 = Pool2dOptions::new([2, 2]);
        let pool3 = Pool2dOptions { stride: [2, 1], padding: [1, 1], ..Pool2dOptions::new([3, 2]) };
        let reference = self.reference(false, None);
        let [oh, ow] = [reference.shape()[2], reference.shape()[3]];
        let mut variants = vec![(false, None), (true, None)];
        if oh >= 2 && ow >= 2 {
            variants.push((true, Some(pool2)));
            variants.push((false, Some(pool3)));
        }
        for (relu, pool) in variants {
            let expected = self.reference(relu, pool.as_ref());
            for &(algorithm, kernel) in &runs {
                let y = conv2d_dequantize_with(algorithm, kernel, &self.x, &packed, &self.stage(relu), pool.as_ref());
                assert_eq!(y.shape(), expected.shape(), "{algorithm:?} {kernel:?}, {:?}", self.options);
                assert_eq!(
                    y.to_vec(),
                    expected.to_vec(),
                    "{algorithm:?} {kernel:?}, relu {relu}, pool {pool:?}, weight {:?}, input {:?}, {:?}",
                    self.shape,
                    self.x.shape(),
                    self.options
                );
            }
            let best = conv2d_dequantize(&self.x, &packed, &self.stage(relu), pool.as_ref());
            assert_eq!(best.to_vec(), expected.to_vec(), "best, relu {relu}, pool {pool:?}");
        }
    }
}

#[test]
fn lenet_convolutions_match_the_reference() {
    let pad2 = Conv2dOptions { padding: [2, 2], ..Default::default() };
    Case::new(3, 1, 1, 6, [5, 5], [28, 28], pad2, 1).check();
    Case::new(3, 1, 6, 16, [5, 5], [14, 14], Conv2dOptions::default(), 2).check();
}

/// Channel counts around the direct kernel's block of 6 and the GEMM's panels of 16 and 32;
/// position counts around its vectors of 16 and runs of 64; 1 x 1 kernels (taps grouped along
/// the channels) and widths that leave 1 to 3 columns (grouped along the height).
#[test]
fn block_edges_match_the_reference() {
    let d = Conv2dOptions::default();
    for (i, og) in [1, 5, 6, 7, 12, 13, 16, 17, 33].into_iter().enumerate() {
        Case::new(2, 1, 2, og, [3, 3], [6, 7], d, i as u64).check();
    }
    for (i, hw) in [[1, 16], [4, 4], [8, 8], [2, 33], [9, 9], [5, 13]].into_iter().enumerate() {
        Case::new(1, 1, 3, 4, [1, 1], hw, d, 10 + i as u64).check();
    }
    for (i, k) in [[1, 2], [2, 3], [3, 4], [5, 6], [7, 7], [6, 9]].into_iter().enumerate() {
        Case::new(2, 1, 2, 3, k, [10, 11], Conv2dOptions { padding: [1, 2], ..d }, 20 + i as u64).check();
    }
    Case::new(2, 3, 5, 2, [1, 1], [3, 5], d, 30).check();
}

proptest! {
    // Small convolutions checked element by element for every algorithm and kernel; 48 cases
    // cover strides, padding, dilation and groups in most combinations.
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_convolutions_match_the_reference(
        n in 1usize..3, groups in 1usize..4, cg in 1usize..5, og in 1usize..20,
        kh in 1usize..5, kw in 1usize..8, sh in 1usize..3, sw in 1usize..3,
        ph in 0usize..3, pw in 0usize..3, dh in 1usize..3, dw in 1usize..3,
        extra_h in 0usize..6, extra_w in 0usize..12, seed in 0u64..1000,
    ) {
        let o = Conv2dOptions { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups };
        let h = (dh * (kh - 1) + 1 + extra_h).saturating_sub(2 * ph).max(1);
        let w = (dw * (kw - 1) + 1 + extra_w).saturating_sub(2 * pw).max(1);
        Case::new(n, groups, cg, og, [kh, kw], [h, w], o, seed).check();
    }
}

#[test]
fn bad_shapes_panic_with_the_shapes() {
    let packed = PackedConv2d::new(&[1; 2 * 3 * 9], [2, 3, 3, 3], Conv2dOptions::default());
    let stage = Dequantize { a_scale: 1.0, a_zero: 0, w_scale: &[1.0, 1.0], bias: None, relu: false };
    let wrong = std::panic::catch_unwind(|| conv2d_dequantize(&Tensor::ones(&[1, 2, 5, 5]), &packed, &stage, None));
    let message = *wrong.expect_err("2 input channels for 3").downcast::<String>().unwrap();
    assert!(message.contains("[1, 2, 5, 5]") && message.contains("[2, 3, 3, 3]"), "{message}");
    let small = std::panic::catch_unwind(|| conv2d_dequantize(&Tensor::ones(&[1, 3, 2, 5]), &packed, &stage, None));
    assert!(small
        .expect_err("2 rows for a 3 x 3 kernel")
        .downcast::<String>()
        .unwrap()
        .contains("smaller than the kernel"));
    let bad = std::panic::catch_unwind(|| {
        PackedConv2d::new(&[1; 9], [3, 1, 3, 1], Conv2dOptions { groups: 2, ..Default::default() })
    });
    assert!(bad.expect_err("2 groups of 3 outputs").downcast::<String>().unwrap().contains("groups"));
}
