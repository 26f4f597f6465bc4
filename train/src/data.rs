//! Where the [`Learner`](crate::Learner) takes its batches from: any [`DataSource`], of which
//! nn's [`DataLoader`] is one.
//!
//! A source hands out the batches of an epoch starting at any batch, so a resumed run continues
//! mid-epoch without gathering the batches it already trained on, and each batch carries the
//! dataset indices of its samples (a distillation step looks its teacher's cached logits up by
//! them). A data-parallel run plugs in a source that yields only its rank's shard of each epoch
//! (a `DistributedSampler` over the same order).

use ferrograd_nn::data::DataLoader;
use ferrograd_tensor::{Element, Float, Tensor};

/// One batch: inputs, targets and the dataset indices of its samples.
#[derive(Clone, Debug)]
pub struct Batch<F: Float = f32, Y: Element = i64> {
    /// The inputs, `[batch, ...]`.
    pub inputs: Tensor<F>,
    /// The targets, `[batch, ...]`.
    pub targets: Tensor<Y>,
    /// The index of each sample in its dataset, `[batch]`.
    pub indices: Tensor<i64>,
}

impl<F: Float, Y: Element> Batch<F, Y> {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.indices.numel()
    }

    /// Whether the batch has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The batches of each epoch, in an order that depends only on the epoch (so a resumed run sees
/// the same batches as an uninterrupted one).
pub trait DataSource<F: Float = f32, Y: Element = i64> {
    /// The number of batches in `epoch`.
    fn epoch_len(&self, epoch: u64) -> usize;
    /// The batches of `epoch` from batch `start` (counted from 0) to the end of the epoch.
    fn batches(&self, epoch: u64, start: usize) -> Box<dyn Iterator<Item = Batch<F, Y>> + '_>;
}

/// A [`DataLoader`] yields the batches of its [`DataLoader::iter_epoch`], with their indices.
///
/// ```
/// use ferrograd_nn::data::{DataLoader, TensorDataset};
/// use ferrograd_tensor::Tensor;
/// use ferrograd_train::DataSource;
/// let ds = TensorDataset::new(Tensor::<f32>::arange(0.0, 10.0, 1.0), Tensor::<i64>::zeros(&[10]));
/// let loader = DataLoader::new(ds, 4).shuffle(7);
/// let all: Vec<f32> = loader.iter_epoch(3).flat_map(|(x, _)| x.to_vec()).collect();
/// let tail: Vec<f32> = loader.batches(3, 1).flat_map(|b| b.inputs.to_vec()).collect();
/// assert_eq!(tail, all[4..]);
/// ```
impl<F: Float, Y: Element> DataSource<F, Y> for DataLoader<F, Y> {
    fn epoch_len(&self, _epoch: u64) -> usize {
        DataLoader::num_batches(self)
    }

    fn batches(&self, epoch: u64, start: usize) -> Box<dyn Iterator<Item = Batch<F, Y>> + '_> {
        let order = self.epoch_order(epoch);
        let (bs, n) = (self.batch_size(), DataLoader::num_batches(self));
        let dataset = self.dataset();
        Box::new((start..n).map(move |b| {
            let end = ((b + 1) * bs).min(order.len());
            let idx: Vec<i64> = order[b * bs..end].iter().map(|&i| i as i64).collect();
            let indices = Tensor::from_vec(idx, &[end - b * bs]);
            let (inputs, targets) = dataset.batch(&indices);
            Batch { inputs, targets, indices }
        }))
    }
}
