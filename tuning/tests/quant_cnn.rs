//! Quantized CNNs: the int8 Conv2d against the float one, whole conv models converted dynamic,
//! static and from QAT, save/load round trips and bad files, and the QAT conv's gradient.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrograd_autograd::Var;
use ferrograd_nn::checkpoint::{load_any_tensors, save_any_tensors};
use ferrograd_nn::layers::{AvgPool2d, Conv2d, Conv2dConfig, Linear, MaxPool2d};
use ferrograd_nn::{AnyTensor, Module, NnError};
use ferrograd_tensor::{Conv2dOptions, Pool2dOptions, Tensor};
use ferrograd_tuning::quant::{
    fake_quantize, fake_quantize_mask, FloatLayer, InputQuant, MinMaxObserver, ObserverConfig, QDtype, QParams,
    QScheme, QatConv2d, QatLinear, QuantizedConv2d, QuantizedLayer, QuantizedSequential,
};
use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.5, &mut StdRng::seed_from_u64(seed))
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ferrograd_quant_cnn_{name}_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `|conv(x, w) - conv(xq, wq)| <= Σ_taps (sa/2 |w| + sw/2 |x| + sa sw / 4)` per output: the
/// error of each product `x w` is `|x| |w - wq| + |x - xq| |wq|`. Taps in the padding cost
/// nothing (the zero point stands exactly for 0.0), so convolving a tensor of ones over the
/// same geometry counts exactly the taps inside the input.
fn assert_within_conv_bound(x: &Tensor<f32>, w: &Tensor<f32>, b: &Tensor<f32>, o: &Conv2dOptions, sa: f32) {
    let q = QuantizedConv2d::new(w, Some(b), *o, InputQuant::Dynamic);
    let y = q.forward(x);
    let exact = x.conv2d(w, Some(b), o);
    assert_eq!(y.shape(), exact.shape(), "{o:?}");
    let out = w.shape()[0];
    let per_out = w.numel() / out;
    let sw = q.weight_scale();
    let w_taps = Tensor::from_fn(w.shape(), |i| sa / 2.0 * w.to_vec()[i].abs() + sa * sw[i / per_out] / 4.0);
    let x_taps = Tensor::from_fn(w.shape(), |i| sw[i / per_out] / 2.0);
    let bound = Tensor::add(&Tensor::ones(x.shape()).conv2d(&w_taps, None, o), &x.abs().conv2d(&x_taps, None, o));
    for ((a, e), bd) in y.to_vec().iter().zip(exact.to_vec()).zip(bound.to_vec()) {
        assert!((a - e).abs() <= bd * 1.01 + 1e-4, "{o:?}: {a} vs {e}, bound {bd}");
    }
}

fn dynamic_input_scale(x: &Tensor<f32>) -> f32 {
    let v = x.to_vec();
    let (lo, hi) = v.iter().fold((0f32, 0f32), |(l, h), &x| (l.min(x), h.max(x)));
    QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None).scale[0]
}

proptest! {
    // Each case is a few small convolutions; 40 cases cover every option at least a few times.
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn quantized_conv2d_is_within_the_quantization_bound(
        n in 1usize..3, groups in 1usize..4, cg in 1usize..4, og in 1usize..4,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..4,
        ph in 0usize..3, pw in 0usize..3, dh in 1usize..3, dw in 1usize..3,
        extra_h in 0usize..5, extra_w in 0usize..5, seed in 0u64..1000,
    ) {
        let o = Conv2dOptions { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups };
        // At least the dilated kernel, so that the output is not empty.
        let (h, w) = ((dh * (kh - 1) + 1 + extra_h).saturating_sub(2 * ph).max(1),
                      (dw * (kw - 1) + 1 + extra_w).saturating_sub(2 * pw).max(1));
        let x = randn(&[n, cg * groups, h, w], seed);
        let wt = randn(&[og * groups, cg, kh, kw], seed + 1).mul_scalar(0.3);
        let b = randn(&[og * groups], seed + 2);
        assert_within_conv_bound(&x, &wt, &b, &o, dynamic_input_scale(&x));
    }
}

