//! Matrix multiplication with PyTorch's `matmul` semantics (1-D, 2-D, batched, broadcast batch
//! dims). 1-D operands become matrices through views, so the core rule only sees N-D by N-D.

use ferrograd_tensor::Float;
use smallvec::smallvec;

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

    #[track_caller]
    fn matmul_nd(&self, other: &Var<F>) -> Var<F> {
        let (a, b) = (self.clone(), other.clone());
        Var::record("matmul", self.data.matmul(&other.data), &[self, other], move |ctx, g| {
            // The transposes are views: the GEMM reads them through their strides.
            smallvec![
                ctx.needs_input_grad(0).then(|| g.matmul_nd(&b.transpose(-1, -2)).sum_to(a.shape())),
                ctx.needs_input_grad(1).then(|| a.transpose(-1, -2).matmul_nd(g).sum_to(b.shape()))
            ]
        })
    }
}
