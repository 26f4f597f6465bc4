//! Reductions, softmax and log-softmax. A reduction's gradient is the output gradient
//! broadcast back over the reduced dims (`expand_reduced`), times the local derivative.

use ferrograd_tensor::{normalize_dim, Float, Shape, Tensor};
use smallvec::smallvec;

use super::mask;
use crate::Var;

/// The reduced dims of `dims` against `rank`, sorted and de-negated.
/// The reduced dims of a tensor of `shape`, non-negative and sorted; panics naming `op` on a dim
/// out of range or repeated, as the tensor ops do.
#[track_caller]
fn resolve(op: &str, dims: &[isize], shape: &[usize]) -> Vec<usize> {
    // A loop, not `map`: a panic inside a closure would lose the caller's location.
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        let r = normalize_dim(op, d, shape.len());
        if out.contains(&r) {
            panic!("{op}: dim {d} is repeated in dims {dims:?} for a tensor of shape {shape:?}");
        }
        out.push(r);
    }
    out.sort_unstable();
    out
}

/// Broadcasts a reduction's output (or its gradient) back to the input shape.
fn expand_reduced<F: Float>(g: &Var<F>, input: &[usize], dims: &[usize], keepdim: bool) -> Var<F> {
    let mut g = g.clone();
    if !keepdim && !input.is_empty() {
        for &d in dims {
            g = g.unsqueeze(d as isize);
        }
    }
    g.expand(input)
}

fn all_dims(rank: usize) -> Vec<isize> {
    (0..rank as isize).collect()
}

fn count(shape: &[usize], dims: &[usize]) -> usize {
    dims.iter().map(|&d| shape[d]).product()
}

impl<F: Float> Var<F> {
    /// Sum of all elements (0-d).
    #[track_caller]
    pub fn sum(&self) -> Var<F> {
        self.sum_dims(&all_dims(self.rank()), false)
    }

    /// Sum over `dims`, keeping them as size 1 if `keepdim`.
    #[track_caller]
    pub fn sum_dims(&self, dims: &[isize], keepdim: bool) -> Var<F> {
        let shape = Shape::from_slice(self.shape());
        let d = resolve("sum_dims", dims, self.shape());
        Var::record("sum", self.data.sum_dims(dims, keepdim), &[self], move |_, g| {
            smallvec![Some(expand_reduced(g, &shape, &d, keepdim))]
        })
    }

    /// Mean of all elements (0-d).
    #[track_caller]
    pub fn mean(&self) -> Var<F> {
        self.mean_dims(&all_dims(self.rank()), false)
    }

    /// Mean over `dims`.
    #[track_caller]
    pub fn mean_dims(&self, dims: &[isize], keepdim: bool) -> Var<F> {
        let shape = Shape::from_slice(self.shape());
        let d = resolve("mean_dims", dims, self.shape());
        let n = F::from(count(&shape, &d)).expect("count fits");
        Var::record("mean", self.data.mean_dims(dims, keepdim), &[self], move |_, g| {
            smallvec![Some(expand_reduced(&g.div_scalar(n), &shape, &d, keepdim))]
        })
    }

    /// Maximum over `dims`; the gradient is shared evenly among tied maxima (PyTorch's `amax`).
    #[track_caller]
    pub fn max_dims(&self, dims: &[isize], keepdim: bool) -> Var<F> {
        self.extreme_dims("max_dims", dims, keepdim, self.data.max_dims(dims, keepdim))
    }

    /// Minimum over `dims`; the gradient is shared evenly among tied minima (PyTorch's `amin`).
    #[track_caller]
    pub fn min_dims(&self, dims: &[isize], keepdim: bool) -> Var<F> {
        self.extreme_dims("min_dims", dims, keepdim, self.data.min_dims(dims, keepdim))
    }

    /// Maximum of all elements (0-d).
    #[track_caller]
    pub fn max(&self) -> Var<F> {
        self.max_dims(&all_dims(self.rank()), false)
    }

