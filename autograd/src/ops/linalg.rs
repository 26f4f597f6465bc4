//! Matrix multiplication with PyTorch's `matmul` semantics (1-D, 2-D, batched, broadcast batch
//! dims). 1-D operands become matrices through views, so the core rule only sees N-D by N-D.

use ferrograd_tensor::Float;
use smallvec::{smallvec, SmallVec};

use crate::var::InputGrads;
use crate::Var;

impl<F: Float> Var<F> {
    /// Matrix product with PyTorch's `matmul` semantics.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let a = Var::leaf(Tensor::<f64>::ones(&[2, 3]));
    /// let b = Var::leaf(Tensor::<f64>::ones(&[3, 4]));
    /// let grads = a.matmul(&b).sum().backward();
    /// assert_eq!(grads.get(&a).unwrap().to_vec(), vec![4.0; 6]);
    /// ```
    #[track_caller]
    pub fn matmul(&self, other: &Var<F>) -> Var<F> {
        assert!(
            self.rank() >= 1 && other.rank() >= 1,
            "matmul: shapes {:?} and {:?}: both operands need at least one dim",
            self.shape(),
            other.shape()
        );
        // Checked here, before the vectors become matrices, so the message shows the caller's shapes.
        let (k, k2) = (self.shape()[self.rank() - 1], other.shape()[other.rank().saturating_sub(2)]);
        assert!(k == k2, "matmul: shapes {:?} and {:?} are not compatible ({k} != {k2})", self.shape(), other.shape());
        let a = if self.rank() == 1 { self.unsqueeze(0) } else { self.clone() };
        let b = if other.rank() == 1 { other.unsqueeze(1) } else { other.clone() };
        let mut out = a.matmul_nd(&b);
        if other.rank() == 1 {
            out = out.squeeze_dim(-1);
        }
        if self.rank() == 1 {
            out = out.squeeze_dim(if other.rank() == 1 { -1 } else { -2 });
        }
        out
    }

    /// `self · weightᵀ + bias` over the last dim (PyTorch's `nn.functional.linear`): `self`
    /// `[.., in]`, `weight` `[out, in]`, `bias` `[out]`. One recorded op ([`Tensor::linear`]:
    /// the bias added in place to the product), whose backward is three Var ops (`g · W`,
    /// `gᵀ · x` over all leading dims, and `g` summed over them), so it has every higher
    /// derivative.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let x = Var::leaf(Tensor::<f64>::ones(&[4, 2, 3]));
    /// let w = Var::leaf(Tensor::<f64>::ones(&[5, 3]));
    /// let b = Var::leaf(Tensor::<f64>::zeros(&[5]));
    /// let y = x.linear(&w, Some(&b));
    /// assert_eq!(y.shape(), &[4, 2, 5]);
    /// let grads = y.sum().backward();
    /// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![8.0; 15]);
    /// assert_eq!(grads.get(&b).unwrap().to_vec(), vec![8.0; 5]);
    /// ```
    ///
    /// # Panics
    /// As [`Tensor::linear`], naming the shapes.
    ///
    /// [`Tensor::linear`]: ferrograd_tensor::Tensor::linear
    #[track_caller]
    pub fn linear(&self, weight: &Var<F>, bias: Option<&Var<F>>) -> Var<F> {
        let out = self.data.linear(&weight.data, bias.map(|b| &b.data));
        let (x, w) = (self.clone(), weight.clone());
        let mut inputs: SmallVec<[&Var<F>; 3]> = smallvec![self, weight];
        inputs.extend(bias);
        Var::record("linear", out, &inputs, move |ctx, g| {
            let (k, n) = (w.shape()[1], w.shape()[0]);
            let rows: usize = x.shape()[..x.rank() - 1].iter().product();
            let g2 = g.reshape(&[rows, n]);
            let mut grads: InputGrads<F> = smallvec![
                ctx.needs_input_grad(0).then(|| g2.matmul_nd(&w).reshape(x.shape())),
                ctx.needs_input_grad(1).then(|| g2.transpose(-1, -2).matmul_nd(&x.reshape(&[rows, k]))),
            ];
            if ctx.needs_input_grad(2) {
                grads.push(Some(g2.sum_to(&[n])));
            }
            grads
        })
    }

    #[track_caller]
    fn matmul_nd(&self, other: &Var<F>) -> Var<F> {
        let (a, b) = (self.clone(), other.clone());
        let matrices = a.rank() == 2 && b.rank() == 2;
        Var::record("matmul", self.data.matmul(&other.data), &[self, other], move |ctx, g| {
            // The transposes are views: the GEMM reads them through their strides. A matrix
            // operand stored column-major (`Linear`'s `weight.t()`) gets its gradient computed
            // transposed, `(g b^T)^T = b g^T`, so the gradient lands in its memory order: after
            // the `t` backward the weight's gradient is contiguous, and the optimizer no longer
            // copies it element by element through a stride (17% of an MLP step at batch 128).
            smallvec![
                ctx.needs_input_grad(0).then(|| if matrices && column_major(&a) {
                    b.matmul_nd(&g.transpose(-1, -2)).transpose(-1, -2)
                } else {
                    g.matmul_nd(&b.transpose(-1, -2)).sum_to(a.shape())
                }),
                ctx.needs_input_grad(1).then(|| if matrices && column_major(&b) {
                    g.transpose(-1, -2).matmul_nd(&a).transpose(-1, -2)
                } else {
                    a.transpose(-1, -2).matmul_nd(g).sum_to(b.shape())
                })
            ]
        })
    }
}

/// Whether the matrix `x` is not contiguous but its transpose is.
fn column_major<F: Float>(x: &Var<F>) -> bool {
    !x.data.is_contiguous() && x.data.t().is_contiguous()
}
