//! Permits taken and given back without the limiter's lock (while nobody waits): what the lock
//! would have done still happens, in the same order.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{finish, request, Streamed};
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Aimd, Pacing};
use gentlify_core::Class;
use http_body_util::{BodyExt, Either, Full};
use tokio::time::advance;
use tower::{service_fn, Layer, Service, ServiceExt};

/// Sends `n` requests at once through `service`; returns their responses, bodies unread.
async fn send_together<S>(service: &S, n: usize) -> Vec<S::Response>
where
    S: Service<http::Request<String>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: std::fmt::Debug + Send,
{
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(request(&i.to_string())).await.unwrap() })
        })
        .collect();
    let mut responses = Vec::new();
    for call in calls {
        responses.push(call.await.unwrap());
    }
    responses
}

#[tokio::test(start_paused = true)]
async fn a_body_given_back_without_the_lock_still_holds_off_growth_for_its_length() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(1)
        .max(16)
        .aimd(Aimd::new().knee(false))
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    // Heads after 300 ms; the first answer streams its body for 10 s, the others are whole.
    let sent = Arc::new(AtomicUsize::new(0));
    let service = layer.layer(service_fn(move |_: http::Request<String>| {
        let first = sent.fetch_add(1, Ordering::Relaxed) == 0;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let body = if first {
                Either::Left(Streamed::new(Duration::from_secs(10)))
            } else {
                Either::Right(Full::new(Bytes::from("whole")))
            };
            Ok::<_, Infallible>(http::Response::new(body))
        }
    }));

    // One streamed answer: its body holds the permit 10 s after the head, read as it streams.
    // Slow start doubles the limit on its head; the permit then comes back with nobody waiting
    // (no lock).
    let first = send_together(&service, 1).await;
    assert_eq!(layer.snapshot().limit, 2);
    let reading: Vec<_> = first.into_iter().map(|r| tokio::spawn(finish(r))).collect();
    advance(Duration::from_secs(10)).await;
    for reading in reading {
        reading.await.unwrap();
    }
    // A round trip at 2, well past 10 s after the change: growth to 4.
    for response in send_together(&service, 2).await {
        finish(response).await;
    }
    assert_eq!(layer.snapshot().limit, 4);
    // A round trip at 4 right after that change: the bodies' holding time (about 8 s after
    // two instant bodies) has not passed since it, so the limit holds. Without the first
    // body's time it would double again.
    for response in send_together(&service, 4).await {
        finish(response).await;
    }
    assert_eq!(layer.snapshot().limit, 4);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permits_taken_and_given_back_on_many_threads_never_exceed_the_limit() {
    const LIMIT: usize = 3;
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(LIMIT)
        .min(LIMIT)
        .max(LIMIT)
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    let (calls, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let upstream = {
        let (calls, peak) = (Arc::clone(&calls), Arc::clone(&peak));
        service_fn(move |_: http::Request<String>| {
            let (calls, peak) = (Arc::clone(&calls), Arc::clone(&peak));
            async move {
                // From the call to its answer, within the permit's life.
                let now = calls.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                calls.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let service = layer.layer(upstream);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let mut service = service.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    let response = service
                        .ready()
                        .await
                        .unwrap()
                        .call(request("r"))
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= LIMIT);
    let snapshot = layer.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.waiting), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_success_heard_without_the_lock_still_breaks_a_run_of_failures() {
    let feedback = gentlify_core::Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(8)
        .failure_threshold(0.5)
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    let sent = tokio::time::Instant::now();
    advance(Duration::from_millis(100)).await;
    // Nothing in flight, the limit never filled: the success is heard without the lock, and
    // applied, in its place, by the failure after it.
    for class in [
        Class::Failure,
        Class::Failure,
        Class::Success,
        Class::Failure,
    ] {
        common::publish(&feedback, class, sent);
    }
    assert_eq!(
        layer.snapshot().decelerations,
        0,
        "no three failures in a row"
    );
    // Two more make three in a row: a storm, which decelerates.
    common::publish(&feedback, Class::Failure, sent);
    common::publish(&feedback, Class::Failure, sent);
    assert_eq!(layer.snapshot().decelerations, 1);
}
