//! `Retry` over reqwest's own request and response types (the `reqwest` feature).

#![cfg(feature = "reqwest")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gentlify_core::Feedback;
use gentlify_retry::RetryLayer;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_reqwest_request_is_retried_after_the_servers_delay() {
    let feedback = Feedback::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let upstream = service_fn({
        let seen = seen.clone();
        move |request: reqwest::Request| {
            let mut seen = seen.lock().unwrap();
            seen.push((
                start.elapsed(),
                request.headers()["x-attempt"].clone(),
                request.headers()["idempotency-key"].clone(),
                request
                    .body()
                    .and_then(|b| b.as_bytes())
                    .map(<[u8]>::to_vec),
            ));
            let response = if seen.len() == 1 {
                http::Response::builder()
                    .status(429)
                    .header("retry-after-ms", "300")
                    .body("slow down")
            } else {
                http::Response::builder().status(200).body("answer")
            };
            std::future::ready(Ok::<_, Infallible>(reqwest::Response::from(
                response.unwrap(),
            )))
        }
    });
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .feedback(feedback.clone())
                .attempt_header(http::HeaderName::from_static("x-attempt"))
                .idempotency_header(http::HeaderName::from_static("idempotency-key"))
                .build()
                .unwrap(),
        )
        .service(upstream);

    let mut request = reqwest::Request::new(
        reqwest::Method::POST,
        "http://localhost/v1/chat/completions".parse().unwrap(),
    );
    *request.body_mut() = Some(reqwest::Body::from("{\"prompt\":\"hi\"}"));
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // Back to a reqwest response, for code that wants one.
    let response = reqwest::Response::from(response.map(reqwest::Body::wrap));
    assert_eq!(response.bytes().await.unwrap(), "answer");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0, Duration::from_millis(300));
    assert_eq!(
        (seen[0].1.as_bytes(), seen[1].1.as_bytes()),
        (&b"0"[..], &b"1"[..])
    );
    assert_eq!(
        seen[0].2, seen[1].2,
        "one idempotency key for both attempts"
    );
    assert_eq!(seen[1].3.as_deref(), Some(&b"{\"prompt\":\"hi\"}"[..]));
    let snapshot = feedback.snapshot();
    assert_eq!(
        (snapshot.attempts_overloaded, snapshot.attempts_success),
        (1, 1)
    );
    assert_eq!(feedback.open_slots(), 0);
}
