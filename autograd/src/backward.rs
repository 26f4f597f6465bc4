//! The backward engine: walks the graph from the outputs in reverse topological order, calls each
//! node's backward closure once its gradient is complete, and frees what it consumed.

use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use ferrograd_tensor::{Float, Tensor};
use smallvec::SmallVec;

use crate::mode::{anomaly_enabled, check_backward, enable_grad, no_grad, suspend_anomaly};
use crate::var::{Backward, BackwardCtx, InputGrads, Node, NodeId, Role, Var};

/// Node ids are unique counters, already well spread: hashing them through SipHash costs more
/// than the rest of a map lookup, and the backward pass does several lookups per node.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Multiply to spread consecutive ids over the table's high bits (hashbrown uses them).
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Gradients of leaves, keyed by their [`NodeId`].
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_tensor::Tensor;
/// let w = Var::leaf(Tensor::from_vec(vec![3.0f32], &[1]));
/// let grads = (&w * &w).sum().backward();
/// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![6.0]);
/// ```
pub struct Grads<F: Float = f32> {
    map: HashMap<NodeId, Var<F>>,
}

impl<F: Float> std::fmt::Debug for Grads<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.map.iter().map(|(id, g)| (id, g.shape()))).finish()
    }
}

impl<F: Float> Default for Grads<F> {
    fn default() -> Self {
        Grads { map: HashMap::default() }
    }
}

/// Clones share the gradients' storage (copy-on-write).
impl<F: Float> Clone for Grads<F> {
    fn clone(&self) -> Self {
        Grads { map: self.map.clone() }
    }
}

impl<F: Float> Grads<F> {
    /// The gradient of `v`, if it required grad and the output depends on it.
    pub fn get(&self, v: &Var<F>) -> Option<&Tensor<F>> {
        self.get_var(v).map(|g| g.data())
    }

    /// The gradient of `v` as a `Var` (attached to a graph after a `create_graph` backward).
    pub fn get_var(&self, v: &Var<F>) -> Option<&Var<F>> {
        v.id().and_then(|id| self.map.get(&id))
    }

    /// The gradient stored under `id`.
    pub fn get_by_id(&self, id: NodeId) -> Option<&Tensor<F>> {
        self.map.get(&id).map(|g| g.data())
    }

    /// Removes and returns the gradient stored under `id`.
    pub fn remove(&mut self, id: NodeId) -> Option<Tensor<F>> {
        self.map.remove(&id).map(Var::into_data)
    }

    /// Stores (replaces) a gradient under `id`; optimizers and clipping use it.
    pub fn insert(&mut self, id: NodeId, grad: Tensor<F>) {
        self.map.insert(id, Var::constant(grad));
    }

    /// Iterates over `(id, gradient)` pairs in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Tensor<F>)> {
        self.map.iter().map(|(id, g)| (*id, g.data()))
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds `other`'s gradients into these, as PyTorch's `.grad` accumulates over backward
    /// passes: gradients of leaves in both are summed, those in one only are kept. This is
    /// gradient accumulation over micro-batches: the sum of each micro-batch's gradients,
    /// [scaled](Grads::scale) by its share of the batch, is the whole batch's gradient.
    /// Gradients attached to a graph (`create_graph`) are summed differentiably; the others in
    /// place. Also `grads += &other` and `&a + &b`.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let w = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0], &[2]));
    /// let x = [Tensor::from_vec(vec![1.0, 0.0], &[2]), Tensor::from_vec(vec![3.0, 1.0], &[2])];
    /// // The mean loss over both samples, and the same from one sample at a time.
    /// let full = (&w * &Var::constant(Tensor::from_vec(vec![2.0, 0.5], &[2]))).sum().backward();
    /// let mut acc = (&w * &Var::constant(x[0].clone())).sum().backward();
    /// acc.accumulate(&(&w * &Var::constant(x[1].clone())).sum().backward());
    /// acc.scale(0.5);
    /// assert_eq!(acc.get(&w).unwrap().to_vec(), full.get(&w).unwrap().to_vec());
    /// ```
    ///
    /// # Panics
    /// If a leaf's gradients have different shapes in the two.
    #[track_caller]
    pub fn accumulate(&mut self, other: &Grads<F>) {
        for (id, g) in &other.map {
            let Some(mine) = self.map.get_mut(id) else {
                self.map.insert(*id, g.clone());
                continue;
            };
            assert_eq!(
                mine.shape(),
                g.shape(),
                "Grads::accumulate: the gradient of {id:?} has shape {:?} here and {:?} in the other",
                mine.shape(),
                g.shape()
            );
            if mine.requires_grad() || g.requires_grad() {
                *mine = mine.add(g);
            } else {
                mine.data.zip_inplace(&g.data, "Grads::accumulate", |a, b| a + b);
            }
        }
    }

