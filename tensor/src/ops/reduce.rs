//! Reductions over dims: sum, prod, max, min (with their indices), mean, var, std, logsumexp,
//! and `sum_to`, the inverse of broadcasting that autograd uses for gradients of broadcast ops.
//!
//! One engine serves them all. A `Plan` splits the input's dims into kept dims (which index the
//! output, in their original order) and reduced dims, by reordering shape and strides only, then
//! picks one of two traversals:
//! - *blocks*, when the input's innermost dim in memory is reduced: each output element folds its
//!   own block of inputs; unit-stride runs are folded as plain slices with eight independent
//!   accumulators, which vectorises;
//! - *accumulate*, when the innermost dim is kept (say the batch dim of a contiguous tensor, as
//!   in `sum_to` for a bias gradient): the input is walked slab by slab (row by row) and each
//!   slab is combined elementwise into the output buffer, so the inner loop runs over input and
//!   output with unit stride.
//!
//! Both split long reductions in halves and merge the halves' results (a pairwise sum), so f32
//! rounding error grows with the log of the reduced length rather than the length.
//!
//! `dims` may hold negative dims (counting from the end); a repeated dim panics. An empty `dims`
//! reduces nothing: every element is its own group of one, so `t.sum_dims(&[], false)` is a
//! contiguous copy of `t` with the same shape. PyTorch reads an empty dim list as "all dims"; we
//! don't, so that `sum_to` and autograd never need a special case. Reducing every dim without
//! `keepdim` gives a 0-d tensor.

use std::ops::Range;

use smallvec::SmallVec;

use crate::element::{Float, Num};
use crate::iter::{collapse, for_each_offset, for_each_run};
use crate::layout::{contiguous_strides, Layout, Shape, Strides};
use crate::ops::{elementwise_min_per_thread, parallel_collect, parallel_for_each, threads_for};
use crate::tensor::Tensor;

/// Elements a leaf of the pairwise slice fold takes in sequence (eight accumulators of 128).
const LEAF: usize = 1024;
/// Slabs the accumulate traversal folds in sequence before halving: enough to amortise the extra
/// output-sized buffer, few enough to keep rounding near a pairwise sum's.
const SLABS: usize = 32;

/// Which input elements fold into which output element, and in what order to visit them.
#[derive(Clone)]
struct Plan {
    /// The result's shape (kept dims, plus size-1 reduced dims under `keepdim`).
    out_shape: Shape,
    /// The reduced dims, for error messages.
    dims: SmallVec<[usize; 6]>,
    /// Input elements per output element.
    n_red: usize,
    /// Output elements.
    n_out: usize,
    offset: usize,
    kept_shape: Shape,
    kept_strides: Strides,
    /// Reduced dims, largest stride first and merged where contiguous, so runs are long.
    red_shape: Shape,
    red_strides: Strides,
    /// Whether the innermost dim in memory is reduced (fold per output) or kept (accumulate slabs).
    by_blocks: bool,
}

