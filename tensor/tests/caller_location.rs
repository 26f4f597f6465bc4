//! Every shape or argument check of a tensor op panics at the caller's line (this file), not at
//! a line inside ferrograd, and names the op and the shapes. One test per op family.
//!
//! `assert_panics_here!` compares the panic's reported file and line with its own.

use ferrograd_tensor::{assert_panics_here, Conv1dOptions, Conv2dOptions, PadMode, Pool2dOptions, Tensor};

fn t(shape: &[usize]) -> Tensor<f32> {
    Tensor::zeros(shape)
}

fn idx(v: &[i64], shape: &[usize]) -> Tensor<i64> {
    Tensor::from_vec(v.to_vec(), shape)
}

#[test]
fn construction_and_access() {
    let a = t(&[2, 3]);
    assert_panics_here!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]), "from_vec", "[2, 3]");
    assert_panics_here!(Tensor::from_slice(&[1.0f32; 5], &[2, 3]), "from_vec", "[2, 3]");
    assert_panics_here!(a.item(), "item", "[2, 3]");
    assert_panics_here!(a.at(&[2, 0]), "at", "[2, 3]");
    assert_panics_here!(a.size(2), "size", "rank 2");
    assert_panics_here!(Tensor::<f32>::arange(0.0, 1.0, 0.0), "arange");
    let mut rng = ferrograd_tensor::rand::rng();
    assert_panics_here!(Tensor::<f32>::rand_uniform(&[2], 1.0, 0.0, &mut rng), "rand_uniform");
    assert_panics_here!(Tensor::<f64>::rand_uniform(&[2], -1e308, 1e308, &mut rng), "rand_uniform", "finite");
    assert_panics_here!(Tensor::<f32>::rand_normal(&[2], 0.0, -1.0, &mut rng), "rand_normal");
}

#[test]
fn elementwise_binary_and_broadcast() {
    let (a, b) = (t(&[2, 3]), t(&[4]));
    assert_panics_here!(a.add(&b), "add", "[2, 3]", "[4]");
    assert_panics_here!(a.sub(&b), "sub", "[2, 3]", "[4]");
    assert_panics_here!(a.mul(&b), "mul", "[2, 3]", "[4]");
    assert_panics_here!(a.div(&b), "div", "[2, 3]", "[4]");
    assert_panics_here!(a.maximum(&b), "maximum", "[2, 3]", "[4]");
    assert_panics_here!(a.minimum(&b), "minimum", "[2, 3]", "[4]");
    assert_panics_here!(a.pow(&b), "pow", "[2, 3]", "[4]");
    assert_panics_here!(a.zip_map(&b, "my_op", |x, y| x + y), "my_op", "[2, 3]", "[4]");
    // Operator syntax, every ownership combination.
    assert_panics_here!(&a + &b, "add", "[2, 3]", "[4]");
    assert_panics_here!(&a - &b, "sub", "[2, 3]", "[4]");
    assert_panics_here!(&a * &b, "mul", "[2, 3]", "[4]");
    assert_panics_here!(&a / &b, "div", "[2, 3]", "[4]");
    assert_panics_here!(a.clone() + &b, "add", "[2, 3]", "[4]");
    assert_panics_here!(&a + b.clone(), "add", "[2, 3]", "[4]");
    assert_panics_here!(a.clone() + b.clone(), "add", "[2, 3]", "[4]");
    assert_panics_here!(t(&[2, 3]) * t(&[4]), "mul", "[2, 3]", "[4]");
    // In place: the operand must broadcast to the target, and the target must not be a broadcast view.
    let mut c = a.clone();
    assert_panics_here!(c += &b, "add_assign", "[4]", "[2, 3]");
    assert_panics_here!(c -= &b, "sub_assign", "[4]", "[2, 3]");
    assert_panics_here!(t(&[3]).add_(&a), "add_", "[2, 3]", "[3]");
    assert_panics_here!(t(&[3]).mul_(&a), "mul_", "[2, 3]", "[3]");
    assert_panics_here!(t(&[3]).sub_(&a), "sub_", "[2, 3]", "[3]");
    assert_panics_here!(t(&[3]).div_(&a), "div_", "[2, 3]", "[3]");
    assert_panics_here!(t(&[3]).zip_inplace(&a, "my_op_", |x, y| x * y), "my_op_", "[2, 3]", "[3]");
    assert_panics_here!(t(&[3]).add_scaled_(&a, 2.0), "add_scaled_", "[2, 3]", "[3]");
    assert_panics_here!(t(&[3]).copy_(&a), "copy_", "[2, 3]", "[3]");
    let wide = t(&[3]).expand(&[2, 3]);
    assert_panics_here!(wide.clone().add_(&a), "add_", "broadcast view", "[2, 3]");
    assert_panics_here!(wide.clone().fill_(1.0), "fill_", "broadcast view");
    assert_panics_here!(wide.clone().add_scalar_(1.0), "add_scalar_", "broadcast view");
    assert_panics_here!(wide.clone().mul_scalar_(2.0), "mul_scalar_", "broadcast view");
    assert_panics_here!(wide.clone().clamp_(0.0, 1.0), "clamp_", "broadcast view");
    let mut w = wide.clone();
    assert_panics_here!(w *= 2.0, "mul_assign", "broadcast view");
    assert_panics_here!(wide.clone().as_mut_slice().len(), "as_mut_slice", "broadcast view");
    assert_panics_here!(wide.clone().map_inplace("my_op_", |x| x), "my_op_", "broadcast view");
}

