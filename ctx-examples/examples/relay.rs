//! One hop of the `Relay` service (`proto/relay.proto`), the wire contract for tests across
//! processes: a tonic server under `ServerLayer` whose `Forward` works `work_ms` under the
//! RPC's context, then forwards `rest` to `--upstream` through `ClientLayer` (which sends
//! the remaining budget as `grpc-timeout`).
//!
//! ```text
//! cargo run -p ctx-examples --example relay -- --name A --listen 127.0.0.1:0 \
//!     [--upstream http://127.0.0.1:PORT] [--max-deadline MS] [--max-in-flight N]
//! ```
//!
//! With `--max-in-flight N` the server stack gets `AdmissionLayer::new(N)` under its
//! `ServerLayer`: at most `N` RPCs in the handler, the rest queued; a flood is answered
//! `UNAVAILABLE` (queue full) or `DEADLINE_EXCEEDED` (cannot finish in time) instead of
//! being served late.
//!
//! Prints exactly one line, `listening on 127.0.0.1:PORT`, on stdout once it serves. On
//! SIGTERM or SIGINT it cancels every RPC in flight (and so their upstream calls), waits for
//! them to drain, and exits with status 0.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use ctx_core::{Context, signal};
use ctx_examples::relay::{self, Hop};

const HELP: &str = "\
relay: one hop of the Relay gRPC service, with deadlines carried hop to hop

USAGE:
    relay --name NAME --listen ADDR [--upstream URL] [--max-deadline MS] [--max-in-flight N]

OPTIONS:
    --name NAME         this hop's name, reported in every reply
    --listen ADDR       where to serve, e.g. 127.0.0.1:0 (port 0 picks one)
    --upstream URL      forward `rest` to this hop, e.g. http://127.0.0.1:50051
    --max-deadline MS   cap every incoming deadline at MS milliseconds; also the deadline
                        of a call that arrives without one
    --max-in-flight N   at most N RPCs in the handler at once, the rest queued (deadline-
                        aware admission: what cannot finish in time is not started)
    --help              print this help
";

struct Options {
    name: String,
    listen: SocketAddr,
    upstream: Option<String>,
    max_deadline: Option<Duration>,
    max_in_flight: Option<usize>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let (mut name, mut listen, mut upstream, mut max_deadline) = (None, None, None, None);
    let mut max_in_flight = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value (see --help)"))
        };
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--name" => name = Some(value("--name")?),
            "--listen" => {
                let text = value("--listen")?;
                listen = Some(text.parse::<SocketAddr>().map_err(|_| {
                    format!("--listen takes an address such as 127.0.0.1:0, not {text:?}")
                })?);
            }
            "--upstream" => upstream = Some(value("--upstream")?),
            "--max-deadline" => {
                let text = value("--max-deadline")?;
                let ms: u64 = text.parse().map_err(|_| {
                    format!("--max-deadline takes milliseconds (a number), not {text:?}")
                })?;
                max_deadline = Some(Duration::from_millis(ms));
            }
            "--max-in-flight" => {
                let text = value("--max-in-flight")?;
                match text.parse::<usize>() {
                    Ok(n) if n > 0 => max_in_flight = Some(n),
                    _ => {
                        return Err(format!(
                            "--max-in-flight takes a number of RPCs (at least 1), not {text:?}"
                        ));
                    }
                }
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(Options {
        name: name.ok_or("--name is required (see --help)")?,
        listen: listen.ok_or("--listen is required (see --help)")?,
        upstream,
        max_deadline,
        max_in_flight,
    }))
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let name = options.name.clone();
    // One line on stderr per RPC: how it ended and the budget it arrived with.
    let mut hop = Hop::new(options.name.clone()).observe(move |outcome| {
        let budget = outcome
            .budget
            .map_or("none".into(), |b| format!("{}ms", b.as_millis()));
        eprintln!(
            "{name}: Forward ended {:?} after {}ms (budget {budget})",
            outcome.code,
            outcome.latency.as_millis()
        );
    });
    if let Some(url) = &options.upstream {
        hop = hop.upstream(relay::upstream(url)?);
    }
    // The server's root: SIGTERM or SIGINT cancels it, and with it every RPC in flight.
    let root = signal::notify(Context::background(), &[]).map_err(|e| e.to_string())?;
    let (listener, addr) = relay::bind(options.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", options.listen))?;
    let serving = tokio::spawn(relay::serve_admitted(
        listener,
        hop,
        root.context().clone(),
        options.max_deadline,
        options.max_in_flight,
    ));
    println!("listening on {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;

    root.done().await;
    let cause = root.cause().map_or("stopped".into(), |c| c.to_string());
    serving
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("serving: {e}"))?;
    eprintln!("{}: {cause}: in-flight RPCs drained, exiting", options.name);
    Ok(())
}
