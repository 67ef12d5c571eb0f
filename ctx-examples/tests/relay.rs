//! The `relay` example as processes: two hops A → B, called over loopback; the budget
//! shrinks hop by hop, `--max-deadline` caps and defaults, expiry is DEADLINE_EXCEEDED, and
//! SIGTERM or SIGINT drains in-flight RPCs (cancelling their upstream calls) and exits 0. Also checks
//! that ctx-core's checked-in copy of the generated code is what build.rs generates.

use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStderr, Command};
use std::time::{Duration, Instant};

use ctx_core::Context;
use ctx_examples::relay::{self, pb::HopRequest};
use tonic::Code;

mod support;
use support::{relay_binary, spawn_relay};

/// A running hop: its process, its address, and its stderr (one line per RPC).
struct Hop {
    child: Child,
    url: String,
    stderr: Option<ChildStderr>,
}

impl Hop {
    fn start(name: &str, upstream: Option<&str>, max_deadline_ms: Option<u64>) -> Hop {
        let mut args = Vec::new();
        if let Some(url) = upstream {
            args.extend(["--upstream".to_string(), url.to_string()]);
        }
        if let Some(ms) = max_deadline_ms {
            args.extend(["--max-deadline".to_string(), ms.to_string()]);
        }
        Hop::start_with(name, &args)
    }

