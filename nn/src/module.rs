//! The `Module` trait: a forward pass plus a named tree of parameters, buffers and submodules.
//!
//! A model is a struct of its parameters and layers. `#[derive(Module)]` reads the tree off the
//! struct's fields (nothing to list by hand, so nothing to forget); the provided methods walk it
//! to give PyTorch-style dotted names (`encoder.layers.0.linear1.weight`), switch train/eval
//! mode, and save or restore a `state_dict`. The guide to writing a layer is on the trait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Float, Tensor};

use crate::NnError;

/// A building block of a model: a forward pass and a named tree of parameters, buffers and
/// submodules.
///
/// The provided methods walk the tree: [`named_parameters`](Module::named_parameters) gives
/// PyTorch's dotted names (`encoder.layers.0.linear1.weight`), [`train`](Module::train) and
/// [`eval`](Module::eval) switch every module's mode, [`state_dict`](Module::state_dict) and
/// [`load_state_dict`](Module::load_state_dict) save and restore parameters and buffers.
///
/// # Writing a layer
///
/// A struct, its parameters, and an inherent `forward`: the derive's [`Module::forward`] calls
/// the inherent one, so `layer.forward(&x)` works with or without the trait in scope, and the
/// layer composes with every other module (fields, [`Sequential`](crate::layers::Sequential),
/// `Vec`s of layers).
///
/// ```
/// use ferrograd_autograd::{Param, Var};
/// use ferrograd_nn::{layers::Linear, Module};
/// use ferrograd_tensor::{Float, Tensor};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// #[derive(Module)]
/// struct Residual<F: Float = f32> {
///     fc: Linear<F>,
///     blocks: Vec<Linear<F>>,
///     gate: Param<F>,
///     #[module(skip)]
///     width: usize,
/// }
///
/// impl<F: Float> Residual<F> {
///     fn forward(&self, x: &Var<F>) -> Var<F> {
///         let h = self.blocks.iter().fold(self.fc.forward(x), |h, b| b.forward(&h).relu());
///         x + &(&h * &self.gate.var())
///     }
/// }
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let block = Residual::<f64> {
///     fc: Linear::new(4, 4, &mut rng),
///     blocks: vec![Linear::new(4, 4, &mut rng), Linear::new(4, 4, &mut rng)],
///     gate: Param::new(Tensor::zeros(&[1])),
///     width: 4,
/// };
/// let names: Vec<String> = block.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["gate", "fc.weight", "fc.bias", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]);
/// assert_eq!(block.forward(&Var::constant(Tensor::ones(&[2, 4]))).shape(), &[2, 4]);
/// ```
///
/// The attributes (`skip`, `buffer`, `training`, `flatten`; `float`, `any_float`, `forward`) are
/// listed on the [derive macro](macro@crate::Module).
///
/// # Layers with several inputs or outputs
///
/// [`Module::forward`] is the single-input form, the one a [`Sequential`](crate::layers::Sequential)
/// chains. A layer whose natural signature is different keeps it as an inherent method and still
/// derives `Module`, so that its parameters are found, named, trained, saved and switched to
/// eval mode with the rest of the model:
///
/// - it has a natural single-input form too (an LSTM from a zero state, self-attention): name
///   that method with `#[module(forward = method)]`, and keep the full signature
///   (`forward_state(&x, state) -> (y, state)`) beside it;
/// - it has none (a decoder layer needs the target and the memory): `#[module(forward = none)]`;
///   its own `forward(&tgt, &memory)` is the one callers use, and `Module::forward` panics with
///   the type's name (as calling a two-argument PyTorch module with one argument raises).
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Linear, Module};
/// use ferrograd_tensor::{Float, Tensor};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// /// Mixes a target with a memory: `q(tgt) + k(memory)`.
/// #[derive(Module)]
/// #[module(forward = none)]
/// struct Mix<F: Float = f32> {
///     q: Linear<F>,
///     k: Linear<F>,
/// }
///
/// impl<F: Float> Mix<F> {
///     fn forward(&self, tgt: &Var<F>, memory: &Var<F>) -> Var<F> {
///         &self.q.forward(tgt) + &self.k.forward(memory)
///     }
/// }
///
/// /// A recurrent cell: `h' = tanh(W x + U h)`; the single-input form starts from zeros.
/// #[derive(Module)]
/// #[module(forward = forward_zero_state)]
/// struct Cell<F: Float = f32> {
///     w: Linear<F>,
///     u: Linear<F>,
/// }
///
/// impl<F: Float> Cell<F> {
///     fn forward(&self, x: &Var<F>, h: &Var<F>) -> Var<F> {
///         (&self.w.forward(x) + &self.u.forward(h)).tanh()
///     }
///     fn forward_zero_state(&self, x: &Var<F>) -> Var<F> {
///         let h = Var::constant(Tensor::zeros(&[x.shape()[0], self.u.in_features()]));
///         self.forward(x, &h)
///     }
/// }
///
/// /// Both inside one model: the tree sees every parameter.
/// #[derive(Module)]
/// #[module(forward = none)]
/// struct Model<F: Float = f32> {
///     cell: Cell<F>,
///     mix: Mix<F>,
/// }
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = Model::<f32> {
///     cell: Cell { w: Linear::new(3, 5, &mut rng), u: Linear::new(5, 5, &mut rng) },
///     mix: Mix { q: Linear::new(5, 2, &mut rng), k: Linear::new(4, 2, &mut rng) },
/// };
/// assert_eq!(model.parameters().len(), 8);
/// let x = Var::constant(Tensor::ones(&[6, 3]));
/// let h = Module::forward(&model.cell, &x); // the single-input form, as Sequential would call it
/// let y = model.mix.forward(&h, &Var::constant(Tensor::ones(&[6, 4])));
/// assert_eq!(y.shape(), &[6, 2]);
/// ```
///
/// # Writing the impl by hand
///
/// Still works: only `forward` is required; a layer with parameters also implements `params`
/// (and `buffers`), a container implements `children`, and a layer that behaves differently in
/// training (Dropout, BatchNorm) implements `set_training_self`.
///
/// ```
/// use ferrograd_autograd::{Param, Var};
/// use ferrograd_nn::Module;
/// use ferrograd_tensor::Tensor;
/// struct Scale { s: Param }
/// impl Module for Scale {
///     fn forward(&self, x: &Var) -> Var { x * &self.s.var() }
///     fn params(&self) -> Vec<(&str, &Param)> { vec![("s", &self.s)] }
/// }
/// let m = Scale { s: Param::new(Tensor::full(&[1], 2.0)) };
/// assert_eq!(m.forward(&Var::constant(Tensor::ones(&[3]))).to_vec(), vec![2.0; 3]);
/// assert_eq!(m.named_parameters()[0].0, "s");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Module<{F}>`",
    label = "not a `Module<{F}>`",
    note = "a struct of parameters and layers becomes a module with `#[derive(Module)]` (see `ferrograd_nn::Module`)"
)]
pub trait Module<F: Float = f32>: Send + Sync {
    /// The layer's computation.
    ///
    /// The shipped layers' `forward` is `#[track_caller]`: a shape error inside one reports the
    /// line that called `forward`, and the graph nodes it records carry that line for anomaly
    /// mode. Your own layers report their own lines (where an op inside them failed) unless you
    /// add `#[track_caller]` to their `forward` too. Through `dyn Module` the caller's line is
    /// lost (Rust passes it only to statically known callees): call [`Module::forward_tracked`]
    /// there, as [`Sequential`](crate::layers::Sequential) does.
    fn forward(&self, input: &Var<F>) -> Var<F>;

