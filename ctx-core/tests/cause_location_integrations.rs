//! `Cause::location` of contexts the integrations end on the user's behalf: a server
//! layer's deadline and a client's disconnect name the line that built the layer; a signal
//! names the line that called `notify` or made the `Shutdown`; `Shutdown::request` names its
//! call. Never a file of ctx-core, which would be useless in a log.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use ctx_core::http::grpc::ServerLayer;
use ctx_core::http::{ClientDisconnected, ContextLayer};
use ctx_core::signal::{self, GracePeriodEnded, SignalReceived};
use ctx_core::{Context, Error};
use futures::{FutureExt, StreamExt};
use http_body_util::BodyExt;
use tokio::signal::unix::SignalKind;
use tower::{Layer, Service, ServiceExt, service_fn};

const PROMPTLY: Duration = Duration::from_secs(10);

/// Where `ctx` was ended, as a file and line.
fn ended_at(ctx: &Context) -> (&'static str, u32) {
    let cause = ctx.cause().expect("done");
    let location = cause.location().expect("a context's cause has a location");
    (location.file(), location.line())
}

/// A handler that keeps its request's context where the test can see it and never answers.
fn keeping(kept: Arc<Mutex<Option<Context>>>) -> impl Fn(http::Request<String>) -> Keep + Clone {
    move |request| {
        let ctx = request
            .extensions()
            .get::<Context>()
            .expect("a context")
            .clone();
        *kept.lock().unwrap() = Some(ctx);
        Keep
    }
}

/// A handler's future that never ends (so only the layer can end the request).
struct Keep;

impl Future for Keep {
    type Output = Result<http::Response<String>, Infallible>;

    fn poll(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

fn request(timeout: Option<&str>, grpc: bool) -> http::Request<String> {
    let mut builder = http::Request::builder().uri("http://localhost/");
    if let Some(timeout) = timeout {
        builder = builder.header("grpc-timeout", timeout);
    }
    if grpc {
        builder = builder.header("content-type", "application/grpc");
    }
    builder.body(String::new()).unwrap()
}

fn kept_context(kept: &Mutex<Option<Context>>) -> Context {
    kept.lock().unwrap().clone().expect("the handler ran")
}

#[tokio::test]
async fn a_context_layer_deadline_names_the_line_that_built_the_layer() {
    let kept = Arc::new(Mutex::new(None));
    let line = line!() + 1;
    let layer = ContextLayer::new(Context::background());
    let service = layer.layer(service_fn(keeping(kept.clone())));
    let response = tokio::time::timeout(PROMPTLY, service.oneshot(request(Some("20m"), false)))
        .await
        .expect("answered at the deadline")
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
    let ctx = kept_context(&kept);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ended_at(&ctx), (file!(), line));
}

#[tokio::test]
async fn a_context_layer_disconnect_names_the_line_that_built_the_layer() {
    let kept = Arc::new(Mutex::new(None));
    let line = line!() + 1;
    let layer = ContextLayer::new(Context::background());
    let mut service = layer.layer(service_fn(keeping(kept.clone())));
    let mut future = service.ready().await.unwrap().call(request(None, false));
    assert!(
        (&mut future).now_or_never().is_none(),
        "the handler never answers"
    );
    drop(future); // the client went away
    let ctx = kept_context(&kept);
    let cause = ctx.cause().expect("ended by the disconnect");
    assert!(cause.is::<ClientDisconnected>(), "{cause:?}");
    assert_eq!(ended_at(&ctx), (file!(), line));
}

/// A body that sends one chunk and then never ends.
fn endless() -> axum::body::Body {
    let first = futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"first")) });
    axum::body::Body::from_stream(first.chain(futures::stream::pending()))
}

