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
    let shapes =
        [(1, 1, 1), (2, 3, 0), (0, 4, 5), (3, 5, 7), (4, 32, 4), (5, 33, 13), (17, 65, 130), (9, 31, 784), (64, 10, 3)];
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

mod model {
    use super::*;
    use ferrograd_autograd::Var;
    use ferrograd_nn::layers::Linear;
    use ferrograd_nn::Module;
    use ferrograd_tuning::quant::{
        fake_quantize, fake_quantize_mask, FloatLayer, InputQuant, QatLinear, QuantizedLayer, QuantizedLinear,
        QuantizedSequential,
    };

    /// `|x·w - xq·wq| <= Σ_k (s_a/2 |w_k| + s_w/2 |x_k| + s_a s_w / 4)` per output, plus f32 slack.
    #[test]
    fn quantized_linear_is_within_the_scale_bound() {
        let (m, k, n) = (7, 50, 9);
        let x = randn(&[m, k], 6);
        let w = randn(&[n, k], 7).mul_scalar(0.2);
        let b = randn(&[n], 8);
        let q = QuantizedLinear::new(&w, Some(&b), InputQuant::Dynamic);
        let y = q.forward(&x);
        let exact = x.matmul(&w.t()).add(&b);
        let (lo, hi) = channel_min_max(&x, None);
        let sa = QParams::from_min_max(&lo, &hi, QDtype::Uint8, QScheme::Affine, None).scale[0];
        for i in 0..m {
            for j in 0..n {
                let sw = q.weight_scale()[j];
                let bound: f32 = (0..k)
                    .map(|t| sa / 2.0 * w.at(&[j, t]).abs() + sw / 2.0 * x.at(&[i, t]).abs() + sa * sw / 4.0)
                    .sum();
                let err = (y.at(&[i, j]) - exact.at(&[i, j])).abs();
                assert!(err <= bound * 1.01 + 1e-5, "({i}, {j}): error {err} above bound {bound}");
            }
        }
    }

    fn mlp(seed: u64) -> (Linear<f32>, Linear<f32>) {
        let mut rng = StdRng::seed_from_u64(seed);
        (Linear::new(12, 20, &mut rng), Linear::new(20, 4, &mut rng))
    }

    fn float_forward(l1: &Linear<f32>, l2: &Linear<f32>, x: &Tensor<f32>) -> Tensor<f32> {
        l2.forward(&l1.forward(&Var::constant(x.clone())).relu()).into_data()
    }

