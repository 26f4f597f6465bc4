//! `check::gradcheck_module` / `gradgradcheck_module`: they pass on the shipped layers and on a
//! derived model, catch a wrong backward in a user layer (naming the parameter by its dotted name
//! and the element), and leave the module as they found it.

use ferrograd_autograd::{CustomOp, Param, Var};
use ferrograd_nn::check::{
    gradcheck_module, gradcheck_module_with, gradgradcheck_module, gradgradcheck_module_with, GradcheckOptions,
    ModuleGradcheckError,
};
use ferrograd_nn::layers::{BatchNorm1d, Conv2d, Conv2dConfig, Dropout, LayerNorm, Linear};
use ferrograd_nn::Module;
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn wavy(shape: &[usize], phase: f64) -> Tensor<f64> {
    Tensor::from_fn(shape, |i| (i as f64 * 0.77 + phase).sin())
}

/// `x * w` with `w` broadcast along the last dim; the gradient to `w` is scaled by `factor` on
/// element `bad` (1.0: correct).
struct Scale {
    bad: usize,
    factor: f64,
}

impl CustomOp<f64> for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
        inputs[0].mul(inputs[1])
    }
    fn backward(&self, inputs: &[Var<f64>], _output: &Var<f64>, grad: &Var<f64>) -> Vec<Option<Var<f64>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let n = w.numel();
        let mask = Tensor::from_fn(&[n], |i| if i == self.bad { self.factor } else { 1.0 });
        let gw = (grad * x).sum_dims(&[0], false) * Var::constant(mask);
        vec![Some(grad * w), Some(gw)]
    }
}

/// `sin(w) * x` whose backward treats `cos(w)` as a constant: first derivatives right, second
/// derivatives with respect to `w` wrong.
struct SinScale;

impl CustomOp<f64> for SinScale {
    fn name(&self) -> &'static str {
        "sin_scale"
    }
    fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
        inputs[1].sin().mul(inputs[0])
    }
    fn backward(&self, inputs: &[Var<f64>], _output: &Var<f64>, grad: &Var<f64>) -> Vec<Option<Var<f64>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let cos_w = Var::constant(w.data().cos());
        vec![Some(grad * &w.sin()), Some((grad * x * cos_w).sum_dims(&[0], false))]
    }
}

/// A user layer over a custom op.
#[derive(Module)]
#[module(float = f64)]
struct Scaled {
    w: Param<f64>,
    #[module(skip)]
    op: fn() -> Scale,
}

impl Scaled {
    fn forward(&self, x: &Var<f64>) -> Var<f64> {
        Var::apply_op((self.op)(), &[x, &self.w.var()])
    }
}

#[derive(Module)]
#[module(float = f64)]
struct Net {
    fc: Linear<f64>,
    scale: Scaled,
    norm: LayerNorm<f64>,
}

impl Net {
    fn new(op: fn() -> Scale) -> Self {
        Net {
            fc: Linear::new(3, 4, &mut rng(1)),
            scale: Scaled { w: Param::new(wavy(&[4], 0.3)), op },
            norm: LayerNorm::new(&[4]),
        }
    }

    fn forward(&self, x: &Var<f64>) -> Var<f64> {
        self.norm.forward(&self.scale.forward(&self.fc.forward(x)).tanh())
    }
}

#[test]
fn shipped_layers_and_a_derived_model_pass_both_checks() {
    let x = wavy(&[2, 3], 0.0);
    gradcheck_module(&Linear::<f64>::new(3, 2, &mut rng(0)), &x).unwrap();
    gradgradcheck_module(&Linear::<f64>::new(3, 2, &mut rng(0)), &x).unwrap();
    gradcheck_module(&LayerNorm::<f64>::new(&[3]), &x).unwrap();
    gradgradcheck_module(&LayerNorm::<f64>::new(&[3]), &x).unwrap();
    // BatchNorm in training mode: batch statistics, so every element depends on every other.
    gradcheck_module(&BatchNorm1d::<f64>::new(3), &wavy(&[4, 3], 1.0)).unwrap();
    let cfg = Conv2dConfig { padding: [1, 1], stride: [2, 1], ..Default::default() };
    let conv = Conv2d::<f64>::with_config(2, 2, [3, 2], cfg, &mut rng(3));
    gradcheck_module(&conv, &wavy(&[1, 2, 3, 3], 0.5)).unwrap();

    let net = Net::new(|| Scale { bad: 0, factor: 1.0 });
    gradcheck_module(&net, &x).unwrap();
    gradgradcheck_module(&net, &x).unwrap();
    // A transposed (non-contiguous) input is differentiated in its own layout.
    let xt = wavy(&[3, 2], 0.2).t();
    assert!(!xt.is_contiguous());
    gradcheck_module(&net, &xt).unwrap();
}

#[test]
fn a_wrong_parameter_gradient_is_named_by_its_dotted_name_and_element() {
    let net = Net::new(|| Scale { bad: 2, factor: 1.5 });
    let err: ModuleGradcheckError = gradcheck_module(&net, &wavy(&[2, 3], 0.0)).unwrap_err();
    assert_eq!((err.second_order, err.wrt.as_str(), err.wrt_index.as_slice()), (false, "scale.w", &[2][..]));
    assert_eq!(err.of, "output");
    assert!((err.analytic - err.numeric).abs() > 1e-4, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("scale.w[2]") && msg.contains("gradcheck_module: d output["), "{msg}");
}

