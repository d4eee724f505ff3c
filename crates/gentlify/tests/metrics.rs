//! The `metrics` feature: counters, gauges and histograms labelled per stack.

#![cfg(feature = "metrics")]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{drain, request, response};
use gentlify::core::error::CircuitOpen;
use gentlify::Throttle;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stack_records_its_metrics_under_its_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let throttle = Throttle::openai()
        .name("chat")
        .tokens_per_minute(100_000)
        .concurrency(|c| c.initial(8))
        .breaker(|b| b.consecutive_failures(3).minimum_calls(100))
        .metrics(true)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn({
            let calls = calls.clone();
            move |_request: http::Request<String>| {
                let status = match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => 429,
                    1 => 200,
                    _ => 500,
                };
                async move { Ok::<_, Infallible>(response(status, "{}")) }
            }
        }));
    // 429 then 200; then 500 ×3 (opens the breaker); then a rejection.
    drain(client.clone().oneshot(request("a")).await.unwrap()).await;
    drain(client.clone().oneshot(request("b")).await.unwrap()).await;
    let error = client.clone().oneshot(request("c")).await.unwrap_err();
    assert!(error.is::<CircuitOpen>());
    throttle.record_gauges();

    let metrics: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = (key.kind(), key.key().clone());
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            assert!(labels.contains(&"stack=chat".to_owned()), "{key:?}");
            (kind, key.name().to_owned(), labels, value)
        })
        .collect();
    let find = |kind: MetricKind, name: &str, label: Option<&str>| {
        metrics
            .iter()
            .find(|(k, n, labels, _)| {
                *k == kind && n == name && label.is_none_or(|l| labels.iter().any(|x| x == l))
            })
            .map(|(_, _, _, v)| v)
            .unwrap_or_else(|| panic!("no {name} {label:?} in {metrics:?}"))
    };
    let counter = |name, label| match find(MetricKind::Counter, name, label) {
        DebugValue::Counter(n) => *n,
        other => panic!("{other:?}"),
    };
    let gauge = |name| match find(MetricKind::Gauge, name, None) {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("{other:?}"),
    };

    assert_eq!(counter("gentlify_overloaded_total", None), 1);
    assert_eq!(counter("gentlify_attempts_total", Some("class=success")), 1);
    assert_eq!(counter("gentlify_attempts_total", Some("class=failure")), 3);
    assert_eq!(
        counter("gentlify_retries_total", None),
        3,
        "b's 2nd and 3rd, a's 2nd"
    );
    assert_eq!(
        counter("gentlify_rejections_total", Some("reason=circuit_open")),
        1
    );
    assert_eq!(
        counter("gentlify_breaker_transitions_total", Some("to=open")),
        1
    );
    match find(
        MetricKind::Histogram,
        "gentlify_attempt_duration_seconds",
        None,
    ) {
        DebugValue::Histogram(samples) => assert_eq!(samples.len(), 5),
        other => panic!("{other:?}"),
    }
    assert!(
        gauge("gentlify_concurrency_limit") < 8.0,
        "the 429 cut the limit"
    );
    assert_eq!(gauge("gentlify_in_flight"), 0.0);
    assert_eq!(gauge("gentlify_open_slots"), 0.0);
    assert!(gauge("gentlify_tokens_remaining") > 0.0);
}
