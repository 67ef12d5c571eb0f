//! The `tracing` integration: spans that say how much budget a request had, and how and where
//! its context ended. `cargo run -p ctx-core --features tracing --example trace`
use std::time::Duration;

use ctx_core::{Context, trace};
use tracing::Level;

fn main() {
    tracing_subscriber::fmt()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .init();

    let server = Context::background().with_cancel();
    futures::executor::block_on(async {
        // A request with a 50 ms budget whose backend takes 200 ms.
        let request = server.with_timeout(Duration::from_millis(50));
        let span = trace::span!(Level::INFO, "get_user", id = 7);
        let slow_backend = futures_timer(Duration::from_millis(200));
        let out = trace::traced(&request, span, request.run(slow_backend)).await;
        tracing::info!(?out, "handler returned");

        // A request whose client goes away.
        let (request, client) = server.with_timeout(Duration::from_secs(5)).into_parts();
        let span = trace::span!(Level::INFO, "list_orders");
        let work = trace::traced(&request, span, request.run(std::future::pending::<()>()));
        client.cancel_with("client closed the connection");
        let _ = work.await;
    });
}

/// A timer future without a runtime: a thread sleeps, then completes it.
fn futures_timer(after: Duration) -> impl std::future::Future<Output = ()> {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}
