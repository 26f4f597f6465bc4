//! Joining and splitting along a dim: `cat`, `stack`, and the view-returning `split`,
//! `split_sizes`, `chunk` and `unbind`.
//!
//! Also home of [`zip_into`], the strided "write a tensor into a region of a contiguous buffer"
//! loop that `cat`, the index ops and padding share.

use crate::element::Element;
use crate::iter::for_each_run;
use crate::layout::{contiguous_strides, normalize_dim, Shape};
use crate::Tensor;

/// Applies `f(dst_element, src_element)` for every element of `src`, where the destination
/// element sits in `dst` at `dst_offset` plus the multi-index dotted with `dst_strides`.
///
/// Runs with unit stride on both sides are walked as slices so the compiler can vectorise them.
pub(super) fn zip_into<E: Element>(
    dst: &mut [E],
    dst_strides: &[isize],
    dst_offset: usize,
    src: &Tensor<E>,
    f: impl Fn(&mut E, E),
) {
    let s = &src.storage;
    for_each_run(src.shape(), [dst_strides, src.strides()], [dst_offset, src.offset()], |[bd, bs], len, [sd, ss]| {
        if sd == 1 && ss == 1 {
            dst[bd..bd + len].iter_mut().zip(&s[bs..bs + len]).for_each(|(d, &x)| f(d, x));
        } else {
            let (mut od, mut os) = (bd as isize, bs as isize);
            for _ in 0..len {
                f(&mut dst[od as usize], s[os as usize]);
                od += sd;
                os += ss;
            }
        }
    });
}

impl<E: Element> Tensor<E> {
    /// Resolves `dim` for an op that needs at least one dimension.
    #[track_caller]
    pub(super) fn dim_of_nonscalar(&self, op: &str, dim: isize) -> usize {
        assert!(self.rank() > 0, "{op}: expects a tensor of rank >= 1, got a 0-dimensional tensor");
        self.layout.dim(op, dim)
    }

