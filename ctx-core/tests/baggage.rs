//! W3C baggage over the http layers: opt-in keys, trusted servers, limits, a fuzzed codec.
#![cfg(feature = "tower")]

use std::convert::Infallible;

use ctx_core::http::baggage::{
    BAGGAGE, Baggage, BaggageKeys, BaggageReport, MAX_BYTES, MAX_ENTRIES,
};
use ctx_core::http::{ContextLayer, PropagateDeadlineLayer};
use ctx_core::{Context, ContextKey};
use proptest::prelude::*;
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, PartialEq)]
struct Tenant(u32);
impl ContextKey for Tenant {
    const NAME: &'static str = "Tenant";
}
impl Baggage for Tenant {
    const KEY: &'static str = "tenant";
    fn encode(&self) -> String {
        self.0.to_string()
    }
    fn decode(value: &str) -> Result<Self, String> {
        value
            .parse()
            .map(Tenant)
            .map_err(|e| format!("not a tenant: {e}"))
    }
}

#[derive(Debug, PartialEq)]
struct Note(String);
impl ContextKey for Note {
    const NAME: &'static str = "Note";
}
impl Baggage for Note {
    const KEY: &'static str = "note";
    fn encode(&self) -> String {
        self.0.clone()
    }
    fn decode(value: &str) -> Result<Self, String> {
        Ok(Note(value.to_string()))
    }
}

/// A secret that must never leave the process: a context key without `Baggage`.
struct Password(&'static str);
impl ContextKey for Password {
    const NAME: &'static str = "Password";
}

fn keys() -> BaggageKeys {
    BaggageKeys::new().key::<Tenant>().key::<Note>()
}

/// What a client layer with `keys` sends for `ctx`, as the `baggage` header.
fn sent(ctx: &Context, existing: Option<&str>) -> Option<String> {
    let client = PropagateDeadlineLayer::with_context(ctx)
        .baggage(keys())
        .layer(service_fn(|request: http::Request<()>| async move {
            Ok::<_, Infallible>(
                request
                    .headers()
                    .get(BAGGAGE)
                    .map(|v| v.to_str().unwrap().to_string()),
            )
        }));
    let mut request = http::Request::new(());
    if let Some(existing) = existing {
        request
            .headers_mut()
            .insert(BAGGAGE, existing.parse().unwrap());
    }
    futures::executor::block_on(client.oneshot(request)).unwrap()
}

/// What the handler saw: the tenant, the note, the report. (`From<String>`: the layer's
/// body type must be able to carry its own 400 answers.)
#[derive(Default)]
struct Seen(Option<u32>, Option<String>, Option<BaggageReport>);
impl From<String> for Seen {
    fn from(_: String) -> Seen {
        Seen::default()
    }
}

/// What a server layer (trusting `trusted`) gives its handler for a `baggage` header.
fn received(
    trusted: Option<BaggageKeys>,
    header: &str,
) -> (Option<u32>, Option<String>, Option<BaggageReport>) {
    let root = Context::background();
    let mut layer = ContextLayer::new(&root);
    if let Some(trusted) = trusted {
        layer = layer.trust_baggage(trusted);
    }
    let server = layer.layer(service_fn(|request: http::Request<String>| async move {
        let ctx = Context::current();
        let seen = Seen(
            ctx.value::<Tenant>().map(|t| t.0),
            ctx.value::<Note>().map(|n| n.0.clone()),
            request.extensions().get::<BaggageReport>().cloned(),
        );
        assert_eq!(
            request
                .extensions()
                .get::<Context>()
                .unwrap()
                .value::<Tenant>(),
            ctx.value::<Tenant>(),
            "the extension and the current context agree"
        );
        Ok::<_, Infallible>(http::Response::new(seen))
    }));
    let request = http::Request::builder()
        .header(BAGGAGE, header)
        .body(String::new())
        .unwrap();
    let Seen(tenant, note, report) = futures::executor::block_on(server.oneshot(request))
        .unwrap()
        .into_body();
    (tenant, note, report)
}

#[test]
fn opted_in_values_travel_and_others_never_do() {
    let ctx = Context::background()
        .with_value(Tenant(42))
        .with_value(Note("a b,c;d=é".into()))
        .with_value(Password("hunter2"));
    assert_eq!(ctx.value::<Password>().unwrap().0, "hunter2");
    let header = sent(&ctx, None).expect("a baggage header");
    assert!(!header.contains("hunter2"));
    assert_eq!(header, "tenant=42,note=a%20b%2Cc%3Bd=%C3%A9");
    let (tenant, note, report) = received(Some(keys()), &header);
    assert_eq!((tenant, note.as_deref()), (Some(42), Some("a b,c;d=é")));
    let report = report.unwrap();
    assert_eq!(report.accepted, ["tenant", "note"]);
    assert!(report.rejected.is_empty());
    // A request that already carries baggage keeps it, ours after it.
    assert_eq!(
        sent(&ctx.with_value(Tenant(1)), Some("trace=x")).unwrap(),
        "trace=x,tenant=1,note=a%20b%2Cc%3Bd=%C3%A9"
    );
    // Nothing to send, no header.
    assert_eq!(sent(&Context::background(), None), None);
}

#[test]
fn an_untrusting_server_ignores_the_header() {
    assert_eq!(received(None, "tenant=42"), (None, None, None));
    // Trusting only `Tenant`: `note` is dropped with a reason.
    let (tenant, note, report) =
        received(Some(BaggageKeys::new().key::<Tenant>()), "tenant=7,note=hi");
    assert_eq!((tenant, note), (Some(7), None));
    let report = report.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].key, "note");
    assert_eq!(report.rejected[0].reason, "no trusted key of that name");
}

