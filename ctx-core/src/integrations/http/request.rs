//! What both server layers ([`ContextLayer`](super::ContextLayer) for HTTP,
//! [`grpc::ServerLayer`](super::grpc::ServerLayer) for tonic) do when a request arrives: its
//! context under the server's root, with the deadline its `grpc-timeout` asks for (capped, or
//! defaulted), and the trusted entries of its `baggage`.

use std::fmt;
use std::ops::Deref;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::request::Parts;

use super::ClientDisconnected;
use super::baggage::BaggageKeys;
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
    /// The user's line that built the layer: where a request's deadline was set and where
    /// a disconnect ended it, as [`Cause::location`] reports them (never a file of ctx).
    pub(super) built_at: &'static Location<'static>,
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
    pub(super) scope: RequestScope,
    pub(super) ctx: Context,
}

/// A request's cancel scope, and the line that built its layer (`ServerConfig::built_at`).
/// Dropping it ends the request as completed (a plain cancel).
#[derive(Debug)]
pub(super) struct RequestScope {
    scope: CancelScope,
    built_at: &'static Location<'static>,
}

impl RequestScope {
    /// Ends the request because its client went away (before the response, or mid-body).
    pub(super) fn disconnected(self) {
        let cause = Cause::from_error(ClientDisconnected);
        self.scope.cancel_with_at(cause, self.built_at);
    }
}

impl Deref for RequestScope {
    type Target = CancelScope;

    fn deref(&self) -> &CancelScope {
        &self.scope
    }
}

impl ServerConfig {
    pub(super) fn new(root: &Context, built_at: &'static Location<'static>) -> ServerConfig {
        ServerConfig {
            root: root.clone(),
            built_at,
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

    /// Derives `request`'s context and puts it (and a [`BaggageReport`](super::baggage::BaggageReport), if the request
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
            Some(t) => self.root.with_timeout_at(t, self.built_at),
            None => self.root.with_cancel_at(self.built_at),
        };
        let scope = RequestScope {
            scope,
            built_at: self.built_at,
        };
        if let Err(err) = remaining_budget(scope.context()) {
            // Ended already (or its deadline passed, which the driver may not have seen yet):
            // ending it here gives it that error rather than a plain cancel.
            let err = scope.err().unwrap_or(err);
            let cause = scope.cause().filter(|_| err == crate::Error::Cancelled);
            return Err(Refused::NoBudget(err, cause));
        }
        let ctx = match self.baggage.is_empty() {
            true => scope.context().clone(), // not trusted: not even looked up
            // Every `baggage` header, combined as one list (W3C allows several).
            false => match self
                .baggage
                .decode_headers(scope.context(), request.headers())
            {
                Some((ctx, report)) => {
                    request.extensions_mut().insert(report);
                    ctx
                }
                None => scope.context().clone(),
            },
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