#[test]
fn a_wrong_input_gradient_is_named_as_the_input() {
    /// `x²` with backward `x` (should be `2x`).
    struct HalfSquare;
    impl CustomOp<f64> for HalfSquare {
        fn name(&self) -> &'static str {
            "half_square"
        }
        fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
            inputs[0].mul(inputs[0])
        }
        fn backward(&self, inputs: &[Var<f64>], _output: &Var<f64>, grad: &Var<f64>) -> Vec<Option<Var<f64>>> {
            vec![Some(grad * &inputs[0])]
        }
    }
    #[derive(Module)]
    #[module(float = f64)]
    struct Square {
        fc: Linear<f64>,
    }
    impl Square {
        fn forward(&self, x: &Var<f64>) -> Var<f64> {
            self.fc.forward(&Var::apply_op(HalfSquare, &[x]))
        }
    }
    let m = Square { fc: Linear::new(3, 2, &mut rng(4)) };
    let err = gradcheck_module(&m, &wavy(&[2, 3], 0.1)).unwrap_err();
    assert_eq!((err.wrt.as_str(), err.wrt_index.as_slice()), ("input 0", &[0, 0][..]));
}

#[test]
fn a_backward_that_is_not_differentiable_fails_only_the_second_order_check() {
    #[derive(Module)]
    #[module(float = f64)]
    struct Layer {
        fc: Linear<f64>,
        w: Param<f64>,
    }
    impl Layer {
        fn forward(&self, x: &Var<f64>) -> Var<f64> {
            Var::apply_op(SinScale, &[&self.fc.forward(x), &self.w.var()])
        }
    }
    let m = Layer { fc: Linear::new(3, 2, &mut rng(5)), w: Param::new(wavy(&[2], 0.9)) };
    let x = wavy(&[2, 3], 0.4);
    gradcheck_module(&m, &x).unwrap();
    let err = gradgradcheck_module(&m, &x).unwrap_err();
    assert!(err.second_order && err.to_string().starts_with("gradgradcheck_module: d d(u·output)/d w["), "{err}");
    assert_eq!((err.of.as_str(), err.wrt.as_str()), ("d(u·output)/d w", "w"), "{err}");
}

#[test]
fn several_inputs_and_captured_indices_go_through_the_with_variants() {
    #[derive(Module)]
    #[module(float = f64, forward = none)]
    struct Bilinear {
        q: Linear<f64>,
        k: Linear<f64>,
    }
    impl Bilinear {
        fn forward(&self, a: &Var<f64>, b: &Var<f64>) -> Var<f64> {
            self.q.forward(a).matmul(&self.k.forward(b).t())
        }
    }
    let m = Bilinear { q: Linear::new(3, 2, &mut rng(6)), k: Linear::new(4, 2, &mut rng(7)) };
    let inputs = [wavy(&[2, 3], 0.0), wavy(&[5, 4], 1.0)];
    let opts = GradcheckOptions::default();
    gradcheck_module_with(&m, &inputs, |v| m.forward(&v[0], &v[1]), &opts).unwrap();
    gradgradcheck_module_with(&m, &inputs, |v| m.forward(&v[0], &v[1]), &opts).unwrap();

    // Integer inputs are captured, not perturbed: only the parameters are checked.
    let emb = ferrograd_nn::layers::Embedding::<f64>::new(5, 3, &mut rng(8));
    let idx = Tensor::from_vec(vec![4i64, 0, 4], &[3]);
    gradcheck_module_with(&emb, &[], |_| emb.forward_indices(&idx).tanh(), &opts).unwrap();
}

#[test]
fn the_module_is_left_as_it_was_even_after_a_failure() {
    #[derive(Module)]
    #[module(float = f64)]
    struct WithNorm {
        net: Net,
        bn: BatchNorm1d<f64>,
    }
    impl WithNorm {
        fn forward(&self, x: &Var<f64>) -> Var<f64> {
            self.bn.forward(&self.net.forward(x))
        }
    }
    let m = WithNorm { net: Net::new(|| Scale { bad: 1, factor: 3.0 }), bn: BatchNorm1d::new(4) };
    let before: Vec<Vec<f64>> = m.state_dict().values().map(|t| t.to_vec()).collect();
    assert!(gradcheck_module(&m, &wavy(&[3, 3], 0.0)).is_err());
    let after: Vec<Vec<f64>> = m.state_dict().values().map(|t| t.to_vec()).collect();
    assert_eq!(before, after, "parameters or running statistics moved by the check");
}

#[test]
fn a_random_forward_fails_until_dropout_is_in_eval_mode() {
    #[derive(Module)]
    #[module(float = f64)]
    struct Noisy {
        fc: Linear<f64>,
        drop: Dropout,
    }
    impl Noisy {
        fn forward(&self, x: &Var<f64>) -> Var<f64> {
            self.drop.forward(&self.fc.forward(x))
        }
    }
    let m = Noisy { fc: Linear::new(3, 8, &mut rng(9)), drop: Dropout::new(0.5, 0) };
    let x = wavy(&[4, 3], 0.0);
    assert!(gradcheck_module(&m, &x).is_err());
    m.eval();
    gradcheck_module(&m, &x).unwrap();
}