#[test]
fn malformed_entries_are_dropped_with_a_reason_and_the_rest_kept() {
    let (tenant, note, report) = received(
        Some(keys()),
        "garbage, tenant=oops ,bad key=1,note=%zz,note2, tenant=9;prop=1 ,tenant=10",
    );
    // `tenant=oops` was refused, so `tenant=9` stands, and `tenant=10` repeats it.
    assert_eq!((tenant, note), (Some(9), None));
    let reasons: Vec<(String, String)> = report
        .unwrap()
        .rejected
        .into_iter()
        .map(|r| (r.key, r.reason))
        .collect();
    let has = |key: &str, reason: &str| reasons.iter().any(|(k, r)| k == key && r.contains(reason));
    assert!(has("garbage", "no `=`"), "{reasons:?}");
    assert!(has("tenant", "not a tenant"), "{reasons:?}");
    assert!(has("bad key", "not an HTTP token"), "{reasons:?}");
    assert!(has("note", "'%zz' is not a percent-escape"), "{reasons:?}");
    assert!(has("note2", "no `=`"), "{reasons:?}");
    assert!(has("tenant", "repeated"), "{reasons:?}");
}

#[test]
fn limits_hold_both_ways() {
    // Incoming: entries past the 64th are dropped; an oversized header is dropped whole.
    let many: Vec<String> = (0..MAX_ENTRIES + 6).map(|i| format!("k{i}=v")).collect();
    let header = format!("{},tenant=5", many.join(","));
    let (tenant, _, report) = received(Some(keys()), &header);
    assert_eq!(tenant, None, "the 71st entry is over the limit");
    let report = report.unwrap();
    // The first 64 (untrusted) rejections are listed; the 6 over the limit and `tenant`
    // are counted.
    assert_eq!(report.rejected.len(), MAX_ENTRIES);
    assert_eq!(report.more_rejected, 7);
    // With room in the list, an entry over the limit is listed with its reason: 64 entries
    // of `tenant` (1 accepted, 63 repeats), then `note`.
    let header = format!("{},note=x", vec!["tenant=1"; MAX_ENTRIES].join(","));
    let (tenant, note, report) = received(Some(keys()), &header);
    assert_eq!((tenant, note), (Some(1), None));
    let report = report.unwrap();
    assert_eq!(
        (report.rejected.len(), report.more_rejected),
        (MAX_ENTRIES, 0)
    );
    let last = report.rejected.last().unwrap();
    assert!(
        last.key == "note" && last.reason.contains("64 entries"),
        "{last:?}"
    );
    let huge = format!("tenant=1,note={}", "x".repeat(MAX_BYTES));
    let (tenant, _, report) = received(Some(keys()), &huge);
    assert_eq!(tenant, None);
    assert!(
        report.unwrap().rejected[0]
            .reason
            .contains("over the limit")
    );
    // Outgoing: a value that would overflow the header is left out.
    let ctx = Context::background()
        .with_value(Tenant(3))
        .with_value(Note("y".repeat(MAX_BYTES)));
    assert_eq!(sent(&ctx, None).as_deref(), Some("tenant=3"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text value survives the trip, whatever characters it has.
    #[test]
    fn any_value_round_trips(value in any::<String>(), tenant in any::<u32>()) {
        let keys = keys();
        let ctx = Context::background().with_value(Note(value.clone())).with_value(Tenant(tenant));
        let header = keys.encode(&ctx).unwrap();
        prop_assert!(header.is_ascii());
        let (back, report) = keys.decode(&Context::background(), &header);
        prop_assert!(report.rejected.is_empty(), "{:?}", report);
        prop_assert_eq!(back.value::<Note>().map(|n| n.0.as_str()), Some(value.as_str()));
        prop_assert_eq!(back.value::<Tenant>().map(|t| t.0), Some(tenant));
    }

    /// The decoder never panics, accepts at most one value per key and reports every
    /// non-empty entry it does not accept.
    #[test]
    fn any_header_is_handled(header in "[ -~]{0,300}") {
        let (_, report) = keys().decode(&Context::background(), &header);
        prop_assert!(report.accepted.len() <= 2);
        let members = header.split(',').filter(|m| !m.trim_matches([' ', '\t']).is_empty()).count();
        let dropped = report.rejected.len() + report.more_rejected;
        prop_assert_eq!(report.accepted.len() + dropped, members);
    }

    /// Arbitrary bytes (as lossy text) never panic either.
    #[test]
    fn any_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let header = String::from_utf8_lossy(&bytes);
        let _ = keys().decode(&Context::background(), &header);
    }
}

/// The gRPC layers carry baggage the same way: the client layer sends the opted-in keys, the
/// server layer accepts the trusted ones into the RPC's context.
#[cfg(feature = "tonic")]
#[test]
fn grpc_layers_carry_trusted_baggage() {
    use ctx_core::http::grpc::{ClientLayer, ServerLayer};
    use http_body_util::Full;

    let ctx = Context::background()
        .with_value(Tenant(9))
        .with_value(Password("hunter2"));
    let client = ClientLayer::with_context(&ctx)
        .baggage(keys())
        .layer(service_fn(|request: http::Request<()>| async move {
            let header = request.headers().get(BAGGAGE).cloned();
            Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
                header
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
            ))))
        }));
    let response = futures::executor::block_on(client.oneshot(http::Request::new(()))).unwrap();
    let body = futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"tenant=9");

    let root = Context::background();
    let server = ServerLayer::new(&root)
        .trust_baggage(BaggageKeys::new().key::<Tenant>())
        .layer(service_fn(|_request: http::Request<()>| async move {
            let tenant = Context::current().value::<Tenant>().map(|t| t.0);
            Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from(format!(
                "{tenant:?}"
            )))))
        }));
    let request = http::Request::builder()
        .header(BAGGAGE, "tenant=11,note=x")
        .body(())
        .unwrap();
    let response = futures::executor::block_on(server.oneshot(request)).unwrap();
    let body = futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"Some(11)");
}

