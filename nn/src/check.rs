//! Finite-difference checks of a [`Module`]'s gradients with respect to its inputs and every
//! parameter, with failures named by the parameter's dotted name and the element.
//!
//! [`ferrograd_autograd::check::gradcheck`] checks a function of its arguments; a module's
//! parameters are not arguments but [`Param`]s inside it, which autograd cannot see. These checks
//! walk the module's tree instead: a parameter is perturbed in place (and restored afterwards,
//! with every buffer), and its analytic gradient is read by its id, exactly as training reads it.
//!
//! The module's forward must be deterministic: put Dropout layers in eval mode (or use `p = 0`).
//! BatchNorm in training mode is fine: its output does not depend on the running statistics it
//! updates, and those are restored after the check.
//!
//! ```
//! use ferrograd_nn::check::{gradcheck_module, gradgradcheck_module};
//! use ferrograd_nn::layers::Linear;
//! use ferrograd_tensor::Tensor;
//! use rand::{rngs::StdRng, SeedableRng};
//! let fc = Linear::<f64>::new(3, 2, &mut StdRng::seed_from_u64(0));
//! let x = Tensor::from_fn(&[4, 3], |i| (i as f64 * 0.7).sin());
//! gradcheck_module(&fc, &x).unwrap();     // d y / d x, d y / d weight, d y / d bias
//! gradgradcheck_module(&fc, &x).unwrap(); // and the derivatives of those
//! ```

use std::fmt;

use ferrograd_autograd::check::{nudged, perturbable, unravel};
use ferrograd_autograd::{enable_grad, grad_with, no_grad, BackwardOptions, NodeId, Param, Var};
use ferrograd_tensor::Tensor;

pub use ferrograd_autograd::check::GradcheckOptions;

use crate::Module;

/// The first derivative where backward and central differences disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleGradcheckError {
    /// Whether the second-derivative check (`gradgradcheck_module`) failed.
    pub second_order: bool,
    /// What was differentiated: `"output"`, or for the second derivative the gradient it
    /// belongs to (`"d(u·output)/d fc.weight"`).
    pub of: String,
    /// The element of `of`.
    pub of_index: Vec<usize>,
    /// What it was differentiated with respect to: `"input 0"` or a parameter's dotted name.
    pub wrt: String,
    /// The element of `wrt`.
    pub wrt_index: Vec<usize>,
    /// The derivative backward reported.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
}

impl fmt::Display for ModuleGradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: d {}{:?} / d {}{:?}: analytic {} but numeric {}",
            if self.second_order { "gradgradcheck_module" } else { "gradcheck_module" },
            self.of,
            self.of_index,
            self.wrt,
            self.wrt_index,
            self.analytic,
            self.numeric
        )
    }
}

impl std::error::Error for ModuleGradcheckError {}

/// Checks the gradients of `module.forward(input)` with respect to the input and every
/// parameter, with default tolerances (see [`gradcheck_module_with`]).
pub fn gradcheck_module<M: Module<f64> + ?Sized>(module: &M, input: &Tensor<f64>) -> Result<(), ModuleGradcheckError> {
    gradcheck_module_with(module, std::slice::from_ref(input), |x| module.forward(&x[0]), &GradcheckOptions::default())
}

/// Checks the gradients of `forward(inputs)` with respect to each input and every parameter of
/// `module`, element by element, against central differences.
///
/// `forward` receives one leaf per input and may call anything: a module with several inputs
/// (`|x| decoder.forward(&x[0], &x[1])`), a loss on the output, or a forward that ignores its
/// leaves and reads index tensors it captured (pass no `inputs` then: only the parameters are
/// checked). Every element of its output is compared.
///
/// ```
/// use ferrograd_autograd::{Param, Var};
/// use ferrograd_nn::check::{gradcheck_module_with, GradcheckOptions};
/// use ferrograd_nn::Module;
/// use ferrograd_tensor::Tensor;
///
/// /// `a * x + y`, two inputs.
/// #[derive(Module)]
/// #[module(float = f64, forward = none)]
/// struct Affine { a: Param<f64> }
/// impl Affine {
///     fn forward(&self, x: &Var<f64>, y: &Var<f64>) -> Var<f64> { &(&self.a.var() * x) + y }
/// }
///
/// let m = Affine { a: Param::new(Tensor::from_vec(vec![0.5, -2.0], &[2])) };
/// let (x, y) = (Tensor::from_vec(vec![1.0, 3.0], &[2]), Tensor::zeros(&[3, 2]));
/// gradcheck_module_with(&m, &[x, y], |v| m.forward(&v[0], &v[1]), &GradcheckOptions::default()).unwrap();
/// ```
pub fn gradcheck_module_with<M: Module<f64> + ?Sized>(
    module: &M,
    inputs: &[Tensor<f64>],
    forward: impl Fn(&[Var<f64>]) -> Var<f64>,
    opts: &GradcheckOptions,
) -> Result<(), ModuleGradcheckError> {
    let vars = Variables::new(module, inputs);
    let _restore = Restore::new(module);
    let eval = |values: &[Tensor<f64>], analytic: bool| {
        let run = || {
            let leaves = vars.bind(values);
            (forward(&leaves[..inputs.len()]), leaves)
        };
        if analytic {
            enable_grad(run)
        } else {
            no_grad(run)
        }
    };
    let out_shape = no_grad(|| eval(&vars.values, false).0).shape().to_vec();
    compare(false, &vars, &eval, &|o| ("output".to_string(), unravel(o, &out_shape)), opts)
}