    /// [`Module::forward`], carrying the caller's line into a `#[track_caller]` forward even when
    /// called through `dyn Module` (a container's boxed layers).
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_nn::{layers::Linear, Module};
    /// use ferrograd_tensor::Tensor;
    /// use rand::{rngs::StdRng, SeedableRng};
    /// let layers: Vec<Box<dyn Module<f32>>> = vec![Box::new(Linear::new(3, 2, &mut StdRng::seed_from_u64(0)))];
    /// let y = layers[0].forward_tracked(&Var::constant(Tensor::ones(&[4, 3])));
    /// assert_eq!(y.shape(), &[4, 2]);
    /// ```
    #[track_caller]
    fn forward_tracked(&self, input: &Var<F>) -> Var<F> {
        self.forward(input)
    }

    /// This module's own trainable parameters with their local names (not its children's).
    fn params(&self) -> Vec<(&str, &Param<F>)> {
        Vec::new()
    }

    /// This module's own buffers (state saved in checkpoints but not trained, such as
    /// BatchNorm's running statistics) with their local names.
    fn buffers(&self) -> Vec<(&str, &Param<F>)> {
        Vec::new()
    }

    /// Direct submodules with their names.
    fn children(&self) -> Vec<(String, &dyn Module<F>)> {
        Vec::new()
    }

