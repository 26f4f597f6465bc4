//! Indexing by tensors: `index_select`, `gather`, `masked_fill`, and their accumulating
//! counterparts `index_add`, `scatter_add` and `scatter`.
//!
//! Index tensors are `Tensor<i64>` with PyTorch's semantics, except that negative indices are
//! rejected rather than counted from the end: a negative or too-large index panics naming the
//! op, the index, the dim and its size. Every op returns a new contiguous tensor; the
//! `scatter`/`index_add` family is what autograd uses to send gradients back through the
//! selecting ones.

use super::concat::zip_into;
use crate::element::{Element, Num};
use crate::iter::for_each_run;
use crate::layout::{contiguous_strides, Shape, Strides};
use crate::Tensor;

/// `i` as a position along a dim of `size`, if it is one.
fn in_range(i: i64, size: usize) -> Option<usize> {
    usize::try_from(i).ok().filter(|&u| u < size)
}

/// Panics, at the caller's location, that index `i` is outside dim `dim` of `size`.
#[track_caller]
fn out_of_range(op: &str, i: i64, dim: usize, size: usize) -> ! {
    panic!("{op}: index {i} is out of range for dim {dim} of size {size}")
}

/// The checked values of a 0-D or 1-D index tensor along `dim` of `size`.
#[track_caller]
fn checked_index_list(op: &str, index: &Tensor<i64>, dim: usize, size: usize) -> Vec<usize> {
    assert!(index.rank() <= 1, "{op}: index must be 1-D, got shape {:?}", index.shape());
    let values = index.to_vec();
    // Checked in a loop, not in `map`: a panic inside a closure would lose the caller's location.
    for &i in &values {
        if in_range(i, size).is_none() {
            out_of_range(op, i, dim, size);
        }
    }
    // Collected in place (same size and alignment), so the list costs one allocation.
    values.into_iter().map(|i| i as usize).collect()
}

/// Checks PyTorch's shape rules for `gather`/`scatter`: equal ranks, `index` no larger than
/// `src` anywhere (when given) and no larger than `input` outside `dim`.
#[track_caller]
fn check_scatter_shapes(op: &str, input: &[usize], dim: usize, index: &[usize], src: Option<&[usize]>) {
    let fits_input =
        index.len() == input.len() && index.iter().zip(input).enumerate().all(|(k, (i, s))| k == dim || i <= s);
    assert!(
        fits_input,
        "{op}: index of shape {index:?} does not fit input of shape {input:?} (same rank, no larger outside dim {dim})"
    );
    if let Some(src) = src {
        let fits_src = index.len() == src.len() && index.iter().zip(src).all(|(i, s)| i <= s);
        assert!(fits_src, "{op}: index of shape {index:?} does not fit src of shape {src:?} (same rank, no larger)");
    }
}