#[test]
fn compare_and_where() {
    let (a, b) = (t(&[2, 3]), t(&[4]));
    assert_panics_here!(a.eq(&b), "eq", "[2, 3]", "[4]");
    assert_panics_here!(a.ne(&b), "ne", "[2, 3]", "[4]");
    assert_panics_here!(a.lt(&b), "lt", "[2, 3]", "[4]");
    assert_panics_here!(a.le(&b), "le", "[2, 3]", "[4]");
    assert_panics_here!(a.gt(&b), "gt", "[2, 3]", "[4]");
    assert_panics_here!(a.ge(&b), "ge", "[2, 3]", "[4]");
    let (ma, mb) = (a.gt_scalar(0.0), b.gt_scalar(0.0));
    assert_panics_here!(ma.logical_and(&mb), "logical_and", "[2, 3]", "[4]");
    assert_panics_here!(ma.logical_or(&mb), "logical_or", "[2, 3]", "[4]");
    assert_panics_here!(ma.logical_xor(&mb), "logical_xor", "[2, 3]", "[4]");
    assert_panics_here!(Tensor::where_(&ma, &a, &b), "where_", "[2, 3]", "[4]");
    assert_panics_here!(Tensor::where_(&mb, &a, &a), "where_", "[2, 3]", "[4]");
    assert_panics_here!(a.allclose(&b, 1e-5, 1e-8), "allclose", "[2, 3]", "[4]");
    assert_panics_here!(a.max_abs_diff(&b), "max_abs_diff", "[2, 3]", "[4]");
}

