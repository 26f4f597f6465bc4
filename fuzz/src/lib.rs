//! The bodies of ferrograd's fuzz targets, one function per reader of outside bytes, and the
//! seed files they start from.
//!
//! Each body writes the input to a file (the readers take paths, as users call them), reads it
//! back through the public API and, when the file is accepted, uses what was read the way a
//! program would (a forward pass, an optimizer step, a study's trials), checking what must
//! hold of any accepted file. A rejected file must be a typed error: any panic, abort or
//! sanitizer report is a finding.
//!
//! The fuzz targets in `fuzz_targets/` call these functions; the workspace's
//! `tests/fuzz_replay.rs` includes this file and replays the committed corpus and every crash
//! input through them, so the findings stay fixed without a fuzzing toolchain.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ferrograd_autograd::{Param, Var};
use ferrograd_nn::checkpoint::{load_any_tensors, load_module, load_tensors, save_module, save_tensors};
use ferrograd_nn::data::{read_idx, write_idx, Mnist};
use ferrograd_nn::layers::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential};
use ferrograd_nn::Module;
use ferrograd_optim::{Adagrad, Adam, GroupOptions, Lion, Optim, Optimizer, RmsProp, Sgd, UpdateRule};
use ferrograd_tensor::Tensor;
use ferrograd_tuning::quant::{FloatLayer, MinMaxObserver, ObserverConfig, QuantizedLayer, QuantizedSequential};
use ferrograd_tuning::search::{SearchError, Study};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Largest tensor (in elements) a body lets an accepted model compute on: a bound on the
/// harness's own work, not a property of the readers.
const MAX_ELEMENTS: usize = 1 << 22;

/// A directory of this thread's own under the system's temporary directory, removed when the
/// thread ends (test threads replay in parallel; a fuzzing process has one thread).
fn scratch(target: &str) -> PathBuf {
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    thread_local! {
        static DIR: Dir = {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Dir(std::env::temp_dir().join(format!("ferrograd-fuzz-{}-{n}", std::process::id())))
        };
    }
    let dir = DIR.with(|d| d.0.join(target));
    std::fs::create_dir_all(&dir).expect("the scratch directory can be created");
    dir
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("the scratch file can be written");
}

fn remove(path: &Path) {
    // Absent is fine: this only resets the scratch directory.
    let _ = std::fs::remove_file(path);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

// ------------------------------------------------------------------------------------------ IDX

/// An IDX file, and when it is a small 3-D array, an MNIST directory built around it.
pub fn idx(data: &[u8]) {
    let dir = scratch("idx");
    let images = dir.join("train-images-idx3-ubyte");
    write(&images, data);
    let Ok(a) = read_idx(&images) else { return };
    assert_eq!(a.to_tensor().numel(), a.bytes().len());
    assert_eq!(a.bytes().len() + 4 + 4 * a.shape().len(), data.len());
    if a.shape().len() != 3 || a.shape()[0] > 1 << 12 {
        return;
    }
    let n = a.shape()[0];
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    write_idx(dir.join("train-labels-idx1-ubyte"), &[n as u32], &labels).expect("scratch write");
    write_idx(dir.join("t10k-labels-idx1-ubyte"), &[n as u32], &labels).expect("scratch write");
    write(&dir.join("t10k-images-idx3-ubyte"), data);
    let m = Mnist::load(&dir).expect("valid files make a valid MNIST directory");
    assert_eq!(m.train_images.numel(), a.bytes().len());
    assert_eq!(m.test_labels.to_vec(), labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>());
}

/// A `.gz` IDX file: the input's first byte chooses whether the rest is the `.gz` itself
/// (even) or the IDX bytes, compressed here (odd). What is accepted is accepted again from
/// the cache; what is refused leaves no cache.
pub fn idx_gz(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let dir = scratch("idx_gz");
    let gz = dir.join("x-idx3-ubyte.gz");
    let cache = dir.join("x-idx3-ubyte");
    remove(&cache);
    remove(&dir.join("x-idx3-ubyte.source"));
    write(&gz, &if mode % 2 == 0 { rest.to_vec() } else { gzip(rest) });
    match read_idx(&gz) {
        Ok(a) => {
            if mode % 2 == 1 {
                assert_eq!(a.bytes(), &rest[4 + 4 * a.shape().len()..]);
            }
            assert_eq!(a.to_tensor().numel(), a.bytes().len());
            let again = read_idx(&gz).expect("a cache just made is reused");
            assert_eq!((again.shape(), again.bytes()), (a.shape(), a.bytes()));
        }
        Err(_) => assert!(!cache.exists(), "a refused .gz left a cache"),
    }
}

// ------------------------------------------------------------------------------- safetensors

/// The module the checkpoint target loads into: conv, batch norm (with buffers), ReLU, flatten
/// and linear, for `[N, 1, 4, 4]` inputs.
fn small_net(seed: u64) -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .add(Conv2d::new(1, 2, [3, 3], &mut rng))
        .add(BatchNorm2d::new(2))
        .add(ReLU)
        .add(Flatten::new(1, -1))
        .add(Linear::new(8, 3, &mut rng))
}

