//! `#[derive(Module)]`: the tree read off a struct's fields (names, roles, train/eval), the
//! attributes, and every shipped layer's parameter names (which checkpoints depend on).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrograd_autograd::{Param, Var};
use ferrograd_nn::layers::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, BatchNormConfig, Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, Dropout,
    Embedding, Flatten, LayerNorm, LayerNormConfig, LeakyReLU, Linear, LinearConfig, LogSoftmax, MaxPool2d, ReLU,
    Sequential, SiLU, Sigmoid, Softmax, Tanh, GELU,
};
use ferrograd_nn::{Module, NnError};
use ferrograd_tensor::{Float, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn names<F: Float>(m: &(impl Module<F> + ?Sized)) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

fn buffer_names<F: Float>(m: &(impl Module<F> + ?Sized)) -> Vec<String> {
    m.named_buffers().into_iter().map(|(n, _)| n).collect()
}

// ---------------------------------------------------------------- a transformer-shaped tree

/// Named as PyTorch's `nn.TransformerEncoderLayer`'s feed-forward half.
#[derive(Module)]
struct EncoderLayer<F: Float = f32> {
    linear1: Linear<F>,
    linear2: Linear<F>,
    norm1: LayerNorm<F>,
    dropout: Dropout,
}

impl<F: Float> EncoderLayer<F> {
    fn new(d: usize, rng: &mut StdRng) -> Self {
        EncoderLayer {
            linear1: Linear::new(d, 2 * d, rng),
            linear2: Linear::new(2 * d, d, rng),
            norm1: LayerNorm::new(&[d]),
            dropout: Dropout::new(0.5, 1),
        }
    }

    fn forward(&self, x: &Var<F>) -> Var<F> {
        let h = self.linear2.forward(&self.dropout.forward(&self.linear1.forward(x).relu()));
        self.norm1.forward(&(x + &h))
    }
}

#[derive(Module)]
struct Encoder<F: Float = f32> {
    layers: Vec<EncoderLayer<F>>,
    norm: Option<LayerNorm<F>>,
}

impl<F: Float> Encoder<F> {
    fn forward(&self, x: &Var<F>) -> Var<F> {
        let h = self.layers.iter().fold(x.clone(), |h, l| l.forward(&h));
        match &self.norm {
            Some(n) => n.forward(&h),
            None => h,
        }
    }
}

/// Every kind of field at once.
#[derive(Module)]
struct Model<F: Float = f32> {
    encoder: Encoder<F>,
    heads: [Linear<F>; 2],
    extra: Option<Linear<F>>,
    boxed: Box<dyn Module<F>>,
    grid: Vec<Vec<Linear<F>>>,
    scale: Param<F>,
    shift: Option<Param<F>>,
    #[module(buffer)]
    steps: Param<F>,
    #[module(buffer)]
    absent: Option<Param<F>>,
    #[module(skip)]
    frozen: Linear<F>,
    #[module(skip)]
    width: usize,
    #[module(training)]
    training: AtomicBool,
}

impl<F: Float> Model<F> {
    fn new(rng: &mut StdRng) -> Self {
        Model {
            encoder: Encoder {
                layers: vec![EncoderLayer::new(4, rng), EncoderLayer::new(4, rng)],
                norm: Some(LayerNorm::new(&[4])),
            },
            heads: [Linear::new(4, 2, rng), Linear::with_config(4, 2, LinearConfig { bias: false }, rng)],
            extra: None,
            boxed: Box::new(Sequential::new().add(Linear::<F>::new(2, 2, rng)).add(Tanh)),
            grid: vec![vec![], vec![Linear::new(1, 1, rng)]],
            scale: Param::new(Tensor::ones(&[1])),
            shift: None,
            steps: Param::new(Tensor::zeros(&[1])),
            absent: None,
            frozen: Linear::new(3, 3, rng),
            width: 4,
            training: AtomicBool::new(true),
        }
    }

    fn forward(&self, x: &Var<F>) -> Var<F> {
        let h = self.encoder.forward(x);
        let y = &self.heads[0].forward(&h) + &self.heads[1].forward(&h);
        &self.boxed.forward(&y) * &self.scale.var()
    }
}

#[test]
fn the_derived_tree_has_pytorch_dotted_names_in_field_order() {
    let m = Model::<f64>::new(&mut rng());
    let mut expected = vec!["scale".to_string()];
    for l in 0..2 {
        for p in ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "norm1.weight", "norm1.bias"] {
            expected.push(format!("encoder.layers.{l}.{p}"));
        }
    }
    expected.extend(
        ["encoder.norm.weight", "encoder.norm.bias", "heads.0.weight", "heads.0.bias", "heads.1.weight"]
            .map(String::from),
    );
    expected.extend(["boxed.0.weight", "boxed.0.bias", "grid.1.0.weight", "grid.1.0.bias"].map(String::from));
    assert_eq!(names(&m), expected);
    assert_eq!(buffer_names(&m), ["steps"]);
    // Own parameters come first (as in PyTorch), then each child's in field order.
    assert_eq!(m.params().iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["scale"]);
    let children: Vec<String> = m.children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(children, ["encoder", "heads.0", "heads.1", "boxed", "grid.1.0"]);
}

