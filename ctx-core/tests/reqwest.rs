//! `http::DeadlineMiddleware` (reqwest-middleware) against an axum server over loopback:
//! the budget as the request's timeout and as `grpc-timeout`, failing fast, dropping the
//! request (and a body being read) when the context ends.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use ctx_core::http::{ContextLayer, DeadlineMiddleware, GRPC_TIMEOUT, HopError, Origin};
use ctx_core::{Context, Error};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tokio::sync::mpsc;

/// What the server saw: a request started, or a handler's future dropped with its context
/// in this state.
#[derive(Debug)]
enum Seen {
    Started,
    Dropped(Option<Error>),
}

struct Guard(Context, mpsc::UnboundedSender<Seen>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.1.send(Seen::Dropped(self.0.err()));
    }
}

async fn serve() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = tx.clone();
    let echo = move |ctx: Context, headers: http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let header = headers
                .get(GRPC_TIMEOUT)
                .map(|v| v.to_str().unwrap().to_string());
            let _ = seen.send(Seen::Started);
            let budget = ctx
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()).as_millis());
            format!("{} {}", header.unwrap_or_default(), budget.unwrap_or(0))
        }
    };
    let seen = tx.clone();
    let slow = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            let _ = seen.send(Seen::Started);
            let _guard = Guard(ctx, seen);
            tokio::time::sleep(Duration::from_secs(5)).await;
            "slow"
        }
    };
    let stream = || async {
        let chunks = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (n < 500).then(|| (Ok::<_, Infallible>(format!("chunk {n}\n")), n + 1))
        });
        Body::from_stream(chunks)
    };
    let root = Context::background();
    let app = Router::new()
        .route("/echo", get(echo))
        .route("/slow", get(slow))
        .route("/stream", get(stream))
        .layer(ContextLayer::new(&root).max_timeout(Duration::from_secs(30)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

fn client(grpc_timeout: bool) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(DeadlineMiddleware::new().send_grpc_timeout(grpc_timeout))
        .build()
}

fn hop(err: &reqwest_middleware::Error) -> &HopError {
    match err {
        reqwest_middleware::Error::Middleware(err) => err
            .downcast_ref::<HopError>()
            .unwrap_or_else(|| panic!("not a HopError: {err:?}")),
        other => panic!("not a middleware error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_becomes_the_timeout_and_grpc_timeout() {
    let (base, _seen) = serve().await;
    let request = Context::background().with_timeout(Duration::from_millis(500));
    let body = request
        .scope(async {
            client(true)
                .get(format!("{base}/echo"))
                .send()
                .await?
                .text()
                .await
                .map_err(reqwest_middleware::Error::from)
        })
        .await
        .unwrap();
    let (header, budget) = body.split_once(' ').unwrap();
    let sent = ctx_core::http::parse_grpc_timeout(header.as_bytes()).unwrap();
    assert!(
        sent <= Duration::from_millis(500) && sent > Duration::from_millis(300),
        "{body}"
    );
    let budget: u128 = budget.parse().unwrap();
    assert!((250..=500).contains(&budget), "{body}");

    // The request's own timeout, when smaller, is what is sent.
    let body = request
        .scope(async {
            client(true)
                .get(format!("{base}/echo"))
                .timeout(Duration::from_millis(100))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
    let sent = ctx_core::http::parse_grpc_timeout(body.split_once(' ').unwrap().0.as_bytes());
    assert!(sent.unwrap() <= Duration::from_millis(100), "{body}");

    // Without send_grpc_timeout, no header; outside a context, nothing at all.
    let body = request
        .scope(async {
            client(false)
                .get(format!("{base}/echo"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
    assert!(body.starts_with(' '), "{body}");

    // An explicit context in the request's extensions.
    let explicit = Context::background().with_timeout(Duration::from_millis(300));
    let body = client(true)
        .get(format!("{base}/echo"))
        .with_extension(explicit.context().clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent = ctx_core::http::parse_grpc_timeout(body.split_once(' ').unwrap().0.as_bytes());
    assert!(sent.unwrap() <= Duration::from_millis(300), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_context_fails_fast_unsent() {
    let (base, mut seen) = serve().await;
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let err = ctx
        .scope(client(true).get(format!("{base}/echo")).send())
        .await
        .unwrap_err();
    let hop = hop(&err);
    assert_eq!(
        (hop.error(), hop.origin()),
        (Error::Cancelled, Origin::Local)
    );
    assert_eq!(hop.method(), "GET /echo");
    assert_eq!(hop.authority(), base.trim_start_matches("http://"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(seen.try_recv().is_err(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_is_dropped_when_its_context_ends() {
    let (base, mut seen) = serve().await;
    // A deadline: the call ends with DeadlineExceeded when it passes.
    let started = Instant::now();
    let request = Context::background().with_timeout(Duration::from_millis(200));
    let err = request
        .scope(client(false).get(format!("{base}/slow")).send())
        .await
        .unwrap_err();
    assert_eq!(hop(&err).error(), Error::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_millis(1_000));
    assert!(matches!(seen.recv().await, Some(Seen::Started)));
    // The server's handler saw its client go away (its context was cancelled).
    match tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
    {
        Some(Seen::Dropped(Some(_))) => {}
        other => panic!("{other:?}"),
    }

    // A cancel.
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    let call = tokio::spawn(ctx.scope(client(false).get(format!("{base}/slow")).send()));
    assert!(matches!(seen.recv().await, Some(Seen::Started)));
    cancel.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(hop(&err).error(), Error::Cancelled);
    match tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
    {
        Some(Seen::Dropped(Some(Error::Cancelled))) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_being_read_is_cut_when_the_context_ends() {
    let (base, _seen) = serve().await;
    let request = Context::background().with_timeout(Duration::from_millis(300));
    let (chunks, err) = request
        .scope(async {
            let mut response = client(false)
                .get(format!("{base}/stream"))
                .send()
                .await
                .unwrap();
            let mut chunks = 0;
            loop {
                match response.chunk().await {
                    Ok(Some(_)) => chunks += 1,
                    Ok(None) => panic!("the body ended"),
                    Err(err) => return (chunks, err),
                }
            }
        })
        .await;
    assert!(chunks > 0, "{err}");
    // reqwest's timeout (the budget) or the context's end, whichever fired first.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut cut = err.is_timeout();
    while let Some(e) = source {
        if let Some(hop) = e.downcast_ref::<HopError>() {
            assert_eq!(hop.method(), "GET /stream");
            cut = true;
        }
        source = e.source();
    }
    assert!(cut, "{err:?}");

    // A cancel (no deadline, so no reqwest timeout): the body fails with the HopError.
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    let mut response = ctx
        .scope(client(false).get(format!("{base}/stream")).send())
        .await
        .unwrap();
    response.chunk().await.unwrap().unwrap();
    cancel.cancel();
    let err = loop {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the body ended"),
            Err(err) => break err,
        }
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut found = None;
    while let Some(e) = source {
        if let Some(hop) = e.downcast_ref::<HopError>() {
            found = Some(hop.error());
        }
        source = e.source();
    }
    assert_eq!(found, Some(Error::Cancelled), "{err:?}");
}

/// What `/echo` received as `grpc-timeout` for a request that carries `own` (a caller's own
/// or forwarded header) under a context with `budget` left.
async fn echoed(base: &str, grpc_timeout: bool, budget: Duration, own: &str) -> String {
    let ctx = Context::background().with_timeout(budget);
    let body = ctx
        .scope(async {
            client(grpc_timeout)
                .get(format!("{base}/echo"))
                .header(GRPC_TIMEOUT, own)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
    body.split_once(' ').unwrap().0.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_grpc_timeout_is_kept_and_a_longer_one_lowered() {
    let (base, _seen) = serve().await;
    let parse = |text: &str| ctx_core::http::parse_grpc_timeout(text.as_bytes()).unwrap();
    for send in [true, false] {
        // The request's own shorter timeout stands (it was overwritten by the budget).
        assert_eq!(
            echoed(&base, send, Duration::from_secs(20), "50m").await,
            "50m",
            "send_grpc_timeout({send})"
        );
        // A forwarded century is lowered to the budget (it passed unchanged without
        // send_grpc_timeout).
        let sent = parse(&echoed(&base, send, Duration::from_secs(2), "99999999H").await);
        assert!(
            sent <= Duration::from_secs(2),
            "send_grpc_timeout({send}): {sent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_show_the_urls_userinfo() {
    let (base, _seen) = serve().await;
    let base = base.replace("http://", "http://user:s3cret@");
    let request = Context::background().with_timeout(Duration::from_millis(100));
    let err = request
        .scope(client(false).get(format!("{base}/slow")).send())
        .await
        .unwrap_err();
    let hop = hop(&err);
    assert!(!hop.authority().contains("s3cret") && !hop.authority().contains('@'));
    assert!(hop.authority().starts_with("127.0.0.1:"), "{hop}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");

    // reqwest's own errors name their URL: without the userinfo.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://user:s3cret@{}/", closed.local_addr().unwrap());
    drop(closed);
    let err = Context::background()
        .with_timeout(Duration::from_secs(30))
        .scope(client(false).get(&url).send())
        .await
        .unwrap_err();
    assert!(
        matches!(err, reqwest_middleware::Error::Reqwest(_)),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("s3cret") && !text.contains("user:"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_middleware_retries_503_within_the_budget() {
    use ctx_core::http::{GRPC_PREVIOUS_RPC_ATTEMPTS, RetryMiddleware, RetryPolicy};
    use std::sync::{Arc, Mutex};

    // 503, 503, then 200; then 504 (not retried).
    let script = Arc::new(Mutex::new(vec![503u16, 503, 200, 504]));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (script2, seen2) = (script.clone(), seen.clone());
    let app = Router::new().route(
        "/",
        get(move |headers: http::HeaderMap| {
            let (script, seen) = (script2.clone(), seen2.clone());
            async move {
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                seen.lock()
                    .unwrap()
                    .push((header(GRPC_PREVIOUS_RPC_ATTEMPTS), header(GRPC_TIMEOUT)));
                let code = script.lock().unwrap().remove(0);
                http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let policy = RetryPolicy::new().backoff(Duration::from_millis(1), Duration::from_millis(5));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(RetryMiddleware::new(policy))
        .with(DeadlineMiddleware::new().send_grpc_timeout(true))
        .build();
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let status = ctx.scope(client.get(&url).send()).await.unwrap().status();
    assert_eq!(status, 200);
    let attempts = std::mem::take(&mut *seen.lock().unwrap());
    let previous: Vec<_> = attempts.iter().map(|(p, _)| p.as_deref()).collect();
    assert_eq!(previous, [None, Some("1"), Some("2")]);
    assert!(attempts.iter().all(|(_, t)| t.is_some()), "{attempts:?}");

    let status = ctx.scope(client.get(&url).send()).await.unwrap().status();
    assert_eq!(status, 504);
    assert_eq!(seen.lock().unwrap().len(), 1, "a 504 was retried");
}
