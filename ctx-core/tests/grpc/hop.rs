//! A `Relay` hop for the gRPC tests (the same behaviour as the `relay` example), served by
//! tonic behind `ServerLayer`, its upstream called through `ClientLayer`, reporting what its
//! handlers saw.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use ctx_core::http::grpc::{ClientLayer, ClientService, ServerLayer};
use ctx_core::{CancelHandle, Context, Error};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub mod pb {
    include!("relay.v1.rs");
}

use pb::relay_client::RelayClient;
use pb::relay_server::{Relay, RelayServer};
use pb::{HopReply, HopRequest};

/// What a handler saw.
#[derive(Clone, Debug)]
pub enum Event {
    /// A handler started with this budget (`None`: no deadline).
    Started(Option<Duration>),
    /// A handler's future was dropped (it ended, or was cut) while its context was in this
    /// state: its error and the cause's text.
    Ended(Option<Error>, Option<String>),
}

/// The channel of a client that sends through `ClientLayer`.
pub type Layered = ClientService<Channel>;

pub struct Hop {
    name: String,
    upstream: Option<RelayClient<Layered>>,
    events: mpsc::UnboundedSender<Event>,
}

/// Sends `Ended` with the context's state when the handler's future goes away.
struct EndGuard(Context, mpsc::UnboundedSender<Event>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let cause = self.0.cause().map(|c| c.to_string());
        let _ = self.1.send(Event::Ended(self.0.err(), cause));
    }
}

fn budget(ctx: &Context) -> Option<Duration> {
    ctx.deadline()
        .map(|d| d.saturating_duration_since(Instant::now()))
}

fn budget_ms(budget: Option<Duration>) -> i64 {
    budget.map_or(-1, |b| b.as_millis() as i64)
}

#[tonic::async_trait]
impl Relay for Hop {
    async fn forward(&self, request: Request<HopRequest>) -> Result<Response<HopReply>, Status> {
        let ctx = Context::current();
        assert!(
            request.extensions().get::<Context>().is_some(),
            "the layer puts the context in the request's extensions"
        );
        let seen = budget(&ctx);
        let _ = self.events.send(Event::Started(seen));
        let _guard = EndGuard(ctx.clone(), self.events.clone());
        let request = request.into_inner();
        ctx.run(tokio::time::sleep(Duration::from_millis(
            request.work_ms.into(),
        )))
        .await?;
        let upstream = match (request.rest, &self.upstream) {
            (Some(rest), Some(client)) => {
                let reply = client.clone().forward(Request::new(*rest)).await?;
                Some(Box::new(reply.into_inner()))
            }
            _ => None,
        };
        Ok(Response::new(HopReply {
            hop: self.name.clone(),
            budget_ms: budget_ms(seen),
            upstream,
            seq: 0,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HopReply, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HopRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let ctx = Context::current();
        let seen = budget(&ctx);
        let _ = self.events.send(Event::Started(seen));
        let request = request.into_inner();
        let name = self.name.clone();
        let guard = EndGuard(ctx, self.events.clone());
        let every = Duration::from_millis(request.work_ms.into());
        // Deliberately not context-aware: the layer must cut it.
        let stream = futures::stream::unfold(0u32, move |seq| {
            let name = name.clone();
            async move {
                if seq >= request.count {
                    return None;
                }
                tokio::time::sleep(every).await;
                let reply = HopReply {
                    hop: name,
                    budget_ms: budget_ms(seen),
                    upstream: None,
                    seq,
                };
                Some((Ok(reply), seq + 1))
            }
        });
        let stream = futures::StreamExt::map(stream, move |item| {
            let _ = &guard;
            item
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A running hop.
pub struct Server {
    pub addr: SocketAddr,
    pub events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    shutdown: Option<CancelHandle>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Server {
    /// Serves a hop named `name` under `layer` (`None`: a bare tonic server), calling
    /// `upstream` for `rest`.
    pub async fn start(
        name: &str,
        layer: Option<fn(&Context) -> ServerLayer>,
        upstream: Option<String>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, rx) = mpsc::unbounded_channel();
        let hop = Hop {
            name: name.to_string(),
            upstream: upstream.map(|url| layered_client(&url)),
            events,
        };
        let (root, shutdown) = Context::background().with_cancel().into_parts();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let stop = {
            let root = root.clone();
            async move {
                root.done().await;
            }
        };
        let service = RelayServer::new(hop);
        let task = match layer {
            Some(layer) => tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(layer(&root))
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stop),
            ),
            None => tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stop),
            ),
        };
        Server {
            addr,
            events: tokio::sync::Mutex::new(rx),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next event, within `within`.
    pub async fn event(&self, within: Duration) -> Event {
        let mut events = self.events.lock().await;
        tokio::time::timeout(within, events.recv())
            .await
            .expect("an event in time")
            .expect("the hop is running")
    }

    /// Forgets the events so far (once the handlers they come from are done).
    pub async fn drain(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut events = self.events.lock().await;
        while events.try_recv().is_ok() {}
    }

    /// Cancels the root ("server shutting down") and waits for the server to drain.
    pub async fn shutdown(mut self, within: Duration) {
        self.shutdown
            .take()
            .unwrap()
            .cancel_with("server shutting down");
        tokio::time::timeout(within, self.task.take().unwrap())
            .await
            .expect("the server drains in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A client whose calls go through `ClientLayer` (the context of each call).
pub fn layered_client(url: &str) -> RelayClient<Layered> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_lazy();
    let authority = url.trim_start_matches("http://");
    RelayClient::new(
        tower::ServiceBuilder::new()
            .layer(ClientLayer::new().authority(authority))
            .service(channel),
    )
}

/// A plain tonic client (no layer).
pub fn plain_client(url: &str) -> RelayClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_lazy();
    RelayClient::new(channel)
}

/// A request for a chain of hops, each working `work_ms[i]`.
pub fn chain(work_ms: &[u32]) -> HopRequest {
    let mut request: Option<HopRequest> = None;
    for &work in work_ms.iter().rev() {
        request = Some(HopRequest {
            work_ms: work,
            rest: request.map(Box::new),
            count: 0,
        });
    }
    request.expect("at least one hop")
}

/// A raw HTTP/2 client: what it sends is what the server gets (tonic's `Channel` runs its own
/// `grpc-timeout` timer, which would answer before the server does).
pub type Raw = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

pub fn raw_client(url: &str) -> RelayClient<Raw> {
    // Without TCP_NODELAY a request's DATA frame waits for the ACK of its HEADERS (Nagle).
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    RelayClient::with_origin(client, url.parse().unwrap())
}

/// `request` with a raw `grpc-timeout` header.
pub fn with_timeout_header(request: HopRequest, value: &'static str) -> Request<HopRequest> {
    let mut request = Request::new(request);
    request
        .metadata_mut()
        .insert("grpc-timeout", value.parse().unwrap());
    request
}
