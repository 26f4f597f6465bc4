//! The `Tensor` type: shared storage plus a strided layout, its constructors, accessors and the
//! zero-copy views. Kernels live in `ops/`, one file per op family.

use std::fmt;
use std::sync::{Arc, Weak};

use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::element::{Element, Float, Num};
use crate::error::{Result, TensorError};
use crate::iter::for_each_run;
use crate::layout::{broadcast_shapes, Layout, Shape};
use crate::ops::simd_map::{collect_with, map_into, zip_into};
use crate::ops::{elementwise_min_per_thread, parallel_for_each, parts_for, threads_for, unit_chunks};

/// An n-dimensional array of `E` over reference-counted storage.
///
/// Cloning a tensor is cheap (it shares storage). Views (`transpose`, `slice`, `expand`, ...)
/// share storage too; in-place ops copy the storage first if anything else shares it, so a
/// tensor's values never change behind another tensor's back.
///
/// ```
/// use ferrograd_tensor::Tensor;
/// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
/// let t = a.t(); // a 3x2 view, no copy
/// assert_eq!(t.shape(), &[3, 2]);
/// assert_eq!(t.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// ```
#[derive(Clone)]
pub struct Tensor<E: Element = f32> {
    pub(crate) storage: Arc<Vec<E>>,
    pub(crate) layout: Layout,
}

/// The element count of `shape`, or an error if it, or the row-major strides of the shape
/// (which skip size-0 dims, so `[0, 2^62, 2^62]` has few elements but huge strides), overflow.
fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let overflow = || TensorError::ShapeOverflow { op, shape: shape.to_vec() };
    shape.iter().try_fold(1isize, |acc, &d| acc.checked_mul(isize::try_from(d.max(1)).ok()?)).ok_or_else(overflow)?;
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)
}

impl<E: Element> Tensor<E> {
    // ---------------------------------------------------------------- construction

    /// Wraps a row-major buffer as a tensor of `shape`, or a typed error if the length differs.
    pub fn try_from_vec(data: Vec<E>, shape: &[usize]) -> Result<Self> {
        let expected = checked_numel("try_from_vec", shape)?;
        if data.len() != expected {
            return Err(TensorError::DataLength {
                op: "try_from_vec",
                len: data.len(),
                shape: shape.to_vec(),
                expected,
            });
        }
        Ok(Tensor::from_storage(data, Layout::contiguous(shape)))
    }

    /// Wraps a row-major buffer as a tensor of `shape`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`; use [`Tensor::try_from_vec`] for
    /// data from outside the program.
    #[track_caller]
    pub fn from_vec(data: Vec<E>, shape: &[usize]) -> Self {
        match Self::try_from_vec(data, shape) {
            Ok(t) => t,
            Err(e) => panic!("from_vec: {e}"),
        }
    }

    /// Copies a row-major slice into a tensor of `shape`, or a typed error if the length differs.
    pub fn try_from_slice(data: &[E], shape: &[usize]) -> Result<Self> {
        Self::try_from_vec(data.to_vec(), shape)
    }

