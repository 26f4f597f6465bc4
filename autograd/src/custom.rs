//! User-defined differentiable ops: a forward on tensors and a backward on `Var`s.

use std::sync::Arc;

use ferrograd_tensor::{Float, Tensor};

use crate::var::InputGrads;
use crate::Var;

/// A differentiable op defined outside this crate.
///
/// `forward` computes the result on plain tensors; `backward` maps the output's gradient to one
/// gradient per input, written with `Var` ops so that higher-order gradients work too. Apply it
/// with [`Var::apply_op`]. `examples/custom_op.rs` defines one and checks it with `gradcheck`.
///
/// ```
/// use ferrograd_autograd::{CustomOp, Var};
/// use ferrograd_tensor::Tensor;
///
/// /// `x * sigmoid(x)` in one kernel.
/// struct Swish;
/// impl CustomOp<f64> for Swish {
///     fn name(&self) -> &'static str { "swish" }
///     fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
///         inputs[0].map(|x| x / (1.0 + (-x).exp()))
///     }
///     fn backward(&self, inputs: &[Var<f64>], _output: &Var<f64>, grad: &Var<f64>) -> Vec<Option<Var<f64>>> {
///         let s = inputs[0].sigmoid();
///         let d = &s * &(&inputs[0] * &(1.0 - &s)).add_scalar(1.0);
///         vec![Some(grad * &d)]
///     }
/// }
/// let x = Var::leaf(Tensor::from_vec(vec![0.0f64, 1.0], &[2]));
/// let y = Var::apply_op(Swish, &[&x]);
/// assert!((y.to_vec()[1] - 0.7310585786).abs() < 1e-9);
/// ```
pub trait CustomOp<F: Float>: Send + Sync + 'static {
    /// The op's name, used in error messages and anomaly reports.
    fn name(&self) -> &'static str;
    /// The result on the inputs' values.
    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F>;
    /// One gradient per input (`None` where none flows), given the inputs, the output (as a
    /// `Var` attached to the graph) and the gradient of the output.
    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, grad: &Var<F>) -> Vec<Option<Var<F>>>;
}

impl<F: Float> Var<F> {
    /// Applies a [`CustomOp`] to `inputs`, recording it on the graph.
    ///
    /// # Panics
    /// If the op's backward returns a number of gradients different from the number of inputs.
    #[track_caller]
    pub fn apply_op(op: impl CustomOp<F>, inputs: &[&Var<F>]) -> Var<F> {
        let tensors: Vec<&Tensor<F>> = inputs.iter().map(|v| &v.data).collect();
        let out = op.forward(&tensors);
        let saved = out.clone();
        let op = Arc::new(op);
        let name = op.name();
        let kept: Vec<Var<F>> = inputs.iter().map(|v| (*v).clone()).collect();
        Var::record(name, out, inputs, move |ctx, g| {
            let grads = op.backward(&kept, &ctx.output(&saved), g);
            assert_eq!(
                grads.len(),
                kept.len(),
                "custom op `{}` (applied at {}): backward returned {} gradients for {} inputs",
                op.name(),
                ctx.node.location,
                grads.len(),
                kept.len()
            );
            grads.into_iter().collect::<InputGrads<F>>()
        })
    }
}
