//! Permits that wait below the limiter (in a token budget, say) are not on the wire: a limit
//! they fill while nothing more is sent does not grow.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gentlify_concurrency::AdaptiveConcurrencyLayer;
use gentlify_core::{Class, Feedback, Slot};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

/// A closed loop of 40 callers through the limiter, over a layer that lets one request through
/// per `spacing` (a token budget at 4 requests per second), dispatches it there, and answers
/// after a second. On the wire: about 4. Returns the limit after `run`.
async fn limit_after(spacing: Duration, run: Duration) -> usize {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(4)
        .max(64)
        .build()
        .unwrap();
    let next = Arc::new(Mutex::new(Instant::now()));
    let budget = {
        let feedback = feedback.clone();
        service_fn(move |req: http::Request<String>| {
            let (feedback, next) = (feedback.clone(), Arc::clone(&next));
            async move {
                let at = {
                    let mut next = next.lock().unwrap();
                    let at = (*next).max(Instant::now());
                    *next = at + spacing;
                    at
                };
                tokio::time::sleep_until(at).await;
                let slot = Slot::from_extensions(req.extensions()).unwrap().clone();
                let dispatched = slot.dispatch_at(&feedback, Instant::now());
                tokio::time::sleep(Duration::from_secs(1)).await;
                dispatched.publish(Class::Success);
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let service = layer.layer(budget);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..40 {
        let (service, stop) = (service.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = service
                    .clone()
                    .oneshot(http::Request::new(String::new()))
                    .await
                    .unwrap();
                response.into_body().collect().await.unwrap();
            }
        }));
    }
    tokio::time::sleep(run).await;
    let limit = layer.snapshot().limit;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    limit
}

#[tokio::test(start_paused = true)]
async fn a_limit_filled_by_requests_waiting_below_it_does_not_grow() {
    // About 4 on the wire; 40 callers fill any limit with requests waiting in the budget.
    let limit = limit_after(Duration::from_millis(250), Duration::from_secs(120)).await;
    assert!(limit <= 16, "limit {limit} with about 4 on the wire");
}

#[tokio::test(start_paused = true)]
async fn without_a_wait_below_the_limit_grows_to_the_callers() {
    let limit = limit_after(Duration::ZERO, Duration::from_secs(120)).await;
    assert!(
        limit >= 40,
        "limit {limit} with 40 callers and nothing below"
    );
}