    /// Copies a row-major slice into a tensor of `shape`. Panics if the length differs.
    #[track_caller]
    pub fn from_slice(data: &[E], shape: &[usize]) -> Self {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A tensor over fresh storage: every tensor whose elements were just allocated is made here.
    pub(crate) fn from_storage(storage: Vec<E>, layout: Layout) -> Self {
        Tensor { storage: Arc::new(storage), layout }
    }

    /// A tensor over `storage` seen through `layout` (PyTorch's `as_strided`), or an error if the
    /// layout reaches outside the storage.
    pub fn from_parts(storage: Vec<E>, layout: Layout) -> Result<Self> {
        if let Some((lo, hi)) = layout.storage_span() {
            let shape = layout.shape().to_vec();
            checked_numel("from_parts", &shape)?;
            let fits = layout.strides().iter().zip(&shape).all(|(&s, &d)| (d as isize - 1).checked_mul(s).is_some());
            if !fits || hi > storage.len() || lo > hi {
                return Err(TensorError::DataLength { op: "from_parts", len: storage.len(), shape, expected: hi });
            }
        }
        Ok(Tensor::from_storage(storage, layout))
    }

    /// A 0-dimensional tensor holding `v`.
    pub fn scalar(v: E) -> Self {
        Tensor::from_storage(vec![v], Layout::contiguous(&[]))
    }

    /// A tensor of `shape` filled with `v`.
    pub fn full(shape: &[usize], v: E) -> Self {
        let n: usize = shape.iter().product();
        Tensor::from_storage(vec![v; n], Layout::contiguous(shape))
    }

    /// A tensor whose element at each row-major position `i` is `f(i)`.
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> E) -> Self {
        let n: usize = shape.iter().product();
        Tensor::from_storage((0..n).map(f).collect(), Layout::contiguous(shape))
    }

