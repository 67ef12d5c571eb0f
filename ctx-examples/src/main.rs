//! The ctx demo: an axum gateway whose handlers are `#[cancellable]`, one of whose routes
//! (`/chain`) crosses two more hops over gRPC (tonic: `backend`, which runs a SQLite query,
//! then `store`), driven by a built-in mix of requests with assorted deadlines and clients
//! that give up early, then a graceful shutdown. Prints, per endpoint and per hop, how
//! requests ended, the budget each hop received, and how much work cancellation saved.
//!
//! `cargo run -p ctx-examples` runs the demo; `-- --serve 8080` keeps serving for curl;
//! `-- --help` lists the flags.

mod api;
mod db;
mod hops;
mod load;
mod overload;
mod server;
mod stats;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ctx_core::Context;
use ctx_core::signal::{self, Shutdown};
use tokio::net::TcpListener;

const HELP: &str = "\
ctx demo: a service whose every request respects its deadline and stops when its client goes away

USAGE:
    cargo run -p ctx-examples [-- OPTIONS]

OPTIONS:
    --requests N       requests in the built-in mix (default 300)
    --concurrency N    requests in flight at once (default 24)
    --serve PORT       serve on 127.0.0.1:PORT until Ctrl-C instead of running the mix
    --scenario NAME    run a scenario instead of the mix:
                       overload  the cascade, measured (about 90 s): a gateway with a pool of
                                 SQLite connections and a gRPC upstream, under 0.5x-4x its
                                 capacity, a slow dependency and a retry storm, with no ctx,
                                 with ctx propagation and with ctx + admission; prints the
                                 tables and writes a chart
    --quick            (with --scenario) phases of a fraction of a second: a smoke run
    --chart PATH       (with --scenario overload) where to write the SVG chart
    --help             print this help

ENDPOINTS:
    /fast      answers at once
    /slow      a SQLite query (a recursive CTE, ~150 ms of work), interrupted in SQLite when
               the request's budget ends
    /fanout    three backends under a Group: the first failure cancels the rest
    /command   runs `sleep 0.25` under the request deadline (SIGTERM when it ends)
    /chain     crosses three hops: this gateway calls `backend` over gRPC (tonic), which
               runs the SQLite query and calls `store` over gRPC; each hop gets what is
               left of the client's budget
    /debug/contexts   every live context as a tree (kind, age, deadline, key names, where
               it was made): the requests in flight under the server's root

Send a deadline with gRPC's header, e.g.:
    curl -H 'grpc-timeout: 100m' http://127.0.0.1:PORT/slow

SHUTDOWN (--serve):
    Ctrl-C or SIGTERM stops accepting and gives the requests in flight 10s to finish, then
    cancels what is left; a second Ctrl-C cancels them at once
";

struct Options {
    requests: usize,
    concurrency: usize,
    serve: Option<u16>,
    scenario: Option<String>,
    quick: bool,
    chart: Option<std::path::PathBuf>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        requests: 300,
        concurrency: 24,
        serve: None,
        scenario: None,
        quick: false,
        chart: None,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<String, String> {
            args.next()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--requests" => options.requests = parse_number("--requests", &value("--requests")?)?,
            "--concurrency" => {
                options.concurrency =
                    parse_number::<usize>("--concurrency", &value("--concurrency")?)?.max(1)
            }
            "--serve" => options.serve = Some(parse_number("--serve", &value("--serve")?)?),
            "--scenario" => match value("--scenario")?.as_str() {
                "overload" => options.scenario = Some("overload".into()),
                other => return Err(format!("unknown scenario {other:?} (see --help)")),
            },
            "--quick" => options.quick = true,
            "--chart" => options.chart = Some(value("--chart")?.into()),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(options))
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} takes a number, not {text:?}"))
}

