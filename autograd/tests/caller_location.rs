//! Every shape or argument check of a `Var` op panics at the caller's line (this file), and the
//! graph node an op records carries that line too, so anomaly mode names it. One test per op
//! family, mirroring the tensor crate's `tests/caller_location.rs`.

use ferrograd_autograd::{detect_anomaly, grad, grad_with, BackwardOptions, CustomOp, Param, Var};
use ferrograd_tensor::testing::catch_panic;
use ferrograd_tensor::{assert_panics_here, Conv1dOptions, Conv2dOptions, PadMode, Pool2dOptions, Tensor};

fn v(shape: &[usize]) -> Var<f64> {
    Var::leaf(Tensor::zeros(shape))
}

fn idx(values: &[i64], shape: &[usize]) -> Tensor<i64> {
    Tensor::from_vec(values.to_vec(), shape)
}

#[test]
fn elementwise_binary_and_broadcast() {
    let (a, b) = (v(&[2, 3]), v(&[4]));
    assert_panics_here!(a.add(&b), "add", "[2, 3]", "[4]");
    assert_panics_here!(a.sub(&b), "sub", "[2, 3]", "[4]");
    assert_panics_here!(a.mul(&b), "mul", "[2, 3]", "[4]");
    assert_panics_here!(a.div(&b), "div", "[2, 3]", "[4]");
    assert_panics_here!(a.pow(&b), "pow", "[2, 3]", "[4]");
    assert_panics_here!(a.maximum(&b), "maximum", "[2, 3]", "[4]");
    assert_panics_here!(a.minimum(&b), "minimum", "[2, 3]", "[4]");
    // Operator syntax, every ownership combination.
    assert_panics_here!(&a + &b, "add", "[2, 3]", "[4]");
    assert_panics_here!(&a - &b, "sub", "[2, 3]", "[4]");
    assert_panics_here!(&a * &b, "mul", "[2, 3]", "[4]");
    assert_panics_here!(&a / &b, "div", "[2, 3]", "[4]");
    assert_panics_here!(a.clone() + &b, "add", "[2, 3]", "[4]");
    assert_panics_here!(&a + b.clone(), "add", "[2, 3]", "[4]");
    assert_panics_here!(a.clone() * b.clone(), "mul", "[2, 3]", "[4]");
}

#[test]
fn where_and_masked_fill() {
    let (a, b) = (v(&[2, 3]), v(&[4]));
    let (ma, mb) = (a.data().gt_scalar(0.0), b.data().gt_scalar(0.0));
    assert_panics_here!(Var::where_(&ma, &a, &b), "where_", "[2, 3]", "[4]");
    assert_panics_here!(Var::where_(&mb, &a, &a), "where_", "[2, 3]", "[4]");
    assert_panics_here!(a.masked_fill(&mb, 1.0), "masked_fill", "[4]", "[2, 3]");
}

#[test]
fn reductions() {
    let a = v(&[2, 3]);
    assert_panics_here!(a.sum_dims(&[2], false), "sum_dims", "dim 2", "rank 2");
    assert_panics_here!(a.sum_dims(&[1, -1], false), "sum_dims", "repeated", "[2, 3]");
    assert_panics_here!(a.mean_dims(&[-3], true), "mean_dims", "dim -3");
    assert_panics_here!(a.prod_dims(&[2], false), "prod_dims", "dim 2");
    assert_panics_here!(a.var_dims(&[2], 1, false), "var_dims", "dim 2");
    assert_panics_here!(a.std_dims(&[2], 1, false), "std_dims", "dim 2");
    assert_panics_here!(a.logsumexp_dims(&[2], false), "logsumexp_dims", "dim 2");
    assert_panics_here!(a.max_dims(&[2], false), "max_dims", "dim 2");
    assert_panics_here!(a.min_dims(&[2], false), "min_dims", "dim 2");
    assert_panics_here!(a.max_dim(2, false), "max_dim", "dim 2");
    assert_panics_here!(a.min_dim(2, false), "min_dim", "dim 2");
    assert_panics_here!(v(&[0, 3]).max(), "max", "zero elements", "[0, 3]");
    assert_panics_here!(v(&[0, 3]).min(), "min", "zero elements", "[0, 3]");
    assert_panics_here!(a.sum_to(&[4]), "sum_to", "[2, 3]", "[4]");
}