    // ---------------------------------------------------------------- accessors

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    /// The strides, in elements (0 on broadcast dims, negative on flipped ones).
    pub fn strides(&self) -> &[isize] {
        &self.layout.strides
    }

    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.layout.offset
    }

    /// The full layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of dimensions (PyTorch's `dim()`).
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// The size of dim `d` (negative counts from the end).
    #[track_caller]
    pub fn size(&self, d: isize) -> usize {
        self.layout.shape[self.layout.dim("size", d)]
    }

    /// The element type's runtime tag.
    pub fn dtype(&self) -> crate::DType {
        E::DTYPE
    }

    /// Whether the elements are dense and in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// The elements as a slice, if the tensor is contiguous.
    pub fn as_slice(&self) -> Option<&[E]> {
        if self.numel() == 0 {
            // An empty view's offset may lie past the end of its storage.
            Some(&[])
        } else if self.is_contiguous() {
            let start = self.layout.offset;
            Some(&self.storage[start..start + self.numel()])
        } else {
            None
        }
    }

    /// The whole underlying storage, which views index through [`Tensor::layout`].
    pub fn storage(&self) -> &[E] {
        &self.storage
    }

    /// Whether two tensors share storage.
    pub fn shares_storage(&self, other: &Tensor<E>) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// A weak handle on the storage: lets tests and memory tools check that storage was freed.
    pub fn storage_weak(&self) -> Weak<Vec<E>> {
        Arc::downgrade(&self.storage)
    }

    /// The elements in row-major order.
    pub fn to_vec(&self) -> Vec<E> {
        if let Some(s) = self.as_slice() {
            return s.to_vec();
        }
        let n = self.numel();
        let outer = self.shape().first().copied().unwrap_or(1);
        // A large strided copy (a permuted view made contiguous) is split over threads by ranges
        // of its first dimension, each written to its own piece of the output.
        let threads = threads_for(n, elementwise_min_per_thread()).min(outer);
        collect_with(n, |dst| {
            if threads <= 1 {
                return self.write_runs(dst);
            }
            let parts: Vec<_> = unit_chunks(dst, outer, n / outer, parts_for(threads, outer))
                .into_iter()
                .map(|(r, d)| (self.narrow(0, r.start, r.len()), d))
                .collect();
            parallel_for_each(parts, &|(view, d): (Tensor<E>, &mut [std::mem::MaybeUninit<E>])| view.write_runs(d));
        })
    }

    /// Writes every element in row-major order into `dst`, which holds exactly `numel` slots.
    fn write_runs(&self, dst: &mut [std::mem::MaybeUninit<E>]) {
        assert_eq!(dst.len(), self.numel(), "write_runs: {} slots for {} elements", dst.len(), self.numel());
        let st = &self.storage;
        let mut i = 0;
        for_each_run(self.shape(), [self.strides()], [self.offset()], |[b], len, [s]| {
            let d = &mut dst[i..i + len];
            if s == 1 {
                for (d, &x) in d.iter_mut().zip(&st[b..b + len]) {
                    d.write(x);
                }
            } else {
                let mut o = b as isize;
                for d in d {
                    d.write(st[o as usize]);
                    o += s;
                }
            }
            i += len;
        });
        assert_eq!(i, dst.len(), "write_runs: the runs covered {i} of {} elements", dst.len());
    }

    /// The single element of a one-element tensor.
    #[track_caller]
    pub fn item(&self) -> E {
        assert_eq!(
            self.numel(),
            1,
            "item: tensor of shape {:?} has {} elements, expected 1",
            self.shape(),
            self.numel()
        );
        self.storage[self.layout.offset]
    }

    /// The element at a multi-index.
    #[track_caller]
    pub fn at(&self, idx: &[usize]) -> E {
        assert!(
            idx.len() == self.rank() && idx.iter().zip(self.shape()).all(|(&i, &d)| i < d),
            "at: index {idx:?} is out of range for shape {:?}",
            self.shape()
        );
        self.storage[self.layout.index_of(idx)]
    }

    /// A contiguous tensor with the same values: `self` (shared) if already contiguous.
    pub fn contiguous(&self) -> Self {
        if self.is_contiguous() && self.layout.offset == 0 && self.storage.len() == self.numel() {
            return self.clone();
        }
        Tensor::from_storage(self.to_vec(), Layout::contiguous(self.shape()))
    }

    /// Converts every element to `O` (saturating like Rust's `as`; bool is 0/1).
    pub fn cast<O: Element>(&self) -> Tensor<O> {
        self.map(|x| O::from_f64(x.to_f64()))
    }

    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        Tensor { storage: self.storage.clone(), layout }
    }

    // ---------------------------------------------------------------- elementwise machinery

    /// A new contiguous tensor of `f` applied to every element.
    pub fn map<O: Element>(&self, f: impl Fn(E) -> O) -> Tensor<O> {
        let out: Vec<O> = match self.as_slice() {
            Some(s) => collect_with(s.len(), |d| map_into(s, d, &f)),
            None => {
                let mut out = Vec::with_capacity(self.numel());
                let st = &self.storage;
                for_each_run(self.shape(), [self.strides()], [self.offset()], |[b], len, [s]| {
                    let mut o = b as isize;
                    for _ in 0..len {
                        out.push(f(st[o as usize]));
                        o += s;
                    }
                });
                out
            }
        };
        Tensor::from_storage(out, Layout::contiguous(self.shape()))
    }

    /// [`Tensor::map`] for a `Sync` function: a large contiguous tensor is split over threads
    /// in consecutive ranges (as [`crate::parallel_collect`] cuts them; bit-identical whatever the
    /// thread count).
    pub(crate) fn map_sync<O: Element>(&self, f: impl Fn(E) -> O + Sync) -> Tensor<O> {
        let Some(s) = self.as_slice() else { return self.map(f) };
        let threads = threads_for(s.len(), elementwise_min_per_thread());
        if threads <= 1 {
            return self.map(f);
        }
        let out = collect_with(s.len(), |dst| {
            let parts = unit_chunks(dst, s.len(), 1, parts_for(threads, s.len()));
            parallel_for_each(parts, &|(r, d)| map_into(&s[r], d, &f));
        });
        Tensor::from_storage(out, Layout::contiguous(self.shape()))
    }

    /// [`Tensor::zip_map`] for a `Sync` function: two large contiguous tensors of one shape are
    /// split over threads in consecutive ranges (bit-identical whatever the thread count, as
    /// [`Tensor::map_sync`]).
    ///
    /// # Panics
    /// As [`Tensor::zip_map`].
    #[track_caller]
    pub(crate) fn zip_map_sync<B: Element, O: Element>(
        &self,
        other: &Tensor<B>,
        op: &str,
        f: impl Fn(E, B) -> O + Sync,
    ) -> Tensor<O> {
        if let (true, Some(a), Some(b)) = (self.shape() == other.shape(), self.as_slice(), other.as_slice()) {
            let threads = threads_for(a.len(), elementwise_min_per_thread());
            if threads > 1 {
                let out = collect_with(a.len(), |dst| {
                    let parts = unit_chunks(dst, a.len(), 1, parts_for(threads, a.len()));
                    parallel_for_each(parts, &|(r, d)| zip_into(&a[r.clone()], &b[r], d, &f));
                });
                return Tensor::from_storage(out, Layout::contiguous(self.shape()));
            }
        } else if let Some(shape) = broadcast_shapes(self.shape(), other.shape()) {
            // Broadcast or strided operands (a bias added to every row): ranges of the output's
            // first dimension on their own threads.
            let (n, outer) = (shape.iter().product::<usize>(), shape.first().copied().unwrap_or(1));
            let threads = threads_for(n, elementwise_min_per_thread()).min(outer);
            if threads > 1 {
                let (a, b) = (self.broadcast_to(&shape), other.broadcast_to(&shape));
                let out = collect_with(n, |dst| {
                    let parts: Vec<_> = unit_chunks(dst, outer, n / outer, parts_for(threads, outer))
                        .into_iter()
                        .map(|(r, d)| (a.narrow(0, r.start, r.len()), b.narrow(0, r.start, r.len()), d))
                        .collect();
                    parallel_for_each(parts, &|(a, b, d): ZipPart<'_, E, B, O>| zip_runs_into(&a, &b, d, &f));
                });
                return Tensor::from_storage(out, Layout::contiguous(&shape));
            }
        }
        self.zip_map(other, op, f)
    }

    /// A new contiguous tensor of `f(a, b)` over the NumPy broadcast of both shapes.
    ///
    /// # Panics
    /// If the shapes do not broadcast; the message names `op` and both shapes.
    #[track_caller]
    pub fn zip_map<B: Element, O: Element>(&self, other: &Tensor<B>, op: &str, f: impl Fn(E, B) -> O) -> Tensor<O> {
        // `let else`, not `unwrap_or_else`: a panic inside a closure would lose the caller's location.
        let Some(shape) = broadcast_shapes(self.shape(), other.shape()) else {
            panic!("{op}: shapes {:?} and {:?} cannot be broadcast together", self.shape(), other.shape())
        };
        if self.shape() == other.shape() {
            if let (Some(a), Some(b)) = (self.as_slice(), other.as_slice()) {
                let out: Vec<O> = collect_with(a.len(), |d| zip_into(a, b, d, &f));
                return Tensor::from_storage(out, Layout::contiguous(&shape));
            }
        }
        let (a, b) = (self.broadcast_to(&shape), other.broadcast_to(&shape));
        let out = collect_with(a.numel(), |d| zip_runs_into(&a, &b, d, &f));
        Tensor::from_storage(out, Layout::contiguous(&shape))
    }

    /// Makes the storage exclusively this tensor's (copying it if shared or if the view has
    /// broadcast elements), so it can be written in place.
    #[track_caller]
    fn make_writable(&mut self, op: &str) -> &mut Vec<E> {
        let overlapping = self.strides().iter().zip(self.shape()).any(|(&s, &d)| s == 0 && d > 1);
        if overlapping {
            panic!(
                "{op}: cannot write in place into a broadcast view of shape {:?} (strides {:?})",
                self.shape(),
                self.strides()
            );
        }
        if Arc::get_mut(&mut self.storage).is_none() {
            // Shared: copy only what this view sees, in its own layout order.
            *self = Tensor::from_storage(self.to_vec(), Layout::contiguous(self.shape()));
        }
        Arc::get_mut(&mut self.storage).expect("storage is unique after copy")
    }

    /// Applies `f` to every element in place (copy-on-write if the storage is shared).
    #[track_caller]
    pub fn map_inplace(&mut self, op: &str, f: impl Fn(E) -> E) {
        // make_writable may replace the storage and layout with a contiguous copy: read the layout after it.
        let _ = self.make_writable(op);
        let layout = self.layout.clone();
        let data = Arc::get_mut(&mut self.storage).expect("storage is unique after make_writable");
        for_each_run(&layout.shape, [&layout.strides], [layout.offset], |[b], len, [s]| {
            if s == 1 {
                data[b..b + len].iter_mut().for_each(|x| *x = f(*x));
            } else {
                let mut o = b as isize;
                for _ in 0..len {
                    data[o as usize] = f(data[o as usize]);
                    o += s;
                }
            }
        });
    }

    /// Sets every element to `f(self, other)` in place, with `other` broadcast to `self`'s shape.
    ///
    /// # Panics
    /// If `other` does not broadcast to `self`'s shape; the message names `op` and both shapes.
    #[track_caller]
    pub fn zip_inplace<B: Element>(&mut self, other: &Tensor<B>, op: &str, f: impl Fn(E, B) -> E) {
        let Some(sb) = other.layout.broadcast_strides(self.shape()) else {
            panic!(
                "{op}: shape {:?} cannot be broadcast to the in-place target's shape {:?}",
                other.shape(),
                self.shape()
            )
        };
        let _ = self.make_writable(op);
        let layout = self.layout.clone();
        let ob = &other.storage;
        let data = Arc::get_mut(&mut self.storage).expect("storage is unique after make_writable");
        for_each_run(
            &layout.shape,
            [&layout.strides, &sb],
            [layout.offset, other.offset()],
            |[ba, bb], len, [ia, ib]| match (ia, ib) {
                (1, 1) => data[ba..ba + len].iter_mut().zip(&ob[bb..bb + len]).for_each(|(x, &y)| *x = f(*x, y)),
                (1, 0) => {
                    let y = ob[bb];
                    data[ba..ba + len].iter_mut().for_each(|x| *x = f(*x, y));
                }
                _ => {
                    let (mut oa, mut obi) = (ba as isize, bb as isize);
                    for _ in 0..len {
                        data[oa as usize] = f(data[oa as usize], ob[obi as usize]);
                        oa += ia;
                        obi += ib;
                    }
                }
            },
        );
    }

    /// The elements as a mutable row-major slice, for fused kernels over several tensors (an
    /// optimizer's step). Copies first if the storage is shared or the view is not contiguous.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let mut t = a.t(); // a shared, transposed view: copied into its own row-major storage
    /// t.as_mut_slice()[1] = 9.0;
    /// assert_eq!(t.to_vec(), vec![1.0, 9.0, 2.0, 4.0]);
    /// assert_eq!(a.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    /// ```
    ///
    /// # Panics
    /// If `self` is a broadcast view (its elements overlap).
    #[track_caller]
    pub fn as_mut_slice(&mut self) -> &mut [E] {
        let _ = self.make_writable("as_mut_slice");
        if !self.is_contiguous() {
            *self = Tensor::from_storage(self.to_vec(), Layout::contiguous(self.shape()));
        }
        let (start, n) = (self.layout.offset, self.numel());
        let data = Arc::get_mut(&mut self.storage).expect("storage is unique after make_writable");
        if n == 0 {
            return &mut [];
        }
        &mut data[start..start + n]
    }

    /// Copies `src` (broadcast to `self`'s shape) into `self` in place.
    #[track_caller]
    pub fn copy_(&mut self, src: &Tensor<E>) {
        self.zip_inplace(src, "copy_", |_, b| b);
    }

    // ---------------------------------------------------------------- views

    /// Swaps dims `d0` and `d1` (negative counts from the end). A view.
    #[track_caller]
    pub fn transpose(&self, d0: isize, d1: isize) -> Self {
        let (a, b) = (self.layout.dim("transpose", d0), self.layout.dim("transpose", d1));
        if self.rank() == 0 {
            return self.clone();
        }
        self.with_layout(self.layout.transpose(a, b))
    }

    /// The transpose of a tensor of rank at most 2 (PyTorch's `t()`). A view.
    #[track_caller]
    pub fn t(&self) -> Self {
        assert!(self.rank() <= 2, "t: expects a tensor of rank <= 2, got shape {:?}", self.shape());
        if self.rank() < 2 {
            return self.clone();
        }
        self.transpose(0, 1)
    }

    /// Reorders dims: output dim `i` is input dim `perm[i]`. A view.
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Self {
        let mut seen = vec![false; self.rank()];
        let valid = perm.len() == self.rank()
            && perm.iter().all(|&p| p < self.rank() && !std::mem::replace(&mut seen[p], true));
        assert!(valid, "permute: {perm:?} is not a permutation of the dims of shape {:?}", self.shape());
        self.with_layout(self.layout.permute(perm))
    }

    /// Keeps `len` elements of `dim` starting at `start`. A view.
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Self {
        let d = self.layout.dim("narrow", dim);
        let size = self.shape()[d];
        assert!(
            start.checked_add(len).is_some_and(|e| e <= size),
            "narrow: range {start}..{} is out of bounds for dim {d} of shape {:?}",
            start.saturating_add(len),
            self.shape()
        );
        self.with_layout(self.layout.slice(d, start, len, 1))
    }

    /// Python's `t[start:end:step]` along `dim` (`end` is clamped to the size). A view.
    #[track_caller]
    pub fn slice(&self, dim: isize, start: usize, end: usize, step: usize) -> Self {
        let d = self.layout.dim("slice", dim);
        assert!(step > 0, "slice: step must be positive, got {step}");
        let size = self.shape()[d];
        let end = end.min(size);
        let start = start.min(end);
        let len = (end - start).div_ceil(step);
        self.with_layout(self.layout.slice(d, start, len, step))
    }

    /// Removes `dim` by fixing it at `index`. A view.
    #[track_caller]
    pub fn select(&self, dim: isize, index: usize) -> Self {
        let d = self.layout.dim("select", dim);
        assert!(
            index < self.shape()[d],
            "select: index {index} is out of range for dim {d} of shape {:?}",
            self.shape()
        );
        self.with_layout(self.layout.select(d, index))
    }

    /// Reverses the listed dims through negative strides. A view.
    #[track_caller]
    pub fn flip(&self, dims: &[isize]) -> Self {
        let mut layout = self.layout.clone();
        for &d in dims {
            layout = layout.flip(self.layout.dim("flip", d));
        }
        self.with_layout(layout)
    }

    /// Inserts a size-1 dim at `dim` (negative counts from the end of the result). A view.
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Self {
        // Checked here rather than by `Layout::dim`, whose message would name the result's rank.
        let r = self.rank() as isize + 1;
        assert!(
            (-r..r).contains(&dim),
            "unsqueeze: dim {dim} is out of range for a tensor of rank {} (expected {}..={})",
            self.rank(),
            -r,
            r - 1
        );
        let d = dim.rem_euclid(r) as usize;
        self.with_layout(self.layout.unsqueeze(d))
    }

    /// Removes every size-1 dim. A view.
    pub fn squeeze(&self) -> Self {
        let keep: Vec<usize> = (0..self.rank()).filter(|&i| self.shape()[i] != 1).collect();
        let layout = Layout::new(
            keep.iter().map(|&i| self.shape()[i]).collect(),
            keep.iter().map(|&i| self.strides()[i]).collect(),
            self.offset(),
        );
        self.with_layout(layout)
    }

    /// Removes `dim` if it has size 1 (otherwise returns the tensor unchanged, like PyTorch). A view.
    #[track_caller]
    pub fn squeeze_dim(&self, dim: isize) -> Self {
        let d = self.layout.dim("squeeze_dim", dim);
        if self.rank() == 0 || self.shape()[d] != 1 {
            return self.clone();
        }
        self.with_layout(self.layout.select(d, 0))
    }

    /// Broadcasts to `shape` with stride 0 on new and size-1 dims. A view.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Self {
        let Some(strides) = self.layout.broadcast_strides(shape) else {
            panic!("broadcast_to: shape {:?} cannot be broadcast to {shape:?}", self.shape())
        };
        self.with_layout(Layout::new(Shape::from_slice(shape), strides, self.offset()))
    }

    /// PyTorch's `expand`: like [`Tensor::broadcast_to`]. A view.
    #[track_caller]
    pub fn expand(&self, shape: &[usize]) -> Self {
        self.broadcast_to(shape)
    }

    /// Presents the elements under `shape` without copying.
    ///
    /// # Panics
    /// If the element counts differ or the layout cannot be viewed that way (use
    /// [`Tensor::reshape`], which copies when it must).
    #[track_caller]
    pub fn view(&self, shape: &[usize]) -> Self {
        match self.try_view("view", shape) {
            Some(v) => v,
            None => panic!(
                "view: shape {:?} (strides {:?}) cannot be viewed as {shape:?}; use reshape",
                self.shape(),
                self.strides()
            ),
        }
    }

    #[track_caller]
    fn try_view(&self, op: &str, shape: &[usize]) -> Option<Self> {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            self.numel(),
            "{op}: shape {:?} ({} elements) cannot become {shape:?} ({n} elements)",
            self.shape(),
            self.numel()
        );
        let strides = self.layout.view_strides(shape)?;
        Some(self.with_layout(Layout::new(Shape::from_slice(shape), strides, self.offset())))
    }

    /// Gives the elements `shape`: a view when the layout allows, else a contiguous copy.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Self {
        match self.try_view("reshape", shape) {
            Some(v) => v,
            None => self.contiguous().view(shape),
        }
    }

    /// Merges dims `start..=end` into one (a view when the layout allows).
    #[track_caller]
    pub fn flatten(&self, start: isize, end: isize) -> Self {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let (s, e) = (self.layout.dim("flatten", start), self.layout.dim("flatten", end));
        assert!(s <= e, "flatten: start dim {s} is after end dim {e} for shape {:?}", self.shape());
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }
}