#[test]
fn optional_fields_appear_when_set() {
    let mut r = rng();
    let mut m = Model::<f32>::new(&mut r);
    m.extra = Some(Linear::new(2, 2, &mut r));
    m.shift = Some(Param::new(Tensor::zeros(&[1])));
    m.absent = Some(Param::new(Tensor::zeros(&[2])));
    m.encoder.norm = None;
    let n = names(&m);
    assert_eq!(n[..2], ["scale", "shift"]);
    assert!(n.contains(&"extra.weight".to_string()) && !n.iter().any(|n| n.starts_with("encoder.norm")));
    assert_eq!(buffer_names(&m), ["steps", "absent"]);
}

#[test]
fn skipped_fields_are_outside_the_tree_and_buffers_are_saved_but_not_trained() {
    let m = Model::<f64>::new(&mut rng());
    let frozen: Vec<Param<f64>> = m.frozen.parameters();
    assert!(
        m.parameters().iter().all(|p| !frozen.iter().any(|f| f.same(p))),
        "a skipped module's parameter is trained"
    );
    assert!(!m.state_dict().keys().any(|k| k.starts_with("frozen") || k.starts_with("width")));
    assert!(!m.parameters().iter().any(|p| p.same(&m.steps)), "a buffer is trained");
    assert!(m.named_buffers().iter().any(|(_, b)| b.same(&m.steps)));
    assert_eq!(m.width, 4);

    // Buffers travel with the state dict, skipped fields do not.
    let src = Model::<f64>::new(&mut StdRng::seed_from_u64(99));
    src.steps.set(Tensor::full(&[1], 41.0));
    let frozen_before = m.frozen.weight.value().to_vec();
    m.load_state_dict(&src.state_dict()).unwrap();
    assert_eq!(m.steps.value().to_vec(), [41.0]);
    assert_eq!(m.heads[0].weight.value().to_vec(), src.heads[0].weight.value().to_vec());
    assert_eq!(m.frozen.weight.value().to_vec(), frozen_before);

    // A state dict naming a skipped field is refused: the module has no such tensor.
    let mut extra: BTreeMap<String, Tensor<f64>> = src.state_dict();
    extra.insert("frozen.weight".into(), Tensor::zeros(&[3, 3]));
    assert!(matches!(m.load_state_dict(&extra), Err(NnError::UnexpectedTensor { name }) if name == "frozen.weight"));
}

