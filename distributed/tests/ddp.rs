//! DistributedDataParallel against one process: N ranks with per-rank batch B end every step with
//! the weights of one process training on the same N*B samples (to 1e-6 in f32, 1e-12 in f64)
//! over 50 steps, and all ranks hold bit-identical weights after every step. With BatchNorm, the
//! one-process reference normalises each rank's B samples separately (what the ranks do) and
//! keeps one set of running statistics per rank, which must match that rank's. The MLP runs both
//! ways of averaging: `DistributedDataParallel::backward` (each bucket's all-reduce started during
//! backward, as the trace shows) and `backward` then `sync_grads`.

mod common;

use common::on_ranks;
use ferrograd_autograd::{Grads, Var};
use ferrograd_distributed::{Communicator, DdpOptions, DistError, DistributedDataParallel, MpiFloat, SyncEvent};
use ferrograd_nn::layers::{BatchNorm1d, Linear, ReLU, Sequential};
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::Module;
use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd};
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STEPS: usize = 50;
const B: usize = 4;
const IN: usize = 6;
const CLASSES: usize = 3;

fn mlp<F: MpiFloat>(seed: u64) -> Sequential<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new().add(Linear::new(IN, 16, &mut rng)).add(ReLU).add(Linear::new(16, CLASSES, &mut rng))
}

fn bn_net<F: MpiFloat>(seed: u64) -> Sequential<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .add(Linear::new(IN, 12, &mut rng))
        .add(BatchNorm1d::new(12))
        .add(ReLU)
        .add(Linear::new(12, CLASSES, &mut rng))
}

/// The global batch of `step`: N*B samples, the same on every rank.
fn global_batch<F: MpiFloat>(step: usize, n: usize) -> (Tensor<F>, Tensor<i64>) {
    let mut rng = StdRng::seed_from_u64(1000 + step as u64);
    let x = Tensor::rand_normal(&[n * B, IN], F::zero(), F::one(), &mut rng);
    let y: Vec<i64> = (0..n * B).map(|_| rng.random_range(0..CLASSES as i64)).collect();
    (x, Tensor::from_vec(y, &[n * B]))
}

fn sgd<F: MpiFloat>(model: &dyn Module<F>) -> Optim<F, Sgd> {
    Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, model.parameters(), GroupOptions::lr(0.1))
}

fn assert_close<F: MpiFloat>(what: &str, a: &dyn Module<F>, b: &dyn Module<F>, tol: f64, step: usize) {
    let (sa, sb) = (a.state_dict(), b.state_dict());
    for (name, t) in &sa {
        let d = t.max_abs_diff(&sb[name]).to_f64();
        assert!(d <= tol, "{what}, step {step}: `{name}` differs from the reference by {d:e} (> {tol:e})");
    }
}

/// Where `event` is in `trace`.
fn at(trace: &[SyncEvent], event: SyncEvent) -> usize {
    trace.iter().position(|e| *e == event).unwrap_or_else(|| panic!("{event:?} not in {trace:?}"))
}

/// The buckets started once each, in order.
fn launches(trace: &[SyncEvent]) -> Vec<usize> {
    trace
        .iter()
        .filter_map(|e| match e {
            SyncEvent::BucketLaunched { bucket } => Some(*bucket),
            _ => None,
        })
        .collect()
}

/// With the overlap, bucket 0 (the last layer's gradients) started while backward had the first
/// layer still to do; without it, every bucket started after backward.
fn assert_overlapped(trace: &[SyncEvent], buckets: usize, overlap: bool) {
    assert_eq!(launches(trace), (0..buckets).collect::<Vec<_>>(), "{trace:?}");
    let first = at(trace, SyncEvent::BucketLaunched { bucket: 0 });
    let end = at(trace, SyncEvent::BackwardEnd);
    if overlap {
        assert!(first < at(trace, SyncEvent::GradReady { param: 0 }), "no overlap: {trace:?}");
        assert!(at(trace, SyncEvent::BucketLaunched { bucket: buckets - 1 }) < end, "{trace:?}");
    } else {
        assert!(end < first, "{trace:?}");
    }
}

