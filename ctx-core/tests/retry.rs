//! `http::RetryPolicy`: at the tower level against a scripted service, and over loopback with a tonic `Channel` + `grpc::ClientLayer` and a
//! hyper client + `PropagateDeadlineLayer` against axum. What is retried (connect errors,
//! 503, UNAVAILABLE) and what is not (504, 500, DEADLINE_EXCEEDED); the attempt numbers;
//! retries that stop when the budget cannot cover a typical attempt, when the `TpsBudget` is
//! spent, and when the backoff would end past the deadline.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use ctx_core::Context;
use ctx_core::http::grpc::ClientLayer;
use ctx_core::http::{
    BoxError, BufferBodyLayer, Failure, GRPC_PREVIOUS_RPC_ATTEMPTS, GRPC_TIMEOUT,
    PropagateDeadlineLayer, RetryPolicy,
};
use tower::retry::RetryLayer;
use tower::retry::budget::TpsBudget;
use tower::{Service, ServiceBuilder, ServiceExt};

/// One attempt as the scripted service saw it: its `grpc-previous-rpc-attempts` and
/// `grpc-timeout` headers, and when it came (tokio's clock).
#[derive(Clone, Debug)]
struct Attempt {
    previous: Option<String>,
    timeout: Option<String>,
    at: tokio::time::Instant,
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn attempt_of(headers: &http::HeaderMap) -> Attempt {
    Attempt {
        previous: header(headers, GRPC_PREVIOUS_RPC_ATTEMPTS),
        timeout: header(headers, GRPC_TIMEOUT),
        at: tokio::time::Instant::now(),
    }
}

/// What the scripted service answers to one attempt.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    Grpc(i32),
    Refused,
    GrpcError(tonic::Code),
}

type Log = Arc<Mutex<Vec<Attempt>>>;

/// A service that answers each attempt with the next scripted answer (then 200), after
/// `work`, and logs what it saw.
fn scripted(
    script: impl IntoIterator<Item = Answer>,
    work: Duration,
) -> (
    impl Service<
        http::Request<String>,
        Response = http::Response<()>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send,
    Log,
) {
    let script = Arc::new(Mutex::new(script.into_iter().collect::<VecDeque<_>>()));
    let log = Log::default();
    let seen = log.clone();
    let service = tower::service_fn(move |request: http::Request<String>| {
        let script = script.clone();
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(attempt_of(request.headers()));
            tokio::time::sleep(work).await;
            let answer = script.lock().unwrap().pop_front();
            let response = http::Response::builder();
            match answer {
                None => Ok(response.status(200).body(()).unwrap()),
                Some(Answer::Status(code)) => Ok(response.status(code).body(()).unwrap()),
                Some(Answer::Grpc(code)) => Ok(response
                    .header("grpc-status", code.to_string())
                    .body(())
                    .unwrap()),
                Some(Answer::Refused) => Err(BoxError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
                Some(Answer::GrpcError(code)) => {
                    Err(BoxError::from(tonic::Status::new(code, "scripted")))
                }
            }
        }
    });
    (service, log)
}

fn request() -> http::Request<String> {
    http::Request::builder()
        .uri("http://upstream.test/")
        .body(String::new())
        .unwrap()
}

fn fast() -> RetryPolicy {
    RetryPolicy::new().backoff(Duration::from_millis(1), Duration::from_millis(4))
}

/// Sends one request through `policy` over `service` under `ctx`; the status or the error.
async fn send<S>(policy: &RetryPolicy, service: S, ctx: &Context) -> Result<u16, String>
where
    S: Service<http::Request<String>, Response = http::Response<()>, Error = BoxError> + Clone,
{
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .service(service);
    ctx.scope(client.oneshot(request()))
        .await
        .map(|response| response.status().as_u16())
        .map_err(|err| err.to_string())
}

fn previous(log: &Log) -> Vec<Option<String>> {
    log.lock()
        .unwrap()
        .iter()
        .map(|a| a.previous.clone())
        .collect()
}

fn numbered(n: usize) -> Vec<Option<String>> {
    (0..n)
        .map(|i| (i > 0).then(|| i.to_string()))
        .collect::<Vec<_>>()
}