    /// Multiplies every gradient by `factor` (to average accumulated micro-batches, or weight a
    /// loss's gradients). Also `grads *= factor` and `grads * factor`.
    pub fn scale(&mut self, factor: F) {
        for g in self.map.values_mut() {
            if g.requires_grad() {
                *g = g.mul_scalar(factor);
            } else {
                g.data.mul_scalar_(factor);
            }
        }
    }
}

impl<F: Float> std::ops::AddAssign<&Grads<F>> for Grads<F> {
    /// [`Grads::accumulate`].
    #[track_caller]
    fn add_assign(&mut self, other: &Grads<F>) {
        self.accumulate(other);
    }
}

impl<F: Float> std::ops::AddAssign for Grads<F> {
    /// [`Grads::accumulate`].
    #[track_caller]
    fn add_assign(&mut self, other: Grads<F>) {
        self.accumulate(&other);
    }
}

impl<F: Float> std::ops::Add for Grads<F> {
    type Output = Grads<F>;
    /// The sum of two sets of gradients ([`Grads::accumulate`]).
    #[track_caller]
    fn add(mut self, other: Grads<F>) -> Grads<F> {
        self.accumulate(&other);
        self
    }
}

impl<F: Float> std::ops::Add for &Grads<F> {
    type Output = Grads<F>;
    /// The sum of two sets of gradients ([`Grads::accumulate`]).
    #[track_caller]
    fn add(self, other: &Grads<F>) -> Grads<F> {
        let mut sum = self.clone();
        sum.accumulate(other);
        sum
    }
}

impl<F: Float> std::ops::MulAssign<F> for Grads<F> {
    /// [`Grads::scale`].
    fn mul_assign(&mut self, factor: F) {
        self.scale(factor);
    }
}

impl<F: Float> std::ops::Mul<F> for Grads<F> {
    type Output = Grads<F>;
    /// Every gradient times `factor` ([`Grads::scale`]).
    fn mul(mut self, factor: F) -> Grads<F> {
        self.scale(factor);
        self
    }
}

impl<F: Float> std::ops::Mul<F> for &Grads<F> {
    type Output = Grads<F>;
    /// Every gradient times `factor` ([`Grads::scale`]).
    fn mul(self, factor: F) -> Grads<F> {
        self.clone() * factor
    }
}

impl<F: Float> std::iter::Sum for Grads<F> {
    /// The sum of many sets of gradients (empty if there are none).
    #[track_caller]
    fn sum<I: Iterator<Item = Grads<F>>>(iter: I) -> Grads<F> {
        iter.fold(Grads::default(), |acc, g| acc + g)
    }
}

/// Options of a backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackwardOptions {
    /// Keep the graph's saved values so that backward can run through it again.
    pub retain_graph: bool,
    /// Record the gradient computation itself, for higher-order derivatives (implies keeping the
    /// graph, as in PyTorch).
    pub create_graph: bool,
}

impl<F: Float> Var<F> {
    /// Gradients of this scalar with respect to every leaf that requires grad, freeing the
    /// graph's saved values as it goes.
    ///
    /// # Panics
    /// If `self` is not a single element (use [`grad`] with `grad_outputs` for other shapes), if
    /// it does not require grad, or if an earlier backward already freed this graph.
    #[track_caller]
    pub fn backward(&self) -> Grads<F> {
        self.backward_with(BackwardOptions::default())
    }

    /// [`Var::backward`] with options (`retain_graph`, `create_graph`).
    #[track_caller]
    pub fn backward_with(&self, opts: BackwardOptions) -> Grads<F> {
        self.backward_scalar(opts, None)
    }

