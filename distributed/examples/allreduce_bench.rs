//! All-reduce bandwidth of [`Communicator::all_reduce_into`] on f32 tensors against rsmpi's
//! `all_reduce_into` on plain `Vec<f32>` buffers (MPI's own all-reduce, nothing around it), for
//! 1 MB and 25 MB (DDP's default bucket), plus DDP's `sync_grads` on one 25 MB bucket.
//!
//! ```sh
//! cargo build --release -p ferrograd-distributed --features mpi --example allreduce_bench
//! mpirun -n 2 target/release/examples/allreduce_bench [REPEATS]
//! ```
//!
//! Each figure is the fastest single call (the slowest rank's) of 5 rounds of REPEATS (default
//! 20) calls, the two interleaved round by round so a busy machine hits both alike. Bandwidth is the buffer's bytes over the
//! time of one call (the "algorithm bandwidth" of nccl-tests).

use std::time::Instant;

use ferrograd_autograd::{Grads, Param};
use ferrograd_distributed::mpi::collective::SystemOperation;
use ferrograd_distributed::mpi::traits::CommunicatorCollectives;
use ferrograd_distributed::{main_println, Communicator, DdpOptions, DistributedDataParallel, ReduceOp};
use ferrograd_nn::Module;
use ferrograd_tensor::Tensor;

/// The fastest of `repeats` calls, each started together after a barrier: on a machine busy
/// with other work the fastest call is the one no rank was descheduled in.
fn time(comm: &Communicator, repeats: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        comm.barrier();
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mut all = [best];
    comm.all_reduce_slice_(&mut all, ReduceOp::Max).expect("one value per rank");
    all[0]
}

/// One parameter of `n` elements: a model whose gradients fill one bucket.
struct Flat(Param<f32>);

impl Module<f32> for Flat {
    fn forward(&self, x: &ferrograd_autograd::Var<f32>) -> ferrograd_autograd::Var<f32> {
        x.clone()
    }
    fn params(&self) -> Vec<(&str, &Param<f32>)> {
        vec![("w", &self.0)]
    }
}

fn main() {
    let comm = Communicator::init().expect("MPI");
    let repeats: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    main_println!(comm, "{} ranks, fastest call of 5 rounds of {repeats}", comm.size());
    for mb in [1usize, 25] {
        let n = mb * (1 << 20) / 4;
        let input = Tensor::<f32>::full(&[n], comm.rank() as f32 + 1.0);
        let mut out = Tensor::<f32>::zeros(&[n]);
        let send = vec![comm.rank() as f32 + 1.0; n];
        let mut recv = vec![0.0f32; n];
        let (mut ours, mut raw) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            raw = raw.min(time(&comm, repeats, || {
                comm.raw().all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum())
            }));
            ours = ours.min(time(&comm, repeats, || comm.all_reduce_into(&input, &mut out, ReduceOp::Sum).unwrap()));
        }
        assert_eq!(out.to_vec()[n - 1], recv[n - 1]);
        let gbs = |t: f64| (n * 4) as f64 / t / 1e9;
        main_println!(
            comm,
            "{mb:2} MB: raw MPI {:.3} ms ({:.2} GB/s), Communicator::all_reduce_into {:.3} ms ({:.2} GB/s): {:+.1}%",
            raw * 1e3,
            gbs(raw),
            ours * 1e3,
            gbs(ours),
            (ours / raw - 1.0) * 100.0
        );
    }
    // DDP's path: one 25 MB bucket packed, reduced, averaged and unpacked.
    let n = 25 * (1 << 20) / 4;
    let model = Flat(Param::new(Tensor::zeros(&[n])));
    let ddp = DistributedDataParallel::new(&model, &comm, DdpOptions::default()).expect("DDP");
    let mut grads = Grads::default();
    grads.insert(model.0.id(), Tensor::full(&[n], 1.0));
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        best = best.min(time(&comm, repeats, || ddp.sync_grads(&mut grads).unwrap()));
    }
    main_println!(comm, "25 MB DDP sync_grads (pack, all-reduce, average, unpack): {:.3} ms", best * 1e3);
}
