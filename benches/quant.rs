//! int8 GEMM (u8 x i8 -> i32, `ferrograd_tuning::quant::gemm`) against f32 `Tensor::matmul` at
//! m x k x n = 128 x 784 x 128 and 1024 x 1024 x 1024, one thread each. Throughput is in
//! multiply-adds x 2 per second, so criterion's `Gelem/s` reads as G(int)OP/s and GFLOP/s alike.
//! The int8 figures include padding A's rows (as a quantized layer does per call), not packing
//! the weights (done once at conversion).
//!
//! Quantizing a 128 x 784 batch to uint8 and its min/max scan (dynamic quantization), scalar
//! against AVX2 and AVX-512.
//!
//! Then the end-to-end MNIST MLP (784-128-64-10, ReLU, random weights) on a batch of 128: the
//! fp32 `Sequential` forward against `QuantizedSequential` dynamic and static (calibrated on 4
//! random batches). Before criterion's runs (which are one after the other), the three are timed
//! interleaved (A, B, C, A, B, C, ...) and the best round of each and the ratios are printed, as
//! the machine is shared and drifts.
//!
//! The same for the LeNet CNN (conv 1->6 5x5 pad 2, ReLU, max pool 2, conv 6->16 5x5, ReLU, max
//! pool 2, 400-120-84-10, random weights) on a batch of 128 MNIST-sized images (`cnn_b128`).
//!
//! The two LeNet convolutions alone at batch 128 (`conv_b128`), each with its ReLU and 2 x 2 max
//! pooling fused: the int8 kernel's direct (AVX-512 VNNI) and im2col (best GEMM kernel)
//! algorithms against f32 `conv2d` + `relu` + `max_pool2d`, one thread.
//!
//! `cargo bench --bench quant -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::nn::layers::{Conv2d, Conv2dConfig, Linear, MaxPool2d, ReLU, Sequential};
use ferrograd::prelude::{no_grad, Var};
use ferrograd::tensor::{set_num_threads, Tensor};
use ferrograd::tensor::{Conv2dOptions, Pool2dOptions};
use ferrograd::tuning::quant::conv::{conv2d_dequantize_with, ConvAlgorithm, PackedConv2d};
use ferrograd::tuning::quant::gemm::{gemm_u8i8_with, Dequantize, Kernel, PackedB};
use ferrograd::tuning::quant::simd::{min_max_with, quantize_u8_into_with, Simd};
use ferrograd::tuning::quant::{FloatLayer, MinMaxObserver, ObserverConfig, QuantizedSequential};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bench_gemm(c: &mut Criterion) {
    set_num_threads(1);
    let mut rng = StdRng::seed_from_u64(0);
    let mut group = c.benchmark_group("gemm");
    for (m, k, n) in [(128, 784, 128), (1024, 1024, 1024)] {
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let a = Tensor::<f32>::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&[n, k], -1.0, 1.0, &mut rng);
        let wt = w.t();
        group.bench_with_input(BenchmarkId::new("f32_matmul", &label), &(), |bch, _| {
            bch.iter(|| black_box(a.matmul(&wt)))
        });
        let a8: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
        let w8: Vec<i8> = (0..n * k).map(|_| rng.random()).collect();
        let packed = PackedB::new(&w8, n, k);
        for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni] {
            if !kernel.is_available() || (kernel == Kernel::Scalar && m > 512) {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(format!("int8_{kernel:?}"), &label), &(), |bch, _| {
                bch.iter(|| black_box(gemm_u8i8_with(kernel, &a8, m, &packed)))
            });
        }
    }
    group.finish();
}

/// Quantizing a 128 x 784 f32 batch to uint8 and its min/max scan, per implementation.
fn bench_quantize(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let x = Tensor::<f32>::rand_uniform(&[128, 784], -1.0, 2.0, &mut rng).to_vec();
    let mut out = vec![0u8; x.len()];
    let mut group = c.benchmark_group("quantize_128x784");
    group.throughput(Throughput::Elements(x.len() as u64));
    for simd in [Simd::Scalar, Simd::Avx2, Simd::Avx512].into_iter().filter(|s| s.is_available()) {
        group.bench_function(BenchmarkId::new("quantize_u8", format!("{simd:?}")), |bch| {
            bch.iter(|| quantize_u8_into_with(simd, black_box(&x), 3.0 / 255.0, 85, &mut out))
        });
        group.bench_function(BenchmarkId::new("min_max", format!("{simd:?}")), |bch| {
            bch.iter(|| black_box(min_max_with(simd, black_box(&x))))
        });
    }
    group.finish();
}