    /// [`Var::backward_with`] that also calls `on_ready(id, grad)` for each leaf as soon as its
    /// gradient is final, while backward goes on with the rest of the graph: PyTorch's
    /// `register_post_accumulate_grad_hook`, for one pass. Data-parallel training uses it to
    /// start averaging the last layers' gradients across processes while the first layers'
    /// are still being computed.
    ///
    /// A leaf's gradient is final once every op of the graph that consumes the leaf has run its
    /// backward (a leaf used several times is reported once, with the sum). `on_ready` is called
    /// exactly once for each leaf that receives a gradient, with the gradient the returned
    /// [`Grads`] hold for it (after the leaf's [`register_hook`](Var::register_hook) hooks), in
    /// the order the leaves become final: the parameters of a network's last layers are
    /// reported before backward reaches its first layers. Leaves that receive no gradient are
    /// never reported. With `create_graph` the gradient is attached to a graph, as in the
    /// returned `Grads`.
    ///
    /// ```
    /// use ferrograd_autograd::{BackwardOptions, Var};
    /// use ferrograd_tensor::Tensor;
    /// let w1 = Var::leaf(Tensor::from_vec(vec![2.0f32], &[1]));
    /// let w2 = Var::leaf(Tensor::from_vec(vec![3.0f32], &[1]));
    /// let x = Var::constant(Tensor::from_vec(vec![5.0f32], &[1]));
    /// let loss = (&(&x * &w1) * &w2).sum(); // x w1 w2: w2's gradient is final first
    /// let mut order = Vec::new();
    /// let grads = loss.backward_with_ready(BackwardOptions::default(), |id, g| order.push((id, g.to_vec())));
    /// assert_eq!(order, vec![(w2.id().unwrap(), vec![10.0]), (w1.id().unwrap(), vec![15.0])]);
    /// assert_eq!(grads.get(&w1).unwrap().to_vec(), vec![15.0]);
    /// ```
    ///
    /// # Panics
    /// As [`Var::backward`]; a panic of `on_ready` propagates.
    #[track_caller]
    pub fn backward_with_ready(&self, opts: BackwardOptions, mut on_ready: impl FnMut(NodeId, &Var<F>)) -> Grads<F> {
        self.backward_scalar(opts, Some(&mut on_ready))
    }

    /// Backward from this single-element output, seeded with one: what `backward_with` and
    /// `backward_with_ready` share.
    #[track_caller]
    fn backward_scalar(&self, opts: BackwardOptions, on_ready: Option<&mut OnReady<'_, F>>) -> Grads<F> {
        assert_eq!(
            self.numel(),
            1,
            "backward: the output has shape {:?}; backward needs a single element (pass grad_outputs to grad())",
            self.shape()
        );
        let seed = Var::constant(Tensor::full(self.shape(), F::one()));
        Grads { map: run(std::slice::from_ref(self), vec![seed], Targets::AllLeaves, opts, on_ready) }
    }
}

/// Gradients of `outputs` with respect to `inputs`, like `torch.autograd.grad`.
///
/// `grad_outputs` holds one gradient per output (`None`: ones, which needs single-element
/// outputs). The result has one entry per input: `None` when the outputs do not depend on it.
/// With `create_graph`, the gradients are themselves differentiable.
///
/// ```
/// use ferrograd_autograd::{grad, Var};
/// use ferrograd_tensor::Tensor;
/// let x = Var::leaf(Tensor::from_vec(vec![2.0f64], &[1]));
/// let y = (&x * &x * &x).sum(); // x³
/// let dy = grad(&[y], &[x.clone()], None, true)[0].clone().unwrap(); // 3x² = 12
/// let d2y = grad(&[dy.sum()], &[x], None, false)[0].clone().unwrap(); // 6x = 12
/// assert_eq!(d2y.to_vec(), vec![12.0]);
/// ```
#[track_caller]
pub fn grad<F: Float>(
    outputs: &[Var<F>],
    inputs: &[Var<F>],
    grad_outputs: Option<&[Var<F>]>,
    create_graph: bool,
) -> Vec<Option<Var<F>>> {
    grad_with(outputs, inputs, grad_outputs, BackwardOptions { retain_graph: create_graph, create_graph })
}