impl<E: Element> Tensor<E> {
    /// Picks the entries `index[j]` along `dim` (PyTorch's `index_select`): the result has
    /// `self`'s shape with `dim` resized to `index.numel()`.
    ///
    /// # Panics
    /// If `index` is not 1-D or holds an index outside `0..self.size(dim)`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    /// let rows = x.index_select(0, &Tensor::from_vec(vec![2i64, 0, 2], &[3]));
    /// assert_eq!(rows.to_vec(), vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
    /// ```
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor<i64>) -> Tensor<E> {
        let d = self.dim_of_nonscalar("index_select", dim);
        let size = self.shape()[d];
        let idx = checked_index_list("index_select", index, d, size);
        let mut shape = Shape::from_slice(self.shape());
        shape[d] = idx.len();
        let n: usize = shape.iter().product();
        if let Some(s) = self.as_slice() {
            // Output order: for each outer index, one contiguous inner block per selected entry.
            let inner: usize = shape[d + 1..].iter().product();
            let outer: usize = shape[..d].iter().product();
            let mut out = Vec::with_capacity(n);
            for o in 0..outer {
                let base = o * size * inner;
                if inner == 1 {
                    // Selecting along the last dim: single elements, where a slice copy per
                    // element would cost several times more.
                    out.extend(idx.iter().map(|&j| s[base + j]));
                } else {
                    for &j in &idx {
                        out.extend_from_slice(&s[base + j * inner..base + (j + 1) * inner]);
                    }
                }
            }
            return Tensor::from_vec(out, &shape);
        }
        let mut out = vec![E::default(); n];
        let strides = contiguous_strides(&shape);
        let mut dst_strides = strides.clone();
        dst_strides.remove(d);
        for (j, &i) in idx.iter().enumerate() {
            zip_into(&mut out, &dst_strides, j * strides[d] as usize, &self.select(d as isize, i), |o, x| *o = x);
        }
        Tensor::from_vec(out, &shape)
    }

    /// PyTorch's `gather`: `out[i][j][k] = self[index[i][j][k]][j][k]` for `dim == 0` (and so on
    /// for the other dims). The result has `index`'s shape.
    ///
    /// # Panics
    /// If the ranks differ, `index` is larger than `self` outside `dim`, or an index is outside
    /// `0..self.size(dim)`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1, 2, 3, 4], &[2, 2]);
    /// let idx = Tensor::from_vec(vec![0i64, 0, 1, 0], &[2, 2]);
    /// assert_eq!(x.gather(1, &idx).to_vec(), vec![1, 1, 4, 3]);
    /// ```
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor<i64>) -> Tensor<E> {
        let d = self.dim_of_nonscalar("gather", dim);
        check_scatter_shapes("gather", self.shape(), d, index.shape(), None);
        let (size, sd) = (self.shape()[d], self.strides()[d]);
        // `dim` is walked through the index values, so the positional stride there is 0.
        let mut src_strides = Strides::from_slice(self.strides());
        src_strides[d] = 0;
        let (is, s) = (&index.storage, &self.storage);
        let mut out = Vec::with_capacity(index.numel());
        // A bad index is skipped and the first one panics below, outside the closure, so the
        // panic reports the caller's location.
        let mut bad = None;
        for_each_run(
            index.shape(),
            [index.strides(), &src_strides],
            [index.offset(), self.offset()],
            |[bi, bs], len, [si, ss]| {
                let (mut oi, mut os) = (bi as isize, bs as isize);
                for _ in 0..len {
                    let i = is[oi as usize];
                    match in_range(i, size) {
                        Some(j) => out.push(s[(os + j as isize * sd) as usize]),
                        None => _ = bad.get_or_insert(i),
                    }
                    oi += si;
                    os += ss;
                }
            },
        );
        if let Some(i) = bad {
            out_of_range("gather", i, d, size);
        }
        Tensor::from_vec(out, index.shape())
    }

    /// Replaces the elements where `mask` is true by `value`; `mask` broadcasts to `self`'s shape.
    ///
    /// # Panics
    /// If `mask` does not broadcast to `self`'s shape (the message names both).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let mask = Tensor::from_vec(vec![false, true], &[2]);
    /// assert_eq!(x.masked_fill(&mask, 0.0).to_vec(), vec![1.0, 0.0, 3.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor<bool>, value: E) -> Tensor<E> {
        assert!(
            mask.layout.broadcast_strides(self.shape()).is_some(),
            "masked_fill: mask of shape {:?} cannot be broadcast to the input's shape {:?}",
            mask.shape(),
            self.shape()
        );
        self.zip_map(mask, "masked_fill", |x, m| if m { value } else { x })
    }

    /// PyTorch's out-of-place `scatter`: a copy of `self` with `out[index[i][j][k]][j][k] =
    /// src[i][j][k]` for `dim == 0` (and so on for the other dims).
    ///
    /// When an index repeats, the write that comes last in row-major order over `index` wins
    /// (PyTorch leaves this unspecified; here it is deterministic).
    ///
    /// # Panics
    /// If the ranks differ, `index` is larger than `src` anywhere or than `self` outside `dim`,
    /// or an index is outside `0..self.size(dim)`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[3]);
    /// let idx = Tensor::from_vec(vec![2i64, 0], &[2]);
    /// let src = Tensor::from_vec(vec![7.0f32, 8.0], &[2]);
    /// assert_eq!(x.scatter(0, &idx, &src).to_vec(), vec![8.0, 0.0, 7.0]);
    /// ```
    #[track_caller]
    pub fn scatter(&self, dim: isize, index: &Tensor<i64>, src: &Tensor<E>) -> Tensor<E> {
        self.scatter_with("scatter", dim, index, src, |o, x| *o = x)
    }

    /// The shared loop of `scatter` and `scatter_add`: `f(out[...], src[...])` at each index.
    #[track_caller]
    fn scatter_with(
        &self,
        op: &str,
        dim: isize,
        index: &Tensor<i64>,
        src: &Tensor<E>,
        f: impl Fn(&mut E, E),
    ) -> Tensor<E> {
        let d = self.dim_of_nonscalar(op, dim);
        check_scatter_shapes(op, self.shape(), d, index.shape(), Some(src.shape()));
        let size = self.shape()[d];
        let mut out = self.to_vec();
        let strides = contiguous_strides(self.shape());
        let od = strides[d];
        let mut base_strides = strides;
        base_strides[d] = 0;
        let (is, s) = (&index.storage, &src.storage);
        // As in `gather`: a bad index is skipped and the first one panics outside the closure.
        let mut bad = None;
        for_each_run(
            index.shape(),
            [index.strides(), src.strides(), &base_strides],
            [index.offset(), src.offset(), 0],
            |[bi, bs, bo], len, [si, ss, so]| {
                let (mut oi, mut os, mut oo) = (bi as isize, bs as isize, bo as isize);
                for _ in 0..len {
                    let i = is[oi as usize];
                    match in_range(i, size) {
                        Some(j) => f(&mut out[(oo + j as isize * od) as usize], s[os as usize]),
                        None => _ = bad.get_or_insert(i),
                    }
                    oi += si;
                    os += ss;
                    oo += so;
                }
            },
        );
        if let Some(i) = bad {
            out_of_range(op, i, d, size);
        }
        Tensor::from_vec(out, self.shape())
    }
}

