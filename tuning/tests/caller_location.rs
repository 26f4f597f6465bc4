//! The quantization-aware layers report errors in their forward at the line that called
//! `forward` (also inside a `Sequential`), and anomaly mode names that line, like the layers
//! of `ferrograd-nn`.

use ferrograd_autograd::{detect_anomaly, Var};
use ferrograd_nn::layers::{Conv2d, Linear, Sequential};
use ferrograd_nn::Module;
use ferrograd_tensor::testing::catch_panic;
use ferrograd_tensor::{assert_panics_here, Tensor};
use ferrograd_tensor::{Conv2dOptions, Pool2dOptions};
use ferrograd_tuning::quant::{
    FloatLayer, InputQuant, MinMaxObserver, Observer, ObserverConfig, QatConv2d, QatLinear, QuantizedConv2d,
    QuantizedLinear, QuantizedSequential,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn v(shape: &[usize]) -> Var<f32> {
    Var::leaf(Tensor::from_fn(shape, |i| (i as f32 * 0.3).sin()))
}

fn qat_linear() -> QatLinear {
    QatLinear::new(Linear::new(4, 2, &mut StdRng::seed_from_u64(0)), 0.01)
}

fn qat_conv() -> QatConv2d {
    QatConv2d::new(Conv2d::new(2, 3, [3, 3], &mut StdRng::seed_from_u64(0)), 0.01)
}

#[test]
fn qat_forwards_report_the_callers_line() {
    let (lin, conv) = (qat_linear(), qat_conv());
    // Both before and after the observer has seen a batch (the fake quantization of the input
    // starts with the second call).
    assert_panics_here!(lin.forward(&v(&[3, 5])), "Linear", "[3, 5]");
    assert_panics_here!(conv.forward(&v(&[1, 4, 5, 5])), "conv2d", "[1, 4, 5, 5]");
    lin.forward(&v(&[3, 4]));
    conv.forward(&v(&[1, 2, 5, 5]));
    assert_panics_here!(lin.forward(&v(&[3, 5])), "Linear", "[3, 5]");
    assert_panics_here!(conv.forward(&v(&[1, 4, 5, 5])), "conv2d", "[1, 4, 5, 5]");
    let seq = Sequential::new().add(qat_linear()).add(qat_linear());
    assert_panics_here!(seq.forward(&v(&[3, 4])), "Linear", "[3, 2]");
}

/// Checks that anomaly mode names `line` of this file for the NaN `f` produces.
fn assert_anomaly_names(line: u32, f: impl FnOnce()) {
    let p = catch_panic(|| detect_anomaly(f)).expect("anomaly mode should have panicked");
    let at = format!("{}:{line}:", file!());
    assert!(p.message.starts_with("anomaly") && p.message.contains(&at), "{} does not name {at}", p.message);
}

#[test]
fn anomaly_mode_names_the_line_that_called_a_qat_layer() {
    // In eval mode before any batch the input is not fake-quantized, so a NaN reaches the
    // layer's own ops (fake quantization would clamp it to a finite value).
    let (lin, conv) = (qat_linear(), qat_conv());
    Module::<f32>::eval(&lin);
    Module::<f32>::eval(&conv);
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(lin.forward(&Var::constant(Tensor::full(&[3, 4], f32::NAN)))));
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(conv.forward(&Var::constant(Tensor::full(&[1, 2, 5, 5], f32::NAN)))));
}

fn t(shape: &[usize]) -> Tensor<f32> {
    Tensor::from_fn(shape, |i| (i as f32 * 0.7).cos())
}

#[test]
fn quantized_layers_report_the_callers_line() {
    let dynamic = InputQuant::Dynamic;
    assert_panics_here!(QuantizedLinear::new(&t(&[2, 4]), Some(&t(&[3])), dynamic), "QuantizedLinear", "[3]");
    assert_panics_here!(QuantizedLinear::new(&t(&[4]), None, dynamic), "QuantizedLinear", "[4]");
    let lin = QuantizedLinear::new(&t(&[2, 4]), None, dynamic);
    assert_panics_here!(lin.forward(&t(&[3, 5])), "QuantizedLinear", "[3, 5]");
    assert_panics_here!(lin.forward_relu(&t(&[3, 5])), "QuantizedLinear", "[3, 5]");
    let opts = Conv2dOptions::default();
    let (w, bad_bias) = (t(&[3, 2, 3, 3]), t(&[2]));
    assert_panics_here!(QuantizedConv2d::new(&w, Some(&bad_bias), opts, dynamic), "QuantizedConv2d", "[2]");
    let groups = Conv2dOptions { groups: 2, ..opts };
    assert_panics_here!(QuantizedConv2d::new(&t(&[3, 1, 3, 3]), None, groups, dynamic), "QuantizedConv2d");
    let conv = QuantizedConv2d::new(&t(&[3, 2, 3, 3]), None, opts, dynamic);
    assert_panics_here!(conv.forward(&t(&[1, 4, 5, 5])), "QuantizedConv2d", "[1, 4, 5, 5]");
    assert_panics_here!(conv.forward(&t(&[1, 2, 2, 5])), "QuantizedConv2d", "smaller than the kernel");
    let pool = Pool2dOptions::new([4, 4]);
    assert_panics_here!(conv.forward_fused(&t(&[1, 2, 5, 5]), true, Some(&pool)), "QuantizedConv2d", "max pooling");
    // A whole model, and its calibration on batches of the wrong shape.
    let float = Linear::new(4, 2, &mut StdRng::seed_from_u64(0));
    let layers = [FloatLayer::Linear(&float), FloatLayer::ReLU];
    let model = QuantizedSequential::dynamic(&layers);
    assert_panics_here!(model.forward(&t(&[3, 5])), "QuantizedLinear", "[3, 5]");
    let observer = || -> Box<dyn Observer> { Box::new(MinMaxObserver::new(ObserverConfig::activations())) };
    assert_panics_here!(QuantizedSequential::calibrated(&layers, &[], observer), "no calibration batches");
    assert_panics_here!(QuantizedSequential::calibrated(&layers, &[t(&[3, 5])], observer), "matmul", "[3, 5]");
}
