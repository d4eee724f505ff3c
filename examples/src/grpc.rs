//! A gRPC service with a hidden concurrency cap, served by tonic on loopback: the gRPC
//! counterpart of the simulated LLM API, for the `tonic_client` example.
//!
//! It serves the standard health-checking service (`grpc.health.v1.Health`, whose client and
//! server stubs `tonic-health` ships pre-generated, so nothing here needs `protoc`). `Check`
//! takes a fixed time; a call that finds `cap` calls already in service is refused at once with
//! `RESOURCE_EXHAUSTED` and `grpc-retry-pushback-ms`, as a rate-limited gRPC API does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What the gRPC server saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcStats {
    /// Calls answered `OK`.
    pub ok: u64,
    /// Calls refused with `RESOURCE_EXHAUSTED` (over the hidden cap).
    pub resource_exhausted: u64,
    /// The most calls in service at once (never more than the cap, by construction).
    pub peak_in_flight: usize,
}

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    ok: AtomicU64,
    resource_exhausted: AtomicU64,
}

/// The health service with a hidden cap of `cap` calls in service at once.
#[derive(Debug, Clone)]
struct CappedHealth {
    cap: usize,
    service_time: Duration,
    pushback: Duration,
    counters: Arc<Counters>,
}

/// Gives the call's place in service back when the call ends, however it ends.
struct InService<'a>(&'a Counters);

impl Drop for InService<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[tonic::async_trait]
impl Health for CappedHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let counters = &*self.counters;
        let now = counters.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let _in_service = InService(counters);
        if now > self.cap {
            counters.resource_exhausted.fetch_add(1, Ordering::Relaxed);
            let mut metadata = MetadataMap::new();
            metadata.insert(
                "grpc-retry-pushback-ms",
                self.pushback
                    .as_millis()
                    .to_string()
                    .parse()
                    .expect("digits"),
            );
            return Err(Status::with_metadata(
                Code::ResourceExhausted,
                "too many calls in service",
                metadata,
            ));
        }
        counters.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        tokio::time::sleep(self.service_time).await;
        counters.ok.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("only Check is served"))
    }
}

/// The capped health service served by tonic on `127.0.0.1` (a free port), over HTTP/2.
/// The server stops when this is dropped.
#[derive(Debug)]
pub struct GrpcServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    /// Serves at most `cap` calls at once, each taking `service_time`; a call over the cap is
    /// refused with `RESOURCE_EXHAUSTED` and `grpc-retry-pushback-ms: <pushback>`.
    pub async fn start(
        cap: usize,
        service_time: Duration,
        pushback: Duration,
    ) -> std::io::Result<GrpcServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let health = CappedHealth {
            cap,
            service_time,
            pushback,
            counters: counters.clone(),
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(HealthServer::new(health))
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(GrpcServer {
            addr,
            counters,
            task,
        })
    }

    /// The server's URI, `http://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server saw so far.
    pub fn stats(&self) -> GrpcStats {
        let c = &self.counters;
        GrpcStats {
            ok: c.ok.load(Ordering::Relaxed),
            resource_exhausted: c.resource_exhausted.load(Ordering::Relaxed),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