#[test]
fn eval_and_train_reach_every_module_and_flag_in_the_tree() {
    #[derive(Module)]
    struct Deep {
        drops: Vec<Dropout>,
        maybe: Option<Dropout>,
        pair: [BatchNorm1d; 2],
        boxed: Box<dyn Module>,
        inner: Inner,
        #[module(training)]
        flag: AtomicBool,
        #[module(skip)]
        skipped: Dropout,
    }
    impl Deep {
        fn forward(&self, x: &Var) -> Var {
            x.clone()
        }
    }
    #[derive(Module)]
    struct Inner {
        seq: Sequential,
    }
    impl Inner {
        fn forward(&self, x: &Var) -> Var {
            self.seq.forward(x)
        }
    }
    let m = Deep {
        drops: vec![Dropout::new(0.5, 0), Dropout::new(0.5, 1)],
        maybe: Some(Dropout::new(0.5, 2)),
        pair: [BatchNorm1d::new(2), BatchNorm1d::new(2)],
        boxed: Box::new(BatchNorm1d::<f32>::new(2)),
        inner: Inner { seq: Sequential::new().add(Dropout::new(0.5, 3)) },
        flag: AtomicBool::new(true),
        skipped: Dropout::new(0.5, 4),
    };
    let x = Var::constant(Tensor::<f32>::ones(&[64]));
    let dropped = |d: &dyn Module| d.forward(&x).to_vec() != x.to_vec();
    let all_modes = |m: &Deep| {
        let mut v = vec![m.drops[0].is_training(), m.drops[1].is_training(), m.maybe.as_ref().unwrap().is_training()];
        v.extend([m.pair[0].is_training(), m.pair[1].is_training(), m.flag.load(Ordering::Relaxed)]);
        v.push(dropped(m.inner.seq.get(0).unwrap()));
        v
    };
    assert!(all_modes(&m).iter().all(|&t| t));
    m.eval();
    assert!(all_modes(&m).iter().all(|&t| !t), "eval() missed a module: {:?}", all_modes(&m));
    // The boxed BatchNorm normalises with its running statistics (0 and 1) in eval mode.
    let y = m.boxed.forward(&Var::constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])));
    assert!(y.to_vec().iter().zip([1.0, 2.0, 3.0, 4.0]).all(|(a, b)| (a - b).abs() < 1e-4));
    // A skipped module keeps its own mode.
    assert!(m.skipped.is_training());
    m.train(true);
    assert!(all_modes(&m).iter().all(|&t| t));
}

#[test]
fn derived_forward_calls_the_inherent_method_through_the_trait_and_dyn() {
    let m = Model::<f64>::new(&mut rng());
    m.eval();
    let x = Var::constant(Tensor::from_fn(&[3, 4], |i| (i as f64 * 0.37).sin()));
    let inherent = m.forward(&x).to_vec();
    assert_eq!(Module::forward(&m, &x).to_vec(), inherent);
    let as_dyn: &dyn Module<f64> = &m;
    assert_eq!(as_dyn.forward(&x).to_vec(), inherent);
    let in_sequential = Sequential::new().add(m);
    assert_eq!(in_sequential.forward(&x).to_vec(), inherent);
    assert_eq!(names(&in_sequential)[0], "0.scale");
}

// ---------------------------------------------------------------- struct attributes

/// `forward = method`: the single-input form under another name, the full one beside it.
#[derive(Module)]
#[module(forward = forward_zero_state)]
struct Cell<F: Float = f32> {
    w: Linear<F>,
    u: Linear<F>,
}

impl<F: Float> Cell<F> {
    fn forward(&self, x: &Var<F>, h: &Var<F>) -> Var<F> {
        (&self.w.forward(x) + &self.u.forward(h)).tanh()
    }

    fn forward_zero_state(&self, x: &Var<F>) -> Var<F> {
        self.forward(x, &Var::constant(Tensor::zeros(&[x.shape()[0], self.u.in_features()])))
    }
}

/// `forward = none`: only the two-input form.
#[derive(Module)]
#[module(forward = none)]
struct Attend<F: Float = f32> {
    q: Linear<F>,
}

impl<F: Float> Attend<F> {
    fn forward(&self, tgt: &Var<F>, memory: &Var<F>) -> Var<F> {
        self.q.forward(tgt).matmul(&memory.t())
    }
}