impl<E: Num> Tensor<E> {
    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, E::zero())
    }

    /// A tensor of `shape` filled with ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, E::one())
    }

    /// Zeros with the shape of `other`.
    pub fn zeros_like(other: &Self) -> Self {
        Self::zeros(other.shape())
    }

    /// Ones with the shape of `other`.
    pub fn ones_like(other: &Self) -> Self {
        Self::ones(other.shape())
    }

    /// `[start, start + step, ...]` up to but excluding `end` (1-D).
    #[track_caller]
    pub fn arange(start: E, end: E, step: E) -> Self {
        assert!(step != E::zero(), "arange: step must be non-zero");
        let (s, e, st) = (start.to_f64(), end.to_f64(), step.to_f64());
        let n = ((e - s) / st).ceil().max(0.0) as usize;
        Self::from_fn(&[n], |i| E::from_f64(s + i as f64 * st))
    }

    /// The `n x n` identity matrix.
    pub fn eye(n: usize) -> Self {
        Self::from_fn(&[n, n], |i| if i / n == i % n { E::one() } else { E::zero() })
    }
}

impl<E: Float> Tensor<E> {
    /// `steps` evenly spaced values from `start` to `end` inclusive (1-D).
    pub fn linspace(start: E, end: E, steps: usize) -> Self {
        let (s, e) = (start.to_f64(), end.to_f64());
        let step = if steps > 1 { (e - s) / (steps - 1) as f64 } else { 0.0 };
        Self::from_fn(&[steps], |i| if i + 1 == steps && steps > 1 { end } else { E::from_f64(s + i as f64 * step) })
    }