    /// Reacts to train/eval mode for this module alone; [`Module::train`] recurses.
    fn set_training_self(&self, _training: bool) {}

    /// Every parameter of the tree with its dotted name, in definition order.
    fn named_parameters(&self) -> Vec<(String, Param<F>)> {
        let mut out: Vec<(String, Param<F>)> =
            self.params().into_iter().map(|(n, p)| (n.to_string(), p.clone())).collect();
        for (name, child) in self.children() {
            out.extend(child.named_parameters().into_iter().map(|(n, p)| (join(&name, &n), p)));
        }
        out
    }

    /// Every parameter of the tree.
    fn parameters(&self) -> Vec<Param<F>> {
        self.named_parameters().into_iter().map(|(_, p)| p).collect()
    }

    /// Every buffer of the tree with its dotted name.
    fn named_buffers(&self) -> Vec<(String, Param<F>)> {
        let mut out: Vec<(String, Param<F>)> =
            self.buffers().into_iter().map(|(n, p)| (n.to_string(), p.clone())).collect();
        for (name, child) in self.children() {
            out.extend(child.named_buffers().into_iter().map(|(n, p)| (join(&name, &n), p)));
        }
        out
    }

    /// Switches the whole tree to training (`true`) or evaluation mode.
    fn train(&self, training: bool) {
        self.set_training_self(training);
        for (_, child) in self.children() {
            child.train(training);
        }
    }

    /// Switches the whole tree to evaluation mode.
    fn eval(&self) {
        self.train(false);
    }

    /// Parameters and buffers by dotted name: what a checkpoint holds.
    fn state_dict(&self) -> BTreeMap<String, Tensor<F>> {
        self.named_parameters().into_iter().chain(self.named_buffers()).map(|(n, p)| (n, p.value())).collect()
    }

