//! Quantization: parameters, observers, round trips, the int8 GEMM and its kernels.

use ferrograd_tensor::Tensor;
use ferrograd_tuning::quant::gemm::{dequantize_accumulators, gemm_u8i8_with, Kernel, PackedB};
use ferrograd_tuning::quant::{
    channel_min_max, MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverConfig, PercentileObserver, QData,
    QDtype, QParams, QScheme, QTensor,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.5, &mut StdRng::seed_from_u64(seed))
}

#[test]
fn qparams_by_hand() {
    let p = QParams::from_min_max(&[-2.0], &[1.0], QDtype::Int8, QScheme::Symmetric, None);
    assert_eq!((p.scale[0], p.zero_point[0]), (2.0 / 127.5, 0));
    let p = QParams::from_min_max(&[-2.0], &[1.0], QDtype::Uint8, QScheme::Symmetric, None);
    assert_eq!((p.scale[0], p.zero_point[0]), (2.0 / 127.5, 128));
    // Affine uint8 over [-1, 3]: scale 4/255, zero point round(255/4) = 64.
    let p = QParams::from_min_max(&[-1.0], &[3.0], QDtype::Uint8, QScheme::Affine, None);
    assert_eq!((p.scale[0], p.zero_point[0]), (4.0 / 255.0, 64));
    // A range that excludes 0 is widened to include it; affine int8 over [0.5, 2.55].
    let p = QParams::from_min_max(&[0.5], &[2.55], QDtype::Int8, QScheme::Affine, None);
    assert_eq!((p.scale[0], p.zero_point[0]), (0.01, -128));
    assert_eq!((p.quantize_value(0.0, 0), p.quantize_value(1.0, 0), p.quantize_value(9.0, 0)), (-128, -28, 127));
}

fn assert_round_trip(x: &Tensor<f32>, q: &QTensor) {
    let (shape, back) = (x.shape().to_vec(), q.dequantize());
    let p = q.params();
    let inner: usize = p.axis.map_or(1, |a| shape[a + 1..].iter().product());
    for (i, (a, b)) in x.to_vec().iter().zip(back.to_vec()).enumerate() {
        let ch = (i / inner) % p.channels();
        assert!((a - b).abs() <= 0.5 * p.scale[ch] * (1.0 + 1e-4), "element {i}: {a} -> {b}, scale {}", p.scale[ch]);
    }
}

#[test]
fn round_trip_within_half_a_step() {
    let x = randn(&[6, 17], 1);
    for dtype in [QDtype::Int8, QDtype::Uint8] {
        for scheme in [QScheme::Symmetric, QScheme::Affine] {
            for axis in [None, Some(0), Some(1)] {
                let mut obs = MinMaxObserver::new(ObserverConfig { dtype, scheme, axis });
                obs.observe(&x);
                let q = QTensor::quantize(&x, obs.qparams());
                assert_round_trip(&x, &q);
            }
        }
    }
}

#[test]
fn per_channel_scales_are_per_row() {
    let mut x = randn(&[4, 9], 2);
    // Rows of very different magnitudes: each gets its own scale.
    for r in 0..4 {
        let mut row = x.narrow(0, r, 1);
        row.mul_scalar_(10f32.powi(r as i32 - 2));
        x = Tensor::cat(&[&x.narrow(0, 0, r), &row, &x.narrow(0, r + 1, 3 - r)], 0);
    }
    let mut obs = MinMaxObserver::new(ObserverConfig::weights());
    obs.observe(&x);
    let p = obs.qparams();
    assert_eq!(p.channels(), 4);
    for r in 0..4 {
        let amax = x.narrow(0, r, 1).to_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(p.scale[r], amax / 127.5, "row {r}");
    }
    let q = QTensor::quantize(&x, p);
    assert!(matches!(q.data(), QData::I8(_)));
    assert_round_trip(&x, &q);
}

