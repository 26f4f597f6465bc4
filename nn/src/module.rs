//! The `Module` trait: a forward pass plus a named tree of parameters, buffers and submodules.
//!
//! A layer implements `forward` and lists its own parameters (and buffers, and children); the
//! provided methods walk the tree to give PyTorch-style dotted names (`encoder.fc1.weight`),
//! switch train/eval mode, and save or restore a `state_dict`.

use std::collections::BTreeMap;

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Float, Tensor};

use crate::NnError;

/// A building block of a model.
///
/// Only `forward` is required; a layer with parameters also implements `params`, a container
/// implements `children`, and a layer that behaves differently in training (Dropout,
/// BatchNorm) implements `set_training_self`.
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
