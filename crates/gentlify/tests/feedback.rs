//! What the layers of one stack learn from each other through the shared handle.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{drain, id_and_attempt, request, response, ChannelBody, Seen};
use gentlify::Throttle;
use tokio::sync::mpsc;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_429_retried_into_success_slows_the_limiter_but_is_no_breaker_failure() {
    let calls = Arc::new(AtomicUsize::new(0));
    let throttle = Throttle::openai()
        .concurrency(|c| c.initial(8))
        // Open at the first failure, if a 429 counted as one.
        .breaker(|b| b.consecutive_failures(1).minimum_calls(1))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn({
            let calls = calls.clone();
            move |_request: http::Request<String>| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    Ok::<_, Infallible>(if first {
                        http::Response::builder()
                            .status(429)
                            .header("retry-after-ms", "200")
                            .body(http_body_util::Full::new(Bytes::from_static(
                                br#"{"error":{"code":"rate_limit_exceeded"}}"#,
                            )))
                            .unwrap()
                    } else {
                        response(200, "ok")
                    })
                }
            }
        }));

    let response = client.oneshot(request("A")).await.unwrap();
    assert_eq!(response.status(), 200);
    drain(response).await;

    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let concurrency = throttle.concurrency();
    assert!(
        concurrency.limit < 8,
        "the limiter heard the 429: {concurrency:?}"
    );
    assert_eq!(concurrency.decelerations, 1);
    let breaker = throttle.breaker().snapshot();
    assert_eq!(breaker.state, gentlify::core::CircuitState::Closed);
    assert_eq!(breaker.consecutive_failures, 0);
    assert_eq!(breaker.failure_rate, Some(0.0), "{breaker:?}");
    let snapshot = throttle.snapshot();
    assert_eq!(
        (snapshot.attempts_overloaded, snapshot.attempts_success),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn slots_close_and_attempts_match_the_upstream_after_a_mixed_workload() {
    let seen = Seen::default();
    let throttle = Throttle::new()
        .concurrency(|c| c.initial(3).max(3))
        .retry(|r| r.without_budget())
        .build()
        .unwrap();
    // Per id: the statuses of its attempts, in order ("hang" never answers).
    let script = |id: &str, attempt: u32| -> &'static str {
        match (id.as_bytes()[0], attempt) {
            (b'o', _) => "200",
            (b'r', 0) => "429",
            (b'f', 0) => "500",
            (b'f', 1) => "502",
            (b'q', _) => "429q",
            (b'h', _) => "hang",
            _ => "200",
        }
    };
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn({
            let seen = seen.clone();
            move |request: http::Request<String>| {
                let (id, attempt) = id_and_attempt(&request);
                let step = script(&id, attempt);
                seen.push(step.to_owned());
                async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Ok::<_, Infallible>(match step {
                        "429" => response(429, "{}"),
                        "500" => response(500, "boom"),
                        "502" => response(502, "boom"),
                        "429q" => response(429, r#"{"error":{"code":"insufficient_quota"}}"#),
                        "hang" => std::future::pending().await,
                        _ => response(200, "ok"),
                    })
                }
            }
        }));

    let ids = [
        "o1", "r1", "f1", "q1", "o2", "r2", "h1", "o3", "f2", "o4", "q2", "r3",
    ];
    let mut tasks = Vec::new();
    for id in ids {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            if id.starts_with('h') {
                // The caller gives up: the attempt is cancelled, the slot still ends.
                let r = tokio::time::timeout(Duration::from_secs(5), client.oneshot(request(id)));
                assert!(r.await.is_err());
            } else {
                let response = client.oneshot(request(id)).await.unwrap();
                drain(response).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let seen = seen.list();
    let count = |s: &str| seen.iter().filter(|x| *x == s).count() as u64;
    let snapshot = throttle.snapshot();
    assert_eq!(snapshot.open_slots, 0, "{snapshot}");
    assert_eq!(throttle.feedback().open_slots(), 0);
    assert_eq!(throttle.concurrency().in_flight, 0);
    assert_eq!(
        snapshot.attempts(),
        seen.len() as u64,
        "{snapshot}\n{seen:?}"
    );
    assert_eq!(snapshot.attempts_success, count("200"));
    assert_eq!(snapshot.attempts_failure, count("500") + count("502"));
    // A 429 saying `insufficient_quota` is published by the innermost layer from its status
    // (overloaded) before the retry layer reads the body and finds it fatal: the retry does not
    // retry it, but the handle counts it as overloaded. See the report on issue #9.
    assert_eq!(
        snapshot.attempts_overloaded + snapshot.attempts_fatal,
        count("429") + count("429q")
    );
    assert_eq!(snapshot.attempts_cancelled, count("hang"));
    // Every scripted retry happened: r* twice, f* three times, the rest once.
    assert_eq!(seen.len(), 4 + 3 * 2 + 2 * 3 + 2 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_keeps_the_permit_until_it_ends() {
    let seen = Seen::default();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let throttle = Throttle::new()
        .concurrency(|c| c.initial(1).min(1).max(1))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn({
            let seen = seen.clone();
            move |request: http::Request<String>| {
                let (id, _) = id_and_attempt(&request);
                seen.push(id.clone());
                let body = match id.as_str() {
                    "stream" => rx.lock().unwrap().take().unwrap(),
                    _ => mpsc::unbounded_channel().1,
                };
                async move { Ok::<_, Infallible>(http::Response::new(ChannelBody(body))) }
            }
        }));

    let streamed = client.clone().oneshot(request("stream")).await.unwrap();
    tx.send(Bytes::from_static(b"data: hello\n\n")).unwrap();
    let next = tokio::spawn(client.oneshot(request("next")));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        seen.list(),
        ["stream"],
        "the stream still holds the only permit"
    );
    assert_eq!(throttle.concurrency().in_flight, 1);
    // The second request waits for its permit before any layer makes its slot.
    assert_eq!(throttle.feedback().open_slots(), 1);

    drop(tx);
    assert_eq!(drain(streamed).await, "data: hello\n\n");
    let next = next.await.unwrap().unwrap();
    assert_eq!(seen.list(), ["stream", "next"]);
    drop(next);
    assert_eq!(throttle.feedback().open_slots(), 0);
    assert_eq!(throttle.concurrency().in_flight, 0);
}