#[test]
fn softmax() {
    let a = v(&[2, 3]);
    assert_panics_here!(a.softmax(2), "softmax", "dim 2", "rank 2");
    assert_panics_here!(a.log_softmax(-3), "log_softmax", "dim -3", "rank 2");
}

#[test]
fn matmul() {
    let (a, b) = (v(&[2, 3]), v(&[4, 5]));
    assert_panics_here!(a.matmul(&b), "matmul", "[2, 3]", "[4, 5]");
    assert_panics_here!(a.matmul(&v(&[4])), "matmul", "[2, 3]", "[4]");
    assert_panics_here!(v(&[4]).matmul(&a), "matmul", "[4]", "[2, 3]");
    assert_panics_here!(a.matmul(&v(&[])), "matmul", "[2, 3]", "[]");
    assert_panics_here!(v(&[2, 2, 3]).matmul(&v(&[3, 3, 4])), "matmul", "[2, 2, 3]", "[3, 3, 4]");
}

#[test]
fn conv_and_pool() {
    let x = v(&[1, 2, 5, 5]);
    let o2 = Conv2dOptions::default();
    assert_panics_here!(x.conv2d(&v(&[3, 4, 3, 3]), None, &o2), "conv2d", "[1, 2, 5, 5]", "[3, 4, 3, 3]");
    assert_panics_here!(x.conv2d(&v(&[3, 2, 3, 3]), Some(&v(&[2])), &o2), "conv2d", "bias [2]");
    let (w, gy) = (v(&[3, 2, 3, 3]), v(&[1, 3, 2, 2]));
    assert_panics_here!(Var::conv2d_input_grad(&gy, &w, &[1, 2, 5, 5], &o2), "conv2d_input_grad", "[1, 3, 2, 2]");
    assert_panics_here!(Var::conv2d_weight_grad(&x, &gy, &[3, 2, 3, 3], &o2), "conv2d_weight_grad", "[1, 3, 2, 2]");
    let (x1, w1, gy1) = (v(&[1, 2, 5]), v(&[3, 2, 3]), v(&[1, 3, 2]));
    let o1 = Conv1dOptions::default();
    assert_panics_here!(x1.conv1d(&v(&[3, 4, 3]), None, &o1), "conv1d", "[1, 2, 5]", "[3, 4, 3]");
    assert_panics_here!(Var::conv1d_input_grad(&gy1, &w1, &[1, 2, 5], &o1), "conv1d_input_grad", "[1, 3, 2]");
    assert_panics_here!(Var::conv1d_weight_grad(&x1, &gy1, &[3, 2, 3], &o1), "conv1d_weight_grad", "[1, 3, 2]");
    let p = Pool2dOptions::new([2, 2]);
    assert_panics_here!(v(&[5, 5]).max_pool2d(&p), "max_pool2d", "[5, 5]");
    assert_panics_here!(v(&[1, 1, 1, 5]).avg_pool2d(&p), "avg_pool2d", "larger than the padded input");
}

