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

/// `--serve`: the live context tree at `/debug/contexts`, then a clean exit on SIGINT.
#[test]
fn serve_mode_shows_the_live_context_tree() {
    use std::io::{BufRead, BufReader, Read, Write};

    let mut child = demo()
        .args(["--serve", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the demo said where it serves")
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /debug/contexts HTTP/1.1\r\nHost: {addr}\r\ngrpc-timeout: 5S\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // This very request: a deadline context (from its grpc-timeout) under the server's root.
    assert!(
        response.contains("context.Background.WithCancel"),
        "{response}"
    );
    assert!(response.contains("WithDeadline"), "{response}");
    assert!(response.contains("deadline in "), "{response}");

    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "the demo exits 0 on SIGINT"
    );
}
