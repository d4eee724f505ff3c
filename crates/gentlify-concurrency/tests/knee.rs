//! The knee estimator through the public API: a server that slows down with load.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Aimd};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};

/// A server with a concurrency cap `cap` (429 above it) whose latency is a base that varies
/// from call to call (1 s to 4 s: answers of different lengths) times `1 + knee × (n / cap)^4`
/// with `n` in flight: the simulator's queueing knee. Throughput peaks near 0.76 × cap.
/// Returns the completed requests after `run` of `workers` closed-loop callers.
async fn run(layer: AdaptiveConcurrencyLayer, cap: usize, knee: f64, run: Duration) -> u64 {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let server = {
        let in_flight = in_flight.clone();
        service_fn(move |_req: http::Request<String>| {
            let in_flight = in_flight.clone();
            let call = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                if n > cap {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let resp = http::Response::builder()
                        .status(429)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    return Ok::<_, Infallible>(resp);
                }
                let base = 1.0 + (call.wrapping_mul(7919) % 31) as f64 / 10.0;
                let u = n as f64 / cap as f64;
                let latency = base * (1.0 + knee * u.powi(4));
                tokio::time::sleep(Duration::from_secs_f64(latency)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let service = layer.layer(server);
    let done = Arc::new(AtomicU64::new(0));
    let end = tokio::time::Instant::now() + run;
    let mut workers = Vec::new();
    for _ in 0..(3 * cap) {
        let service = service.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < end {
                let resp = service
                    .clone()
                    .oneshot(http::Request::new(String::new()))
                    .await;
                let Ok(resp) = resp else { continue };
                let ok = resp.status() == 200;
                let _ = resp.into_body().collect().await;
                if ok && tokio::time::Instant::now() < end {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

/// Pacing jitter draws from fastrand's thread-local generator: both runs of a comparison start
/// from the same seed, so a test's figures are the same on every machine and every run (unseeded,
/// the knee's margin moved between 2.5 % and 4.2 %).
fn seeded(seed: u64) {
    fastrand::seed(seed);
}

fn layer(knee: bool) -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .aimd(Aimd::new().knee(knee))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_limit_holds_under_the_latency_knee_and_serves_more() {
    let minutes = Duration::from_secs(600);
    seeded(1);
    let served_with = run(layer(true), 40, 1.0, minutes).await;
    seeded(1);
    let served_without = run(layer(false), 40, 1.0, minutes).await;
    // Past the knee (0.76 × 40 ≈ 30) the server serves less: the knee holds the limit below
    // the cap (probing above it after each relaxation period), and serves more than the
    // overload-only controller, which sits at the cap.
    // Seeds 1-8 give 1.031-1.042; the overload-only controller against itself gives 1.000.
    assert!(
        served_with as f64 > served_without as f64 * 1.02,
        "{served_with} served with the knee, {served_without} without"
    );
}

#[tokio::test(start_paused = true)]
async fn flat_latency_keeps_the_limit_at_the_cap() {
    // A hosted API: latency follows the answer only. The knee must not hold the limit down.
    let minutes = Duration::from_secs(600);
    seeded(1);
    let served_with = run(layer(true), 40, 0.0, minutes).await;
    seeded(1);
    let served_without = run(layer(false), 40, 0.0, minutes).await;
    assert!(
        served_with as f64 >= served_without as f64 * 0.97,
        "{served_with} served with the knee, {served_without} without"
    );
}