#[test]
fn index_gather_scatter() {
    let a = v(&[2, 3]);
    let (good, bad) = (idx(&[0, 1], &[2]), idx(&[0, 3], &[2]));
    assert_panics_here!(a.index_select(1, &bad), "index_select", "index 3", "size 3");
    assert_panics_here!(a.index_select(2, &good), "index_select", "dim 2");
    assert_panics_here!(a.index_add(1, &bad, &a), "index_add", "index 3");
    assert_panics_here!(a.index_add(1, &good, &a), "index_add", "[2, 3]");
    let bad2 = idx(&[0, 5, 1, 2], &[2, 2]);
    assert_panics_here!(a.gather(1, &bad2), "gather", "index 5", "size 3");
    assert_panics_here!(a.scatter_add(1, &bad2, &a), "scatter_add", "index 5", "size 3");
    assert_panics_here!(a.scatter_add(1, &idx(&[0; 3], &[3, 1]), &a), "scatter_add", "[3, 1]", "[2, 3]");
}

#[test]
fn concat_stack_split_chunk() {
    let (a, b) = (v(&[2, 3]), v(&[3, 3]));
    assert_panics_here!(Var::cat(&[&a, &b], 1), "cat", "[2, 3]", "[3, 3]");
    assert_panics_here!(Var::<f64>::cat(&[], 0), "cat", "at least one");
    assert_panics_here!(Var::cat(&[&a, &a], 2), "cat", "dim 2");
    assert_panics_here!(Var::stack(&[&a, &b], 0), "stack", "[2, 3]", "[3, 3]");
    assert_panics_here!(Var::<f64>::stack(&[], 0), "stack", "at least one");
    assert_panics_here!(a.split(0, 1), "split", "[2, 3]");
    assert_panics_here!(a.split(1, 2), "split", "dim 2");
    assert_panics_here!(a.split_sizes(&[1, 1], 1), "split_sizes", "[1, 1]", "[2, 3]");
    assert_panics_here!(a.split_sizes(&[2], 2), "split_sizes", "dim 2");
    assert_panics_here!(a.chunk(0, 1), "chunk", "[2, 3]");
    assert_panics_here!(a.unbind(2), "unbind", "dim 2");
}

#[test]
fn pad() {
    let a = v(&[2, 3]);
    assert_panics_here!(a.pad(&[(1, 1), (1, 1), (1, 1)], 0.0), "pad", "[2, 3]");
    assert_panics_here!(a.pad_mode(&[(3, 0)], PadMode::Reflect, 0.0), "pad_mode", "reflect", "[2, 3]");
}

#[test]
fn views_and_reshape() {
    let a = v(&[2, 3]);
    assert_panics_here!(a.reshape(&[4]), "reshape", "[2, 3]", "[4]");
    assert_panics_here!(a.view(&[4]), "view", "[2, 3]", "[4]");
    assert_panics_here!(a.t().view(&[6]), "view", "[3, 2]", "[6]", "use reshape");
    assert_panics_here!(a.flatten(1, 0), "flatten", "[2, 3]");
    assert_panics_here!(a.narrow(1, 2, 2), "narrow", "[2, 3]");
    assert_panics_here!(a.narrow(2, 0, 1), "narrow", "dim 2");
    assert_panics_here!(a.slice(1, 0, 3, 0), "slice", "step");
    assert_panics_here!(a.slice(2, 0, 3, 1), "slice", "dim 2");
    assert_panics_here!(a.select(1, 3), "select", "[2, 3]");
    assert_panics_here!(a.select(2, 0), "select", "dim 2");
    assert_panics_here!(a.permute(&[0, 0]), "permute", "[2, 3]");
    assert_panics_here!(a.expand(&[4, 3]), "broadcast_to", "[2, 3]", "[4, 3]");
    assert_panics_here!(a.broadcast_to(&[3]), "broadcast_to", "[2, 3]", "[3]");
    assert_panics_here!(a.transpose(0, 2), "transpose", "dim 2");
    assert_panics_here!(v(&[2, 3, 4]).t(), "t", "[2, 3, 4]");
    assert_panics_here!(a.flip(&[2]), "flip", "dim 2");
    assert_panics_here!(a.unsqueeze(3), "unsqueeze", "dim 3");
    assert_panics_here!(a.squeeze_dim(2), "squeeze_dim", "dim 2");
}