/// Checks second derivatives of `module.forward(input)` with respect to the input and every
/// parameter, with default tolerances (see [`gradgradcheck_module_with`]).
pub fn gradgradcheck_module<M: Module<f64> + ?Sized>(
    module: &M,
    input: &Tensor<f64>,
) -> Result<(), ModuleGradcheckError> {
    gradgradcheck_module_with(
        module,
        std::slice::from_ref(input),
        |x| module.forward(&x[0]),
        &GradcheckOptions::default(),
    )
}

/// Checks second derivatives: the gradient of `u · forward(inputs)` for a fixed irregular `u`,
/// with respect to every input and parameter, is itself checked against central differences
/// with respect to every input and parameter (as PyTorch's `gradgradcheck`).
pub fn gradgradcheck_module_with<M: Module<f64> + ?Sized>(
    module: &M,
    inputs: &[Tensor<f64>],
    forward: impl Fn(&[Var<f64>]) -> Var<f64>,
    opts: &GradcheckOptions,
) -> Result<(), ModuleGradcheckError> {
    let vars = Variables::new(module, inputs);
    let _restore = Restore::new(module);
    let out_shape = no_grad(|| forward(&vars.bind(&vars.values)[..inputs.len()])).shape().to_vec();
    // A fixed, irregular output gradient: deterministic, and with no symmetry to hide errors.
    let u = Var::constant(Tensor::from_fn(&out_shape, |j| ((j as f64 + 1.0) * 0.618_034).fract() * 2.0 - 0.7));
    let vjp = |values: &[Tensor<f64>], analytic: bool| {
        enable_grad(|| {
            let leaves = vars.bind(values);
            let y = forward(&leaves[..inputs.len()]);
            let grads = if y.requires_grad() {
                let opts = BackwardOptions { retain_graph: analytic, create_graph: analytic };
                grad_with(&[y], &leaves, Some(std::slice::from_ref(&u)), opts)
            } else {
                vec![None; leaves.len()]
            };
            let flat: Vec<Var<f64>> = grads
                .into_iter()
                .zip(&leaves)
                .map(|(g, x)| g.unwrap_or_else(|| Var::constant(Tensor::zeros(x.shape()))).reshape(&[x.numel()]))
                .collect();
            let refs: Vec<&Var<f64>> = flat.iter().collect();
            (Var::cat(&refs, 0), leaves)
        })
    };
    let label = |o: usize| {
        let (v, e) = vars.locate(o);
        (format!("d(u·output)/d {}", vars.names[v]), unravel(e, vars.values[v].shape()))
    };
    compare(true, &vars, &vjp, &label, opts)
}

/// The values a check differentiates with respect to: the inputs, then each distinct parameter.
struct Variables {
    names: Vec<String>,
    values: Vec<Tensor<f64>>,
    input_ids: Vec<NodeId>,
    params: Vec<(String, Param<f64>)>,
}

impl Variables {
    fn new<M: Module<f64> + ?Sized>(module: &M, inputs: &[Tensor<f64>]) -> Self {
        // A parameter shared by two modules (tied weights) is one variable, under its first name.
        let mut params: Vec<(String, Param<f64>)> = Vec::new();
        for (name, p) in module.named_parameters() {
            if !params.iter().any(|(_, q)| q.same(&p)) {
                params.push((name, p));
            }
        }
        let mut names: Vec<String> = (0..inputs.len()).map(|i| format!("input {i}")).collect();
        names.extend(params.iter().map(|(n, _)| n.clone()));
        let mut values: Vec<Tensor<f64>> = inputs.iter().map(perturbable).collect();
        values.extend(params.iter().map(|(_, p)| p.value()));
        let input_ids = inputs.iter().map(|_| NodeId::fresh()).collect();
        Variables { names, values, input_ids, params }
    }