    /// Concatenates tensors along `dim` (PyTorch's `torch.cat`).
    ///
    /// All shapes must agree except along `dim`; the inputs may have any layouts. The result is
    /// a new contiguous tensor.
    ///
    /// # Panics
    /// If `tensors` is empty, the tensors are 0-dimensional, or two shapes differ outside `dim`
    /// (the message names both shapes).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1, 2, 3, 4], &[2, 2]);
    /// let b = Tensor::from_vec(vec![5, 6], &[2, 1]);
    /// let c = Tensor::cat(&[&a, &b], 1);
    /// assert_eq!(c.shape(), &[2, 3]);
    /// assert_eq!(c.to_vec(), vec![1, 2, 5, 3, 4, 6]);
    /// ```
    #[track_caller]
    pub fn cat(tensors: &[&Tensor<E>], dim: isize) -> Tensor<E> {
        let Some(&first) = tensors.first() else { panic!("cat: expects at least one tensor") };
        let d = first.dim_of_nonscalar("cat", dim);
        let mut shape = Shape::from_slice(first.shape());
        shape[d] = 0;
        for t in tensors {
            let matches = t.rank() == first.rank()
                && t.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == d || a == b);
            assert!(matches, "cat: shapes {:?} and {:?} do not match outside dim {d}", first.shape(), t.shape());
            shape[d] += t.shape()[d];
        }
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        if tensors.iter().all(|t| t.is_contiguous()) {
            // Written in output order, so the buffer needs no initialisation: each outer index
            // appends one contiguous row from every piece.
            let outer: usize = shape[..d].iter().product();
            let inner: usize = shape[d + 1..].iter().product();
            let pieces: Vec<(&[E], usize)> =
                tensors.iter().map(|t| (t.as_slice().expect("contiguous"), t.shape()[d] * inner)).collect();
            for o in 0..outer {
                for &(s, row) in &pieces {
                    out.extend_from_slice(&s[o * row..(o + 1) * row]);
                }
            }
        } else {
            out.resize(n, E::default());
            let strides = contiguous_strides(&shape);
            let mut start = 0;
            for t in tensors {
                zip_into(&mut out, &strides, start * strides[d] as usize, t, |o, x| *o = x);
                start += t.shape()[d];
            }
        }
        Tensor::from_vec(out, &shape)
    }

    /// Stacks equally shaped tensors along a new dim `dim` (PyTorch's `torch.stack`).
    ///
    /// `dim` ranges over the result's dims, so `-1` appends a last dim.
    ///
    /// # Panics
    /// If `tensors` is empty or two shapes differ (the message names both).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0], &[2]);
    /// let s = Tensor::stack(&[&a, &b], -1);
    /// assert_eq!(s.shape(), &[2, 2]);
    /// assert_eq!(s.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn stack(tensors: &[&Tensor<E>], dim: isize) -> Tensor<E> {
        let Some(&first) = tensors.first() else { panic!("stack: expects at least one tensor") };
        let d = normalize_dim("stack", dim, first.rank() + 1) as isize;
        for t in tensors {
            assert!(
                t.shape() == first.shape(),
                "stack: shapes {:?} and {:?} differ; stack needs equal shapes",
                first.shape(),
                t.shape()
            );
        }
        let views: Vec<Tensor<E>> = tensors.iter().map(|t| t.unsqueeze(d)).collect();
        let refs: Vec<&Tensor<E>> = views.iter().collect();
        Self::cat(&refs, d)
    }

    /// Splits into views of `size` elements along `dim`; the last may be smaller (PyTorch's
    /// `split` with an int).
    ///
    /// # Panics
    /// If `size` is 0 while the dim is not empty, or the tensor is 0-dimensional.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(0.0, 5.0, 1.0);
    /// let parts = x.split(2, 0);
    /// assert_eq!(parts.iter().map(|p| p.numel()).collect::<Vec<_>>(), vec![2, 2, 1]);
    /// assert!(parts[1].shares_storage(&x));
    /// ```
    #[track_caller]
    pub fn split(&self, size: usize, dim: isize) -> Vec<Tensor<E>> {
        let d = self.dim_of_nonscalar("split", dim);
        let n = self.shape()[d];
        if n == 0 {
            return vec![self.clone()];
        }
        assert!(size > 0, "split: split size must be positive for dim {d} of shape {:?}", self.shape());
        (0..n).step_by(size).map(|s| self.narrow(d as isize, s, size.min(n - s))).collect()
    }

    /// Splits into views of the given sizes along `dim` (PyTorch's `split` with a list).
    ///
    /// # Panics
    /// If the sizes do not sum to the size of `dim`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[2, 6]);
    /// let parts = x.split_sizes(&[1, 3, 2], 1);
    /// assert_eq!(parts[1].shape(), &[2, 3]);
    /// ```
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[usize], dim: isize) -> Vec<Tensor<E>> {
        let d = self.dim_of_nonscalar("split_sizes", dim);
        let n = self.shape()[d];
        let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
        assert!(
            total == Some(n),
            "split_sizes: sizes {sizes:?} do not sum to the size {n} of dim {d} of shape {:?}",
            self.shape()
        );
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let part = self.narrow(d as isize, start, s);
                start += s;
                part
            })
            .collect()
    }

    /// Splits into at most `chunks` views along `dim`, each of `ceil(n / chunks)` elements
    /// except possibly the last (PyTorch's `chunk`: 6 elements in 4 chunks gives 3 chunks of 2).
    ///
    /// # Panics
    /// If `chunks` is 0 or the tensor is 0-dimensional.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[5]);
    /// let sizes: Vec<usize> = x.chunk(3, 0).iter().map(|c| c.numel()).collect();
    /// assert_eq!(sizes, vec![2, 2, 1]);
    /// ```
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor<E>> {
        let d = self.dim_of_nonscalar("chunk", dim);
        assert!(chunks > 0, "chunk: the number of chunks must be positive (shape {:?})", self.shape());
        let n = self.shape()[d];
        if n == 0 {
            // PyTorch returns `chunks` empty pieces here rather than one.
            return vec![self.clone(); chunks];
        }
        self.split(n.div_ceil(chunks), dim)
    }

    /// Removes `dim`, returning one view per index along it (PyTorch's `unbind`).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1, 2, 3, 4, 5, 6], &[2, 3]);
    /// let cols = x.unbind(1);
    /// assert_eq!(cols.len(), 3);
    /// assert_eq!(cols[2].to_vec(), vec![3, 6]);
    /// ```
    #[track_caller]
    pub fn unbind(&self, dim: isize) -> Vec<Tensor<E>> {
        let d = self.dim_of_nonscalar("unbind", dim);
        (0..self.shape()[d]).map(|i| self.select(d as isize, i)).collect()
    }
}