/// A static input range gives the same bound when the input stays inside it, and clamps
/// (saturates) outside it, like PyTorch's quantized conv.
#[test]
fn static_conv_uses_its_fixed_range() {
    let x = randn(&[2, 2, 6, 6], 3).map(|v| v.abs());
    let w = randn(&[3, 2, 3, 3], 4).mul_scalar(0.3);
    let o = Conv2dOptions { padding: [1, 1], ..Default::default() };
    let (lo, hi) = (0.0f32, x.to_vec().iter().fold(0f32, |m, &v| m.max(v)));
    let p = QParams::from_min_max(&[lo], &[hi], QDtype::Uint8, QScheme::Affine, None);
    let fixed = InputQuant::Static { scale: p.scale[0], zero_point: p.zero_point[0] };
    let (dynamic, stat) =
        (QuantizedConv2d::new(&w, None, o, InputQuant::Dynamic), QuantizedConv2d::new(&w, None, o, fixed));
    // Non-negative input: the dynamic range is [0, max], the one fixed above.
    assert_eq!(dynamic.forward(&x).to_vec(), stat.forward(&x).to_vec());
    // The fused ReLU is the ReLU of the output.
    assert_eq!(stat.forward_fused(&x, true, None).to_vec(), stat.forward(&x).map(|v| v.max(0.0)).to_vec());
    // Twice the input saturates at the fixed range: the output is that of the clamped input.
    let big = x.mul_scalar(2.0);
    let clamped = big.map(|v| v.min(hi));
    assert_eq!(stat.forward(&big).to_vec(), stat.forward(&clamped).to_vec());
}

/// The quantized model fuses Conv2d, ReLU and max pooling; the result is that of the layers
/// one after the other.
#[test]
fn fused_conv_relu_pool_equals_the_layers_in_turn() {
    let mut rng = StdRng::seed_from_u64(8);
    let conv = Conv2d::with_config(3, 5, [3, 3], Conv2dConfig { padding: [1, 1], ..Default::default() }, &mut rng);
    let strided = Pool2dOptions { stride: [2, 2], padding: [1, 1], ..Pool2dOptions::new([3, 3]) };
    // Odd sizes: 2x2 pooling drops the last row and column.
    let x = randn(&[3, 3, 11, 9], 9);
    for (relu, pool) in [(true, Some(strided)), (false, Some(Pool2dOptions::new([2, 2]))), (true, None)] {
        let mut layers = vec![FloatLayer::Conv2d(&conv)];
        if relu {
            layers.push(FloatLayer::ReLU);
        }
        if let Some(p) = pool {
            layers.push(FloatLayer::MaxPool2d(MaxPool2d::with_options(p)));
        }
        layers.push(FloatLayer::Flatten);
        let q = QuantizedSequential::dynamic(&layers);
        let QuantizedLayer::Conv2d(c) = &q.layers()[0] else { panic!("layer 0 is {:?}", q.layers()[0]) };
        let mut y = c.forward(&x);
        if relu {
            y = y.map(|v| v.max(0.0));
        }
        if let Some(p) = pool {
            y = y.max_pool2d(&p);
        }
        assert_eq!(q.forward(&x).to_vec(), y.to_vec(), "relu {relu}, pool {pool:?}");
    }
}

struct SmallCnn {
    c1: Conv2d<f32>,
    c2: Conv2d<f32>,
    fc1: Linear<f32>,
    fc2: Linear<f32>,
}

const POOL: MaxPool2d =
    MaxPool2d { options: Pool2dOptions { kernel: [2, 2], stride: [2, 2], padding: [0, 0], count_include_pad: true } };

fn avg_pool() -> AvgPool2d {
    AvgPool2d::with_options(Pool2dOptions { padding: [1, 1], count_include_pad: false, ..Pool2dOptions::new([3, 3]) })
}

/// conv(2->4, 3x3, pad 1) relu maxpool conv(4->6, 3x3, stride 2, dilation 1, groups 2) relu
/// avgpool(3, pad 1) flatten linear relu linear: every layer kind and option of the format.
fn small_cnn(seed: u64) -> SmallCnn {
    let mut rng = StdRng::seed_from_u64(seed);
    let pad1 = Conv2dConfig { padding: [1, 1], ..Default::default() };
    let grouped = Conv2dConfig { stride: [2, 1], dilation: [1, 2], groups: 2, ..Default::default() };
    SmallCnn {
        c1: Conv2d::with_config(2, 4, [3, 3], pad1, &mut rng),
        c2: Conv2d::with_config(4, 6, [3, 3], grouped, &mut rng),
        fc1: Linear::new(6, 10, &mut rng),
        fc2: Linear::new(10, 3, &mut rng),
    }
}

