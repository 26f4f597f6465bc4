//! `tril` and `triu`: each keeps a triangle of the last two dims, so its gradient is the same
//! triangle of the output's gradient.

use ferrograd_tensor::Float;
use smallvec::smallvec;

use crate::Var;

impl<F: Float> Var<F> {
    /// The lower triangle of the last two dims (`j - i <= diagonal` kept, the rest zero), as
    /// [`Tensor::tril`](ferrograd_tensor::Tensor::tril); the gradient flows to the kept elements.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let x = Var::leaf(Tensor::<f64>::ones(&[2, 2]));
    /// let g = x.tril(0).sum().backward();
    /// assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0, 0.0, 1.0, 1.0]);
    /// ```
    ///
    /// # Panics
    /// If the value has fewer than two dims.
    #[track_caller]
    pub fn tril(&self, diagonal: isize) -> Var<F> {
        Var::record("tril", self.data.tril(diagonal), &[self], move |_, g| smallvec![Some(g.tril(diagonal))])
    }

    /// The upper triangle of the last two dims (`j - i >= diagonal` kept, the rest zero), as
    /// [`Tensor::triu`](ferrograd_tensor::Tensor::triu); the gradient flows to the kept elements.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let x = Var::leaf(Tensor::<f64>::ones(&[2, 3]));
    /// let g = x.triu(1).sum().backward();
    /// assert_eq!(g.get(&x).unwrap().to_vec(), vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    /// ```
    ///
    /// # Panics
    /// If the value has fewer than two dims.
    #[track_caller]
    pub fn triu(&self, diagonal: isize) -> Var<F> {
        Var::record("triu", self.data.triu(diagonal), &[self], move |_, g| smallvec![Some(g.triu(diagonal))])
    }
}