#[test]
fn forward_names_the_single_input_method() {
    let mut r = rng();
    let cell = Cell::<f64> { w: Linear::new(3, 2, &mut r), u: Linear::new(2, 2, &mut r) };
    let x = Var::constant(Tensor::from_fn(&[4, 3], |i| i as f64 * 0.1));
    let zeros = Var::constant(Tensor::zeros(&[4, 2]));
    assert_eq!(Module::forward(&cell, &x).to_vec(), cell.forward(&x, &zeros).to_vec());
    assert_eq!(names(&cell), ["w.weight", "w.bias", "u.weight", "u.bias"]);
}

#[test]
fn a_module_with_several_inputs_is_in_the_tree_and_its_own_forward_works() {
    let attend = Attend::<f32> { q: Linear::new(3, 3, &mut rng()) };
    let (t, mem) = (Var::constant(Tensor::ones(&[2, 3])), Var::constant(Tensor::ones(&[5, 3])));
    assert_eq!(attend.forward(&t, &mem).shape(), &[2, 5]);
    assert_eq!(names(&attend), ["q.weight", "q.bias"]);
}

#[test]
#[should_panic(expected = "Attend: this module takes several inputs")]
fn module_forward_of_a_several_input_module_panics_naming_it() {
    let attend = Attend::<f32> { q: Linear::new(3, 3, &mut rng()) };
    Module::forward(&attend, &Var::constant(Tensor::ones(&[2, 3])));
}