#[test]
fn reductions() {
    let a = t(&[2, 3]);
    let empty = t(&[0, 3]);
    assert_panics_here!(a.sum_dims(&[2], false), "sum_dims", "dim 2", "rank 2");
    assert_panics_here!(a.sum_dims(&[1, -1], false), "sum_dims", "repeated", "[2, 3]");
    assert_panics_here!(a.prod_dims(&[5], false), "prod_dims", "dim 5");
    assert_panics_here!(a.mean_dims(&[-3], true), "mean_dims", "dim -3");
    assert_panics_here!(a.var_dims(&[2], 1, false), "var_dims", "dim 2");
    assert_panics_here!(a.std_dims(&[2], 1, false), "std_dims", "dim 2");
    assert_panics_here!(a.logsumexp_dims(&[2], false), "logsumexp_dims", "dim 2");
    assert_panics_here!(a.max_dims(&[2], false), "max_dims", "dim 2");
    assert_panics_here!(a.min_dims(&[2], false), "min_dims", "dim 2");
    assert_panics_here!(empty.max(), "max", "zero elements", "[0, 3]");
    assert_panics_here!(empty.min(), "min", "zero elements", "[0, 3]");
    assert_panics_here!(empty.max_dims(&[0], false), "max_dims", "zero elements", "[0, 3]");
    assert_panics_here!(empty.min_dims(&[0], true), "min_dims", "zero elements", "[0, 3]");
    assert_panics_here!(a.max_dim(2, false), "max_dim", "dim 2");
    assert_panics_here!(a.min_dim(-3, false), "min_dim", "dim -3");
    assert_panics_here!(a.argmax(2, false), "argmax", "dim 2");
    assert_panics_here!(a.argmin(2, false), "argmin", "dim 2");
    assert_panics_here!(empty.argmax(0, false), "argmax", "zero elements", "[0, 3]");
    assert_panics_here!(a.sum_to(&[4]), "sum_to", "[2, 3]", "[4]");
}

#[test]
fn softmax() {
    let a = t(&[2, 3]);
    assert_panics_here!(a.softmax(2), "softmax", "dim 2", "rank 2");
    assert_panics_here!(a.log_softmax(-3), "log_softmax", "dim -3", "rank 2");
}

#[test]
fn matmul() {
    let (a, b) = (t(&[2, 3]), t(&[4, 5]));
    assert_panics_here!(a.matmul(&b), "matmul", "[2, 3]", "[4, 5]");
    assert_panics_here!(a.matmul(&t(&[])), "matmul", "[2, 3]", "[]");
    assert_panics_here!(t(&[2, 2, 3]).matmul(&t(&[3, 3, 4])), "matmul", "[2, 2, 3]", "[3, 3, 4]", "batch");
    assert_panics_here!(a.mm(&t(&[3])), "mm", "[2, 3]", "[3]");
    assert_panics_here!(a.mm(&b), "mm", "[2, 3]", "[4, 5]");
    assert_panics_here!(t(&[3]).dot(&t(&[4])), "dot", "[3]", "[4]");
    assert_panics_here!(t(&[3]).dot(&a), "dot", "[3]", "[2, 3]");
}