    /// Samples from U[lo, hi) drawn from `rng` (seed it, e.g. `StdRng::seed_from_u64`, for
    /// reproducible results).
    #[track_caller]
    pub fn rand_uniform(shape: &[usize], lo: E, hi: E, rng: &mut impl Rng) -> Self {
        assert!(lo < hi, "rand_uniform: lo {lo} must be below hi {hi}");
        let Ok(dist) = Uniform::new(lo.to_f64(), hi.to_f64()) else {
            panic!("rand_uniform: cannot sample from [{lo}, {hi}): the bounds and their difference must be finite")
        };
        Self::from_fn(shape, |_| E::from_f64(dist.sample(rng)))
    }

    /// Samples from N(mean, std²) drawn from `rng`.
    #[track_caller]
    pub fn rand_normal(shape: &[usize], mean: E, std: E, rng: &mut impl Rng) -> Self {
        // rand_distr accepts a negative std (it mirrors the samples), so check it here.
        assert!(std.is_finite() && std >= E::zero(), "rand_normal: std {std} must be finite and non-negative");
        let dist = Normal::new(mean.to_f64(), std.to_f64()).expect("std checked above");
        Self::from_fn(shape, |_| E::from_f64(dist.sample(rng)))
    }
}

impl<E: Element> fmt::Debug for Tensor<E> {
    /// The dtype, shape and elements; and the strides and offset when the layout is not a fresh
    /// row-major one, since a failing property test often fails because of the layout.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>(shape={:?}, ", E::DTYPE, self.shape())?;
        if !self.is_contiguous() || self.offset() != 0 {
            write!(f, "strides={:?}, offset={}, ", self.strides(), self.offset())?;
        }
        let v = self.to_vec();
        if v.len() <= 32 {
            write!(f, "data={v:?})")
        } else {
            write!(f, "data=[{:?}, {:?}, {:?}, ..., {:?}])", v[0], v[1], v[2], v[v.len() - 1])
        }
    }
}

