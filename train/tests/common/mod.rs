//! Helpers shared by the training tests: small datasets, models, temporary directories.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrograd_nn::data::{DataLoader, Mnist, TensorDataset};
use ferrograd_nn::layers::{Linear, ReLU, Sequential};
use ferrograd_nn::Module;
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Three Gaussian blobs in 4-D: `n` samples, labels 0..3.
pub fn blobs(n: usize, seed: u64) -> TensorDataset<f32, i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let noise = Tensor::<f32>::rand_normal(&[n, 4], 0.0, 0.7, &mut rng).to_vec();
    let labels: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    let x: Vec<f32> = noise
        .chunks(4)
        .zip(&labels)
        .flat_map(|(row, &y)| {
            row.iter().enumerate().map(move |(j, v)| v + if j as i64 == y { 2.0 } else { 0.0 }).collect::<Vec<_>>()
        })
        .collect();
    TensorDataset::new(Tensor::from_vec(x, &[n, 4]), Tensor::from_vec(labels, &[n]))
}

/// A 4-16-3 ReLU MLP.
pub fn small_mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new().add(Linear::new(4, 16, &mut rng)).add(ReLU).add(Linear::new(16, 3, &mut rng))
}

/// The main job's 784-128-64-10 MLP.
pub fn mnist_mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .add(Linear::new(784, 128, &mut rng))
        .add(ReLU)
        .add(Linear::new(128, 64, &mut rng))
        .add(ReLU)
        .add(Linear::new(64, 10, &mut rng))
}

/// The first `n` MNIST training images, flattened to `[n, 784]`, and their labels.
pub fn mnist_subset(n: usize) -> TensorDataset<f32, i64> {
    let m = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist")).expect("the MNIST files in data/mnist");
    TensorDataset::new(
        m.train_images.narrow(0, 0, n).reshape(&[n, 784]).contiguous(),
        m.train_labels.narrow(0, 0, n).contiguous(),
    )
}

pub fn loader(ds: &TensorDataset<f32, i64>, batch: usize, seed: u64) -> DataLoader<f32, i64> {
    DataLoader::new(ds.clone(), batch).shuffle(seed)
}

/// Every parameter's bits, by name.
pub fn bits(model: &dyn Module<f32>) -> BTreeMap<String, Vec<u32>> {
    model.state_dict().into_iter().map(|(k, t)| (k, t.to_vec().iter().map(|v| v.to_bits()).collect())).collect()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferrograd-train-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
