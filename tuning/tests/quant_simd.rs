//! The vectorised quantization routines against their scalar reference (bit for bit, special
//! values included), and the fused quantize-GEMM-dequantize path of a quantized Linear against
//! the unfused one (quantize, dequantize, f32 matmul).

use ferrograd_tensor::Tensor;
use ferrograd_tuning::quant::gemm::{
    dequantize_accumulators, gemm_dequantize_with, gemm_u8i8_with, Dequantize, Kernel, PackedA, PackedB,
};
use ferrograd_tuning::quant::simd::{min_max_with, quantize_u8_into_with, Simd};
use ferrograd_tuning::quant::{InputQuant, QDtype, QParams, QScheme, QTensor, QuantizedLinear};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn implementations() -> Vec<Simd> {
    [Simd::Avx512, Simd::Avx2].into_iter().filter(|s| s.is_available()).collect()
}

/// Random values mixed with the awkward ones: exact .5 ties of `x * inv + zp` for the scales
/// used below, the saturation edges, ±0, ±inf and NaN.
fn awkward_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let specials = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -64.5,
        -63.5,
        190.5,
        191.5,
        192.0,
        -65.0,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ];
    (0..len)
        .map(|_| match rng.random_range(0..4) {
            0 => specials[rng.random_range(0..specials.len())],
            1 => rng.random_range(-300i32..300) as f32 * 0.5,
            _ => rng.random_range(-100.0f32..300.0),
        })
        .collect()
}

/// (scale, zero point) pairs: unit and power-of-two scales make exact .5 ties, the others are
/// a typical calibrated range and the extremes of the zero point.
const PARAMS: [(f32, i32); 6] = [(1.0, 64), (0.5, 0), (2.0, 255), (4.0 / 255.0, 64), (0.0123, 17), (f32::EPSILON, 128)];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantize_matches_scalar(len in 0usize..300, seed in any::<u64>(), which in 0usize..PARAMS.len()) {
        let xs = awkward_values(len, seed);
        let (scale, zp) = PARAMS[which];
        let mut expected = vec![0u8; len];
        quantize_u8_into_with(Simd::Scalar, &xs, scale, zp, &mut expected);
        for simd in implementations() {
            let mut got = vec![7u8; len];
            quantize_u8_into_with(simd, &xs, scale, zp, &mut got);
            prop_assert_eq!(&got, &expected, "{:?}, scale {}, zero point {}", simd, scale, zp);
        }
    }

    #[test]
    fn min_max_matches_scalar(len in 0usize..300, seed in any::<u64>()) {
        let xs = awkward_values(len, seed);
        let expected = min_max_with(Simd::Scalar, &xs);
        for simd in implementations() {
            let got = min_max_with(simd, &xs);
            prop_assert!(got == expected, "{:?}: {:?} vs {:?}", simd, got, expected);
        }
    }
}

