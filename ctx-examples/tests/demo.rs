//! The demo binary end to end: a short mix (with its per-hop table for the gRPC hops),
//! `--help`, and a bad flag.

use std::process::Command;

fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ctx-examples"))
}

#[test]
fn a_short_mix_runs_and_shuts_down_cleanly() {
    let out = demo()
        .args(["--requests", "80", "--concurrency", "8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for endpoint in ["fast", "slow", "fanout", "command", "chain"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(endpoint)),
            "no row for {endpoint}:\n{stdout}"
        );
    }
    assert!(stdout.contains("0 handlers left running"), "{stdout}");
    let seen: u64 = stdout
        .lines()
        .filter(|l| {
            ["fast ", "slow ", "fanout ", "command ", "chain "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(seen, 80, "every request is in the table:\n{stdout}");

    // The per-hop table of /chain: every hop has a row, a request reaches a hop only through
    // the ones before it, and the gateway's row counts what the endpoint's row does.
    let requests = |prefix: &str| -> u64 {
        let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(rows.len(), 1, "one row for {prefix:?}:\n{stdout}");
        rows[0].split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (chain, gateway) = (requests("chain "), requests("gateway "));
    let (backend, store) = (requests("backend "), requests("store "));
    assert_eq!(chain, gateway, "{stdout}");
    assert!(gateway >= backend && backend >= store, "{stdout}");
    assert!(backend > 0, "{stdout}");
    assert!(stdout.contains("budget"), "{stdout}");
}

#[test]
fn help_explains_the_flags() {
    let out = demo().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--requests",
        "--concurrency",
        "--serve",
        "grpc-timeout",
        "/chain",
    ] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn a_bad_flag_is_a_clear_error() {
    let out = demo().arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument \"--frobnicate\""));
    let out = demo().args(["--requests", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--requests takes a number"));
}
