//! `Embedding`: a lookup table of vectors, as `torch.nn.Embedding`.

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Float, Tensor};
use rand::Rng;

use crate::Module;

/// Rows of `weight` (`[num_embeddings, embedding_dim]`, initialised N(0, 1) as PyTorch) looked
/// up by index: indices of shape `S` give `[S..., embedding_dim]`. The gradient reaches only the
/// rows looked up (accumulated when an index repeats). `padding_idx`, `max_norm` and sparse
/// gradients are not offered.
///
/// Use [`Embedding::forward_indices`] with an `i64` tensor. [`Module::forward`] also works (so
/// an embedding can sit in a [`Sequential`](super::Sequential)): it reads a float `Var` holding
/// whole numbers as indices, with no gradient to them.
///
/// ```
/// use ferrograd_nn::layers::Embedding;
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let emb = Embedding::<f32>::new(10, 4, &mut StdRng::seed_from_u64(0));
/// let y = emb.forward_indices(&Tensor::from_vec(vec![1i64, 7, 7], &[3]));
/// assert_eq!(y.shape(), &[3, 4]);
/// ```
#[derive(Debug, Module)]
pub struct Embedding<F: Float = f32> {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Param<F>,
}

impl<F: Float> Embedding<F> {
    /// A table of `num_embeddings` vectors of `embedding_dim`, drawn from N(0, 1).
    pub fn new(num_embeddings: usize, embedding_dim: usize, rng: &mut impl Rng) -> Self {
        Embedding { weight: Param::new(crate::init::normal(&[num_embeddings, embedding_dim], 0.0, 1.0, rng)) }
    }

    /// The rows of `weight` at `indices`.
    ///
    /// # Panics
    /// If an index is negative or not below `num_embeddings`.
    #[track_caller]
    pub fn forward_indices(&self, indices: &Tensor<i64>) -> Var<F> {
        self.forward_indices_with(indices, &self.weight.var())
    }

    /// [`Embedding::forward_indices`] with an explicit table.
    #[track_caller]
    pub fn forward_indices_with(&self, indices: &Tensor<i64>, weight: &Var<F>) -> Var<F> {
        let rows = weight.shape()[0];
        let flat = indices.reshape(&[indices.numel()]);
        if let Some(bad) = flat.to_vec().into_iter().find(|&i| i < 0 || i as usize >= rows) {
            panic!("Embedding: index {bad} is out of range for a table of {rows} embeddings");
        }
        let mut out_shape = indices.shape().to_vec();
        out_shape.push(weight.shape()[1]);
        weight.index_select(0, &flat).reshape(&out_shape)
    }
}

impl<F: Float> Embedding<F> {
    /// Reads `input`'s values as indices (see the type's documentation); also
    /// [`Module::forward`].
    ///
    /// # Panics
    /// If a value is not a whole number in `[0, num_embeddings)`.
    #[track_caller]
    pub fn forward(&self, input: &Var<F>) -> Var<F> {
        // A loop, not `map`: a panic inside a closure would lose the caller's location.
        let values = input.to_vec();
        let mut indices = Vec::with_capacity(values.len());
        for v in values {
            let f = v.to_f64();
            assert!(f.fract() == 0.0, "Embedding: input value {f} is not a whole number, so not an index");
            indices.push(f as i64);
        }
        self.forward_indices(&Tensor::from_vec(indices, input.shape()))
    }
}
