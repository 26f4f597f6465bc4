//! Padding the trailing dims of a tensor: constant, reflect and replicate, plus the gradient of
//! the latter two.
//!
//! Pads are given as one `(before, after)` pair per padded dim, covering the *trailing* dims in
//! their natural order: on an NCHW batch, `&[(1, 1), (2, 2)]` pads H by 1 and W by 2 on each
//! side. This is not `F.pad`'s flat list, which starts from the last dim.
//!
//! Reflect and replicate padding copy the input into the middle of the output, then fill the
//! borders one padded dim at a time from the already-filled part; their gradient runs the same
//! copies backwards as accumulations.

use super::concat::zip_into;
use crate::element::{Element, Num};
use crate::iter::for_each_run;
use crate::layout::{contiguous_strides, Layout, Shape, Strides};
use crate::Tensor;

/// How [`Tensor::pad_mode`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// The input mirrored about its edge element, which is not repeated: `[1, 2, 3]` padded by 2
    /// on each side is `[3, 2, 1, 2, 3, 2, 1]`. Each pad must be smaller than its dim.
    Reflect,
    /// The edge element repeated: `[1, 2, 3]` padded by 2 is `[1, 1, 1, 2, 3, 3, 3]`.
    Replicate,
}

/// The padded shape, its contiguous strides, and the storage offset of the input's first
/// element inside it.
#[track_caller]
fn padded_shape(op: &str, shape: &[usize], pads: &[(usize, usize)]) -> (Shape, Strides, usize) {
    assert!(
        pads.len() <= shape.len(),
        "{op}: {} (before, after) pairs given for a tensor of shape {shape:?} with {} dims",
        pads.len(),
        shape.len()
    );
    let lead = shape.len() - pads.len();
    let out: Shape = shape
        .iter()
        .enumerate()
        .map(|(k, &d)| if k < lead { d } else { d + pads[k - lead].0 + pads[k - lead].1 })
        .collect();
    let strides = contiguous_strides(&out);
    let interior = pads.iter().zip(&strides[lead..]).map(|(&(b, _), &s)| b * s as usize).sum();
    (out, strides, interior)
}

/// The copies that fill the borders along one padded dim: the region they cover (the other
/// dims) and `(destination, source)` storage offsets of each border slice.
struct BorderCopies {
    shape: Shape,
    strides: Strides,
    pairs: Vec<(usize, usize)>,
}

/// The border copies of reflect or replicate padding, in the order the forward pass runs them.
///
/// Dim `k` is filled over the full padded range of the dims filled before it and the input's
/// range of the others, reading only from the input's range along `k` itself.
#[track_caller]
fn border_copies(op: &str, shape: &[usize], pads: &[(usize, usize)], mode: PadMode) -> Vec<BorderCopies> {
    let (out_shape, strides, interior) = padded_shape(op, shape, pads);
    let lead = shape.len() - pads.len();
    let mut region = Shape::from_slice(shape);
    let mut region_offset = interior as isize;
    let mut copies = Vec::with_capacity(pads.len());
    for (p, &(before, after)) in pads.iter().enumerate() {
        let k = lead + p;
        let size = shape[k];
        match mode {
            PadMode::Reflect => assert!(
                (before < size && after < size) || before + after == 0,
                "{op}: reflect padding ({before}, {after}) must be smaller than dim {k} of size {size} (shape {shape:?})"
            ),
            PadMode::Replicate => assert!(
                size > 0 || before + after == 0,
                "{op}: replicate padding ({before}, {after}) of the empty dim {k} (shape {shape:?})"
            ),
            PadMode::Constant => unreachable!("constant padding has no border copies"),
        }
        // Input coordinate (possibly outside 0..size) to the input coordinate it copies.
        let source = |i: isize| -> isize {
            let last = size as isize - 1;
            match mode {
                PadMode::Reflect if i < 0 => -i,
                PadMode::Reflect if i > last => 2 * last - i,
                _ => i.clamp(0, last),
            }
        };
        let sk = strides[k];
        // The region's offset is at input coordinate 0 along `k`.
        let at = |i: isize| (region_offset + i * sk) as usize;
        let pairs = (-(before as isize)..0)
            .chain(size as isize..(size + after) as isize)
            .map(|i| (at(i), at(source(i))))
            .collect();
        let mut sub_shape = region.clone();
        sub_shape.remove(k);
        let mut sub_strides = strides.clone();
        sub_strides.remove(k);
        copies.push(BorderCopies { shape: sub_shape, strides: sub_strides, pairs });
        region[k] = out_shape[k];
        region_offset -= before as isize * sk;
    }
    copies
}