/// A copy of `l` (a `Sequential` takes its layers by value, the quantizers by reference).
fn copy_linear(l: &Linear<f32>, rng: &mut StdRng) -> Linear<f32> {
    let c = Linear::new(l.in_features(), l.out_features(), rng);
    c.weight.set(l.weight.value());
    if let (Some(b), Some(src)) = (&c.bias, &l.bias) {
        b.set(src.value());
    }
    c
}

fn bench_mlp(c: &mut Criterion) {
    set_num_threads(1);
    const BATCH: usize = 128;
    let mut rng = StdRng::seed_from_u64(1);
    let fcs = [Linear::new(784, 128, &mut rng), Linear::new(128, 64, &mut rng), Linear::new(64, 10, &mut rng)];
    let fp32 = Sequential::<f32>::new()
        .add(copy_linear(&fcs[0], &mut rng))
        .add(ReLU)
        .add(copy_linear(&fcs[1], &mut rng))
        .add(ReLU)
        .add(copy_linear(&fcs[2], &mut rng));
    let layers = [
        FloatLayer::Linear(&fcs[0]),
        FloatLayer::ReLU,
        FloatLayer::Linear(&fcs[1]),
        FloatLayer::ReLU,
        FloatLayer::Linear(&fcs[2]),
    ];
    // MNIST-like inputs: pixels in [0, 1].
    let calibration: Vec<Tensor<f32>> =
        (0..4).map(|_| Tensor::<f32>::rand_uniform(&[BATCH, 784], 0.0, 1.0, &mut rng)).collect();
    let dynamic = QuantizedSequential::dynamic(&layers);
    let stat = QuantizedSequential::calibrated(&layers, &calibration, || {
        Box::new(MinMaxObserver::new(ObserverConfig::activations()))
    });
    let x = Tensor::<f32>::rand_uniform(&[BATCH, 784], 0.0, 1.0, &mut rng);
    let run_fp32 = || no_grad(|| fp32.forward(&Var::constant(x.clone())).into_data());
    let runs: [(&str, &dyn Fn() -> Tensor<f32>); 3] =
        [("fp32", &run_fp32), ("dynamic_int8", &|| dynamic.forward(&x)), ("static_int8", &|| stat.forward(&x))];

    interleaved(&format!("mlp 784-128-64-10, batch {BATCH}"), &runs, 100);
    let mut group = c.benchmark_group("mlp_b128");
    for (name, f) in runs {
        group.bench_function(name, |bch| bch.iter(|| black_box(f())));
    }
    group.finish();
}

/// Times `runs` interleaved (A, B, C, A, B, C, ...), 15 rounds of `calls` calls each, and prints
/// the best round of each with its speed-up over the first.
fn interleaved(title: &str, runs: &[(&str, &dyn Fn() -> Tensor<f32>)], calls: usize) {
    let mut best = vec![f64::INFINITY; runs.len()];
    for _ in 0..15 {
        for (b, (_, f)) in best.iter_mut().zip(runs) {
            let t = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            *b = b.min(t.elapsed().as_secs_f64() / calls as f64);
        }
    }
    println!("{title}, interleaved, best of 15 rounds of {calls} calls:");
    for ((name, _), b) in runs.iter().zip(&best) {
        println!("  {name:<13} {:.4} ms/batch  fp32/this = {:.2}x", 1e3 * b, best[0] / b);
    }
}

