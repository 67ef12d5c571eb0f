//! The `relay` example with `--max-in-flight` under an open-loop flood from a gRPC client
//! nobody here wrote: Python's grpcio (from PyPI, installed by `.ci/test`), driven by
//! `tests/flood.py` with stubs generated from `proto/relay.proto`. At half its capacity
//! the relay serves nearly everything; at three times its capacity it keeps serving about
//! its capacity on time, answers the rest DEADLINE_EXCEEDED or UNAVAILABLE by their
//! deadlines without running them, and is whole again once the flood is over.
//!
//! Without grpcio this test fails, saying how to install it: it never skips.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod support;
use support::spawn_relay;

/// Places in the relay's handler (`--max-in-flight`).
const PLACES: usize = 4;
/// Each call's work in the handler: the relay sleeps it under the call's context, so its
/// capacity is exactly PLACES / WORK, whatever the machine's speed (40 calls a second).
const WORK: Duration = Duration::from_millis(100);
/// Each call's deadline (grpcio's `timeout=`): ten times the service time. Also the
/// relay's `--max-deadline`, so that a call sent with a longer one must be answered by the
/// relay itself in time, not by grpcio's own timer.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How late after its deadline a call may end: grpcio's timer and this shared machine's
/// scheduling, not the relay, which should answer by the deadline.
const LATE: Duration = Duration::from_millis(500);

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The directory holding the stubs generated from relay.proto, once per run.
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
        let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let dir = std::env::temp_dir().join(format!("ctx-relay-flood-{}", std::process::id()));
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
        dir
    })
}

/// The relay, and its stderr's lines as they come (one per handler that ran).
struct Relay {
    child: Child,
    target: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    fn start(max_in_flight: usize, max_deadline: Duration) -> Relay {
        let (mut child, target) = spawn_relay(
            "A",
            &[
                "--max-in-flight".to_string(),
                max_in_flight.to_string(),
                "--max-deadline".to_string(),
                max_deadline.as_millis().to_string(),
            ],
        );
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Relay {
            child,
            target,
            lines,
        }
    }