    /// Restores parameters and buffers from `state`. Every entry is checked (names, shapes)
    /// before anything is assigned, so on error the module is unchanged.
    fn load_state_dict(&self, state: &BTreeMap<String, Tensor<F>>) -> Result<(), NnError> {
        let targets: Vec<(String, Param<F>)> =
            self.named_parameters().into_iter().chain(self.named_buffers()).collect();
        for (name, p) in &targets {
            let t = state.get(name).ok_or_else(|| NnError::MissingTensor { name: name.clone() })?;
            if t.shape() != p.shape().as_slice() {
                return Err(NnError::ShapeMismatch {
                    name: name.clone(),
                    expected: p.shape(),
                    found: t.shape().to_vec(),
                });
            }
        }
        if let Some(extra) = state.keys().find(|k| !targets.iter().any(|(n, _)| n == *k)) {
            return Err(NnError::UnexpectedTensor { name: extra.clone() });
        }
        for (name, p) in &targets {
            p.set(state[name].clone());
        }
        Ok(())
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A boxed module is a module: `Box<dyn Module<F>>` fields and lists of them (as in
/// [`Sequential`](crate::layers::Sequential)) take part in the tree like any other.
impl<F: Float, M: Module<F> + ?Sized> Module<F> for Box<M> {
    // Both go through the boxed module's `forward_tracked`, so that a boxed layer (a
    // `Sequential`'s, say) still reports the line that called it.
    #[track_caller]
    fn forward(&self, input: &Var<F>) -> Var<F> {
        (**self).forward_tracked(input)
    }

    #[track_caller]
    fn forward_tracked(&self, input: &Var<F>) -> Var<F> {
        (**self).forward_tracked(input)
    }

    fn params(&self) -> Vec<(&str, &Param<F>)> {
        (**self).params()
    }

    fn buffers(&self) -> Vec<(&str, &Param<F>)> {
        (**self).buffers()
    }

    fn children(&self) -> Vec<(String, &dyn Module<F>)> {
        (**self).children()
    }

    fn set_training_self(&self, training: bool) {
        (**self).set_training_self(training)
    }
}

/// A field that follows the module's train/eval mode: `#[module(training)]` marks it in a
/// `#[derive(Module)]` struct, and [`Module::train`] / [`Module::eval`] set it.
///
/// Implemented for `AtomicBool` (`true` in training); implement it for a type of your own that
/// must react to the mode (an observer that stops updating in eval mode, for instance).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::Module;
/// #[derive(Module)]
/// #[module(any_float)]
/// struct Noise {
///     #[module(training)]
///     training: AtomicBool,
/// }
/// impl Noise {
///     fn forward<F: ferrograd_tensor::Float>(&self, x: &Var<F>) -> Var<F> {
///         if self.training.load(Ordering::Relaxed) { x.add_scalar(F::from_f64(0.1)) } else { x.clone() }
///     }
/// }
/// let n = Noise { training: AtomicBool::new(true) };
/// Module::<f32>::eval(&n);
/// assert!(!n.training.load(Ordering::Relaxed));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold the train/eval mode",
    label = "`#[module(training)]` needs an `AtomicBool` or a type implementing `TrainingFlag`"
)]
pub trait TrainingFlag {
    /// Stores the mode: `true` for training, `false` for evaluation.
    fn set_training(&self, training: bool);
}

impl TrainingFlag for AtomicBool {
    fn set_training(&self, training: bool) {
        self.store(training, Ordering::Relaxed);
    }
}

/// What `#[derive(Module)]` expands to calls into; not a public API.
///
/// A field is classified by its type through `Field`: a `Param` or `Option<Param>` is a
/// parameter, anything that holds modules (`Submodules`: a module, or a `Vec`, `Option` or
/// array of them, nested as deep as wanted) gives children. The kind parameter `K` keeps the
/// impls apart (a blanket impl over every `Module` would otherwise overlap with the containers'),
/// and is inferred at each field: exactly one impl fits a well-formed field, none fits a
/// forgotten one, whose error then carries the message below.
#[doc(hidden)]
pub mod derive_support {
    use super::*;

    pub use ferrograd_autograd::{Param, Var};
    pub use ferrograd_tensor::Float;

    /// The tree of one module level, filled field by field.
    pub struct Tree<'a, F: Float> {
        pub params: Vec<(&'static str, &'a Param<F>)>,
        pub buffers: Vec<(&'static str, &'a Param<F>)>,
        pub children: Vec<(String, &'a dyn Module<F>)>,
    }

    impl<F: Float> Tree<'_, F> {
        pub fn new() -> Self {
            Tree { params: Vec::new(), buffers: Vec::new(), children: Vec::new() }
        }
    }

    impl<F: Float> Default for Tree<'_, F> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Kinds of field (see the module documentation).
    pub mod kind {
        pub struct Param;
        pub struct OptionalParam;
        pub struct Sub<K>(K);
        pub struct Module;
        pub struct InVec<K>(K);
        pub struct InOption<K>(K);
        pub struct InArray<K>(K);
    }