/// The ranks train `build(rank)` (different initial weights: DDP must broadcast rank 0's) on their
/// shards; the reference trains `build(0)` on the whole batch. With `overlap`, through
/// `ddp.backward`; without, by `backward` then `sync_grads`.
fn plain_equivalence<F: MpiFloat>(comm: &Communicator, build: fn(u64) -> Sequential<F>, tol: f64, overlap: bool) {
    let (n, me) = (comm.size(), comm.rank());
    let model = build(me as u64);
    // A small bucket cap: several buckets, exercising their order and boundaries.
    let options = DdpOptions::default().bucket_cap_mb(1e-4).overlap(overlap);
    let ddp = DistributedDataParallel::new(&model, comm, options).unwrap();
    let buckets = ddp.bucket_names().len();
    assert!(buckets > 1);
    assert!(ddp.replicas_equal().unwrap(), "broadcast at construction");
    let reference = build(0);
    let mut opt = sgd(&model);
    let mut ref_opt = sgd(&reference);
    for step in 0..STEPS {
        let (x, y) = global_batch::<F>(step, n);
        let (xs, ys) = (x.narrow(0, me * B, B).contiguous(), y.narrow(0, me * B, B).contiguous());
        let loss = cross_entropy(&model.forward(&Var::constant(xs)), &ys);
        let grads = if overlap {
            ddp.backward(&loss).unwrap()
        } else {
            let mut grads = loss.backward();
            ddp.sync_grads(&mut grads).unwrap();
            grads
        };
        if overlap {
            assert_overlapped(&ddp.last_sync_trace(), buckets, true);
        }
        opt.step(&grads);
        ref_opt.step(&cross_entropy(&reference.forward(&Var::constant(x)), &y).backward());
        assert_close("MLP", &model, &reference, tol, step);
        assert!(ddp.replicas_equal().unwrap(), "replicas differ after step {step}");
    }
}

/// BatchNorm: rank r normalises its own B samples and keeps its own running statistics. The
/// reference is one process holding a replica per rank: replica r takes rank r's samples, the
/// loss is the mean of the replicas' losses (the mean over the N*B samples), one backward, the
/// summed gradient updates replica 0, whose weights are then copied to the others.
fn batchnorm_equivalence<F: MpiFloat>(comm: &Communicator, tol: f64) {
    let (n, me) = (comm.size(), comm.rank());
    let model = bn_net::<F>(me as u64);
    let ddp = DistributedDataParallel::new(&model, comm, DdpOptions::default()).unwrap();
    let replicas: Vec<Sequential<F>> = (0..n).map(|_| bn_net(0)).collect();
    let mut opt = sgd(&model);
    let mut ref_opt = sgd(&replicas[0]);
    let inv = F::from_f64(1.0 / n as f64);
    for step in 0..STEPS {
        let (x, y) = global_batch::<F>(step, n);
        let shard = |r: usize| (x.narrow(0, r * B, B).contiguous(), y.narrow(0, r * B, B).contiguous());
        let (xs, ys) = shard(me);
        let grads = ddp.backward(&cross_entropy(&model.forward(&Var::constant(xs)), &ys)).unwrap();
        opt.step(&grads);

        let losses: Vec<Var<F>> = (0..n)
            .map(|r| {
                let (xr, yr) = shard(r);
                cross_entropy(&replicas[r].forward(&Var::constant(xr)), &yr)
            })
            .collect();
        let total = losses.iter().skip(1).fold(losses[0].clone(), |a, l| a.add(l)).mul_scalar(inv);
        let all = total.backward();
        let mut summed = Grads::default();
        let p0 = replicas[0].parameters();
        for replica in &replicas {
            for (p, q) in p0.iter().zip(replica.parameters()) {
                let g = all.get_param(&q).expect("every parameter has a gradient").clone();
                let acc = match summed.get_param(p) {
                    Some(s) => s.add(&g),
                    None => g,
                };
                summed.insert(p.id(), acc);
            }
        }
        ref_opt.step(&summed);
        for replica in &replicas[1..] {
            for (p, q) in p0.iter().zip(replica.parameters()) {
                q.set(p.value());
            }
        }
        // Weights equal replica 0's; running statistics equal this rank's replica's.
        assert_close("BatchNorm net", &model, &replicas[me], tol, step);
        assert!(ddp.replicas_equal().unwrap(), "replicas differ after step {step}");
    }
    let stats: Vec<f64> =
        model.named_buffers()[0].1.value().to_vec().iter().map(|v| ferrograd_tensor::Element::to_f64(*v)).collect();
    let gathered = comm.all_gather(&Tensor::from_vec(stats.clone(), &[1, stats.len()])).unwrap();
    assert_ne!(gathered.narrow(0, 0, 1).to_vec(), gathered.narrow(0, 1, 1).to_vec(), "running stats are per rank");
}

