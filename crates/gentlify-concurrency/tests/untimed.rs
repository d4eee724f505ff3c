//! A limiter alone, far below its limit, reads the clock for one request in sixteen: the others
//! are still counted, still heard by the failure window, and still decelerate at most once per
//! round trip.

mod common;

use std::time::Duration;

use common::{finish, request, Upstream};
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing};
use tower::{Layer, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

fn far_below() -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .initial(20)
        .pacing(Pacing::disabled())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn far_below_the_limit_every_attempt_is_still_counted() {
    let layer = far_below();
    let service = layer.layer(Upstream::ok_after(SECOND));
    for i in 0..40 {
        finish(
            service
                .clone()
                .oneshot(request(&i.to_string()))
                .await
                .unwrap(),
        )
        .await;
    }
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
