//! Views and shape ops (transpose, permute, reshape, slicing, broadcasting, flips), joining and
//! splitting (cat, stack, split, chunk) and padding. Views cost no copy forward; their gradient
//! is the inverse view, or for slicing the gradient placed back into zeros.

use ferrograd_tensor::{normalize_dim as norm, Float, PadMode, Shape, Tensor};
use smallvec::{smallvec, SmallVec};

use crate::var::InputGrads;
use crate::Var;

impl<F: Float> Var<F> {
    /// Swaps two dims (a view).
    #[track_caller]
    pub fn transpose(&self, d0: isize, d1: isize) -> Var<F> {
        Var::record("transpose", self.data.transpose(d0, d1), &[self], move |_, g| smallvec![Some(g.transpose(d0, d1))])
    }

    /// Transpose of a matrix (a view).
    #[track_caller]
    pub fn t(&self) -> Var<F> {
        Var::record("t", self.data.t(), &[self], |_, g| smallvec![Some(g.t())])
    }

    /// Reorders dims (a view).
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Var<F> {
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            if p < inv.len() {
                inv[p] = i;
            }
        }
        Var::record("permute", self.data.permute(perm), &[self], move |_, g| smallvec![Some(g.permute(&inv))])
    }

    /// Gives the elements a new shape (a view when the layout allows).
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        Var::record("reshape", self.data.reshape(shape), &[self], move |_, g| smallvec![Some(g.reshape(&input))])
    }

    /// Presents the elements under a new shape without copying (panics if it would need a copy).
    #[track_caller]
    pub fn view(&self, shape: &[usize]) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        Var::record("view", self.data.view(shape), &[self], move |_, g| smallvec![Some(g.reshape(&input))])
    }

    /// Merges dims `start..=end`.
    #[track_caller]
    pub fn flatten(&self, start: isize, end: isize) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        Var::record("flatten", self.data.flatten(start, end), &[self], move |_, g| smallvec![Some(g.reshape(&input))])
    }

    /// A contiguous copy (the same values; a no-op when already contiguous).
    #[track_caller]
    pub fn contiguous(&self) -> Var<F> {
        Var::record("contiguous", self.data.contiguous(), &[self], |_, g| smallvec![Some(g.clone())])
    }

    /// Inserts a size-1 dim.
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Var<F> {
        Var::record("unsqueeze", self.data.unsqueeze(dim), &[self], move |_, g| smallvec![Some(g.squeeze_dim(dim))])
    }

    /// Removes every size-1 dim.
    #[track_caller]
    pub fn squeeze(&self) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        Var::record("squeeze", self.data.squeeze(), &[self], move |_, g| smallvec![Some(g.reshape(&input))])
    }

    /// Removes `dim` if it has size 1.
    #[track_caller]
    pub fn squeeze_dim(&self, dim: isize) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        Var::record("squeeze_dim", self.data.squeeze_dim(dim), &[self], move |_, g| smallvec![Some(g.reshape(&input))])
    }

    /// Broadcasts to `shape` (a view); the gradient is summed back.
    #[track_caller]
    pub fn expand(&self, shape: &[usize]) -> Var<F> {
        if self.shape() == shape {
            return self.clone();
        }
        let input = Shape::from_slice(self.shape());
        Var::record("expand", self.data.expand(shape), &[self], move |_, g| smallvec![Some(g.sum_to(&input))])
    }

    /// Same as [`Var::expand`].
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Var<F> {
        self.expand(shape)
    }

    /// Sums down to `shape`, undoing a broadcast of `shape` to this shape.
    #[track_caller]
    pub fn sum_to(&self, shape: &[usize]) -> Var<F> {
        if self.shape() == shape {
            return self.clone();
        }
        let input = Shape::from_slice(self.shape());
        Var::record("sum_to", self.data.sum_to(shape), &[self], move |_, g| smallvec![Some(g.expand(&input))])
    }

    /// Reverses the listed dims (a view).
    #[track_caller]
    pub fn flip(&self, dims: &[isize]) -> Var<F> {
        let d = dims.to_vec();
        Var::record("flip", self.data.flip(dims), &[self], move |_, g| smallvec![Some(g.flip(&d))])
    }

    /// Keeps `len` elements of `dim` from `start` (a view).
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Var<F> {
        let out = self.data.narrow(dim, start, len);
        let d = norm("narrow", dim, self.rank());
        let size = self.shape()[d];
        let rank = self.rank();
        Var::record("narrow", out, &[self], move |_, g| smallvec![Some(g.pad_dim(rank, d, start, size - start - len))])
    }

    /// `t[start:end:step]` along `dim` (a view).
    #[track_caller]
    pub fn slice(&self, dim: isize, start: usize, end: usize, step: usize) -> Var<F> {
        let out = self.data.slice(dim, start, end, step);
        let d = norm("slice", dim, self.rank());
        let input = Shape::from_slice(self.shape());
        let len = out.shape()[d];
        Var::record("slice", out, &[self], move |_, g| {
            let idx = Tensor::from_fn(&[len], |i| (start + i * step) as i64);
            let zeros = Var::constant(Tensor::zeros(&input));
            smallvec![Some(zeros.index_add(d as isize, &idx, g))]
        })
    }

    /// Fixes `dim` at `index`, removing it (a view).
    #[track_caller]
    pub fn select(&self, dim: isize, index: usize) -> Var<F> {
        let out = self.data.select(dim, index);
        let d = norm("select", dim, self.rank());
        let size = self.shape()[d];
        let rank = self.rank();
        Var::record("select", out, &[self], move |_, g| {
            smallvec![Some(g.unsqueeze(d as isize).pad_dim(rank, d, index, size - index - 1))]
        })
    }

    /// Zero-pads one dim (the gradient of narrowing it).
    fn pad_dim(&self, rank: usize, d: usize, before: usize, after: usize) -> Var<F> {
        let mut pads = vec![(0, 0); rank - d];
        pads[0] = (before, after);
        self.pad(&pads, F::zero())
    }

    /// Constant padding: `pads[i]` is `(before, after)` for dim `rank - pads.len() + i`.
    #[track_caller]
    pub fn pad(&self, pads: &[(usize, usize)], value: F) -> Var<F> {
        let out = self.data.pad(pads, value);
        let input = Shape::from_slice(self.shape());
        let pads = pads.to_vec();
        Var::record("pad", out, &[self], move |_, g| {
            let lead = input.len() - pads.len();
            let mut g = g.clone();
            for (i, &(before, _)) in pads.iter().enumerate() {
                g = g.narrow((lead + i) as isize, before, input[lead + i]);
            }
            smallvec![Some(g)]
        })
    }

    /// Padding with a mode (constant, reflect or replicate); see [`Var::pad`] for `pads`.
    #[track_caller]
    pub fn pad_mode(&self, pads: &[(usize, usize)], mode: PadMode, value: F) -> Var<F> {
        if mode == PadMode::Constant {
            return self.pad(pads, value);
        }
        let out = self.data.pad_mode(pads, mode, value);
        let input = Shape::from_slice(self.shape());
        let pads = pads.to_vec();
        Var::record("pad_mode", out, &[self], move |_, g| smallvec![Some(g.pad_mode_backward(&input, &pads, mode))])
    }

    /// The gradient of [`Var::pad_mode`]: folds padded positions back onto their sources.
    #[track_caller]
    fn pad_mode_backward(&self, input: &[usize], pads: &[(usize, usize)], mode: PadMode) -> Var<F> {
        let out = Tensor::pad_mode_backward(&self.data, input, pads, mode);
        let pads = pads.to_vec();
        Var::record("pad_mode_backward", out, &[self], move |_, g| smallvec![Some(g.pad_mode(&pads, mode, F::zero()))])
    }

    /// Joins along an existing dim.
    #[track_caller]
    pub fn cat(vars: &[&Var<F>], dim: isize) -> Var<F> {
        let tensors: Vec<&Tensor<F>> = vars.iter().map(|v| &v.data).collect();
        let out = Tensor::cat(&tensors, dim);
        let d = norm("cat", dim, out.rank());
        let sizes: Vec<usize> = vars.iter().map(|v| v.shape()[d]).collect();
        Var::record("cat", out, vars, move |ctx, g| {
            let mut start = 0;
            let mut grads: InputGrads<F> = SmallVec::new();
            for (i, &len) in sizes.iter().enumerate() {
                grads.push(ctx.needs_input_grad(i).then(|| g.narrow(d as isize, start, len)));
                start += len;
            }
            grads
        })
    }

    /// Joins along a new dim.
    #[track_caller]
    pub fn stack(vars: &[&Var<F>], dim: isize) -> Var<F> {
        let tensors: Vec<&Tensor<F>> = vars.iter().map(|v| &v.data).collect();
        let out = Tensor::stack(&tensors, dim);
        let d = norm("stack", dim, out.rank()) as isize;
        Var::record("stack", out, vars, move |ctx, g| {
            (0..g.shape()[d as usize]).map(|i| ctx.needs_input_grad(i).then(|| g.select(d, i))).collect()
        })
    }

    /// Splits into pieces of `size` along `dim` (the last may be smaller).
    #[track_caller]
    pub fn split(&self, size: usize, dim: isize) -> Vec<Var<F>> {
        let d = norm("split", dim, self.rank());
        let sizes: Vec<usize> = self.data.split(size, dim).iter().map(|t| t.shape()[d]).collect();
        self.split_sizes(&sizes, dim)
    }

    /// Splits into pieces of the given sizes along `dim`.
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[usize], dim: isize) -> Vec<Var<F>> {
        let total: usize = sizes.iter().sum();
        let d = norm("split_sizes", dim, self.rank());
        assert_eq!(
            total,
            self.shape()[d],
            "split_sizes: sizes {sizes:?} do not sum to dim {d} of shape {:?}",
            self.shape()
        );
        let outputs = self.data.split_sizes(sizes, dim);
        let input = Shape::from_slice(self.shape());
        let sizes = sizes.to_vec();
        // One op with a piece per output: backward writes every piece's gradient into one
        // buffer of the input's shape (zeros where no gradient reached a piece).
        Var::record_multi("split_sizes", outputs, &[self], move |_, gs| {
            let pieces = fill_missing(gs, |i| {
                let mut shape = input.clone();
                shape[d] = sizes[i];
                shape
            });
            smallvec![Some(Var::cat(&pieces.iter().collect::<Vec<_>>(), d as isize))]
        })
    }

    /// Slices along `dim`, one `Var` per index, removing the dim.
    #[track_caller]
    pub fn unbind(&self, dim: isize) -> Vec<Var<F>> {
        let d = norm("unbind", dim, self.rank());
        let outputs: Vec<Tensor<F>> = (0..self.shape()[d]).map(|i| self.data.select(dim, i)).collect();
        let mut piece = Shape::from_slice(self.shape());
        piece.remove(d);
        // As `split_sizes`: the gradients of all slices are stacked into one buffer.
        Var::record_multi("unbind", outputs, &[self], move |_, gs| {
            let slices = fill_missing(gs, |_| piece.clone());
            smallvec![Some(Var::stack(&slices.iter().collect::<Vec<_>>(), d as isize))]
        })
    }

    /// Splits into `chunks` pieces along `dim`, as PyTorch's `chunk`.
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Var<F>> {
        let d = norm("chunk", dim, self.rank());
        let sizes: Vec<usize> = self.data.chunk(chunks, dim).iter().map(|t| t.shape()[d]).collect();
        self.split_sizes(&sizes, dim)
    }
}

/// The gradients of a multi-output op's outputs, zeros (of `shape(i)`) for those none reached.
fn fill_missing<F: Float>(gs: &[Option<Var<F>>], shape: impl Fn(usize) -> Shape) -> Vec<Var<F>> {
    gs.iter().enumerate().map(|(i, g)| g.clone().unwrap_or_else(|| Var::constant(Tensor::zeros(&shape(i))))).collect()
}
