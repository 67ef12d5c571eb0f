//! What both server layers ([`ContextLayer`](super::ContextLayer) for HTTP,
//! [`grpc::ServerLayer`](super::grpc::ServerLayer) for tonic) do when a request arrives: its
//! context under the server's root, with the deadline its `grpc-timeout` asks for (capped, or
//! defaulted), and the trusted entries of its `baggage`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::request::Parts;

use super::baggage::{BAGGAGE_NAME, BaggageKeys, BaggageReport};
use super::grpc_timeout::{
    GRPC_TIMEOUT_NAME, InvalidTimeout, parse_grpc_timeout, remaining_budget,
};
use crate::{CancelScope, Cause, Context};

/// A function that adds per-request values to a request's context (see
/// [`ContextLayer::with_values`](super::ContextLayer::with_values)).
pub(super) type ValuesFn = Arc<dyn Fn(&Parts, Context) -> Context + Send + Sync>;

/// The functions given to `with_values`, applied in order.
#[derive(Clone, Default)]
pub(super) struct Values(pub(super) Vec<ValuesFn>);

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Values({})", self.0.len())
    }
}

/// A server layer's settings.
#[derive(Clone, Debug)]
pub(super) struct ServerConfig {
    pub(super) root: Context,
    /// The timeout of a request that sends no `grpc-timeout`.
    pub(super) default_timeout: Option<Duration>,
    /// The longest timeout a request may ask for; `default_timeout` when unset.
    pub(super) max_timeout: Option<Duration>,
    /// The `baggage` keys accepted from clients; none by default (the header is ignored).
    pub(super) baggage: BaggageKeys,
    /// Per-request values added to each context.
    pub(super) values: Values,
}

/// Why a request was answered by the layer instead of its service.
#[derive(Debug)]
pub(super) enum Refused {
    /// A malformed `grpc-timeout`.
    Malformed(InvalidTimeout),
    /// No budget left on arrival: the context is done or its deadline has passed (a
    /// `grpc-timeout` of zero, a root that expired or was cancelled at shutdown). The
    /// request's context ended with this error and cause.
    NoBudget(crate::Error, Option<Cause>),
}

/// A request's context: the scope that ends it, and the context its handler sees (the
/// scope's, with the request's trusted baggage values).
pub(super) struct RequestContext {
    pub(super) scope: CancelScope,
    pub(super) ctx: Context,
}

impl ServerConfig {
    pub(super) fn new(root: &Context) -> ServerConfig {
        ServerConfig {
            root: root.clone(),
            default_timeout: None,
            max_timeout: None,
            baggage: BaggageKeys::new(),
            values: Values::default(),
        }
    }

    /// The longest budget a request may have: `max_timeout`, else `default_timeout` (a
    /// server that sets only a default never grants more than it).
    fn cap(&self) -> Option<Duration> {
        self.max_timeout.or(self.default_timeout)
    }

    /// Derives `request`'s context and puts it (and a [`BaggageReport`], if the request
    /// carried trusted-layer baggage) in its extensions; `Err` for a malformed
    /// `grpc-timeout` or a request with no budget left, which the caller answers in its
    /// protocol's way without calling its service.
    pub(super) fn begin<B>(
        &self,
        mut request: Request<B>,
    ) -> Result<(Request<B>, RequestContext), Refused> {
        let asked = match request.headers().get(GRPC_TIMEOUT_NAME) {
            None => None,
            Some(value) => Some(parse_grpc_timeout(value.as_bytes()).map_err(Refused::Malformed)?),
        };
        let timeout = match (asked.or(self.default_timeout), self.cap()) {
            (Some(t), Some(cap)) => Some(t.min(cap)),
            (t, _) => t,
        };
        let scope = match timeout {
            Some(t) => self.root.with_timeout(t),
            None => self.root.with_cancel(),
        };
        if let Err(err) = remaining_budget(scope.context()) {
            // Ended already (or its deadline passed, which the driver may not have seen yet):
            // ending it here gives it that error rather than a plain cancel.
            let err = scope.err().unwrap_or(err);
            let cause = scope.cause().filter(|_| err == crate::Error::Cancelled);
            return Err(Refused::NoBudget(err, cause));
        }
        let baggage = match self.baggage.is_empty() {
            true => None, // not trusted: not even looked up
            false => request.headers().get(BAGGAGE_NAME),
        };
        let ctx = match baggage {
            Some(header) => {
                let (ctx, report) = match header.to_str() {
                    Ok(header) => self.baggage.decode(scope.context(), header),
                    Err(_) => (scope.context().clone(), BaggageReport::not_text()),
                };
                request.extensions_mut().insert(report);
                ctx
            }
            _ => scope.context().clone(),
        };
        let ctx = match self.values.0.is_empty() {
            true => ctx,
            false => {
                let (parts, body) = request.into_parts();
                let ctx = self.values.0.iter().fold(ctx, |ctx, f| f(&parts, ctx));
                request = Request::from_parts(parts, body);
                ctx
            }
        };
        request.extensions_mut().insert(ctx.clone());
        Ok((request, RequestContext { scope, ctx }))
    }
}
