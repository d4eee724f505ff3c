//! Several layers on one request: each attempt is published exactly once per handle, whichever
//! layer settles it first, and the slot's end publishes what no layer did, once per handle.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gentlify_core::{settle, BoxError, Class, Classified, Feedback, Outcome, Slot, Tracked};
use http_body_util::BodyExt;
use support::{response, Frames, Recorder, Releases, TestError};
use tokio::time::Instant;

fn recorded(feedback: &Feedback) -> Arc<Recorder> {
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    recorder
}

#[tokio::test(start_paused = true)]
async fn an_outer_layer_keeps_the_class_a_layer_nearer_the_server_published() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let (slot, _end) = Slot::new(&feedback);
    let outer = slot.dispatch(&feedback);
    let inner = slot.dispatch(&feedback);
    let busy = response(503, Frames::data(&[]));
    let overloaded = Class::Overloaded { retry_after: None };
    assert_eq!(inner.on_response(&busy), Classified::Ready(overloaded));
    // The outer layer is shown another head (a layer in between rewrote it): the attempt's class
    // is the one already published, and nothing is published again.
    let rewritten = response(200, Frames::data(&[]));
    assert_eq!(outer.on_response(&rewritten), Classified::Ready(overloaded));
    assert_eq!(outer.on_error(&TestError("late")), Some(overloaded));
    assert_eq!(outer.on_trailers(None), overloaded);
    assert!(!outer.publish(Class::Success));
    assert_eq!(recorder.classes(), ["overloaded"]);
    assert_eq!(slot.last_outcome().map(|o| o.class), Some(overloaded));
}