#[test]
fn ddp_mlp_matches_one_process() {
    on_ranks("ddp_mlp_matches_one_process", &[2, 3], |comm| {
        for overlap in [true, false] {
            plain_equivalence::<f32>(comm, mlp, 1e-6, overlap);
            plain_equivalence::<f64>(comm, mlp, 1e-12, overlap);
        }
    });
}

#[test]
fn ddp_batchnorm_matches_one_process() {
    on_ranks("ddp_batchnorm_matches_one_process", &[2, 3], |comm| {
        batchnorm_equivalence::<f32>(comm, 1e-6);
        batchnorm_equivalence::<f64>(comm, 1e-12);
    });
}

#[test]
fn no_sync_and_unused_parameters() {
    on_ranks("no_sync_and_unused_parameters", &[2], |comm| {
        let me = comm.rank();
        let model = mlp::<f64>(me as u64);
        let ddp = DistributedDataParallel::new(&model, comm, DdpOptions::default()).unwrap();
        let (x, y) = global_batch::<f64>(0, comm.size());
        let half = |k: usize| {
            let start = me * B + k * B / 2;
            (x.narrow(0, start, B / 2).contiguous(), y.narrow(0, start, B / 2).contiguous())
        };
        let grad_of =
            |(xs, ys): (Tensor<f64>, Tensor<i64>)| cross_entropy(&model.forward(&Var::constant(xs)), &ys).backward();
        // Two half batches accumulated under no_sync, then one sync: the whole batch's average.
        let mut acc = ddp.no_sync(|| {
            let mut g = grad_of(half(0));
            let mut second = grad_of(half(1));
            ddp.sync_grads(&mut second).unwrap(); // does nothing inside no_sync
            g.accumulate(&second);
            g.scale(0.5);
            g
        });
        ddp.sync_grads(&mut acc).unwrap();
        let mut whole = grad_of((x.narrow(0, me * B, B).contiguous(), y.narrow(0, me * B, B).contiguous()));
        ddp.sync_grads(&mut whole).unwrap();
        for p in model.parameters() {
            let d = acc.get_param(&p).unwrap().max_abs_diff(whole.get_param(&p).unwrap());
            assert!(d < 1e-12, "no_sync accumulation differs by {d}");
        }

        // Rank 1 leaves the last layer's bias without a gradient.
        let params = model.named_parameters();
        let (bias_name, bias) = params.last().unwrap().clone();
        let mut grads = grad_of(half(0));
        if me == 1 {
            grads.remove(bias.id());
        }
        let mut strict = grads.clone();
        let err = ddp.sync_grads(&mut strict).unwrap_err();
        assert_eq!(err, DistError::UnusedParameter { name: bias_name, used: 1, world: 2 });
        let lenient =
            DistributedDataParallel::new(&model, comm, DdpOptions::default().find_unused_parameters(true)).unwrap();
        let mine = grads.get_param(&bias).cloned();
        lenient.sync_grads(&mut grads).unwrap();
        let rank0 = comm.all_gather(&mine.unwrap_or_else(|| Tensor::zeros(&[CLASSES])).unsqueeze(0)).unwrap();
        let want = rank0.narrow(0, 0, 1).reshape(&[CLASSES]).mul_scalar(0.5);
        assert!(grads.get_param(&bias).unwrap().max_abs_diff(&want) < 1e-15, "averaged with zeros");
        // A parameter no rank used keeps no gradient.
        let mut none = grad_of(half(0));
        none.remove(bias.id());
        lenient.sync_grads(&mut none).unwrap();
        assert!(none.get_param(&bias).is_none());
    });
}