#[test]
fn float_any_float_and_generic_modules() {
    // A non-generic struct is a Module<f32> by default, or of the float it names.
    #[derive(Module)]
    #[module(float = f64)]
    struct Double {
        fc: Linear<f64>,
    }
    impl Double {
        fn forward(&self, x: &Var<f64>) -> Var<f64> {
            self.fc.forward(x)
        }
    }
    // A module for every float.
    #[derive(Module)]
    #[module(any_float)]
    struct Act {
        relu: ReLU,
        drop: Dropout,
    }
    impl Act {
        fn forward<F: Float>(&self, x: &Var<F>) -> Var<F> {
            self.drop.forward(&self.relu.forward(x))
        }
    }
    // Generic over a module: the parameter gets a `Module<F>` bound.
    #[derive(Module)]
    struct Residual<M> {
        inner: M,
        gate: Param,
    }
    impl<M: Module> Residual<M> {
        fn forward(&self, x: &Var) -> Var {
            x + &(&self.inner.forward(x) * &self.gate.var())
        }
    }
    // Tuple structs name their fields by position.
    #[derive(Module)]
    struct Pair(Linear, #[module(skip)] usize, Linear);
    impl Pair {
        fn forward(&self, x: &Var) -> Var {
            self.2.forward(&self.0.forward(x))
        }
    }

    let mut r = rng();
    let d = Double { fc: Linear::new(2, 2, &mut r) };
    assert_eq!(Module::<f64>::forward(&d, &Var::constant(Tensor::ones(&[1, 2]))).shape(), &[1, 2]);
    let act = Act { relu: ReLU, drop: Dropout::new(0.0, 0) };
    let x32 = Var::constant(Tensor::<f32>::from_vec(vec![-1.0, 2.0], &[2]));
    let x64 = Var::constant(Tensor::<f64>::from_vec(vec![-1.0, 2.0], &[2]));
    assert_eq!(Module::<f32>::forward(&act, &x32).to_vec(), [0.0, 2.0]);
    assert_eq!(Module::<f64>::forward(&act, &x64).to_vec(), [0.0, 2.0]);
    assert!(Module::<f32>::named_parameters(&act).is_empty());
    let res = Residual { inner: Linear::new(2, 2, &mut r), gate: Param::new(Tensor::zeros(&[1])) };
    assert_eq!(names(&res), ["gate", "inner.weight", "inner.bias"]);
    assert_eq!(Module::forward(&res, &x32.reshape(&[1, 2])).to_vec(), [-1.0, 2.0]);
    let pair = Pair(Linear::new(2, 3, &mut r), 9, Linear::new(3, 1, &mut r));
    assert_eq!(names(&pair), ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(pair.1, 9);
}

#[test]
fn where_clauses_lifetimes_raw_names_unit_structs_and_another_crate_path() {
    use ferrograd_nn as nnx;

    #[derive(Module)]
    struct Bounded<F>
    where
        F: Float,
    {
        r#type: Linear<F>,
    }
    impl<F: Float> Bounded<F> {
        fn forward(&self, x: &Var<F>) -> Var<F> {
            self.r#type.forward(x)
        }
    }
    #[derive(Module)]
    struct Borrowing<'a> {
        fc: Linear,
        #[module(skip)]
        label: &'a str,
    }
    impl Borrowing<'_> {
        fn forward(&self, x: &Var) -> Var {
            self.fc.forward(x)
        }
    }
    #[derive(Module)]
    #[module(any_float)]
    struct Identity;
    impl Identity {
        fn forward<F: Float>(&self, x: &Var<F>) -> Var<F> {
            x.clone()
        }
    }
    // The expansion names the crate where `crate = ...` says (here an alias of ferrograd_nn).
    #[derive(nnx::Module)]
    #[module(crate = nnx)]
    struct Aliased {
        fc: Linear,
    }
    impl Aliased {
        fn forward(&self, x: &Var) -> Var {
            self.fc.forward(x)
        }
    }

    let mut r = rng();
    assert_eq!(names(&Bounded::<f64> { r#type: Linear::new(1, 1, &mut r) }), ["type.weight", "type.bias"]);
    let label = String::from("b");
    let b = Borrowing { fc: Linear::new(1, 1, &mut r), label: &label };
    assert_eq!((names(&b).len(), b.label), (2, "b"));
    assert!(Module::<f64>::named_parameters(&Identity).is_empty());
    let x = Var::constant(Tensor::<f32>::ones(&[1, 1]));
    assert_eq!(Module::forward(&Identity, &x).to_vec(), [1.0]);
    assert_eq!(names(&Aliased { fc: Linear::new(1, 1, &mut r) }), ["fc.weight", "fc.bias"]);
}

#[test]
fn hand_written_and_derived_modules_nest_both_ways() {
    struct Scale(Param);
    impl Module for Scale {
        fn forward(&self, x: &Var) -> Var {
            x * &self.0.var()
        }
        fn params(&self) -> Vec<(&str, &Param)> {
            vec![("s", &self.0)]
        }
    }
    #[derive(Module)]
    struct Outer {
        scale: Scale,
        fc: Linear,
    }
    impl Outer {
        fn forward(&self, x: &Var) -> Var {
            self.scale.forward(&self.fc.forward(x))
        }
    }
    struct ByHand(Outer);
    impl Module for ByHand {
        fn forward(&self, x: &Var) -> Var {
            self.0.forward(x)
        }
        fn children(&self) -> Vec<(String, &dyn Module)> {
            vec![("outer".into(), &self.0)]
        }
    }
    let m = ByHand(Outer { scale: Scale(Param::new(Tensor::ones(&[1]))), fc: Linear::new(2, 2, &mut rng()) });
    assert_eq!(names(&m), ["outer.scale.s", "outer.fc.weight", "outer.fc.bias"]);
}

// ---------------------------------------------------------------- the shipped layers

/// A layer, its parameter names and its buffer names.
type LayerCase = (&'static str, Box<dyn Module<f32>>, Vec<&'static str>, Vec<&'static str>);

/// Parameter and buffer names of every layer, as PyTorch names them (checkpoints depend on it).
#[test]
fn every_shipped_layer_keeps_its_parameter_and_buffer_names() {
    let mut r = rng();
    let wb = ["weight", "bias"];
    let running = ["running_mean", "running_var"];
    let cases: Vec<LayerCase> = vec![
        ("Linear", Box::new(Linear::new(3, 2, &mut r)), wb.to_vec(), vec![]),
        (
            "Linear(bias=False)",
            Box::new(Linear::with_config(3, 2, LinearConfig { bias: false }, &mut r)),
            vec!["weight"],
            vec![],
        ),
        ("Conv1d", Box::new(Conv1d::new(2, 3, 3, &mut r)), wb.to_vec(), vec![]),
        (
            "Conv1d(bias=False)",
            Box::new(Conv1d::with_config(2, 3, 3, Conv1dConfig { bias: false, ..Default::default() }, &mut r)),
            vec!["weight"],
            vec![],
        ),
        ("Conv2d", Box::new(Conv2d::new(2, 3, [3, 3], &mut r)), wb.to_vec(), vec![]),
        (
            "Conv2d(bias=False)",
            Box::new(Conv2d::with_config(2, 3, [3, 3], Conv2dConfig { bias: false, ..Default::default() }, &mut r)),
            vec!["weight"],
            vec![],
        ),
        ("BatchNorm1d", Box::new(BatchNorm1d::new(3)), wb.to_vec(), running.to_vec()),
        ("BatchNorm2d", Box::new(BatchNorm2d::new(3)), wb.to_vec(), running.to_vec()),
        (
            "BatchNorm2d(affine=False)",
            Box::new(BatchNorm2d::with_config(3, BatchNormConfig { affine: false, ..Default::default() })),
            vec![],
            running.to_vec(),
        ),
        ("LayerNorm", Box::new(LayerNorm::new(&[4])), wb.to_vec(), vec![]),
        (
            "LayerNorm(bias=False)",
            Box::new(LayerNorm::with_config(&[4], LayerNormConfig { bias: false, ..Default::default() })),
            vec!["weight"],
            vec![],
        ),
        (
            "LayerNorm(elementwise_affine=False)",
            Box::new(LayerNorm::with_config(&[4], LayerNormConfig { elementwise_affine: false, ..Default::default() })),
            vec![],
            vec![],
        ),
        ("Embedding", Box::new(Embedding::new(5, 2, &mut r)), vec!["weight"], vec![]),
        (
            "Sequential",
            Box::new(
                Sequential::new()
                    .add(Conv2d::new(1, 2, [3, 3], &mut r))
                    .add(BatchNorm2d::new(2))
                    .add(ReLU)
                    .add(Flatten::default())
                    .add(Linear::new(8, 2, &mut r)),
            ),
            vec!["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"],
            vec!["1.running_mean", "1.running_var"],
        ),
        ("ReLU", Box::new(ReLU), vec![], vec![]),
        ("SiLU", Box::new(SiLU), vec![], vec![]),
        ("Sigmoid", Box::new(Sigmoid), vec![], vec![]),
        ("Tanh", Box::new(Tanh), vec![], vec![]),
        ("GELU", Box::new(GELU::default()), vec![], vec![]),
        ("LeakyReLU", Box::new(LeakyReLU::default()), vec![], vec![]),
        ("Softmax", Box::new(Softmax::new(-1)), vec![], vec![]),
        ("LogSoftmax", Box::new(LogSoftmax::new(-1)), vec![], vec![]),
        ("Dropout", Box::new(Dropout::new(0.1, 0)), vec![], vec![]),
        ("Flatten", Box::new(Flatten::default()), vec![], vec![]),
        ("MaxPool2d", Box::new(MaxPool2d::new([2, 2])), vec![], vec![]),
        ("AvgPool2d", Box::new(AvgPool2d::new([2, 2])), vec![], vec![]),
    ];
    for (layer, m, params, buffers) in cases {
        assert_eq!(names(&*m), params, "{layer} parameters");
        assert_eq!(buffer_names(&*m), buffers, "{layer} buffers");
        let keys: Vec<String> = m.state_dict().into_keys().collect();
        let mut expected: Vec<String> = params.iter().chain(&buffers).map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(keys, expected, "{layer} state_dict");
    }
}
