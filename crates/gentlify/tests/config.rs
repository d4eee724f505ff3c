//! The builder's validation, its off switches, and the presets' readings.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{drain, request, response};
use gentlify::core::{CircuitState, Feedback, SnapshotValue};
use gentlify::{ConfigError, Event, Throttle};
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[test]
fn each_layer_reports_its_own_configuration_error() {
    let err = |t: Throttle| t.build().unwrap_err();
    assert!(matches!(
        err(Throttle::new().concurrency(|c| c.min(0))),
        ConfigError::Concurrency(_)
    ));
    assert!(matches!(
        err(Throttle::new().retry(|r| r.max_attempts(0))),
        ConfigError::Retry(_)
    ));
    assert!(matches!(
        err(Throttle::new().budget(|b| b.safety_ratio(2.0))),
        ConfigError::Budget(_)
    ));
    assert!(matches!(
        err(Throttle::new().breaker(|b| b.failure_rate_threshold(2.0))),
        ConfigError::Breaker(_)
    ));
    let elsewhere = gentlify::RetryLayer::builder()
        .feedback(Feedback::new())
        .build()
        .unwrap();
    assert_eq!(
        err(Throttle::new()
            .feedback(Feedback::new())
            .retry_layer(elsewhere)),
        ConfigError::OtherHandle { layer: "retry" }
    );
}

#[test]
fn a_layer_given_ready_built_lends_the_stack_its_handle() {
    let feedback = Feedback::builder().name("given").build();
    let limiter = gentlify::AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .max(7)
        .build()
        .unwrap();
    let throttle = Throttle::new().concurrency_layer(limiter).build().unwrap();
    assert!(throttle.feedback().same_as(&feedback));
}

/// Counts attempts; the n-th answers `statuses[n]` (the last one thereafter), after 1 s.
fn scripted(
    statuses: &'static [u16],
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    http::Request<String>,
    Response = common::Response,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    service_fn(move |_request: http::Request<String>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let status = statuses[n.min(statuses.len() - 1)];
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(response(status, "{}"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn switched_off_parts_let_everything_through() {
    let calls = Arc::new(AtomicUsize::new(0));
    let throttle = Throttle::new()
        .concurrency(|c| c.initial(1).min(1).max(1))
        .no_concurrency_limit()
        .no_retry()
        .no_breaker()
        .no_budget()
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(scripted(&[500], calls.clone()));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| tokio::spawn(client.clone().oneshot(request("x"))))
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), 500, "no retry, no breaker rejection");
        drain(response).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 50, "each sent once");
    assert_eq!(start.elapsed(), Duration::from_secs(1), "all at once");
    assert_eq!(throttle.breaker().state(), CircuitState::Disabled);
}

#[tokio::test(start_paused = true)]
async fn the_defaults_limit_and_retry() {
    let calls = Arc::new(AtomicUsize::new(0));
    let throttle = Throttle::new()
        .concurrency(|c| c.initial(1).min(1).max(1))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(scripted(&[500, 200], calls.clone()));
    let start = tokio::time::Instant::now();
    // Each reads its body to the end: the permit is held until then.
    let send = |id| {
        let client = client.clone();
        async move { drain(client.oneshot(request(id)).await.unwrap()).await }
    };
    tokio::join!(send("a"), send("b"));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "a's 500 was retried");
    assert!(start.elapsed() >= Duration::from_secs(3), "one at a time");
}

fn quota_sources(throttle: Throttle) -> (gentlify::ThrottleLayer, Arc<Mutex<Vec<String>>>) {
    let sources = Arc::new(Mutex::new(Vec::new()));
    let layer = throttle
        .on_event({
            let sources = sources.clone();
            move |event: &Event<'_>| {
                if let Event::Quota(report) = event {
                    sources.lock().unwrap().push(report.source.to_owned());
                }
            }
        })
        .build()
        .unwrap();
    (layer, sources)
}

async fn answer_with_both_families(layer: gentlify::ThrottleLayer) {
    let client = ServiceBuilder::new().layer(layer).service(service_fn(
        |_request: http::Request<String>| async {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("x-ratelimit-remaining-requests", "59")
                    .header("x-ratelimit-reset-requests", "1s")
                    .header("anthropic-ratelimit-requests-remaining", "999")
                    .header("anthropic-ratelimit-requests-limit", "1000")
                    .body(Full::new(Bytes::from("{}")))
                    .unwrap(),
            )
        },
    ));
    drain(client.oneshot(request("x")).await.unwrap()).await;
}

