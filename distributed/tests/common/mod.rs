//! Runs a test body on several MPI ranks: the `#[test]` launches `mpirun -n N` on its own test
//! binary, filtered to itself, with `FERROGRAD_MPI_WORKER` set; there each rank runs the body.
//! A failing assertion on any rank aborts the job (the panic hook of `Communicator::init`), so
//! `mpirun` exits non-zero and the test fails with every rank's output. A missing `mpirun` is a
//! failure, not a skip.
//!
//! The launcher is `mpirun` or the `MPIRUN` environment variable; it runs with
//! `--oversubscribe` (more ranks than cores) and, for Open MPI as root, with
//! `OMPI_ALLOW_RUN_AS_ROOT` set (what `--allow-run-as-root` sets).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrograd_distributed::Communicator;

const WORKER: &str = "FERROGRAD_MPI_WORKER";
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `body` on `n` ranks for each `n` of `ranks`. `name` is the calling test's path in the
/// binary (its function name).
pub fn on_ranks(name: &str, ranks: &[usize], body: fn(&Communicator)) {
    if std::env::var_os(WORKER).is_some() {
        let comm = Communicator::init().expect("MPI initialises once per worker");
        body(&comm);
        comm.barrier();
        return;
    }
    for &n in ranks {
        let (status, out, err) = launch(name, n);
        match status {
            Some(s) if s.success() && out.contains("test result: ok. 1 passed") => {}
            Some(s) => panic!("{name} on {n} ranks failed ({s}):\n--- stdout\n{out}\n--- stderr\n{err}"),
            None => panic!("{name} on {n} ranks hung for {TIMEOUT:?}:\n--- stdout\n{out}\n--- stderr\n{err}"),
        }
    }
}

/// Runs `body` on `n` ranks and expects the job to end in failure (not hang), with `expected` in
/// its error output.
#[allow(dead_code)]
pub fn on_ranks_expect_abort(name: &str, n: usize, expected: &str, body: fn(&Communicator)) {
    if std::env::var_os(WORKER).is_some() {
        let comm = Communicator::init().expect("MPI initialises once per worker");
        body(&comm);
        return;
    }
    let (status, out, err) = launch(name, n);
    match status {
        Some(s) if !s.success() && err.contains(expected) => {}
        Some(s) => panic!("{name}: expected a failed job mentioning `{expected}`, got {s}:\n{out}\n{err}"),
        None => panic!("{name}: hung for {TIMEOUT:?} instead of aborting:\n{out}\n{err}"),
    }
}

fn launch(name: &str, n: usize) -> (Option<std::process::ExitStatus>, String, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let launcher = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let mut cmd = Command::new(&launcher);
    cmd.args(["--oversubscribe", "-n", &n.to_string(), "-x", WORKER])
        .arg(&exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(WORKER, "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("{name}: cannot start `{launcher}` ({e}): install Open MPI (apt install openmpi-bin libopenmpi-dev) or set MPIRUN")
    });
    // Drained on threads: a worker that writes more than a pipe holds must not block.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for mpirun") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}
