//! The event callback hears attempts, quotas, decelerations, pauses, breaker transitions and local
//! rejections.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{drain, request};
use gentlify::core::error::CircuitOpen;
use gentlify::{Event, Throttle};
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn on_event_hears_what_the_stack_does() {
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let throttle = Throttle::openai()
        .no_retry()
        // Refused at once (the presets wait while open), so that the rejection's event is heard.
        .breaker(|b| b.consecutive_failures(1).minimum_calls(100).fail_fast())
        .on_event({
            let events = events.clone();
            move |event: &Event<'_>| {
                let line = match event {
                    Event::Attempt(outcome) => format!("attempt {}", outcome.class.as_str()),
                    Event::Quota(report) => format!("quota {}", report.source),
                    Event::Deceleration { limit, .. } => format!("decelerate to {limit}"),
                    Event::Pause { .. } => "pause".to_owned(),
                    Event::Breaker(t) => format!("breaker {}", t.to),
                    Event::Rejected(error) => {
                        format!("rejected circuit_open={}", error.is::<CircuitOpen>())
                    }
                    _ => "other".to_owned(),
                };
                events.lock().unwrap().push(line);
            }
        })
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let client =
        ServiceBuilder::new()
            .layer(throttle.clone())
            .service(service_fn({
                let calls = calls.clone();
                move |_request: http::Request<String>| {
                    let response = match calls.fetch_add(1, Ordering::SeqCst) {
                        0 => http::Response::builder()
                            .status(200)
                            .header("x-ratelimit-remaining-requests", "59")
                            .header("x-ratelimit-reset-requests", "1s"),
                        1 => http::Response::builder()
                            .status(429)
                            .header("retry-after-ms", "500"),
                        _ => http::Response::builder().status(500),
                    };
                    async move {
                        Ok::<_, Infallible>(response.body(Full::new(Bytes::from("{}"))).unwrap())
                    }
                }
            }));

    for _ in 0..3 {
        drain(client.clone().oneshot(request("x")).await.unwrap()).await;
    }
    let error = client.oneshot(request("x")).await.unwrap_err();
    assert!(error.is::<CircuitOpen>());

    let events = events.lock().unwrap().clone();
    let at = |line: &str| {
        events
            .iter()
            .position(|e| e == line)
            .unwrap_or_else(|| panic!("no {line:?} in {events:?}"))
    };
    assert!(at("attempt success") < at("quota openai"), "{events:?}");
    // The default initial limit, 8, cut by 0.7.
    assert!(
        at("attempt overloaded") < at("decelerate to 5"),
        "{events:?}"
    );
    assert!(at("attempt overloaded") < at("pause"), "{events:?}");
    // The breaker hears the failure before the callback's own controller does.
    assert!(at("pause") < at("breaker open"), "{events:?}");
    at("attempt failure");
    assert_eq!(events.last().unwrap(), "rejected circuit_open=true");
    assert_eq!(
        events.iter().filter(|e| e.starts_with("attempt")).count(),
        3
    );
}

/// After a cut and its cooling, answers that come back well while the callers fill the limit make
/// it grow: the callback hears each rise as a `Reacceleration`, after the `Deceleration`.
#[tokio::test(start_paused = true)]
async fn on_event_hears_the_limit_rise_again_after_a_cut() {
    let events = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let throttle = Throttle::new()
        .no_retry()
        .concurrency(|c| {
            c.initial(4)
                .cooling(std::time::Duration::from_secs(1))
                .pacing(gentlify::concurrency::Pacing::disabled())
        })
        .on_event({
            let events = events.clone();
            move |event: &Event<'_>| match event {
                Event::Deceleration { limit, .. } => {
                    events.lock().unwrap().push(("decelerate".into(), *limit))
                }
                Event::Reacceleration { from, limit } => {
                    assert!(limit > from, "{from} -> {limit}");
                    events.lock().unwrap().push(("reaccelerate".into(), *limit))
                }
                _ => {}
            }
        })
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn({
            let calls = calls.clone();
            move |_request: http::Request<String>| {
                let status = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    429
                } else {
                    200
                };
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from("{}")))
                            .unwrap(),
                    )
                }
            }
        }));

    // The 429 cuts the limit; then 20 rounds of as many callers as the limit allows.
    drain(client.clone().oneshot(request("first")).await.unwrap()).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for _ in 0..20 {
        let limit = throttle.concurrency().limit;
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..limit {
            let client = client.clone();
            round.spawn(async move { drain(client.oneshot(request("x")).await.unwrap()).await });
        }
        while round.join_next().await.is_some() {}
    }

    let events = events.lock().unwrap().clone();
    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("decelerate"),
        "{events:?}"
    );
    let rises: Vec<usize> = events
        .iter()
        .filter(|e| e.0 == "reaccelerate")
        .map(|e| e.1)
        .collect();
    assert!(!rises.is_empty(), "{events:?}");
    assert!(rises.windows(2).all(|w| w[0] < w[1]), "{events:?}");
    assert_eq!(
        rises.last().copied(),
        Some(throttle.concurrency().limit),
        "the last rise reported is the limit now: {events:?}"
    );
}

/// Nothing listens for events nobody asked for: without a callback (or metrics) the stack
/// registers no observer on its handle, so no outcome pays for one.
#[test]
fn without_a_callback_no_observer_hears_the_outcomes() {
    let quiet = Throttle::new().build().unwrap();
    let heard = Throttle::new()
        .on_event(|_: &Event<'_>| {})
        .build()
        .unwrap();
    assert_eq!(
        heard.feedback().controllers(),
        quiet.feedback().controllers() + 1
    );
}
