//! Helpers for the `db_*` tests: running this package's examples, cancelling at a chosen
//! instant, and (feature `postgres`) a throw-away PostgreSQL cluster.

#![allow(dead_code)] // each test binary uses a part

#[cfg(feature = "postgres")]
pub mod activity;
#[cfg(feature = "postgres")]
pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ctx_core::CancelHandle;

/// A thread that cancels each handle it is sent after the delay it comes with, spinning
/// for precision (the races the db tests aim at are microseconds wide).
pub fn canceller() -> mpsc::Sender<(CancelHandle, Duration)> {
    let (tx, rx) = mpsc::channel::<(CancelHandle, Duration)>();
    std::thread::spawn(move || {
        for (handle, delay) in rx {
            let start = Instant::now();
            while start.elapsed() < delay {
                std::hint::spin_loop();
            }
            handle.cancel();
        }
    });
    tx
}

/// `target/<profile>`: a test binary lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A command that runs `examples/<name>.rs` of this package. `cargo test` builds the
/// examples; when it did not (`cargo test --test db_sqlite`), or the binary is older than
/// its source, this builds it first (cargo's lock is free while tests run).
pub fn example(name: &str) -> Command {
    let binary = profile_dir()
        .join("examples")
        .join(name)
        .with_extension(std::env::consts::EXE_EXTENSION);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let stale = match (modified(&binary), modified(&source)) {
        (Some(built), Some(written)) => built < written,
        _ => true,
    };
    if stale {
        let profile = match profile_dir().file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(&cargo)
            .args([
                "build",
                "-p",
                "ctx-core",
                "--all-features",
                "--example",
                name,
            ])
            .args(["--profile", &profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap_or_else(|err| panic!("could not run `{cargo} build`: {err}"));
        assert!(
            out.status.success(),
            "building example {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Command::new(binary)
}

/// Runs `command`, or panics saying why it could not.
pub fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("could not run {command:?}: {err}"))
}

/// An example's exit status and output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A two-worker tokio runtime, for the blocking tests that drive async databases.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A duration in milliseconds, for messages.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
