//! The Learner under DistributedDataParallel (feature `mpi`, run under `mpirun` by the test
//! itself): 2 and 3 ranks with per-rank batch B and a DistributedLoader end each epoch with the
//! weights of one process's Learner with batch N*B over the same samples, and the same averaged
//! history on every rank.

#[path = "../../distributed/tests/common/mod.rs"]
mod common;

use common::on_ranks;
use ferrograd_distributed::{DdpOptions, DistributedDataParallel, DistributedSampler};
use ferrograd_nn::data::{DataLoader, TensorDataset};
use ferrograd_nn::layers::{Linear, ReLU, Sequential};
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::Module;
use ferrograd_optim::{Adam, GroupOptions, Optim};
use ferrograd_tensor::Tensor;
use ferrograd_train::{Accuracy, DistributedLoader, EarlyStopping, Learner};
use rand::rngs::StdRng;
use rand::SeedableRng;

const B: usize = 4;

fn model(seed: u64) -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new().add(Linear::new(5, 8, &mut rng)).add(ReLU).add(Linear::new(8, 2, &mut rng))
}

#[test]
fn learner_under_ddp_matches_one_process() {
    on_ranks("learner_under_ddp_matches_one_process", &[2, 3], |comm| {
        let (n, me) = (comm.size(), comm.rank());
        let len = 6 * n * B; // whole global batches: no padding, so the same samples as one process
        let mut rng = StdRng::seed_from_u64(3);
        let x = Tensor::<f64>::rand_normal(&[len, 5], 0.0, 1.0, &mut rng);
        let y = x.narrow(1, 0, 1).gt_scalar(0.0).reshape(&[len]).cast::<i64>();
        let ds = TensorDataset::new(x, y);

        let net = model(me as u64);
        let ddp = DistributedDataParallel::new(&net, comm, DdpOptions::default()).unwrap();
        // Unshuffled, the sampler deals rank r positions r, r + n, ...: global batch b of the
        // ranks is batch b of a DataLoader with batch n * B.
        let shard = DistributedLoader::new(ds.clone(), B, DistributedSampler::new(len, n, me).shuffle(false));
        let opt = Optim::new(Adam::default(), net.parameters(), GroupOptions::lr(1e-2));
        let mut learner = Learner::new(&net, opt, cross_entropy)
            .metric(Accuracy::new())
            .callback(EarlyStopping::new("loss").patience(100))
            .distributed(&ddp)
            .quiet();
        let history = learner.fit(&shard, None, 3).unwrap();

        let reference = model(0);
        let opt = Optim::new(Adam::default(), reference.parameters(), GroupOptions::lr(1e-2));
        let mut single = Learner::new(&reference, opt, cross_entropy).metric(Accuracy::new()).quiet();
        let ref_history = single.fit(&DataLoader::new(ds, n * B), None, 3).unwrap();

        for ((name, a), b) in net.state_dict().iter().zip(reference.state_dict().values()) {
            let d = a.max_abs_diff(b);
            assert!(d <= 1e-12, "{name} differs from the one-process Learner by {d:e}");
        }
        assert!(ddp.replicas_equal().unwrap());
        // The averaged epoch loss and accuracy are the whole batch's (equal shard sizes).
        for (e, r) in history.epochs.iter().zip(&ref_history.epochs) {
            for key in ["loss", "accuracy"] {
                let (a, b) = (e.get(key).unwrap(), r.get(key).unwrap());
                assert!((a - b).abs() < 1e-9, "epoch {}: {key} {a} vs {b}", e.epoch);
            }
        }
    });
}

/// Gradient accumulation over 2 batches, with small buckets: the Learner's groups under DDP end
/// with one process's weights whether the averaging overlaps backward (the trace shows it did)
/// or follows it.
#[test]
fn learner_accumulates_under_ddp_with_and_without_overlap() {
    on_ranks("learner_accumulates_under_ddp_with_and_without_overlap", &[2, 3], |comm| {
        use ferrograd_distributed::SyncEvent;
        let (n, me) = (comm.size(), comm.rank());
        let len = 4 * n * B;
        let mut rng = StdRng::seed_from_u64(4);
        let x = Tensor::<f64>::rand_normal(&[len, 5], 0.0, 1.0, &mut rng);
        let y = x.narrow(1, 1, 1).gt_scalar(0.0).reshape(&[len]).cast::<i64>();
        let ds = TensorDataset::new(x, y);
        let reference = model(0);
        let opt = Optim::new(Adam::default(), reference.parameters(), GroupOptions::lr(1e-2));
        Learner::new(&reference, opt, cross_entropy)
            .accumulate(2)
            .quiet()
            .fit(&DataLoader::new(ds.clone(), n * B), None, 2)
            .unwrap();
        for overlap in [true, false] {
            let net = model(me as u64);
            let options = DdpOptions::default().bucket_cap_mb(1e-4).overlap(overlap);
            let ddp = DistributedDataParallel::new(&net, comm, options).unwrap();
            let shard = DistributedLoader::new(ds.clone(), B, DistributedSampler::new(len, n, me).shuffle(false));
            let opt = Optim::new(Adam::default(), net.parameters(), GroupOptions::lr(1e-2));
            Learner::new(&net, opt, cross_entropy)
                .accumulate(2)
                .distributed(&ddp)
                .quiet()
                .fit(&shard, None, 2)
                .unwrap();
            for ((name, a), b) in net.state_dict().iter().zip(reference.state_dict().values()) {
                let d = a.max_abs_diff(b);
                assert!(d <= 1e-12, "overlap {overlap}: {name} differs from the one-process Learner by {d:e}");
            }
            assert!(ddp.replicas_equal().unwrap());
            let trace = ddp.last_sync_trace();
            let at = |e: SyncEvent| trace.iter().position(|t| *t == e).unwrap_or_else(|| panic!("{e:?}: {trace:?}"));
            let (first, end) = (at(SyncEvent::BucketLaunched { bucket: 0 }), at(SyncEvent::BackwardEnd));
            assert_eq!(first < end, overlap, "{trace:?}");
        }
    });
}
