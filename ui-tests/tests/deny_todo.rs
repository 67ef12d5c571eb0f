//! `RUSTFLAGS="--cfg ctx_deny_todo"` makes every `Context::todo()` call site in the user's
//! crate a warning that names the fix, so `-D warnings` fails the build until each is
//! plumbed; without the switch the same crate builds clean.
//!
//! Each test writes a small crate under `target/deny-todo/` (its own workspace, with this
//! workspace's `Cargo.lock`, so nothing is resolved anew) and runs `cargo check` on it, as CI
//! would, with a target directory of its own per set of flags so a rerun is incremental.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user's crate: two `todo()` calls and a `todo` passed as a function, each on a line the
/// warnings must point at.
const MAIN_RS: &str = r#"use ctx_core::Context;

fn lookup(ctx: &Context, id: u32) -> Option<u32> {
    ctx.checkpoint().ok().map(|()| id)
}

fn main() {
    let _ = lookup(&Context::todo(), 1);
    let parent: Option<Context> = None;
    let ctx = parent.unwrap_or_else(Context::todo);
    let _ = lookup(&ctx, 2);
    let _ = lookup(&Context::background(), 3);
}
"#;

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("ui-tests is in the workspace")
        .to_owned()
}

/// Writes the crate (once per name) and runs `cargo check` on it with `rustflags`; its
/// success and its stderr.
fn check_fixture(name: &str, rustflags: &str) -> (bool, String) {
    let root = workspace_root();
    let dir = root.join("target/deny-todo").join(name);
    std::fs::create_dir_all(dir.join("src")).expect("create the fixture's directory");
    let core = root.join("ctx-core");
    let manifest = format!(
        "[package]\nname = \"deny-todo-{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         publish = false\n\n[dependencies]\nctx-core = {{ path = {core:?}, default-features = false }}\n\n\
         # Its own workspace, apart from ctx's.\n[workspace]\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), MAIN_RS).expect("write src/main.rs");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["check", "--quiet", "--message-format", "short"])
        .current_dir(&dir)
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .expect("run cargo check on the fixture");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_switch_fails_a_deny_warnings_build_at_each_todo() {
    let (ok, stderr) = check_fixture("on", "--cfg ctx_deny_todo -D warnings");
    assert!(
        !ok,
        "the build passed with a Context::todo() in it:\n{stderr}"
    );
    // One error per call site, at the user's line, naming the fix; none in ctx-core.
    for line in ["src/main.rs:8:", "src/main.rs:10:"] {
        let at_line: Vec<&str> = stderr.lines().filter(|l| l.contains(line)).collect();
        assert_eq!(at_line.len(), 1, "expected one error at {line}:\n{stderr}");
        let error = at_line[0];
        assert!(
            error.contains("use of deprecated associated function `ctx_core::Context::todo`"),
            "{error}"
        );
        assert!(
            error.contains("take the caller's `&Context` as a parameter and pass it on"),
            "the message does not name the fix: {error}"
        );
    }
    assert!(
        !stderr.contains("main.rs:12:"),
        "background() was flagged:\n{stderr}"
    );
    assert!(
        !stderr.contains("ctx-core/src"),
        "ctx-core itself warned:\n{stderr}"
    );
}

#[test]
fn without_the_switch_the_same_crate_builds_clean() {
    let (ok, stderr) = check_fixture("off", "-D warnings");
    assert!(
        ok,
        "the fixture did not build without the switch:\n{stderr}"
    );
    assert!(!stderr.contains("deprecated"), "{stderr}");
}