#[test]
fn observers_by_hand() {
    let a = Tensor::from_vec(vec![-1.0f32, 4.0, 2.0, 0.5], &[2, 2]);
    let b = Tensor::from_vec(vec![-3.0f32, 1.0, 0.0, 6.0], &[2, 2]);
    assert_eq!(channel_min_max(&a, Some(0)), (vec![-1.0, 0.5], vec![4.0, 2.0]));
    assert_eq!(channel_min_max(&a, Some(1)), (vec![-1.0, 0.5], vec![2.0, 4.0]));
    let mut mm = MinMaxObserver::new(ObserverConfig::activations());
    mm.observe(&a);
    mm.observe(&b);
    assert_eq!(mm.range(), (vec![-3.0], vec![6.0]));
    let mut ma = MovingAverageMinMaxObserver::new(ObserverConfig::activations(), 0.25);
    ma.observe(&a);
    ma.observe(&b);
    assert_eq!(ma.range(), (vec![-1.0 + 0.25 * (-3.0 + 1.0)], vec![4.0 + 0.25 * (6.0 - 4.0)]));
    // 101 values 0..=100: the 99th percentile is 99 and the 1st is 1; two batches are averaged.
    let mut pc = PercentileObserver::new(ObserverConfig::activations(), 99.0);
    pc.observe(&Tensor::from_fn(&[101], |i| i as f32));
    pc.observe(&Tensor::from_fn(&[101], |i| 2.0 * i as f32));
    assert_eq!(pc.range(), (1.5, 148.5));
    let p = pc.qparams();
    assert_eq!(p.scale[0], 148.5 / 255.0);
}

fn reference(a: &[u8], b: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|t| i32::from(a[i * k + t]) * i32::from(b[j * k + t])).sum();
        }
    }
    c
}

#[test]
fn gemm_kernels_match_exact_reference() {
    let mut rng = StdRng::seed_from_u64(3);
    let kernels: Vec<Kernel> =
        [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.is_available()).collect();
    let shapes = [(1, 1, 1), (3, 5, 7), (4, 32, 4), (5, 33, 13), (17, 65, 130), (9, 31, 784), (64, 10, 3)];
    for &(m, n, k) in &shapes {
        // Extreme values included: 255 x -128 is the largest product.
        let a: Vec<u8> = (0..m * k).map(|i| if i % 7 == 0 { 255 } else { rng.random() }).collect();
        let b: Vec<i8> = (0..n * k).map(|i| if i % 5 == 0 { -128 } else { rng.random() }).collect();
        let expected = reference(&a, &b, m, n, k);
        let packed = PackedB::new(&b, n, k);
        for &kernel in &kernels {
            assert_eq!(gemm_u8i8_with(kernel, &a, m, &packed), expected, "{kernel:?} at {m}x{n}x{k}");
        }
    }
    eprintln!("kernels checked: {kernels:?}");
}

#[test]
fn dequantized_gemm_approximates_float_product() {
    let (m, n, k) = (6, 5, 40);
    let x = randn(&[m, k], 4).map(|v| v.abs());
    let w = randn(&[n, k], 5);
    let (mut ao, mut wo) =
        (MinMaxObserver::new(ObserverConfig::activations()), MinMaxObserver::new(ObserverConfig::weights()));
    ao.observe(&x);
    wo.observe(&w);
    let (qx, qw) = (QTensor::quantize(&x, ao.qparams()), QTensor::quantize(&w, wo.qparams()));
    let (QData::U8(xa), QData::I8(wb)) = (qx.data(), qw.data()) else { panic!("dtypes") };
    let packed = PackedB::new(&wb.to_vec(), n, k);
    let acc = gemm_u8i8_with(Kernel::Scalar, &xa.to_vec(), m, &packed);
    let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
    let y = dequantize_accumulators(
        &acc,
        &packed,
        qx.params().scale[0],
        qx.params().zero_point[0],
        &qw.params().scale,
        Some(&bias),
    );
    // Exactly the product of the dequantized operands (up to f32 rounding).
    let exact = qx.dequantize().matmul(&qw.dequantize().t()).to_vec();
    for (i, (a, b)) in y.iter().zip(&exact).enumerate() {
        assert!((a - (b + bias[i % n])).abs() < 1e-3, "{i}: {a} vs {}", b + bias[i % n]);
    }
}
