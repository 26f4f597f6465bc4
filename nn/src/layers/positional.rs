//! Positional encodings: [`SinusoidalPositionalEncoding`] (fixed, "Attention Is All You Need"),
//! [`LearnedPositionalEncoding`] (a trained table, as in BERT and ViT), both added to a
//! sequence of embeddings, and [`RotaryEmbedding`] (RoPE, Su et al. 2021), which rotates the
//! queries and keys of each head by their position.
//!
//! PyTorch has no layer for these; the names and formulas are those of the papers and of the
//! PyTorch tutorials (`pe[pos, 2i] = sin(pos / 10000^(2i/d))`), and RoPE follows torchtune's
//! `RotaryPositionalEmbeddings` (interleaved pairs) or, with `interleaved: false`, the
//! GPT-NeoX/LLaMA "rotate half" layout.

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Float, Tensor};
use rand::Rng;

use crate::Module;

/// The position axis of a `[T, B, d]` (or `[B, T, d]`, or unbatched `[T, d]`) input.
#[track_caller]
fn check_sequence(op: &str, shape: &[usize], d_model: usize, max_len: usize, batch_first: bool) -> (usize, usize) {
    assert!(
        (shape.len() == 2 || shape.len() == 3) && shape[shape.len() - 1] == d_model,
        "{op}: input shape {shape:?} is not [T, B, {d_model}] ([B, T, {d_model}] with batch_first) or [T, {d_model}]"
    );
    let axis = if shape.len() == 3 && batch_first { 1 } else { 0 };
    let t = shape[axis];
    assert!(t <= max_len, "{op}: input shape {shape:?} has {t} positions, more than max_len {max_len}");
    (axis, t)
}

/// `[T, d]` as the broadcastable table for an input with positions on `axis`.
fn table_for<F: Float>(table: Var<F>, rank: usize, axis: usize) -> Var<F> {
    if rank == 3 && axis == 0 {
        table.unsqueeze(1)
    } else {
        table
    }
}

/// Adds the fixed sinusoidal encoding `pe[pos, 2i] = sin(pos / 10000^(2i/d))`,
/// `pe[pos, 2i+1] = cos(pos / 10000^(2i/d))` to a sequence of embeddings.
///
/// Input `[T, B, d]` (`[B, T, d]` with `batch_first`, or unbatched `[T, d]`), `T <= max_len`.
/// It has no parameters and saves nothing in a `state_dict` (the table is recomputed).
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::SinusoidalPositionalEncoding;
/// use ferrograd_tensor::Tensor;
/// let pe = SinusoidalPositionalEncoding::new(4, 100, true);
/// let x = Var::constant(Tensor::<f64>::zeros(&[2, 3, 4])); // [batch, time, d]
/// let y = pe.forward(&x);
/// // Position 1, pair 0: sin(1), cos(1).
/// assert_eq!(y.data().at(&[0, 1, 0]), 1f64.sin());
/// assert_eq!(y.data().at(&[1, 1, 1]), 1f64.cos());
/// ```
#[derive(Debug, Module)]
#[module(any_float)]
pub struct SinusoidalPositionalEncoding {
    #[module(skip)]
    d_model: usize,
    #[module(skip)]
    max_len: usize,
    #[module(skip)]
    batch_first: bool,
}

impl SinusoidalPositionalEncoding {
    /// An encoding of width `d_model` for up to `max_len` positions; `batch_first` says whether
    /// inputs are `[B, T, d]` rather than `[T, B, d]`.
    pub fn new(d_model: usize, max_len: usize, batch_first: bool) -> Self {
        SinusoidalPositionalEncoding { d_model, max_len, batch_first }
    }

    /// The `[len, d_model]` table.
    pub fn table<F: Float>(&self, len: usize) -> Tensor<F> {
        let d = self.d_model;
        Tensor::from_fn(&[len, d], |k| {
            let (pos, j) = ((k / d) as f64, k % d);
            let freq = (-(10000f64.ln()) * (2 * (j / 2)) as f64 / d as f64).exp();
            F::from_f64(if j % 2 == 0 { (pos * freq).sin() } else { (pos * freq).cos() })
        })
    }