    #[test]
    fn static_and_dynamic_models_track_the_float_model_and_survive_save_load() {
        let (l1, l2) = mlp(10);
        let layers = [FloatLayer::Flatten, FloatLayer::Linear(&l1), FloatLayer::ReLU, FloatLayer::Linear(&l2)];
        let batches: Vec<Tensor<f32>> = (0..3).map(|s| randn(&[16, 3, 4], 20 + s)).collect();
        let dynamic = QuantizedSequential::dynamic(&layers);
        let calibrated = QuantizedSequential::calibrated(&layers, &batches, || {
            Box::new(MinMaxObserver::new(ObserverConfig::activations()))
        });
        assert!(
            matches!(calibrated.layers()[1], QuantizedLayer::Linear(ref l) if matches!(l.input_quant(), InputQuant::Static { .. }))
        );
        assert_eq!(dynamic.weight_bytes(), 12 * 20 + 20 * 4);
        let x = randn(&[16, 3, 4], 21);
        let reference = float_forward(&l1, &l2, &x.reshape(&[16, 12]));
        let scale = reference.to_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
        let dir = std::env::temp_dir().join(format!("ferrograd_quant_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, model) in [("dynamic", &dynamic), ("static", &calibrated)] {
            let y = model.forward(&x);
            for (a, b) in y.to_vec().iter().zip(reference.to_vec()) {
                assert!((a - b).abs() < 0.03 * scale, "{name}: {a} vs {b}");
            }
            let path = dir.join(format!("{name}.safetensors"));
            model.save(&path).unwrap();
            let loaded = QuantizedSequential::load(&path).unwrap();
            assert_eq!(loaded.forward(&x).to_vec(), y.to_vec(), "{name}: outputs after load");
        }
        std::fs::write(dir.join("bad.safetensors"), b"not a checkpoint").unwrap();
        assert!(QuantizedSequential::load(dir.join("bad.safetensors")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fake_quantize_forward_and_ste_mask() {
        // uint8 affine, scale 0.1, zero point 10: representable range [-1.0, 24.5].
        let p = QParams {
            dtype: QDtype::Uint8,
            scheme: QScheme::Affine,
            scale: vec![0.1],
            zero_point: vec![10],
            axis: None,
        };
        let x = Tensor::from_vec(vec![-1.2f64, -1.04, -0.96, 0.0, 0.123, 24.44, 24.56, 30.0], &[8]);
        // PyTorch: mask = (round(x / scale) + zero_point in [qmin, qmax]).
        let mask: Vec<f64> = x
            .to_vec()
            .iter()
            .map(|&v| {
                let q = (v as f32 / 0.1f32).round() as i32 + 10;
                if (0..=255).contains(&q) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(mask, vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(fake_quantize_mask(&x, &p).to_vec(), mask);
        let leaf = Var::leaf(x.clone());
        let y = fake_quantize(&leaf, &p);
        let upstream = Tensor::from_fn(&[8], |i| i as f64 + 1.0);
        let g = (&y * &Var::constant(upstream.clone())).sum().backward();
        let expected: Vec<f64> = upstream.to_vec().iter().zip(&mask).map(|(u, m)| u * m).collect();
        assert_eq!(g.get(&leaf).unwrap().to_vec(), expected);
        // The forward pass is quantize then dequantize.
        let xf = x.map(|v| v as f32);
        let qd = QTensor::quantize(&xf, p.clone()).dequantize().to_vec();
        for (a, b) in y.to_vec().iter().zip(qd) {
            assert!((*a as f32 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Per channel: each row uses its own scale.
        let pc = QParams {
            dtype: QDtype::Int8,
            scheme: QScheme::Symmetric,
            scale: vec![1.0, 0.01],
            zero_point: vec![0, 0],
            axis: Some(0),
        };
        let xc = Tensor::from_vec(vec![100.0f64, 200.0, 1.0, 2.0], &[2, 2]);
        assert_eq!(fake_quantize_mask(&xc, &pc).to_vec(), vec![1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn qat_linear_learns_ranges_and_converts() {
        let (l1, _) = mlp(11);
        let qat = QatLinear::new(l1, 1.0);
        assert!(qat.input_qparams().is_none());
        let x = randn(&[8, 12], 30);
        let y = qat.forward(&Var::constant(x.clone()));
        let (lo, hi) = channel_min_max(&x, None);
        let p = qat.input_qparams().unwrap();
        assert_eq!(p, QParams::from_min_max(&lo, &hi, QDtype::Uint8, QScheme::Affine, None));
        let g = y.sum().backward();
        assert_eq!(g.get(&qat.linear.weight.var()).unwrap().shape(), &[20, 12]);
        let q = QuantizedSequential::from_qat(&[FloatLayer::Qat(&qat)]);
        let yq = q.forward(&x);
        // The int8 model computes what the fake-quantized one simulated.
        for (a, b) in yq.to_vec().iter().zip(y.to_vec()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

#[test]
fn quantized_conv2d_tracks_float_conv() {
    use ferrograd_tensor::Conv2dOptions;
    use ferrograd_tuning::quant::{InputQuant, QuantizedConv2d};
    let x = randn(&[2, 3, 9, 8], 40);
    let w = randn(&[5, 3, 3, 2], 41).mul_scalar(0.3);
    let b = randn(&[5], 42);
    for options in
        [Conv2dOptions::default(), Conv2dOptions { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 1 }]
    {
        let reference = x.conv2d(&w, Some(&b), &options);
        let y = QuantizedConv2d::new(&w, Some(&b), options, InputQuant::Dynamic).forward(&x);
        assert_eq!(y.shape(), reference.shape());
        let scale = reference.to_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, r) in y.to_vec().iter().zip(reference.to_vec()) {
            assert!((a - r).abs() < 0.03 * scale, "{options:?}: {a} vs {r}");
        }
    }
}