#[test]
fn conv_and_pool() {
    let x = t(&[1, 2, 5, 5]);
    let o2 = Conv2dOptions::default();
    assert_panics_here!(x.conv2d(&t(&[3, 4, 3, 3]), None, &o2), "conv2d", "[1, 2, 5, 5]", "[3, 4, 3, 3]");
    assert_panics_here!(x.conv2d(&t(&[3, 2, 3]), None, &o2), "conv2d", "[1, 2, 5, 5]", "[3, 2, 3]");
    assert_panics_here!(x.conv2d(&t(&[3, 2, 7, 7]), None, &o2), "conv2d", "larger than the padded input");
    let grouped = Conv2dOptions { groups: 3, ..o2 };
    assert_panics_here!(x.conv2d(&t(&[3, 2, 3, 3]), None, &grouped), "conv2d", "groups 3");
    let strided = Conv2dOptions { stride: [0, 1], ..o2 };
    assert_panics_here!(x.conv2d(&t(&[3, 2, 3, 3]), None, &strided), "conv2d", "must be positive");
    assert_panics_here!(x.conv2d(&t(&[3, 2, 3, 3]), Some(&t(&[2])), &o2), "conv2d", "bias [2]", "[3, 2, 3, 3]");
    let (w, gy) = (t(&[3, 2, 3, 3]), t(&[1, 3, 2, 2]));
    assert_panics_here!(Tensor::conv2d_input_grad(&gy, &w, &[1, 2, 5, 5], &o2), "conv2d_input_grad", "[1, 3, 2, 2]");
    assert_panics_here!(Tensor::conv2d_weight_grad(&x, &gy, &[3, 2, 3, 3], &o2), "conv2d_weight_grad", "[1, 3, 2, 2]");
    let x1 = t(&[1, 2, 5]);
    let o1 = Conv1dOptions::default();
    assert_panics_here!(x1.conv1d(&t(&[3, 4, 3]), None, &o1), "conv1d", "[1, 2, 5]", "[3, 4, 3]");
    let (w1, gy1) = (t(&[3, 2, 3]), t(&[1, 3, 2]));
    assert_panics_here!(Tensor::conv1d_input_grad(&gy1, &w1, &[1, 2, 5], &o1), "conv1d_input_grad", "[1, 3, 2]");
    assert_panics_here!(Tensor::conv1d_weight_grad(&x1, &gy1, &[3, 2, 3], &o1), "conv1d_weight_grad", "[1, 3, 2]");
    let p = Pool2dOptions::new([2, 2]);
    assert_panics_here!(t(&[5, 5]).max_pool2d(&p), "max_pool2d", "[5, 5]");
    assert_panics_here!(t(&[1, 1, 1, 5]).max_pool2d(&p), "max_pool2d", "larger than the padded input");
    assert_panics_here!(t(&[5, 5]).max_pool2d_with_indices(&p), "max_pool2d_with_indices", "[5, 5]");
    assert_panics_here!(t(&[1, 5, 5]).avg_pool2d(&Pool2dOptions::new([0, 2])), "avg_pool2d", "must be positive");
    let (gy, bad) = (t(&[1, 1, 2, 2]), idx(&[0, 1, 2, 99], &[1, 1, 2, 2]));
    assert_panics_here!(Tensor::max_pool2d_backward(&gy, &bad, &[1, 1, 4, 4]), "max_pool2d_backward", "index 99");
    assert_panics_here!(Tensor::max_pool2d_backward(&gy, &bad, &[1, 4, 4]), "max_pool2d_backward", "[1, 4, 4]");
    assert_panics_here!(Tensor::avg_pool2d_backward(&gy, &[1, 1, 6, 6], &p), "avg_pool2d_backward", "[1, 1, 3, 3]");
}

#[test]
fn index_gather_scatter() {
    let a = t(&[2, 3]);
    let (good, bad) = (idx(&[0, 1], &[2]), idx(&[0, 3], &[2]));
    assert_panics_here!(a.index_select(1, &bad), "index_select", "index 3", "size 3");
    assert_panics_here!(a.index_select(1, &idx(&[-1], &[1])), "index_select", "index -1");
    assert_panics_here!(a.index_select(1, &idx(&[0, 1], &[1, 2])), "index_select", "1-D", "[1, 2]");
    assert_panics_here!(a.index_select(2, &good), "index_select", "dim 2");
    assert_panics_here!(a.index_add(1, &bad, &a), "index_add", "index 3");
    assert_panics_here!(a.index_add(1, &good, &a), "index_add", "[2, 3]");
    let bad2 = idx(&[0, 5, 1, 2], &[2, 2]);
    assert_panics_here!(a.gather(1, &bad2), "gather", "index 5", "size 3");
    assert_panics_here!(a.gather(1, &idx(&[0; 3], &[3, 1])), "gather", "[3, 1]", "[2, 3]");
    assert_panics_here!(a.scatter(1, &bad2, &a), "scatter", "index 5", "size 3");
    assert_panics_here!(a.scatter_add(1, &bad2, &a), "scatter_add", "index 5", "size 3");
    assert_panics_here!(a.scatter_add(1, &idx(&[0; 2], &[2]), &a), "scatter_add", "[2]", "[2, 3]");
    assert_panics_here!(a.masked_fill(&t(&[4]).gt_scalar(0.0), 1.0), "masked_fill", "[4]", "[2, 3]");
}

