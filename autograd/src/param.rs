//! `Param`: a trainable tensor with a stable identity, shared between a model and its optimizer.

use std::sync::{Arc, RwLock};

use ferrograd_tensor::{Float, Tensor};

use crate::{Grads, NodeId, Var};

/// A shared handle to a parameter tensor.
///
/// Clones share the value, and the [`NodeId`] stays the same across forward passes, so the
/// gradients of every pass map back to the parameter: `grads.get_param(&p)`. Layers hold
/// `Param`s; optimizers update them in place through [`Param::update`].
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f32, 2.0], &[2]));
/// let grads = w.var().square().sum().backward();
/// let g = grads.get_param(&w).unwrap().clone();
/// w.update(|t| t.add_scaled_(&g, -0.1));
/// assert_eq!(w.value().to_vec(), vec![0.8, 1.6]);
/// ```
#[derive(Clone)]
pub struct Param<F: Float = f32> {
    id: NodeId,
    value: Arc<RwLock<Tensor<F>>>,
}

impl<F: Float> Param<F> {
    /// A new parameter with a fresh id.
    pub fn new(value: Tensor<F>) -> Self {
        Param { id: NodeId::fresh(), value: Arc::new(RwLock::new(value)) }
    }

    /// The id its gradients are stored under.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current value (shares storage until either side writes).
    pub fn value(&self) -> Tensor<F> {
        self.value.read().expect("parameter lock poisoned").clone()
    }

    /// The shape of the value.
    pub fn shape(&self) -> Vec<usize> {
        self.value.read().expect("parameter lock poisoned").shape().to_vec()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.value.read().expect("parameter lock poisoned").numel()
    }

    /// The value as a leaf of the graph under this parameter's id (under `no_grad`, and for
    /// frozen use, take [`Param::value`] instead).
    #[track_caller]
    pub fn var(&self) -> Var<F> {
        Var::leaf_with_id(self.value(), self.id)
    }

    /// Replaces the value.
    ///
    /// # Panics
    /// If the new value's shape differs: a parameter keeps its shape for its whole life.
    #[track_caller]
    pub fn set(&self, value: Tensor<F>) {
        let mut slot = self.value.write().expect("parameter lock poisoned");
        if slot.shape() != value.shape() {
            // Released before panicking: the value is unchanged, so the lock must not be poisoned.
            let shape = slot.shape().to_vec();
            drop(slot);
            panic!("Param::set: shape {:?} cannot replace shape {shape:?}", value.shape());
        }
        *slot = value;
    }

    /// Updates the value in place (copy-on-write if a graph still holds the old value).
    ///
    /// # Panics
    /// If `f` changes the shape (the parameter is then left poisoned: its value is no longer
    /// one it can hold).
    #[track_caller]
    pub fn update<R>(&self, f: impl FnOnce(&mut Tensor<F>) -> R) -> R {
        let mut slot = self.value.write().expect("parameter lock poisoned");
        let shape = slot.shape().to_vec();
        let r = f(&mut slot);
        assert!(
            slot.shape() == shape.as_slice(),
            "Param::update: the update changed the shape {shape:?} to {:?}",
            slot.shape()
        );
        r
    }

    /// Whether two handles are the same parameter.
    pub fn same(&self, other: &Param<F>) -> bool {
        self.id == other.id
    }
}

impl<F: Float> std::fmt::Debug for Param<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({:?}, shape={:?})", self.id, self.shape())
    }
}

impl<F: Float> Grads<F> {
    /// The gradient of a parameter, if the output depends on it.
    pub fn get_param(&self, p: &Param<F>) -> Option<&Tensor<F>> {
        self.get_by_id(p.id())
    }
}