    /// Minimum of all elements (0-d).
    #[track_caller]
    pub fn min(&self) -> Var<F> {
        self.min_dims(&all_dims(self.rank()), false)
    }

    #[track_caller]
    fn extreme_dims(&self, op: &'static str, dims: &[isize], keepdim: bool, out: Tensor<F>) -> Var<F> {
        let d = resolve(op, dims, self.shape());
        let x = self.clone();
        let saved = out.clone();
        let dims_i: Vec<isize> = d.iter().map(|&v| v as isize).collect();
        Var::record(op, out, &[self], move |_, g| {
            let y = expand_reduced(&Var::constant(saved.clone()), x.shape(), &d, keepdim);
            let hit = x.data.eq(&y.data);
            let share = mask::<F>(&hit);
            let ties = share.data.sum_dims(&dims_i, true);
            let share = Var::constant(Tensor::div(&share.data, &ties));
            smallvec![Some(expand_reduced(g, x.shape(), &d, keepdim).mul(&share))]
        })
    }

    /// Maximum along `dim` with the index of each (first on ties); the gradient goes to that index.
    #[track_caller]
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> (Var<F>, Tensor<i64>) {
        let (v, i) = self.data.max_dim(dim, keepdim);
        (self.indexed_extreme("max_dim", dim, keepdim, v, &i), i)
    }

    /// Minimum along `dim` with the index of each (first on ties); the gradient goes to that index.
    #[track_caller]
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> (Var<F>, Tensor<i64>) {
        let (v, i) = self.data.min_dim(dim, keepdim);
        (self.indexed_extreme("min_dim", dim, keepdim, v, &i), i)
    }

    #[track_caller]
    fn indexed_extreme(
        &self,
        op: &'static str,
        dim: isize,
        keepdim: bool,
        out: Tensor<F>,
        idx: &Tensor<i64>,
    ) -> Var<F> {
        let d = resolve(op, &[dim], self.shape());
        let shape = Shape::from_slice(self.shape());
        let idx = if keepdim || self.rank() == 0 { idx.clone() } else { idx.unsqueeze(d[0] as isize) };
        Var::record(op, out, &[self], move |_, g| {
            let g = if keepdim || shape.is_empty() { g.clone() } else { g.unsqueeze(d[0] as isize) };
            let zeros = Var::constant(Tensor::zeros(&shape));
            smallvec![Some(zeros.scatter_add(d[0] as isize, &idx, &g))]
        })
    }

    /// Product over `dims`. Exact at zeros: an element's gradient is the product of the others.
    #[track_caller]
    pub fn prod_dims(&self, dims: &[isize], keepdim: bool) -> Var<F> {
        let d = resolve("prod_dims", dims, self.shape());
        let x = self.clone();
        let out = self.data.prod_dims(dims, keepdim);
        let saved = out.clone();
        let dims_i: Vec<isize> = d.iter().map(|&v| v as isize).collect();
        Var::record("prod", out, &[self], move |ctx, g| {
            let shape = x.shape();
            let is_zero = x.data.eq_scalar(F::zero());
            let zeros_in_slice = mask::<F>(&is_zero).data.sum_dims(&dims_i, true);
            // Product of the others: out / x where x != 0. For a zero x_i it is
            // (prod of x with zeros as 1) / (x_i + 1) times the product of the slice's other
            // zeros: 1 for a lone zero, the other zero's value x_k for two (written as
            // sum(zeros) - x_i, so that it depends on x_k alone), 0 for more. Each branch is
            // the true function near x, so create_graph gets the second derivatives right,
            // d²prod / dx_i dx_k among them.
            let z = mask::<F>(&is_zero);
            let x_nz = x.add(&z);
            let prod_nz = x_nz.prod_dims(&dims_i, true);
            let lone_zero = mask::<F>(&zeros_in_slice.eq_scalar(F::one()));
            let two_zeros = mask::<F>(&zeros_in_slice.eq_scalar(F::from_f64(2.0)));
            let other_zero = z.mul(&x).sum_dims(&dims_i, true).sub(&x);
            let other_zeros = lone_zero.add(&two_zeros.mul(&other_zero));
            let y = expand_reduced(&ctx.output(&saved), shape, &d, keepdim);
            let others = z.rsub_scalar(F::one()).mul(&y.div(&x_nz)).add(&z.mul(&prod_nz.div(&x_nz).mul(&other_zeros)));
            smallvec![Some(expand_reduced(g, shape, &d, keepdim).mul(&others))]
        })
    }

