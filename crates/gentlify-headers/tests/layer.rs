//! The layer in virtual time: what every response does to the handle.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{at, ms, secs};
use gentlify_core::{
    BoxError, Controller, Dimension, Feedback, QuotaReport, Slot, SnapshotPart, SnapshotValue,
};
use gentlify_headers::{AnthropicHeaders, HeaderFeedbackLayer, OpenAiHeaders};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{service_fn, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

/// An upstream answering every request with `status` and the header `lines` (`name: value`).
#[derive(Debug, Clone)]
struct Upstream {
    status: u16,
    lines: &'static str,
}

fn upstream(status: u16, lines: &'static str) -> Upstream {
    Upstream { status, lines }
}

impl Service<http::Request<()>> for Upstream {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<()>) -> Self::Future {
        let mut response = http::Response::builder().status(self.status);
        for (name, value) in self.lines.lines().filter_map(|l| l.trim().split_once(':')) {
            response = response.header(name.trim(), value.trim());
        }
        std::future::ready(Ok(response.body(Full::new(Bytes::from("{}"))).unwrap()))
    }
}

/// Sends one request through `service` and reads its body to the end.
async fn send<S>(service: &mut S)
where
    S: Service<http::Request<()>, Response = http::Response<gentlify_core::SlotBody<Body>>>,
    S::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
}

/// Every quota report published to a handle, kept.
#[derive(Default)]
struct Reports(Mutex<Vec<QuotaReport>>);

impl Controller for Reports {
    fn on_quota(&self, report: &QuotaReport) {
        self.0.lock().unwrap().push(report.clone());
    }
}

impl Reports {
    /// A handle and the reports published to it.
    fn on_new_handle() -> (Feedback, Arc<Reports>) {
        let feedback = Feedback::new();
        let reports = Arc::new(Reports::default());
        feedback.register(&reports);
        (feedback, reports)
    }

