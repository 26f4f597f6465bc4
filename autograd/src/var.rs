//! `Var`, the differentiable value, and the graph node every op records.
//!
//! The graph is built as the program runs (define-by-run, like PyTorch): an op on `Var`s computes
//! its result on tensors and, when gradients are wanted, records a [`Node`] holding its inputs'
//! nodes and a backward closure. There is no global tape: a graph lives exactly as long as the
//! `Var`s that reach it, and the engine in `backward.rs` walks it from the output.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrograd_tensor::{Float, Shape, Tensor};
use smallvec::SmallVec;

use crate::mode::{anomaly_enabled, is_grad_enabled};

/// A stable identity for a leaf or an op output; [`Grads`](crate::Grads) are keyed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// A fresh id, never handed out before in this process (parameters use it to keep one id
    /// across many forward passes).
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NodeId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Gradients an op returns for its inputs, in input order (`None`: no gradient flows there).
pub type InputGrads<F> = SmallVec<[Option<Var<F>>; 2]>;

/// What a backward closure learns about the pass it runs in.
pub struct BackwardCtx<'a, F: Float> {
    pub(crate) needs: &'a [bool],
    pub(crate) create_graph: bool,
    pub(crate) node: &'a Arc<Node<F>>,
}

impl<F: Float> BackwardCtx<'_, F> {
    /// Whether input `i` needs a gradient (skip computing those that do not).
    pub fn needs_input_grad(&self, i: usize) -> bool {
        self.needs.get(i).copied().unwrap_or(false)
    }

    /// Whether this pass builds a graph of the gradients (for higher-order derivatives).
    pub fn create_graph(&self) -> bool {
        self.create_graph
    }

    /// The op's own output as a `Var` attached to its node, given the output tensor the op saved.
    ///
    /// Saving the output tensor and re-attaching it here avoids the reference cycle that saving
    /// the output `Var` itself would make, while keeping higher-order gradients exact.
    pub fn output(&self, saved: &Tensor<F>) -> Var<F> {
        Var { data: saved.clone(), node: Some(self.node.clone()) }
    }
}

pub(crate) type BackwardFn<F> = Box<dyn Fn(&BackwardCtx<'_, F>, &Var<F>) -> InputGrads<F> + Send + Sync>;
pub(crate) type MultiBackwardFn<F> = Box<dyn Fn(&BackwardCtx<'_, F>, &[Option<Var<F>>]) -> InputGrads<F> + Send + Sync>;

/// A node's backward closure: from the gradient of its one output, or of each of its outputs.
pub(crate) enum Backward<F: Float> {
    One(BackwardFn<F>),
    Many(MultiBackwardFn<F>),
}

/// How a node takes part in an op with several outputs.
///
/// An op with several outputs (`split`, `unbind`, ...) records one `Multi` node holding the
/// backward and, per output, a `Piece` node (the node of the `Var` the user holds) whose only
/// input is the `Multi` node. Backward collects every piece's gradient and calls the `Multi`
/// node's closure once with all of them, so it can write them into one buffer instead of
/// padding each piece to the input's full size and summing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A leaf, or an op with one output.
    Single,
    /// An op with `outputs` outputs; never held by a `Var`.
    Multi { outputs: usize },
    /// Output `index` of its only input, a `Multi` node; it has no closure of its own.
    Piece { index: usize },
}
pub(crate) type Hook<F> = Box<dyn Fn(&Var<F>) -> Option<Var<F>> + Send + Sync>;

/// A vertex of the graph: a leaf that requires grad, or the output of an op.
pub struct Node<F: Float> {
    pub(crate) id: NodeId,
    pub(crate) op: &'static str,
    pub(crate) location: &'static Location<'static>,
    pub(crate) inputs: SmallVec<[Option<Arc<Node<F>>>; 2]>,
    /// `None` for leaves, and for op nodes whose graph an earlier backward already freed.
    pub(crate) backward: Mutex<Option<Backward<F>>>,
    pub(crate) hooks: Mutex<Vec<Hook<F>>>,
    pub(crate) is_leaf: bool,
    /// The value's shape, to check that every backward returns gradients of the right shape.
    pub(crate) shape: Shape,
    pub(crate) role: Role,
}

impl<F: Float> Drop for Node<F> {
    /// Unlinks long chains iteratively: the default recursive drop would overflow the stack on a
    /// graph of a few hundred thousand ops.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node<F>>> = self.inputs.drain(..).flatten().collect();
        while let Some(node) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(node) {
                stack.extend(inner.inputs.drain(..).flatten());
            }
        }
    }
}