    /// `x` plus the encoding of its positions (also [`Module::forward`]).
    ///
    /// # Panics
    /// If the input is not a sequence of `d_model`-wide embeddings of at most `max_len` positions.
    #[track_caller]
    pub fn forward<F: Float>(&self, x: &Var<F>) -> Var<F> {
        let (axis, t) =
            check_sequence("SinusoidalPositionalEncoding", x.shape(), self.d_model, self.max_len, self.batch_first);
        x + &table_for(Var::constant(self.table(t)), x.rank(), axis)
    }
}

/// Adds a learned `[max_len, d]` table of position embeddings (`weight`, drawn from N(0, 0.02²)
/// as in BERT and ViT) to a sequence of embeddings.
///
/// Input `[T, B, d]` (`[B, T, d]` with `batch_first`, or unbatched `[T, d]`), `T <= max_len`;
/// positions `0..T` use the table's first `T` rows, which alone receive gradient.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::LearnedPositionalEncoding;
/// use ferrograd_nn::Module;
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let pe = LearnedPositionalEncoding::<f32>::new(16, 50, true, &mut StdRng::seed_from_u64(0));
/// let y = pe.forward(&Var::constant(Tensor::zeros(&[2, 10, 16])));
/// assert_eq!(y.shape(), &[2, 10, 16]);
/// assert_eq!(pe.named_parameters()[0].0, "weight");
/// ```
#[derive(Debug, Module)]
pub struct LearnedPositionalEncoding<F: Float = f32> {
    /// `[max_len, d_model]`.
    pub weight: Param<F>,
    #[module(skip)]
    batch_first: bool,
}

impl<F: Float> LearnedPositionalEncoding<F> {
    /// A table for `max_len` positions of width `d_model`; `batch_first` says whether inputs are
    /// `[B, T, d]` rather than `[T, B, d]`.
    pub fn new(d_model: usize, max_len: usize, batch_first: bool, rng: &mut impl Rng) -> Self {
        LearnedPositionalEncoding {
            weight: Param::new(crate::init::normal(&[max_len, d_model], 0.0, 0.02, rng)),
            batch_first,
        }
    }

    /// `x` plus the embeddings of its positions (also [`Module::forward`]).
    ///
    /// # Panics
    /// If the input is not a sequence of `d_model`-wide embeddings of at most `max_len` positions.
    #[track_caller]
    pub fn forward(&self, x: &Var<F>) -> Var<F> {
        let shape = self.weight.shape();
        let (axis, t) = check_sequence("LearnedPositionalEncoding", x.shape(), shape[1], shape[0], self.batch_first);
        x + &table_for(self.weight.var().narrow(0, 0, t), x.rank(), axis)
    }
}

/// Rotary position embedding (RoPE): rotates each pair of features of a query or key at
/// position `p` by the angle `p * base^(-2i/dim)`, so that the dot product of a rotated query
/// and key depends on their positions only through `p_q - p_k`.
///
/// Applied to `[.., T, dim]` (say `[B, heads, T, head_dim]`, before attention), positions
/// `start..start + T` along the second-last dim. With `interleaved` (the default, as RoFormer
/// and torchtune) the pairs are features `(2i, 2i + 1)`; without, `(i, i + dim/2)` as GPT-NeoX
/// and LLaMA's "rotate half". The op is a rotation, so its gradient is the inverse rotation of
/// the output's gradient (exact at every order). It has no parameters.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::RotaryEmbedding;
/// use ferrograd_tensor::Tensor;
/// let rope = RotaryEmbedding::new(8);
/// let q = Var::leaf(Tensor::<f64>::ones(&[2, 4, 5, 8])); // [batch, heads, T, head_dim]
/// let q_rot = rope.forward(&q);
/// assert_eq!(q_rot.shape(), &[2, 4, 5, 8]);
/// // Position 0 is not rotated; a rotation keeps norms.
/// assert_eq!(q_rot.data().at(&[0, 0, 0, 3]), 1.0);
/// let norm = |t: &Tensor<f64>| t.to_vec().iter().map(|v| v * v).sum::<f64>();
/// assert!((norm(q_rot.data()) - norm(q.data())).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, Module)]
#[module(any_float)]
pub struct RotaryEmbedding {
    #[module(skip)]
    dim: usize,
    #[module(skip)]
    base: f64,
    #[module(skip)]
    interleaved: bool,
}

