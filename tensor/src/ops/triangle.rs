//! Triangular parts of matrices (`tril`, `triu`) and the causal masks attention builds from them.
//!
//! Both act on the last two dims and keep the leading ones as a batch, like PyTorch's. They take
//! any layout and element type (a boolean `tril` is a causal mask), and write one output pass.

use crate::element::Element;
use crate::tensor::Tensor;

impl<E: Element> Tensor<E> {
    /// The lower triangle of the last two dims: element `[.., i, j]` is kept where
    /// `j - i <= diagonal` and set to zero (`false` for booleans) elsewhere. `diagonal = 0` is
    /// the main diagonal, positive values keep diagonals above it, negative ones drop more.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f32>::ones(&[3, 3]);
    /// assert_eq!(x.tril(0).to_vec(), vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    /// assert_eq!(x.tril(-1).to_vec(), vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// If the tensor has fewer than two dims.
    #[track_caller]
    pub fn tril(&self, diagonal: isize) -> Tensor<E> {
        self.triangle("tril", |i, j| j - i <= diagonal)
    }

    /// The upper triangle of the last two dims: element `[.., i, j]` is kept where
    /// `j - i >= diagonal` and set to zero (`false` for booleans) elsewhere.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::<f64>::ones(&[2, 3]);
    /// assert_eq!(x.triu(1).to_vec(), vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    /// ```
    ///
    /// # Panics
    /// If the tensor has fewer than two dims.
    #[track_caller]
    pub fn triu(&self, diagonal: isize) -> Tensor<E> {
        self.triangle("triu", |i, j| j - i >= diagonal)
    }

    #[track_caller]
    fn triangle(&self, op: &str, keep: impl Fn(isize, isize) -> bool) -> Tensor<E> {
        assert!(self.rank() >= 2, "{op}: input shape {:?} has fewer than two dims", self.shape());
        let (rows, cols) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        let src = self.contiguous();
        let data = src.as_slice().expect("contiguous");
        let zero = E::default();
        let mut out = Vec::with_capacity(data.len());
        for (k, &v) in data.iter().enumerate() {
            let (i, j) = (((k / cols.max(1)) % rows.max(1)) as isize, (k % cols.max(1)) as isize);
            out.push(if keep(i, j) { v } else { zero });
        }
        Tensor::from_vec(out, self.shape())
    }
}

impl Tensor<bool> {
    /// The `[rows, cols]` mask that is `true` where `j - i <= diagonal`: `ones(rows, cols).tril(diagonal)`
    /// without the ones. With `diagonal = 0` it is the causal mask of attention (query `i` sees
    /// keys `0..=i`, aligned top-left as PyTorch's `is_causal`).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let m = Tensor::tril_mask(2, 3, 0);
    /// assert_eq!(m.to_vec(), vec![true, false, false, true, true, false]);
    /// ```
    pub fn tril_mask(rows: usize, cols: usize, diagonal: isize) -> Tensor<bool> {
        Tensor::from_fn(&[rows, cols], |k| (k % cols) as isize - (k / cols) as isize <= diagonal)
    }

    /// The `[rows, cols]` mask that is `true` where `j - i >= diagonal`: `ones(rows, cols).triu(diagonal)`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let m = Tensor::triu_mask(2, 2, 1);
    /// assert_eq!(m.to_vec(), vec![false, true, false, false]);
    /// ```
    pub fn triu_mask(rows: usize, cols: usize, diagonal: isize) -> Tensor<bool> {
        Tensor::from_fn(&[rows, cols], |k| (k % cols) as isize - (k / cols) as isize >= diagonal)
    }
}
