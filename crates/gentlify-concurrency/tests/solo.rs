//! A limiter alone on a handle of its own sends requests without a slot; the permit, the
//! outcomes and the ends are the same as with one.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{finish, request, Streamed, Upstream};
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Aimd, Pacing};
use gentlify_core::{Feedback, Slot};
use http_body_util::{BodyExt, Full};
use tokio::time::{advance, Instant};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

type Seen = Arc<Mutex<Vec<bool>>>;

/// An upstream that notes in `seen` whether each request it gets carries a slot.
fn slot_seen(
    seen: &Seen,
) -> impl Service<
    http::Request<String>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let log = Arc::clone(seen);
    service_fn(move |req: http::Request<String>| {
        log.lock()
            .unwrap()
            .push(Slot::from_extensions(req.extensions()).is_some());
        async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok")))) }
    })
}

#[tokio::test(start_paused = true)]
async fn a_limiter_on_a_handle_of_its_own_makes_no_slot_until_the_handle_is_handed_out() {
    let seen = Seen::default();
    let upstream = slot_seen(&seen);
    let alone = AdaptiveConcurrencyLayer::new();
    let service = alone.layer(upstream.clone());
    finish(service.clone().oneshot(request("a")).await.unwrap()).await;
    // Handed out: another layer may now share the requests, so each gets a slot.
    let _shared = alone.feedback().clone();
    finish(service.clone().oneshot(request("b")).await.unwrap()).await;
    // Built on a handle given to it: a slot from the start.
    let given = AdaptiveConcurrencyLayer::builder()
        .feedback(Feedback::new())
        .build()
        .unwrap();
    finish(given.layer(upstream).oneshot(request("c")).await.unwrap()).await;
    assert_eq!(*seen.lock().unwrap(), [false, true, true]);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_comes_with_a_slot_keeps_it_and_the_permit_goes_into_it() {
    let seen = Seen::default();
    let upstream = slot_seen(&seen);
    let layer = AdaptiveConcurrencyLayer::new();
    let outer = Feedback::new();
    let mut req = request("a");
    let (slot, end) = Slot::get_or_insert(req.extensions_mut(), &outer);
    let response = layer.layer(upstream).oneshot(req).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [true]);
    finish(response).await;
    // The slot made outside holds the permit until it ends, not the body.
    assert_eq!(layer.snapshot().in_flight, 1);
    assert!(!slot.is_ended());
    drop(end);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_slot_the_permit_is_held_until_the_body_ends_or_is_dropped() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    let service = layer.layer(Upstream::ok_after(SECOND));
    let read = service.clone().oneshot(request("a")).await.unwrap();
    let dropped = service.clone().oneshot(request("b")).await.unwrap();
    assert_eq!(layer.snapshot().in_flight, 2, "heads in, bodies unread");
    let mut body = read.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(
        layer.snapshot().in_flight,
        1,
        "the last frame ends the body"
    );
    drop(body);
    drop(dropped);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_slot_a_cancelled_call_and_an_error_give_the_permit_back_and_are_heard() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(4)
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    let service = layer.layer(service_fn(|req: http::Request<String>| async move {
        match req.body().as_str() {
            "fails" => Err::<http::Response<Full<Bytes>>, BoxError>("connection reset".into()),
            "refused" => Ok(http::Response::builder()
                .status(429)
                .body(Full::new(Bytes::new()))
                .unwrap()),
            _ => {
                tokio::time::sleep(10 * SECOND).await;
                Ok(http::Response::new(Full::new(Bytes::from("late"))))
            }
        }
    }));
    assert!(service.clone().oneshot(request("fails")).await.is_err());
    let refused = service.clone().oneshot(request("refused")).await.unwrap();
    assert_eq!(refused.status(), 429);
    drop(refused);
    let mut slow = tokio_test::task::spawn(service.clone().oneshot(request("slow")));
    tokio_test::assert_pending!(slow.poll());
    assert_eq!(layer.snapshot().in_flight, 1);
    drop(slow);
    assert_eq!(layer.snapshot().in_flight, 0);
    // Every attempt was heard once, as with a slot: the 429 decelerated the limit.
    assert_eq!(layer.snapshot().decelerations, 1);
    let counts = layer.feedback().snapshot();
    assert_eq!(
        (
            counts.attempts_failure,
            counts.attempts_overloaded,
            counts.attempts_cancelled,
            counts.attempts_success,
        ),
        (1, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_slot_a_class_from_the_trailers_is_heard_at_the_end_of_the_body() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(4)
        .pacing(Pacing::disabled())
        .build()
        .unwrap();
    // gRPC: the head is 200; `grpc-status: 8` (RESOURCE_EXHAUSTED) comes in the trailers.
    let service = layer.layer(service_fn(|_: http::Request<String>| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("8"));
        let body = Full::new(Bytes::from("message")).with_trailers(async { Some(Ok(trailers)) });
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap();
        Ok::<_, Infallible>(response)
    }));
    let response = service.oneshot(request("a")).await.unwrap();
    assert_eq!(layer.snapshot().decelerations, 0, "not known from the head");
    assert_eq!(layer.snapshot().in_flight, 1);
    response.into_body().collect().await.unwrap();
    assert_eq!(layer.snapshot().in_flight, 0);
    assert_eq!(layer.snapshot().decelerations, 1, "heard from the trailers");
}

