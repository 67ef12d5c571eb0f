//! What the tests that run the `relay` example as a process share.

use std::path::{Path, PathBuf};
use std::process::Command;
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
