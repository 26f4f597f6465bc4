//! Data loading: datasets, a batching and shuffling loader, IDX/MNIST files and augmentation.
