//! Admission: permits, the FIFO queue, its bounds, cancellation, shrinking, pause and pacing.

mod common;

use std::time::Duration;

use common::{finish, overloaded, publish, request, settle, Upstream};
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing};
use gentlify_core::error::{AcquireTimeout, QueueFull};
use gentlify_core::{Class, Feedback};
use tokio::time::{advance, Instant};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

fn layer(initial: usize) -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .initial(initial)
        .max(initial) // a fixed limit: these tests are about admission, not control
        .pacing(Pacing::disabled())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit_then_makes_the_next_wait() {
    let layer = layer(2);
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());

    let a = template.clone().oneshot(request("a")).await.unwrap();
    let b = template.clone().oneshot(request("b")).await.unwrap();
    assert_eq!(layer.snapshot().in_flight, 2);

    let mut c = template.clone();
    let mut ready = task::spawn(c.ready());
    assert_pending!(ready.poll());
    assert_eq!(layer.snapshot().waiting, 1);

    finish(a).await;
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    drop(ready);
    assert_eq!(layer.snapshot().in_flight, 2);
    assert_eq!(layer.snapshot().waiting, 0);
    finish(b).await;
    let c = c.call(request("c")).await.unwrap();
    finish(c).await;
    assert_eq!(layer.snapshot().in_flight, 0);
    assert_eq!(upstream.arrivals(), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_in_arrival_order() {
    let layer = layer(1);
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());
    let start = Instant::now();

    let mut tasks = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        let svc = template.clone();
        tasks.push(tokio::spawn(async move {
            finish(svc.oneshot(request(name)).await.unwrap()).await
        }));
        settle().await;
    }
    assert_eq!(layer.snapshot().waiting, 4);
    for t in tasks {
        t.await.unwrap();
    }
    let arrivals = upstream.arrival_times();
    let order: Vec<&str> = arrivals.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d", "e"]);
    for (i, (_, at)) in arrivals.iter().enumerate() {
        assert_eq!(
            *at - start,
            SECOND * i as u32,
            "one at a time, back to back"
        );
    }
    assert_eq!(upstream.peak(), 1);
}

#[tokio::test(start_paused = true)]
async fn permit_is_held_until_the_body_ends() {
    let layer = layer(1);
    let template = layer.layer(Upstream::ok_after(SECOND));

    let response = template.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(
        layer.snapshot().in_flight,
        1,
        "headers arrived, body unread"
    );
    let mut next = template.clone();
    let mut ready = task::spawn(next.ready());
    assert_pending!(ready.poll());

    finish(response).await;
    assert_eq!(layer.snapshot().in_flight, 1, "handed to the waiter");
    assert_ready_ok!(ready.poll());
}

