//! The client layers at the boundary: a request's own `grpc-timeout` is never stretched
//! (kept when shorter than the budget, lowered when longer) and no error or status they
//! produce shows the URI's userinfo. The reqwest middleware's side is in `reqwest.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ctx_core::Context;
use ctx_core::http::grpc::{ClientLayer, hop_error};
use ctx_core::http::{GRPC_TIMEOUT, PropagateDeadlineLayer, parse_grpc_timeout};
use http_body_util::Empty;
use tower::{Layer, ServiceExt, service_fn};

type Seen = Arc<Mutex<Option<String>>>;

/// An inner service that notes the `grpc-timeout` it was sent and answers with
/// `grpc-status` (if any).
fn upstream(
    seen: Seen,
    grpc_status: Option<&'static str>,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<Empty<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |request: http::Request<()>| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap() = request
                .headers()
                .get(GRPC_TIMEOUT)
                .map(|v| v.to_str().unwrap().to_owned());
            let mut response = http::Response::new(Empty::new());
            if let Some(code) = grpc_status {
                response
                    .headers_mut()
                    .insert("grpc-status", code.parse().unwrap());
            }
            Ok(response)
        }
    })
}

fn request(uri: &str, own: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::builder().uri(uri);
    if let Some(own) = own {
        request = request.header(GRPC_TIMEOUT, own);
    }
    request.body(()).unwrap()
}

#[tokio::test]
async fn every_client_layer_keeps_a_shorter_grpc_timeout_and_lowers_a_longer_one() {
    let ctx = Context::background().with_timeout(Duration::from_secs(20));
    for (own, expect_own) in [("50m", true), ("99999999H", false)] {
        let seen = Seen::default();
        PropagateDeadlineLayer::with_context(&ctx)
            .layer(upstream(seen.clone(), None))
            .oneshot(request("http://a.test/x", Some(own)))
            .await
            .unwrap();
        let http_sent = seen.lock().unwrap().take().unwrap();

        ClientLayer::with_context(&ctx)
            .layer(upstream(seen.clone(), None))
            .oneshot(request("http://a.test/pkg.S/M", Some(own)))
            .await
            .unwrap();
        let grpc_sent = seen.lock().unwrap().take().unwrap();

        for sent in [http_sent, grpc_sent] {
            if expect_own {
                assert_eq!(sent, own);
            } else {
                let sent = parse_grpc_timeout(sent.as_bytes()).unwrap();
                assert!(sent <= Duration::from_secs(20), "{own}: {sent:?}");
            }
        }
    }
}

#[tokio::test]
async fn grpc_client_statuses_never_show_userinfo() {
    let uri = "http://user:s3cret@127.0.0.1:9/pkg.S/M";
    let ctx = Context::background().with_timeout(Duration::from_secs(20));
    let no_secret = |status: &tonic::Status| {
        let text = format!("{status} {status:?} {}", status.message());
        assert!(
            !text.contains("s3cret") && !text.contains("user:"),
            "{text}"
        );
        let hop = hop_error(status).expect("a hop");
        assert_eq!(hop.authority(), "127.0.0.1:9");
        assert!(!hop.to_string().contains("s3cret"));
    };

    // The callee answers DEADLINE_EXCEEDED: the status names this hop.
    let err = ClientLayer::with_context(&ctx)
        .layer(upstream(Seen::default(), Some("4")))
        .oneshot(request(uri, None))
        .await
        .unwrap_err();
    no_secret(err.downcast_ref::<tonic::Status>().unwrap());

    // The caller's context is already done: the call fails locally.
    let done = Context::background().with_timeout(Duration::ZERO);
    let err = ClientLayer::with_context(&done)
        .layer(upstream(Seen::default(), None))
        .oneshot(request(uri, None))
        .await
        .unwrap_err();
    no_secret(err.downcast_ref::<tonic::Status>().unwrap());

    // An authority configured with credentials is shown without them too.
    let err = ClientLayer::with_context(&done)
        .authority("user:s3cret@127.0.0.1:9")
        .layer(upstream(Seen::default(), None))
        .oneshot(request("/pkg.S/M", None))
        .await
        .unwrap_err();
    no_secret(err.downcast_ref::<tonic::Status>().unwrap());
}