/// A safetensors file: every tensor read back, then loaded into a module (whose forward pass
/// runs when the file fits it).
pub fn module(data: &[u8]) {
    let path = scratch("module").join("model.safetensors");
    write(&path, data);
    let Ok(tensors) = load_any_tensors(&path) else { return };
    for t in tensors.values() {
        assert!(t.shape().iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_some());
    }
    let typed = load_tensors::<f32>(&path);
    assert_eq!(typed.is_ok(), tensors.values().all(|t| t.dtype() == ferrograd_tensor::DType::F32));
    let net = small_net(0);
    if load_module(&path, &net).is_ok() {
        for train in [true, false] {
            net.train(train);
            let y = net.forward(&Var::constant(Tensor::from_fn(&[2, 1, 4, 4], |i| i as f32 / 32.0)));
            assert_eq!(y.shape(), &[2, 3]);
        }
    }
}

// ---------------------------------------------------------------------------- quantized models

/// The shape `layers` turn `input` into, or `None` where a layer would refuse it (a caller's
/// shape error, which panics by design) or the harness's size bound is passed.
fn output_shape(layers: &[QuantizedLayer], input: &[usize]) -> Option<Vec<usize>> {
    let mut s = input.to_vec();
    let pooled = |s: &[usize], o: &ferrograd_tensor::Pool2dOptions| -> Option<Vec<usize>> {
        let r = s.len();
        if r != 3 && r != 4 {
            return None;
        }
        let side = |i: usize| {
            let (n, k, p, st) = (s[r - 2 + i], o.kernel[i], o.padding[i], o.stride[i]);
            (n + 2 * p >= k).then(|| (n + 2 * p - k) / st + 1)
        };
        let mut out = s.to_vec();
        out[r - 2] = side(0)?;
        out[r - 1] = side(1)?;
        Some(out)
    };
    for layer in layers {
        s = match layer {
            QuantizedLayer::Linear(l) => {
                let [out, k] = *l.weight().shape() else { return None };
                (s.len() == 2 && s[1] == k).then(|| vec![s[0], out])?
            }
            QuantizedLayer::Conv2d(c) => {
                let (ws, o) = (c.weight().shape(), c.options());
                if s.len() != 4 || s[1] != ws[1] * o.groups {
                    return None;
                }
                let side = |i: usize| {
                    let extent = o.dilation[i] * (ws[2 + i] - 1) + 1;
                    let padded = s[2 + i] + 2 * o.padding[i];
                    (padded >= extent && padded.checked_mul(s[0] * s[1])? <= MAX_ELEMENTS)
                        .then(|| (padded - extent) / o.stride[i] + 1)
                };
                vec![s[0], ws[0], side(0)?, side(1)?]
            }
            QuantizedLayer::ReLU => s,
            QuantizedLayer::Flatten if s.len() >= 2 => vec![s[0], s[1..].iter().product()],
            QuantizedLayer::Flatten => return None,
            QuantizedLayer::MaxPool2d(o) | QuantizedLayer::AvgPool2d(o) => pooled(&s, o)?,
        };
        if s.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > MAX_ELEMENTS) {
            return None;
        }
    }
    Some(s)
}