#[tokio::test(start_paused = true)]
async fn a_deferred_429_settled_by_an_inner_layer_is_published_once_at_the_end_of_the_body() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let (slot, outer_end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
    releases.put_in(&slot);
    let outer = slot.dispatch(&feedback);
    let (same, inner_end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
    let inner = same.dispatch(&feedback);
    let head = response(
        429,
        Frames::data(&["{\"error\":{\"code\":\"rate_limit\"}}"]),
    );
    let resp = settle(Ok::<_, BoxError>(head), &inner, inner_end).unwrap();
    let resp = settle(Ok::<_, BoxError>(resp), &outer, outer_end).unwrap();
    assert!(
        recorder.classes().is_empty(),
        "the body may still refine it"
    );
    resp.into_body().collect().await.unwrap();
    assert_eq!(recorder.classes(), ["overloaded"]);
    assert_eq!(releases.count(), 1);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_trailers_seen_by_two_layers_on_one_handle_are_published_once() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    let grpc = http::Response::builder()
        .header("content-type", "application/grpc")
        .body(Frames::data(&["msg"]).then_trailers(trailers))
        .unwrap();
    let mut req = http::Request::new(());
    let (slot, outer_end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
    let outer = slot.dispatch(&feedback);
    let inner = slot.dispatch(&feedback);
    let resp = settle(Ok::<_, BoxError>(grpc), &inner, None).unwrap();
    let resp = settle(Ok::<_, BoxError>(resp), &outer, outer_end).unwrap();
    assert!(
        recorder.classes().is_empty(),
        "not known before the trailers"
    );
    resp.into_body().collect().await.unwrap();
    assert_eq!(recorder.classes(), ["failure"]);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn layers_on_two_handles_each_publish_the_attempt_once() {
    let outer_handle = Feedback::new();
    let inner_handle = Feedback::new();
    let outer_log = recorded(&outer_handle);
    let inner_log = recorded(&inner_handle);
    let mut req = http::Request::new(());
    let (slot, outer_end) = Slot::get_or_insert(req.extensions_mut(), &outer_handle);
    let outer = slot.dispatch(&outer_handle);
    let (same, inner_end) = Slot::get_or_insert(req.extensions_mut(), &inner_handle);
    assert!(same.same_as(&slot) && inner_end.is_none());
    let inner = same.dispatch(&inner_handle);
    let resp = settle(
        Ok::<_, BoxError>(response(500, Frames::data(&["oops"]))),
        &inner,
        inner_end,
    )
    .unwrap();
    assert_eq!(inner_log.classes(), ["failure"]);
    assert!(outer_log.classes().is_empty());
    let resp = settle(Ok::<_, BoxError>(resp), &outer, outer_end).unwrap();
    assert_eq!(outer_log.classes(), ["failure"]);
    resp.into_body().collect().await.unwrap();
    assert_eq!(outer_log.classes(), ["failure"], "once per handle");
    assert_eq!(inner_log.classes(), ["failure"], "once per handle");
    assert_eq!(outer_handle.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_between_two_handles_publishes_one_cancelled_attempt_to_each() {
    let outer_handle = Feedback::new();
    let inner_handle = Feedback::new();
    let outer_log = recorded(&outer_handle);
    let inner_log = recorded(&inner_handle);
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let (slot, outer_end) = Slot::get_or_insert(req.extensions_mut(), &outer_handle);
    releases.put_in(&slot);
    let outer = slot.dispatch(&outer_handle);
    let inner = slot.dispatch(&inner_handle);
    let never = std::future::pending::<Result<http::Response<Frames>, BoxError>>();
    let future = Tracked::new(Tracked::new(never, inner, None), outer, outer_end);
    drop(future);
    assert_eq!(outer_log.classes(), ["cancelled"]);
    assert_eq!(inner_log.classes(), ["cancelled"]);
    assert_eq!(releases.count(), 1);
    assert_eq!(slot.last_outcome().map(|o| o.class), Some(Class::Cancelled));
    assert_eq!(outer_handle.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deferred_429_on_another_handle_is_published_there_when_the_slot_ends() {
    let owner = Feedback::new();
    let other = Feedback::new();
    let owner_log = recorded(&owner);
    let other_log = recorded(&other);
    let (slot, end) = Slot::new(&owner);
    let _outer = slot.dispatch(&owner);
    let inner = slot.dispatch(&other);
    let head = response(429, Frames::data(&[]));
    assert!(matches!(inner.on_response(&head), Classified::Ready(_)));
    assert!(other_log.classes().is_empty(), "deferred");
    end.end(gentlify_core::EndReason::BodyEnded);
    assert_eq!(other_log.classes(), ["overloaded"]);
    assert_eq!(owner_log.classes(), ["cancelled"], "never answered there");
}

#[tokio::test(start_paused = true)]
async fn dispatch_at_keeps_the_instant_it_is_given_and_latency_runs_from_it() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let (slot, _end) = Slot::new(&feedback);
    let read_by_the_layer = Instant::now();
    tokio::time::advance(Duration::from_millis(5)).await;
    let dispatched = slot.dispatch_at(&feedback, read_by_the_layer);
    assert_eq!(dispatched.sent_at(), read_by_the_layer);
    tokio::time::advance(Duration::from_millis(40)).await;
    dispatched.on_response(&response(200, Frames::data(&[])));
    let outcome: Outcome = recorder.0.lock().unwrap()[0].clone();
    assert_eq!(outcome.sent_at, read_by_the_layer);
    assert_eq!(outcome.latency, Duration::from_millis(45));
    assert_eq!(outcome.finished_at(), Instant::now());
}

/// Spins until the (real) clock has moved on from `since`: a fresh read inside the closure below
/// then differs from the outer layer's, whatever the machine's speed.
fn clock_moves_past(since: Instant) {
    while Instant::now() == since {
        std::hint::spin_loop();
    }
}

#[test]
fn a_layer_inside_another_layers_call_shares_its_clock_read() {
    let feedback = Feedback::new();
    let (slot, _end) = Slot::new(&feedback);
    let (outer, sending) = slot.dispatch_sending(&feedback);
    clock_moves_past(Instant::now());
    let inner = slot.dispatch(&feedback);
    drop(sending);
    assert_eq!(inner.sent_at(), outer.sent_at());
    assert_eq!(inner.attempt(), outer.attempt());
}

#[test]
fn a_new_attempt_or_another_handle_inside_the_call_reads_the_clock() {
    let feedback = Feedback::new();
    let other = Feedback::new();
    let (slot, _end) = Slot::new(&feedback);
    let (outer, _sending) = slot.dispatch_sending(&feedback);
    clock_moves_past(Instant::now());
    let elsewhere = slot.dispatch(&other);
    slot.next_attempt();
    let retry = slot.dispatch(&feedback);
    assert!(elsewhere.sent_at() > outer.sent_at());
    assert!(retry.sent_at() > outer.sent_at());
}

#[tokio::test(start_paused = true)]
async fn after_the_call_returns_a_dispatch_reads_the_clock_again() {
    let feedback = Feedback::new();
    let (slot, _end) = Slot::new(&feedback);
    let (outer, sending) = slot.dispatch_sending(&feedback);
    drop(sending);
    tokio::time::advance(Duration::from_millis(30)).await;
    // A layer that dispatches from its future, after a wait (a budget, say).
    let later = slot.dispatch(&feedback);
    assert_eq!(later.sent_at(), Instant::now());
    assert_eq!(later.sent_at() - outer.sent_at(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn a_call_that_panics_does_not_leave_the_clock_read_shared() {
    let feedback = Feedback::new();
    let (slot, _end) = Slot::new(&feedback);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _sending = slot.dispatch_sending(&feedback);
        panic!("the inner service panicked")
    }));
    assert!(unwound.is_err());
    tokio::time::advance(Duration::from_millis(30)).await;
    assert_eq!(slot.dispatch(&feedback).sent_at(), Instant::now());
}

#[tokio::test(start_paused = true)]
async fn a_layer_inside_another_layers_call_publishes_with_the_outer_dispatch_instant() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let (slot, end) = Slot::new(&feedback);
    let sent = Instant::now();
    let (outer, sending) = slot.dispatch_sending(&feedback);
    let inner = slot.dispatch(&feedback);
    let innermost = slot.dispatch(&feedback);
    drop(sending);
    tokio::time::advance(Duration::from_millis(40)).await;
    // The innermost layer classifies; the others find the attempt settled.
    assert!(matches!(
        innermost.on_response(&response(200, Frames::data(&[]))),
        Classified::Ready(Class::Success)
    ));
    assert!(matches!(
        inner.on_response(&response(200, Frames::data(&[]))),
        Classified::Ready(Class::Success)
    ));
    assert!(!outer.publish(Class::Failure), "published once");
    drop(end);
    let outcomes = recorder.0.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].sent_at, sent);
    assert_eq!(outcomes[0].latency, Duration::from_millis(40));
    assert_eq!(outcomes[0].status, Some(http::StatusCode::OK));
    assert_eq!(inner.sent_at(), sent);
}

#[tokio::test(start_paused = true)]
async fn an_error_seen_inside_another_layers_call_is_published_with_its_latency() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let (slot, end) = Slot::new(&feedback);
    let (_outer, sending) = slot.dispatch_sending(&feedback);
    let inner = slot.dispatch(&feedback);
    drop(sending);
    tokio::time::advance(Duration::from_millis(25)).await;
    assert_eq!(inner.on_error(&TestError("reset")), Some(Class::Failure));
    drop(end);
    let outcomes = recorder.0.lock().unwrap().clone();
    assert_eq!(recorder.classes(), ["failure"]);
    assert_eq!(outcomes[0].latency, Duration::from_millis(25));
}

/// A 503 whose server asked for `retry_after_ms` before the next try.
fn busy_for(retry_after_ms: &str) -> http::Response<Frames> {
    http::Response::builder()
        .status(503)
        .header("retry-after-ms", retry_after_ms)
        .body(Frames::data(&[]))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_outer_layer_reads_the_settled_class_with_the_servers_exact_delay() {
    // Whole milliseconds (read without the slot's lock) and a delay finer than that (read under
    // it): the outer layer gets exactly what the inner one published.
    for (header, delay) in [
        ("1500", Duration::from_millis(1500)),
        ("0.25", Duration::from_micros(250)),
    ] {
        let feedback = Feedback::new();
        let recorder = recorded(&feedback);
        let (slot, _end) = Slot::new(&feedback);
        let (outer, sending) = slot.dispatch_sending(&feedback);
        let inner = slot.dispatch(&feedback);
        drop(sending);
        let overloaded = Class::Overloaded {
            retry_after: Some(delay),
        };
        assert_eq!(
            inner.on_response(&busy_for(header)),
            Classified::Ready(overloaded)
        );
        assert_eq!(
            outer.on_response(&response(200, Frames::data(&[]))),
            Classified::Ready(overloaded),
            "{header}"
        );
        assert_eq!(recorder.classes(), ["overloaded"]);
    }
}

#[tokio::test(start_paused = true)]
async fn an_outer_layer_reads_the_class_a_body_reader_refined() {
    let feedback = Feedback::new();
    let recorder = recorded(&feedback);
    let (slot, end) = Slot::new(&feedback);
    let outer = slot.dispatch(&feedback);
    let inner = slot.dispatch(&feedback);
    let quota = http::Response::builder()
        .status(429)
        .body(Frames::data(&[]))
        .unwrap();
    // The head defers (the body may say the quota is gone for good)...
    let deferred = inner.on_response(&quota);
    assert!(matches!(
        deferred,
        Classified::Ready(Class::Overloaded { .. })
    ));
    assert_eq!(outer.on_response(&quota), deferred);
    // ...and the body says so: every layer now reads fatal.
    let body = br#"{"error":{"code":"insufficient_quota"}}"#;
    assert_eq!(
        inner.on_response_body(&quota, body),
        Classified::Ready(Class::Fatal)
    );
    assert_eq!(outer.on_response(&quota), Classified::Ready(Class::Fatal));
    drop(end);
    assert_eq!(recorder.classes(), ["fatal"]);
}