#[test]
fn backward_grad_and_params() {
    let a = v(&[2, 3]);
    let y = a.mul_scalar(2.0);
    assert_panics_here!(y.backward(), "backward", "[2, 3]");
    assert_panics_here!(y.backward_with(BackwardOptions::default()), "backward", "[2, 3]");
    assert_panics_here!(y.item(), "item", "[2, 3]");
    assert_panics_here!(Var::constant(Tensor::<f64>::zeros(&[])).backward(), "backward", "no output requires grad");
    let (ys, xs, wrong) = ([y.clone()], [a.clone()], [v(&[3])]);
    assert_panics_here!(grad(&ys, &xs, None, false), "grad", "[2, 3]");
    assert_panics_here!(grad(&ys, &xs, Some(&wrong), false), "grad", "[3]", "[2, 3]");
    let opts = BackwardOptions::default();
    assert_panics_here!(grad_with(&ys, &xs, Some(&wrong), opts), "grad", "[3]", "[2, 3]");
    assert_panics_here!(Var::<f64>::constant(Tensor::zeros(&[1])).register_hook(|_| None), "register_hook");
    let p = Param::new(Tensor::<f64>::zeros(&[2, 3]));
    assert_panics_here!(p.set(Tensor::zeros(&[3])), "Param::set", "[3]", "[2, 3]");
    assert_eq!(p.shape(), [2, 3], "a refused set leaves the parameter usable");
    assert_panics_here!(p.update(|t| *t = t.reshape(&[6])), "Param::update", "[2, 3]", "[6]");
}

/// A custom op whose backward returns `count` gradients of `shape`.
struct Broken {
    count: usize,
    shape: Vec<usize>,
}

impl CustomOp<f64> for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
        inputs[0].clone()
    }

    fn backward(&self, _: &[Var<f64>], _: &Var<f64>, _: &Var<f64>) -> Vec<Option<Var<f64>>> {
        vec![Some(Var::constant(Tensor::zeros(&self.shape))); self.count]
    }
}

#[test]
fn a_broken_backward_names_the_line_that_applied_the_op() {
    let a = v(&[2, 3]);
    let (line, y) = (line!(), Var::apply_op(Broken { count: 1, shape: vec![3] }, &[&a]).sum());
    let at = format!("{}:{line}:", file!());
    let p = catch_panic(|| y.backward()).expect("the gradient has the wrong shape");
    assert!(p.message.contains(&at) && p.message.contains("shape [3], expected [2, 3]"), "{}", p.message);
    let (line, y) = (line!(), Var::apply_op(Broken { count: 2, shape: vec![2, 3] }, &[&a]).sum());
    let at = format!("{}:{line}:", file!());
    let p = catch_panic(|| y.backward()).expect("backward returns two gradients for one input");
    assert!(p.message.contains(&at) && p.message.contains("2 gradients for 1 inputs"), "{}", p.message);
}

/// Checks that anomaly mode names `line` of this file for the NaN `f` produces.
fn assert_anomaly_names(line: u32, f: impl FnOnce()) {
    let p = catch_panic(|| detect_anomaly(f)).expect("anomaly mode should have panicked");
    let at = format!("{}:{line}:", file!());
    assert!(p.message.contains("anomaly") && p.message.contains(&at), "message {:?} does not name {at}", p.message);
}

#[test]
fn anomaly_mode_names_the_callers_line() {
    let x = Var::leaf(Tensor::from_vec(vec![-1.0f64, 4.0], &[2]));
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(x.sqrt()));
    // A composite op (rdiv is recip then mul) and one of the split family (built from narrow).
    let zero = Var::leaf(Tensor::from_vec(vec![0.0f64, 1.0], &[2]));
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(1.0 / &zero));
    let y = Var::leaf(Tensor::from_vec(vec![1.0f64, f64::NAN, 2.0], &[3]));
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(y.split(1, 0)));
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(y.unbind(0)));
    let line = line!() + 1;
    assert_anomaly_names(line, || drop(y.chunk(3, 0)));
}