    /// Product of all elements (0-d).
    #[track_caller]
    pub fn prod(&self) -> Var<F> {
        self.prod_dims(&all_dims(self.rank()), false)
    }

    /// Variance over `dims` with `correction` (1: unbiased, PyTorch's default).
    #[track_caller]
    pub fn var_dims(&self, dims: &[isize], correction: usize, keepdim: bool) -> Var<F> {
        self.variance("var_dims", dims, correction, keepdim)
    }

    /// [`Var::var_dims`], with `op` naming the public op in error messages.
    #[track_caller]
    fn variance(&self, op: &str, dims: &[isize], correction: usize, keepdim: bool) -> Var<F> {
        let d = resolve(op, dims, self.shape());
        let x = self.clone();
        let dims_i: Vec<isize> = d.iter().map(|&v| v as isize).collect();
        let n = count(self.shape(), &d);
        let scale = F::from(2.0 / (n as f64 - correction as f64)).expect("scale fits");
        Var::record("var", self.data.var_dims(dims, correction, keepdim), &[self], move |_, g| {
            let centered = x.sub(&x.mean_dims(&dims_i, true));
            smallvec![Some(expand_reduced(g, x.shape(), &d, keepdim).mul(&centered).mul_scalar(scale))]
        })
    }

    /// Standard deviation over `dims` with `correction`.
    #[track_caller]
    pub fn std_dims(&self, dims: &[isize], correction: usize, keepdim: bool) -> Var<F> {
        self.variance("std_dims", dims, correction, keepdim).sqrt()
    }

    /// Variance of all elements with `correction`.
    #[track_caller]
    pub fn var(&self, correction: usize) -> Var<F> {
        self.var_dims(&all_dims(self.rank()), correction, false)
    }

    /// Standard deviation of all elements with `correction`.
    #[track_caller]
    pub fn std(&self, correction: usize) -> Var<F> {
        self.std_dims(&all_dims(self.rank()), correction, false)
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably.
    #[track_caller]
    pub fn logsumexp_dims(&self, dims: &[isize], keepdim: bool) -> Var<F> {
        let d = resolve("logsumexp_dims", dims, self.shape());
        let x = self.clone();
        let out = self.data.logsumexp_dims(dims, keepdim);
        let saved = out.clone();
        Var::record("logsumexp", out, &[self], move |ctx, g| {
            let y = expand_reduced(&ctx.output(&saved), x.shape(), &d, keepdim);
            smallvec![Some(expand_reduced(g, x.shape(), &d, keepdim).mul(&x.sub(&y).exp()))]
        })
    }

    /// `log(sum(exp(x)))` over all elements (0-d).
    #[track_caller]
    pub fn logsumexp(&self) -> Var<F> {
        self.logsumexp_dims(&all_dims(self.rank()), false)
    }

    /// Softmax along `dim`.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Var<F> {
        let out = self.data.softmax(dim);
        let saved = out.clone();
        Var::record("softmax", out, &[self], move |ctx, g| {
            let y = ctx.output(&saved);
            let dot = g.mul(&y).sum_dims(&[dim], true);
            smallvec![Some(y.mul(&g.sub(&dot)))]
        })
    }

    /// Log-softmax along `dim`, stable for large logits.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Var<F> {
        let out = self.data.log_softmax(dim);
        let saved = out.clone();
        Var::record("log_softmax", out, &[self], move |ctx, g| {
            let y = ctx.output(&saved);
            smallvec![Some(g.sub(&y.exp().mul(&g.sum_dims(&[dim], true))))]
        })
    }
}
