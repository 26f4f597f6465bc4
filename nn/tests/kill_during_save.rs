//! Saves interrupted by SIGKILL, in a real child process: whatever instant the kill lands at,
//! the previous file stays loadable, at most one temporary file exists at any time, and the
//! next save to the same place leaves none.
//!
//! The child is this test binary again, running the ignored test `child` with
//! `FERROGRAD_KILL_CHILD` set to what it should write over and over; it prints a line after
//! each complete write, and the parent kills it at a varying delay after such a line.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrograd_nn::checkpoint::{load_module, save_module};
use ferrograd_nn::data::read_idx;
use ferrograd_nn::layers::Linear;
use ferrograd_nn::Module;
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

const CHILD_ENV: &str = "FERROGRAD_KILL_CHILD";

/// A 1024 x 1024 Linear layer (4 MiB of weights), every weight set to `value`.
fn layer(value: f32) -> Linear<f32> {
    let l = Linear::new(1024, 1024, &mut StdRng::seed_from_u64(0));
    l.weight.set(Tensor::full(&[1024, 1024], value));
    l.bias.as_ref().expect("Linear has a bias by default").set(Tensor::full(&[1024], value));
    l
}

/// The value every tensor of the checkpoint holds: the file must be one complete save.
fn saved_value(path: &Path) -> f32 {
    let l = layer(-1.0);
    load_module(path, &l).unwrap_or_else(|e| panic!("the previous checkpoint must stay loadable: {e}"));
    let values: Vec<f32> = l.state_dict().values().flat_map(|t| t.to_vec()).collect();
    assert!(values.iter().all(|&v| v == values[0]), "the checkpoint mixes two saves");
    values[0]
}

/// The IDX bytes the `.gz` of [`gz_file`] holds: 16 MiB of data.
fn idx_bytes() -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 2];
    bytes.extend(4096u32.to_be_bytes());
    bytes.extend(4096u32.to_be_bytes());
    bytes.extend((0..4096 * 4096).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    bytes
}

fn gz_file(dir: &Path) -> PathBuf {
    let gz = dir.join("data-idx2-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&idx_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    gz
}

#[test]
#[ignore = "the child process of the other tests here, which start it themselves"]
fn child() {
    let spec = std::env::var(CHILD_ENV).expect("started by a kill test");
    let (what, path) = spec.split_once(':').expect("WHAT:PATH");
    let path = Path::new(path);
    let mut out = std::io::stdout();
    for n in 0u32.. {
        match what {
            "module" => save_module(path, &layer(n as f32)).unwrap(),
            "gz" => {
                // Only a missing (or stale) cache is decompressed again.
                let _ = std::fs::remove_file(path.with_extension(""));
                read_idx(path).unwrap();
            }
            other => panic!("unknown child task {other}"),
        }
        writeln!(out, "written {n}").unwrap();
        out.flush().unwrap();
    }
}

fn start_child(what: &str, path: &Path) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{what}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// The temporary files in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

/// Starts and kills children writing `what` to `path` until three kills have landed in the
/// middle of a write (a temporary file survives them), checking after every kill that at most
/// one temporary file exists and calling `check` (the target is complete).
fn kill_until_three_land(what: &str, path: &Path, check: impl Fn()) {
    let dir = path.parent().unwrap();
    let mut landed = 0;
    for attempt in 0..200u64 {
        let (mut child, mut out) = start_child(what, path);
        // Wait for complete writes (the second onwards follows a clean-up), then a delay that
        // sweeps the time a write takes.
        let mut written = 0;
        while written < 2 {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child stopped before writing twice");
            written += usize::from(line.starts_with("written"));
        }
        std::thread::sleep(Duration::from_micros(attempt * 7919 % 40_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let temps = temporaries(dir);
        assert!(temps.len() <= 1, "temporary files accumulate: {temps:?}");
        landed += temps.len();
        check();
        if landed == 3 {
            return;
        }
    }
    panic!("no kill landed during a write in 200 attempts");
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrograd-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_save_module_killed_mid_write_leaves_nothing_after_the_next_save() {
    let dir = fresh_dir("module");
    let path = dir.join("model.safetensors");
    kill_until_three_land("module", &path, || {
        saved_value(&path);
    });
    save_module(&path, &layer(0.5)).unwrap();
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    assert_eq!(saved_value(&path), 0.5);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_gz_decompression_killed_mid_write_leaves_nothing_after_the_next_read() {
    let dir = fresh_dir("gz");
    let gz = gz_file(&dir);
    let cache = dir.join("data-idx2-ubyte");
    let expected = idx_bytes();
    kill_until_three_land("gz", &gz, || {
        if cache.exists() {
            assert_eq!(std::fs::read(&cache).unwrap(), expected, "a cache is complete or absent");
        }
    });
    assert_eq!(read_idx(&gz).unwrap().bytes(), &expected[12..]);
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(dir).unwrap();
}