#[test]
fn scalar_quantize_is_the_documented_formula() {
    let xs = [-1.0f32, 0.0, 0.5, 1.5, 2.5, 3.0, 1e9, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    let mut q = [0u8; 10];
    quantize_u8_into_with(Simd::Scalar, &xs, 1.0, 1, &mut q);
    // round(x) + 1 with ties to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2); saturation at both ends; NaN gives 0.
    assert_eq!(q, [0, 1, 1, 3, 3, 4, 255, 255, 0, 0]);
    // The same as QParams::quantize_value for uint8 on finite inputs.
    let p = QParams::from_min_max(&[-1.0], &[3.0], QDtype::Uint8, QScheme::Affine, None);
    let xs = awkward_values(500, 1);
    let mut q = vec![0u8; xs.len()];
    quantize_u8_into_with(Simd::Scalar, &xs, p.scale[0], p.zero_point[0], &mut q);
    for (x, q) in xs.iter().zip(&q).filter(|(x, _)| x.is_finite()) {
        assert_eq!(i32::from(*q), p.quantize_value(*x, 0), "x = {x}");
    }
}

#[test]
fn min_max_ignores_nan() {
    for simd in [Simd::Scalar].into_iter().chain(implementations()) {
        assert_eq!(min_max_with(simd, &[]), (f32::INFINITY, f32::NEG_INFINITY), "{simd:?}");
        assert_eq!(min_max_with(simd, &[f32::NAN; 40]), (f32::INFINITY, f32::NEG_INFINITY), "{simd:?}");
        let mut xs = vec![f32::NAN; 70];
        (xs[3], xs[40], xs[69]) = (2.0, -5.0, 7.0);
        assert_eq!(min_max_with(simd, &xs), (-5.0, 7.0), "{simd:?}");
    }
}

fn kernels() -> Vec<Kernel> {
    [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.is_available()).collect()
}

/// Fused quantize + GEMM + dequantize (+ ReLU) equals the unfused steps bit for bit, over
/// shapes that are not multiples of the tile or of 4 in `k`.
#[test]
fn fused_gemm_matches_unfused_steps() {
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (4, 32, 8), (5, 33, 13), (9, 70, 130), (0, 4, 5), (2, 3, 0)] {
        check_fused_gemm(m, n, k, 9);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fused_gemm_matches_unfused_steps_at_random_shapes(m in 0usize..20, n in 1usize..70, k in 0usize..70, seed in any::<u64>()) {
        check_fused_gemm(m, n, k, seed);
    }
}

fn check_fused_gemm(m: usize, n: usize, k: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0f32..3.0)).collect();
    let w: Vec<i8> = (0..n * k).map(|_| rng.random()).collect();
    let w_scale: Vec<f32> = (0..n).map(|_| rng.random_range(0.001f32..0.1)).collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let (scale, zp) = (5.0 / 255.0, 102);
    let packed = PackedB::new(&w, n, k);
    let mut a8 = vec![0u8; m * k];
    quantize_u8_into_with(Simd::Scalar, &x, scale, zp, &mut a8);
    let acc = gemm_u8i8_with(Kernel::Scalar, &a8, m, &packed);
    let mut pa = PackedA::new(&[9; 200], 8, 25);
    pa.quantize(&x, m, k, scale, zp);
    for bias in [None, Some(&bias[..])] {
        let unfused = dequantize_accumulators(&acc, &packed, scale, zp, &w_scale, bias);
        for relu in [false, true] {
            let expected: Vec<f32> = unfused.iter().map(|&v| if relu { v.max(0.0) } else { v }).collect();
            let stage = Dequantize { a_scale: scale, a_zero: zp, w_scale: &w_scale, bias, relu };
            for kernel in kernels() {
                let mut y = vec![f32::NAN; m * n];
                gemm_dequantize_with(kernel, &pa, &packed, &stage, &mut y);
                assert_eq!(y, expected, "{kernel:?} at {m}x{n}x{k}, relu {relu}");
            }
        }
    }
}

/// A quantized Linear equals dequantize-then-f32-matmul of its quantized operands, for
/// dynamic and static input parameters, with and without the fused ReLU.
#[test]
fn quantized_linear_matches_dequantized_matmul() {
    let mut rng = StdRng::seed_from_u64(10);
    for &(m, k, n) in &[(7, 50, 9), (128, 784, 33), (3, 6, 1)] {
        // A strided (transposed) view: forward makes it contiguous first.
        let x = Tensor::<f32>::rand_uniform(&[k, m], -1.0, 2.0, &mut rng).t();
        let w = Tensor::<f32>::rand_uniform(&[n, k], -0.3, 0.3, &mut rng);
        let b = Tensor::<f32>::rand_uniform(&[n], -1.0, 1.0, &mut rng);
        let dynamic = QParams::from_min_max(&[-1.0], &[2.0], QDtype::Uint8, QScheme::Affine, None);
        // Static parameters clipping part of the range.
        let fixed = QParams::from_min_max(&[-0.5], &[1.5], QDtype::Uint8, QScheme::Affine, None);
        let inputs = [
            (InputQuant::Dynamic, dynamic),
            (InputQuant::Static { scale: fixed.scale[0], zero_point: fixed.zero_point[0] }, fixed),
        ];
        for (input, p) in inputs {
            let q = QuantizedLinear::new(&w, Some(&b), input);
            let wq = q.weight().map(f32::from);
            let w_scale = Tensor::from_vec(q.weight_scale().to_vec(), &[n, 1]);
            let wd = wq.mul(&w_scale);
            let mut p = p;
            if input == InputQuant::Dynamic {
                // The batch's own range: rand_uniform stays inside [-1, 2), so recompute it.
                let xs = x.to_vec();
                let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                p = QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None);
            }
            let xd = QTensor::quantize(&x, p).dequantize();
            let reference = xd.matmul(&wd.t()).add(&b).to_vec();
            let (y, yr) = (q.forward(&x).to_vec(), q.forward_relu(&x).to_vec());
            for (i, ((a, r), e)) in y.iter().zip(&yr).zip(&reference).enumerate() {
                assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{input:?} {m}x{k}x{n} [{i}]: {a} vs {e}");
                assert_eq!(*r, a.max(0.0), "{input:?} {m}x{k}x{n} [{i}]: fused ReLU");
            }
        }
    }
}