impl<E: Num> Tensor<E> {
    /// PyTorch's out-of-place `index_add`: a copy of `self` with slice `j` of `src` along `dim`
    /// added onto slice `index[j]`. Repeated indices accumulate. This is the gradient of
    /// [`Tensor::index_select`].
    ///
    /// # Panics
    /// If `index` is not 1-D, `src` does not have `self`'s shape with `dim` resized to
    /// `index.numel()`, or an index is outside `0..self.size(dim)`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[3, 2]);
    /// let src = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let y = x.index_add(0, &Tensor::from_vec(vec![1i64, 1], &[2]), &src);
    /// assert_eq!(y.to_vec(), vec![0.0, 0.0, 4.0, 6.0, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn index_add(&self, dim: isize, index: &Tensor<i64>, src: &Tensor<E>) -> Tensor<E> {
        let d = self.dim_of_nonscalar("index_add", dim);
        let idx = checked_index_list("index_add", index, d, self.shape()[d]);
        let fits = src.rank() == self.rank()
            && src
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(k, (a, b))| if k == d { *a == idx.len() } else { a == b });
        assert!(
            fits,
            "index_add: src of shape {:?} does not match input of shape {:?} with dim {d} of size {} (the index length)",
            src.shape(),
            self.shape(),
            idx.len()
        );
        let mut out = self.to_vec();
        let strides = contiguous_strides(self.shape());
        let mut dst_strides = strides.clone();
        dst_strides.remove(d);
        for (j, &i) in idx.iter().enumerate() {
            zip_into(&mut out, &dst_strides, i * strides[d] as usize, &src.select(d as isize, j), |o, x| *o += x);
        }
        Tensor::from_vec(out, self.shape())
    }

    /// PyTorch's out-of-place `scatter_add`: a copy of `self` with `out[index[i][j][k]][j][k] +=
    /// src[i][j][k]` for `dim == 0` (and so on). Repeated indices accumulate. This is the
    /// gradient of [`Tensor::gather`].
    ///
    /// # Panics
    /// As [`Tensor::scatter`].
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[3]);
    /// let idx = Tensor::from_vec(vec![2i64, 0, 2], &[3]);
    /// let src = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// assert_eq!(x.scatter_add(0, &idx, &src).to_vec(), vec![2.0, 0.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn scatter_add(&self, dim: isize, index: &Tensor<i64>, src: &Tensor<E>) -> Tensor<E> {
        self.scatter_with("scatter_add", dim, index, src, |o, x| *o += x)
    }
}