#[test]
fn overlap_starts_buckets_during_backward() {
    on_ranks("overlap_starts_buckets_during_backward", &[2, 3], |comm| {
        let me = comm.rank();
        let model = mlp::<f64>(me as u64);
        let (x, y) = global_batch::<f64>(1, comm.size());
        let (xs, ys) = (x.narrow(0, me * B, B).contiguous(), y.narrow(0, me * B, B).contiguous());
        let loss = || cross_entropy(&model.forward(&Var::constant(xs.clone())), &ys);
        let mut results = Vec::new();
        for overlap in [true, false] {
            let options = DdpOptions::default().bucket_cap_mb(1e-4).overlap(overlap);
            let ddp = DistributedDataParallel::new(&model, comm, options).unwrap();
            let grads = ddp.backward(&loss()).unwrap();
            let trace = ddp.last_sync_trace();
            assert_overlapped(&trace, ddp.bucket_names().len(), overlap);
            // Every parameter reported once, in reverse order: backward starts at the last layer.
            let ready: Vec<usize> = trace
                .iter()
                .filter_map(|e| match e {
                    SyncEvent::GradReady { param } => Some(*param),
                    _ => None,
                })
                .collect();
            let params = model.parameters().len();
            assert_eq!(ready, if overlap { (0..params).rev().collect() } else { vec![] }, "{trace:?}");
            results.push(grads);
        }
        // The same averages either way (the collectives may add in another order).
        for p in model.parameters() {
            let d = results[0].get_param(&p).unwrap().max_abs_diff(results[1].get_param(&p).unwrap());
            assert!(d < 1e-15, "overlapped and plain averages differ by {d:e}");
        }
        // One bucket (the default 25 MB): it would fill only with the first layer's gradients,
        // so it is reduced by the blocking call after backward, overlap on or not.
        let ddp = DistributedDataParallel::new(&model, comm, DdpOptions::default()).unwrap();
        assert_eq!(ddp.bucket_names().len(), 1);
        ddp.backward(&loss()).unwrap();
        assert_eq!(ddp.last_sync_trace(), [SyncEvent::BackwardEnd, SyncEvent::BucketLaunched { bucket: 0 }]);
    });
}

