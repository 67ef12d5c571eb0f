//! Runs every example binary and checks its exit status and a key line of its output.
//!
//! The binaries are the ones cargo puts in `target/<profile>/examples/`. Plain `cargo test`
//! builds them; `cargo test --test examples` does not, so when one is missing or older than
//! its source, the first test builds them all with `cargo build --examples` (cargo's lock is
//! free while tests run) and fails with cargo's errors if that build fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 13] = [
    "walkthrough_background_todo",
    "walkthrough_with_value",
    "walkthrough_with_cancel",
    "walkthrough_with_deadline",
    "walkthrough_with_timeout",
    "go_with_cancel_generator",
    "go_with_deadline",
    "go_with_timeout",
    "go_with_value",
    "go_after_func_cond",
    "go_after_func_connection",
    "go_after_func_merge",
    "bank_transfer",
];

/// `target/<profile>`: this test binary lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    profile_dir()
        .join("examples")
        .join(name)
        .with_extension(std::env::consts::EXE_EXTENSION)
}

fn is_stale(name: &str) -> bool {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    match (modified(&binary(name)), modified(&source)) {
        (Some(built), Some(written)) => built < written,
        _ => true,
    }
}

/// Builds the examples once per test run if any is missing or out of date.
fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if !EXAMPLES.iter().any(|name| is_stale(name)) {
            return Ok(());
        }
        let profile = match profile_dir().file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            .args([
                "build",
                "-p",
                "ctx-examples",
                "--examples",
                "--profile",
                &profile,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|err| format!("could not run `{cargo} build`: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`cargo build -p ctx-examples --examples --profile {profile}` failed ({status}); \
                 its errors are above"
            ))
        }
    });
    if let Err(err) = built {
        panic!("{err}");
    }
}

/// Runs example `name` and returns its stdout, asserting that it exited successfully.
fn run(name: &str) -> String {
    ensure_built();
    let path = binary(name);
    assert!(
        path.exists(),
        "example binary {} is missing: build it with `cargo build -p ctx-examples --example {name}`",
        path.display()
    );
    let start = Instant::now();
    let output = Command::new(&path)
        .output()
        .unwrap_or_else(|err| panic!("could not run {}: {err}", path.display()));
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed ({}):\n--- stdout\n{stdout}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "example {name} took {elapsed:?}; examples should finish well under 2s"
    );
    stdout
}

/// Asserts that `stdout` has a line equal to each of `lines`.
fn assert_lines(name: &str, stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            stdout.lines().any(|l| l == *line),
            "example {name}: expected the line {line:?} in its output:\n{stdout}"
        );
    }
}

#[test]
fn walkthrough_background_todo() {
    let out = run("walkthrough_background_todo");
    assert_lines(
        "walkthrough_background_todo",
        &out,
        &[
            "root: context.Background",
            "request 1 stopped: context cancelled",
            "request 2 stopped: context cancelled",
            "lookup_user(7) runs under context.TODO.WithCancel",
        ],
    );
}

#[test]
fn walkthrough_with_value() {
    let out = run("walkthrough_with_value");
    assert_lines(
        "walkthrough_with_value",
        &out,
        &[
            "[req 1001] charging account 42: 250 cents",
            "[req 1002] retrying",
        ],
    );
}

#[test]
fn walkthrough_with_cancel() {
    let out = run("walkthrough_with_cancel");
    assert_lines(
        "walkthrough_with_cancel",
        &out,
        &[
            "first: answer from replica-b",
            "replica-a: context cancelled",
            "replica-c: context cancelled",
        ],
    );
}

#[test]
fn walkthrough_with_deadline() {
    let out = run("walkthrough_with_deadline");
    assert_lines(
        "walkthrough_with_deadline",
        &out,
        &[
            "authenticate: asked for 1s, kept the request's deadline",
            "render_report: needs ~500ms, less is left: skipped",
            "request: context deadline exceeded",
        ],
    );
}

#[test]
fn walkthrough_with_timeout() {
    let out = run("walkthrough_with_timeout");
    assert_lines(
        "walkthrough_with_timeout",
        &out,
        &[
            "recommendations: context deadline exceeded (recommendations took longer than 30ms)",
            "page served: 3 in stock, 0 recommendations",
        ],
    );
}

#[test]
fn go_with_cancel_generator() {
    let out = run("go_with_cancel_generator");
    assert!(
        out.starts_with("1\n2\n3\n4\n5\n"),
        "go_with_cancel_generator printed:\n{out}"
    );
    assert_lines(
        "go_with_cancel_generator",
        &out,
        &["generator stopped: context cancelled"],
    );
}

#[test]
fn go_with_deadline() {
    let out = run("go_with_deadline");
    assert_eq!(out, "context deadline exceeded\n");
}

#[test]
fn go_with_timeout() {
    let out = run("go_with_timeout");
    assert_eq!(
        out,
        "context deadline exceeded\nblocking thread: context deadline exceeded\n"
    );
}

#[test]
fn go_with_value() {
    let out = run("go_with_value");
    assert_eq!(out, "found value: Go\nkey not found: Color\n");
}

#[test]
fn go_after_func_cond() {
    let out = run("go_after_func_cond");
    assert_eq!(
        out,
        "context deadline exceeded\n".repeat(4) + "condition met: Ok(())\n"
    );
}

#[test]
fn go_after_func_connection() {
    let out = run("go_after_func_connection");
    assert_eq!(out, "read \"hello\"\ncontext deadline exceeded\n");
}

#[test]
fn go_after_func_merge() {
    let out = run("go_after_func_merge");
    assert_eq!(out, "ctx2 canceled\ndropped merge: context cancelled\n");
}

#[test]
fn bank_transfer() {
    let out = run("bank_transfer");
    assert_lines(
        "bank_transfer",
        &out,
        &[
            "two statements: bug found",
            "one transaction: a cancel at each of its 2 points leaves every account right",
        ],
    );
    assert!(
        out.contains("cancelled at point 1 (ctx-examples/src/bank.rs:"),
        "bank_transfer names the await between the statements:\n{out}"
    );
}