#[tokio::test]
async fn a_disconnect_mid_body_names_the_line_that_built_the_layer() {
    let kept = Arc::new(Mutex::new(None));
    let handler = {
        let kept = kept.clone();
        service_fn(move |request: http::Request<String>| {
            let ctx = request.extensions().get::<Context>().unwrap().clone();
            *kept.lock().unwrap() = Some(ctx);
            async { Ok::<_, Infallible>(http::Response::new(endless())) }
        })
    };
    let line = line!() + 1;
    let layer = ContextLayer::new(Context::background());
    let response = layer
        .layer(handler)
        .oneshot(request(None, false))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    let ctx = kept_context(&kept);
    assert_eq!(ctx.err(), None, "the request lives while its body does");
    drop(body); // the client went away mid-body
    assert!(ctx.cause().unwrap().is::<ClientDisconnected>());
    assert_eq!(ended_at(&ctx), (file!(), line));
}

#[tokio::test]
async fn a_grpc_server_layer_deadline_and_cancel_name_the_line_that_built_the_layer() {
    let kept = Arc::new(Mutex::new(None));
    let line = line!() + 1;
    let layer = ServerLayer::new(Context::background());
    let service = layer.layer(service_fn(keeping(kept.clone())));
    let response = tokio::time::timeout(PROMPTLY, service.oneshot(request(Some("20m"), true)))
        .await
        .expect("answered at the deadline")
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "4"); // DEADLINE_EXCEEDED
    let ctx = kept_context(&kept);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ended_at(&ctx), (file!(), line));

    // The client cancels the RPC: its response future is dropped.
    let mut service = layer.layer(service_fn(keeping(kept.clone())));
    let mut future = service.ready().await.unwrap().call(request(None, true));
    assert!((&mut future).now_or_never().is_none());
    drop(future);
    let ctx = kept_context(&kept);
    assert!(ctx.cause().unwrap().is::<ClientDisconnected>());
    assert_eq!(ended_at(&ctx), (file!(), line));
}

/// Raises `signal` in this process (tokio's handler for it is installed by then).
fn raise(signal: libc::c_int) {
    // SAFETY: `raise` sends a signal to this thread; tokio's handler takes it.
    assert_eq!(unsafe { libc::raise(signal) }, 0);
}

#[tokio::test]
async fn a_signal_names_the_line_that_called_notify() {
    let line = line!() + 1;
    let scope = signal::notify(Context::background(), &[SignalKind::user_defined1()]).unwrap();
    raise(libc::SIGUSR1);
    let err = tokio::time::timeout(PROMPTLY, scope.done())
        .await
        .expect("the signal ended it");
    assert_eq!(err, Error::Cancelled);
    assert!(scope.cause().unwrap().is::<SignalReceived>());
    assert_eq!(ended_at(&scope), (file!(), line));
}

#[tokio::test]
async fn a_shutdown_names_the_request_and_the_line_that_made_it() {
    // By hand: the request's line ends the draining; the grace period's end, the line that
    // made the shutdown.
    let made = line!() + 1;
    let shutdown = signal::Shutdown::new(Context::background(), Duration::from_millis(20));
    let requested = line!() + 1;
    shutdown.request("deploying");
    tokio::time::timeout(PROMPTLY, shutdown.requested())
        .await
        .unwrap();
    let reason = shutdown.reason().unwrap();
    let at = reason.location().unwrap();
    assert_eq!((at.file(), at.line()), (file!(), requested));
    let root = shutdown.context().clone();
    tokio::time::timeout(PROMPTLY, root.done()).await.unwrap();
    assert!(root.cause().unwrap().is::<GracePeriodEnded>());
    assert_eq!(ended_at(&root), (file!(), made));

    // By a signal: the line that made the shutdown.
    let made = line!() + 1;
    let shutdown = signal::Shutdown::on_signals(
        Context::background(),
        &[SignalKind::user_defined2()],
        Duration::from_secs(3600),
    )
    .unwrap();
    raise(libc::SIGUSR2);
    tokio::time::timeout(PROMPTLY, shutdown.requested())
        .await
        .unwrap();
    let reason = shutdown.reason().unwrap();
    assert!(reason.is::<SignalReceived>());
    let at = reason.location().unwrap();
    assert_eq!((at.file(), at.line()), (file!(), made));
    // A second request cancels at once, at its own line.
    let second = line!() + 1;
    shutdown.request("now");
    let root = shutdown.context().clone();
    tokio::time::timeout(PROMPTLY, root.done()).await.unwrap();
    assert_eq!(ended_at(&root), (file!(), second));
}