impl<E: Element> Tensor<E> {
    /// Pads the trailing dims with `value`; `pads[i]` is the `(before, after)` padding of dim
    /// `rank - pads.len() + i`.
    ///
    /// So on an NCHW tensor `pads = &[(1, 1), (2, 2)]` pads H by 1 and W by 2 on both sides. This
    /// is NOT PyTorch's `F.pad` list, which is flat and starts from the last dim.
    ///
    /// # Panics
    /// If `pads` has more entries than `self` has dims.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::ones(&[1, 1, 2, 2]); // NCHW
    /// let y = x.pad(&[(1, 1), (2, 2)], 0.0);
    /// assert_eq!(y.shape(), &[1, 1, 4, 6]);
    /// assert_eq!(y.to_vec()[6..12], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn pad(&self, pads: &[(usize, usize)], value: E) -> Tensor<E> {
        let (shape, strides, interior) = padded_shape("pad", self.shape(), pads);
        let mut out = vec![value; shape.iter().product()];
        zip_into(&mut out, &strides, interior, self, |o, x| *o = x);
        Tensor::from_vec(out, &shape)
    }

    /// Pads the trailing dims like [`Tensor::pad`] with the given mode; `value` is used only by
    /// [`PadMode::Constant`].
    ///
    /// # Panics
    /// If `pads` has more entries than `self` has dims, a reflect pad is not smaller than its
    /// dim (as in PyTorch), or a replicate pad extends an empty dim.
    ///
    /// ```
    /// use ferrograd_tensor::{PadMode, Tensor};
    /// let x = Tensor::from_vec(vec![1, 2, 3], &[3]);
    /// assert_eq!(x.pad_mode(&[(2, 2)], PadMode::Reflect, 0).to_vec(), vec![3, 2, 1, 2, 3, 2, 1]);
    /// assert_eq!(x.pad_mode(&[(2, 1)], PadMode::Replicate, 0).to_vec(), vec![1, 1, 1, 2, 3, 3]);
    /// ```
    #[track_caller]
    pub fn pad_mode(&self, pads: &[(usize, usize)], mode: PadMode, value: E) -> Tensor<E> {
        if mode == PadMode::Constant {
            return self.pad(pads, value);
        }
        let copies = border_copies("pad_mode", self.shape(), pads, mode);
        let mut out = self.pad(pads, E::default());
        let data = std::sync::Arc::get_mut(&mut out.storage).expect("freshly padded storage is unique");
        for c in &copies {
            for &(dst, src) in &c.pairs {
                for_each_run(&c.shape, [&c.strides], [0], |[b], len, [s]| {
                    let (d, r) = (dst + b, src + b);
                    if s == 1 {
                        data.copy_within(r..r + len, d);
                    } else {
                        for t in 0..len {
                            let o = (t as isize * s) as usize;
                            data[d + o] = data[r + o];
                        }
                    }
                });
            }
        }
        out
    }
}

impl<E: Num> Tensor<E> {
    /// The gradient of [`Tensor::pad_mode`]: sums `grad` (of the padded shape) back onto the
    /// input positions each padded element was copied from, giving a tensor of `input_shape`.
    ///
    /// # Panics
    /// If `grad`'s shape is not `input_shape` padded by `pads`, or the pads are invalid for
    /// `mode` (as in [`Tensor::pad_mode`]).
    ///
    /// ```
    /// use ferrograd_tensor::{PadMode, Tensor};
    /// let g = Tensor::<f32>::ones(&[6]);
    /// let gx = Tensor::pad_mode_backward(&g, &[3], &[(2, 1)], PadMode::Replicate);
    /// assert_eq!(gx.to_vec(), vec![3.0, 1.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn pad_mode_backward(
        grad: &Tensor<E>,
        input_shape: &[usize],
        pads: &[(usize, usize)],
        mode: PadMode,
    ) -> Tensor<E> {
        let (shape, strides, interior) = padded_shape("pad_mode_backward", input_shape, pads);
        assert!(
            grad.shape() == shape.as_slice(),
            "pad_mode_backward: gradient of shape {:?} does not match input shape {input_shape:?} padded to {shape:?}",
            grad.shape()
        );
        let mut work = grad.to_vec();
        if mode != PadMode::Constant {
            // The adjoint of the forward copies: the same copies in reverse, accumulating.
            for c in border_copies("pad_mode_backward", input_shape, pads, mode).iter().rev() {
                for &(dst, src) in &c.pairs {
                    for_each_run(&c.shape, [&c.strides], [0], |[b], len, [s]| {
                        for t in 0..len {
                            let o = b + (t as isize * s) as usize;
                            let g = work[dst + o];
                            work[src + o] += g;
                        }
                    });
                }
            }
        }
        let full = Tensor::from_vec(work, &shape);
        full.with_layout(Layout::new(Shape::from_slice(input_shape), strides, interior)).contiguous()
    }
}
