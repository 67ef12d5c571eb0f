//! What the tests that run the `relay` example as a process share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The `relay` example's binary, built once per test run.
pub fn relay_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // `cargo test` builds examples, `cargo test --test relay` does not: build it (the
            // cargo lock is free while tests run); a no-op when it is up to date.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "ctx-examples", "--example", "relay"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let out = build.output().expect("cargo runs");
            assert!(
                out.status.success(),
                "building the relay example failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            profile_dir.join("examples").join("relay")
        })
        .clone()
}

/// Starts the `relay` example named `name` on a free loopback port, with `args` after its
/// name and address; its stdout and stderr piped. Returns the process and the address its
/// first line announces (`listening on ADDR`).
pub fn spawn_relay(name: &str, args: &[String]) -> (Child, String) {
    let mut child = Command::new(relay_binary())
        .args(["--name", name, "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .trim()
        .to_string();
    (child, addr)
}
