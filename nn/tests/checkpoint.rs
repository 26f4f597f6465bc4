//! Checkpoints: round trips, module save/load, refusal of bad files, atomic writes, and
//! interoperability with PyTorch through the committed fixtures in `tests/fixtures/`
//! (`gen_checkpoint.py` writes the PyTorch side; `check_ours.py` checks ours in PyTorch).
//!
//! `ours_mixed.safetensors` and `ours_mlp.safetensors` are files our writer produced and
//! `check_ours.py` verified with `safetensors.torch.load_file`; the tests below require the writer
//! to keep producing them byte for byte. After an intended format change, rewrite them with
//! `FERROGRAD_BLESS=1 cargo test -p ferrograd-nn --test all checkpoint::` and run `check_ours.py` again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use ferrograd_autograd::{Param, Var};
use ferrograd_nn::checkpoint::{load_any_tensors, load_tensors, save_any_tensors, save_tensors, write_atomic};
use ferrograd_nn::{load_module, save_module, AnyTensor, Module, NnError};
use ferrograd_tensor::{DType, Tensor};
use proptest::prelude::*;

// ------------------------------------------------------------------------- test-local modules

/// `y = x W^T + b`, with PyTorch's parameter names and shapes.
struct Linear {
    weight: Param,
    bias: Param,
}

impl Linear {
    fn new(inputs: usize, outputs: usize, seed: f32) -> Self {
        let w = Tensor::from_fn(&[outputs, inputs], |i| (i as f32 * 0.37 + seed).sin());
        let b = Tensor::from_fn(&[outputs], |i| (i as f32 * 0.91 - seed).cos());
        Linear { weight: Param::new(w), bias: Param::new(b) }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Var) -> Var {
        &x.matmul(&self.weight.var().t()) + &self.bias.var()
    }
    fn params(&self) -> Vec<(&str, &Param)> {
        vec![("weight", &self.weight), ("bias", &self.bias)]
    }
}

struct Relu;

impl Module for Relu {
    fn forward(&self, x: &Var) -> Var {
        x.relu()
    }
}

/// Children named by position, like `torch.nn.Sequential`.
struct Seq(Vec<Box<dyn Module>>);

impl Module for Seq {
    fn forward(&self, x: &Var) -> Var {
        self.0.iter().fold(x.clone(), |h, m| m.forward(&h))
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.0.iter().enumerate().map(|(i, m)| (i.to_string(), m.as_ref())).collect()
    }
}

/// The architecture of `gen_checkpoint.py`: Linear(4, 3), ReLU, Linear(3, 2).
fn mlp(seed: f32) -> Seq {
    Seq(vec![Box::new(Linear::new(4, 3, seed)), Box::new(Relu), Box::new(Linear::new(3, 2, seed + 1.0))])
}

fn values(m: &dyn Module) -> BTreeMap<String, Vec<f32>> {
    m.state_dict().into_iter().map(|(n, t)| (n, t.to_vec())).collect()
}

// ------------------------------------------------------------------------------------ helpers

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferrograd-ckpt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Compares `produced` with a committed fixture, or rewrites the fixture under FERROGRAD_BLESS=1.
fn assert_matches_fixture(produced: &Path, name: &str) {
    let bytes = fs::read(produced).unwrap();
    if std::env::var_os("FERROGRAD_BLESS").is_some() {
        fs::write(fixture(name), &bytes).unwrap();
    }
    assert!(bytes == fs::read(fixture(name)).unwrap(), "our writer no longer produces {name} byte for byte");
}

/// The header of a safetensors file: its declared length and the parsed JSON.
fn header(bytes: &[u8]) -> (usize, serde_json::Map<String, serde_json::Value>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (n, json.as_object().unwrap().clone())
}

/// One tensor of every element type, plus a zero-size and a 0-d tensor: the same values as
/// `torch_mixed.safetensors` and `check_ours.py`'s expectations.
fn mixed() -> BTreeMap<String, AnyTensor> {
    let mut m = BTreeMap::new();
    m.insert("f64".into(), Tensor::from_vec(vec![1.0f64 / 3.0, -2.5, 1e-300], &[3]).into());
    m.insert("i64".into(), Tensor::from_vec(vec![7i64, -(1 << 40)], &[2]).into());
    m.insert("i32".into(), Tensor::from_vec(vec![-5i32, 6], &[2, 1]).into());
    m.insert("u8".into(), Tensor::from_vec(vec![0u8, 128, 255], &[3]).into());
    m.insert("i8".into(), Tensor::from_vec(vec![-128i8, 127], &[2]).into());
    m.insert("bool".into(), Tensor::from_vec(vec![true, false, false, true], &[2, 2]).into());
    m.insert("empty".into(), Tensor::<f32>::zeros(&[0, 3]).into());
    m.insert("scalar".into(), Tensor::scalar(3.5f32).into());
    m
}

