//! Interop with a gRPC peer nobody here wrote: Python's grpcio (from PyPI, installed by
//! `.ci/test`), over loopback, with the project's copy of relay.proto. A grpcio client calls
//! our tonic server (`ServerLayer`), whose handler calls a grpcio server upstream through
//! `ClientLayer`; and our client calls the grpcio server directly.
//!
//! Without grpcio these tests fail, saying how to install it: they never skip.

#[path = "grpc/hop.rs"]
mod hop;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ctx_core::http::grpc::ServerLayer;
use ctx_core::{Context, Error};
use hop::{Event, Server, chain, layered_client};

const WAIT: Duration = Duration::from_secs(10);

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The directory holding peer.py and the stubs generated from relay.proto, once per run.
fn stubs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let check = Command::new(python())
            .args(["-c", "import grpc, grpc_tools"])
            .output();
        match check {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "Python's grpcio and grpcio-tools are not installed ({}): run `bash .ci/test`, \
                 which installs them (or `python3 -m pip install grpcio grpcio-tools`)",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => panic!(
                "no python3 ({err}): run `bash .ci/test`, which installs Python, grpcio and \
                 grpcio-tools"
            ),
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let proto_dir = manifest.join("../ctx-examples/proto");
        // Under target/ (cargo's scratch directory for integration tests), not the system's
        // temp directory, which nothing would clean.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("grpc-interop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(python())
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", proto_dir.display()))
            .arg(format!("--python_out={}", dir.display()))
            .arg(format!("--grpc_python_out={}", dir.display()))
            .arg(proto_dir.join("relay.proto"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "grpc_tools.protoc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy(manifest.join("tests/grpc/peer.py"), dir.join("peer.py")).unwrap();
        dir
    })
}

fn peer() -> Command {
    let dir = stubs();
    let mut command = Command::new(python());
    command
        .arg(dir.join("peer.py"))
        .env("PYTHONPATH", dir)
        .env("PYTHONUNBUFFERED", "1");
    command
}

/// A grpcio server process and the events it prints.
struct PyServer {
    child: Child,
    _stdin: ChildStdin,
    url: String,
    events: Mutex<mpsc::Receiver<String>>,
}

impl PyServer {
    fn start() -> PyServer {
        let mut child = peer()
            .args(["server", "py"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a first line").unwrap();
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(event) = line.strip_prefix("event ") {
                    let _ = tx.send(event.to_string());
                }
            }
        });
        PyServer {
            child,
            _stdin: stdin,
            url: format!("http://{addr}"),
            events: Mutex::new(rx),
        }
    }

    /// Waits for an event starting with `prefix`, skipping others; returns it.
    fn expect(&self, prefix: &str) -> String {
        let events = self.events.lock().unwrap();
        let until = Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(event) if event.starts_with(prefix) => return event,
                Ok(_) => {}
                Err(err) => panic!("no python event {prefix:?}: {err}"),
            }
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a grpcio client saw.
#[derive(Debug, Default)]
struct PyResult {
    code: String,
    hops: Vec<String>,
    budgets: Vec<i64>,
    seqs: Vec<u32>,
    details: String,
}