#[tokio::test(start_paused = true)]
async fn permit_is_released_when_the_body_is_dropped() {
    let layer = layer(1);
    let template = layer.layer(Upstream::ok_after(SECOND));
    let response = template.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(layer.snapshot().in_flight, 1);
    drop(response);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_while_holding_releases_the_permit() {
    let layer = layer(1);
    let upstream = Upstream::ok_after(10 * SECOND);
    let template = layer.layer(upstream.clone());

    let mut call = task::spawn(template.clone().oneshot(request("a")));
    assert_pending!(call.poll());
    assert_eq!(layer.snapshot().in_flight, 1);
    assert_eq!(upstream.arrivals(), ["a"]);
    drop(call);
    assert_eq!(layer.snapshot().in_flight, 0);

    let b = template.clone().oneshot(request("b")).await.unwrap();
    assert_eq!(layer.snapshot().in_flight, 1);
    finish(b).await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_while_waiting_gives_up_the_place() {
    let layer = layer(1);
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());

    let a = template.clone().oneshot(request("a")).await.unwrap();
    let mut b = task::spawn(template.clone().oneshot(request("b")));
    let mut c = task::spawn(template.clone().oneshot(request("c")));
    assert_pending!(b.poll());
    assert_pending!(c.poll());
    assert_eq!(layer.snapshot().waiting, 2);

    drop(b);
    assert_eq!(layer.snapshot().waiting, 1);
    finish(a).await;
    assert!(c.is_woken());
    let c = c.await.unwrap();
    finish(c).await;
    assert_eq!(upstream.arrivals(), ["a", "c"]);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_permit_granted_to_a_waiter_that_leaves_passes_to_the_next() {
    let layer = layer(1);
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());

    let a = template.clone().oneshot(request("a")).await.unwrap();
    let mut b = task::spawn(template.clone().oneshot(request("b")));
    let mut c = task::spawn(template.clone().oneshot(request("c")));
    assert_pending!(b.poll());
    assert_pending!(c.poll());
    finish(a).await; // granted to b, which is not polled again
    assert!(!c.is_woken());
    drop(b);
    assert!(c.is_woken(), "b's permit went on to c");
    finish(c.await.unwrap()).await;
    assert_eq!(upstream.arrivals(), ["a", "c"]);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_rejects_with_a_typed_error() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(1)
        .max(1)
        .acquire_timeout(2 * SECOND)
        .build()
        .unwrap();
    let template = layer.layer(Upstream::ok_after(SECOND));
    let a = template.clone().oneshot(request("a")).await.unwrap();

    let mut b = template.clone();
    let mut ready = task::spawn(b.ready());
    assert_pending!(ready.poll());
    advance(2 * SECOND).await;
    // `poll_ready` stays `Ok`: the rejection comes from the response future.
    assert_ready_ok!(ready.poll());
    drop(ready);
    let err = b.call(request("b")).await.unwrap_err();
    let timeout = err
        .downcast_ref::<AcquireTimeout>()
        .expect("AcquireTimeout");
    assert_eq!(timeout.waited(), 2 * SECOND);
    assert_eq!(layer.snapshot().waiting, 0);
    assert_eq!(layer.snapshot().in_flight, 1);
    finish(a).await;
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once_with_queue_full() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(1)
        .max(1)
        .max_waiting(1)
        .build()
        .unwrap();
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());
    let a = template.clone().oneshot(request("a")).await.unwrap();
    let mut b = task::spawn(template.clone().oneshot(request("b")));
    assert_pending!(b.poll());

    let err = template.clone().oneshot(request("c")).await.unwrap_err();
    assert_eq!(err.downcast_ref::<QueueFull>(), Some(&QueueFull::new(1)));
    finish(a).await;
    finish(b.await.unwrap()).await;
    assert_eq!(upstream.arrivals(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_shrink_takes_effect_while_every_permit_is_in_flight() {
    let layer = layer(4);
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());
    let mut held = Vec::new();
    for name in ["a", "b", "c", "d"] {
        held.push(template.clone().oneshot(request(name)).await.unwrap());
    }
    layer.set_limit(2);
    assert_eq!(layer.snapshot().limit, 2);

    let mut e = task::spawn(template.clone().oneshot(request("e")));
    assert_pending!(e.poll());
    finish(held.pop().unwrap()).await; // 3 in flight
    assert_pending!(e.poll());
    finish(held.pop().unwrap()).await; // 2 in flight: still not under 2
    assert_pending!(e.poll());
    assert_eq!(upstream.arrivals().len(), 4);
    finish(held.pop().unwrap()).await; // 1 in flight
    assert!(e.is_woken());
    finish(e.await.unwrap()).await;
    assert_eq!(upstream.arrivals().last().unwrap(), "e");
}

#[tokio::test(start_paused = true)]
async fn a_deceleration_shrinks_below_what_is_in_flight() {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(10)
        .max(10)
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    let template = layer.layer(Upstream::ok_after(SECOND));
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(
            template
                .clone()
                .oneshot(request(&i.to_string()))
                .await
                .unwrap(),
        );
    }
    publish(&feedback, overloaded(), Instant::now());
    assert_eq!(layer.snapshot().limit, 7);
    let mut next = task::spawn(template.clone().oneshot(request("next")));
    for _ in 0..3 {
        finish(held.pop().unwrap()).await;
        assert_pending!(next.poll(), "{} in flight", layer.snapshot().in_flight);
    }
    finish(held.pop().unwrap()).await;
    finish(next.await.unwrap()).await;
}

#[tokio::test(start_paused = true)]
async fn one_layer_value_on_two_services_shares_one_limit() {
    let layer = layer(2);
    let first = Upstream::ok_after(SECOND);
    let second = Upstream::ok_after(SECOND);
    let one = layer.layer(first.clone());
    let two = layer.layer(second.clone());

    let a = one.clone().oneshot(request("a")).await.unwrap();
    let b = two.clone().oneshot(request("b")).await.unwrap();
    let mut c = task::spawn(two.clone().oneshot(request("c")));
    assert_pending!(c.poll());
    assert_eq!(layer.snapshot().limit, 2);
    assert_eq!(layer.snapshot().in_flight, 2);
    finish(a).await;
    finish(c.await.unwrap()).await;
    finish(b).await;
}

#[tokio::test(start_paused = true)]
async fn two_layers_on_one_handle_keep_their_own_limits() {
    let feedback = Feedback::new();
    let build = |n| {
        AdaptiveConcurrencyLayer::builder()
            .feedback(feedback.clone())
            .initial(n)
            .build()
            .unwrap()
    };
    let (one, two) = (build(1), build(3));
    let a = one
        .layer(Upstream::ok_after(SECOND))
        .oneshot(request("a"))
        .await
        .unwrap();
    assert_eq!((one.snapshot().in_flight, two.snapshot().in_flight), (1, 0));
    assert_eq!(feedback.controllers(), 2);
    assert_eq!(feedback.snapshot().parts.len(), 2);
    finish(a).await;
}

#[tokio::test(start_paused = true)]
async fn the_pause_gate_holds_dispatch_until_its_instant() {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .build()
        .unwrap();
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());
    let start = Instant::now();
    feedback.pause_gate().pause_for(3 * SECOND);

    let mut call = task::spawn(template.clone().oneshot(request("a")));
    assert_pending!(call.poll());
    assert_eq!(layer.snapshot().in_flight, 0, "not admitted while paused");
    finish(call.await.unwrap()).await;
    let (_, sent) = upstream.arrival_times()[0];
    assert_eq!(sent - start, 3 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_429_that_names_a_delay_holds_every_dispatch_for_it() {
    // `b` is refused with `retry-after: 2`; `c`, sent through the same handle a second later,
    // waits until the named instant instead of being refused too.
    for pause in [true, false] {
        let feedback = Feedback::new();
        let layer = AdaptiveConcurrencyLayer::builder()
            .feedback(feedback.clone())
            .initial(8)
            .pacing(Pacing::disabled())
            .pause_on_retry_after(pause)
            .build()
            .unwrap();
        let upstream = Upstream::ok_after(SECOND);
        let template = layer.layer(upstream.clone());
        let start = Instant::now();
        feedback.publish(&gentlify_core::Outcome::new(
            Class::Overloaded {
                retry_after: Some(2 * SECOND),
            },
            0,
            start,
        ));
        advance(SECOND).await;
        finish(template.clone().oneshot(request("c")).await.unwrap()).await;
        let (_, sent) = upstream.arrival_times()[0];
        let expected = if pause { 2 * SECOND } else { SECOND };
        assert_eq!(sent - start, expected, "pause_on_retry_after({pause})");
    }
}

#[tokio::test(start_paused = true)]
async fn pacing_spaces_dispatches_after_a_deceleration() {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(10)
        .pacing(
            Pacing::new()
                .widen_to(Duration::from_millis(100))
                .jitter(0.0),
        )
        .build()
        .unwrap();
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());

    // Calm: no spacing.
    let first: Vec<_> =
        futures_util::future::join_all(["a", "b"].map(|n| template.clone().oneshot(request(n))))
            .await;
    let times = upstream.arrival_times();
    assert_eq!(times[0].1, times[1].1);
    for r in first {
        finish(r.unwrap()).await;
    }

    publish(&feedback, overloaded(), Instant::now());
    assert_eq!(layer.snapshot().pacing_interval, Duration::from_millis(100));
    let start = Instant::now();
    let responses = futures_util::future::join_all(
        ["c", "d", "e"].map(|n| template.clone().oneshot(request(n))),
    )
    .await;
    let times: Vec<Duration> = upstream.arrival_times()[2..]
        .iter()
        .map(|(_, t)| *t - start)
        .collect();
    assert_eq!(times, [0, 100, 200].map(Duration::from_millis));
    for r in responses {
        finish(r.unwrap()).await;
    }

    publish(&feedback, overloaded(), Instant::now());
    assert_eq!(layer.snapshot().pacing_interval, Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn pacing_jitters_each_interval() {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(20)
        .pacing(
            Pacing::new()
                .widen_to(Duration::from_millis(100))
                .jitter(0.5),
        )
        .build()
        .unwrap();
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());
    publish(&feedback, overloaded(), Instant::now());
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let responses =
        futures_util::future::join_all(names.iter().map(|n| template.clone().oneshot(request(n))))
            .await;
    let times = upstream.arrival_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(gaps
        .iter()
        .all(|g| *g >= Duration::from_millis(50) && *g <= Duration::from_millis(150)));
    assert!(gaps.windows(2).any(|w| w[0] != w[1]), "jittered: {gaps:?}");
    for r in responses {
        finish(r.unwrap()).await;
    }
}
