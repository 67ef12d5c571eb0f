//! What the layer answers in place of the service: why a request was not started, as an
//! HTTP status with a short text, or as a gRPC trailers-only status; and the response body
//! that carries either the service's body or that text.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderName, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::Error;

/// Why a request was not started.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reject {
    /// Every place taken and the queue full.
    Shed,
    /// Its context was cancelled (the client went away, or the server is shutting down).
    Cancelled { queued: bool },
    /// Its deadline passed.
    Expired { queued: bool },
    /// Less budget left than `needed`: the layer's `min_budget`, or what recent requests
    /// took in the service.
    TooShort { left: Duration, needed: Duration },
}

impl Reject {
    /// The context's end, while arriving or while queued.
    pub(super) fn ended(err: Error, queued: bool) -> Reject {
        match err {
            Error::DeadlineExceeded => Reject::Expired { queued },
            _ => Reject::Cancelled { queued },
        }
    }

    /// Whether the caller could succeed by trying again later (503, `UNAVAILABLE`), or
    /// has run out of time for this request (504, `DEADLINE_EXCEEDED`).
    fn unavailable(self) -> bool {
        matches!(self, Reject::Shed | Reject::Cancelled { .. })
    }

    /// The answer: for a gRPC request a trailers-only status, else a 503 or 504 with the
    /// reason as text.
    pub(super) fn response<B>(self, grpc: bool) -> Response<AdmissionBody<B>> {
        let reason = self.to_string();
        if grpc {
            let code = match self.unavailable() {
                true => GRPC_UNAVAILABLE,
                false => GRPC_DEADLINE_EXCEEDED,
            };
            let mut response = Response::new(AdmissionBody::empty());
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(GRPC_STATUS, HeaderValue::from_static(code));
            // Printable ASCII without '%' (see `Display`): a valid, unescaped grpc-message.
            if let Ok(message) = HeaderValue::from_str(&reason) {
                headers.insert(GRPC_MESSAGE, message);
            }
            return response;
        }
        let mut response = Response::new(AdmissionBody::text(format!("{reason}\n")));
        *response.status_mut() = match self.unavailable() {
            true => StatusCode::SERVICE_UNAVAILABLE,
            false => StatusCode::GATEWAY_TIMEOUT,
        };
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// Milliseconds, in ASCII (`Duration`'s `Debug` writes `µs`, which a gRPC message would
/// have to percent-encode).
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}ms", self.0.as_secs_f64() * 1e3)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = |queued: bool| match queued {
            true => "while it waited for the service",
            false => "before it reached the service",
        };
        match *self {
            Reject::Shed => f.write_str("overloaded: too many requests waiting, try again later"),
            Reject::Cancelled { queued } => write!(f, "request cancelled {}", when(queued)),
            Reject::Expired { queued } => write!(f, "deadline exceeded {}", when(queued)),
            Reject::TooShort { left, needed } => write!(
                f,
                "deadline cannot be met: {} left, requests need at least {}",
                Millis(left),
                Millis(needed)
            ),
        }
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_UNAVAILABLE: &str = "14";
const GRPC_DEADLINE_EXCEEDED: &str = "4";

/// Whether `request` is a gRPC call (`content-type: application/grpc`, `+proto`, ...).
pub(super) fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pin_project_lite::pin_project! {
    /// The response body of [`AdmissionService`](super::AdmissionService): the service's
    /// own body, or the layer's answer (a short text, or nothing for a gRPC status, whose
    /// response then ends with its headers).
    ///
    /// It is an [`http_body::Body`] whenever the service's body is one with `Bytes` data
    /// (axum's, tonic's, hyper's, `String`), and converts from a `String` (what
    /// [`ContextLayer`](crate::http::ContextLayer) answers with), so the layer composes
    /// under `ContextLayer`, under [`grpc::ServerLayer`](crate::http::grpc::ServerLayer)
    /// and in an axum `Router`.
    pub struct AdmissionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        /// The service's body.
        Inner { #[pin] body: B },
        /// The layer's text (`None` once sent, or for a gRPC status).
        Answer { text: Option<Bytes> },
    }
}

impl<B> AdmissionBody<B> {
    /// The service's own body.
    pub fn inner(body: B) -> AdmissionBody<B> {
        AdmissionBody {
            kind: Kind::Inner { body },
        }
    }

    /// An empty body.
    pub fn empty() -> AdmissionBody<B> {
        AdmissionBody {
            kind: Kind::Answer { text: None },
        }
    }

    /// A body of `text`.
    pub fn text(text: impl Into<String>) -> AdmissionBody<B> {
        let text: String = text.into();
        AdmissionBody {
            kind: Kind::Answer {
                text: (!text.is_empty()).then(|| Bytes::from(text)),
            },
        }
    }

    /// The service's body; `None` if the layer answered (or for [`empty`](Self::empty)
    /// and [`text`](Self::text)).
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Answer { .. } => None,
        }
    }
}

impl<B> Default for AdmissionBody<B> {
    fn default() -> AdmissionBody<B> {
        AdmissionBody::empty()
    }
}

impl<B> From<String> for AdmissionBody<B> {
    fn from(text: String) -> AdmissionBody<B> {
        AdmissionBody::text(text)
    }
}

impl<B> Body for AdmissionBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Answer { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Answer { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Answer { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

impl<B> fmt::Debug for AdmissionBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("AdmissionBody(inner)"),
            Kind::Answer { text } => f.debug_tuple("AdmissionBody").field(text).finish(),
        }
    }
}