#[tokio::test]
async fn transient_failures_are_retried_and_each_retry_is_numbered() {
    let ctx = Context::background().with_timeout(Duration::from_secs(60));
    for script in [
        vec![Answer::Status(503), Answer::Status(503)],
        vec![Answer::Grpc(14), Answer::Grpc(14), Answer::Grpc(14)],
        vec![Answer::GrpcError(tonic::Code::Unavailable)],
        vec![Answer::Refused, Answer::Refused],
    ] {
        let attempts = script.len() + 1;
        let (service, log) = scripted(script.clone(), Duration::from_millis(5));
        assert_eq!(send(&fast(), service, &ctx).await, Ok(200), "{script:?}");
        assert_eq!(previous(&log), numbered(attempts), "{script:?}");
    }
}

#[tokio::test]
async fn non_retryable_failures_are_not_retried() {
    let ctx = Context::background().with_timeout(Duration::from_secs(60));
    for (answer, expect) in [
        (Answer::Status(504), Ok(504)),
        (Answer::Status(500), Ok(500)),
        (Answer::Status(404), Ok(404)),
        (Answer::Grpc(4), Ok(200)), // DEADLINE_EXCEEDED, trailers-only
        (Answer::Grpc(13), Ok(200)),
        (
            Answer::GrpcError(tonic::Code::DeadlineExceeded),
            Err("Deadline expired".to_string()),
        ),
    ] {
        let (service, log) = scripted([answer], Duration::from_millis(5));
        let result = send(&fast(), service, &ctx).await;
        match (&result, &expect) {
            (Err(got), Err(want)) => assert!(got.contains(want), "{answer:?}: {got}"),
            _ => assert_eq!(result, expect, "{answer:?}"),
        }
        assert_eq!(log.lock().unwrap().len(), 1, "{answer:?} was retried");
    }

    // The rule is configurable: a 503 is not retried when the predicate says so, a 502 is.
    let only_502 = fast().retry_on(|f| f == Failure::Http(502));
    let (service, log) = scripted([Answer::Status(503)], Duration::ZERO);
    assert_eq!(send(&only_502, service, &ctx).await, Ok(503));
    assert_eq!(log.lock().unwrap().len(), 1);
    let (service, log) = scripted([Answer::Status(502)], Duration::ZERO);
    assert_eq!(send(&only_502, service, &ctx).await, Ok(200));
    assert_eq!(log.lock().unwrap().len(), 2);
}

// On tokio's paused clock with `test-util` (the attempts' seconds pass at once), on the real
// one without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn retries_stop_when_the_budget_cannot_cover_a_typical_attempt() {
    // Attempts take 1 s. Without a deadline the policy retries, and learns that from the
    // attempts it measures.
    let policy = fast().max_attempts(3);
    assert_eq!(policy.typical_attempt(), None);
    let (service, log) = scripted([Answer::Status(503); 2], Duration::from_secs(1));
    assert_eq!(
        send(&policy, service, &Context::background()).await,
        Ok(200)
    );
    assert_eq!(log.lock().unwrap().len(), 3);
    let typical = policy.typical_attempt().expect("measured");
    assert!(typical >= Duration::from_secs(1), "{typical:?}");

    // At most 0.5 s left after the first attempt cannot hold a 1 s attempt: no retry.
    let ctx = Context::background().with_timeout(Duration::from_millis(1500));
    let (service, log) = scripted([Answer::Status(503)], Duration::from_secs(1));
    assert_eq!(send(&policy, service, &ctx).await, Ok(503));
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "retried without the budget for it"
    );

    // With half a minute left it does.
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let (service, log) = scripted([Answer::Status(503)], Duration::from_secs(1));
    assert_eq!(send(&policy, service, &ctx).await, Ok(200));
    assert_eq!(log.lock().unwrap().len(), 2);

    // A context that is already done is not retried at all.
    let done = Context::background().with_cancel();
    let ctx = done.context().clone();
    drop(done);
    let (service, log) = scripted([Answer::Status(503)], Duration::ZERO);
    assert_eq!(send(&policy, service, &ctx).await, Ok(503));
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_spent_tps_budget_stops_retries() {
    // No reserve; each request earns half a retry (tower's TpsBudget, over 60 s).
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(60), 0, 0.5));
    let policy = fast().budget(budget);
    let ctx = Context::background().with_timeout(Duration::from_secs(60));
    let mut attempts = Vec::new();
    for _ in 0..6 {
        let (service, log) = scripted([Answer::Status(503); 5], Duration::ZERO);
        assert_eq!(send(&policy, service, &ctx).await, Ok(503));
        attempts.push(log.lock().unwrap().len());
    }
    // Every second request has earned one retry; never more.
    assert_eq!(attempts, [1, 2, 1, 2, 1, 2]);
}