/// Growth after a change waits for one body's holding time when answers stream; a whole body the
/// caller reads late held the server no longer than its head, with a slot or without one.
async fn growth_after_a_change(with_slot: bool, streamed: bool) -> usize {
    let builder = AdaptiveConcurrencyLayer::builder()
        .initial(3)
        .max(10)
        .aimd(Aimd::new().slow_start(false).knee(false));
    let builder = if with_slot {
        builder.feedback(Feedback::new())
    } else {
        builder
    };
    let layer = builder.build().unwrap();
    let service = layer.layer(service_fn(move |_: http::Request<String>| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = if streamed {
            http_body_util::Either::Left(Streamed::new(10 * SECOND))
        } else {
            http_body_util::Either::Right(Full::new(Bytes::from("whole")))
        };
        Ok::<_, Infallible>(http::Response::new(body))
    }));
    // Two answers whose bodies end 10 s after their heads: read as they stream, or read late.
    let mut first = Vec::new();
    for name in ["a", "b"] {
        let response = service.clone().oneshot(request(name)).await.unwrap();
        if streamed {
            first.push(tokio::spawn(finish(response)));
        } else {
            first.push(tokio::spawn(async move {
                tokio::time::sleep(10 * SECOND).await;
                finish(response).await;
            }));
        }
    }
    advance(11 * SECOND).await;
    for reading in first {
        reading.await.unwrap();
    }
    // A change, then three successes sent after it fill the limit.
    layer.set_limit(3);
    let changed = Instant::now();
    let mut held = Vec::new();
    for name in ["c", "d", "e"] {
        held.push(service.clone().oneshot(request(name)).await.unwrap());
    }
    assert!(changed.elapsed() < SECOND);
    layer.snapshot().limit
}

#[tokio::test(start_paused = true)]
async fn streamed_bodies_hold_off_growth_after_a_change_without_a_slot() {
    assert_eq!(growth_after_a_change(false, true).await, 3);
}

#[tokio::test(start_paused = true)]
async fn streamed_bodies_hold_off_growth_after_a_change_with_a_slot() {
    assert_eq!(growth_after_a_change(true, true).await, 3);
}

#[tokio::test(start_paused = true)]
async fn whole_bodies_read_late_do_not_hold_off_growth_without_a_slot() {
    assert_eq!(growth_after_a_change(false, false).await, 4);
}

#[tokio::test(start_paused = true)]
async fn whole_bodies_read_late_do_not_hold_off_growth_with_a_slot() {
    assert_eq!(growth_after_a_change(true, false).await, 4);
}