/// An input the first layers of `model` accept: the smallest sides they take, plus 2.
fn input_for(model: &QuantizedSequential) -> Vec<usize> {
    let first = model.layers().iter().find(|l| !matches!(l, QuantizedLayer::ReLU));
    let side = |need: usize| need.max(1) + 2;
    match first {
        Some(QuantizedLayer::Linear(l)) => vec![2, l.weight().shape()[1]],
        Some(QuantizedLayer::Conv2d(c)) => {
            let (ws, o) = (c.weight().shape(), c.options());
            let need = |i: usize| (o.dilation[i] * (ws[2 + i] - 1) + 1).saturating_sub(2 * o.padding[i]);
            vec![1, ws[1] * o.groups, side(need(0)), side(need(1))]
        }
        Some(QuantizedLayer::MaxPool2d(o) | QuantizedLayer::AvgPool2d(o)) => {
            let need = |i: usize| o.kernel[i].saturating_sub(2 * o.padding[i]);
            vec![1, 1, side(need(0)), side(need(1))]
        }
        _ => vec![2, 3, 4, 4],
    }
}

/// A quantized model file: loaded, and when its layers chain, run on an input they accept.
pub fn quant(data: &[u8]) {
    let path = scratch("quant").join("model.safetensors");
    write(&path, data);
    let Ok(model) = QuantizedSequential::load(&path) else { return };
    let input = input_for(&model);
    if let Some(out) = output_shape(model.layers(), &input) {
        let x = Tensor::from_fn(&input, |i| (i % 7) as f32 - 2.5);
        assert_eq!(model.forward(&x).shape(), out.as_slice());
    }
}

// --------------------------------------------------------------------------- optimizer state

/// The parameters the optimizer-state target restores state for, and their gradients.
fn optim_params() -> (Vec<Param>, ferrograd_autograd::Grads) {
    let w = Param::new(Tensor::from_fn(&[3, 2], |i| i as f32 * 0.25 - 0.5));
    let b = Param::new(Tensor::from_vec(vec![0.1f32, -0.2, 0.3], &[3]));
    let grads = (&w.var().square().sum() + &b.var().sum()).backward();
    (vec![w, b], grads)
}

fn restore_and_step<R: UpdateRule<f32> + 'static>(rule: R, state: &BTreeMap<String, Tensor<f32>>) {
    let (params, grads) = optim_params();
    let mut opt = Optim::new(rule, params, GroupOptions::lr(0.01).weight_decay(0.01));
    if opt.load_state_dict(state).is_ok() {
        // A state that loads is the state: saving it again gives the same bits.
        let bits = |s: &BTreeMap<String, Tensor<f32>>| -> Vec<(String, Vec<usize>, Vec<u32>)> {
            s.iter()
                .map(|(k, t)| (k.clone(), t.shape().to_vec(), t.to_vec().iter().map(|v| v.to_bits()).collect()))
                .collect()
        };
        assert_eq!(bits(&opt.state_dict()), bits(state));
        opt.step(&grads);
        opt.step(&grads);
    }
}

/// An optimizer-state file (as saved with `save_tensors(path, &opt.state_dict())`): restored
/// into each optimizer, which then takes two steps.
pub fn optim_state(data: &[u8]) {
    let path = scratch("optim").join("optim.safetensors");
    write(&path, data);
    let Ok(state) = load_tensors::<f32>(&path) else { return };
    // Step counts of 2^64 and more (issue 18, defect 3) are refused at load by `optim`;
    // fuzz/regressions/optim_state/ holds the input that found them.
    restore_and_step(Sgd { momentum: 0.9, nesterov: true, ..Sgd::default() }, &state);
    restore_and_step(Adam::default(), &state);
    restore_and_step(Adam { amsgrad: true, ..Adam::adamw() }, &state);
    restore_and_step(RmsProp::default(), &state);
    restore_and_step(Adagrad::default(), &state);
    restore_and_step(Lion::default(), &state);
}

// -------------------------------------------------------------------------------- study files

/// A study file (SQLite), opened through the public API: its trials read, then one more trial run.
pub fn study(data: &[u8]) {
    let dir = scratch("study");
    let path = dir.join("study.db");
    for extra in ["study.db-wal", "study.db-shm", "study.db-journal"] {
        remove(&dir.join(extra));
    }
    write(&path, data);
    let Ok(study) = Study::builder().seed(0).open_sqlite(&path, "fuzz") else { return };
    let trials = study.trials();
    assert_eq!(trials.len(), study.n_trials());
    let _ = (study.best_trial(), study.best_params(), study.best_value_history(), study.to_csv());
    // The file may refuse writes (e.g. a read-only schema) but must not panic.
    let _ = study.optimize(1, |t| {
        let x = t.suggest_float("x", -1.0, 1.0, false)?;
        let k = t.suggest_int("k", 1, 3, 1, false)?;
        Ok::<_, SearchError>(x * x + k as f64)
    });
}