/// A request as the JSON peer.py reads.
fn json(work_ms: &[u32], count: u32) -> String {
    work_ms
        .iter()
        .rev()
        .fold(String::from("null"), |rest, work| {
            format!(r#"{{"work_ms": {work}, "count": {count}, "rest": {rest}}}"#)
        })
}

/// Runs a grpcio client call (on a blocking thread).
async fn py_call(
    target: &str,
    method: &str,
    timeout: Duration,
    request: String,
    cancel_after: Option<Duration>,
) -> PyResult {
    let mut command = peer();
    command.args([
        "client",
        target.trim_start_matches("http://"),
        method,
        &timeout.as_secs_f64().to_string(),
        &request,
    ]);
    if let Some(after) = cancel_after {
        command.arg(after.as_secs_f64().to_string());
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the grpcio client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut result = PyResult::default();
    for line in stdout.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let words = || value.split_whitespace();
        match key {
            "code" => result.code = value.to_string(),
            "hops" => result.hops = words().map(String::from).collect(),
            "budgets" => result.budgets = words().map(|w| w.parse().unwrap()).collect(),
            "seqs" => result.seqs = words().map(|w| w.parse().unwrap()).collect(),
            "details" => result.details = value.to_string(),
            _ => {}
        }
    }
    result
}

fn layer(root: &Context) -> ServerLayer {
    ServerLayer::new(root).max_timeout(Duration::from_secs(5))
}

fn capped(root: &Context) -> ServerLayer {
    ServerLayer::new(root).max_timeout(Duration::from_millis(300))
}

fn ended(event: Event) -> (Option<Error>, Option<String>) {
    match event {
        Event::Ended(err, cause) => (err, cause),
        other => panic!("expected an end, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_clients_deadline_reaches_our_handler_and_the_grpcio_upstream() {
    let py = PyServer::start();
    let ours = Server::start("ours", Some(layer), Some(py.url.clone())).await;
    let result = py_call(
        &ours.url(),
        "Forward",
        Duration::from_secs(1),
        json(&[50, 0], 0),
        None,
    )
    .await;
    assert_eq!(result.code, "OK", "{result:?}");
    assert_eq!(result.hops, ["ours", "py"]);
    let (our_budget, py_budget) = (result.budgets[0], result.budgets[1]);
    // (a) our handler saw the grpcio client's deadline;
    assert!((600..=1_000).contains(&our_budget), "{result:?}");
    match ours.event(WAIT).await {
        Event::Started(Some(budget)) => assert!(budget <= Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    // (b) the grpcio upstream's time_remaining() is below ours (we worked 50 ms first) and
    // above zero.
    assert!(py_budget > 0 && py_budget < our_budget - 40, "{result:?}");
    py.expect("done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_that_cancels_ends_our_context_and_cancels_the_upstream() {
    let py = PyServer::start();
    let ours = Server::start("ours", Some(layer), Some(py.url.clone())).await;
    let result = py_call(
        &ours.url(),
        "Forward",
        Duration::from_secs(5),
        json(&[0, 3_000], 0),
        Some(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(result.code, "CANCELLED", "{result:?}");
    // (c) our handler's context ended, with the client's cancel as its cause ...
    assert!(matches!(ours.event(WAIT).await, Event::Started(_)));
    let (err, cause) = ended(ours.event(WAIT).await);
    assert_eq!(err, Some(Error::Cancelled));
    assert!(cause.unwrap().contains("client disconnected"));
    // ... and the upstream saw its RPC cancelled.
    py.expect("started");
    py.expect("cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_reaches_a_grpcio_client_as_deadline_exceeded() {
    let py = PyServer::start();
    // (d) at our hop: our cap (300 ms) is shorter than the client's 5 s.
    let ours = Server::start("ours", Some(capped), Some(py.url.clone())).await;
    let started = Instant::now();
    let result = py_call(
        &ours.url(),
        "Forward",
        Duration::from_secs(5),
        json(&[2_000], 0),
        None,
    )
    .await;
    assert_eq!(result.code, "DEADLINE_EXCEEDED", "{result:?}");
    assert!(
        result.details.contains("context deadline exceeded"),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(ours.event(WAIT).await, Event::Started(_)));
    assert_eq!(
        ended(ours.event(WAIT).await).0,
        Some(Error::DeadlineExceeded)
    );

    // (d) when the upstream ran out: it aborts with DEADLINE_EXCEEDED 100 ms before its
    // deadline (our remaining budget); our hop answers the same, naming the upstream hop.
    let ours = Server::start("ours", Some(layer), Some(py.url.clone())).await;
    let result = py_call(
        &ours.url(),
        "Forward",
        Duration::from_secs(1),
        json(&[0, 5_000], 0),
        None,
    )
    .await;
    assert_eq!(result.code, "DEADLINE_EXCEEDED", "{result:?}");
    let py_addr = py.url.trim_start_matches("http://");
    assert!(
        result.details.contains(&format!(
            "deadline exceeded downstream of /ctx.relay.v1.Relay/Forward on {py_addr}"
        )),
        "{result:?}"
    );
    assert!(
        result
            .details
            .contains("the python upstream ran out of time"),
        "{result:?}"
    );
    py.expect("ran-out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_a_grpcio_client_is_cut_by_its_deadline() {
    let ours = Server::start("ours", Some(capped), None).await;
    let result = py_call(
        &ours.url(),
        "Watch",
        Duration::from_secs(5),
        json(&[20], 1_000),
        None,
    )
    .await;
    // (e) some replies, then DEADLINE_EXCEEDED at our 300 ms cap.
    assert_eq!(result.code, "DEADLINE_EXCEEDED", "{result:?}");
    assert!(
        !result.seqs.is_empty() && result.seqs.len() < 20,
        "{result:?}"
    );
    assert_eq!(
        result.seqs,
        (0..result.seqs.len() as u32).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_sends_a_grpcio_server_the_right_grpc_timeout() {
    let py = PyServer::start();
    let mut client = layered_client(&py.url);

    let request = Context::background().with_timeout(Duration::from_millis(800));
    let reply = request
        .scope(client.forward(chain(&[0])))
        .await
        .unwrap()
        .into_inner();
    assert!((500..=800).contains(&reply.budget_ms), "{reply:?}");

    // The call's own timeout is smaller: it is what the server gets.
    let mut call = tonic::Request::new(chain(&[0]));
    call.set_timeout(Duration::from_millis(250));
    let reply = request
        .scope(client.forward(call))
        .await
        .unwrap()
        .into_inner();
    assert!((100..=250).contains(&reply.budget_ms), "{reply:?}");

    // No context deadline, no own timeout: no deadline at the server.
    let reply = client.forward(chain(&[0])).await.unwrap().into_inner();
    assert_eq!(reply.budget_ms, -1, "{reply:?}");

    // The grpcio server runs out first (it aborts 100 ms before its deadline): our client
    // reports DEADLINE_EXCEEDED downstream, naming the hop.
    let request = Context::background().with_timeout(Duration::from_millis(200));
    let status = request
        .scope(client.forward(chain(&[5_000])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let hop = ctx_core::http::grpc::hop_error(&status).unwrap();
    assert_eq!(hop.authority(), py.url.trim_start_matches("http://"));
}
