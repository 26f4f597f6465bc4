//! Softmax and log-softmax along one dim, numerically stable in any layout.
//!
//! Both subtract the max along `dim` before exponentiating, so logits of any magnitude give
//! finite results. The per-group max and sum come from the reduction engine in `reduce.rs`,
//! which picks a cache-friendly traversal whether `dim` is the innermost dim in memory or not;
//! the elementwise passes broadcast those statistics back with stride 0.

use crate::element::Float;
use crate::tensor::Tensor;

impl<E: Float> Tensor<E> {
    /// `exp(x) / sum(exp(x))` along `dim` (negative counts from the end), computed as
    /// `exp(x - max) / sum(exp(x - max))`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 1.0, 1e4, -1e4], &[2, 2]);
    /// let p = x.softmax(-1).to_vec();
    /// assert_eq!(p, vec![0.5, 0.5, 1.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// If `dim` is out of range.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor<E> {
        self.layout.dim("softmax", dim);
        if self.numel() == 0 {
            return Tensor::zeros(self.shape());
        }
        let max = self.max_dims(&[dim], true);
        let mut exp = self.zip_map(&max, "softmax", |x, m| (x - m).exp());
        let sum = exp.sum_dims(&[dim], true);
        exp.zip_inplace(&sum, "softmax", |e, s| e / s);
        exp
    }

    /// `ln(softmax(x))` along `dim`, computed as `(x - max) - ln(sum(exp(x - max)))`, which
    /// stays finite and accurate where taking the log of [`Tensor::softmax`] would give -inf.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1e4f32, -1e4], &[2]);
    /// let l = x.log_softmax(0).to_vec();
    /// assert_eq!(l, vec![0.0, -2e4]);
    /// ```
    ///
    /// # Panics
    /// If `dim` is out of range.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor<E> {
        self.layout.dim("log_softmax", dim);
        if self.numel() == 0 {
            return Tensor::zeros(self.shape());
        }
        let max = self.max_dims(&[dim], true);
        let mut shifted = self.zip_map(&max, "log_softmax", |x, m| x - m);
        let lse = shifted.logsumexp_dims(&[dim], true);
        shifted.zip_inplace(&lse, "log_softmax", |y, l| y - l);
        shifted
    }
}
