//! With a seed, training is bit-identical across runs and across thread counts: a few Adam steps
//! of the MLP, of LeNet-5 (the models of `examples/mnist_mlp.rs` and `examples/mnist_cnn.rs`)
//! and of a two-layer bidirectional LSTM reading images row by row (`examples/mnist_lstm.rs`)
//! on 1, 2 and 3 threads end with the same parameters, bit for bit, and the same losses.
//!
//! The thread settings are process-wide, so one test sets them and trains both models in turn.
//! The work threshold is lowered to 0 so that these small batches are split over threads
//! wherever a kernel can split them (the Adam step splits by itself: the MLP's 784x128 weight is
//! cut into per-thread chunks).

use std::collections::BTreeMap;

use ferrograd::nn::layers::{Conv2d, Conv2dConfig, Flatten, Linear, MaxPool2d, RNNConfig, ReLU, Sequential, LSTM};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, Rng, SeedableRng};
use ferrograd::tensor::{min_work_per_thread, num_threads, set_min_work_per_thread, set_num_threads};

fn mlp(rng: &mut StdRng) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 128, rng))
        .add(ReLU)
        .add(Linear::new(128, 64, rng))
        .add(ReLU)
        .add(Linear::new(64, 10, rng))
}

fn lenet(rng: &mut StdRng) -> Sequential {
    let pad2 = Conv2dConfig { padding: [2, 2], ..Default::default() };
    Sequential::new()
        .add(Conv2d::with_config(1, 6, [5, 5], pad2, rng))
        .add(ReLU)
        .add(MaxPool2d::new([2, 2]))
        .add(Conv2d::new(6, 16, [5, 5], rng))
        .add(ReLU)
        .add(MaxPool2d::new([2, 2]))
        .add(Flatten::default())
        .add(Linear::new(400, 120, rng))
        .add(ReLU)
        .add(Linear::new(120, 84, rng))
        .add(ReLU)
        .add(Linear::new(84, 10, rng))
}

/// An LSTM (2 layers, bidirectional) over an image's rows, its last layer's final hidden states
/// (both directions) to 10 logits.
#[derive(Module)]
#[module(forward = logits)]
struct RowLstm {
    lstm: LSTM,
    head: Linear,
}

impl RowLstm {
    fn new(rng: &mut StdRng) -> Self {
        let config = RNNConfig { batch_first: true, num_layers: 2, bidirectional: true, ..Default::default() };
        RowLstm { lstm: LSTM::with_config(28, 24, config, rng), head: Linear::new(48, 10, rng) }
    }

    fn logits(&self, images: &Var) -> Var {
        let b = images.shape()[0];
        let (_, (h_n, _)) = self.lstm.forward(&images.reshape(&[b, 28, 28]), None, None);
        // h_n is [layers * directions, B, hidden]: the last layer's two directions side by side.
        let last = Var::cat(&[&h_n.select(0, 2), &h_n.select(0, 3)], 1);
        self.head.forward(&last)
    }
}

/// The parameters' bits after `steps` Adam steps on seeded random batches of `batch` images of
/// `image` shape, and the bits of every loss.
fn train<M: Module>(
    model: fn(&mut StdRng) -> M,
    image: &[usize],
    batch: usize,
    steps: usize,
) -> (BTreeMap<String, Vec<u32>>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(7);
    let model = model(&mut rng);
    let mut opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
    let shape: Vec<usize> = [batch].iter().chain(image).copied().collect();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let x = Tensor::<f32>::rand_uniform(&shape, 0.0, 1.0, &mut rng);
        let y = Tensor::from_vec((0..batch).map(|_| rng.random_range(0..10i64)).collect(), &[batch]);
        let loss = cross_entropy(&model.forward(&Var::constant(x)), &y);
        losses.push(loss.item().to_bits());
        opt.step(&loss.backward());
    }
    let params =
        model.state_dict().into_iter().map(|(k, v)| (k, v.to_vec().iter().map(|p| p.to_bits()).collect())).collect();
    (params, losses)
}

/// Asserts that training gives the same bits on 1, 2 and 3 threads, and on 2 threads again.
fn same_on_1_2_3_threads(name: &str, run: impl Fn() -> (BTreeMap<String, Vec<u32>>, Vec<u32>)) {
    set_num_threads(1);
    let (params, losses) = run();
    for threads in [2, 3, 2] {
        set_num_threads(threads);
        let (p, l) = run();
        assert_eq!(l, losses, "{name}: losses differ between 1 and {threads} threads");
        for (key, want) in &params {
            let diff = want.iter().zip(&p[key]).filter(|(a, b)| a != b).count();
            assert!(
                diff == 0,
                "{name}: {diff} of {} elements of {key} differ between 1 and {threads} threads",
                want.len()
            );
        }
    }
}

#[test]
fn mlp_and_lenet_train_bit_identically_on_1_2_and_3_threads() {
    let (old_threads, old_min_work) = (num_threads(), min_work_per_thread());
    set_min_work_per_thread(0);
    same_on_1_2_3_threads("mlp", || train(mlp, &[784], 24, 3));
    // Batch 64 as in examples/mnist_cnn.rs: the convolutions' weight gradients are big enough
    // to be cut into blocks (2 and 5) that the threads share.
    same_on_1_2_3_threads("lenet", || train(lenet, &[1, 28, 28], 64, 2));
    same_on_1_2_3_threads("lstm", || train(RowLstm::new, &[1, 28, 28], 32, 2));
    set_num_threads(old_threads);
    set_min_work_per_thread(old_min_work);
}
