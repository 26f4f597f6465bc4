//! `DataLoader`: mini-batches of a [`TensorDataset`], shuffled by a seeded RNG.

use ferrograd_tensor::{Element, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{Dataset, TensorDataset};

/// Splits a dataset into batches of `batch_size` samples, optionally shuffled.
///
/// The order of epoch `e` depends only on the seed and `e`: every epoch is a different
/// permutation, and the same seed replays the same sequence of epochs (epochs can be visited in
/// any order, e.g. when resuming). Each batch is gathered with one `index_select` per tensor.
///
/// ```
/// use ferrograd_nn::data::{DataLoader, TensorDataset};
/// use ferrograd_tensor::Tensor;
/// let ds = TensorDataset::new(Tensor::<f32>::zeros(&[10, 3]), Tensor::<i64>::zeros(&[10]));
/// let loader = DataLoader::new(ds, 4).shuffle(42).drop_last(true);
/// assert_eq!(loader.num_batches(), 2);
/// for (x, y) in loader.iter_epoch(0) {
///     assert_eq!((x.shape(), y.shape()), (&[4, 3][..], &[4][..]));
/// }
/// ```
#[derive(Clone, Debug)]
pub struct DataLoader<X: Element = f32, Y: Element = i64> {
    dataset: TensorDataset<X, Y>,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
}

impl<X: Element, Y: Element> DataLoader<X, Y> {
    /// Batches in dataset order, keeping a short last batch.
    ///
    /// # Panics
    /// If `batch_size` is 0.
    #[track_caller]
    pub fn new(dataset: TensorDataset<X, Y>, batch_size: usize) -> Self {
        assert!(batch_size > 0, "DataLoader::new: batch_size must be positive");
        DataLoader { dataset, batch_size, seed: None, drop_last: false }
    }

    /// Shuffles every epoch with a [`StdRng`] derived from `seed` and the epoch number.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether a last batch smaller than `batch_size` is dropped.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &TensorDataset<X, Y> {
        &self.dataset
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The sample order of epoch `epoch` (identity when not shuffling).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if let Some(seed) = self.seed {
            // Mixing the epoch in with a large odd constant gives unrelated streams per epoch.
            let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The batches `(inputs, targets)` of epoch `epoch`.
    pub fn iter_epoch(&self, epoch: u64) -> Batches<'_, X, Y> {
        Batches { loader: self, order: self.epoch_order(epoch), next: 0, remaining: self.num_batches() }
    }
}

/// The batches of one epoch, from [`DataLoader::iter_epoch`].
#[derive(Debug)]
pub struct Batches<'a, X: Element, Y: Element> {
    loader: &'a DataLoader<X, Y>,
    order: Vec<usize>,
    next: usize,
    remaining: usize,
}

impl<X: Element, Y: Element> Iterator for Batches<'_, X, Y> {
    type Item = (Tensor<X>, Tensor<Y>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let end = (self.next + self.loader.batch_size).min(self.order.len());
        let idx: Vec<i64> = self.order[self.next..end].iter().map(|&i| i as i64).collect();
        self.next = end;
        let len = idx.len();
        Some(self.loader.dataset.batch(&Tensor::from_vec(idx, &[len])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<X: Element, Y: Element> ExactSizeIterator for Batches<'_, X, Y> {}