fn main() -> std::process::ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = match options.scenario {
        Some(_) => runtime.block_on(overload::run(overload::Options {
            quick: options.quick,
            chart: options.chart,
        })),
        None => runtime.block_on(run(options)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The planned length of the SQLite query (`/slow`, and `backend`'s work on `/chain`).
const SLOW_QUERY: Duration = Duration::from_millis(150);

/// How long the requests in flight have to finish once shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

async fn run(options: Options) -> Result<(), String> {
    // Eight SQLite connections; `/slow`'s query is ~150 ms of work on an idle core (more
    // when eight share the machine's cores).
    let app = api::App::new(db::Db::open(8, SLOW_QUERY)?);
    // Graceful shutdown: at the first request (Ctrl-C or SIGTERM with --serve; the end of the
    // mix otherwise) the server stops accepting and the requests in flight have GRACE to
    // finish; then the root, and every request under it, is cancelled.
    let shutdown = match options.serve {
        Some(_) => signal::graceful(Context::background(), GRACE).map_err(|e| e.to_string())?,
        None => Shutdown::new(Context::background(), GRACE),
    };
    let root = shutdown.context().clone();
    // The gRPC hops behind `/chain`, under the same root: shutdown drains them too.
    let hops = hops::Hops::start(app.clone(), &root, SLOW_QUERY).await?;
    let port = options.serve.unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(server::serve(
        listener,
        api::router(app.clone()).merge(hops::router(app.clone(), hops.clone())),
        root.clone(),
        shutdown.requested(),
    ));

    if options.serve.is_some() {
        println!("serving on http://{addr} (Ctrl-C to stop); try:");
        println!("    curl -H 'grpc-timeout: 100m' http://{addr}/slow");
        println!("    curl http://{addr}/debug/contexts");
        shutdown.requested().await;
        println!(
            "\n{}: shutting down (requests in flight have {GRACE:?}; Ctrl-C again to cancel them)",
            shutdown
                .reason()
                .map_or("stopped".into(), |c| c.to_string())
        );
    } else {
        println!(
            "ctx demo: serving on http://{addr}; sending {} requests, {} at a time",
            options.requests, options.concurrency
        );
        let started = Instant::now();
        let client = load::drive(
            &format!("http://{addr}"),
            options.requests,
            options.concurrency,
        )
        .await;
        println!("\nmix done in {:.1}s\n", started.elapsed().as_secs_f64());
        println!("{}", app.stats.table());
        println!(
            "per hop, for /chain (client --HTTP--> gateway --gRPC--> backend --gRPC--> store):\n"
        );
        println!("{}", hops.table());
        println!(
            "sqlite: {} slow queries ran, {} of them interrupted in SQLite when their request ended",
            app.db.started.load(Ordering::Relaxed),
            app.db.interrupted.load(Ordering::Relaxed)
        );
        println!(
            "client side: {} ok, {} deadline exceeded, {} gave up early, {} other errors",
            client.ok, client.deadline, client.gave_up, client.other
        );
    }

    // Graceful shutdown: stop accepting, wait for every connection and handler (at most
    // GRACE, then the root is cancelled), then cancel what is left: the gRPC hops.
    let shutdown_started = Instant::now();
    if !shutdown.is_requested() {
        shutdown.request("the mix is done"); // (with --serve, the signal requested it)
    }
    tokio::time::timeout(GRACE + Duration::from_secs(30), server)
        .await
        .map_err(|_| "shutdown took longer than 30s past its grace period".to_string())?
        .map_err(|e| e.to_string())?;
    shutdown.request("the gateway has drained");
    tokio::time::timeout(Duration::from_secs(30), hops.wait())
        .await
        .map_err(|_| "the gRPC hops took longer than 30s to drain".to_string())??;
    let left = app.running.load(Ordering::SeqCst);
    println!(
        "shutdown: stopped accepting, waited {:.1}ms for in-flight work; {left} handlers left running",
        shutdown_started.elapsed().as_secs_f64() * 1e3
    );
    if left != 0 {
        return Err(format!("{left} handlers still running after shutdown"));
    }
    if options.serve.is_none() && app.stats.total_requests() == 0 {
        return Err("the server saw no requests".into());
    }
    if options.serve.is_none() && options.requests >= 20 && hops.stats.requests("backend") == 0 {
        return Err("no request crossed the gRPC hops".into());
    }
    Ok(())
}