#[tokio::test(start_paused = true)]
async fn each_preset_reads_its_providers_headers_only() {
    for (throttle, expected) in [
        (Throttle::openai(), vec!["openai"]),
        (Throttle::azure_openai(), vec!["azure-openai"]),
        (Throttle::anthropic(), vec!["anthropic"]),
        (Throttle::new().no_header_feedback(), vec![]),
    ] {
        let (layer, sources) = quota_sources(throttle);
        answer_with_both_families(layer).await;
        assert_eq!(*sources.lock().unwrap(), expected);
    }
    let (layer, sources) = quota_sources(Throttle::openai_compatible());
    answer_with_both_families(layer).await;
    assert!(sources.lock().unwrap().len() >= 2, "{sources:?}");
}

#[test]
fn azure_enforces_requests_per_minute_over_ten_seconds_too() {
    let limits = |throttle: Throttle| {
        let layer = throttle.requests_per_minute(600).build().unwrap();
        let part = layer.budgets()[0].snapshot();
        (
            part.get("requests_per_60s_limit").cloned(),
            part.get("requests_per_10s_limit").cloned(),
        )
    };
    assert_eq!(
        limits(Throttle::azure_openai()),
        (Some(SnapshotValue::U64(600)), Some(SnapshotValue::U64(100)))
    );
    assert_eq!(
        limits(Throttle::openai()),
        (Some(SnapshotValue::U64(600)), None)
    );
}

#[tokio::test(start_paused = true)]
async fn the_estimate_runs_only_when_a_budget_counts_tokens() {
    for (throttle, expected) in [
        (Throttle::new(), 0),
        (Throttle::new().requests_per_minute(100), 0),
        (Throttle::new().tokens_per_minute(100_000), 1),
        (Throttle::anthropic().output_tokens_per_minute(8_000), 1),
    ] {
        let estimates = Arc::new(AtomicUsize::new(0));
        let layer = throttle
            .estimate({
                let estimates = estimates.clone();
                move |_: &http::Request<String>| {
                    estimates.fetch_add(1, Ordering::SeqCst);
                    gentlify::budget::TokenCost::new(10, 10)
                }
            })
            .build()
            .unwrap();
        let client = ServiceBuilder::new()
            .layer(layer)
            .service(scripted(&[200], Arc::default()));
        drain(client.oneshot(request("x")).await.unwrap()).await;
        assert_eq!(estimates.load(Ordering::SeqCst), expected);
    }
}

/// Which parts a stack puts in the request's path: `[breaker, concurrency, retry, budget,
/// headers]`.
fn stacked(throttle: Throttle) -> [bool; 5] {
    use gentlify::Toggled::{Off, On};
    let layer = throttle.build().unwrap();
    let service = tower::Layer::layer(
        &layer,
        tower::service_fn(|_: http::Request<String>| async { common::ok() }),
    );
    let (breaker, rest) = match service.get_ref() {
        On(s) => (true, s.get_ref()),
        Off(s) => (false, s),
    };
    let (concurrency, rest) = match rest {
        On(s) => (true, s.get_ref().get_ref()),
        Off(s) => (false, s.get_ref()),
    };
    // The retry layer is always there.
    let (retry, rest) = (true, rest.get_ref());
    let (budget, rest) = match rest {
        On(s) => (true, s.get_ref().get_ref()),
        Off(s) => (false, s),
    };
    let headers = matches!(rest, On(_));
    [breaker, concurrency, retry, budget, headers]
}

#[test]
fn switched_off_parts_are_left_out_of_the_request_path() {
    assert_eq!(
        stacked(Throttle::new().requests_per_minute(60)),
        [true; 5],
        "everything on"
    );
    assert_eq!(
        stacked(Throttle::new()),
        [true, true, true, false, true],
        "a budget with no limit has nothing to do"
    );
    assert_eq!(
        stacked(Throttle::new().requests_per_minute(60).no_budget()),
        [true, true, true, false, true]
    );
    assert_eq!(
        stacked(Throttle::new().no_breaker()),
        [false, true, true, false, true]
    );
    assert_eq!(
        stacked(Throttle::new().no_concurrency_limit()),
        [true, true, true, false, true],
        "the unlimited limiter stays to hold dispatch while the server's pause is in force"
    );
    assert_eq!(
        stacked(Throttle::new().no_concurrency_limit().no_header_feedback()),
        [true, false, true, false, false]
    );
    assert_eq!(
        stacked(Throttle::new().no_retry()),
        [true, true, true, false, true],
        "one attempt, but a 429's body is still read for a quota gone for good"
    );

    // A breaker left out does not listen to the handle either: no outcome pays for it.
    let controllers = |throttle: Throttle| throttle.build().unwrap().feedback().controllers();
    assert_eq!(
        controllers(Throttle::new().no_breaker()) + 1,
        controllers(Throttle::new())
    );
}