/// A header of our own making followed by `data_len` zero bytes.
fn file_with_header(json: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

fn load_bytes(dir: &TempDir, bytes: &[u8]) -> Result<BTreeMap<String, AnyTensor>, NnError> {
    let path = dir.path("input.safetensors");
    fs::write(&path, bytes).unwrap();
    load_any_tensors(&path)
}

// --------------------------------------------------------------------------------- round trips

#[test]
fn f32_round_trip_keeps_values_shapes_and_names_including_views() {
    let dir = TempDir::new();
    let path = dir.path("f32.safetensors");
    let base = Tensor::from_fn(&[3, 4], |i| i as f32 * 0.25 - 1.0);
    let mut tensors = BTreeMap::new();
    tensors.insert("encoder.fc1.weight".to_string(), base.clone());
    tensors.insert("transposed".to_string(), base.t());
    tensors.insert("flipped".to_string(), base.flip(&[1]));
    tensors.insert("nan_inf".to_string(), Tensor::from_vec(vec![f32::NAN, f32::INFINITY, -0.0], &[3]));
    save_tensors(&path, &tensors).unwrap();
    let back = load_tensors::<f32>(&path).unwrap();
    assert_eq!(back.keys().collect::<Vec<_>>(), tensors.keys().collect::<Vec<_>>());
    for (name, t) in &tensors {
        assert_eq!(back[name].shape(), t.shape(), "{name}");
        let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back[name]), bits(t), "{name}");
    }
}

#[test]
fn f64_round_trip_is_exact() {
    let dir = TempDir::new();
    let path = dir.path("f64.safetensors");
    let tensors = BTreeMap::from([
        ("a".to_string(), Tensor::from_fn(&[2, 3, 2], |i| (i as f64).sqrt() * std::f64::consts::PI)),
        ("tiny".to_string(), Tensor::from_vec(vec![f64::MIN_POSITIVE, f64::MAX, f64::EPSILON], &[3])),
    ]);
    save_tensors(&path, &tensors).unwrap();
    assert_eq!(load_tensors::<f64>(&path).unwrap(), tensors);
}

#[test]
fn mixed_dtypes_round_trip_including_i64_counters_empty_and_scalar() {
    let dir = TempDir::new();
    let path = dir.path("mixed.safetensors");
    save_any_tensors(&path, &mixed()).unwrap();
    let back = load_any_tensors(&path).unwrap();
    assert_eq!(back, mixed());
    assert_eq!(back["i64"].dtype(), DType::I64);
    assert_eq!(back["scalar"].shape(), &[] as &[usize]);
}