// ------------------------------------------------------------------------------------- seeds

/// Valid files for every target, made with the writers the readers pair with: `(target, file
/// name, bytes)`. The fuzz README says how they become the starting corpus.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let dir = scratch("seeds");
    let mut out = Vec::new();
    let idx_file = |dims: &[u32], data: &[u8]| {
        let path = dir.join("seed-idx");
        write_idx(&path, dims, data).expect("scratch write");
        std::fs::read(&path).expect("just written")
    };
    let images = idx_file(&[3, 4, 4], &(0..48).map(|i| i * 5).collect::<Vec<u8>>());
    let labels = idx_file(&[5], &[0, 1, 2, 3, 9]);
    out.push(("idx", "images".into(), images.clone()));
    out.push(("idx", "labels".into(), labels.clone()));
    for (name, bytes) in [("images", &images), ("labels", &labels)] {
        out.push(("idx_gz", format!("{name}-raw"), [&[1u8][..], bytes].concat()));
        out.push(("idx_gz", format!("{name}-gz"), [&[0u8][..], &gzip(bytes)].concat()));
    }

    let file = |write: &dyn Fn(&Path)| {
        let path = dir.join("seed.safetensors");
        write(&path);
        std::fs::read(&path).expect("just written")
    };
    let net = small_net(1);
    out.push(("module", "small_net".into(), file(&|p| save_module(p, &net).expect("scratch write"))));

    let mut rng = StdRng::seed_from_u64(2);
    let conv = Conv2d::new(1, 2, [3, 3], &mut rng);
    let fc = Linear::new(2 * 3 * 3, 3, &mut rng);
    let layers = [
        FloatLayer::Conv2d(&conv),
        FloatLayer::ReLU,
        FloatLayer::MaxPool2d(MaxPool2d::new([2, 2])),
        FloatLayer::Flatten,
        FloatLayer::Linear(&fc),
    ];
    let batch = Tensor::from_fn(&[2, 1, 8, 8], |i| (i % 11) as f32 / 11.0);
    let dynamic = QuantizedSequential::dynamic(&layers);
    let calibrated = QuantizedSequential::calibrated(&layers, &[batch], || {
        Box::new(MinMaxObserver::new(ObserverConfig::activations()))
    });
    out.push(("quant", "dynamic_cnn".into(), file(&|p| dynamic.save(p).expect("scratch write"))));
    out.push(("quant", "static_cnn".into(), file(&|p| calibrated.save(p).expect("scratch write"))));

    let (params, grads) = optim_params();
    let states: [(&str, Box<dyn Optimizer<f32>>); 3] = [
        ("sgd", Box::new(Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, params.clone(), GroupOptions::lr(0.1)))),
        (
            "adam",
            Box::new(Optim::new(Adam { amsgrad: true, ..Adam::default() }, params.clone(), GroupOptions::lr(0.1))),
        ),
        ("adagrad", Box::new(Optim::new(Adagrad::default(), params, GroupOptions::lr(0.1)))),
    ];
    for (name, mut opt) in states {
        opt.step(&grads);
        out.push(("optim_state", name.into(), file(&|p| save_tensors(p, &opt.state_dict()).expect("scratch write"))));
    }

    let db = dir.join("seed.db");
    for extra in ["seed.db", "seed.db-wal", "seed.db-shm"] {
        remove(&dir.join(extra));
    }
    {
        let study = Study::builder().seed(3).open_sqlite(&db, "fuzz").expect("a new study file");
        study
            .optimize(4, |t| {
                let x = t.suggest_float("x", -1.0, 1.0, false)?;
                let c = t.suggest_categorical("c", &["a", "b"])?;
                Ok::<_, SearchError>(x + c.len() as f64)
            })
            .expect("the seed study runs");
    }
    out.push(("study", "four_trials".into(), std::fs::read(&db).expect("just written")));
    out
}