    /// A hop started with `args` after its name and address.
    fn start_with(name: &str, args: &[String]) -> Hop {
        let (mut child, addr) = spawn_relay(name, args);
        assert!(addr.starts_with("127.0.0.1:"), "{addr:?}");
        let stderr = child.stderr.take();
        Hop {
            child,
            url: format!("http://{addr}"),
            stderr,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most `within`); returns its stderr.
    fn wait(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                self.stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return (status, stderr);
            }
            assert!(
                started.elapsed() < within,
                "the relay did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chain(work_ms: &[u32]) -> HopRequest {
    work_ms
        .iter()
        .rev()
        .fold(None, |rest: Option<HopRequest>, &work_ms| {
            Some(HopRequest {
                work_ms,
                rest: rest.map(Box::new),
                count: 0,
            })
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_carry_the_deadline_and_drain_on_sigterm() {
    let b = Hop::start("B", None, Some(300));
    let a = Hop::start("A", Some(&b.url), None);
    let mut client = relay::upstream(&a.url).unwrap();

    // The budget shrinks hop by hop.
    let request = Context::background().with_timeout(Duration::from_secs(2));
    let reply = request
        .scope(client.forward(chain(&[50, 0])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.hop, "A");
    let upstream = reply.upstream.as_deref().unwrap();
    assert_eq!(upstream.hop, "B");
    assert!((1_800..=2_000).contains(&reply.budget_ms), "{reply:?}");
    // B caps at 300 ms.
    assert!((150..=300).contains(&upstream.budget_ms), "{reply:?}");

    // No deadline from the client: A has none, B gives the call its --max-deadline.
    let reply = client.forward(chain(&[0, 0])).await.unwrap().into_inner();
    assert_eq!(reply.budget_ms, -1, "{reply:?}");
    assert!((150..=300).contains(&reply.upstream.unwrap().budget_ms));

    // Expiry at B (its cap): DEADLINE_EXCEEDED, naming the hop.
    let status = request
        .scope(client.forward(chain(&[0, 1_000])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("deadline exceeded downstream"),
        "{status:?}"
    );

    // SIGTERM to A with an RPC in flight at B: A cancels it (B sees its client go away),
    // drains, and exits 0.
    let mut slow = client.clone();
    let in_flight = tokio::spawn(async move { slow.forward(chain(&[0, 250])).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    a.signal("TERM");
    let (status, stderr) = tokio::task::spawn_blocking(move || a.wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "{:?}",
        signalled.elapsed()
    );
    assert!(
        stderr.contains("received SIGTERM: in-flight RPCs drained"),
        "{stderr}"
    );
    let status = in_flight.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // SIGINT (Ctrl-C) too.
    b.signal("INT");
    let (status, stderr) = tokio::task::spawn_blocking(move || b.wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("received SIGINT: in-flight RPCs drained"),
        "{stderr}"
    );
    assert!(stderr.contains("B: Forward ended Ok"), "{stderr}");
    assert!(
        stderr.contains("B: Forward ended DeadlineExceeded"),
        "{stderr}"
    );
    // The call A was serving at SIGTERM was cut at B too.
    assert!(stderr.contains("B: Forward ended Cancelled"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_in_flight_a_flood_is_answered_in_time_and_what_cannot_finish_never_starts() {
    // Two RPCs of 300 ms at a time: about 7 a second. Twelve at once, each with 1 s.
    let hop = Hop::start_with("A", &["--max-in-flight".to_string(), "2".to_string()]);
    let client = relay::upstream(&hop.url).unwrap();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let budget = Context::background().with_timeout(Duration::from_secs(1));
                let started = Instant::now();
                let result = budget.scope(client.forward(chain(&[300]))).await;
                (result.map(|_| ()), started.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        let (result, took) = call.await.unwrap();
        assert!(took < Duration::from_secs(5), "answered late: {took:?}");
        match result {
            Ok(()) => ok += 1,
            Err(status) => assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
                "{status:?}"
            ),
        }
    }
    assert!(
        ok >= 2,
        "the first two run at once and finish in time: {ok} ok"
    );
    // The flood is over and nothing leaked: a call goes straight through.
    let reply = client.clone().forward(chain(&[0])).await;
    assert!(reply.is_ok(), "{reply:?}");

    hop.signal("TERM");
    let (status, stderr) = tokio::task::spawn_blocking(move || hop.wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    // One line per handler that ran: those the layer answered never started.
    let ran = stderr.matches("A: Forward ended").count();
    assert!(ran < 13, "every RPC of the flood ran: {ran}\n{stderr}");
}

#[test]
fn bad_flags_are_clear_errors() {
    for (args, message) in [
        (&["--listen", "127.0.0.1:0"][..], "--name is required"),
        (&["--name", "A"][..], "--listen is required"),
        (
            &["--name", "A", "--listen", "nowhere"][..],
            "--listen takes an address",
        ),
        (
            &[
                "--name",
                "A",
                "--listen",
                "127.0.0.1:0",
                "--max-deadline",
                "soon",
            ][..],
            "--max-deadline takes milliseconds",
        ),
        (
            &[
                "--name",
                "A",
                "--listen",
                "127.0.0.1:0",
                "--max-in-flight",
                "0",
            ][..],
            "--max-in-flight takes a number",
        ),
        (&["--frobnicate"][..], "unknown argument"),
    ] {
        let out = Command::new(relay_binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = Command::new(relay_binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(help.contains("--max-deadline"), "{help}");
    assert!(help.contains("--max-in-flight"), "{help}");
}

#[test]
fn ctx_cores_generated_code_matches_build_rs() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/ctx.relay.v1.rs"));
    let checked_in = include_str!("../../ctx-core/tests/grpc/relay.v1.rs");
    let body = checked_in
        .split_once("\n// This file is @generated")
        .map(|(_, rest)| format!("// This file is @generated{rest}"))
        .expect("the checked-in copy keeps the generator's header");
    assert_eq!(
        body, generated,
        "ctx-core/tests/grpc/relay.v1.rs is stale: copy $OUT_DIR/ctx.relay.v1.rs over it"
    );
    // The contract lives beside the repository (../shared); a clone without it has only
    // its own copy to go by.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/proto/relay.proto");
    match std::fs::read(&shared) {
        Ok(contract) => assert!(
            contract == include_bytes!("../proto/relay.proto"),
            "ctx-examples/proto/relay.proto must be byte-identical to {}",
            shared.display()
        ),
        Err(err) => eprintln!("note: {}: {err}; not compared", shared.display()),
    }
}