/// A tensor that may take part in differentiation.
///
/// A `Var` is a [`Tensor`] plus, when it requires grad, a node of the graph. Ops on `Var`s mirror
/// the tensor ops and record themselves when gradients are enabled (see [`no_grad`](crate::no_grad)).
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_tensor::Tensor;
/// let x = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]));
/// let y = (&x * &x).sum();
/// let grads = y.backward();
/// assert_eq!(grads.get(&x).unwrap().to_vec(), vec![2.0, 4.0, 6.0]);
/// ```
#[derive(Clone)]
pub struct Var<F: Float = f32> {
    pub(crate) data: Tensor<F>,
    pub(crate) node: Option<Arc<Node<F>>>,
}

impl<F: Float> Var<F> {
    /// A value that does not require grad (inputs, targets, constants).
    pub fn constant(data: Tensor<F>) -> Self {
        Var { data, node: None }
    }

    /// A leaf that requires grad, with a fresh id.
    #[track_caller]
    pub fn leaf(data: Tensor<F>) -> Self {
        Self::leaf_with_id(data, NodeId::fresh())
    }

    /// A leaf that requires grad under a given id, so that gradients of many forward passes map
    /// back to one parameter.
    #[track_caller]
    pub fn leaf_with_id(data: Tensor<F>, id: NodeId) -> Self {
        let node = Node {
            id,
            op: "leaf",
            location: Location::caller(),
            inputs: SmallVec::new(),
            backward: Mutex::new(None),
            hooks: Mutex::new(Vec::new()),
            is_leaf: true,
            shape: Shape::from_slice(data.shape()),
            role: Role::Single,
        };
        Var { data, node: Some(Arc::new(node)) }
    }

    /// A scalar constant.
    pub fn scalar(v: F) -> Self {
        Self::constant(Tensor::scalar(v))
    }

    /// The values.
    pub fn data(&self) -> &Tensor<F> {
        &self.data
    }

    /// Consumes the `Var` and returns its values.
    pub fn into_data(self) -> Tensor<F> {
        self.data
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.data.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.numel()
    }

    /// The single value of a one-element `Var`.
    #[track_caller]
    pub fn item(&self) -> F {
        self.data.item()
    }

    /// The values in row-major order.
    pub fn to_vec(&self) -> Vec<F> {
        self.data.to_vec()
    }

    /// Whether gradients flow into this value.
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    /// Whether this is a leaf (created by the user, not by an op).
    pub fn is_leaf(&self) -> bool {
        self.node.as_ref().is_none_or(|n| n.is_leaf)
    }

    /// The id gradients are keyed by, if this value requires grad.
    pub fn id(&self) -> Option<NodeId> {
        self.node.as_ref().map(|n| n.id)
    }