#[test]
fn typed_load_names_a_tensor_of_another_dtype() {
    let dir = TempDir::new();
    let path = dir.path("mixed.safetensors");
    save_any_tensors(&path, &mixed()).unwrap();
    match load_tensors::<i64>(&path) {
        Err(NnError::DTypeMismatch { path: p, name, expected: DType::I64, found }) => {
            assert_eq!(p, path);
            assert!(mixed()[&name].dtype() == found && found != DType::I64, "{name}: {found}");
        }
        other => panic!("expected a dtype mismatch, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------ modules

#[test]
fn module_save_load_restores_identical_outputs() {
    let dir = TempDir::new();
    let path = dir.path("mlp.safetensors");
    let trained = mlp(0.3);
    let x = Var::constant(Tensor::from_fn(&[5, 4], |i| (i as f32 * 0.7).cos()));
    let expected = trained.forward(&x).to_vec();
    save_module(&path, &trained).unwrap();

    let restored = mlp(-2.0);
    assert_ne!(restored.forward(&x).to_vec(), expected);
    load_module(&path, &restored).unwrap();
    assert_eq!(restored.forward(&x).to_vec(), expected);
    assert_eq!(values(&restored), values(&trained));
}

/// Saves `state` to a file, loads it into a fresh MLP, and returns the error and whether the
/// module kept every value.
fn refused(state: BTreeMap<String, Tensor<f32>>) -> (NnError, bool) {
    let dir = TempDir::new();
    let path = dir.path("bad.safetensors");
    save_tensors(&path, &state).unwrap();
    let module = mlp(0.5);
    let before = values(&module);
    let err = load_module(&path, &module).unwrap_err();
    (err, values(&module) == before)
}

#[test]
fn wrong_shape_is_refused_naming_the_tensor_and_module_is_unchanged() {
    let mut state = mlp(1.0).state_dict();
    state.insert("2.weight".into(), Tensor::zeros(&[3, 2]));
    let (err, unchanged) = refused(state);
    assert!(unchanged);
    match &err {
        NnError::ShapeMismatch { name, expected, found } => {
            assert_eq!((name.as_str(), expected.as_slice(), found.as_slice()), ("2.weight", &[2, 3][..], &[3, 2][..]));
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("2.weight"), "{err}");
}

#[test]
fn missing_tensor_is_refused_naming_it_and_module_is_unchanged() {
    let mut state = mlp(1.0).state_dict();
    state.remove("0.bias");
    let (err, unchanged) = refused(state);
    assert!(unchanged);
    assert!(matches!(&err, NnError::MissingTensor { name } if name == "0.bias"), "{err:?}");
}

#[test]
fn extra_tensor_is_refused_naming_it_and_module_is_unchanged() {
    let mut state = mlp(1.0).state_dict();
    state.insert("1.weight".into(), Tensor::zeros(&[1]));
    let (err, unchanged) = refused(state);
    assert!(unchanged);
    assert!(matches!(&err, NnError::UnexpectedTensor { name } if name == "1.weight"), "{err:?}");
}

#[test]
fn wrong_dtype_is_refused_naming_tensor_and_file_and_module_is_unchanged() {
    let dir = TempDir::new();
    let path = dir.path("f64.safetensors");
    let state: BTreeMap<String, Tensor<f64>> = mlp(1.0).state_dict().into_iter().map(|(n, t)| (n, t.cast())).collect();
    save_tensors(&path, &state).unwrap();
    let module = mlp(0.5);
    let before = values(&module);
    let err = load_module(&path, &module).unwrap_err();
    assert_eq!(values(&module), before);
    assert!(
        matches!(&err, NnError::DTypeMismatch { expected: DType::F32, found: DType::F64, .. }),
        "expected a dtype mismatch, got {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("f64.safetensors") && msg.contains("0.bias"), "{msg}");
}

// ------------------------------------------------------------------------------ PyTorch interop

fn read_output_fixture() -> (Tensor<f32>, Tensor<f32>) {
    let text = fs::read_to_string(fixture("torch_mlp_output.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let parse = |shape: &str, data: &str| {
        let shape: Vec<usize> = shape.split_whitespace().map(|d| d.parse().unwrap()).collect();
        Tensor::from_vec(data.split_whitespace().map(|v| v.parse().unwrap()).collect(), &shape)
    };
    (parse(lines[0], lines[1]), parse(lines[2], lines[3]))
}

#[test]
fn pytorch_mlp_checkpoint_loads_and_reproduces_pytorch_outputs() {
    let model = mlp(0.0);
    load_module(fixture("torch_mlp.safetensors"), &model).unwrap();
    let (x, expected) = read_output_fixture();
    let y = model.forward(&Var::constant(x));
    assert_eq!(y.shape(), expected.shape());
    for (a, b) in y.to_vec().iter().zip(expected.to_vec()) {
        assert!((a - b).abs() <= 1e-6, "ours {a} vs PyTorch {b}");
    }

    // Saved back by us, it is the file check_ours.py loads into torch.nn.Sequential.
    let dir = TempDir::new();
    let path = dir.path("ours_mlp.safetensors");
    save_module(&path, &model).unwrap();
    assert_matches_fixture(&path, "ours_mlp.safetensors");
}

#[test]
fn pytorch_file_of_every_dtype_loads() {
    assert_eq!(load_any_tensors(fixture("torch_mixed.safetensors")).unwrap(), mixed());
}

#[test]
fn our_files_have_the_layout_pytorch_reads() {
    let dir = TempDir::new();
    let path = dir.path("ours_mixed.safetensors");
    save_any_tensors(&path, &mixed()).unwrap();
    assert_matches_fixture(&path, "ours_mixed.safetensors");

    let bytes = fs::read(&path).unwrap();
    let (n, json) = header(&bytes);
    assert_eq!(n % 8, 0, "header length must keep the data 8-byte aligned");
    assert_eq!(json["__metadata__"], serde_json::json!({"format": "pt"}));
    let mut spans = Vec::new();
    for (name, entry) in json.iter().filter(|(n, _)| *n != "__metadata__") {
        let entry = entry.as_object().unwrap();
        assert_eq!(entry.len(), 3, "{name}: only dtype, shape and data_offsets");
        let dtype = entry["dtype"].as_str().unwrap();
        let size = match dtype {
            "F64" | "I64" => 8,
            "F32" | "I32" => 4,
            "I8" | "U8" | "BOOL" => 1,
            other => panic!("{name}: dtype string {other} is not one of torch's"),
        };
        let shape: Vec<usize> =
            entry["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, mixed()[name].shape(), "{name}");
        let offsets = entry["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        assert_eq!(end - start, shape.iter().product::<usize>() * size, "{name}");
        assert_eq!(start % size, 0, "{name}: data must be aligned to its element size");
        spans.push((start, end));
    }
    spans.sort_unstable();
    let mut next = 0;
    for (start, end) in spans {
        assert_eq!(start, next, "data_offsets must be contiguous");
        next = end;
    }
    assert_eq!(8 + n + next, bytes.len(), "the data section ends the file");
}

// ---------------------------------------------------------------------------------- bad files

fn format_problem(result: Result<BTreeMap<String, AnyTensor>, NnError>) -> String {
    match result {
        Err(NnError::Format { problem, .. }) => problem,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn bad_headers_are_typed_errors_naming_the_file() {
    let dir = TempDir::new();
    let problem = format_problem(load_bytes(&dir, b""));
    assert!(problem.contains("too short"), "{problem}");
    let problem = format_problem(load_bytes(&dir, &[0xff; 8]));
    assert!(problem.contains("header"), "{problem}");
    let problem = format_problem(load_bytes(&dir, &file_with_header("{not json", 0)));
    assert!(problem.contains("header"), "{problem}");
    let problem = format_problem(load_bytes(&dir, &file_with_header(r#"{"w":{"dtype":"F32","shape":[-1]}}"#, 0)));
    assert!(problem.contains("header"), "{problem}");

    let err = load_bytes(&dir, &[1, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap_err();
    assert!(err.to_string().contains("input.safetensors"), "{err}");
    let missing = load_any_tensors(dir.path("nope.safetensors")).unwrap_err();
    assert!(matches!(&missing, NnError::Io { path, .. } if path.ends_with("nope.safetensors")), "{missing:?}");
}

#[test]
fn unknown_and_unsupported_dtypes_name_the_tensor() {
    let dir = TempDir::new();
    for (dtype, bytes) in [("garbage", 2), ("F8_E5M2", 2), ("BF16", 4), ("F16", 4), ("U16", 4)] {
        let json = format!(
            r#"{{"ok":{{"dtype":"U8","shape":[1],"data_offsets":[0,1]}},"odd":{{"dtype":"{dtype}","shape":[2],"data_offsets":[1,{}]}}}}"#,
            1 + bytes
        );
        match load_bytes(&dir, &file_with_header(&json, 1 + bytes)) {
            Err(NnError::UnsupportedDType { name, dtype: found, .. }) => {
                assert_eq!((name.as_str(), found.as_str()), ("odd", dtype))
            }
            other => panic!("{dtype}: expected an unsupported dtype, got {other:?}"),
        }
    }
}

#[test]
fn inconsistent_offsets_and_truncation_are_refused() {
    let dir = TempDir::new();
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let problem = format_problem(load_bytes(&dir, &file_with_header(overlap, 12)));
    assert!(problem.contains("tensor `b`"), "{problem}");

    let short = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let problem = format_problem(load_bytes(&dir, &file_with_header(short, 8)));
    assert!(problem.contains("tensor `w`"), "{problem}");

    let huge = r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#;
    format_problem(load_bytes(&dir, &file_with_header(huge, 0)));

    let path = dir.path("ok.safetensors");
    save_any_tensors(&path, &mixed()).unwrap();
    let bytes = fs::read(&path).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 20, 7] {
        format_problem(load_bytes(&dir, &bytes[..cut]));
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    let problem = format_problem(load_bytes(&dir, &trailing));
    assert!(problem.contains("trailing"), "{problem}");
}

#[test]
fn zero_size_dims_with_huge_neighbours_are_refused_not_panicking() {
    let dir = TempDir::new();
    let json = r#"{"w":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}"#;
    let problem = format_problem(load_bytes(&dir, &file_with_header(json, 0)));
    assert!(problem.contains("tensor `w`"), "{problem}");
}

/// A valid file to mutate, saved (with its fsyncs) once for all cases.
fn valid_file() -> Vec<u8> {
    static VALID: OnceLock<Vec<u8>> = OnceLock::new();
    VALID
        .get_or_init(|| {
            let dir = TempDir::new();
            let path = dir.path("valid.safetensors");
            save_any_tensors(&path, &mixed()).unwrap();
            fs::read(path).unwrap()
        })
        .clone()
}

proptest! {
    // Each case writes and maps a ~560-byte file: 256 cases take a fraction of a second.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_or_truncated_files_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = TempDir::new();
        let mut bytes = valid_file();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(tensors) = load_bytes(&dir, &bytes) {
            for t in tensors.values() {
                prop_assert_eq!(t.shape().iter().product::<usize>(), match t {
                    AnyTensor::F32(t) => t.to_vec().len(),
                    AnyTensor::F64(t) => t.to_vec().len(),
                    AnyTensor::I64(t) => t.to_vec().len(),
                    AnyTensor::I32(t) => t.to_vec().len(),
                    AnyTensor::I8(t) => t.to_vec().len(),
                    AnyTensor::U8(t) => t.to_vec().len(),
                    AnyTensor::Bool(t) => t.to_vec().len(),
                });
            }
        }
    }

    // Mutations aimed at the JSON header's characters, where a random byte is most likely to
    // give a file that still parses but says something inconsistent.
    #[test]
    fn header_digit_edits_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..10), 1..4)) {
        let dir = TempDir::new();
        let mut bytes = valid_file();
        let (n, _) = header(&bytes);
        let digits: Vec<usize> = (8..8 + n).filter(|&i| bytes[i].is_ascii_digit()).collect();
        for (at, d) in edits {
            bytes[digits[at.index(digits.len())]] = b'0' + d;
        }
        let _ = load_bytes(&dir, &bytes);
    }
}

// ------------------------------------------------------------------------------- atomic writes

#[test]
fn a_write_failing_half_way_leaves_the_old_file_and_no_temporary() {
    let dir = TempDir::new();
    let path = dir.path("model.safetensors");
    save_any_tensors(&path, &mixed()).unwrap();
    let old = fs::read(&path).unwrap();

    let err = write_atomic(&path, |w| {
        w.write_all(&old[..old.len() / 2])?;
        w.flush()?;
        Err(std::io::Error::other("disk full (injected)"))
    })
    .unwrap_err();
    assert!(matches!(&err, NnError::Io { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), old);
    assert_eq!(dir.entries(), vec!["model.safetensors"]);
    assert_eq!(load_any_tensors(&path).unwrap(), mixed());
}

#[test]
fn a_writer_panicking_half_way_leaves_the_old_file_and_no_temporary() {
    let dir = TempDir::new();
    let path = dir.path("model.safetensors");
    save_any_tensors(&path, &mixed()).unwrap();
    let old = fs::read(&path).unwrap();
    let panicked = std::panic::catch_unwind(|| {
        write_atomic(&path, |w| {
            w.write_all(&old[..10])?;
            panic!("writer bug (injected)")
        })
    });
    assert!(panicked.is_err());
    assert_eq!(fs::read(&path).unwrap(), old);
    assert_eq!(dir.entries(), vec!["model.safetensors"]);
}

#[test]
fn a_crashed_writers_temporaries_are_removed_by_the_next_save_to_the_same_place() {
    let dir = TempDir::new();
    let path = dir.path("model.safetensors");
    let module = mlp(0.1);
    save_module(&path, &module).unwrap();
    let old = fs::read(&path).unwrap();

    // What processes killed mid-write leave behind, under the names our writer picks.
    let stale: Vec<String> = (0..3).map(|n| format!(".model.safetensors.{}.{n}.tmp", 4_000_000 + n)).collect();
    for name in &stale {
        fs::write(dir.path(name), &old[..old.len() / 3]).unwrap();
    }
    // Not leftovers of this target: another target's temporary file, and a user's file.
    let others = [".model.safetensors.1.12.tmp.bak", ".model.safetensors.x.1.tmp", ".model.safetensors.1.2.3.tmp"];
    for name in others {
        fs::write(dir.path(name), b"keep").unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), old);
    let restored = mlp(0.9);
    load_module(&path, &restored).unwrap();
    assert_eq!(values(&restored), values(&module));

    let changed = mlp(0.7);
    save_module(&path, &changed).unwrap();
    load_module(&path, &restored).unwrap();
    assert_eq!(values(&restored), values(&changed));
    let mut expected: Vec<String> = others.iter().map(|s| s.to_string()).collect();
    expected.push("model.safetensors".into());
    expected.sort();
    assert_eq!(dir.entries(), expected, "leftovers removed, other files kept");
}

#[test]
fn a_live_writers_temporary_file_is_left_alone() {
    let dir = TempDir::new();
    let path = dir.path("w.safetensors");
    // A writer in another process holds the lock on its temporary file until it renames it.
    let live = dir.path(".w.safetensors.4000000.0.tmp");
    let file = fs::File::create(&live).unwrap();
    file.lock().unwrap();
    let state = BTreeMap::from([("w".to_string(), Tensor::from_vec(vec![1.0f32], &[1]))]);
    save_tensors(&path, &state).unwrap();
    assert_eq!(dir.entries(), vec![".w.safetensors.4000000.0.tmp", "w.safetensors"]);
    // Its writer died: the lock is gone, and so is the file after the next save.
    drop(file);
    save_tensors(&path, &state).unwrap();
    assert_eq!(dir.entries(), vec!["w.safetensors"]);
}

#[test]
fn saving_into_a_missing_directory_fails_without_creating_anything() {
    let dir = TempDir::new();
    let path = dir.path("no/such/dir/model.safetensors");
    let err = save_any_tensors(&path, &mixed()).unwrap_err();
    assert!(matches!(&err, NnError::Io { path: p, .. } if *p == path), "{err:?}");
    assert!(dir.entries().is_empty());
}

#[test]
fn the_reserved_metadata_name_is_refused_before_touching_the_file() {
    let dir = TempDir::new();
    let path = dir.path("w.safetensors");
    let bad = BTreeMap::from([("__metadata__".to_string(), Tensor::from_vec(vec![1.0f32], &[1]))]);
    let err = save_tensors(&path, &bad).unwrap_err();
    assert!(matches!(&err, NnError::Format { problem, .. } if problem.contains("__metadata__")), "{err:?}");
    assert!(dir.entries().is_empty());
}

#[test]
fn saving_replaces_an_existing_file_and_leaves_nothing_else() {
    let dir = TempDir::new();
    let path = dir.path("w.safetensors");
    let one = BTreeMap::from([("w".to_string(), Tensor::from_vec(vec![1.0f32], &[1]))]);
    let two = BTreeMap::from([("w".to_string(), Tensor::from_vec(vec![2.0f32, 3.0], &[2]))]);
    save_tensors(&path, &one).unwrap();
    save_tensors(&path, &two).unwrap();
    assert_eq!(load_tensors::<f32>(&path).unwrap(), two);
    assert_eq!(dir.entries(), vec!["w.safetensors"]);
}

#[test]
fn pytorch_batchnorm_counter_is_skipped_but_other_extras_are_refused() {
    use ferrograd_nn::BatchNorm1d;
    let dir = std::env::temp_dir().join(format!("ferrograd-bn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bn.safetensors");
    let bn = BatchNorm1d::<f32>::new(3);
    let mut state: BTreeMap<String, AnyTensor> =
        bn.state_dict().into_iter().map(|(k, v)| (k, AnyTensor::from(v.mul_scalar(2.0)))).collect();
    state.insert("num_batches_tracked".into(), AnyTensor::from(Tensor::<i64>::scalar(7)));
    save_any_tensors(&path, &state).unwrap();
    let fresh = BatchNorm1d::<f32>::new(3);
    load_module(&path, &fresh).unwrap();
    assert_eq!(fresh.state_dict()["running_var"].to_vec(), vec![2.0; 3]);

    state.insert("surprise".into(), AnyTensor::from(Tensor::<f32>::zeros(&[1])));
    save_any_tensors(&path, &state).unwrap();
    let err = load_module(&path, &BatchNorm1d::<f32>::new(3)).unwrap_err();
    assert!(err.to_string().contains("surprise"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