// On tokio's paused clock with `test-util` (the backoffs pass at once), on the real one
// without.
#[cfg_attr(feature = "test-util", tokio::test(start_paused = true))]
#[cfg_attr(not(feature = "test-util"), tokio::test)]
async fn the_backoff_never_sleeps_past_the_deadline() {
    // A fixed 10 s backoff (min = max: no room for jitter).
    let policy = RetryPolicy::new()
        .backoff(Duration::from_secs(10), Duration::from_secs(10))
        .max_attempts(3);
    // 5 s of budget: sleeping 10 s would end past the deadline, so no retry, no sleep.
    let ctx = Context::background().with_timeout(Duration::from_secs(5));
    let (service, log) = scripted([Answer::Status(503); 3], Duration::ZERO);
    let start = tokio::time::Instant::now();
    assert_eq!(send(&policy, service, &ctx).await, Ok(503));
    assert_eq!(log.lock().unwrap().len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "slept past the deadline"
    );

    // With time for it, each retry comes at least one backoff after the attempt before.
    let policy = RetryPolicy::new()
        .backoff(Duration::from_millis(200), Duration::from_millis(200))
        .max_attempts(3);
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let (service, log) = scripted([Answer::Status(503); 3], Duration::ZERO);
    assert_eq!(send(&policy, service, &ctx).await, Ok(503));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3);
    for pair in log.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(200));
    }
}

#[tokio::test]
async fn a_backoff_ends_when_the_context_does() {
    // A 60 s backoff, no deadline: a cancel during the pause ends it at once; the attempt
    // then made sees the context done (here, unchecked by the scripted service) and the
    // policy retries no more.
    let policy = RetryPolicy::new()
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .max_attempts(5);
    let scope = Context::background().with_cancel();
    let ctx = scope.context().clone();
    let (service, log) = scripted([Answer::Status(503); 3], Duration::ZERO);
    let watch = policy.clone();
    let call = tokio::spawn(async move { send(&policy, service, &ctx).await });
    // The first attempt is measured when it ends, in the same (synchronous) step that
    // decides on the retry and starts its backoff: on this one-thread runtime, once the
    // measurement is there, the call is in its backoff.
    while watch.typical_attempt().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    scope.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the backoff outlived its context")
        .unwrap();
    assert_eq!(result, Ok(503));
    assert_eq!(log.lock().unwrap().len(), 2);
}

// ---- over loopback -------------------------------------------------------------------

/// A tonic service (`demo.Flaky/Call`) that answers a trailers-only status for each scripted
/// code, then OK; it logs each attempt's headers.
#[derive(Clone)]
struct Flaky {
    script: Arc<Mutex<VecDeque<tonic::Code>>>,
    log: Log,
}

impl tonic::server::NamedService for Flaky {
    const NAME: &'static str = "demo.Flaky";
}

struct Ok200;

impl tonic::server::UnaryService<()> for Ok200 {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

impl Service<http::Request<tonic::body::Body>> for Flaky {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.log.lock().unwrap().push(attempt_of(request.headers()));
        let fail = self.script.lock().unwrap().pop_front();
        Box::pin(async move {
            if let Some(code) = fail {
                return Ok(tonic::Status::new(code, "scripted").into_http());
            }
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            Ok(tonic::server::Grpc::new(codec).unary(Ok200, request).await)
        })
    }
}

async fn grpc_server(script: Vec<tonic::Code>) -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the tonic server");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Log::default();
    let flaky = Flaky {
        script: Arc::new(Mutex::new(script.into())),
        log: log.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(flaky)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (url, log)
}

