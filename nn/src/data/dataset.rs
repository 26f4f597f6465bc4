//! The `Dataset` trait and `TensorDataset`, samples held as rows of two tensors.

use ferrograd_tensor::{Element, Tensor};

/// A collection of samples addressed by index, as PyTorch's map-style `Dataset`.
pub trait Dataset {
    /// One sample.
    type Item;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Sample `i` (`0 <= i < len()`).
    fn get(&self, i: usize) -> Self::Item;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Inputs `[N, ..]` and targets `[N, ..]` in memory; sample `i` is row `i` of each.
///
/// The element types are independent: `TensorDataset<f32, i64>` holds images and class
/// labels, `TensorDataset<f32, f32>` regression targets.
///
/// ```
/// use ferrograd_nn::data::{Dataset, TensorDataset};
/// use ferrograd_tensor::Tensor;
/// let ds = TensorDataset::new(Tensor::<f32>::zeros(&[4, 3]), Tensor::from_vec(vec![0i64, 1, 1, 0], &[4]));
/// let (x, y) = ds.get(2);
/// assert_eq!((x.shape(), y.item()), (&[3][..], 1));
/// ```
#[derive(Clone, Debug)]
pub struct TensorDataset<X: Element = f32, Y: Element = i64> {
    inputs: Tensor<X>,
    targets: Tensor<Y>,
}

impl<X: Element, Y: Element> TensorDataset<X, Y> {
    /// Pairs `inputs` with `targets` row by row.
    ///
    /// # Panics
    /// If either is a scalar or their first dims differ.
    #[track_caller]
    pub fn new(inputs: Tensor<X>, targets: Tensor<Y>) -> Self {
        assert!(
            inputs.rank() > 0 && targets.rank() > 0 && inputs.shape()[0] == targets.shape()[0],
            "TensorDataset::new: inputs {:?} and targets {:?} need the same first dim",
            inputs.shape(),
            targets.shape()
        );
        TensorDataset { inputs, targets }
    }

    /// All inputs.
    pub fn inputs(&self) -> &Tensor<X> {
        &self.inputs
    }

    /// All targets.
    pub fn targets(&self) -> &Tensor<Y> {
        &self.targets
    }

    /// The samples at `indices`, stacked along a new first dim (copies).
    ///
    /// # Panics
    /// If an index is out of range.
    #[track_caller]
    pub fn batch(&self, indices: &Tensor<i64>) -> (Tensor<X>, Tensor<Y>) {
        (self.inputs.index_select(0, indices), self.targets.index_select(0, indices))
    }
}

impl<X: Element, Y: Element> Dataset for TensorDataset<X, Y> {
    type Item = (Tensor<X>, Tensor<Y>);

    fn len(&self) -> usize {
        self.inputs.shape()[0]
    }

    /// Row `i` of inputs and targets, as views (no copy).
    #[track_caller]
    fn get(&self, i: usize) -> Self::Item {
        (self.inputs.select(0, i), self.targets.select(0, i))
    }
}