    /// The name of the op that produced this value ("leaf" for leaves, `None` for constants).
    pub fn op_name(&self) -> Option<&'static str> {
        self.node.as_ref().map(|n| n.op)
    }

    /// The same values cut off from the graph.
    pub fn detach(&self) -> Self {
        Var::constant(self.data.clone())
    }

    /// Registers a hook called with this value's gradient once it is fully accumulated during
    /// backward; returning `Some(g)` replaces the gradient.
    ///
    /// # Panics
    /// If this value does not require grad.
    #[track_caller]
    pub fn register_hook(&self, hook: impl Fn(&Var<F>) -> Option<Var<F>> + Send + Sync + 'static) {
        let node = self.node.as_ref().expect("register_hook: this Var does not require grad");
        node.hooks.lock().expect("hook list poisoned").push(Box::new(hook));
    }

    /// Records an op: `data` is its forward result over `inputs`, `backward` maps the output's
    /// gradient to one gradient per input. When no input requires grad, or under
    /// [`no_grad`](crate::no_grad), nothing is recorded and `backward` is dropped unused.
    ///
    /// This is how every op of this crate is built and how a user adds one without the
    /// [`CustomOp`](crate::CustomOp) trait.
    #[track_caller]
    pub fn from_op<const N: usize>(
        op: &'static str,
        data: Tensor<F>,
        inputs: [&Var<F>; N],
        backward: impl Fn(&BackwardCtx<'_, F>, &Var<F>) -> InputGrads<F> + Send + Sync + 'static,
    ) -> Var<F> {
        Self::record(op, data, &inputs, backward)
    }

    #[track_caller]
    pub(crate) fn record(
        op: &'static str,
        data: Tensor<F>,
        inputs: &[&Var<F>],
        backward: impl Fn(&BackwardCtx<'_, F>, &Var<F>) -> InputGrads<F> + Send + Sync + 'static,
    ) -> Var<F> {
        let location = Location::caller();
        if anomaly_enabled() {
            crate::mode::check_forward(op, location, &data);
        }
        if !is_grad_enabled() || inputs.iter().all(|v| v.node.is_none()) {
            return Var::constant(data);
        }
        let node = Node {
            id: NodeId::fresh(),
            op,
            location,
            inputs: inputs.iter().map(|v| v.node.clone()).collect(),
            backward: Mutex::new(Some(Backward::One(Box::new(backward)))),
            hooks: Mutex::new(Vec::new()),
            is_leaf: false,
            shape: Shape::from_slice(data.shape()),
            role: Role::Single,
        };
        Var { data, node: Some(Arc::new(node)) }
    }

    /// Records an op with several outputs (see [`Role`]): `backward` gets one gradient per
    /// output, `None` for outputs no gradient reached, and returns one gradient per input.
    #[track_caller]
    pub(crate) fn record_multi(
        op: &'static str,
        outputs: Vec<Tensor<F>>,
        inputs: &[&Var<F>],
        backward: impl Fn(&BackwardCtx<'_, F>, &[Option<Var<F>>]) -> InputGrads<F> + Send + Sync + 'static,
    ) -> Vec<Var<F>> {
        let location = Location::caller();
        if anomaly_enabled() {
            for out in &outputs {
                crate::mode::check_forward(op, location, out);
            }
        }
        if outputs.is_empty() || !is_grad_enabled() || inputs.iter().all(|v| v.node.is_none()) {
            return outputs.into_iter().map(Var::constant).collect();
        }
        let multi = Arc::new(Node {
            id: NodeId::fresh(),
            op,
            location,
            inputs: inputs.iter().map(|v| v.node.clone()).collect(),
            backward: Mutex::new(Some(Backward::Many(Box::new(backward)))),
            hooks: Mutex::new(Vec::new()),
            is_leaf: false,
            shape: Shape::new(),
            role: Role::Multi { outputs: outputs.len() },
        });
        let mut vars = Vec::with_capacity(outputs.len());
        for (index, data) in outputs.into_iter().enumerate() {
            let node = Node {
                id: NodeId::fresh(),
                op,
                location,
                inputs: smallvec::smallvec![Some(multi.clone())],
                backward: Mutex::new(None),
                hooks: Mutex::new(Vec::new()),
                is_leaf: false,
                shape: Shape::from_slice(data.shape()),
                role: Role::Piece { index },
            };
            vars.push(Var { data, node: Some(Arc::new(node)) });
        }
        vars
    }
}

impl<F: Float> std::fmt::Debug for Var<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(n) => write!(f, "Var({:?}, op={}, id={:?})", self.data, n.op, n.id),
            None => write!(f, "Var({:?})", self.data),
        }
    }
}

impl<F: Float> From<Tensor<F>> for Var<F> {
    /// A constant `Var` (no grad); use [`Var::leaf`] for values that require grad.
    fn from(t: Tensor<F>) -> Self {
        Var::constant(t)
    }
}