impl Plan {
    /// Resolves `dims` against `layout` and plans the reduction, panicking with `op` on a bad or
    /// repeated dim.
    #[track_caller]
    fn new(layout: &Layout, op: &str, dims: &[isize], keepdim: bool) -> Plan {
        let rank = layout.rank();
        let mut mask: SmallVec<[bool; 6]> = smallvec::smallvec![false; rank];
        let mut seen: SmallVec<[usize; 6]> = SmallVec::new();
        for &d in dims {
            let r = layout.dim(op, d);
            if seen.contains(&r) {
                panic!("{op}: dim {d} is repeated in dims {dims:?} for a tensor of shape {:?}", layout.shape());
            }
            seen.push(r);
            // A 0-d tensor accepts dim 0 (or -1) like PyTorch, and has nothing to reduce.
            if rank > 0 {
                mask[r] = true;
            }
        }
        let out_shape = layout
            .shape()
            .iter()
            .zip(&mask)
            .filter_map(|(&size, &reduced)| match (reduced, keepdim) {
                (false, _) => Some(size),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Plan::from_mask(layout, &mask, out_shape)
    }

    /// Plans a reduction over every dim into a 0-d result.
    fn full(layout: &Layout) -> Plan {
        let mask: SmallVec<[bool; 6]> = smallvec::smallvec![true; layout.rank()];
        Plan::from_mask(layout, &mask, Shape::new())
    }

    /// Plans the reduction of the dims where `mask` is true; `out_shape` must hold exactly the
    /// kept elements.
    fn from_mask(layout: &Layout, mask: &[bool], out_shape: Shape) -> Plan {
        let (shape, strides) = (layout.shape(), layout.strides());
        let (mut kept_shape, mut kept_strides) = (Shape::new(), Strides::new());
        let mut red: SmallVec<[(usize, isize); 6]> = SmallVec::new();
        for d in 0..shape.len() {
            if mask[d] {
                red.push((shape[d], strides[d]));
            } else {
                kept_shape.push(shape[d]);
                kept_strides.push(strides[d]);
            }
        }
        red.sort_by_key(|&(_, s)| std::cmp::Reverse(s.unsigned_abs()));
        let (red_shape, [red_strides]) = collapse(
            &red.iter().map(|&(size, _)| size).collect::<Shape>(),
            [&red.iter().map(|&(_, s)| s).collect::<Strides>()],
        );
        let innermost =
            (0..shape.len()).filter(|&d| shape[d] > 1 && strides[d] != 0).min_by_key(|&d| strides[d].unsigned_abs());
        let n_out = kept_shape.iter().product();
        debug_assert_eq!(n_out, out_shape.iter().product::<usize>());
        Plan {
            out_shape,
            dims: (0..shape.len()).filter(|&d| mask[d]).collect(),
            n_red: red.iter().map(|&(size, _)| size).product(),
            n_out,
            offset: layout.offset(),
            kept_shape,
            kept_strides,
            red_shape,
            red_strides,
            by_blocks: innermost.is_none_or(|d| mask[d]),
        }
    }

    /// Panics, naming `op`, if there is nothing to reduce (max and min have no identity).
    #[track_caller]
    fn check_nonempty(&self, op: &str, shape: &[usize]) {
        if self.n_red == 0 {
            panic!("{op}: cannot reduce zero elements (tensor of shape {shape:?}, dims {:?})", self.dims.as_slice());
        }
    }

    /// Calls `kernel` on each output element's block of inputs, in output order.
    fn for_each_block<E: Copy, O>(&self, data: &[E], mut kernel: impl FnMut(Block<'_, E>) -> O) -> Vec<O> {
        let mut out = Vec::with_capacity(self.n_out);
        for_each_offset(&self.kept_shape, [&self.kept_strides], [self.offset], |[base]| {
            out.push(kernel(Block { data, base, shape: &self.red_shape, strides: &self.red_strides }))
        });
        out
    }

    /// `kernel` of each output element's block of inputs, in output order, with large
    /// reductions split over threads by output elements: each output element comes from one
    /// call of `kernel` whatever the split, so a pure `kernel` gives the same bits on any thread
    /// count. Every by-blocks reduction goes through it: the variance, logsumexp and argmax ones
    /// ran on one thread before (BatchNorm's mean and variance over `[0, 2, 3]` of a
    /// `[64, 16, 24, 24]` activation: 282 µs on 2 threads then, 120 µs now, 276 µs on 1).
    fn map_blocks<E: Copy + Sync, O: Send>(&self, data: &[E], kernel: impl Fn(Block<'_, E>) -> O + Sync) -> Vec<O> {
        let min_outputs = elementwise_min_per_thread().div_ceil(self.n_red.max(1));
        if threads_for(self.n_out, min_outputs) > 1 {
            return parallel_collect(self.n_out, min_outputs, &|outs: Range<usize>| {
                let mut acc = Vec::with_capacity(outs.len());
                self.for_each_block_in(data, outs, |b| acc.push(kernel(b)));
                acc.into_iter()
            });
        }
        self.for_each_block(data, kernel)
    }

    /// Calls `kernel` on the blocks of output elements `outs`, in output order.
    fn for_each_block_in<E: Copy>(&self, data: &[E], outs: Range<usize>, mut kernel: impl FnMut(Block<'_, E>)) {
        // The multi-index of the first output element, innermost kept dim last.
        let mut index: SmallVec<[usize; 6]> = smallvec::smallvec![0; self.kept_shape.len()];
        let mut rest = outs.start;
        for (i, &size) in index.iter_mut().zip(&self.kept_shape).rev() {
            *i = rest % size;
            rest /= size;
        }
        let mut base =
            self.offset as isize + index.iter().zip(&self.kept_strides).map(|(&i, &s)| i as isize * s).sum::<isize>();
        for _ in outs {
            kernel(Block { data, base: base as usize, shape: &self.red_shape, strides: &self.red_strides });
            // Step the multi-index like an odometer.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                base += self.kept_strides[d];
                if index[d] < self.kept_shape[d] {
                    break;
                }
                base -= index[d] as isize * self.kept_strides[d];
                index[d] = 0;
            }
        }
    }

    /// Sets `out[o] = f(out[o], x, aux[o])` for every input element `x` of output element `o`,
    /// walking the input slab by slab (reduced dims outer, kept dims inner). `out` must hold
    /// `init`, the identity of `f` and `merge`.
    ///
    /// While more than `SLABS` slabs (and more than `LEAF` elements) remain, the outermost reduced
    /// dim is halved and the halves' results merged, so a long reduction rounds like a pairwise
    /// sum, not a running one. The two halves of a large one run on two threads: the halving
    /// depends on the shape alone, so the result is the same bits on any thread count (a linear
    /// layer's bias gradient over the transformer's 2048 tokens, `[2048, 512]` summed over
    /// rows, took 1.7% of its step on one thread while the other waited).
    fn accumulate<E: Copy + Sync, A: Copy + Send + Sync, B: Copy + Sync>(
        &self,
        data: &[E],
        out: &mut [A],
        aux: &[B],
        init: A,
        f: &(impl Fn(A, E, B) -> A + Sync),
        merge: &(impl Fn(A, A) -> A + Sync),
    ) {
        if self.n_red <= SLABS.max(LEAF / self.n_out.max(1)) {
            return self.accumulate_slabs(data, out, aux, f);
        }
        let d = self.red_shape.iter().position(|&size| size > 1).expect("more than one slab");
        let (size, half) = (self.red_shape[d], self.red_shape[d] / 2);
        let (mut lo, mut hi) = (self.clone(), self.clone());
        lo.red_shape[d] = half;
        lo.n_red = self.n_red / size * half;
        hi.red_shape[d] = size - half;
        hi.n_red = self.n_red - lo.n_red;
        hi.offset = (self.offset as isize + half as isize * self.red_strides[d]) as usize;
        let mut rest = vec![init; self.n_out];
        if threads_for(self.n_red.saturating_mul(self.n_out), elementwise_min_per_thread()) > 1 {
            // Inside a part, the halves' own halves run on its thread (nested regions do).
            let halves = vec![(lo, out as &mut [A]), (hi, &mut rest[..])];
            parallel_for_each(halves, &|(plan, dst): (Plan, &mut [A])| plan.accumulate(data, dst, aux, init, f, merge));
        } else {
            lo.accumulate(data, out, aux, init, f, merge);
            hi.accumulate(data, &mut rest, aux, init, f, merge);
        }
        out.iter_mut().zip(rest).for_each(|(o, r)| *o = merge(*o, r));
    }

    /// The sequential core of [`Plan::accumulate`].
    fn accumulate_slabs<E: Copy, A: Copy, B: Copy>(
        &self,
        data: &[E],
        out: &mut [A],
        aux: &[B],
        f: impl Fn(A, E, B) -> A,
    ) {
        let shape: Shape = self.red_shape.iter().chain(&self.kept_shape).copied().collect();
        let in_strides: Strides = self.red_strides.iter().chain(&self.kept_strides).copied().collect();
        let out_strides: Strides =
            std::iter::repeat_n(0, self.red_shape.len()).chain(contiguous_strides(&self.kept_shape)).collect();
        for_each_run(&shape, [&in_strides, &out_strides], [self.offset, 0], |[bi, bo], len, [si, so]| {
            // The last kept dim of size > 1 is innermost and dense in the output.
            debug_assert_eq!(so, 1);
            let (out, aux) = (&mut out[bo..bo + len], &aux[bo..bo + len]);
            if si == 1 {
                for ((o, &x), &a) in out.iter_mut().zip(&data[bi..bi + len]).zip(aux) {
                    *o = f(*o, x, a);
                }
            } else {
                let mut i = bi as isize;
                for (o, &a) in out.iter_mut().zip(aux) {
                    *o = f(*o, data[i as usize], a);
                    i += si;
                }
            }
        });
    }

    /// One accumulator per output element: `f` folds in an element, `merge` joins two partial
    /// accumulators, and `init` is the identity of both.
    ///
    /// With blocks, large reductions are split over threads by output elements: each output
    /// element folds its own block on one thread, in the same order whatever the split, so the
    /// result is bit-identical at any thread count (a convolution's bias gradient, 6 sums of 50k
    /// elements at LeNet's batch 64, took 4% of a 2-thread step on one thread).
    fn fold<E: Copy + Sync, A: Copy + Send + Sync>(
        &self,
        data: &[E],
        init: A,
        f: impl Fn(A, E) -> A + Sync,
        merge: impl Fn(A, A) -> A + Sync,
    ) -> Vec<A> {
        if self.by_blocks {
            self.map_blocks(data, |b| b.fold(init, &f, &merge))
        } else {
            let mut out = vec![init; self.n_out];
            self.accumulate(data, &mut out, &vec![(); self.n_out], init, &|a, x, ()| f(a, x), &merge);
            out
        }
    }
}

/// The inputs of one output element: a base offset and the collapsed reduced dims.
struct Block<'a, E> {
    data: &'a [E],
    base: usize,
    shape: &'a [usize],
    strides: &'a [isize],
}

impl<E: Copy> Block<'_, E> {
    /// Folds the block; see [`Plan::fold`] for the roles of `init`, `f` and `merge`.
    #[inline]
    fn fold<A: Copy>(&self, init: A, f: impl Fn(A, E) -> A, merge: impl Fn(A, A) -> A) -> A {
        let run = |acc: A, base: usize, len: usize, stride: isize| -> A {
            if len == 0 {
                acc
            } else if stride == 1 {
                merge(acc, fold_slice(&self.data[base..base + len], init, &f, &merge))
            } else {
                merge(acc, fold_strided(self.data, base, len, stride, init, &f, &merge))
            }
        };
        match (self.shape, self.strides) {
            ([], []) => f(init, self.data[self.base]),
            (&[len], &[stride]) => run(init, self.base, len, stride),
            _ => {
                let mut acc = init;
                for_each_run(self.shape, [self.strides], [self.base], |[b], len, [s]| acc = run(acc, b, len, s));
                acc
            }
        }
    }
}

/// Folds a slice pairwise down to blocks of `LEAF` elements, so rounding error grows with the
/// log of the length rather than the length.
fn fold_slice<E: Copy, A: Copy>(xs: &[E], init: A, f: &impl Fn(A, E) -> A, merge: &impl Fn(A, A) -> A) -> A {
    if xs.len() <= LEAF {
        return fold8(xs, init, f, merge);
    }
    let (left, right) = xs.split_at(xs.len() / 2);
    merge(fold_slice(left, init, f, merge), fold_slice(right, init, f, merge))
}

/// Folds a slice with eight independent accumulators: the compiler keeps them in vector
/// registers, and each sees an eighth of the elements, which also shrinks rounding error.
#[inline(always)]
fn fold8<E: Copy, A: Copy>(xs: &[E], init: A, f: impl Fn(A, E) -> A, merge: impl Fn(A, A) -> A) -> A {
    if xs.len() < 8 {
        return xs.iter().fold(init, |a, &x| f(a, x));
    }
    let mut acc = [init; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &x| f(a, x));
    let left = merge(merge(acc[0], acc[4]), merge(acc[2], acc[6]));
    let right = merge(merge(acc[1], acc[5]), merge(acc[3], acc[7]));
    merge(merge(left, right), tail)
}

/// [`fold_slice`] over `len` elements `stride` apart from `base`: pairwise halves, then eight
/// independent accumulators, which here buy instruction-level parallelism rather than SIMD.
fn fold_strided<E: Copy, A: Copy>(
    data: &[E],
    base: usize,
    len: usize,
    stride: isize,
    init: A,
    f: &impl Fn(A, E) -> A,
    merge: &impl Fn(A, A) -> A,
) -> A {
    let at = |k: usize| data[(base as isize + k as isize * stride) as usize];
    if len > LEAF {
        let half = len / 2;
        let right = (base as isize + half as isize * stride) as usize;
        return merge(
            fold_strided(data, base, half, stride, init, f, merge),
            fold_strided(data, right, len - half, stride, init, f, merge),
        );
    }
    let mut acc = [init; 8];
    for c in 0..len / 8 {
        for (i, a) in acc.iter_mut().enumerate() {
            *a = f(*a, at(8 * c + i));
        }
    }
    let tail = (len / 8 * 8..len).fold(init, |a, k| f(a, at(k)));
    let left = merge(merge(acc[0], acc[4]), merge(acc[2], acc[6]));
    let right = merge(merge(acc[1], acc[5]), merge(acc[3], acc[7]));
    merge(merge(left, right), tail)
}

/// The identity of `max`: -inf for floats, the type's minimum for integers (`as` saturates).
fn lowest<E: Num>() -> E {
    E::from_f64(f64::NEG_INFINITY)
}

/// The identity of `min`: +inf for floats, the type's maximum for integers.
fn highest<E: Num>() -> E {
    E::from_f64(f64::INFINITY)
}

impl<E: Num> Tensor<E> {
    /// Folds with a monoid (`f` associative and commutative, `init` its identity).
    fn monoid(&self, plan: Plan, init: E, f: impl Fn(E, E) -> E + Copy + Sync) -> Tensor<E> {
        if plan.n_red == 1 {
            // Every group holds one element, whose fold with the identity is itself.
            return self.contiguous().reshape(&plan.out_shape);
        }
        Tensor::from_vec(plan.fold(&self.storage[..], init, f, f), &plan.out_shape)
    }

    /// The sum of all elements, as a 0-d tensor.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// assert_eq!(x.sum().shape(), &[] as &[usize]);
    /// assert_eq!(x.sum().item(), 10.0);
    /// ```
    pub fn sum(&self) -> Tensor<E> {
        self.monoid(Plan::full(&self.layout), E::zero(), |a, x| a + x)
    }

    /// The sum over `dims` (negative counts from the end; empty reduces nothing), keeping them
    /// as size 1 if `keepdim`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1, 2, 3, 4, 5, 6], &[2, 3]);
    /// assert_eq!(x.sum_dims(&[0], false).to_vec(), vec![5, 7, 9]);
    /// assert_eq!(x.sum_dims(&[-1], true).shape(), &[2, 1]);
    /// assert_eq!(x.sum_dims(&[-1], true).to_vec(), vec![6, 15]);
    /// ```
    #[track_caller]
    pub fn sum_dims(&self, dims: &[isize], keepdim: bool) -> Tensor<E> {
        self.monoid(Plan::new(&self.layout, "sum_dims", dims, keepdim), E::zero(), |a, x| a + x)
    }

    /// The product of all elements, as a 0-d tensor (1 for an empty tensor).
    pub fn prod(&self) -> Tensor<E> {
        self.monoid(Plan::full(&self.layout), E::one(), |a, x| a * x)
    }

    /// The product over `dims` (empty reduces nothing), keeping them as size 1 if `keepdim`.
    #[track_caller]
    pub fn prod_dims(&self, dims: &[isize], keepdim: bool) -> Tensor<E> {
        self.monoid(Plan::new(&self.layout, "prod_dims", dims, keepdim), E::one(), |a, x| a * x)
    }

    /// The largest element as a 0-d tensor; NaN if any element is NaN, like PyTorch.
    ///
    /// # Panics
    /// If the tensor is empty.
    #[track_caller]
    pub fn max(&self) -> Tensor<E> {
        let plan = Plan::full(&self.layout);
        plan.check_nonempty("max", self.shape());
        self.monoid(plan, lowest(), E::max_nan)
    }

    /// The largest element over `dims` (empty reduces nothing), NaN-propagating.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 5.0, 3.0, f64::NAN, 2.0, 0.0], &[2, 3]);
    /// let m = x.max_dims(&[1], false).to_vec();
    /// assert_eq!(m[0], 5.0);
    /// assert!(m[1].is_nan());
    /// ```
    ///
    /// # Panics
    /// If a reduced dim has size 0.
    #[track_caller]
    pub fn max_dims(&self, dims: &[isize], keepdim: bool) -> Tensor<E> {
        let plan = Plan::new(&self.layout, "max_dims", dims, keepdim);
        plan.check_nonempty("max_dims", self.shape());
        self.monoid(plan, lowest(), E::max_nan)
    }

    /// The smallest element as a 0-d tensor; NaN if any element is NaN.
    ///
    /// # Panics
    /// If the tensor is empty.
    #[track_caller]
    pub fn min(&self) -> Tensor<E> {
        let plan = Plan::full(&self.layout);
        plan.check_nonempty("min", self.shape());
        self.monoid(plan, highest(), E::min_nan)
    }

    /// The smallest element over `dims` (empty reduces nothing), NaN-propagating.
    ///
    /// # Panics
    /// If a reduced dim has size 0.
    #[track_caller]
    pub fn min_dims(&self, dims: &[isize], keepdim: bool) -> Tensor<E> {
        let plan = Plan::new(&self.layout, "min_dims", dims, keepdim);
        plan.check_nonempty("min_dims", self.shape());
        self.monoid(plan, highest(), E::min_nan)
    }

    /// The largest values along `dim` and their indices (PyTorch's `max(dim)`): the first
    /// occurrence on ties, and the first NaN if there is one.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![3, 7, 7, 1, 0, 2], &[2, 3]);
    /// let (values, indices) = x.max_dim(1, false);
    /// assert_eq!(values.to_vec(), vec![7, 2]);
    /// assert_eq!(indices.to_vec(), vec![1, 2]);
    /// ```
    ///
    /// # Panics
    /// If `dim` is out of range or has size 0.
    #[track_caller]
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> (Tensor<E>, Tensor<i64>) {
        self.arg_extreme::<true>("max_dim", dim, keepdim)
    }

    /// The smallest values along `dim` and their indices: the first occurrence on ties, and the
    /// first NaN if there is one.
    ///
    /// # Panics
    /// If `dim` is out of range or has size 0.
    #[track_caller]
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> (Tensor<E>, Tensor<i64>) {
        self.arg_extreme::<false>("min_dim", dim, keepdim)
    }

    /// The index of the largest value along `dim` (first on ties, first NaN if any).
    #[track_caller]
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Tensor<i64> {
        self.arg_extreme::<true>("argmax", dim, keepdim).1
    }

    /// The index of the smallest value along `dim` (first on ties, first NaN if any).
    #[track_caller]
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Tensor<i64> {
        self.arg_extreme::<false>("argmin", dim, keepdim).1
    }

    #[track_caller]
    fn arg_extreme<const MAX: bool>(&self, op: &str, dim: isize, keepdim: bool) -> (Tensor<E>, Tensor<i64>) {
        let plan = Plan::new(&self.layout, op, &[dim], keepdim);
        plan.check_nonempty(op, self.shape());
        let (n, stride) = (plan.n_red, plan.red_strides.first().copied().unwrap_or(0));
        let data = &self.storage[..];
        let (values, indices) = if plan.by_blocks {
            // The extreme value by the vectorised fold, then the first element equal to it.
            let init = if MAX { lowest() } else { highest() };
            let step = |a: E, x: E| if MAX { a.max_nan(x) } else { a.min_nan(x) };
            plan.map_blocks(data, |b| {
                let best = b.fold(init, step, step);
                let at = |k: usize| data[(b.base as isize + k as isize * stride) as usize];
                let k = (0..n)
                    .position(|k| at(k) == best || (best.is_nan_val() && at(k).is_nan_val()))
                    .expect("a non-empty group holds its extreme");
                (at(k), k as i64)
            })
            .into_iter()
            .unzip()
        } else {
            // Strictly better keeps the first occurrence on ties; once a NaN is held nothing beats it.
            let better = |x: E, cur: E| !cur.is_nan_val() && (x.is_nan_val() || if MAX { x > cur } else { x < cur });
            let (mut values, mut indices) = (vec![E::zero(); plan.n_out], vec![0i64; plan.n_out]);
            let out_strides = contiguous_strides(&plan.kept_shape);
            let strides = [&plan.kept_strides[..], &out_strides[..]];
            for_each_run(&plan.kept_shape, strides, [plan.offset, 0], |[bi, bo], len, [si, so]| {
                debug_assert_eq!(so, 1);
                let (values, indices) = (&mut values[bo..bo + len], &mut indices[bo..bo + len]);
                let mut row = bi as isize;
                for (j, v) in values.iter_mut().enumerate() {
                    *v = data[(row + j as isize * si) as usize];
                }
                for k in 1..n {
                    row += stride;
                    let mut i = row;
                    for (v, ix) in values.iter_mut().zip(indices.iter_mut()) {
                        let x = data[i as usize];
                        // Selects rather than a branch: updates are rare but unpredictable.
                        let take = better(x, *v);
                        *v = if take { x } else { *v };
                        *ix = if take { k as i64 } else { *ix };
                        i += si;
                    }
                }
            });
            (values, indices)
        };
        (Tensor::from_vec(values, &plan.out_shape), Tensor::from_vec(indices, &plan.out_shape))
    }

    /// Sums `self` down to `shape`: the inverse of broadcasting `shape` up to `self.shape()`.
    ///
    /// Leading dims that `shape` lacks are summed away, and so are dims where `shape` has 1 and
    /// `self` does not. Autograd uses this to bring the gradient of a broadcast op back to its
    /// input's shape. Returns `self` (sharing storage) when the shapes are already equal.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let g = Tensor::<f32>::ones(&[4, 2, 3]);
    /// assert_eq!(g.sum_to(&[3]).to_vec(), vec![8.0, 8.0, 8.0]);
    /// assert_eq!(g.sum_to(&[2, 1]).to_vec(), vec![12.0, 12.0]);
    /// ```
    ///
    /// # Panics
    /// If `shape` does not broadcast to `self.shape()`; the message names both shapes.
    #[track_caller]
    pub fn sum_to(&self, shape: &[usize]) -> Tensor<E> {
        if self.shape() == shape {
            return self.clone();
        }
        if Layout::contiguous(shape).broadcast_strides(self.shape()).is_none() {
            panic!("sum_to: shape {:?} cannot be summed to {shape:?}, which does not broadcast to it", self.shape());
        }
        let lead = self.rank() - shape.len();
        let mask: SmallVec<[bool; 6]> =
            (0..self.rank()).map(|d| d < lead || (shape[d - lead] == 1 && self.shape()[d] != 1)).collect();
        self.monoid(Plan::from_mask(&self.layout, &mask, Shape::from_slice(shape)), E::zero(), |a, x| a + x)
    }
}

impl<E: Float> Tensor<E> {
    fn mean_of(&self, plan: Plan) -> Tensor<E> {
        let n = E::from_f64(plan.n_red as f64);
        let mut sums = plan.fold(&self.storage[..], E::zero(), |a, x| a + x, |a, b| a + b);
        sums.iter_mut().for_each(|s| *s /= n);
        Tensor::from_vec(sums, &plan.out_shape)
    }

    /// The mean of all elements, as a 0-d tensor (NaN for an empty tensor).
    pub fn mean(&self) -> Tensor<E> {
        self.mean_of(Plan::full(&self.layout))
    }

    /// The mean over `dims` (empty reduces nothing), keeping them as size 1 if `keepdim`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// assert_eq!(x.mean_dims(&[1], false).to_vec(), vec![2.0, 5.0]);
    /// ```
    #[track_caller]
    pub fn mean_dims(&self, dims: &[isize], keepdim: bool) -> Tensor<E> {
        self.mean_of(Plan::new(&self.layout, "mean_dims", dims, keepdim))
    }

    /// Variances: the sum of squared deviations from the mean (two passes, so no catastrophic
    /// cancellation) divided by `max(n - correction, 0)`.
    fn var_of(&self, plan: &Plan, correction: usize) -> Vec<E> {
        let n = E::from_f64(plan.n_red as f64);
        let divisor = E::from_f64(plan.n_red.saturating_sub(correction) as f64);
        let data = &self.storage[..];
        let add = |a: E, b: E| a + b;
        let mut m2 = if plan.by_blocks {
            plan.map_blocks(data, |b| {
                let mean = b.fold(E::zero(), add, add) / n;
                b.fold(E::zero(), |a, x| a + (x - mean) * (x - mean), add)
            })
        } else {
            let mut means = plan.fold(data, E::zero(), add, add);
            means.iter_mut().for_each(|s| *s /= n);
            let mut m2 = vec![E::zero(); plan.n_out];
            plan.accumulate(data, &mut m2, &means, E::zero(), &|a, x, mean| a + (x - mean) * (x - mean), &add);
            m2
        };
        m2.iter_mut().for_each(|v| *v /= divisor);
        m2
    }

    /// The variance of all elements as a 0-d tensor: squared deviations from the mean summed
    /// and divided by `n - correction` (`correction = 1` is PyTorch's default, the unbiased
    /// estimate; `correction >= n` divides by 0, giving inf or NaN).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4]);
    /// assert_eq!(x.var(1).item(), 5.0 / 3.0);
    /// assert_eq!(x.var(0).item(), 1.25);
    /// ```
    pub fn var(&self, correction: usize) -> Tensor<E> {
        let plan = Plan::full(&self.layout);
        Tensor::from_vec(self.var_of(&plan, correction), &plan.out_shape)
    }

    /// The variance over `dims` (an empty `dims` makes groups of one), divided by `n - correction`.
    #[track_caller]
    pub fn var_dims(&self, dims: &[isize], correction: usize, keepdim: bool) -> Tensor<E> {
        let plan = Plan::new(&self.layout, "var_dims", dims, keepdim);
        Tensor::from_vec(self.var_of(&plan, correction), &plan.out_shape)
    }

    /// The standard deviation of all elements, the square root of [`Tensor::var`].
    pub fn std(&self, correction: usize) -> Tensor<E> {
        let plan = Plan::full(&self.layout);
        let v = self.var_of(&plan, correction).into_iter().map(|v| v.sqrt()).collect();
        Tensor::from_vec(v, &plan.out_shape)
    }

    /// The standard deviation over `dims`, the square root of [`Tensor::var_dims`].
    #[track_caller]
    pub fn std_dims(&self, dims: &[isize], correction: usize, keepdim: bool) -> Tensor<E> {
        let plan = Plan::new(&self.layout, "std_dims", dims, keepdim);
        let v = self.var_of(&plan, correction).into_iter().map(|v| v.sqrt()).collect();
        Tensor::from_vec(v, &plan.out_shape)
    }

    /// `ln(sum(exp(x)))` per group, computed as `m + ln(sum(exp(x - m)))` with `m` the group's
    /// max, so it neither overflows nor underflows. A group whose max is not finite yields that
    /// max: all -inf (or empty) gives -inf, any +inf gives +inf, any NaN gives NaN.
    fn logsumexp_of(&self, plan: Plan) -> Tensor<E> {
        let data = &self.storage[..];
        let add = |a: E, b: E| a + b;
        let finish = |m: E, s: E| if m.is_finite() { m + s.ln() } else { m };
        let out = if plan.by_blocks {
            plan.map_blocks(data, |b| {
                let m = b.fold(E::neg_infinity(), E::max_nan, E::max_nan);
                let s = if m.is_finite() { b.fold(E::zero(), |a, x| a + (x - m).exp(), add) } else { E::zero() };
                finish(m, s)
            })
        } else {
            let maxes = plan.fold(data, E::neg_infinity(), E::max_nan, E::max_nan);
            let mut sums = vec![E::zero(); plan.n_out];
            plan.accumulate(data, &mut sums, &maxes, E::zero(), &|a, x, m| a + (x - m).exp(), &add);
            maxes.iter().zip(&sums).map(|(&m, &s)| finish(m, s)).collect()
        };
        Tensor::from_vec(out, &plan.out_shape)
    }

    /// `ln(sum(exp(x)))` over all elements as a 0-d tensor, without overflow (see
    /// [`Tensor::logsumexp_dims`]).
    pub fn logsumexp(&self) -> Tensor<E> {
        self.logsumexp_of(Plan::full(&self.layout))
    }

    /// `ln(sum(exp(x)))` over `dims`, computed stably by subtracting each group's max. A group
    /// that is all -inf gives -inf, one holding +inf gives +inf, one holding NaN gives NaN.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1000.0f64, 1000.0, f64::NEG_INFINITY, f64::NEG_INFINITY], &[2, 2]);
    /// let l = x.logsumexp_dims(&[1], false).to_vec();
    /// assert!((l[0] - (1000.0 + 2f64.ln())).abs() < 1e-9);
    /// assert_eq!(l[1], f64::NEG_INFINITY);
    /// ```
    #[track_caller]
    pub fn logsumexp_dims(&self, dims: &[isize], keepdim: bool) -> Tensor<E> {
        self.logsumexp_of(Plan::new(&self.layout, "logsumexp_dims", dims, keepdim))
    }
}