    #[diagnostic::on_unimplemented(
        message = "field of type `{Self}` is neither a parameter nor a module of this `Module<{F}>`",
        label = "neither a `Param` nor a `Module` (nor a `Vec`, `Option` or array of modules)",
        note = "every field of a `#[derive(Module)]` struct is part of the model unless marked: `#[module(skip)]` for configuration and other state, `#[module(buffer)]` for a `Param` saved in the state_dict but not trained, `#[module(training)]` for a train/eval flag",
        note = "a struct with no `F: Float` parameter is a `Module<f32>`; mark it `#[module(float = f64)]` for f64"
    )]
    pub trait Field<F: Float, K> {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>);
    }

    #[diagnostic::on_unimplemented(
        message = "`{Self}` holds no modules of this `Module<{F}>`",
        label = "`#[module(flatten)]` needs a module, or a `Vec`/`Option`/array of modules"
    )]
    pub trait Submodules<F: Float, K> {
        fn children<'a>(&'a self, name: String, tree: &mut Tree<'a, F>);
    }

    impl<F: Float> Field<F, kind::Param> for Param<F> {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>) {
            tree.params.push((name, self));
        }
    }

    impl<F: Float> Field<F, kind::OptionalParam> for Option<Param<F>> {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>) {
            tree.params.extend(self.as_ref().map(|p| (name, p)));
        }
    }

    impl<F: Float, K, T: Submodules<F, K>> Field<F, kind::Sub<K>> for T {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>) {
            self.children(name.to_string(), tree);
        }
    }

    impl<F: Float, M: Module<F>> Submodules<F, kind::Module> for M {
        fn children<'a>(&'a self, name: String, tree: &mut Tree<'a, F>) {
            tree.children.push((name, self));
        }
    }

    impl<F: Float, K, T: Submodules<F, K>> Submodules<F, kind::InVec<K>> for Vec<T> {
        fn children<'a>(&'a self, name: String, tree: &mut Tree<'a, F>) {
            for (i, m) in self.iter().enumerate() {
                m.children(join(&name, &i.to_string()), tree);
            }
        }
    }

    impl<F: Float, K, T: Submodules<F, K>> Submodules<F, kind::InOption<K>> for Option<T> {
        fn children<'a>(&'a self, name: String, tree: &mut Tree<'a, F>) {
            if let Some(m) = self {
                m.children(name, tree);
            }
        }
    }

    impl<F: Float, K, T: Submodules<F, K>, const N: usize> Submodules<F, kind::InArray<K>> for [T; N] {
        fn children<'a>(&'a self, name: String, tree: &mut Tree<'a, F>) {
            for (i, m) in self.iter().enumerate() {
                m.children(join(&name, &i.to_string()), tree);
            }
        }
    }

    /// A field of the tree: a parameter or submodules, named `name`.
    pub fn field<'a, F: Float, K, T: Field<F, K>>(field: &'a T, name: &'static str, tree: &mut Tree<'a, F>) {
        field.visit(name, tree);
    }

    /// A `#[module(flatten)]` field: its modules are named as if they were the struct's own.
    pub fn flatten<'a, F: Float, K, T: Submodules<F, K>>(field: &'a T, tree: &mut Tree<'a, F>) {
        field.children(String::new(), tree);
    }

    #[diagnostic::on_unimplemented(
        message = "`#[module(buffer)]` field of type `{Self}` is not a `Param<{F}>`",
        label = "a buffer is a `Param<{F}>` or an `Option<Param<{F}>>`"
    )]
    pub trait Buffer<F: Float> {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>);
    }

    impl<F: Float> Buffer<F> for Param<F> {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>) {
            tree.buffers.push((name, self));
        }
    }

    impl<F: Float> Buffer<F> for Option<Param<F>> {
        fn visit<'a>(&'a self, name: &'static str, tree: &mut Tree<'a, F>) {
            tree.buffers.extend(self.as_ref().map(|p| (name, p)));
        }
    }

    /// A `#[module(buffer)]` field.
    pub fn buffer<'a, F: Float, T: Buffer<F>>(field: &'a T, name: &'static str, tree: &mut Tree<'a, F>) {
        field.visit(name, tree);
    }

    /// A `#[module(training)]` field.
    pub fn set_training<T: TrainingFlag>(field: &T, training: bool) {
        field.set_training(training);
    }

    /// Never implemented: the bound on the fallback method the derive declares beside the
    /// inherent forward it calls, so that a missing inherent method is this error rather than
    /// `Module::forward` calling itself forever.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` has no inherent single-input forward for `#[derive(Module)]` to call",
        label = "`Module::forward` calls the type's own `forward(&self, &Var<F>) -> Var<F>`",
        note = "write that method in an `impl` block of the type, name another one with `#[module(forward = method)]`, or mark a module with several inputs `#[module(forward = none)]`"
    )]
    pub trait MissingInherentForward {}

    /// `Module::forward` of a `#[module(forward = none)]` module.
    #[track_caller]
    pub fn no_single_input<T: ?Sized>() -> ! {
        panic!(
            "{}: this module takes several inputs (it is `#[module(forward = none)]`): call its own forward method, not Module::forward",
            std::any::type_name::<T>()
        )
    }
}