impl<E: Element> PartialEq for Tensor<E> {
    /// Equal shapes and equal elements (NaN != NaN), whatever the layouts.
    fn eq(&self, other: &Self) -> bool {
        self.shape() == other.shape() && self.to_vec() == other.to_vec()
    }
}

/// Writes `f(a, b)` for two views of one shape (broadcasts already applied, as stride-0 dims)
/// into `dst` in row-major order, run by run: contiguous runs and runs against one broadcast
/// element take the vectorised loops of `simd_map`.
fn zip_runs_into<A: Element, B: Element, O>(
    a: &Tensor<A>,
    b: &Tensor<B>,
    dst: &mut [std::mem::MaybeUninit<O>],
    f: &impl Fn(A, B) -> O,
) {
    assert!(a.shape() == b.shape() && dst.len() == a.numel(), "zip_runs_into: shapes or lengths differ");
    let (da, db) = (&a.storage, &b.storage);
    let mut i = 0;
    for_each_run(a.shape(), [a.strides(), b.strides()], [a.offset(), b.offset()], |[ba, bb], len, [ia, ib]| {
        let d = &mut dst[i..i + len];
        match (ia, ib) {
            (1, 1) => zip_into(&da[ba..ba + len], &db[bb..bb + len], d, f),
            (1, 0) => {
                let y = db[bb];
                map_into(&da[ba..ba + len], d, &|x| f(x, y));
            }
            (0, 1) => {
                let x = da[ba];
                map_into(&db[bb..bb + len], d, &|y| f(x, y));
            }
            _ => {
                let (mut oa, mut ob) = (ba as isize, bb as isize);
                for d in d {
                    d.write(f(da[oa as usize], db[ob as usize]));
                    oa += ia;
                    ob += ib;
                }
            }
        }
        i += len;
    });
    assert_eq!(i, dst.len(), "zip_runs_into: the runs covered {i} of {} elements", dst.len());
}

/// One thread's piece of a broadcast elementwise pass: both operands' views and its output.
type ZipPart<'d, A, B, O> = (Tensor<A>, Tensor<B>, &'d mut [std::mem::MaybeUninit<O>]);
