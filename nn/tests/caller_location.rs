//! Errors inside losses and layer forwards report the line in the user's code: the call of the
//! loss or of `forward` (also through `Sequential` and `dyn Module`), or, inside a user's own
//! module, the line of that module which called the failing op. Anomaly mode names the same
//! lines. One test per family.

use ferrograd_autograd::{detect_anomaly, Var};
use ferrograd_nn::layers::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, Embedding, Flatten, LayerNorm, LeakyReLU, Linear,
    LogSoftmax, MaxPool2d, ReLU, Sequential, SiLU, Sigmoid, Softmax, Tanh, GELU,
};
use ferrograd_nn::loss::{
    binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_with, cross_entropy, cross_entropy_probs,
    cross_entropy_with, kl_div, l1_loss, l1_penalty, l2_penalty, mse_loss, nll_loss, smooth_l1_loss_with,
    BceWithLogitsOptions, CrossEntropyOptions, SmoothL1Options,
};
use ferrograd_nn::Module;
use ferrograd_tensor::testing::catch_panic;
use ferrograd_tensor::{assert_panics_here, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn v(shape: &[usize]) -> Var<f64> {
    Var::leaf(Tensor::zeros(shape))
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(0)
}

/// The line of this file that holds `marker` (a comment at the end of the line).
fn line_of(marker: &str) -> u32 {
    let source = include_str!("caller_location.rs");
    let at = source.lines().position(|l| l.ends_with(marker)).expect("marker present in this file");
    at as u32 + 1
}

#[test]
fn losses() {
    let (a, b) = (v(&[2, 3]), v(&[3, 2]));
    assert_panics_here!(mse_loss(&a, &b), "mse_loss", "[2, 3]", "[3, 2]");
    assert_panics_here!(l1_loss(&a, &b), "l1_loss", "[2, 3]", "[3, 2]");
    let bad_beta = SmoothL1Options { beta: -1.0, ..Default::default() };
    assert_panics_here!(smooth_l1_loss_with(&a, &a, &bad_beta), "smooth_l1_loss", "beta");
    assert_panics_here!(smooth_l1_loss_with(&a, &b, &Default::default()), "smooth_l1_loss", "[2, 3]", "[3, 2]");
    let targets = Tensor::from_vec(vec![0i64, 1, 2], &[3]);
    assert_panics_here!(cross_entropy(&a, &targets), "cross_entropy", "[2, 3]", "[3]");
    assert_panics_here!(cross_entropy(&v(&[3]), &targets), "cross_entropy", "[3]");
    let out_of_range = Tensor::from_vec(vec![0i64, 3], &[2]);
    assert_panics_here!(cross_entropy(&a, &out_of_range), "cross_entropy", "target 3", "3 classes");
    let smoothing = CrossEntropyOptions { label_smoothing: 2.0, ..Default::default() };
    assert_panics_here!(cross_entropy_with(&a, &out_of_range, &smoothing), "cross_entropy", "label_smoothing");
    assert_panics_here!(nll_loss(&a, &targets), "nll_loss", "[2, 3]", "[3]");
    assert_panics_here!(cross_entropy_probs(&a, &b), "cross_entropy_probs", "[2, 3]", "[3, 2]");
    assert_panics_here!(binary_cross_entropy_with_logits(&a, &b), "binary_cross_entropy_with_logits", "[2, 3]");
    let pw = BceWithLogitsOptions { pos_weight: Some(Tensor::ones(&[2])), ..Default::default() };
    assert_panics_here!(binary_cross_entropy_with_logits_with(&a, &a, &pw), "pos_weight", "[2]", "[2, 3]");
    assert_panics_here!(kl_div(&a, &b), "kl_div", "[2, 3]", "[3, 2]");
}

#[test]
fn layer_forwards() {
    let fc = Linear::<f64>::new(4, 2, &mut rng());
    assert_panics_here!(fc.forward(&v(&[3, 5])), "Linear", "[3, 5]", "[2, 4]");
    let conv2 = Conv2d::<f64>::new(3, 4, [3, 3], &mut rng());
    assert_panics_here!(conv2.forward(&v(&[1, 2, 5, 5])), "conv2d", "[1, 2, 5, 5]", "[4, 3, 3, 3]");
    let conv1 = Conv1d::<f64>::new(3, 4, 3, &mut rng());
    assert_panics_here!(conv1.forward(&v(&[1, 3, 2])), "conv1d", "[1, 3, 2]", "[4, 3, 3]");
    assert_panics_here!(Module::<f64>::forward(&MaxPool2d::new([2, 2]), &v(&[5, 5])), "max_pool2d", "[5, 5]");
    assert_panics_here!(Module::<f64>::forward(&AvgPool2d::new([4, 4]), &v(&[1, 2, 2])), "avg_pool2d", "[1, 2, 2]");
    assert_panics_here!(BatchNorm1d::<f64>::new(3).forward(&v(&[2, 4])), "BatchNorm1d", "[2, 4]");
    assert_panics_here!(BatchNorm2d::<f64>::new(3).forward(&v(&[2, 3])), "BatchNorm2d", "[2, 3]");
    assert_panics_here!(BatchNorm1d::<f64>::new(3).forward(&v(&[1, 3])), "BatchNorm1d", "more than 1 value");
    assert_panics_here!(LayerNorm::<f64>::new(&[4]).forward(&v(&[2, 3])), "LayerNorm", "[2, 3]", "[4]");
    let emb = Embedding::<f64>::new(3, 2, &mut rng());
    let half = Var::constant(Tensor::from_vec(vec![0.5], &[1]));
    assert_panics_here!(emb.forward(&half), "Embedding", "0.5");
    let three = Var::constant(Tensor::from_vec(vec![3.0], &[1]));
    assert_panics_here!(emb.forward(&three), "Embedding", "index 3", "3 embeddings");
    assert_panics_here!(emb.forward_indices(&Tensor::from_vec(vec![-1], &[1])), "Embedding", "index -1");
    assert_panics_here!(Module::<f64>::forward(&Flatten::new(2, 1), &v(&[2, 3, 4])), "flatten", "[2, 3, 4]");
    assert_panics_here!(Module::<f64>::forward(&Softmax::new(2), &v(&[2, 3])), "softmax", "dim 2");
    assert_panics_here!(Module::<f64>::forward(&LogSoftmax::new(2), &v(&[2, 3])), "log_softmax", "dim 2");
}

fn mlp() -> Sequential<f64> {
    let mut rng = rng();
    Sequential::new().add(Linear::new(4, 8, &mut rng)).add(ReLU).add(Linear::new(3, 1, &mut rng))
}

#[test]
fn sequential_and_dyn_module() {
    let x = v(&[2, 4]);
    let seq = mlp();
    assert_panics_here!(seq.forward(&x), "Linear", "[2, 8]", "[1, 3]");
    let nested = Sequential::new().add(ReLU).add(mlp());
    assert_panics_here!(nested.forward(&x), "Linear", "[2, 8]", "[1, 3]");
    let mut pushed = Sequential::new();
    pushed.push(Box::new(Linear::<f64>::new(5, 1, &mut rng())));
    assert_panics_here!(pushed.forward(&x), "Linear", "[2, 4]", "[1, 5]");
    let boxed: Box<dyn Module<f64>> = Box::new(Linear::new(5, 1, &mut rng()));
    assert_panics_here!(boxed.forward_tracked(&x), "Linear", "[2, 4]", "[1, 5]");
    let as_dyn: &dyn Module<f64> = &seq;
    assert_panics_here!(as_dyn.forward_tracked(&x), "Linear", "[2, 8]", "[1, 3]");
}

/// A user's own module: two shipped layers and a few ops. Its own `forward` is not
/// `#[track_caller]`, so errors inside it report its lines, which is where the user looks.
struct Block {
    fc1: Linear<f64>,
    fc2: Linear<f64>,
}

impl Block {
    fn new(hidden: usize) -> Self {
        let mut rng = rng();
        Block { fc1: Linear::new(4, 8, &mut rng), fc2: Linear::new(hidden, 2, &mut rng) }
    }
}

impl Module<f64> for Block {
    fn forward(&self, x: &Var<f64>) -> Var<f64> {
        let h = self.fc1.forward(x).relu(); // @fc1
        let h = h.sqrt(); // @sqrt
        self.fc2.forward(&h) // @fc2
    }
}

#[test]
fn user_module_reports_its_own_lines() {
    let block = Block::new(3);
    let p = catch_panic(|| block.forward(&v(&[2, 4]))).expect("fc2 has the wrong in_features");
    assert_eq!((p.file.as_str(), p.line), (file!(), line_of("// @fc2")), "{}", p.message);
    let p = catch_panic(|| block.forward(&v(&[2, 5]))).expect("the input has the wrong width");
    assert_eq!((p.file.as_str(), p.line), (file!(), line_of("// @fc1")), "{}", p.message);
    // Inside a Sequential, the user's module still reports its own line.
    let seq = Sequential::new().add(Block::new(3));
    let p = catch_panic(|| seq.forward(&v(&[2, 4]))).expect("fc2 has the wrong in_features");
    assert_eq!((p.file.as_str(), p.line), (file!(), line_of("// @fc2")), "{}", p.message);
}

/// Runs `f` in anomaly mode and returns its panic message.
fn anomaly(f: impl FnOnce()) -> String {
    catch_panic(|| detect_anomaly(f)).expect("anomaly mode should have panicked").message
}

fn names(message: &str, line: u32) -> bool {
    message.starts_with("anomaly") && message.contains(&format!("{}:{line}:", file!()))
}

#[test]
fn anomaly_mode_names_the_users_line() {
    // A NaN input makes Linear::forward's op (`linear`) produce NaN.
    let fc = Linear::<f64>::new(4, 2, &mut rng());
    let nan = Var::constant(Tensor::full(&[2, 4], f64::NAN));
    let line = line!() + 1;
    let m = anomaly(|| drop(fc.forward(&nan)));
    assert!(names(&m, line), "{m}");
    assert!(m.contains("`linear`"), "{m}");
    // Through a Sequential (dyn dispatch inside).
    let seq = Sequential::new().add(Linear::<f64>::new(4, 2, &mut rng())).add(ReLU);
    let line = line!() + 1;
    let m = anomaly(|| drop(seq.forward(&nan)));
    assert!(names(&m, line), "{m}");
    // In a user's own module, the line of the module that called the layer or op: for a value
    // (the NaN input reaches fc1's linear op) and for a gradient (sqrt's is infinite where relu
    // gave 0).
    let block = Block::new(8);
    let m = anomaly(|| drop(block.forward(&nan)));
    assert!(names(&m, line_of("// @fc1")) && m.contains("`linear`"), "{m}");
    let x = Var::constant(Tensor::from_vec(vec![1.0, -2.0, 3.0, 0.5, -1.0, 2.0, 0.25, 4.0], &[2, 4]));
    let m = anomaly(|| drop(block.forward(&x).sum().backward()));
    assert!(names(&m, line_of("// @sqrt")) && m.contains("backward of op `sqrt`"), "{m}");
    // A loss and a penalty record the line that called them.
    let p = Var::leaf(Tensor::from_vec(vec![f64::NAN, 1.0], &[2]));
    let line = line!() + 1;
    let m = anomaly(|| drop(mse_loss(&p, &Var::constant(Tensor::zeros(&[2])))));
    assert!(names(&m, line), "{m}");
    let param = ferrograd_autograd::Param::new(Tensor::from_vec(vec![f64::INFINITY], &[1]));
    let line = line!() + 1;
    let m = anomaly(|| drop(l2_penalty(&[param])));
    assert!(names(&m, line), "{m}");
}

/// Asserts that anomaly mode, run on `$e` (which must produce a NaN or an infinity), names the
/// line of this macro call, and that its message contains each fragment (the op's name).
macro_rules! assert_anomaly_here {
    ($e:expr $(, $fragment:expr)* $(,)?) => {{
        let line = line!();
        let m = anomaly(|| drop($e));
        assert!(names(&m, line), "`{}` should name line {line}: {m}", stringify!($e));
        $(assert!(m.contains($fragment), "`{}`: {m} does not mention {:?}", stringify!($e), $fragment);)*
    }};
}

fn nan(shape: &[usize]) -> Var<f64> {
    Var::constant(Tensor::full(shape, f64::NAN))
}

#[test]
fn anomaly_mode_names_the_line_that_called_each_layer() {
    let conv2 = Conv2d::<f64>::new(2, 3, [3, 3], &mut rng());
    assert_anomaly_here!(conv2.forward(&nan(&[1, 2, 4, 4])), "`conv2d`");
    let conv1 = Conv1d::<f64>::new(2, 3, 3, &mut rng());
    assert_anomaly_here!(conv1.forward(&nan(&[1, 2, 4])), "`conv1d`");
    let x4 = nan(&[1, 2, 4, 4]);
    assert_anomaly_here!(Module::<f64>::forward(&MaxPool2d::new([2, 2]), &x4), "`max_pool2d`");
    assert_anomaly_here!(Module::<f64>::forward(&AvgPool2d::new([2, 2]), &x4), "`avg_pool2d`");
    assert_anomaly_here!(BatchNorm2d::<f64>::new(2).forward(&x4));
    assert_anomaly_here!(BatchNorm1d::<f64>::new(3).forward(&nan(&[2, 3])));
    assert_anomaly_here!(LayerNorm::<f64>::new(&[3]).forward(&nan(&[2, 3])));
    let emb = Embedding::<f64>::new(3, 2, &mut rng());
    emb.weight.set(Tensor::full(&[3, 2], f64::NAN));
    let ids = Var::constant(Tensor::from_vec(vec![0.0, 2.0], &[2]));
    assert_anomaly_here!(emb.forward(&ids), "`index_select`");
    assert_anomaly_here!(emb.forward_indices(&Tensor::from_vec(vec![1], &[1])), "`index_select`");
    let x = nan(&[2, 3]);
    assert_anomaly_here!(Module::<f64>::forward(&Dropout::new(0.5, 0), &x), "`mul`");
    assert_anomaly_here!(Module::<f64>::forward(&ReLU, &x), "`relu`");
    assert_anomaly_here!(Module::<f64>::forward(&LeakyReLU::default(), &x), "`leaky_relu`");
    assert_anomaly_here!(Module::<f64>::forward(&GELU::default(), &x));
    assert_anomaly_here!(Module::<f64>::forward(&SiLU, &x));
    assert_anomaly_here!(Module::<f64>::forward(&Sigmoid, &x), "`sigmoid`");
    assert_anomaly_here!(Module::<f64>::forward(&Tanh, &x), "`tanh`");
    assert_anomaly_here!(Module::<f64>::forward(&Softmax::new(1), &x));
    assert_anomaly_here!(Module::<f64>::forward(&LogSoftmax::new(1), &x));
    assert_anomaly_here!(Module::<f64>::forward(&Flatten::default(), &nan(&[2, 3, 4])));
    // Deep inside containers, through `dyn Module`.
    let mut rng = rng();
    let cnn = Sequential::new()
        .add(Conv2d::new(2, 3, [3, 3], &mut rng))
        .add(BatchNorm2d::new(3))
        .add(ReLU)
        .add(Sequential::new().add(Flatten::default()).add(Linear::new(12, 2, &mut rng)));
    let boxed: Box<dyn Module<f64>> = Box::new(cnn);
    assert_anomaly_here!(boxed.forward_tracked(&x4), "`conv2d`");
}

#[test]
fn anomaly_mode_names_the_line_that_called_each_loss() {
    let (x, ok) = (nan(&[2, 3]), Var::constant(Tensor::zeros(&[2, 3])));
    let targets = Tensor::from_vec(vec![0i64, 2], &[2]);
    assert_anomaly_here!(mse_loss(&x, &ok));
    assert_anomaly_here!(l1_loss(&x, &ok));
    assert_anomaly_here!(smooth_l1_loss_with(&x, &ok, &Default::default()));
    assert_anomaly_here!(cross_entropy(&x, &targets));
    assert_anomaly_here!(nll_loss(&x, &targets));
    assert_anomaly_here!(cross_entropy_probs(&x, &ok));
    assert_anomaly_here!(binary_cross_entropy_with_logits(&x, &ok));
    assert_anomaly_here!(kl_div(&x, &ok));
    let p = ferrograd_autograd::Param::new(Tensor::from_vec(vec![f64::NAN], &[1]));
    assert_anomaly_here!(l1_penalty(&[p]));
}

#[test]
fn init_and_data_arguments() {
    use ferrograd_nn::data::augment::{Normalize, RandomCrop, RandomHorizontalFlip, RandomRotation, Transform};
    use ferrograd_nn::data::{DataLoader, TensorDataset};
    use ferrograd_nn::init::{self, FanMode, Nonlinearity};
    let mut r = rng();
    assert_panics_here!(init::xavier_uniform::<f64>(&[3], 1.0, &mut r), "fan_in_and_fan_out", "[3]");
    assert_panics_here!(init::xavier_normal::<f64>(&[3], 1.0, &mut r), "fan_in_and_fan_out", "[3]");
    let (fan_in, relu) = (FanMode::FanIn, Nonlinearity::Relu);
    assert_panics_here!(init::kaiming_uniform::<f64>(&[2, 0], 0.0, fan_in, relu, &mut r), "kaiming", "[2, 0]");
    assert_panics_here!(init::kaiming_normal::<f64>(&[2, 0], 0.0, fan_in, relu, &mut r), "kaiming", "[2, 0]");
    assert_panics_here!(init::uniform::<f64>(&[2], 1.0, 0.0, &mut r), "rand_uniform");
    assert_panics_here!(init::normal::<f64>(&[2], 0.0, -1.0, &mut r), "rand_normal");
    let (x, y) = (Tensor::<f32>::zeros(&[3, 2]), Tensor::<i64>::zeros(&[2]));
    assert_panics_here!(TensorDataset::new(x.clone(), y), "TensorDataset::new", "[3, 2]", "[2]");
    let ds = TensorDataset::new(x, Tensor::<i64>::zeros(&[3]));
    assert_panics_here!(DataLoader::new(ds, 0), "DataLoader::new", "batch_size");
    assert_panics_here!(RandomHorizontalFlip::new(2.0), "RandomHorizontalFlip", "[0, 1]");
    assert_panics_here!(RandomRotation::new(f64::NAN), "RandomRotation", "NaN");
    assert_panics_here!(RandomRotation::range(2.0, 1.0), "RandomRotation", "[2, 1]");
    assert_panics_here!(Normalize::new(vec![0.0], vec![1.0, 1.0]), "Normalize", "1 means but 2 stds");
    let (img, flat) = (Tensor::<f32>::zeros(&[1, 2, 4, 4]), Tensor::<f32>::zeros(&[4, 4]));
    let (norm, crop5, crop2) = (Normalize::new(vec![0.0], vec![1.0]), RandomCrop::new(5, 0), RandomCrop::new(2, 0));
    let mut r = rng();
    assert_panics_here!(norm.apply(&img, &mut r), "Normalize", "[1, 2, 4, 4]");
    assert_panics_here!(crop5.apply(&img, &mut r), "RandomCrop", "[1, 2, 4, 4]");
    assert_panics_here!(crop2.apply(&flat, &mut r), "RandomCrop", "[4, 4]");
    let path = std::env::temp_dir().join("caller_location_never_written.idx");
    assert_panics_here!(ferrograd_nn::data::write_idx(&path, &[2, 3], &[0; 5]), "write_idx", "[2, 3]");
    assert!(!path.exists());
}
