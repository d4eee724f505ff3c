//! A tonic gRPC client whose channel goes through the full gentlify stack, against a tonic
//! server on loopback that serves at most 4 calls at once and refuses the rest with
//! `RESOURCE_EXHAUSTED` and `grpc-retry-pushback-ms`.
//!
//! `cargo run -p gentlify-examples --example tonic_client` (about a second).
//!
//! What it takes to put a tonic `Channel` under gentlify:
//! - gentlify's default classifier reads gRPC: `RESOURCE_EXHAUSTED` is "overloaded" (retried
//!   after `grpc-retry-pushback-ms`, and the limit is cut), `UNAVAILABLE` and
//!   `DEADLINE_EXCEEDED` are failures, from the headers of a Trailers-Only response or from the
//!   trailers at the end of the stream;
//! - tonic's request body is a stream, not `Clone`: a [`ReplayBodyLayer`] outside the stack buffers
//!   it (up to a bound) so that a retry can send it again, and a `map_request` under the stack
//!   turns it back into tonic's body type for the channel;
//! - the token budget has nothing to estimate in a protobuf message: a [`FixedEstimate`] of zero
//!   tokens (each call still counts as one request against request limits, if any are set).
//!
//! The stubs come from `tonic-health` (the standard `grpc.health.v1.Health` service), so nothing
//! here needs `protoc`; a client generated from your own `.proto` is wrapped the same way.

use std::time::Duration;

use gentlify::budget::{FixedEstimate, TokenCost};
use gentlify::concurrency::Pacing;
use gentlify::retry::{Backoff, ReplayBody, ReplayBodyLayer};
use gentlify::{BoxError, Throttle, ThrottleLayer};
use gentlify_examples::grpc::{GrpcServer, GrpcStats};
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;

/// The server's hidden cap on calls in service at once.
const CAP: usize = 4;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let report = run(200, 16).await?;
    println!("{report}");
    Ok(())
}

/// What a run did, client side and server side.
#[derive(Debug)]
struct Report {
    requests: usize,
    ok: usize,
    failed: Vec<String>,
    limit: usize,
    decelerations: u64,
    server: GrpcStats,
    snapshot: gentlify::Snapshot,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}/{} calls succeeded, {} failed; the limit settled at {} after {} cuts (the server's \
             hidden cap: {CAP})",
            self.ok,
            self.requests,
            self.failed.len(),
            self.limit,
            self.decelerations,
        )?;
        writeln!(
            f,
            "server: {} OK, {} RESOURCE_EXHAUSTED, at most {} in service at once",
            self.server.ok, self.server.resource_exhausted, self.server.peak_in_flight
        )?;
        write!(f, "{}", self.snapshot)
    }
}

/// The stack for a gRPC channel: retries after the server's pushback, an adaptive limit that
/// starts over the server's cap and finds it, and delays scaled to calls of tens of
/// milliseconds (the defaults are scaled to LLM calls of seconds).
fn throttle() -> Result<ThrottleLayer<FixedEstimate>, gentlify::ConfigError> {
    Throttle::new()
        .name("grpc-health")
        .concurrency(|c| {
            c.initial(8)
                .cooling(Duration::from_millis(200))
                .max_cooling(Duration::from_secs(1))
                .pacing(Pacing::new().max_interval(Duration::from_millis(20)))
        })
        .retry(|r| {
            r.max_attempts(20).backoff(Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_millis(200),
            ))
        })
        .estimate(FixedEstimate(TokenCost::default()))
        .build()
}

/// Sends `requests` health checks from `callers` tasks through the stack and reports.
async fn run(requests: usize, callers: usize) -> Result<Report, BoxError> {
    let server =
        GrpcServer::start(CAP, Duration::from_millis(20), Duration::from_millis(30)).await?;
    let channel = Endpoint::from_shared(server.uri())?.connect().await?;

    let throttle = throttle()?;
    let stack = ServiceBuilder::new()
        // Outside the retry layer: makes tonic's streamed body replayable (64 KiB at most).
        .layer(ReplayBodyLayer::new(64 * 1024))
        .layer(throttle.clone())
        .map_request(|request: http::Request<ReplayBody<tonic::body::Body>>| {
            request.map(tonic::body::Body::new)
        })
        .service(channel);
    let client = HealthClient::new(stack);

    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (mut client, next) = (client.clone(), next.clone());
        tasks.spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let call = client.check(HealthCheckRequest::default()).await;
                results.push(call.map(|_| ()).map_err(|status| status.to_string()));
            }
            results
        });
    }
    let (mut ok, mut failed) = (0, Vec::new());
    while let Some(results) = tasks.join_next().await {
        for result in results? {
            match result {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
    }
    Ok(Report {
        requests,
        ok,
        failed,
        limit: throttle.concurrency().limit,
        decelerations: throttle.concurrency().decelerations,
        server: server.stats(),
        snapshot: throttle.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real sockets, real time: a run takes about a second; nothing asserts a speed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tonic_channel_through_the_stack_loses_nothing_over_the_servers_cap() {
        let report = tokio::time::timeout(Duration::from_secs(60), run(80, 12))
            .await
            .expect("the run ends")
            .unwrap();
        let context = format!("{report}");
        assert!(report.failed.is_empty(), "{:?}\n{context}", report.failed);
        assert_eq!(report.ok, 80, "{context}");
        let (server, snapshot) = (report.server, &report.snapshot);
        assert!(server.resource_exhausted > 0, "the cap was hit: {context}");
        assert!(server.peak_in_flight <= CAP, "{context}");
        // Every attempt the server answered was heard, classified as the server answered it:
        // RESOURCE_EXHAUSTED from a Trailers-Only response's headers, OK from the trailers.
        assert_eq!(snapshot.attempts_success, server.ok, "{context}");
        assert_eq!(
            snapshot.attempts_overloaded, server.resource_exhausted,
            "{context}"
        );
        assert_eq!(snapshot.attempts_failure, 0, "{context}");
        assert_eq!(snapshot.open_slots, 0, "every slot ended: {context}");
        assert!(report.decelerations > 0, "the limit was cut: {context}");
    }
}