    /// The handlers that ran since the last call, once the relay is quiet: a call its
    /// client gave up on may end at the relay a moment after the client saw it end.
    fn handlers(&self, seen: &mut usize) -> Vec<String> {
        let mut count = self.lines.lock().unwrap().len();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.lines.lock().unwrap().len();
            if now != count {
                (count, quiet_since) = (now, Instant::now());
            }
        }
        let lines = self.lines.lock().unwrap();
        let new = lines[*seen..]
            .iter()
            .filter(|line| line.starts_with("A: Forward ended"))
            .cloned()
            .collect();
        *seen = lines.len();
        new
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call as the grpcio client saw it: when it was sent and ended (seconds from the
/// flood's start), and its status.
#[derive(Debug)]
struct Call {
    sent: f64,
    ended: f64,
    code: String,
}

/// What flood.py reported.
#[derive(Debug)]
struct Flood {
    /// Seconds after which every call should have ended: its timeout, or the relay's
    /// `--max-deadline` if shorter.
    deadline: f64,
    calls: Vec<Call>,
    /// `COUNT CODE DETAILS` for each distinct non-OK status.
    details: Vec<String>,
}

impl Flood {
    fn ok(&self) -> usize {
        self.calls.iter().filter(|c| c.code == "OK").count()
    }

    fn codes(&self) -> BTreeMap<&str, usize> {
        let mut codes = BTreeMap::new();
        for call in &self.calls {
            *codes.entry(call.code.as_str()).or_default() += 1;
        }
        codes
    }

    /// Seconds from the first call sent to the last.
    fn span(&self) -> f64 {
        self.calls.last().map_or(0.0, |c| c.sent)
    }

    /// OK answers a second while calls were being sent (those answered after the last was
    /// sent are the queue draining, not the relay keeping up).
    fn goodput(&self) -> f64 {
        let span = self.span();
        let ok = self
            .calls
            .iter()
            .filter(|c| c.code == "OK" && c.ended <= span)
            .count();
        ok as f64 / span
    }

    /// The latest any call ended after its deadline (negative: all before).
    fn worst_overrun(&self) -> f64 {
        self.calls
            .iter()
            .map(|c| c.ended - c.sent - self.deadline)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Every call ended OK, DEADLINE_EXCEEDED or UNAVAILABLE (the answers of a relay that
    /// sheds or runs out of time: never UNKNOWN or INTERNAL, nor a reset stream), and by its
    /// deadline, give or take this machine's scheduling.
    fn assert_answered_in_time(&self, name: &str) {
        for call in &self.calls {
            assert!(
                matches!(
                    call.code.as_str(),
                    "OK" | "DEADLINE_EXCEEDED" | "UNAVAILABLE"
                ),
                "{name}: {call:?}; {:?}",
                self.details
            );
        }
        let overrun = self.worst_overrun();
        assert!(
            overrun <= LATE.as_secs_f64(),
            "{name}: a call ended {overrun:.3}s after its deadline"
        );
    }
}

/// Sends `count` calls of `work` to the relay from grpcio, on `schedule` (a rate a second,
/// `serial` or `burst`: see flood.py), each with a deadline of `timeout`.
fn flood(relay: &Relay, schedule: &str, count: usize, work: Duration, timeout: Duration) -> Flood {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flood.py");
    let out = Command::new(python())
        .arg(script)
        .args([
            &relay.target,
            schedule,
            &count.to_string(),
            &work.as_millis().to_string(),
            &timeout.as_secs_f64().to_string(),
        ])
        .env("PYTHONPATH", stubs())
        .output()
        .expect("python3 starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flood.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut flood = Flood {
        deadline: timeout.min(TIMEOUT).as_secs_f64(),
        calls: Vec::new(),
        details: Vec::new(),
    };
    for line in stdout.lines() {
        if let Some(call) = line.strip_prefix("rpc ") {
            let fields: Vec<&str> = call.split(' ').collect();
            let [sent, ended, code] = fields[..] else {
                panic!("{line:?}")
            };
            flood.calls.push(Call {
                sent: sent.parse().unwrap(),
                ended: ended.parse().unwrap(),
                code: code.to_string(),
            });
        } else if let Some(details) = line.strip_prefix("details ") {
            flood.details.push(details.to_string());
        }
    }
    assert_eq!(flood.calls.len(), count, "{stdout}");
    flood
}

/// An open-loop flood at `times` the relay's capacity for `seconds`, each call with a
/// deadline of `timeout`.
fn flood_at(relay: &Relay, times: f64, seconds: f64, timeout: Duration) -> Flood {
    let capacity = PLACES as f64 / WORK.as_secs_f64();
    let rate = capacity * times;
    let flood = flood(
        relay,
        &rate.to_string(),
        (rate * seconds) as usize,
        WORK,
        timeout,
    );
    // The client kept its schedule (open loop): the relay really was offered this load.
    let sent_at = (flood.calls.len() - 1) as f64 / flood.span();
    assert!(
        sent_at >= rate * 0.8,
        "flood.py sent {sent_at:.1}/s, not {rate:.1}/s"
    );
    flood
}

/// The figures of a flood, on stderr (`--nocapture` shows them): statuses, goodput, the
/// latest end against the deadline, and how the handlers that ran ended.
fn report(name: &str, flood: &Flood, ran: &[String]) {
    let capacity = PLACES as f64 / WORK.as_secs_f64();
    let mut ended: BTreeMap<&str, usize> = BTreeMap::new();
    for line in ran {
        let code = line["A: Forward ended ".len()..].split(' ').next().unwrap();
        *ended.entry(code).or_default() += 1;
    }
    eprintln!(
        "{name}: {} sent, {:?}; goodput {:.1}/s ({:.0}% of capacity {capacity}/s); \
         latest end {:+.3}s past the deadline; handlers ran {} {ended:?}; statuses {:?}",
        flood.calls.len(),
        flood.codes(),
        flood.goodput(),
        100.0 * flood.goodput() / capacity,
        flood.worst_overrun(),
        ran.len(),
        flood.details,
    );
}

/// A flood beyond capacity, as it should be served: its calls answered in time, about the
/// capacity's worth OK, and what the layer answered (`ran`: the handlers that ran) never
/// started.
fn assert_overload_served(name: &str, flood: &Flood, ran: &[String]) {
    let capacity = PLACES as f64 / WORK.as_secs_f64();
    flood.assert_answered_in_time(name);
    assert!(
        flood.goodput() >= capacity * 0.5,
        "{name}: goodput {:.1}/s of a capacity of {capacity}/s; {:?}; {:?}",
        flood.goodput(),
        flood.codes(),
        flood.details
    );
    // Handlers ran for the OK calls and few others (one started with enough budget that
    // a hiccup of this shared machine made late).
    let sent = flood.calls.len();
    assert!(
        ran.len() < sent && ran.len() <= flood.ok() + sent / 20,
        "{name}: {sent} sent, {} OK, yet {} handlers ran",
        flood.ok(),
        ran.len()
    );
}

#[test]
fn a_grpcio_flood_at_half_and_three_times_capacity_is_served_in_time() {
    let relay = Relay::start(PLACES, TIMEOUT);
    let mut seen = 0;

    // Calls one at a time take about WORK: the capacity is PLACES / WORK. They also give the
    // admission layer its first service times, as a relay that has been up a while has.
    let serial = flood(&relay, "serial", 8, WORK, TIMEOUT);
    assert_eq!(serial.ok(), 8, "{serial:?}");
    let mut took: Vec<f64> = serial.calls.iter().map(|c| c.ended - c.sent).collect();
    took.sort_by(f64::total_cmp);
    let median = took[took.len() / 2];
    assert!(
        (WORK.as_secs_f64()..WORK.as_secs_f64() * 2.0).contains(&median),
        "one call took {median:.3}s, not about {WORK:?}"
    );
    relay.handlers(&mut seen);

    // Half the capacity: (nearly) everything is served.
    let half = flood_at(&relay, 0.5, 2.0, TIMEOUT);
    let ran = relay.handlers(&mut seen);
    report("0.5x", &half, &ran);
    half.assert_answered_in_time("0.5x");
    assert!(
        half.ok() * 10 >= half.calls.len() * 9,
        "0.5x: {:?}; {:?}",
        half.codes(),
        half.details
    );

    // Three times the capacity: the relay keeps serving about its capacity on time, and
    // answers the rest by their deadlines without running them.
    let triple = flood_at(&relay, 3.0, 3.0, TIMEOUT);
    let ran = relay.handlers(&mut seen);
    report("3x", &triple, &ran);
    assert_overload_served("3x", &triple, &ran);

    // Again, the calls sent with twice the relay's --max-deadline: grpcio's own timer no
    // longer ends them, the relay must answer each by its own deadline.
    let capped = flood_at(&relay, 3.0, 3.0, TIMEOUT * 2);
    let ran = relay.handlers(&mut seen);
    report("3x, deadline capped by the relay", &capped, &ran);
    assert_overload_served("3x capped", &capped, &ran);

    // The flood is over and no place leaked: PLACES calls at once, each working five times
    // WORK with a deadline that leaves no room for a second turn, all end OK.
    let after = flood(&relay, "burst", PLACES, WORK * 5, WORK * 9);
    assert_eq!(
        after.ok(),
        PLACES,
        "after the flood: {:?}; {:?}",
        after.codes(),
        after.details
    );
    let _ = std::fs::remove_dir_all(stubs());
}