/// [`grad`] with full [`BackwardOptions`] (e.g. `retain_graph` to call it again on the same graph).
#[track_caller]
pub fn grad_with<F: Float>(
    outputs: &[Var<F>],
    inputs: &[Var<F>],
    grad_outputs: Option<&[Var<F>]>,
    opts: BackwardOptions,
) -> Vec<Option<Var<F>>> {
    let seeds: Vec<Var<F>> = match grad_outputs {
        Some(g) => {
            assert_eq!(g.len(), outputs.len(), "grad: {} grad_outputs for {} outputs", g.len(), outputs.len());
            for (o, go) in outputs.iter().zip(g) {
                assert_eq!(
                    o.shape(),
                    go.shape(),
                    "grad: grad_output of shape {:?} for an output of shape {:?}",
                    go.shape(),
                    o.shape()
                );
            }
            g.to_vec()
        }
        None => {
            // A loop, not `map`: a panic inside a closure would lose the caller's location.
            let mut seeds = Vec::with_capacity(outputs.len());
            for o in outputs {
                assert_eq!(o.numel(), 1, "grad: output of shape {:?} needs a grad_output", o.shape());
                seeds.push(Var::constant(Tensor::full(o.shape(), F::one())));
            }
            seeds
        }
    };
    let ids: Vec<Option<NodeId>> = inputs.iter().map(|v| v.id()).collect();
    let wanted: Vec<NodeId> = ids.iter().flatten().copied().collect();
    let mut map = run(outputs, seeds, Targets::These(&wanted), opts, None);
    ids.iter().map(|id| id.and_then(|id| map.remove(&id))).collect()
}

/// The callback of [`Var::backward_with_ready`].
type OnReady<'a, F> = dyn FnMut(NodeId, &Var<F>) + 'a;

enum Targets<'a> {
    AllLeaves,
    These(&'a [NodeId]),
}

struct Entry<F: Float> {
    node: Arc<Node<F>>,
    /// Consumers of this node inside the graph that have not yet sent their gradient.
    pending: usize,
    needed: bool,
}

#[track_caller]
fn run<F: Float>(
    outputs: &[Var<F>],
    seeds: Vec<Var<F>>,
    targets: Targets<'_>,
    opts: BackwardOptions,
    mut on_ready: Option<&mut OnReady<'_, F>>,
) -> HashMap<NodeId, Var<F>> {
    let roots: Vec<(Arc<Node<F>>, Var<F>)> =
        outputs.iter().zip(seeds).filter_map(|(o, s)| o.node.clone().map(|n| (n, s))).collect();
    assert!(
        !roots.is_empty(),
        "backward: no output requires grad (was it computed under no_grad, or from constants only?)"
    );
    let is_target = |n: &Node<F>| match targets {
        Targets::AllLeaves => n.is_leaf,
        Targets::These(ids) => ids.contains(&n.id),
    };

    // Discover the graph and count each node's consumers; `order` lists nodes so that every
    // node comes after all of its consumers (reverse post-order of a DFS from the roots).
    let mut entries: HashMap<NodeId, Entry<F>> = HashMap::default();
    let mut post: Vec<NodeId> = Vec::new();
    let mut stack: Vec<(Arc<Node<F>>, usize)> = Vec::new();
    for (root, _) in &roots {
        if entries.contains_key(&root.id) {
            continue;
        }
        entries.insert(root.id, Entry { node: root.clone(), pending: 0, needed: false });
        stack.push((root.clone(), 0));
        while let Some((node, i)) = stack.pop() {
            if i < node.inputs.len() {
                stack.push((node.clone(), i + 1));
                if let Some(input) = &node.inputs[i] {
                    match entries.get_mut(&input.id) {
                        Some(e) => e.pending += 1,
                        None => {
                            entries.insert(input.id, Entry { node: input.clone(), pending: 1, needed: false });
                            stack.push((input.clone(), 0));
                        }
                    }
                }
            } else {
                post.push(node.id);
            }
        }
    }
    // A node is needed when it is a target or feeds one; post-order visits inputs first.
    for id in &post {
        let node = entries[id].node.clone();
        let needed = is_target(&node) || node.inputs.iter().flatten().any(|i| entries[&i.id].needed);
        entries.get_mut(id).expect("discovered").needed = needed;
    }

    let mut grads: HashMap<NodeId, Var<F>> = HashMap::default();
    for (root, seed) in roots {
        accumulate(&mut grads, root.id, seed);
    }
    let mut result: HashMap<NodeId, Var<F>> = HashMap::default();
    // Gradients of the outputs of multi-output ops, gathered from their pieces, by op node.
    let mut piece_grads: HashMap<NodeId, Vec<Option<Var<F>>>> = HashMap::default();
    // Only roots have no pending consumers at the start; any other node becomes ready when its
    // last consumer has run, whether or not that consumer sent it a gradient.
    let mut ready: Vec<Arc<Node<F>>> =
        post.iter().rev().map(|id| &entries[id]).filter(|e| e.pending == 0).map(|e| e.node.clone()).collect();
    while let Some(node) = ready.pop() {
        let needs: SmallVec<[bool; 4]> =
            node.inputs.iter().map(|i| i.as_ref().is_some_and(|i| entries[&i.id].needed)).collect();
        let mut input_grads = SmallVec::<[Option<Var<F>>; 2]>::new();
        let needed = entries[&node.id].needed;
        if let Role::Multi { .. } = node.role {
            if let (Some(gs), true) = (piece_grads.remove(&node.id), needed) {
                if needs.iter().any(|&n| n) {
                    input_grads = call_backward(&node, &needs, Incoming::Many(&gs), opts);
                }
            }
        } else if let (Some(mut g), true) = (grads.remove(&node.id), needed) {
            for hook in node.hooks.lock().expect("hook list poisoned").iter() {
                if let Some(replaced) = hook(&g) {
                    g = replaced;
                }
            }
            if is_target(&node) {
                // Final: a node is processed once, after all of its consumers.
                if let Some(f) = on_ready.as_mut() {
                    f(node.id, &g);
                }
                result.insert(node.id, g.clone());
            }
            match node.role {
                Role::Piece { index } => {
                    // Handed to the op node, which runs once every piece has reported.
                    let op = node.inputs[0].as_ref().expect("a piece has its op as input");
                    if needs[0] {
                        let Role::Multi { outputs } = op.role else {
                            unreachable!("a piece's input is a multi-output op")
                        };
                        piece_grads.entry(op.id).or_insert_with(|| vec![None; outputs])[index] = Some(g);
                    }
                }
                _ if !node.is_leaf && needs.iter().any(|&n| n) => {
                    input_grads = call_backward(&node, &needs, Incoming::One(&g), opts);
                }
                _ => {}
            }
        }
        input_grads.resize(node.inputs.len(), None);
        for (i, (input, ig)) in node.inputs.iter().zip(input_grads).enumerate() {
            let Some(input) = input else { continue };
            if let (Some(ig), true) = (ig, needs[i]) {
                assert!(
                    ig.shape() == input.shape.as_slice(),
                    "backward of `{}` (created at {}): the gradient of input {i} has shape {:?}, expected {:?}",
                    node.op,
                    node.location,
                    ig.shape(),
                    input.shape.as_slice()
                );
                if anomaly_enabled() {
                    check_backward(node.op, node.location, i, ig.data());
                }
                accumulate(&mut grads, input.id, ig);
            }
            let e = entries.get_mut(&input.id).expect("discovered");
            e.pending -= 1;
            if e.pending == 0 {
                ready.push(e.node.clone());
            }
        }
    }
    // The first pass's buffers were mapped with malloc's defaults; from here on freed ones stay
    // in the heap for the next step (see `ferrograd_tensor::set_buffer_caching`).
    ferrograd_tensor::backward_pass_finished();
    result
}

