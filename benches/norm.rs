//! BatchNorm2d (and BatchNorm1d on `[N, C]`, an MLP's hidden layer) in training mode, forward and backward (the input's, weight's and bias's
//! gradients from a given output gradient), in samples per second on `MATMUL_NUM_THREADS`
//! threads (the id ends in `/t1`, `/t2`, ...). `benches/compare/norm_torch.py` times the same in
//! PyTorch (`y.backward(g)`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrograd::autograd::{grad_with, BackwardOptions, Var};
use ferrograd::nn::layers::{BatchNorm1d, BatchNorm2d};
use ferrograd::tensor::rand::rngs::StdRng;
use ferrograd::tensor::rand::SeedableRng;
use ferrograd::tensor::{num_threads, Tensor};
use std::hint::black_box;
use std::time::Duration;

/// (name, [N, C, H, W]): after a first convolution of a small CNN, and deeper, narrower planes.
const CASES: [(&str, [usize; 4]); 2] = [("64x16x24x24", [64, 16, 24, 24]), ("128x64x8x8", [128, 64, 8, 8])];

fn batch_norm(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let threads = format!("t{}", num_threads());
    let mut group = c.benchmark_group("batch_norm2d_train");
    group.measurement_time(Duration::from_secs(3));
    let opts = BackwardOptions { retain_graph: false, create_graph: false };
    for (name, shape) in CASES {
        let bn = BatchNorm2d::<f32>::new(shape[1]);
        let x = Var::leaf(Tensor::<f32>::rand_uniform(&shape, -1.0, 2.0, &mut rng));
        let g = Var::constant(Tensor::<f32>::rand_uniform(&shape, -1.0, 1.0, &mut rng));
        let params = [x.clone(), bn.weight.as_ref().expect("affine").var(), bn.bias.as_ref().expect("affine").var()];
        group.throughput(Throughput::Elements(shape[0] as u64));
        group.bench_function(BenchmarkId::new(format!("{name}/fwd_bwd"), &threads), |b| {
            b.iter(|| {
                let y = bn.forward_with(black_box(&x), Some(&params[1]), Some(&params[2]));
                grad_with(&[y], &params, Some(std::slice::from_ref(&g)), opts)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("batch_norm1d_train");
    group.measurement_time(Duration::from_secs(3));
    let shape = [256, 512];
    let bn = BatchNorm1d::<f32>::new(shape[1]);
    let x = Var::leaf(Tensor::<f32>::rand_uniform(&shape, -1.0, 2.0, &mut rng));
    let g = Var::constant(Tensor::<f32>::rand_uniform(&shape, -1.0, 1.0, &mut rng));
    let params = [x.clone(), bn.weight.as_ref().expect("affine").var(), bn.bias.as_ref().expect("affine").var()];
    group.throughput(Throughput::Elements(shape[0] as u64));
    group.bench_function(BenchmarkId::new("256x512/fwd_bwd", &threads), |b| {
        b.iter(|| {
            let y = bn.forward_with(black_box(&x), Some(&params[1]), Some(&params[2]));
            grad_with(&[y], &params, Some(std::slice::from_ref(&g)), opts)
        })
    });
    group.finish();
}

criterion_group!(benches, batch_norm);
criterion_main!(benches);
