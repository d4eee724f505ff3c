//! In virtual time, against an upstream that accepts at most C requests at once and answers
//! 429 beyond: the limit converges near C and follows capacity steps.
//!
//! Run with `--nocapture` to see the figures of each phase.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gentlify_concurrency::AdaptiveConcurrencyLayer;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const LATENCY: Duration = Duration::from_secs(1);
const REJECT_LATENCY: Duration = Duration::from_millis(20);

#[derive(Clone, Default)]
struct Server {
    capacity: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    ok: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    /// Peak of attempted concurrency (in flight + the arrival) per phase, reset by the test.
    peak: Arc<AtomicUsize>,
}

impl Service<http::Request<()>> for Server {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<()>) -> Self::Future {
        let server = self.clone();
        let attempted = self.in_flight.load(Ordering::SeqCst) + 1;
        self.peak.fetch_max(attempted, Ordering::SeqCst);
        let accepted = attempted <= self.capacity.load(Ordering::SeqCst);
        if accepted {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async move {
            if accepted {
                tokio::time::sleep(LATENCY).await;
                server.in_flight.fetch_sub(1, Ordering::SeqCst);
                server.ok.fetch_add(1, Ordering::SeqCst);
                Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            } else {
                tokio::time::sleep(REJECT_LATENCY).await;
                server.rejected.fetch_add(1, Ordering::SeqCst);
                Ok(http::Response::builder()
                    .status(429)
                    .body(Full::new(Bytes::new()))
                    .unwrap())
            }
        })
    }
}

struct Phase {
    capacity: usize,
    mean_limit: f64,
    goodput_ratio: f64,
    rejects_per_1000: f64,
    peak_ratio: f64,
}

#[tokio::test(start_paused = true)]
async fn the_limit_converges_near_capacity_and_follows_its_steps() {
    let server = Server::default();
    let layer = AdaptiveConcurrencyLayer::new(); // the defaults, as a user gets them
    let service = layer.layer(server.clone());
    let stop = Arc::new(AtomicBool::new(false));

    // A closed loop of 120 callers, far more than any capacity below: the limiter, not the
    // sender, bounds the load.
    let mut workers = Vec::new();
    for _ in 0..120 {
        let service = service.clone();
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = service
                    .clone()
                    .oneshot(http::Request::new(()))
                    .await
                    .unwrap();
                response.into_body().collect().await.unwrap();
            }
        }));
    }

    // Capacity steps: 20, up to 40, down to 10; 300 s each. Measured over the last 100 s.
    const PHASE: u64 = 300;
    const MEASURE: u64 = 100;
    let mut phases = Vec::new();
    let limits = Arc::new(Mutex::new(Vec::new()));
    for capacity in [20usize, 40, 10] {
        server.capacity.store(capacity, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(PHASE - MEASURE)).await;
        let (ok0, rej0) = (
            server.ok.load(Ordering::SeqCst),
            server.rejected.load(Ordering::SeqCst),
        );
        server.peak.store(0, Ordering::SeqCst);
        limits.lock().unwrap().clear();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(MEASURE) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            limits.lock().unwrap().push(layer.snapshot().limit_exact);
        }
        let ok = server.ok.load(Ordering::SeqCst) - ok0;
        let rejected = server.rejected.load(Ordering::SeqCst) - rej0;
        let samples = limits.lock().unwrap();
        let oracle = capacity as f64 * MEASURE as f64 / LATENCY.as_secs_f64();
        phases.push(Phase {
            capacity,
            mean_limit: samples.iter().sum::<f64>() / samples.len() as f64,
            goodput_ratio: ok as f64 / oracle,
            rejects_per_1000: rejected as f64 * 1000.0 / (ok + rejected) as f64,
            peak_ratio: server.peak.load(Ordering::SeqCst) as f64 / capacity as f64,
        });
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    for p in &phases {
        println!(
            "C = {:>2}: mean limit {:5.1} ({:.2} × C), goodput {:.3} × oracle, {:5.1} 429s per 1000 attempts, peak attempted concurrency {:.2} × C",
            p.capacity,
            p.mean_limit,
            p.mean_limit / p.capacity as f64,
            p.goodput_ratio,
            p.rejects_per_1000,
            p.peak_ratio,
        );
    }
    for p in &phases {
        let c = p.capacity as f64;
        assert!(
            (0.75 * c..=1.25 * c).contains(&p.mean_limit),
            "C = {}: mean limit {}",
            p.capacity,
            p.mean_limit
        );
        assert!(
            p.goodput_ratio >= 0.85,
            "C = {}: goodput {}",
            p.capacity,
            p.goodput_ratio
        );
        assert!(
            p.rejects_per_1000 <= 20.0,
            "C = {}: {} 429s/1000",
            p.capacity,
            p.rejects_per_1000
        );
        assert!(
            p.peak_ratio <= 1.25,
            "C = {}: peak {} × C",
            p.capacity,
            p.peak_ratio
        );
    }
}
