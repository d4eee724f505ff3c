//! A limiter alone, far below its limit and out of slow start, reads the clock for one request
//! in sixteen: the others are still counted, still heard by the failure window, and still
//! decelerate at most once per round trip.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{finish, request, Upstream};
use gentlify_concurrency::{
    AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer, Aimd, Gradient, Pacing, PermitBody,
};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

const SECOND: Duration = Duration::from_secs(1);

/// A limit of 20 without pacing, set up further by `with`.
fn limit_20(
    with: impl FnOnce(AdaptiveConcurrencyBuilder) -> AdaptiveConcurrencyBuilder,
) -> AdaptiveConcurrencyLayer {
    with(
        AdaptiveConcurrencyLayer::builder()
            .initial(20)
            .pacing(Pacing::disabled()),
    )
    .build()
    .unwrap()
}

/// A limit of 20, out of slow start (in slow start below the maximum every request is timed).
fn far_below() -> AdaptiveConcurrencyLayer {
    limit_20(|b| b.aimd(Aimd::new().slow_start(false)))
}

/// `n` requests one at a time, each read to its end.
async fn one_at_a_time<S>(service: &S, n: usize)
where
    S: tower::Service<
            http::Request<String>,
            Response = http::Response<PermitBody<Full<Bytes>>>,
            Error = tower::BoxError,
        > + Clone,
{
    for i in 0..n {
        let response = service.clone().oneshot(request(&i.to_string()));
        finish(response.await.unwrap()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn far_below_the_limit_every_attempt_is_still_counted() {
    let layer = far_below();
    one_at_a_time(&layer.layer(Upstream::ok_after(SECOND)), 40).await;
    assert_eq!(layer.feedback().snapshot().attempts_success, 40);
}

#[tokio::test(start_paused = true)]
async fn far_below_the_limit_untimed_successes_still_end_a_run_of_failures() {
    // One at a time, far below a limit of 20: only the first request is timed. Three failures
    // in a row would be a storm (a deceleration); the successes between break the run.
    let layer = far_below();
    let upstream = Upstream::scripted(|name, _| {
        let status = if name.starts_with("fail") { 500 } else { 200 };
        (status, SECOND)
    });
    let service = layer.layer(upstream);
    for name in [
        "ok0", "fail1", "fail2", "ok3", "ok4", "ok5", "fail6", "fail7",
    ] {
        finish(service.clone().oneshot(request(name)).await.unwrap()).await;
    }
    assert_eq!(layer.snapshot().decelerations, 0);
    let counts = layer.feedback().snapshot();
    assert_eq!((counts.attempts_success, counts.attempts_failure), (4, 4));
}

#[tokio::test(start_paused = true)]
async fn far_below_the_limit_an_untimed_refusal_decelerates_once_per_round_trip() {
    // A (timed), B and C (untimed) are sent at 0 s; A's 503 at 1 s decelerates. B's 429 and
    // C's 503 answer the load from before it: no second deceleration. D, untimed, is sent at
    // 1.5 s, after it: its 503 at 4.5 s does decelerate.
    let layer = far_below();
    let upstream = Upstream::scripted(|name, _| match name {
        "a" => (503, SECOND),
        "b" => (429, 2 * SECOND),
        "c" => (503, 3 * SECOND),
        _ => (503, 3 * SECOND),
    });
    let service = layer.layer(upstream);
    let calls: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| tokio::spawn(service.clone().oneshot(request(name))))
        .collect();
    tokio::time::sleep(SECOND + SECOND / 2).await;
    assert_eq!(layer.snapshot().decelerations, 1, "A's refusal");
    let d = tokio::spawn(service.clone().oneshot(request("d")));
    for call in calls {
        finish(call.await.unwrap().unwrap()).await;
    }
    assert_eq!(
        layer.snapshot().decelerations,
        1,
        "B and C were sent before it"
    );
    finish(d.await.unwrap().unwrap()).await;
    assert_eq!(layer.snapshot().decelerations, 2, "D was sent after it");
}

/// The outcome events a run wrote: all of them, and those of untimed attempts.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// 32 requests one at a time through `layer` (far below its limit of 20): how many attempts
/// were published, and how many of them untimed.
async fn timed_and_untimed(layer: AdaptiveConcurrencyLayer) -> (usize, usize) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    one_at_a_time(&layer.layer(Upstream::ok_after(SECOND)), 32).await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (
        text.matches("gentlify attempt outcome").count(),
        text.matches("gentlify attempt outcome (untimed)").count(),
    )
}

#[tokio::test(start_paused = true)]
async fn one_request_in_sixteen_is_timed_far_below_the_limit_out_of_slow_start_only() {
    assert_eq!(timed_and_untimed(far_below()).await, (32, 30));
    // In slow start below the maximum (the default at first), every success heard once the
    // limit fills may grow it, and feeds the knee: every request is timed.
    assert_eq!(timed_and_untimed(limit_20(|b| b)).await, (32, 0));
    // At the maximum, slow start cannot grow the limit.
    assert_eq!(timed_and_untimed(limit_20(|b| b.max(20))).await, (32, 30));
    // The gradient controller reads every latency.
    let gradient = limit_20(|b| b.gradient(Gradient::new()));
    assert_eq!(timed_and_untimed(gradient).await, (32, 0));
}