/// Asserts that anomaly mode, run on `$e` (which must produce a NaN), names the line of this
/// macro call: the op recorded its caller's line, also when built from other ops.
macro_rules! assert_anomaly_here {
    ($e:expr) => {{
        let line = line!();
        assert_anomaly_names(line, || drop($e));
    }};
}

#[test]
fn anomaly_mode_names_the_callers_line_for_every_family() {
    let nan = |shape: &[usize]| Var::leaf(Tensor::full(shape, f64::NAN));
    let (a, b) = (nan(&[2, 3]), v(&[3]));
    // Elementwise, broadcast and operators.
    assert_anomaly_here!(a.add(&b));
    assert_anomaly_here!(&b * &a);
    assert_anomaly_here!(a.maximum(&b));
    assert_anomaly_here!(a.exp());
    assert_anomaly_here!(a.clamp(0.0, 1.0));
    assert_anomaly_here!(a.gelu());
    // Matmul, reductions and softmax.
    assert_anomaly_here!(a.matmul(&v(&[3, 2])));
    assert_anomaly_here!(a.sum());
    assert_anomaly_here!(a.mean_dims(&[1], true));
    assert_anomaly_here!(a.var_dims(&[1], 1, false));
    assert_anomaly_here!(a.std(1));
    assert_anomaly_here!(a.logsumexp_dims(&[0], false));
    assert_anomaly_here!(a.max_dim(1, false));
    assert_anomaly_here!(a.prod_dims(&[1], false));
    assert_anomaly_here!(a.softmax(1));
    assert_anomaly_here!(a.log_softmax(0));
    // Views and shapes.
    assert_anomaly_here!(a.reshape(&[6]));
    assert_anomaly_here!(a.t());
    assert_anomaly_here!(a.permute(&[1, 0]));
    assert_anomaly_here!(a.expand(&[4, 2, 3]));
    assert_anomaly_here!(a.narrow(1, 1, 2));
    assert_anomaly_here!(a.select(0, 1));
    assert_anomaly_here!(a.flip(&[1]));
    assert_anomaly_here!(a.pad(&[(1, 1)], 0.0));
    assert_anomaly_here!(a.pad_mode(&[(1, 1)], PadMode::Reflect, 0.0));
    // Concatenation.
    assert_anomaly_here!(Var::cat(&[&a, &a], 0));
    assert_anomaly_here!(Var::stack(&[&a, &a], 1));
    // Indexing, where_ and masked_fill.
    let i = idx(&[1, 0], &[2]);
    assert_anomaly_here!(a.index_select(1, &i));
    assert_anomaly_here!(a.gather(1, &idx(&[0, 2], &[2, 1])));
    assert_anomaly_here!(v(&[2, 3]).index_add(1, &i, &nan(&[2, 2])));
    let mask = Tensor::from_vec(vec![true, false, true], &[3]);
    assert_anomaly_here!(Var::where_(&mask, &a, &b));
    assert_anomaly_here!(a.masked_fill(&mask, 0.0));
    // Convolution and pooling.
    let x = nan(&[1, 1, 4, 4]);
    assert_anomaly_here!(x.conv2d(&v(&[1, 1, 3, 3]), None, &Conv2dOptions::default()));
    assert_anomaly_here!(x.max_pool2d(&Pool2dOptions::new([2, 2])));
    assert_anomaly_here!(x.avg_pool2d(&Pool2dOptions::new([2, 2])));
    // A user's own op, built with from_op or a CustomOp.
    assert_anomaly_here!(Var::from_op("my_op", a.data().sqrt(), [&a], |_, g| vec![Some(g.clone())].into()));
    assert_anomaly_here!(Var::apply_op(Broken { count: 1, shape: vec![2, 3] }, &[&a]));
}