// Input [n, 2, 10, 10]: c1 -> [4, 10, 10], pool -> [4, 5, 5], c2 -> [6, 2, 1], avg -> [6, 1, 1].
const INPUT: [usize; 3] = [2, 10, 10];

impl SmallCnn {
    fn layers(&self) -> Vec<FloatLayer<'_>> {
        vec![
            FloatLayer::Conv2d(&self.c1),
            FloatLayer::ReLU,
            FloatLayer::MaxPool2d(POOL),
            FloatLayer::Conv2d(&self.c2),
            FloatLayer::ReLU,
            FloatLayer::AvgPool2d(avg_pool()),
            FloatLayer::Flatten,
            FloatLayer::Linear(&self.fc1),
            FloatLayer::ReLU,
            FloatLayer::Linear(&self.fc2),
        ]
    }

    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let x = Var::constant(x.clone());
        let h = self.c1.forward(&x).relu().max_pool2d(&POOL.options);
        let h = self.c2.forward(&h).relu().avg_pool2d(&avg_pool().options);
        let n = h.shape()[0];
        let h = self.fc1.forward(&h.reshape(&[n, 6])).relu();
        self.fc2.forward(&h).into_data()
    }
}

fn batch(n: usize, seed: u64) -> Tensor<f32> {
    randn(&[n, INPUT[0], INPUT[1], INPUT[2]], seed)
}

fn max_abs(t: &Tensor<f32>) -> f32 {
    t.to_vec().iter().fold(0f32, |m, v| m.max(v.abs()))
}

#[test]
fn cnn_converts_dynamic_and_static_and_survives_save_load() {
    let cnn = small_cnn(1);
    let layers = cnn.layers();
    let batches: Vec<Tensor<f32>> = (0..3).map(|s| batch(8, 10 + s)).collect();
    let dynamic = QuantizedSequential::dynamic(&layers);
    let calibrated = QuantizedSequential::calibrated(&layers, &batches, || {
        Box::new(MinMaxObserver::new(ObserverConfig::activations()))
    });
    for i in [0, 3, 7, 9] {
        let input = match &calibrated.layers()[i] {
            QuantizedLayer::Conv2d(c) => c.input_quant(),
            QuantizedLayer::Linear(l) => l.input_quant(),
            other => panic!("layer {i} is {other:?}"),
        };
        assert!(matches!(input, InputQuant::Static { .. }), "layer {i}: {input:?}");
    }
    assert!(matches!(&calibrated.layers()[2], QuantizedLayer::MaxPool2d(p) if *p == POOL.options));
    assert_eq!(dynamic.weight_bytes(), 4 * 2 * 9 + 6 * 2 * 9 + 6 * 10 + 10 * 3);
    let x = batch(8, 11);
    let reference = cnn.forward(&x);
    let scale = max_abs(&reference);
    let dir = TempDir::new("round_trip");
    for (name, model) in [("dynamic", &dynamic), ("static", &calibrated)] {
        let y = model.forward(&x);
        assert_eq!(y.shape(), reference.shape());
        for (a, b) in y.to_vec().iter().zip(reference.to_vec()) {
            assert!((a - b).abs() < 0.05 * scale, "{name}: {a} vs {b}");
        }
        let path = dir.0.join(format!("{name}.safetensors"));
        model.save(&path).unwrap();
        let loaded = QuantizedSequential::load(&path).unwrap();
        assert_eq!(loaded.forward(&x).to_vec(), y.to_vec(), "{name}: outputs after load");
        assert_eq!(loaded.weight_bytes(), model.weight_bytes());
        match (&loaded.layers()[3], &model.layers()[3]) {
            (QuantizedLayer::Conv2d(a), QuantizedLayer::Conv2d(b)) => {
                assert_eq!(a.options(), b.options());
                assert_eq!(a.weight(), b.weight());
                assert_eq!(a.input_quant(), b.input_quant());
            }
            other => panic!("layer 3: {other:?}"),
        }
    }
}

