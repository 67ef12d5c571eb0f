//! The answers a layer gives in place of the service: a short plain-text HTTP response, or a
//! gRPC trailers-only status, each with a fixed reason (never a cancel cause's text, which
//! may hold internal details). Shared by the server layers and the admission layer.

use http::{HeaderValue, Response, StatusCode, header};

/// What a request whose context ended before its answer is told. Fixed texts: a cause's own
/// text stays on the server (logged through `tracing` with that feature).
pub(in crate::integrations::http) const DEADLINE_TEXT: &str = "context deadline exceeded";
/// The text for a request cancelled because the server is shutting down (its root ended).
pub(in crate::integrations::http) const SHUTDOWN_TEXT: &str = "server shutting down";
/// The text for a request cancelled otherwise (its client went away, a layer cancelled it).
#[cfg(feature = "axum")]
pub(in crate::integrations::http) const CANCELLED_TEXT: &str = "request cancelled";

/// `text/plain; charset=utf-8`, the content type of every text a layer answers with.
pub(in crate::integrations::http) const TEXT_PLAIN: HeaderValue =
    HeaderValue::from_static("text/plain; charset=utf-8");

/// A plain-text answer: `status`, `content-type: text/plain; charset=utf-8`, and `text` as
/// the body.
pub(in crate::integrations::http) fn text_response<B: From<String>>(
    status: StatusCode,
    text: &str,
) -> Response<B> {
    let mut response = Response::new(B::from(text.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, TEXT_PLAIN);
    response
}

/// `504 Gateway Timeout`: the request's deadline passed (or left no time to start).
pub(in crate::integrations::http) fn deadline_response<B: From<String>>() -> Response<B> {
    text_response(StatusCode::GATEWAY_TIMEOUT, DEADLINE_TEXT)
}

/// `503 Service Unavailable`: the server is shutting down, or shed the request.
pub(in crate::integrations::http) fn unavailable_response<B: From<String>>(
    text: &str,
) -> Response<B> {
    text_response(StatusCode::SERVICE_UNAVAILABLE, text)
}

/// gRPC's `DEADLINE_EXCEEDED`.
pub(in crate::integrations::http) const GRPC_DEADLINE_EXCEEDED: u8 = 4;
/// gRPC's `UNAVAILABLE`.
pub(in crate::integrations::http) const GRPC_UNAVAILABLE: u8 = 14;

/// A gRPC trailers-only response (HTTP 200, `content-type: application/grpc`, the status in
/// the headers, an empty body) with `code` and `message`. Without tonic: the admission layer
/// answers gRPC requests with the `tower` feature alone. `message` is percent-encoded as
/// gRPC requires (every byte outside printable ASCII, and `%`).
pub(in crate::integrations::http) fn grpc_trailers_only<B: From<String>>(
    code: u8,
    message: &str,
) -> Response<B> {
    let mut response = Response::new(B::from(String::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        http::HeaderName::from_static("grpc-status"),
        HeaderValue::from(u16::from(code)),
    );
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        match byte {
            b' '..=b'~' if byte != b'%' => encoded.push(char::from(byte)),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert(http::HeaderName::from_static("grpc-message"), value);
    }
    response
}

/// Whether `request` is a gRPC call (`content-type: application/grpc`, `application/grpc+proto`
/// and the like), to be answered with a gRPC status rather than an HTTP one.
pub(in crate::integrations::http) fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Logs why a request's context ended, when the answer its client sees is a fixed text.
pub(in crate::integrations::http) fn log_cause(_what: &str, _cause: Option<&crate::Cause>) {
    #[cfg(feature = "tracing")]
    if let Some(cause) = _cause {
        tracing::info!(cause = %format_args!("{cause:#}"), "{_what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_plain_utf8() {
        let response: Response<String> = deadline_response();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()[header::CONTENT_TYPE], TEXT_PLAIN);
        assert_eq!(response.body(), "context deadline exceeded");
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        let response: Response<String> = grpc_trailers_only(GRPC_UNAVAILABLE, "100% full\n");
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "100%25 full%0A");
    }
}