async fn grpc_call(url: &str, policy: &RetryPolicy, ctx: &Context) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_lazy();
    let channel = ServiceBuilder::new()
        .layer(BufferBodyLayer::new())
        .layer(RetryLayer::new(policy.clone()))
        .layer(ClientLayer::new())
        .service(channel);
    let mut client = tonic::client::Grpc::new(channel);
    ctx.scope(async {
        client
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let path = "/demo.Flaky/Call".parse().unwrap();
        client.unary(tonic::Request::new(()), path, codec).await
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_unavailable_is_retried_with_the_budget_left_at_each_attempt() {
    use tonic::Code::Unavailable;
    let (url, log) = grpc_server(vec![Unavailable, Unavailable]).await;
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    grpc_call(&url, &fast(), &ctx)
        .await
        .expect("the third attempt succeeds");
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().map(|a| a.previous.clone()).collect::<Vec<_>>(),
        numbered(3)
    );
    // Every attempt carries its own remaining budget, never more than the caller's, and
    // never more than the attempt before it had.
    let budgets: Vec<Duration> = log
        .iter()
        .map(|attempt| {
            let timeout = attempt
                .timeout
                .as_deref()
                .expect("a grpc-timeout per attempt");
            ctx_core::http::parse_grpc_timeout(timeout.as_bytes()).unwrap()
        })
        .collect();
    assert!(budgets[0] <= Duration::from_secs(30), "{budgets:?}");
    assert!(budgets.windows(2).all(|b| b[1] <= b[0]), "{budgets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_deadline_exceeded_and_internal_are_not_retried() {
    for code in [tonic::Code::DeadlineExceeded, tonic::Code::Internal] {
        let (url, log) = grpc_server(vec![code, code]).await;
        let ctx = Context::background().with_timeout(Duration::from_secs(30));
        let status = grpc_call(&url, &fast(), &ctx).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(log.lock().unwrap().len(), 1, "{code:?} was retried");
    }
}

/// An axum server that answers each request with the next scripted status (then 200).
async fn http_server(script: Vec<u16>) -> (String, Log) {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let log = Log::default();
    let seen = log.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move |headers: http::HeaderMap| {
            let script = script.clone();
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(attempt_of(&headers));
                let code = script.lock().unwrap().pop_front().unwrap_or(200);
                http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the axum server");
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

async fn http_call(url: &str, policy: &RetryPolicy, ctx: &Context) -> Result<u16, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<String>();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .layer(PropagateDeadlineLayer::new())
        .service(client);
    let request = http::Request::get(url).body(String::new()).unwrap();
    ctx.scope(client.oneshot(request))
        .await
        .map(|response| response.status().as_u16())
        .map_err(|err| err.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_503_is_retried_504_and_500_are_not() {
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let (url, log) = http_server(vec![503, 503]).await;
    assert_eq!(http_call(&url, &fast(), &ctx).await, Ok(200));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter().map(|a| a.previous.clone()).collect::<Vec<_>>(),
        numbered(3)
    );
    assert!(log.iter().all(|a| a.timeout.is_some()), "{log:?}");

    for code in [504, 500] {
        let (url, log) = http_server(vec![code, code]).await;
        assert_eq!(http_call(&url, &fast(), &ctx).await, Ok(code));
        assert_eq!(log.lock().unwrap().len(), 1, "{code} was retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_connect_errors_are_retried_up_to_max_attempts() {
    // A port nothing listens on: bind, note the port, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let policy = fast().max_attempts(3).retry_on(move |failure| {
        seen.lock().unwrap().push(failure);
        failure.is_transient()
    });
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let err = http_call(&url, &policy, &ctx).await.unwrap_err();
    assert!(err.contains("connect") || err.contains("Connect"), "{err}");
    assert_eq!(*failures.lock().unwrap(), [Failure::Connect; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_connect_errors_are_retried_up_to_max_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let policy = fast().max_attempts(3).retry_on(move |failure| {
        seen.lock().unwrap().push(failure);
        failure.is_transient()
    });
    let ctx = Context::background().with_timeout(Duration::from_secs(30));
    let status = grpc_call(&url, &policy, &ctx).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(*failures.lock().unwrap(), [Failure::Connect; 3]);
}