impl RotaryEmbedding {
    /// RoPE over `dim` features (even), base 10000, interleaved pairs.
    ///
    /// # Panics
    /// If `dim` is odd.
    #[track_caller]
    pub fn new(dim: usize) -> Self {
        Self::with_options(dim, 10000.0, true)
    }

    /// RoPE with an explicit `base` and pair layout.
    ///
    /// # Panics
    /// If `dim` is odd.
    #[track_caller]
    pub fn with_options(dim: usize, base: f64, interleaved: bool) -> Self {
        assert!(dim.is_multiple_of(2), "RotaryEmbedding: dim {dim} is odd (features are rotated in pairs)");
        RotaryEmbedding { dim, base, interleaved }
    }

    /// `x` rotated for positions `0..T` (also [`Module::forward`]).
    ///
    /// # Panics
    /// If `x` is not `[.., T, dim]`.
    #[track_caller]
    pub fn forward<F: Float>(&self, x: &Var<F>) -> Var<F> {
        self.forward_from(x, 0)
    }

    /// `x` rotated for positions `start..start + T` (decoding one step at a time with a cache).
    ///
    /// # Panics
    /// If `x` is not `[.., T, dim]`.
    #[track_caller]
    pub fn forward_from<F: Float>(&self, x: &Var<F>, start: usize) -> Var<F> {
        let shape = x.shape();
        assert!(
            shape.len() >= 2 && shape[shape.len() - 1] == self.dim,
            "RotaryEmbedding: input shape {shape:?} is not [.., T, {}]",
            self.dim
        );
        let t = shape[shape.len() - 2];
        let half = self.dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in start..start + t {
            for i in 0..half {
                let angle = p as f64 * self.base.powf(-2.0 * i as f64 / self.dim as f64);
                cos.push(F::from_f64(angle.cos()));
                sin.push(F::from_f64(angle.sin()));
            }
        }
        rotate(x, &cos, &sin, self.interleaved, false)
    }
}

/// Rotates `x` `[.., T, D]` by the angles whose cosines and sines are `cos`, `sin` `[T, D/2]`
/// (by minus those angles if `inverse`); recorded with the inverse rotation as its backward.
#[track_caller]
fn rotate<F: Float>(x: &Var<F>, cos: &[F], sin: &[F], interleaved: bool, inverse: bool) -> Var<F> {
    let shape = x.shape().to_vec();
    let d = shape[shape.len() - 1];
    let t = shape[shape.len() - 2];
    let half = d / 2;
    let src = x.data().contiguous();
    let xs = src.as_slice().expect("contiguous");
    let mut out = vec![F::zero(); xs.len()];
    let sign = if inverse { -F::one() } else { F::one() };
    for (r, (row, o)) in xs.chunks(d.max(1)).zip(out.chunks_mut(d.max(1))).enumerate() {
        let pos = r % t.max(1);
        for i in 0..half {
            let (c, s) = (cos[pos * half + i], sign * sin[pos * half + i]);
            let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
            o[a] = row[a] * c - row[b] * s;
            o[b] = row[b] * c + row[a] * s;
        }
    }
    let (cos, sin) = (cos.to_vec(), sin.to_vec());
    Var::from_op("rotary_embedding", Tensor::from_vec(out, &shape), [x], move |_, g| {
        [Some(rotate(g, &cos, &sin, interleaved, !inverse))].into_iter().collect()
    })
}
