//! gradcheck and gradgradcheck of every elementwise op over random shapes, non-contiguous
//! layouts and broadcast pairs.

use crate::common;

use common::check;
use ferrograd_autograd::Var;
use ferrograd_tensor::testing::{any_layout, broadcastable_pair, shape};
use ferrograd_tensor::Tensor;
use proptest::prelude::*;

type Op = fn(&Var<f64>) -> Var<f64>;

/// Unary ops, each composed with a smooth map into its domain where it has one.
fn unary_ops() -> Vec<(&'static str, Op, bool)> {
    vec![
        ("neg", |x| x.neg(), true),
        ("exp", |x| x.exp(), true),
        ("log", |x| x.square().add_scalar(0.5).log(), true),
        ("log1p", |x| x.square().log1p(), true),
        ("expm1", |x| x.expm1(), true),
        ("sqrt", |x| x.square().add_scalar(0.5).sqrt(), true),
        ("rsqrt", |x| x.square().add_scalar(0.5).rsqrt(), true),
        ("sin", |x| x.sin(), true),
        ("cos", |x| x.cos(), true),
        ("tan", |x| x.mul_scalar(0.3).tan(), true),
        ("tanh", |x| x.tanh(), true),
        ("sigmoid", |x| x.sigmoid(), true),
        ("relu", |x| x.relu(), true),
        ("leaky_relu", |x| x.leaky_relu(0.1), true),
        ("elu", |x| x.elu(0.7), true),
        ("erf", |x| x.erf(), true),
        ("gelu", |x| x.gelu(), true),
        ("gelu_tanh", |x| x.gelu_tanh(), true),
        ("silu", |x| x.silu(), true),
        ("softplus", |x| x.softplus(), true),
        ("square", |x| x.square(), true),
        ("recip", |x| x.square().add_scalar(0.5).recip(), true),
        ("abs", |x| x.abs(), true),
        ("powf", |x| x.square().add_scalar(0.5).powf(1.7), true),
        ("powi", |x| x.powi(3), true),
        ("powi0", |x| x.powi(0), true),
        ("clamp", |x| x.clamp(-1.0, 1.5), true),
        ("floor", |x| x.floor(), false),
        ("ceil", |x| x.ceil(), false),
        ("round", |x| x.round(), false),
        ("sign", |x| x.sign(), false),
        ("add_scalar", |x| x.add_scalar(1.5), true),
        ("sub_scalar", |x| x.sub_scalar(1.5), true),
        ("rsub_scalar", |x| x.rsub_scalar(1.5), true),
        ("mul_scalar", |x| x.mul_scalar(-2.5), true),
        ("div_scalar", |x| x.div_scalar(4.0), true),
        ("rdiv_scalar", |x| x.square().add_scalar(1.0).rdiv_scalar(2.0), true),
    ]
}

type BinOp = fn(&Var<f64>, &Var<f64>) -> Var<f64>;

fn binary_ops() -> Vec<(&'static str, BinOp)> {
    vec![
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("div", |a, b| a / &b.square().add_scalar(0.5)),
        ("pow", |a, b| a.square().add_scalar(0.5).pow(&b.mul_scalar(0.5))),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn unary_gradients(x in shape(3, 3).prop_flat_map(any_layout::<f64>)) {
        for (name, op, second) in unary_ops() {
            check(|v| op(&v[0]), std::slice::from_ref(&x), second)
                .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
    }

    #[test]
    fn binary_gradients_broadcast((a, b) in broadcastable_pair::<f64>(3, 3)) {
        for (name, op) in binary_ops() {
            // Ties of maximum/minimum are kinks: finite differences cannot judge them.
            if matches!(name, "maximum" | "minimum") && a.to_vec().iter().any(|x| b.to_vec().contains(x)) {
                continue;
            }
            check(|v| op(&v[0], &v[1]), &[a.clone(), b.clone()], true)
                .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
    }
}

#[test]
fn operators_match_methods() {
    let a = Var::leaf(Tensor::from_vec(vec![1.0f32, 2.0], &[2]));
    let b = Var::leaf(Tensor::from_vec(vec![3.0f32, 5.0], &[2]));
    let y = (&(&a * &b) - &(&a / 2.0)) + (-(&b)) + (2.0f32 * &a) + (1.0f32 - &b) + (4.0f32 / &b);
    let expected: Vec<f32> = [1.0f32, 2.0]
        .iter()
        .zip([3.0f32, 5.0])
        .map(|(&x, z)| x * z - x / 2.0 - z + 2.0 * x + 1.0 - z + 4.0 / z)
        .collect();
    assert_eq!(y.to_vec(), expected);
    let g = y.sum().backward();
    // d/da = b - 1/2 + 2; d/db = a - 1 - 1 - 4/b²
    assert_eq!(g.get(&a).unwrap().to_vec(), vec![4.5, 6.5]);
    let gb = g.get(&b).unwrap().to_vec();
    assert!((gb[0] - (1.0 - 2.0 - 4.0 / 9.0)).abs() < 1e-6);
    assert!((gb[1] - (2.0 - 2.0 - 4.0 / 25.0)).abs() < 1e-6);
}

#[test]
fn maximum_splits_ties_evenly() {
    let a = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]));
    let b = Var::leaf(Tensor::from_vec(vec![1.0f64, 5.0, 0.0], &[3]));
    let g = a.maximum(&b).sum().backward();
    assert_eq!(g.get(&a).unwrap().to_vec(), vec![0.5, 0.0, 1.0]);
    assert_eq!(g.get(&b).unwrap().to_vec(), vec![0.5, 1.0, 0.0]);
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn shape_errors_name_the_op_and_both_shapes() {
    let a = Var::leaf(Tensor::<f32>::zeros(&[2, 3]));
    let b = Var::leaf(Tensor::<f32>::zeros(&[4]));
    let _ = &a + &b;
}
