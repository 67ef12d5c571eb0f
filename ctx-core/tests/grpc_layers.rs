//! `http::grpc::{ServerLayer, ClientLayer}` against tonic over loopback: deadlines from
//! `grpc-timeout`, DEADLINE_EXCEEDED on expiry (unary and mid-stream), bad headers, client
//! cancels, shutdown, and what a layered client sends and reports.

#[path = "grpc/hop.rs"]
mod hop;

use std::time::{Duration, Instant};

use ctx_core::http::Origin;
use ctx_core::http::grpc::{ServerLayer, hop_error};
use ctx_core::{Context, Error};
use hop::{Event, Server, chain, layered_client, pb::HopRequest, raw_client, with_timeout_header};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(5);

fn layer(root: &Context) -> ServerLayer {
    ServerLayer::new(root).max_timeout(Duration::from_secs(2))
}

fn capped_100ms(root: &Context) -> ServerLayer {
    ServerLayer::new(root)
        .default_timeout(Duration::from_millis(100))
        .max_timeout(Duration::from_millis(100))
}

fn started(event: Event) -> Option<Duration> {
    match event {
        Event::Started(budget) => budget,
        other => panic!("expected a start, got {other:?}"),
    }
}

fn ended(event: Event) -> (Option<Error>, Option<String>) {
    match event {
        Event::Ended(err, cause) => (err, cause),
        other => panic!("expected an end, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_deadline_of_grpc_timeout_capped_or_defaulted() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = raw_client(&server.url());

    let reply = client
        .forward(with_timeout_header(chain(&[0]), "300m"))
        .await
        .unwrap()
        .into_inner();
    let budget = started(server.event(WAIT).await).unwrap();
    assert!(
        budget <= Duration::from_millis(300) && budget > Duration::from_millis(150),
        "{budget:?}"
    );
    assert!((150..=300).contains(&reply.budget_ms), "{reply:?}");
    assert_eq!(
        ended(server.event(WAIT).await).0,
        None,
        "ended while its context was live"
    );

    // Asked for an hour: capped at the server's 2 s.
    client
        .forward(with_timeout_header(chain(&[0]), "1H"))
        .await
        .unwrap();
    let budget = started(server.event(WAIT).await).unwrap();
    assert!(
        budget <= Duration::from_secs(2) && budget > Duration::from_millis(1500),
        "{budget:?}"
    );
    server.event(WAIT).await;

    // No header and no default: no deadline.
    let reply = client.forward(chain(&[0])).await.unwrap().into_inner();
    assert_eq!(reply.budget_ms, -1);
    assert_eq!(started(server.event(WAIT).await), None);
    server.event(WAIT).await;

    // No header, with a default.
    let capped = Server::start("B", Some(capped_100ms), None).await;
    let reply = raw_client(&capped.url())
        .forward(chain(&[0]))
        .await
        .unwrap()
        .into_inner();
    assert!((20..=100).contains(&reply.budget_ms), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_answers_deadline_exceeded_never_cancelled() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = raw_client(&server.url());
    // Many short deadlines: tonic's own grpc-timeout timer (which answers CANCELLED) must
    // never win the race.
    for i in 0..30 {
        let started_at = Instant::now();
        let status = client
            .forward(with_timeout_header(chain(&[1_000]), "20m"))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "call {i}: {status:?}"
        );
        assert!(started_at.elapsed() < Duration::from_millis(500));
    }
    // The handler's context ended by its deadline.
    server.drain().await;
    let status = client
        .forward(with_timeout_header(chain(&[1_000]), "100m"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("context deadline exceeded"),
        "{status:?}"
    );
    started(server.event(WAIT).await);
    assert_eq!(
        ended(server.event(WAIT).await).0,
        Some(Error::DeadlineExceeded)
    );
    // Past the cap too.
    let capped = Server::start("B", Some(capped_100ms), None).await;
    let status = raw_client(&capped.url())
        .forward(chain(&[1_000]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_its_deadline_ends_with_deadline_exceeded() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = raw_client(&server.url());
    let request = HopRequest {
        work_ms: 20,
        rest: None,
        count: 1_000,
    };
    let started_at = Instant::now();
    let mut stream = client
        .watch(with_timeout_header(request, "150m"))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(reply)) => seqs.push(reply.seq),
            Ok(None) => panic!("the stream ended cleanly after {seqs:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(!seqs.is_empty() && seqs.len() < 10, "{seqs:?}");
    assert!(started_at.elapsed() < Duration::from_secs(1));
    started(server.event(WAIT).await);
    assert_eq!(
        ended(server.event(WAIT).await).0,
        Some(Error::DeadlineExceeded)
    );

    // A stream that finishes in time ends cleanly, with its context ended as completed.
    let request = HopRequest {
        work_ms: 1,
        rest: None,
        count: 3,
    };
    let mut stream = client
        .watch(with_timeout_header(request, "2S"))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_grpc_timeout_is_invalid_argument_with_a_reason() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = raw_client(&server.url());
    for (value, reason) in [
        ("1.5S", "'.' is not a digit"),
        ("123456789S", "9 digits"),
        ("10x", "unknown unit 'x'"),
        ("m", "no digits"),
    ] {
        let status = client
            .forward(with_timeout_header(chain(&[0]), value))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{value}: {status:?}");
        assert!(status.message().contains(reason), "{value}: {status:?}");
    }
    // The service was never called.
    let mut events = server.events.lock().await;
    assert!(events.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_ends_the_handlers_context_with_a_cause() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = raw_client(&server.url());
    let call = tokio::spawn(async move { client.forward(chain(&[10_000])).await });
    started(server.event(WAIT).await);
    call.abort(); // drops the call: the client sends RST_STREAM
    let (err, cause) = ended(server.event(WAIT).await);
    assert_eq!(err, Some(Error::Cancelled));
    assert_eq!(
        cause.as_deref(),
        Some("client disconnected before the response was ready")
    );

    // Mid-stream too.
    let mut client = raw_client(&server.url());
    let request = HopRequest {
        work_ms: 10,
        rest: None,
        count: 1_000,
    };
    let mut stream = client.watch(request).await.unwrap().into_inner();
    started(server.event(WAIT).await);
    stream.message().await.unwrap().unwrap();
    drop(stream);
    let (err, cause) = ended(server.event(WAIT).await);
    assert_eq!(err, Some(Error::Cancelled));
    assert!(cause.unwrap().contains("client disconnected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_in_flight_rpcs_and_their_upstream_calls_then_drains() {
    let upstream = Server::start("B", Some(layer), None).await;
    let server = Server::start("A", Some(layer), Some(upstream.url())).await;
    let mut client = raw_client(&server.url());
    let call = tokio::spawn(async move { client.forward(chain(&[0, 10_000])).await });
    started(server.event(WAIT).await);
    started(upstream.event(WAIT).await);

    let stopping = Instant::now();
    server.shutdown(WAIT).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopping.elapsed()
    );
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("server shutting down"),
        "{status:?}"
    );
    // The upstream call was reset: B's handler saw its client go away.
    let (err, cause) = ended(upstream.event(WAIT).await);
    assert_eq!(err, Some(Error::Cancelled));
    assert!(cause.unwrap().contains("client disconnected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_layer_sends_the_smaller_of_budget_and_own_timeout() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = layered_client(&server.url());

    let request = Context::background().with_timeout(Duration::from_millis(400));
    let reply = request
        .scope(client.forward(chain(&[0])))
        .await
        .unwrap()
        .into_inner();
    assert!((200..=400).contains(&reply.budget_ms), "{reply:?}");
    server.event(WAIT).await;
    server.event(WAIT).await;

    // The call's own timeout is smaller: it wins.
    let mut call = tonic::Request::new(chain(&[0]));
    call.set_timeout(Duration::from_millis(150));
    let reply = request
        .scope(client.forward(call))
        .await
        .unwrap()
        .into_inner();
    assert!((50..=150).contains(&reply.budget_ms), "{reply:?}");
    server.event(WAIT).await;
    server.event(WAIT).await;

    // Outside any context: the call's own timeout, or nothing.
    let reply = client.forward(chain(&[0])).await.unwrap().into_inner();
    assert_eq!(reply.budget_ms, -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_a_done_context_fails_locally_unsent() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = layered_client(&server.url());
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    scope.cancel();
    let status = ctx.scope(client.forward(chain(&[0]))).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    let hop = hop_error(&status).unwrap();
    assert_eq!(
        (hop.error(), hop.origin()),
        (Error::Cancelled, Origin::Local)
    );
    assert_eq!(hop.method(), "/ctx.relay.v1.Relay/Forward");
    assert_eq!(hop.authority(), server.addr.to_string());

    let expired = Context::background().with_timeout(Duration::ZERO);
    let status = expired
        .scope(client.forward(chain(&[0])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("context deadline exceeded calling /ctx.relay.v1.Relay/Forward"),
        "{status:?}"
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut events = server.events.lock().await;
    assert!(events.try_recv().is_err(), "nothing reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_is_dropped_the_moment_its_context_ends() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = layered_client(&server.url());
    let (ctx, cancel) = Context::background().with_cancel().into_parts();
    let call = tokio::spawn(ctx.scope(async move { client.forward(chain(&[10_000])).await }));
    started(server.event(WAIT).await);
    let cancelled_at = Instant::now();
    cancel.cancel();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    let (err, cause) = ended(server.event(WAIT).await);
    assert!(cancelled_at.elapsed() < Duration::from_millis(500));
    assert_eq!(err, Some(Error::Cancelled));
    assert!(cause.unwrap().contains("client disconnected"));

    // A deadline mid-stream: the client's stream ends with DEADLINE_EXCEEDED, the server's
    // with the reset.
    let mut client = layered_client(&server.url());
    let request = Context::background().with_timeout(Duration::from_millis(100));
    let status = request
        .scope(async {
            let mut stream = client
                .watch(HopRequest {
                    work_ms: 10,
                    rest: None,
                    count: 1_000,
                })
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded_downstream_names_the_hop() {
    // C gives every call 100 ms at most; B calls C; A calls B.
    let c = Server::start("C", Some(capped_100ms), None).await;
    let b = Server::start("B", Some(layer), Some(c.url())).await;
    let mut a = layered_client(&b.url());
    let request = Context::background().with_timeout(Duration::from_secs(2));
    let status = request
        .scope(a.forward(chain(&[0, 1_000])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // B's call to C reported C's expiry; B answered with it; A's layer adds B.
    let hop = hop_error(&status).unwrap();
    assert_eq!(
        (hop.error(), hop.origin()),
        (Error::DeadlineExceeded, Origin::Downstream)
    );
    assert_eq!(hop.authority(), b.addr.to_string());
    let c_addr = c.addr.to_string();
    assert!(
        status.message().contains(&format!(
            "deadline exceeded downstream of /ctx.relay.v1.Relay/Forward on {c_addr}"
        )),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hops_chain_their_budgets() {
    let c = Server::start("C", Some(layer), None).await;
    let b = Server::start("B", Some(layer), Some(c.url())).await;
    let a = Server::start("A", Some(layer), Some(b.url())).await;
    let reply = raw_client(&a.url())
        .forward(with_timeout_header(chain(&[50, 50, 0]), "1S"))
        .await
        .unwrap()
        .into_inner();
    let b_reply = reply.upstream.as_deref().unwrap();
    let c_reply = b_reply.upstream.as_deref().unwrap();
    assert!(reply.budget_ms > b_reply.budget_ms + 40, "{reply:?}");
    assert!(b_reply.budget_ms > c_reply.budget_ms + 40, "{reply:?}");
    assert!(c_reply.budget_ms > 600, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_with_no_budget_is_answered_without_calling_its_handler() {
    let server = Server::start("A", Some(layer), None).await;
    let mut client = raw_client(&server.url());
    for zero in ["0n", "0m", "0H"] {
        let status = client
            .forward(with_timeout_header(chain(&[0]), zero))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{zero}: {status:?}");
    }
    // The next call with budget is the first the handler sees.
    client
        .forward(with_timeout_header(chain(&[0]), "700m"))
        .await
        .unwrap();
    let budget = started(server.event(WAIT).await).unwrap();
    assert!(
        budget > Duration::from_millis(350),
        "the first start is the call with budget: {budget:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_default_timeout_caps_the_budget_too() {
    fn default_only(root: &Context) -> ServerLayer {
        ServerLayer::new(root).default_timeout(Duration::from_millis(500))
    }
    let server = Server::start("A", Some(default_only), None).await;
    let mut client = raw_client(&server.url());
    client
        .forward(with_timeout_header(chain(&[0]), "99999999H"))
        .await
        .unwrap();
    let budget = started(server.event(WAIT).await).unwrap();
    assert!(budget <= Duration::from_millis(500), "{budget:?}");
}