    fn taken(&self) -> Vec<QuotaReport> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The handle after one request through `layer` to an upstream answering `status` with the
/// header `lines`, and the quota reports published.
async fn after_one(
    layer: HeaderFeedbackLayer,
    status: u16,
    lines: &'static str,
) -> (Feedback, Vec<QuotaReport>) {
    let (feedback, reports) = Reports::on_new_handle();
    let mut service = layer
        .feedback(feedback.clone())
        .layer(upstream(status, lines));
    send(&mut service).await;
    (feedback, reports.taken())
}

/// The pause the default layer sets on one response of `status` with the header `lines`.
async fn pause_after(status: u16, lines: &'static str) -> Option<Duration> {
    let (feedback, _) = after_one(HeaderFeedbackLayer::new(), status, lines).await;
    feedback.pause_gate().remaining()
}

/// The handle's snapshot part `"headers"`.
fn headers_part(feedback: &Feedback) -> SnapshotPart {
    feedback.snapshot().part("headers").cloned().unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_2_on_a_429_holds_the_gate_exactly_2_s() {
    let (feedback, _) = after_one(HeaderFeedbackLayer::new(), 429, "retry-after: 2").await;

    let gate = feedback.pause_gate();
    assert_eq!(gate.remaining(), Some(secs(2)));
    tokio::time::advance(ms(1999)).await;
    assert_eq!(gate.remaining(), Some(ms(1)));
    tokio::time::advance(ms(1)).await;
    assert_eq!(gate.remaining(), None);
}

#[tokio::test(start_paused = true)]
async fn the_next_dispatch_waits_for_the_pause() {
    let feedback = Feedback::new();
    let mut service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(upstream(429, "retry-after: 2"));
    send(&mut service).await;

    let start = Instant::now();
    let mut ready = tokio_test::task::spawn(service.ready());
    assert_pending!(ready.poll());
    tokio::time::advance(ms(1999)).await;
    assert_pending!(ready.poll());
    tokio::time::advance(ms(1)).await;
    assert_ready_ok!(ready.poll());
    assert_eq!(start.elapsed(), secs(2));
}

#[tokio::test(start_paused = true)]
async fn hold_dispatch_off_leaves_waiting_to_other_layers() {
    let feedback = Feedback::new();
    let mut service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .hold_dispatch(false)
        .layer(upstream(429, "retry-after: 2"));
    send(&mut service).await;
    assert!(feedback.pause_gate().remaining().is_some());
    let mut ready = tokio_test::task::spawn(service.ready());
    assert_ready_ok!(ready.poll());
}

#[tokio::test(start_paused = true)]
async fn remaining_0_with_reset_1_5_s_pauses_1_5_s() {
    let (feedback, _) = after_one(
        HeaderFeedbackLayer::new(),
        200,
        "x-ratelimit-remaining-requests: 0
         x-ratelimit-reset-requests: 1.5s
         x-ratelimit-remaining-tokens: 1000
         x-ratelimit-reset-tokens: 30s",
    )
    .await;
    assert_eq!(feedback.pause_gate().remaining(), Some(ms(1500)));
    tokio::time::advance(ms(1500)).await;
    assert_eq!(feedback.pause_gate().remaining(), None);
}

#[tokio::test(start_paused = true)]
async fn the_latest_reset_of_the_exhausted_quotas_wins() {
    let pause = pause_after(
        200,
        "x-ratelimit-remaining-requests: 0
         x-ratelimit-reset-requests: 1.5s
         x-ratelimit-remaining-tokens: 0
         x-ratelimit-reset-tokens: 4s",
    );
    assert_eq!(pause.await, Some(secs(4)));
}

#[tokio::test(start_paused = true)]
async fn quota_left_or_unknown_reset_does_not_pause() {
    let pause = pause_after(
        200,
        "x-ratelimit-remaining-requests: 1
         x-ratelimit-reset-requests: 10s
         x-ratelimit-remaining-tokens: 0",
    );
    assert_eq!(pause.await, None);
}

#[tokio::test(start_paused = true)]
async fn quota_reports_reach_a_registered_controller() {
    let sent = Instant::now();
    let (_, reports) = after_one(
        HeaderFeedbackLayer::new(),
        200,
        "x-ratelimit-limit-requests: 60
         x-ratelimit-remaining-requests: 59
         x-ratelimit-reset-requests: 1s",
    )
    .await;

    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.source, "openai");
    assert_eq!(report.observed_at, sent);
    assert_eq!(report.quotas.len(), 1);
    assert_eq!(report.quotas[0].dimension, Dimension::Requests);
    assert_eq!(report.quotas[0].limit, Some(60));
    assert_eq!(report.quotas[0].remaining, Some(59));
    assert_eq!(report.quotas[0].reset_after, Some(secs(1)));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_read_not_only_the_final_one() {
    let (feedback, reports) = Reports::on_new_handle();
    let mut service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(upstream(429, "x-ratelimit-remaining-tokens: 0"));

    // Two attempts of one logical request, as a retry layer outside would send them.
    let (slot, end) = Slot::new(&feedback);
    for attempt in 0..2 {
        if attempt > 0 {
            slot.next_attempt();
        }
        let mut request = http::Request::new(());
        request.extensions_mut().insert(slot.clone());
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        drop(response);
    }
    drop(end);
    assert_eq!(reports.taken().len(), 2);
    assert_eq!(feedback.snapshot().attempts_overloaded, 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_a_success_does_not_pause() {
    assert_eq!(pause_after(200, "retry-after: 5").await, None);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_503_and_529_pauses() {
    for status in [503, 529] {
        let pause = pause_after(status, "retry-after-ms: 750").await;
        assert_eq!(pause, Some(ms(750)), "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_sets_no_pause() {
    let pause = pause_after(429, "retry-after: 5\nx-should-retry: false");
    assert_eq!(pause.await, None);
}

#[tokio::test(start_paused = true)]
async fn server_delay_wins_over_a_reset_in_the_same_response() {
    let pause = pause_after(
        429,
        "retry-after: 1
         x-ratelimit-remaining-tokens: 0
         x-ratelimit-reset-tokens: 30s",
    );
    assert_eq!(pause.await, Some(secs(1)));
}

#[tokio::test(start_paused = true)]
async fn retry_after_wins_over_an_ietf_t_in_the_same_response() {
    // As the IETF draft says: `Retry-After` wins over `t`.
    let pause = pause_after(
        429,
        "retry-after: 1
         ratelimit-policy: \"default\";q=100;w=60
         ratelimit: \"default\";r=0;t=30",
    );
    assert_eq!(pause.await, Some(secs(1)));
    // Without it, the exhausted policy's `t` holds the gate.
    let pause = pause_after(200, "ratelimit: \"default\";r=0;t=30");
    assert_eq!(pause.await, Some(secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_short_pause_never_shortens_a_longer_one() {
    let feedback = Feedback::new();
    // Not waiting on the gate itself, so the second response arrives within the first pause.
    let layer = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .hold_dispatch(false);
    send(&mut layer.layer(upstream(429, "retry-after: 10"))).await;
    send(&mut layer.layer(upstream(429, "retry-after: 1"))).await;
    assert_eq!(feedback.pause_gate().remaining(), Some(secs(10)));
    let part = headers_part(&feedback);
    assert_eq!(part.get("pauses"), Some(&SnapshotValue::U64(2)));
}

#[tokio::test(start_paused = true)]
async fn negative_grpc_pushback_means_do_not_wait() {
    // gRPC: a negative pushback says "do not retry"; a `retry-after` beside it is not honoured.
    let pause = pause_after(
        200,
        "content-type: application/grpc
         grpc-status: 8
         retry-after: 2
         grpc-retry-pushback-ms: -1",
    );
    assert_eq!(pause.await, None);
}

#[tokio::test(start_paused = true)]
async fn server_delay_can_be_turned_off() {
    let layer = HeaderFeedbackLayer::new().server_delay(false);
    let (feedback, _) = after_one(layer, 429, "retry-after: 2").await;
    assert_eq!(feedback.pause_gate().remaining(), None);
}

#[tokio::test(start_paused = true)]
async fn grpc_resource_exhausted_pushback_pauses() {
    let pause = pause_after(
        200,
        "content-type: application/grpc
         grpc-status: 8
         grpc-retry-pushback-ms: 500",
    );
    assert_eq!(pause.await, Some(ms(500)));
}

#[tokio::test(start_paused = true)]
async fn pauses_are_bounded_by_max_pause() {
    let pause = pause_after(429, "retry-after: 3600").await;
    assert_eq!(pause, Some(secs(60)), "default bound");

    let layer = HeaderFeedbackLayer::new().max_pause(secs(5));
    let (feedback, _) = after_one(
        layer,
        200,
        "x-ratelimit-remaining-requests: 0\nx-ratelimit-reset-requests: 2h",
    )
    .await;
    assert_eq!(feedback.pause_gate().remaining(), Some(secs(5)));
}

#[tokio::test(start_paused = true)]
async fn absurd_delays_are_ignored() {
    for lines in [
        "retry-after: 99999999999",
        "retry-after-ms: 1e300",
        "retry-after: Fri, 31 Dec 9999 23:59:59 GMT",
        "retry-after: -5",
        "retry-after: NaN",
    ] {
        assert_eq!(pause_after(429, lines).await, None, "{lines}");
    }
}

#[tokio::test(start_paused = true)]
async fn max_pause_zero_publishes_but_never_pauses() {
    let (feedback, reports) = after_one(
        HeaderFeedbackLayer::new().max_pause(Duration::ZERO),
        429,
        "retry-after: 2\nx-ratelimit-remaining-requests: 0\nx-ratelimit-reset-requests: 1s",
    )
    .await;
    assert_eq!(feedback.pause_gate().remaining(), None);
    assert_eq!(reports.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn anthropic_resets_are_measured_from_the_given_wall_clock() {
    // 2025-08-21T12:40:58.500Z
    let now = at(1_755_780_058_500);
    let layer = HeaderFeedbackLayer::only(AnthropicHeaders::new()).wall_clock(move || now);
    let (feedback, _) = after_one(
        layer,
        200,
        "anthropic-ratelimit-output-tokens-remaining: 0
             anthropic-ratelimit-output-tokens-reset: 2025-08-21T12:41:00Z",
    )
    .await;
    assert_eq!(feedback.pause_gate().remaining(), Some(ms(1500)));
}

#[tokio::test(start_paused = true)]
async fn parsers_selected_individually_ignore_other_families() {
    let (feedback, reports) = after_one(
        HeaderFeedbackLayer::only(AnthropicHeaders::new()),
        200,
        "x-ratelimit-remaining-requests: 0\nx-ratelimit-reset-requests: 1s",
    )
    .await;
    assert!(reports.is_empty());
    assert_eq!(feedback.pause_gate().remaining(), None);

    let layer = HeaderFeedbackLayer::only(AnthropicHeaders::new()).parser(OpenAiHeaders::groq());
    let (_, reports) = after_one(layer, 200, "x-ratelimit-remaining-tokens: 5").await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].source, "groq");
    assert_eq!(reports[0].quotas[0].window, Some(secs(60)));
}

#[tokio::test(start_paused = true)]
async fn snapshot_shows_the_last_quota_per_dimension_and_its_source() {
    let feedback = Feedback::new();
    let layer = HeaderFeedbackLayer::new().feedback(feedback.clone());
    let mut openai = layer.layer(upstream(
        200,
        "x-ratelimit-limit-requests: 60
         x-ratelimit-remaining-requests: 59
         x-ratelimit-reset-requests: 10s",
    ));
    let mut ietf = layer.layer(upstream(
        200,
        "ratelimit-policy: \"burst\";q=100;w=60
         ratelimit: \"burst\";r=7;t=30",
    ));
    send(&mut openai).await;
    send(&mut ietf).await;
    tokio::time::advance(secs(4)).await;

    let snapshot = feedback.snapshot();
    let headers: Vec<_> = snapshot
        .parts
        .iter()
        .filter(|p| p.component == "headers")
        .collect();
    assert_eq!(
        headers.len(),
        1,
        "one part per handle, however many services"
    );
    let part = headers[0];
    assert_eq!(part.get("reports"), Some(&SnapshotValue::U64(2)));
    assert_eq!(part.get("requests.source"), Some(&"openai".into()));
    assert_eq!(part.get("requests.limit"), Some(&SnapshotValue::U64(60)));
    assert_eq!(
        part.get("requests.remaining"),
        Some(&SnapshotValue::U64(59))
    );
    assert_eq!(
        part.get("requests.reset_in"),
        Some(&SnapshotValue::Duration(secs(6)))
    );
    assert_eq!(part.get("requests.window"), Some(&SnapshotValue::Unknown));
    assert_eq!(part.get("requests.burst.source"), Some(&"ietf".into()));
    assert_eq!(
        part.get("requests.burst.remaining"),
        Some(&SnapshotValue::U64(7))
    );
    assert_eq!(
        part.get("requests.burst.window"),
        Some(&SnapshotValue::Duration(secs(60)))
    );

    // A newer report replaces the older one of the same dimension.
    let mut newer = layer.layer(upstream(200, "x-ratelimit-remaining-requests: 3"));
    send(&mut newer).await;
    let part = headers_part(&feedback);
    assert_eq!(part.get("requests.remaining"), Some(&SnapshotValue::U64(3)));
    assert_eq!(part.get("requests.limit"), Some(&SnapshotValue::Unknown));
}

#[tokio::test(start_paused = true)]
async fn snapshot_records_the_last_pause_and_its_cause() {
    let (feedback, _) = after_one(
        HeaderFeedbackLayer::new(),
        200,
        "x-ratelimit-remaining-tokens: 0\nx-ratelimit-reset-tokens: 1.5s",
    )
    .await;
    let part = headers_part(&feedback);
    assert_eq!(part.get("pauses"), Some(&SnapshotValue::U64(1)));
    assert_eq!(
        part.get("last_pause"),
        Some(&SnapshotValue::Duration(ms(1500)))
    );
    assert_eq!(part.get("last_pause_cause"), Some(&"openai:tokens".into()));
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_keeps_a_bounded_number_of_quotas() {
    // A server naming a new quota on every response must not grow the snapshot without bound.
    let feedback = Feedback::new();
    let layer = HeaderFeedbackLayer::new().feedback(feedback.clone());
    for resource in 0..100 {
        let lines = format!("x-ratelimit-remaining: {resource}\nx-ratelimit-resource: r{resource}");
        send(&mut layer.layer(upstream(200, lines.leak()))).await;
        tokio::time::advance(ms(1)).await;
    }
    let part = headers_part(&feedback);
    let kept = part
        .fields
        .iter()
        .filter(|(name, _)| name.ends_with(".source"));
    assert_eq!(kept.count(), 32);
    assert_eq!(part.get("reports"), Some(&SnapshotValue::U64(100)));
    // The newest quotas stay; the ones heard from longest ago made room.
    assert_eq!(
        part.get("requests.r99.remaining"),
        Some(&SnapshotValue::U64(99))
    );
    assert_eq!(
        part.get("requests.r68.remaining"),
        Some(&SnapshotValue::U64(68))
    );
    assert_eq!(part.get("requests.r67.remaining"), None);
}

#[tokio::test(start_paused = true)]
async fn the_slot_ends_at_the_end_of_the_body_and_the_outcome_is_published_once() {
    let feedback = Feedback::new();
    let mut service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(upstream(429, "retry-after: 1"));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(feedback.open_slots(), 1, "body unread");
    response.into_body().collect().await.unwrap();
    assert_eq!(feedback.open_slots(), 0);
    let snapshot = feedback.snapshot();
    assert_eq!(snapshot.attempts(), 1);
    assert_eq!(snapshot.attempts_overloaded, 1);
}

#[tokio::test(start_paused = true)]
async fn errors_pass_through_and_end_the_slot() {
    let feedback = Feedback::new();
    let failing = service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<Body>, BoxError>("connection reset".into())
    });
    let mut service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(failing);
    let error = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "connection reset");
    assert_eq!(feedback.open_slots(), 0);
    assert_eq!(feedback.snapshot().attempts_failure, 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_ends_the_slot() {
    let feedback = Feedback::new();
    let never = service_fn(|_req: http::Request<()>| {
        std::future::pending::<Result<http::Response<Body>, Infallible>>()
    });
    let mut service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(never);
    let future = service.ready().await.unwrap().call(http::Request::new(()));
    assert_eq!(feedback.open_slots(), 1);
    drop(future);
    assert_eq!(feedback.open_slots(), 0);
}

/// A parser of the user's own that reports absurd durations.
#[derive(Debug)]
struct Forever;

impl gentlify_headers::ParseHeaders for Forever {
    fn name(&self) -> &'static str {
        "forever"
    }
    fn parse(&self, _: &http::HeaderMap, _: std::time::SystemTime) -> Option<QuotaReport> {
        let quota = gentlify_core::Quota::new(Dimension::Requests)
            .with_remaining(0)
            .with_reset_after(Duration::MAX)
            .with_window(Duration::MAX);
        Some(QuotaReport::new(self.name(), vec![quota]))
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_parser_cannot_publish_durations_that_overflow() {
    let (feedback, reports) = after_one(HeaderFeedbackLayer::only(Forever), 200, "").await;
    let quota = &reports[0].quotas[0];
    assert_eq!(quota.reset_after, Some(gentlify_core::MAX_SERVER_DELAY));
    assert_eq!(quota.window, Some(gentlify_core::MAX_SERVER_DELAY));
    assert!(reports[0].exhausted_until().is_some(), "no overflow");
    assert_eq!(feedback.pause_gate().remaining(), None, "absurd: ignored");
    let part = headers_part(&feedback);
    assert_eq!(part.get("requests.source"), Some(&"forever".into()));
}

/// Headers many APIs send, none of them a rate-limit header (some look close).
const UNRELATED: &str = "
content-type: application/json
x-request-id: req_123
anthropic-organization-id: org_1
x-ratelimit: 5
retry: 2
grpc-status: 0
";

#[tokio::test(start_paused = true)]
async fn a_response_with_only_unrelated_headers_publishes_nothing() {
    for status in [200, 429, 503] {
        let (feedback, reports) = after_one(HeaderFeedbackLayer::new(), status, UNRELATED).await;
        assert!(reports.is_empty(), "{status}");
        assert_eq!(feedback.pause_gate().remaining(), None, "{status}");
        let part = headers_part(&feedback);
        assert_eq!(part.get("reports"), Some(&0u64.into()), "{status}");
        assert_eq!(part.get("pauses"), Some(&0u64.into()), "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_family_is_still_detected_among_unrelated_headers() {
    let families: [(&'static str, &str); 7] = [
        ("x-ratelimit-remaining-requests: 5", "openai"),
        ("x-ratelimit-reset-tokens: 1s", "openai"),
        ("x-ratelimit-remaining: 5", "github"),
        (
            "anthropic-ratelimit-output-tokens-remaining: 5",
            "anthropic",
        ),
        ("ratelimit: \"default\";r=5;t=1", "ietf"),
        ("ratelimit-policy: \"default\";q=10", "ietf"),
        ("ratelimit-remaining: 5", "ietf"),
    ];
    for (line, source) in families {
        let lines: &'static str = format!("{UNRELATED}{line}\n").leak();
        let (_, reports) = after_one(HeaderFeedbackLayer::new(), 200, lines).await;
        let sources: Vec<_> = reports.iter().map(|r| r.source).collect();
        assert_eq!(sources, [source], "{line}");
    }

    let delays: [(&'static str, Option<Duration>); 6] = [
        ("retry-after: 2", Some(secs(2))),
        ("retry-after-ms: 1500", Some(ms(1500))),
        ("grpc-retry-pushback-ms: 700", Some(ms(700))),
        ("retry-after: 2\nx-should-retry: false", None),
        ("retry-after: 2\nx-should-retry: true", Some(secs(2))),
        ("x-should-retry: true", None),
    ];
    for (line, pause) in delays {
        let lines: &'static str = format!("{UNRELATED}{line}\n").leak();
        assert_eq!(pause_after(429, lines).await, pause, "{line}");
    }
}

/// A parser of the user's own reading a header no built-in family knows.
#[derive(Debug)]
struct Credits;

impl gentlify_headers::ParseHeaders for Credits {
    fn name(&self) -> &'static str {
        "credits"
    }
    fn parse(&self, headers: &http::HeaderMap, _: std::time::SystemTime) -> Option<QuotaReport> {
        let left = headers.get("x-credits-left")?.to_str().ok()?.parse().ok()?;
        let quota = gentlify_core::Quota::new(Dimension::Requests).with_remaining(left);
        Some(QuotaReport::new(self.name(), vec![quota]))
    }
}

#[tokio::test(start_paused = true)]
async fn custom_parsers_run_whatever_headers_the_response_carries() {
    let (_, reports) = after_one(
        HeaderFeedbackLayer::new().parser(Credits),
        200,
        "content-type: application/json\nx-credits-left: 17",
    )
    .await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].source, "credits");
    assert_eq!(reports[0].quotas[0].remaining, Some(17));
}

// ---- Property: skipping absent families changes nothing --------------------------------------

mod same_as_every_parser {
    use super::*;
    use proptest::prelude::*;

    /// Names of every family, near misses, and unrelated headers.
    const NAMES: &[&str] = &[
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
        "x-ratelimit-resource",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-reset",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
        "grpc-retry-pushback-ms",
        "x-ratelimit",
        "content-type",
        "x-request-id",
        "anthropic-organization-id",
    ];

    const VALUES: &[&str] = &[
        "0",
        "5",
        "1.5s",
        "2025-08-21T12:40:59Z",
        "1755780059",
        "\"default\";r=0;t=3",
        "\"default\";q=10;w=60",
        "false",
        "core",
        "junk",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn the_layer_publishes_what_every_default_parser_reads(
            fields in proptest::collection::vec(
                (proptest::sample::select(NAMES), proptest::sample::select(VALUES)),
                0..6,
            ),
            status in proptest::sample::select(vec![200u16, 429, 503]),
        ) {
            let mut headers = http::HeaderMap::new();
            for (name, value) in fields {
                headers.append(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                );
            }
            let now = at(1_755_780_000_000);
            let expected: Vec<(&str, Vec<gentlify_core::Quota>)> =
                gentlify_headers::default_parsers()
                    .iter()
                    .filter_map(|p| p.parse(&headers, now))
                    .map(|r| (r.source, r.quotas))
                    .collect();

            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let published = runtime.block_on(async move {
                let (feedback, reports) = Reports::on_new_handle();
                let answer = service_fn(move |_req: http::Request<()>| {
                    let mut response = http::Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    *response.headers_mut() = headers.clone();
                    std::future::ready(Ok::<_, Infallible>(response))
                });
                let mut service = HeaderFeedbackLayer::new()
                    .feedback(feedback.clone())
                    .wall_clock(move || now)
                    .layer(answer);
                send(&mut service).await;
                let published: Vec<_> = reports
                    .taken()
                    .into_iter()
                    .map(|r| (r.source, r.quotas))
                    .collect();
                published
            });
            prop_assert_eq!(published, expected);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_report_is_dated_by_the_send_of_the_attempt_whose_response_carried_it() {
    // Attempt A is sent at 0 s, attempt B at 0.5 s; B's response comes back at 0.999 s, A's at 1 s.
    // Each report says its own attempt's send instant, and the instant it was read.
    let (feedback, reports) = Reports::on_new_handle();
    let start = Instant::now();
    let service = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(service_fn(move |request: http::Request<u64>| async move {
            let remaining = *request.body();
            let at = if remaining == 20 { ms(1_000) } else { ms(999) };
            tokio::time::sleep_until(start + at).await;
            let response = http::Response::builder()
                .header("x-ratelimit-limit-requests", "60")
                .header("x-ratelimit-remaining-requests", remaining.to_string())
                .header("x-ratelimit-reset-requests", "40s")
                .body(Full::new(Bytes::from("{}")))
                .unwrap();
            Ok::<_, Infallible>(response)
        }));
    let a = tokio::spawn(service.clone().oneshot(http::Request::new(20)));
    tokio::task::yield_now().await;
    tokio::time::advance(ms(500)).await;
    let b = tokio::spawn(service.clone().oneshot(http::Request::new(15)));
    tokio::task::yield_now().await;
    drop(a.await.unwrap().unwrap());
    drop(b.await.unwrap().unwrap());

    let mut dated: Vec<_> = reports
        .taken()
        .iter()
        .map(|r| {
            let remaining = common::quota(r, Dimension::Requests).remaining;
            (
                remaining,
                r.sent_at.map(|s| s - start),
                r.observed_at - start,
            )
        })
        .collect();
    dated.sort();
    assert_eq!(
        dated,
        [
            (Some(15), Some(ms(500)), ms(999)),
            (Some(20), Some(Duration::ZERO), ms(1_000)),
        ]
    );
}