/// Rewrites the tensors of a saved model with `edit` and loads the result.
fn load_edited(
    dir: &TempDir,
    model: &QuantizedSequential,
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, AnyTensor>),
) -> Result<QuantizedSequential, NnError> {
    let path = dir.0.join(format!("{name}.safetensors"));
    model.save(&path).unwrap();
    let mut t = load_any_tensors(&path).unwrap();
    edit(&mut t);
    save_any_tensors(&path, &t).unwrap();
    QuantizedSequential::load(&path)
}

fn expect_format(r: Result<QuantizedSequential, NnError>, needle: &str) {
    match r {
        Err(NnError::Format { problem, .. }) => assert!(problem.contains(needle), "`{problem}` lacks `{needle}`"),
        other => panic!("expected a format error about `{needle}`, got {other:?}"),
    }
}

#[test]
fn bad_files_give_typed_errors() {
    let cnn = small_cnn(2);
    let model = QuantizedSequential::calibrated(&cnn.layers(), &[batch(4, 20)], || {
        Box::new(MinMaxObserver::new(ObserverConfig::activations()))
    });
    let dir = TempDir::new("bad");
    let i64s = |v: Vec<i64>| AnyTensor::from(Tensor::from_vec(v.clone(), &[v.len()]));
    expect_format(load_edited(&dir, &model, "no_options", |t| drop(t.remove("3.options"))), "3.options");
    expect_format(load_edited(&dir, &model, "no_weight", |t| drop(t.remove("0.weight"))), "0.weight");
    expect_format(load_edited(&dir, &model, "no_scale", |t| drop(t.remove("3.weight_scale"))), "3.weight_scale");
    expect_format(load_edited(&dir, &model, "no_zero", |t| drop(t.remove("3.input_zero_point"))), "layer 3");
    expect_format(
        load_edited(&dir, &model, "zero_groups", |t| {
            drop(t.insert("3.options".into(), i64s(vec![2, 1, 0, 0, 1, 2, 0])))
        }),
        "groups",
    );
    expect_format(
        load_edited(&dir, &model, "groups_4", |t| drop(t.insert("3.options".into(), i64s(vec![2, 1, 0, 0, 1, 2, 4])))),
        "groups",
    );
    expect_format(
        load_edited(&dir, &model, "negative", |t| drop(t.insert("3.options".into(), i64s(vec![-1, 1, 0, 0, 1, 2, 2])))),
        "3.options",
    );
    expect_format(
        load_edited(&dir, &model, "pool_pad", |t| drop(t.insert("2.options".into(), i64s(vec![2, 2, 2, 2, 3, 3, 1])))),
        "pooling",
    );
    expect_format(
        load_edited(&dir, &model, "short_options", |t| drop(t.insert("5.options".into(), i64s(vec![3])))),
        "5.options",
    );
    expect_format(
        load_edited(&dir, &model, "flat_conv", |t| {
            drop(t.insert("0.weight".into(), Tensor::from_vec(vec![1i8; 36], &[4, 9]).into()))
        }),
        "4-D",
    );
    expect_format(
        load_edited(&dir, &model, "bad_scale", |t| {
            drop(t.insert("0.weight_scale".into(), Tensor::from_vec(vec![1.0f32, -1.0, 1.0, 1.0], &[4]).into()))
        }),
        "non-positive",
    );
    expect_format(load_edited(&dir, &model, "kind", |t| drop(t.insert("layers".into(), i64s(vec![1, 9])))), "kind 9");
    expect_format(load_edited(&dir, &model, "extra", |t| drop(t.insert("x".into(), i64s(vec![1])))), "`x`");

    // A truncated file and one that is not a checkpoint at all.
    let path = dir.0.join("whole.safetensors");
    model.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    assert!(QuantizedSequential::load(&path).is_err());
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(QuantizedSequential::load(&path).is_err());
    assert!(matches!(QuantizedSequential::load(dir.0.join("missing.safetensors")), Err(NnError::Io { .. })));
}