/// reqwest's middleware sends the opted-in keys too, to a server that trusts them.
#[cfg(all(feature = "reqwest", feature = "axum"))]
#[test]
fn reqwest_carries_baggage_to_a_trusting_server() {
    use ctx_core::http::DeadlineMiddleware;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        async fn tenant(ctx: Context) -> String {
            format!("{:?}", ctx.value::<Tenant>().map(|t| t.0))
        }
        let root = Context::background();
        let app = axum::Router::new()
            .route("/tenant", axum::routing::get(tenant))
            .layer(ContextLayer::new(&root).trust_baggage(BaggageKeys::new().key::<Tenant>()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(DeadlineMiddleware::new().baggage(keys()))
            .build();
        let ctx = Context::background().with_value(Tenant(21));
        let response = ctx
            .scope(client.get(format!("{base}/tenant")).send())
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "Some(21)");
    });
}

/// What a client layer with `keys` sends for `ctx` when the request already has these
/// `baggage` headers (a gateway forwarding its caller's): every `baggage` header it sends.
fn sent_all(ctx: &Context, forwarded: &[&[u8]]) -> Vec<String> {
    let client = PropagateDeadlineLayer::with_context(ctx)
        .baggage(keys())
        .layer(service_fn(|request: http::Request<()>| async move {
            Ok::<_, Infallible>(
                request
                    .headers()
                    .get_all(BAGGAGE)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>(),
            )
        }));
    let mut request = http::Request::new(());
    for value in forwarded {
        request
            .headers_mut()
            .append(BAGGAGE, http::HeaderValue::from_bytes(value).unwrap());
    }
    futures::executor::block_on(client.oneshot(request)).unwrap()
}

