//! What both server layers ([`ContextLayer`](super::ContextLayer) for HTTP,
//! [`grpc::ServerLayer`](super::grpc::ServerLayer) for tonic) do when a request arrives: its
//! context under the server's root, with the deadline its `grpc-timeout` asks for (capped, or
//! defaulted), and the trusted entries of its `baggage`.

use std::time::Duration;

use http::Request;

use super::baggage::{BAGGAGE_NAME, BaggageKeys, BaggageReport};
use super::grpc_timeout::{GRPC_TIMEOUT_NAME, InvalidTimeout, parse_grpc_timeout};
use crate::{CancelScope, Context};

/// A server layer's settings.
#[derive(Clone, Debug)]
pub(super) struct ServerConfig {
    pub(super) root: Context,
    /// The timeout of a request that sends no `grpc-timeout`.
    pub(super) default_timeout: Option<Duration>,
    /// The longest timeout a request may ask for.
    pub(super) max_timeout: Option<Duration>,
    /// The `baggage` keys accepted from clients; none by default (the header is ignored).
    pub(super) baggage: BaggageKeys,
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
        }
    }

    /// Derives `request`'s context and puts it (and a [`BaggageReport`], if the request
    /// carried trusted-layer baggage) in its extensions; `Err` for a malformed
    /// `grpc-timeout`, which the caller answers in its protocol's way.
    pub(super) fn begin<B>(
        &self,
        request: &mut Request<B>,
    ) -> Result<RequestContext, InvalidTimeout> {
        let asked = match request.headers().get(GRPC_TIMEOUT_NAME) {
            None => None,
            Some(value) => Some(parse_grpc_timeout(value.as_bytes())?),
        };
        let timeout = match (asked.or(self.default_timeout), self.max_timeout) {
            (Some(t), Some(max)) => Some(t.min(max)),
            (t, _) => t,
        };
        let scope = match timeout {
            Some(t) => self.root.with_timeout(t),
            None => self.root.with_cancel(),
        };
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
        request.extensions_mut().insert(ctx.clone());
        Ok(RequestContext { scope, ctx })
    }
}