/// The gradient a backward closure receives: of the op's one output, or of each output.
enum Incoming<'a, F: Float> {
    One(&'a Var<F>),
    Many(&'a [Option<Var<F>>]),
}

fn call_backward<F: Float>(
    node: &Arc<Node<F>>,
    needs: &[bool],
    g: Incoming<'_, F>,
    opts: BackwardOptions,
) -> InputGrads<F> {
    let mut slot = node.backward.lock().expect("backward closure poisoned");
    let Some(f) = slot.as_ref() else {
        panic!(
            "backward: the graph through op `{}` (created at {}) was already freed by an earlier backward; \
             pass retain_graph: true to the first one",
            node.op, node.location
        );
    };
    let ctx = BackwardCtx { needs, create_graph: opts.create_graph, node };
    let call = || match (f, &g) {
        (Backward::One(f), Incoming::One(g)) => f(&ctx, g),
        (Backward::Many(f), Incoming::Many(gs)) => f(&ctx, gs),
        _ => unreachable!("op `{}`: a gradient of the wrong arity for its backward", node.op),
    };
    let out = suspend_anomaly(|| if opts.create_graph { enable_grad(call) } else { no_grad(call) });
    if !(opts.retain_graph || opts.create_graph) {
        // Drop the closure and with it every value the op saved for backward.
        slot.take();
    }
    out
}

fn accumulate<F: Float>(grads: &mut HashMap<NodeId, Var<F>>, id: NodeId, g: Var<F>) {
    match grads.remove(&id) {
        Some(prev) => {
            grads.insert(id, &prev + &g);
        }
        None => {
            grads.insert(id, g);
        }
    }
}
