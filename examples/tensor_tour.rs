//! A tour of the tensor and autograd API: views without copies, broadcasting, reductions, a
//! matmul through a transposed view, a convolution, and gradients checked by finite differences.
//!
//! `cargo run --release --example tensor_tour`

use ferrograd::autograd::check::{gradcheck, gradgradcheck};
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};

fn main() {
    // Views share storage: a transpose is new strides over the same buffer.
    let x = Tensor::<f32>::arange(0.0, 6.0, 1.0).reshape(&[2, 3]);
    let xt = x.t();
    println!("x = {:?}\nx.t() strides {:?}, shares storage: {}", x.to_vec(), xt.strides(), xt.shares_storage(&x));
    // Debug shows a view's layout beside its data (so a failing property test shows it too).
    println!("{xt:?}");
    // Columns 1 and 2 of x, as a view: x's strides, starting one element in.
    println!("{:?}", x.slice(1, 1, 3, 1));

    // NumPy broadcasting and reductions over chosen dims.
    let bias = Tensor::from_vec(vec![10.0f32, 20.0, 30.0], &[3]);
    let y = &x + &bias;
    println!("x + bias = {:?}; row sums = {:?}", y.to_vec(), y.sum_dims(&[1], false).to_vec());
    println!("softmax of row 0 = {:?}", y.select(0, 0).softmax(0).to_vec());

    // matmul reads the transposed view through its strides (no copy).
    let gram = x.matmul(&xt);
    println!("x @ x.t() = {:?}", gram.to_vec());

    // A convolution of a random batch (seeded).
    let mut rng = StdRng::seed_from_u64(7);
    let images = Tensor::<f32>::rand_normal(&[4, 1, 28, 28], 0.0, 1.0, &mut rng);
    let kernels = Tensor::<f32>::rand_uniform(&[6, 1, 5, 5], -0.2, 0.2, &mut rng);
    let maps = images.conv2d(&kernels, None, &Conv2dOptions::default()).relu();
    let pooled = maps.max_pool2d(&Pool2dOptions::new([2, 2]));
    println!("conv2d -> {:?}, max_pool2d -> {:?}", maps.shape(), pooled.shape());

    // Autograd: gradients of a small MLP loss, then gradcheck/gradgradcheck in f64.
    let w1 = Var::leaf(Tensor::<f64>::rand_normal(&[3, 4], 0.0, 0.5, &mut rng));
    let w2 = Var::leaf(Tensor::<f64>::rand_normal(&[4, 2], 0.0, 0.5, &mut rng));
    let input = Var::constant(Tensor::<f64>::rand_normal(&[5, 3], 0.0, 1.0, &mut rng));
    let labels = Tensor::from_vec(vec![0i64, 1, 1, 0, 1], &[5, 1]);
    let logits = input.matmul(&w1).tanh().matmul(&w2);
    let loss = logits.log_softmax(1).gather(1, &labels).mean().neg();
    let grads = loss.backward();
    println!("loss = {:.4}, |dL/dw1| = {:.4}", loss.item(), grads.get(&w1).unwrap().square().sum().item().sqrt());

    let mlp = |v: &[Var<f64>]| input.matmul(&v[0]).tanh().matmul(&v[1]).log_softmax(1).gather(1, &labels).mean().neg();
    let params = [w1.data().clone(), w2.data().clone()];
    match (gradcheck(mlp, &params), gradgradcheck(mlp, &params)) {
        (Ok(()), Ok(())) => println!("gradcheck and gradgradcheck: ok"),
        (a, b) => {
            eprintln!("gradient check failed: {a:?} {b:?}");
            std::process::exit(1);
        }
    }
}