fn bench_cnn(c: &mut Criterion) {
    set_num_threads(1);
    const BATCH: usize = 128;
    let mut rng = StdRng::seed_from_u64(3);
    let pad2 = Conv2dConfig { padding: [2, 2], ..Default::default() };
    let convs = [Conv2d::with_config(1, 6, [5, 5], pad2, &mut rng), Conv2d::new(6, 16, [5, 5], &mut rng)];
    let fcs = [Linear::new(400, 120, &mut rng), Linear::new(120, 84, &mut rng), Linear::new(84, 10, &mut rng)];
    let pool = MaxPool2d::new([2, 2]);
    let layers = [
        FloatLayer::Conv2d(&convs[0]),
        FloatLayer::ReLU,
        FloatLayer::MaxPool2d(pool),
        FloatLayer::Conv2d(&convs[1]),
        FloatLayer::ReLU,
        FloatLayer::MaxPool2d(pool),
        FloatLayer::Flatten,
        FloatLayer::Linear(&fcs[0]),
        FloatLayer::ReLU,
        FloatLayer::Linear(&fcs[1]),
        FloatLayer::ReLU,
        FloatLayer::Linear(&fcs[2]),
    ];
    let calibration: Vec<Tensor<f32>> =
        (0..2).map(|_| Tensor::<f32>::rand_uniform(&[BATCH, 1, 28, 28], 0.0, 1.0, &mut rng)).collect();
    let dynamic = QuantizedSequential::dynamic(&layers);
    let stat = QuantizedSequential::calibrated(&layers, &calibration, || {
        Box::new(MinMaxObserver::new(ObserverConfig::activations()))
    });
    let x = Tensor::<f32>::rand_uniform(&[BATCH, 1, 28, 28], 0.0, 1.0, &mut rng);
    let run_fp32 = || {
        no_grad(|| {
            let mut h = Var::constant(x.clone());
            for conv in &convs {
                h = conv.forward(&h).relu().max_pool2d(&pool.options);
            }
            let h = h.reshape(&[BATCH, 400]);
            let h = fcs[1].forward(&fcs[0].forward(&h).relu()).relu();
            fcs[2].forward(&h).into_data()
        })
    };
    let runs: [(&str, &dyn Fn() -> Tensor<f32>); 3] =
        [("fp32", &run_fp32), ("dynamic_int8", &|| dynamic.forward(&x)), ("static_int8", &|| stat.forward(&x))];
    interleaved(&format!("LeNet CNN, batch {BATCH}"), &runs, 10);
    let mut group = c.benchmark_group("cnn_b128");
    for (name, f) in runs {
        group.bench_function(name, |bch| bch.iter(|| black_box(f())));
    }
    group.finish();
}

/// LeNet's two convolutions with ReLU and 2 x 2 max pooling: f32 against each int8 algorithm.
fn bench_conv(c: &mut Criterion) {
    set_num_threads(1);
    const BATCH: usize = 128;
    let mut rng = StdRng::seed_from_u64(4);
    let pool = Pool2dOptions::new([2, 2]);
    let mut group = c.benchmark_group("conv_b128");
    let pad2 = Conv2dOptions { padding: [2, 2], ..Default::default() };
    for (name, shape, hw, options) in
        [("conv1", [6, 1, 5, 5], 28, pad2), ("conv2", [16, 6, 5, 5], 14, Conv2dOptions::default())]
    {
        let x = Tensor::<f32>::rand_uniform(&[BATCH, shape[1], hw, hw], 0.0, 1.0, &mut rng);
        let w = Tensor::<f32>::rand_uniform(&shape, -0.3, 0.3, &mut rng);
        let b = Tensor::<f32>::rand_uniform(&[shape[0]], -0.1, 0.1, &mut rng);
        group.bench_function(BenchmarkId::new("f32", name), |bch| {
            bch.iter(|| black_box(x.conv2d(&w, Some(&b), &options).relu().max_pool2d(&pool)))
        });
        let w8: Vec<i8> = (0..w.numel()).map(|_| rng.random()).collect();
        let packed = PackedConv2d::new(&w8, shape, options);
        let (w_scale, bias) = (vec![1e-3f32; shape[0]], b.to_vec());
        let stage = Dequantize { a_scale: 1.0 / 255.0, a_zero: 0, w_scale: &w_scale, bias: Some(&bias), relu: true };
        for (algorithm, kernel) in
            [(ConvAlgorithm::Direct, Kernel::Avx512Vnni), (ConvAlgorithm::Im2col, Kernel::best())]
        {
            if !algorithm.supports(kernel, &options) {
                continue;
            }
            group.bench_function(BenchmarkId::new(format!("int8_{algorithm:?}_{kernel:?}"), name), |bch| {
                bch.iter(|| black_box(conv2d_dequantize_with(algorithm, kernel, &x, &packed, &stage, Some(&pool))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_gemm, bench_quantize, bench_mlp, bench_cnn, bench_conv);
criterion_main!(benches);
