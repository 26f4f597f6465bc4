//! The strided layout: a shape, strides in elements and a start offset into the storage.
//!
//! Views are pure functions from one layout to another; they never touch the data. Kernels read
//! a layout to decide between their contiguous fast path and the general strided path.

use smallvec::SmallVec;

/// Dimensions of a tensor, inline up to six.
pub type Shape = SmallVec<[usize; 6]>;
/// Strides of a tensor in elements, inline up to six. Zero for broadcast dims, negative for flips.
pub type Strides = SmallVec<[isize; 6]>;

/// Shape, strides and offset of a tensor's view into its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub(crate) shape: Shape,
    pub(crate) strides: Strides,
    pub(crate) offset: usize,
}

/// Row-major (C-order) strides for a shape.
pub fn contiguous_strides(shape: &[usize]) -> Strides {
    let mut strides: Strides = smallvec::smallvec![0; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i].max(1) as isize;
    }
    strides
}

/// The NumPy broadcast of two shapes, or `None` when they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let mut out: Shape = smallvec::smallvec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Layout {
    /// A contiguous row-major layout of `shape` starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: Shape::from_slice(shape), strides: contiguous_strides(shape), offset: 0 }
    }

    /// Builds a layout from its parts. The caller guarantees it stays inside its storage.
    pub fn new(shape: Shape, strides: Strides, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape, strides, offset }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides in elements.
    pub fn strides(&self) -> &[isize] {
        &self.strides
    }

    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous: elements are dense and in logical order (size-1 dims ignored; an
    /// empty layout is contiguous, as in PyTorch).
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut acc = 1isize;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 {
                if self.strides[i] != acc {
                    return false;
                }
                acc *= self.shape[i] as isize;
            }
        }
        true
    }

    /// The storage index of a multi-index (no bounds check beyond debug assertions).
    pub fn index_of(&self, idx: &[usize]) -> usize {
        debug_assert_eq!(idx.len(), self.shape.len());
        let mut off = self.offset as isize;
        for (i, &x) in idx.iter().enumerate() {
            off += x as isize * self.strides[i];
        }
        off as usize
    }

    /// The smallest and one past the largest storage index this layout touches (None if empty).
    pub fn storage_span(&self) -> Option<(usize, usize)> {
        if self.numel() == 0 {
            return None;
        }
        let (mut lo, mut hi) = (self.offset as isize, self.offset as isize);
        for (&d, &s) in self.shape.iter().zip(&self.strides) {
            let ext = (d as isize - 1) * s;
            if ext < 0 {
                lo += ext;
            } else {
                hi += ext;
            }
        }
        Some((lo as usize, hi as usize + 1))
    }

    /// Resolve a possibly negative dim against the rank, panicking with the op's name if out of range.
    #[track_caller]
    pub fn dim(&self, op: &str, d: isize) -> usize {
        normalize_dim(op, d, self.rank())
    }

    /// Swap two dims.
    pub fn transpose(&self, a: usize, b: usize) -> Layout {
        let mut l = self.clone();
        l.shape.swap(a, b);
        l.strides.swap(a, b);
        l
    }

    /// Reorder dims: output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// Keep `len` elements of `dim` starting at `start`, taking every `step`-th.
    pub fn slice(&self, dim: usize, start: usize, len: usize, step: usize) -> Layout {
        let mut l = self.clone();
        if len > 0 {
            l.offset = (self.offset as isize + start as isize * self.strides[dim]) as usize;
        }
        l.shape[dim] = len;
        l.strides[dim] *= step as isize;
        l
    }

    /// Remove `dim` by fixing it at `index`.
    pub fn select(&self, dim: usize, index: usize) -> Layout {
        let mut l = self.clone();
        l.offset = (self.offset as isize + index as isize * self.strides[dim]) as usize;
        l.shape.remove(dim);
        l.strides.remove(dim);
        l
    }

    /// Reverse `dim` through a negative stride.
    pub fn flip(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        if self.shape[dim] > 0 {
            l.offset = (self.offset as isize + (self.shape[dim] as isize - 1) * self.strides[dim]) as usize;
        }
        l.strides[dim] = -l.strides[dim];
        l
    }

    /// Insert a size-1 dim at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        let stride = if dim < self.rank() { self.strides[dim] * self.shape[dim] as isize } else { 1 };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        l
    }

    /// Strides of this layout broadcast to `shape` (stride 0 on new or size-1 dims), or `None`
    /// if the shapes do not broadcast that way.
    pub fn broadcast_strides(&self, shape: &[usize]) -> Option<Strides> {
        if shape.len() < self.rank() {
            return None;
        }
        let lead = shape.len() - self.rank();
        let mut st: Strides = smallvec::smallvec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[lead + i]);
            st[lead + i] = if d == t {
                self.strides[i]
            } else if d == 1 {
                0
            } else {
                return None;
            };
        }
        Some(st)
    }

    /// Strides that present this layout's elements under `new_shape` without copying, if any.
    ///
    /// Works dim-group by dim-group like PyTorch's `computeStride`: each run of old dims that are
    /// mutually contiguous can be split or merged freely.
    pub fn view_strides(&self, new_shape: &[usize]) -> Option<Strides> {
        let numel = self.numel();
        if numel == 0 || self.rank() == 0 {
            return Some(contiguous_strides(new_shape));
        }
        let mut new_strides: Strides = smallvec::smallvec![0; new_shape.len()];
        let mut view_d = new_shape.len() as isize - 1;
        let mut chunk_base_stride = *self.strides.last().unwrap();
        let mut tensor_numel = 1usize;
        let mut view_numel = 1usize;
        for tensor_d in (0..self.rank()).rev() {
            tensor_numel *= self.shape[tensor_d];
            if tensor_d == 0
                || (self.shape[tensor_d - 1] != 1
                    && self.strides[tensor_d - 1] != tensor_numel as isize * chunk_base_stride)
            {
                while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1) {
                    new_strides[view_d as usize] = view_numel as isize * chunk_base_stride;
                    view_numel *= new_shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if tensor_d > 0 {
                    chunk_base_stride = self.strides[tensor_d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(new_strides)
    }
}

/// Resolve a possibly negative dim against `rank`, panicking with the op's name if out of range.
#[track_caller]
pub fn normalize_dim(op: &str, d: isize, rank: usize) -> usize {
    let r = rank.max(1) as isize;
    let x = if d < 0 { d + r } else { d };
    if x < 0 || x >= r {
        panic!("{op}: dim {d} is out of range for a tensor of rank {rank}");
    }
    x as usize
}
