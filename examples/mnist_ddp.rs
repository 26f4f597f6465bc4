//! Data-parallel MNIST over MPI: the MLP (784-128-64-10), or LeNet-5 with `--lenet`, trained by
//! the `Learner` under `DistributedDataParallel` with the global batch split over the ranks.
//! Every rank loads MNIST, trains on its shard of each epoch (a `DistributedSampler` with a seed
//! all ranks share) and averages gradients after each backward; rank 0 prints and writes the
//! checkpoint. Needs the `mpi` feature (Open MPI or MPICH and libclang, see the README).
//!
//! ```sh
//! cargo build --release --features mpi --example mnist_ddp
//! mpirun -n 2 target/release/examples/mnist_ddp -- [--lenet] [--epochs 3] [--global-batch 128]
//!     [--lr 1e-3] [--seed 0] [--data-dir data/mnist] [--limit N] [--checkpoint FILE.safetensors]
//!     [--min-accuracy 0.95] [--bench-steps N] [--overlap on|off] [--bucket-cap-mb 25]
//! ```
//!
//! `--bench-steps N` times N training steps (after 5 warm-up steps) of a hand-written loop
//! (forward, `ddp.backward` (backward with the gradients averaged over the ranks), optimizer
//! step) instead of training, and prints the global samples per second overall, at the median
//! step and at the fastest step, and the slowest step's time (steps start together after a
//! barrier; on a machine busy with other work the fastest step is the one no rank was
//! descheduled in, and on the 2-core VM this was measured on a step now and then stalled for
//! 10-200 ms, with one rank or two: the overall figure shows those, the median does not). Run
//! it with `-n 1` and `-n 2` for the scaling figure. Each rank computes on
//! one thread (`mpirun -x MATMUL_NUM_THREADS=2 ...` changes that). `--overlap` and
//! `--bucket-cap-mb` set `DdpOptions::overlap` (all-reduce each bucket during backward, or all
//! after it) and `DdpOptions::bucket_cap_mb`: with the default 25 MB each model here is one
//! bucket, which can only start once backward is done.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ferrograd::autograd::Var;
use ferrograd::distributed::{main_println, Communicator, DdpOptions, DistributedDataParallel, DistributedSampler};
use ferrograd::nn::data::{Mnist, TensorDataset};
use ferrograd::nn::layers::{Conv2d, Conv2dConfig, Flatten, Linear, MaxPool2d, ReLU, Sequential};
use ferrograd::nn::loss::cross_entropy;
use ferrograd::nn::Module;
use ferrograd::optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd::tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd::tensor::Tensor;
use ferrograd::train::{Accuracy, DataSource, DistributedLoader, Learner};

struct Args {
    lenet: bool,
    epochs: usize,
    global_batch: usize,
    lr: f64,
    seed: u64,
    data_dir: PathBuf,
    limit: Option<usize>,
    checkpoint: Option<PathBuf>,
    min_accuracy: Option<f64>,
    bench_steps: Option<usize>,
    ddp: DdpOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        lenet: false,
        epochs: 3,
        global_batch: 128,
        lr: 1e-3,
        seed: 0,
        data_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")),
        limit: None,
        checkpoint: None,
        min_accuracy: None,
        bench_steps: None,
        ddp: DdpOptions::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: cannot parse `{v}`");
        match flag.as_str() {
            "--" => {}
            "--lenet" => a.lenet = true,
            "--epochs" => a.epochs = value()?.parse().map_err(|_| bad("epochs"))?,
            "--global-batch" => a.global_batch = value()?.parse().map_err(|_| bad("global batch"))?,
            "--lr" => a.lr = value()?.parse().map_err(|_| bad("lr"))?,
            "--seed" => a.seed = value()?.parse().map_err(|_| bad("seed"))?,
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--limit" => a.limit = Some(value()?.parse().map_err(|_| bad("limit"))?),
            "--checkpoint" => a.checkpoint = Some(PathBuf::from(value()?)),
            "--min-accuracy" => a.min_accuracy = Some(value()?.parse().map_err(|_| bad("min accuracy"))?),
            "--bench-steps" => a.bench_steps = Some(value()?.parse().map_err(|_| bad("bench steps"))?),
            "--overlap" => {
                a.ddp.overlap = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(format!("--overlap: `{v}` is neither on nor off")),
                }
            }
            "--bucket-cap-mb" => {
                let mb: f64 = value()?.parse().map_err(|_| bad("bucket cap"))?;
                if mb.is_nan() || mb <= 0.0 {
                    return Err("--bucket-cap-mb must be > 0".into());
                }
                a.ddp.bucket_cap_mb = mb;
            }
            "-h" | "--help" => {
                println!(
                    "flags: --lenet --epochs N --global-batch N --lr X --seed N --data-dir DIR --limit N \
                     --checkpoint FILE --min-accuracy FRACTION --bench-steps N --overlap on|off --bucket-cap-mb MB"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if a.epochs == 0 || a.global_batch == 0 || a.lr.is_nan() || a.lr <= 0.0 {
        return Err("epochs and global batch must be positive, and lr > 0".into());
    }
    Ok(a)
}

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

fn main() {
    let comm = match Communicator::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(&comm) {
        comm.abort(&format!("error: {e}"));
    }
}

fn run(comm: &Communicator) -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let (size, rank) = (comm.size(), comm.rank());
    if !args.global_batch.is_multiple_of(size) {
        return Err(format!("--global-batch {} does not split over {size} ranks", args.global_batch).into());
    }
    let batch = args.global_batch / size;
    let mnist = Mnist::load(&args.data_dir)?;
    let shape = |images: &Tensor<f32>, n: usize| {
        let n = args.limit.map_or(n, |l| l.min(n));
        let images = images.narrow(0, 0, n);
        if args.lenet {
            images.contiguous()
        } else {
            images.reshape(&[n, 784])
        }
    };
    let limit =
        |labels: &Tensor<i64>| labels.narrow(0, 0, args.limit.map_or(labels.numel(), |l| l.min(labels.numel())));
    let n_train = mnist.train_labels.numel();
    let n_test = mnist.test_labels.numel();
    let train = TensorDataset::new(shape(&mnist.train_images, n_train), limit(&mnist.train_labels).contiguous());
    let test = TensorDataset::new(shape(&mnist.test_images, n_test), limit(&mnist.test_labels).contiguous());
    let n = train.targets().numel();

    // Every rank builds the model from the same seed; DDP broadcasts rank 0's weights anyway.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let model = if args.lenet { lenet(&mut rng) } else { mlp(&mut rng) };
    let ddp = DistributedDataParallel::new(&model, comm, args.ddp.clone())?;
    let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(args.lr));
    main_println!(
        comm,
        "{} on {size} rank(s): global batch {} = {size} x {batch}, {n} training samples, {} bucket(s) of <= {} MB, overlap {}",
        if args.lenet { "LeNet-5" } else { "MLP" },
        args.global_batch,
        ddp.bucket_names().len(),
        args.ddp.bucket_cap_mb,
        if args.ddp.overlap { "on" } else { "off" }
    );