    /// Gives the parameters `values` (after the inputs') and returns one leaf per variable, under
    /// the ids their gradients are found by.
    fn bind(&self, values: &[Tensor<f64>]) -> Vec<Var<f64>> {
        let n = self.input_ids.len();
        for ((_, p), v) in self.params.iter().zip(&values[n..]) {
            p.set(v.clone());
        }
        let mut leaves: Vec<Var<f64>> =
            values[..n].iter().zip(&self.input_ids).map(|(t, &id)| Var::leaf_with_id(t.clone(), id)).collect();
        leaves.extend(self.params.iter().map(|(_, p)| p.var()));
        leaves
    }

    /// The variable and element of position `o` in all variables' elements laid end to end.
    fn locate(&self, mut o: usize) -> (usize, usize) {
        for (v, t) in self.values.iter().enumerate() {
            if o < t.numel() {
                return (v, o);
            }
            o -= t.numel();
        }
        unreachable!("position past the last variable")
    }
}

/// Puts every parameter and buffer back as it was when the check started, however it ends.
struct Restore {
    saved: Vec<(Param<f64>, Tensor<f64>)>,
}

impl Restore {
    fn new<M: Module<f64> + ?Sized>(module: &M) -> Self {
        let all = module.named_parameters().into_iter().chain(module.named_buffers());
        Restore { saved: all.map(|(_, p)| (p.clone(), p.value())).collect() }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        for (p, v) in &self.saved {
            p.set(v.clone());
        }
    }
}

/// The checked output at given values of the variables (`true`: record a graph for backward),
/// with the leaves it was computed from.
type Evaluation<'a> = dyn Fn(&[Tensor<f64>], bool) -> (Var<f64>, Vec<Var<f64>>) + 'a;

/// Compares the Jacobian of `eval`'s output with respect to every variable, as backward
/// reports it (`eval(values, true)`, one backward per output element) and as central
/// differences estimate it (`eval(values, false)` at nudged values).
fn compare(
    second_order: bool,
    vars: &Variables,
    eval: &Evaluation<'_>,
    label: &dyn Fn(usize) -> (String, Vec<usize>),
    opts: &GradcheckOptions,
) -> Result<(), ModuleGradcheckError> {
    let (y, leaves) = eval(&vars.values, true);
    let (out_shape, n_out) = (y.shape().to_vec(), y.numel());

    // analytic[v][o * n_v + e]: d output o / d element e of variable v.
    let mut analytic: Vec<Vec<f64>> = vars.values.iter().map(|t| vec![0.0; n_out * t.numel()]).collect();
    if y.requires_grad() {
        for o in 0..n_out {
            let seed = Var::constant(Tensor::from_fn(&out_shape, |j| if j == o { 1.0 } else { 0.0 }));
            let opts = BackwardOptions { retain_graph: true, create_graph: false };
            let grads = grad_with(std::slice::from_ref(&y), &leaves, Some(&[seed]), opts);
            for (v, g) in grads.into_iter().enumerate() {
                if let Some(g) = g {
                    let n_v = vars.values[v].numel();
                    analytic[v][o * n_v..(o + 1) * n_v].copy_from_slice(&g.to_vec());
                }
            }
        }
    }
    drop((y, leaves));

    for (v, t) in vars.values.iter().enumerate() {
        let n_v = t.numel();
        for e in 0..n_v {
            let idx = unravel(e, t.shape());
            let at = |delta: f64| {
                let mut values = vars.values.clone();
                values[v] = nudged(t, &idx, delta);
                eval(&values, false).0.to_vec()
            };
            let (plus, minus) = (at(opts.eps), at(-opts.eps));
            for o in 0..n_out {
                let numeric = (plus[o] - minus[o]) / (2.0 * opts.eps);
                let a = analytic[v][o * n_v + e];
                // Written so that a NaN on either side counts as a failure.
                let close = (a - numeric).abs() <= opts.atol + opts.rtol * numeric.abs();
                if !close {
                    let (of, of_index) = label(o);
                    return Err(ModuleGradcheckError {
                        second_order,
                        of,
                        of_index,
                        wrt: vars.names[v].clone(),
                        wrt_index: idx,
                        analytic: a,
                        numeric,
                    });
                }
            }
        }
    }
    Ok(())
}