/// What a server trusting `keys()` accepts from these `baggage` headers (all of them).
fn decoded(headers: &[String]) -> (Context, BaggageReport) {
    let mut map = http::HeaderMap::new();
    for value in headers {
        map.append(BAGGAGE, value.parse().unwrap());
    }
    keys()
        .decode_headers(&Context::background(), &map)
        .expect("a baggage header")
}

fn entries(header: &str) -> usize {
    header.split(',').filter(|m| !m.trim().is_empty()).count()
}

#[test]
fn a_layers_own_entries_win_over_forwarded_ones() {
    // A gateway forwards its caller's `tenant=999`; its layer sends its own tenant, 42.
    let ctx = Context::background().with_value(Tenant(42));
    for forwarded in [
        "tenant=999",
        "tenant=999,trace=x",
        "tenant \t= 999;p=1,trace=x",
    ] {
        let sent = sent_all(&ctx, &[forwarded.as_bytes()]);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(!sent[0].contains("999"), "{forwarded}: {sent:?}");
        assert!(sent[0].ends_with("tenant=42"), "{forwarded}: {sent:?}");
        assert_eq!(received(Some(keys()), &sent[0]).0, Some(42), "{forwarded}");
    }
    // Forwarded entries of other keys stay, in their order, before ours.
    assert_eq!(
        sent_all(&ctx, &[b"a=1,tenant=999,b=2"]),
        ["a=1,b=2,tenant=42"]
    );
}

#[test]
fn a_layers_own_entries_always_fit_forwarded_ones_are_dropped() {
    let ctx = Context::background()
        .with_value(Tenant(42))
        .with_value(Note("n".repeat(100)));
    // A forwarded header just under the byte limit.
    let big: Vec<String> = (0..80)
        .map(|i| format!("f{i:02}={}", "v".repeat(97)))
        .collect();
    let big = big.join(",");
    assert!(
        big.len() > MAX_BYTES - 100 && big.len() <= MAX_BYTES,
        "{}",
        big.len()
    );
    let sent = sent_all(&ctx, &[big.as_bytes()]);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].len() <= MAX_BYTES, "{} bytes", sent[0].len());
    let (back, report) = decoded(&sent);
    assert_eq!(back.value::<Tenant>(), Some(&Tenant(42)));
    assert_eq!(back.value::<Note>().map(|n| n.0.len()), Some(100));
    assert_eq!(report.accepted, ["tenant", "note"]);

    // 64 forwarded entries: some give way so that ours arrive within 64 entries.
    let many: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("k{i}=v")).collect();
    let sent = sent_all(&ctx, &[many.join(",").as_bytes()]);
    assert_eq!(entries(&sent[0]), MAX_ENTRIES, "{sent:?}");
    assert!(sent[0].starts_with("k0=v,k1=v,"), "{sent:?}");
    let (back, _) = decoded(&sent);
    assert_eq!(back.value::<Tenant>(), Some(&Tenant(42)));
}

#[test]
fn several_baggage_headers_are_one_list() {
    // Client side: every forwarded header is kept, combined into one.
    let ctx = Context::background().with_value(Tenant(42));
    assert_eq!(
        sent_all(&ctx, &[b"a=1", b"tenant=999,b=2"]),
        ["a=1,b=2,tenant=42"]
    );
    // Server side: entries of every header count, and a key repeated across headers is a
    // repeat (the first stands).
    let (back, report) = decoded(&["note=x".into(), "tenant=7".into(), "tenant=8".into()]);
    assert_eq!(back.value::<Tenant>(), Some(&Tenant(7)));
    assert_eq!(back.value::<Note>().map(|n| n.0.as_str()), Some("x"));
    assert_eq!(report.accepted, ["note", "tenant"]);
    assert!(report.rejected[0].reason.contains("repeated"));
    // No header: nothing to report.
    assert!(
        keys()
            .decode_headers(&Context::background(), &http::HeaderMap::new())
            .is_none()
    );
}

#[test]
fn the_report_keeps_at_most_64_rejections_and_counts_the_rest() {
    // 8,191 bytes of `a,a,a,...`: 4,096 malformed entries.
    let header = vec!["a"; 4096].join(",");
    assert_eq!(header.len(), 8191);
    let (_, report) = keys().decode(&Context::background(), &header);
    assert_eq!(report.rejected.len(), MAX_ENTRIES);
    assert_eq!(report.more_rejected, 4096 - MAX_ENTRIES);
    assert!(report.accepted.is_empty());
}