#[test]
fn concat_stack_split_chunk() {
    let (a, b) = (t(&[2, 3]), t(&[3, 3]));
    assert_panics_here!(Tensor::cat(&[&a, &b], 1), "cat", "[2, 3]", "[3, 3]");
    assert_panics_here!(Tensor::cat(&[&a, &t(&[2])], 0), "cat", "[2, 3]", "[2]");
    assert_panics_here!(Tensor::<f32>::cat(&[], 0), "cat", "at least one");
    assert_panics_here!(Tensor::cat(&[&t(&[])], 0), "cat", "0-dimensional");
    assert_panics_here!(Tensor::cat(&[&a, &a], 2), "cat", "dim 2");
    assert_panics_here!(Tensor::stack(&[&a, &b], 0), "stack", "[2, 3]", "[3, 3]");
    assert_panics_here!(Tensor::<f32>::stack(&[], 0), "stack", "at least one");
    assert_panics_here!(Tensor::stack(&[&a, &a], 3), "stack", "dim 3");
    assert_panics_here!(a.split(0, 1), "split", "[2, 3]");
    assert_panics_here!(a.split(1, 2), "split", "dim 2");
    assert_panics_here!(a.split_sizes(&[1, 1], 1), "split_sizes", "[1, 1]", "[2, 3]");
    assert_panics_here!(a.chunk(0, 1), "chunk", "[2, 3]");
    assert_panics_here!(t(&[]).chunk(2, 0), "chunk", "0-dimensional");
    assert_panics_here!(a.unbind(2), "unbind", "dim 2");
}

#[test]
fn pad() {
    let a = t(&[2, 3]);
    assert_panics_here!(a.pad(&[(1, 1), (1, 1), (1, 1)], 0.0), "pad", "[2, 3]");
    assert_panics_here!(a.pad_mode(&[(3, 0)], PadMode::Reflect, 0.0), "pad_mode", "reflect", "[2, 3]");
    assert_panics_here!(t(&[2, 0]).pad_mode(&[(1, 0)], PadMode::Replicate, 0.0), "pad_mode", "replicate", "[2, 0]");
    let g = t(&[2, 4]);
    let reflect = PadMode::Reflect;
    assert_panics_here!(Tensor::pad_mode_backward(&g, &[2, 3], &[(1, 1)], reflect), "pad_mode_backward", "[2, 4]");
}

#[test]
fn views_and_reshape() {
    let a = t(&[2, 3]);
    assert_panics_here!(a.reshape(&[4]), "reshape", "[2, 3]", "[4]");
    assert_panics_here!(a.view(&[4]), "view", "[2, 3]", "[4]");
    assert_panics_here!(a.t().view(&[6]), "view", "[3, 2]", "[6]", "use reshape");
    assert_panics_here!(a.flatten(1, 0), "flatten", "[2, 3]");
    assert_panics_here!(a.flatten(0, 2), "flatten", "dim 2");
    assert_panics_here!(a.narrow(1, 2, 2), "narrow", "[2, 3]");
    assert_panics_here!(a.narrow(2, 0, 1), "narrow", "dim 2");
    assert_panics_here!(a.slice(1, 0, 3, 0), "slice", "step");
    assert_panics_here!(a.slice(2, 0, 3, 1), "slice", "dim 2");
    assert_panics_here!(a.select(1, 3), "select", "[2, 3]");
    assert_panics_here!(a.select(-3, 0), "select", "dim -3");
    assert_panics_here!(a.permute(&[0, 0]), "permute", "[2, 3]");
    assert_panics_here!(a.permute(&[0]), "permute", "[2, 3]");
    assert_panics_here!(a.expand(&[4, 3]), "broadcast_to", "[2, 3]", "[4, 3]");
    assert_panics_here!(a.broadcast_to(&[3]), "broadcast_to", "[2, 3]", "[3]");
    assert_panics_here!(a.transpose(0, 2), "transpose", "dim 2");
    assert_panics_here!(t(&[2, 3, 4]).t(), "t", "[2, 3, 4]");
    assert_panics_here!(a.flip(&[0, 2]), "flip", "dim 2");
    assert_panics_here!(a.unsqueeze(3), "unsqueeze", "dim 3");
    assert_panics_here!(a.squeeze_dim(2), "squeeze_dim", "dim 2");
    // The dim check a user's own op calls.
    assert_panics_here!(ferrograd_tensor::normalize_dim("my_op", -3, 2), "my_op", "dim -3", "rank 2");
}
