//! The `metrics` feature: counters, gauges and histograms labelled per stack.

#![cfg(feature = "metrics")]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{drain, request, response};
use gentlify::core::error::CircuitOpen;
use gentlify::Throttle;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// The debugging recorder's reads reset every metric: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's recorder, installed once; each test reads only the metrics of its own stack.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// The gauges of stack `stack`, by name (one read: it resets them all).
fn gauges(stack: &str) -> std::collections::HashMap<String, f64> {
    let label = format!("stack={stack}");
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let ours = key
                .key()
                .labels()
                .any(|l| format!("{}={}", l.key(), l.value()) == label);
            match value {
                DebugValue::Gauge(v) if ours => Some((key.key().name().to_owned(), v.into_inner())),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stack_records_its_metrics_under_its_name() {
    let _serial = SERIAL.lock().await;
    let snapshotter = snapshotter();
    let throttle = Throttle::openai()
        .name("chat")
        .tokens_per_minute(100_000)
        .concurrency(|c| c.initial(8))
        // Refused at once (the presets wait while open), to count the rejection.
        .breaker(|b| b.consecutive_failures(3).minimum_calls(100).fail_fast())
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
            (kind, key.name().to_owned(), labels, value)
        })
        .filter(|(_, _, labels, _)| labels.contains(&"stack=chat".to_owned()))
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

/// Gauges are pushed when the stack hears an outcome; a body read after the last one keeps its
/// permit until it ends, so the in-flight gauge counts it until a timer sets it again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_gauge_timer_keeps_the_gauges_exact_between_attempts() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let throttle = Throttle::new()
        .name("timer")
        .no_retry()
        .metrics(true)
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn(|_request: http::Request<String>| async {
            Ok::<_, Infallible>(response(200, "{}"))
        }));

    // Two heads heard (the gauge says 2), then one body read to its end: 1 in flight.
    let held = client.clone().oneshot(request("a")).await.unwrap();
    let read = client.clone().oneshot(request("b")).await.unwrap();
    drain(read).await;
    assert_eq!(throttle.concurrency().in_flight, 1);
    // (The debugging recorder's read sets a gauge back to 0.)
    let stale = gauges("timer");
    assert_eq!(
        stale["gentlify_in_flight"], 2.0,
        "as set at the last outcome"
    );
    assert_eq!(
        stale["gentlify_open_slots"], 2.0,
        "as set at the last outcome"
    );
    // Started now, so that no tick can land before the reading above.
    let timer = tokio::spawn(throttle.record_gauges_every(std::time::Duration::from_secs(1)));
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let fresh = gauges("timer");
    assert_eq!(fresh["gentlify_in_flight"], 1.0, "set by the timer");
    assert_eq!(fresh["gentlify_open_slots"], 1.0, "set by the timer");
    drain(held).await;

    // The timer ends with the stack.
    drop((client, throttle));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(timer.is_finished());
}
