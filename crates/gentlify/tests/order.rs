//! A retry keeps its request's permit, whatever the order of the layers: with a concurrency limit
//! of 1, the upstream sees A's retry before B's first attempt.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use common::{drain, id_and_attempt, request, response, Seen};
use gentlify::prelude::*;
use gentlify::retry::Backoff;
use gentlify::BoxError;
use http_body::Body;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// Takes 100 ms per attempt and fails A's first attempt with a 500.
fn upstream(
    seen: Seen,
) -> impl Service<
    http::Request<String>,
    Response = common::Response,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    service_fn(move |request: http::Request<String>| {
        let (id, attempt) = id_and_attempt(&request);
        seen.push(format!("{id}{}", attempt + 1));
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Infallible>(if id == "A" && attempt == 0 {
                response(500, "boom")
            } else {
                response(200, "ok")
            })
        }
    })
}

/// Sends A, lets it take the only permit, then sends B; both read to their end.
async fn a_then_b<S, B>(client: S)
where
    S: Service<http::Request<String>, Response = http::Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    let a = tokio::spawn({
        let client = client.clone();
        async move {
            let response = client.oneshot(request("A")).await.unwrap();
            assert_eq!(response.status(), 200, "A's retry succeeded");
            drain(response).await;
        }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let b = tokio::spawn(async move {
        drain(client.oneshot(request("B")).await.unwrap()).await;
    });
    a.await.unwrap();
    b.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_in_the_recommended_order_keeps_the_permit() {
    let seen = Seen::default();
    let throttle = Throttle::new()
        .concurrency(|c| c.initial(1).min(1).max(1))
        .retry(|r| r.backoff(Backoff::constant(Duration::from_millis(50))))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(upstream(seen.clone()));
    a_then_b(client).await;
    assert_eq!(seen.list(), ["A1", "A2", "B1"]);
    assert_eq!(throttle.feedback().open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn retry_outside_the_concurrency_layer_keeps_the_permit() {
    let seen = Seen::default();
    let feedback = Feedback::new();
    let client = ServiceBuilder::new()
        .gentle_retry(
            RetryLayer::builder()
                .feedback(feedback.clone())
                .backoff(Backoff::constant(Duration::from_millis(50)))
                .build()
                .unwrap(),
        )
        .adaptive_concurrency(
            AdaptiveConcurrencyLayer::builder()
                .feedback(feedback.clone())
                .initial(1)
                .min(1)
                .max(1)
                .build()
                .unwrap(),
        )
        .service(upstream(seen.clone()));
    a_then_b(client).await;
    assert_eq!(seen.list(), ["A1", "A2", "B1"]);
    assert_eq!(feedback.open_slots(), 0);
}

/// The control: with tower's own `ConcurrencyLimit` under a retry, the permit is given back
/// between attempts and B gets in between A's two attempts. (Shows the two tests above can fail.)
#[tokio::test(start_paused = true)]
async fn without_the_slot_b_gets_in_between() {
    let seen = Seen::default();
    let feedback = Feedback::new();
    let client = ServiceBuilder::new()
        .gentle_retry(
            RetryLayer::builder()
                .feedback(feedback.clone())
                .backoff(Backoff::constant(Duration::from_millis(50)))
                .build()
                .unwrap(),
        )
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(upstream(seen.clone()));
    a_then_b(client).await;
    assert_eq!(seen.list(), ["A1", "B1", "A2"]);
}