/// The straight-through estimator through a conv: the input's gradient is the plain conv's
/// input gradient (with the fake-quantized weight) times the input's mask, and the weight's
/// gradient is the plain conv's weight gradient (at the fake-quantized input) times the
/// weight's mask.
#[test]
fn qat_conv2d_gradient_is_the_masked_conv_gradient() {
    let mut rng = StdRng::seed_from_u64(5);
    let cfg = Conv2dConfig { stride: [2, 1], padding: [1, 1], groups: 2, ..Default::default() };
    let qat = QatConv2d::new(Conv2d::with_config(4, 6, [3, 3], cfg, &mut rng), 1.0);
    // The observer learns [-2, 2] from a first batch; the second batch goes beyond it, so
    // some of its elements are clamped and get no gradient.
    let first = Tensor::from_fn(&[1, 4, 5, 5], |i| {
        if i == 0 {
            -2.0
        } else if i == 1 {
            2.0
        } else {
            0.0
        }
    });
    let _ = qat.forward(&Var::constant(first));
    qat.eval();
    let x = randn(&[2, 4, 5, 5], 6);
    let px = qat.input_qparams().unwrap();
    let pw = qat.weight_qparams();
    let mask_x = fake_quantize_mask(&x, &px);
    assert!(mask_x.to_vec().contains(&0.0) && mask_x.to_vec().contains(&1.0));
    let xl = Var::leaf(x.clone());
    let y = qat.forward(&xl);
    let upstream = randn(y.shape(), 7);
    let g = (&y * &Var::constant(upstream.clone())).sum().backward();

    let w = qat.conv.weight.value();
    let wq = fake_quantize(&Var::constant(w.clone()), &pw).into_data();
    let xq = fake_quantize(&Var::constant(x.clone()), &px).into_data();
    let o = qat.conv.options;
    let gx = Tensor::conv2d_input_grad(&upstream, &wq, x.shape(), &o).mul(&mask_x);
    let gw = Tensor::conv2d_weight_grad(&xq, &upstream, w.shape(), &o).mul(&fake_quantize_mask(&w, &pw));
    let close = |a: &Tensor<f32>, b: &Tensor<f32>, what: &str| {
        assert_eq!(a.shape(), b.shape(), "{what}");
        for (u, v) in a.to_vec().iter().zip(b.to_vec()) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + v.abs()), "{what}: {u} vs {v}");
        }
    };
    close(g.get(&xl).unwrap(), &gx, "input gradient");
    close(g.get(&qat.conv.weight.var()).unwrap(), &gw, "weight gradient");
    let gb = upstream.sum_dims(&[0, 2, 3], false);
    close(g.get(&qat.conv.bias.as_ref().unwrap().var()).unwrap(), &gb, "bias gradient");
}

/// A QAT CNN converts to an int8 model that computes what the fake-quantized model simulated.
#[test]
fn qat_cnn_converts_to_what_it_simulated() {
    let cnn = small_cnn(3);
    let SmallCnn { c1, c2, fc1, fc2 } = cnn;
    let (q1, q2) = (QatConv2d::new(c1, 0.5), QatConv2d::new(c2, 0.5));
    let (l1, l2) = (QatLinear::new(fc1, 0.5), QatLinear::new(fc2, 0.5));
    let forward = |x: &Tensor<f32>| {
        let h = q1.forward(&Var::constant(x.clone())).relu().max_pool2d(&POOL.options);
        let h = q2.forward(&h).relu().avg_pool2d(&avg_pool().options);
        let n = h.shape()[0];
        l2.forward(&l1.forward(&h.reshape(&[n, 6])).relu()).into_data()
    };
    for s in 0..3 {
        let _ = forward(&batch(8, 30 + s));
    }
    for m in [&q1 as &dyn Module<f32>, &q2, &l1, &l2] {
        m.eval();
    }
    let layers = [
        FloatLayer::QatConv2d(&q1),
        FloatLayer::ReLU,
        FloatLayer::MaxPool2d(POOL),
        FloatLayer::QatConv2d(&q2),
        FloatLayer::ReLU,
        FloatLayer::AvgPool2d(avg_pool()),
        FloatLayer::Flatten,
        FloatLayer::Qat(&l1),
        FloatLayer::ReLU,
        FloatLayer::Qat(&l2),
    ];
    let int8 = QuantizedSequential::from_qat(&layers);
    let p = q2.input_qparams().unwrap();
    assert!(matches!(
        &int8.layers()[3],
        QuantizedLayer::Conv2d(c) if c.input_quant() == InputQuant::Static { scale: p.scale[0], zero_point: p.zero_point[0] }
    ));
    let x = batch(8, 40);
    let simulated = forward(&x);
    let scale = max_abs(&simulated);
    for (a, b) in int8.forward(&x).to_vec().iter().zip(simulated.to_vec()) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
    }
}