    let sampler = DistributedSampler::new(n, size, rank).seed(args.seed);
    // Benchmark steps all take full batches (no short last batch of an epoch).
    let shard = DistributedLoader::new(train, batch, sampler).drop_last(args.bench_steps.is_some());
    if let Some(steps) = args.bench_steps {
        return bench(comm, &model, &ddp, opt, &shard, steps, args.global_batch);
    }
    // Each rank validates on its shard of the test set; the Learner averages the figures.
    let test_shard = DistributedLoader::new(
        test,
        500,
        DistributedSampler::new(n_test.min(args.limit.unwrap_or(n_test)), size, rank).shuffle(false),
    );
    let mut learner = Learner::new(&model, opt, cross_entropy)
        .metric(Accuracy::new())
        .distributed(&ddp)
        .on_epoch_end(move |ctx, logs| {
            let v = |name: &str| logs.get(name).unwrap_or(f64::NAN);
            if ctx.is_main_process() {
                println!(
                    "epoch {:2}: train loss {:.4}, train acc {:.2}%, test acc {:.2}%, {:.1} s ({:.0} samples/s)",
                    ctx.epoch + 1,
                    v("loss"),
                    100.0 * v("accuracy"),
                    100.0 * v("val_accuracy"),
                    v("seconds"),
                    n as f64 / v("seconds")
                );
            }
        })
        .seed(args.seed)
        .quiet();
    let history = learner.fit(&shard, Some(&test_shard), args.epochs)?;
    assert!(ddp.replicas_equal()?, "the replicas drifted apart");
    if let Some(path) = &args.checkpoint {
        comm.save_checkpoint(path, &model)?;
        main_println!(comm, "rank 0 wrote {}", path.display());
    }
    let acc = history.last().and_then(|e| e.get("val_accuracy")).unwrap_or(0.0);
    if let Some(min) = args.min_accuracy {
        if acc < min {
            return Err(format!("test accuracy {acc:.4} is below --min-accuracy {min}").into());
        }
    }
    Ok(())
}

/// Times `steps` optimizer steps after 5 warm-up steps; prints global samples per second.
fn bench(
    comm: &Communicator,
    model: &Sequential,
    ddp: &DistributedDataParallel<'_>,
    mut opt: impl Optimizer<f32>,
    shard: &DistributedLoader,
    steps: usize,
    global_batch: usize,
) -> Result<(), Box<dyn Error>> {
    let warmup = 5;
    let mut batches = (0u64..).flat_map(|e| shard.batches(e, 0)).take(warmup + steps);
    let mut times = Vec::with_capacity(steps);
    let mut started = Instant::now();
    for i in 0..warmup + steps {
        comm.barrier();
        if i == warmup {
            started = Instant::now();
        }
        let step_started = Instant::now();
        let b = batches.next().expect("endless epochs");
        let grads = ddp.backward(&cross_entropy(&model.forward(&Var::constant(b.inputs)), &b.targets))?;
        opt.step(&grads);
        if i >= warmup {
            times.push(step_started.elapsed().as_secs_f64());
        }
    }
    comm.barrier();
    let secs = started.elapsed().as_secs_f64();
    // The slowest rank's step times: a step ends when every rank has its gradients.
    comm.all_reduce_slice_(&mut times, ferrograd::distributed::ReduceOp::Max)?;
    times.sort_by(f64::total_cmp);
    let per_s = |t: f64| global_batch as f64 / t;
    main_println!(
        comm,
        "{steps} steps of global batch {global_batch} on {} rank(s): {:.0} samples/s overall, {:.0} at the median step, {:.0} at the fastest (slowest step {:.2} ms)",
        comm.size(),
        (steps * global_batch) as f64 / secs,
        per_s(times[times.len() / 2]),
        per_s(times[0]),
        times[times.len() - 1] * 1e3
    );
    Ok(())
}