#[test]
fn percent_escapes_are_exactly_a_percent_and_two_hex_digits() {
    for (header, escape) in [
        ("note=%+A", "%+A"),
        ("note=%-1", "%-1"),
        ("note=a%2", "%2"),
        ("note=%", "%"),
        ("note=%g0", "%g0"),
    ] {
        let (_, note, report) = received(Some(keys()), header);
        assert_eq!(note, None, "{header}");
        let reason = &report.unwrap().rejected[0].reason;
        assert_eq!(
            reason,
            &format!("'{escape}' is not a percent-escape: '%' must be followed by two hex digits"),
            "{header}"
        );
    }
    // Escapes that are well-formed but not UTF-8 say so; control characters decode.
    let (_, _, report) = received(Some(keys()), "note=%FF");
    assert!(
        report.unwrap().rejected[0]
            .reason
            .contains("not valid UTF-8")
    );
    assert_eq!(
        received(Some(keys()), "note=a%0Ab").1.as_deref(),
        Some("a\nb")
    );
}

/// A key the server does not trust, with a codec: it must never reach a context.
struct Untrusted(String);
impl ContextKey for Untrusted {
    const NAME: &'static str = "Untrusted";
}
impl Baggage for Untrusted {
    const KEY: &'static str = "untrusted";
    fn encode(&self) -> String {
        self.0.clone()
    }
    fn decode(value: &str) -> Result<Self, String> {
        Ok(Untrusted(value.to_string()))
    }
}

/// Header bytes: arbitrary, or lists of plausible entries (keys that matter included).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..10_000),
        proptest::collection::vec(
            prop_oneof![
                Just("tenant=999".to_string()),
                Just("untrusted=1".to_string()),
                Just("note=%+A".to_string()),
                "[a-z]{1,8}=[ -~]{0,200}",
                "[ -~]{0,40}",
            ],
            0..200
        )
        .prop_map(|entries| entries.join(",").into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A server layer, given any bytes in any number of `baggage` headers, never panics,
    /// keeps a bounded report, and takes values only for keys it trusts.
    #[test]
    fn any_incoming_baggage_is_bounded_and_only_trusted(
        headers in proptest::collection::vec(header_bytes(), 1..4),
    ) {
        let mut map = http::HeaderMap::new();
        for bytes in &headers {
            if let Ok(value) = http::HeaderValue::from_bytes(bytes) {
                map.append(BAGGAGE, value);
            }
        }
        if let Some((ctx, report)) = keys().decode_headers(&Context::background(), &map) {
            prop_assert!(report.rejected.len() <= MAX_ENTRIES);
            prop_assert!(report.accepted.len() <= 2);
            prop_assert!(report.accepted.iter().all(|k| ["tenant", "note"].contains(k)));
            prop_assert!(report.rejected.iter().all(|r| r.key.chars().count() <= 64));
            prop_assert!(ctx.value::<Untrusted>().is_none());
        }
        // The text form too (what `decode` is given), lossily converted.
        let text = String::from_utf8_lossy(&headers[0]);
        let (ctx, report) = keys().decode(&Context::background(), &text);
        prop_assert!(report.rejected.len() <= MAX_ENTRIES);
        prop_assert!(ctx.value::<Untrusted>().is_none());
    }

    /// A client layer forwarding any headers sends one within the limits, and its own
    /// entries are what a server reads for its keys: never a forwarded value.
    #[test]
    fn any_forwarded_baggage_never_overrides_or_crowds_out_ours(
        headers in proptest::collection::vec(header_bytes(), 1..4),
        tenant in any::<u32>(),
        note in "[ -~]{0,300}",
    ) {
        let forwarded: Vec<&[u8]> = headers
            .iter()
            .map(Vec::as_slice)
            .filter(|bytes| http::HeaderValue::from_bytes(bytes).is_ok())
            .collect();
        let ctx = Context::background()
            .with_value(Tenant(tenant))
            .with_value(Note(note.clone()));
        let sent = sent_all(&ctx, &forwarded);
        prop_assert_eq!(sent.len(), 1);
        prop_assert!(sent[0].len() <= MAX_BYTES, "{} bytes", sent[0].len());
        prop_assert!(entries(&sent[0]) <= MAX_ENTRIES);
        let (back, _) = decoded(&sent);
        prop_assert_eq!(back.value::<Tenant>(), Some(&Tenant(tenant)));
        prop_assert_eq!(back.value::<Note>().map(|n| n.0.as_str()), Some(note.as_str()));
    }
}