#[test]
fn overlapped_accumulation_and_unused_parameters() {
    on_ranks("overlapped_accumulation_and_unused_parameters", &[2], |comm| {
        let me = comm.rank();
        let model = mlp::<f64>(me as u64);
        let options = DdpOptions::default().bucket_cap_mb(1e-4);
        let ddp = DistributedDataParallel::new(&model, comm, options.clone()).unwrap();
        let (x, y) = global_batch::<f64>(2, comm.size());
        let half = |k: usize| {
            let start = me * B + k * B / 2;
            (x.narrow(0, start, B / 2).contiguous(), y.narrow(0, start, B / 2).contiguous())
        };
        let loss_of = |(xs, ys): (Tensor<f64>, Tensor<i64>)| cross_entropy(&model.forward(&Var::constant(xs)), &ys);
        // no_sync for the first half, the overlapped sync adds the second half to it.
        let mut acc = Grads::default();
        ddp.no_sync(|| ddp.backward_into(&loss_of(half(0)), &mut acc)).unwrap();
        assert!(ddp.last_sync_trace().is_empty(), "no_sync must not communicate");
        ddp.backward_into(&loss_of(half(1)), &mut acc).unwrap();
        acc.scale(0.5);
        let mut whole = loss_of((x.narrow(0, me * B, B).contiguous(), y.narrow(0, me * B, B).contiguous())).backward();
        ddp.sync_grads(&mut whole).unwrap();
        for p in model.parameters() {
            let d = acc.get_param(&p).unwrap().max_abs_diff(whole.get_param(&p).unwrap());
            assert!(d < 1e-12, "overlapped accumulation differs by {d}");
        }

        // Rank 1's forward leaves out the last layer's bias: its bucket (bucket 0) cannot fill
        // during backward there, so rank 1 starts every bucket after backward.
        let params = model.named_parameters();
        let (bias_name, bias) = params.last().unwrap().clone();
        let p: Vec<_> = params.iter().map(|(_, p)| p.var()).collect();
        let (xs, ys) = half(0);
        let skip_bias = |skip: bool| {
            let h = Var::constant(xs.clone()).matmul(&p[0].t()).add(&p[1]).relu().matmul(&p[2].t());
            cross_entropy(&if skip { h } else { h.add(&p[3]) }, &ys)
        };
        let err = ddp.backward(&skip_bias(me == 1)).unwrap_err();
        assert_eq!(err, DistError::UnusedParameter { name: bias_name, used: 1, world: 2 });
        let trace = ddp.last_sync_trace();
        if me == 1 {
            assert!(at(&trace, SyncEvent::BackwardEnd) < at(&trace, SyncEvent::BucketLaunched { bucket: 0 }));
        }
        assert_eq!(launches(&trace), (0..ddp.bucket_names().len()).collect::<Vec<_>>());
        let lenient = DistributedDataParallel::new(&model, comm, options.find_unused_parameters(true)).unwrap();
        let overlapped = lenient.backward(&skip_bias(me == 1)).unwrap();
        let mut plain = skip_bias(me == 1).backward();
        lenient.sync_grads(&mut plain).unwrap();
        for (_, q) in &params {
            let d = overlapped.get_param(q).unwrap().max_abs_diff(plain.get_param(q).unwrap());
            assert!(d < 1e-15, "with an unused parameter, overlapped and plain averages differ by {d:e}");
        }
        // A parameter no rank used keeps no gradient.
        let none = lenient.backward(&skip_bias(true)).unwrap();
        assert!(none.get_param(&bias).is_none());
        assert_eq!(none.len(), params.len() - 1);
    });
}

#[test]
fn mismatched_models_and_checkpoints() {
    on_ranks("mismatched_models_and_checkpoints", &[2], |comm| {
        let me = comm.rank();
        let mut rng = StdRng::seed_from_u64(0);
        let other: Sequential<f32> = Sequential::new().add(Linear::new(IN, 5 + me, &mut rng));
        let err = DistributedDataParallel::new(&other, comm, DdpOptions::default()).err().expect("shapes differ");
        assert!(matches!(err, DistError::ModelMismatch { rank, .. } if rank == me), "{err}");

        // Rank 0 saves; once save_checkpoint returns, every rank reads rank 0's weights.
        let model = mlp::<f32>(me as u64);
        let path = std::env::temp_dir().join("ferrograd-ddp-ckpt-test.safetensors");
        comm.save_checkpoint(&path, &model).unwrap();
        let fresh = mlp::<f32>(99);
        ferrograd_nn::checkpoint::load_module(&path, &fresh).unwrap();
        let zero = mlp::<f32>(0);
        assert_close("checkpoint", &fresh, &zero, 0.0, 0);
        comm.barrier();
        comm.on_main(|| std::fs::remove_file(&path).unwrap());
        let bad = comm.save_checkpoint("/nonexistent-dir/x.safetensors", &model).unwrap_err();
        assert!(matches!(bad, DistError::Checkpoint { .. }), "{bad}");
    });
}
