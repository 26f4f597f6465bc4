//! Indexing ops: index_select/index_add and gather/scatter_add are each other's gradients;
//! masked_fill and where_ route the gradient by their mask.

use ferrograd_tensor::{Float, Shape, Tensor};
use smallvec::smallvec;

use crate::Var;

impl<F: Float> Var<F> {
    /// Picks the entries `index` along `dim`.
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor<i64>) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        let idx = index.clone();
        Var::record("index_select", self.data.index_select(dim, index), &[self], move |_, g| {
            smallvec![Some(Var::constant(Tensor::zeros(&input)).index_add(dim, &idx, g))]
        })
    }

    /// `self` plus `src`'s entries added at `index` along `dim` (repeated indices accumulate).
    #[track_caller]
    pub fn index_add(&self, dim: isize, index: &Tensor<i64>, src: &Var<F>) -> Var<F> {
        let idx = index.clone();
        Var::record("index_add", self.data.index_add(dim, index, &src.data), &[self, src], move |ctx, g| {
            smallvec![Some(g.clone()), ctx.needs_input_grad(1).then(|| g.index_select(dim, &idx))]
        })
    }

    /// PyTorch's `gather`: `out[i][j] = self[index[i][j]][j]` for `dim = 0`, and so on.
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor<i64>) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        let idx = index.clone();
        Var::record("gather", self.data.gather(dim, index), &[self], move |_, g| {
            smallvec![Some(Var::constant(Tensor::zeros(&input)).scatter_add(dim, &idx, g))]
        })
    }

    /// `self` plus `src` scattered by `index` along `dim` (repeated indices accumulate).
    #[track_caller]
    pub fn scatter_add(&self, dim: isize, index: &Tensor<i64>, src: &Var<F>) -> Var<F> {
        let idx = index.clone();
        Var::record("scatter_add", self.data.scatter_add(dim, index, &src.data), &[self, src], move |ctx, g| {
            smallvec![Some(g.clone()), ctx.needs_input_grad(1).then(|| g.gather(dim, &idx))]
        })
    }

    /// Replaces elements where `mask` (broadcast to this shape) is true by `value`.
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor<bool>, value: F) -> Var<F> {
        let m = mask.clone();
        Var::record("masked_fill", self.data.masked_fill(mask, value), &[self], move |_, g| {
            smallvec![Some(g.masked_fill(&m, F::zero()))]
        })
    }

    /// `a` where `cond` holds, else `b`, all three broadcast together.
    #[track_caller]
    pub fn where_(cond: &Tensor<bool>, a: &Var<F>, b: &Var<F>) -> Var<F> {
        let out = Tensor::where_(cond, &a.data, &b.data);
        let (sa, sb) = (Shape::from_slice(a.shape()), Shape::from_slice(b.shape()));
        let c = cond.clone();
        Var::record("where", out, &[a, b], move |ctx, g| {
            let not_c = c.logical_not();
            smallvec![
                ctx.needs_input_grad(0).then(|| g.masked_fill(&not_c, F::zero()).sum_to(&sa)),
                ctx.needs_input_grad(1).then(|| g.masked_fill(&c, F::zero()).sum_to(&sb))
            ]
        })
    }
}
