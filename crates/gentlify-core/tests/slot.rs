//! A slot's holds are released exactly once, on every path a request can take.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gentlify_core::{
    settle, BoxError, Class, EndReason, Feedback, HoldKey, Slot, SlotBody, Tracked,
};
use http_body_util::{BodyExt, Empty};
use support::{response, Frames, Recorder, Releases, TestError};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};

/// What a forwarding layer's `call` does: find or make the slot, put a resource in it, send the
/// attempt, and settle it with `Tracked`.
fn forward<F, B>(
    feedback: &Feedback,
    releases: &Releases,
    request: &mut http::Request<()>,
    send: impl FnOnce(http::Request<()>) -> F,
) -> Tracked<F>
where
    F: Future<Output = Result<http::Response<B>, BoxError>>,
{
    let (slot, end) = Slot::get_or_insert(request.extensions_mut(), feedback);
    releases.put_in(&slot);
    let dispatched = slot.dispatch(feedback);
    let request = std::mem::take(request);
    Tracked::new(send(request), dispatched, end)
}

fn ok<B>(resp: http::Response<B>) -> impl Future<Output = Result<http::Response<B>, BoxError>> {
    std::future::ready(Ok(resp))
}

#[tokio::test(start_paused = true)]
async fn a_response_without_body_ends_the_slot_when_returned() {
    let feedback = Feedback::new();
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let empty = http::Response::new(Empty::<Bytes>::new());
    let resp = forward(&feedback, &releases, &mut req, |_| ok(empty))
        .await
        .unwrap();
    assert_eq!(releases.count(), 1);
    assert_eq!(releases.reasons(), [EndReason::NoBody]);
    assert_eq!(feedback.open_slots(), 0);
    drop(resp);
    assert_eq!(releases.count(), 1, "released once, not again on drop");
}

#[tokio::test(start_paused = true)]
async fn a_body_read_to_its_end_ends_the_slot_there_and_not_before() {
    let feedback = Feedback::new();
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let resp = forward(&feedback, &releases, &mut req, |_| {
        ok(response(200, Frames::data(&["data: a\n\n", "data: b\n\n"])))
    })
    .await
    .unwrap();
    assert_eq!(releases.count(), 0, "headers arrived, the stream has not");
    assert_eq!(feedback.open_slots(), 1);

    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: a\n\n");
    assert_eq!(releases.count(), 0, "still streaming");
    let _second = body.frame().await.unwrap().unwrap();
    assert_eq!(releases.count(), 1, "ended with the last frame");
    assert!(body.frame().await.is_none());
    drop(body);
    assert_eq!(releases.count(), 1);
    assert_eq!(releases.reasons(), [EndReason::BodyEnded]);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_half_way_ends_the_slot_once() {
    let feedback = Feedback::new();
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let resp = forward(&feedback, &releases, &mut req, |_| {
        ok(response(200, Frames::data(&["one", "two", "three"])))
    })
    .await
    .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(releases.count(), 0);
    drop(body);
    assert_eq!(releases.count(), 1);
    assert_eq!(releases.reasons(), [EndReason::BodyDropped]);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_error_ends_the_slot_once() {
    let feedback = Feedback::new();
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let resp = forward(&feedback, &releases, &mut req, |_| {
        ok(response(
            200,
            Frames::data(&["one"]).then_err("reset by peer"),
        ))
    })
    .await
    .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err, TestError("reset by peer"));
    assert_eq!(releases.count(), 1);
    drop(body);
    assert_eq!(releases.count(), 1);
    assert_eq!(releases.reasons(), [EndReason::BodyError]);
}

#[tokio::test(start_paused = true)]
async fn an_error_from_the_inner_service_ends_the_slot_and_is_published_as_failure() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let result = forward(&feedback, &releases, &mut req, |_| {
        std::future::ready(Err::<http::Response<Frames>, BoxError>(Box::new(
            TestError("connection refused"),
        )))
    })
    .await;
    assert_eq!(result.unwrap_err().to_string(), "connection refused");
    assert_eq!(releases.reasons(), [EndReason::Error]);
    assert_eq!(recorder.classes(), ["failure"]);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_before_the_response_ends_the_slot_and_publishes_cancelled() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let mut fut = tokio_test::task::spawn(forward(&feedback, &releases, &mut req, |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, BoxError>(response(200, Frames::data(&["late"])))
    }));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_pending!(fut.poll());
    assert_eq!(releases.count(), 0);
    drop(fut);
    assert_eq!(releases.count(), 1);
    assert_eq!(releases.reasons(), [EndReason::Cancelled]);
    assert_eq!(recorder.classes(), ["cancelled"]);
    assert_eq!(feedback.open_slots(), 0);
}

/// A retry loop written with the core API, as the retry layer does it: the same slot for every
/// attempt, each attempt published, a backoff sleep between attempts.
async fn retrying(
    feedback: Feedback,
    mut request: http::Request<()>,
    statuses: Vec<u16>,
    seen: Arc<std::sync::Mutex<Vec<(u32, bool)>>>,
    first_slot: Arc<std::sync::Mutex<Option<Slot>>>,
) -> Result<http::Response<SlotBody<Frames>>, BoxError> {
    let (slot, end) = Slot::get_or_insert(request.extensions_mut(), &feedback);
    let mut statuses = statuses.into_iter();
    loop {
        let found = Slot::from_extensions(request.extensions()).unwrap();
        let same = first_slot
            .lock()
            .unwrap()
            .get_or_insert_with(|| found.clone())
            .same_as(found);
        seen.lock().unwrap().push((found.attempt(), same));
        let dispatched = slot.dispatch(&feedback);
        let status = statuses.next().unwrap();
        let resp = response(status, Frames::data(&["body"]));
        let class = dispatched.on_response(&resp);
        if class == gentlify_core::Classified::Ready(Class::Success) {
            return settle(Ok::<_, BoxError>(resp), &dispatched, end);
        }
        drop(resp);
        tokio::time::sleep(Duration::from_millis(500)).await;
        slot.next_attempt();
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_reuses_the_slot_and_counts_attempts_0_1_2() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let releases = Releases::default();
    let mut request = http::Request::new(());
    let (slot, _none) = {
        // An outer layer made the slot and holds a resource in it.
        let (slot, end) = Slot::get_or_insert(request.extensions_mut(), &feedback);
        releases.put_in(&slot);
        (slot, end)
    };
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let first = Arc::new(std::sync::Mutex::new(None));
    let resp = retrying(
        feedback.clone(),
        request,
        vec![429, 503, 200],
        seen.clone(),
        first,
    )
    .await
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), [(0, true), (1, true), (2, true)]);
    assert_eq!(slot.attempt(), 2);
    assert_eq!(recorder.attempts(), [0, 1, 2]);
    assert_eq!(recorder.classes(), ["overloaded", "overloaded", "success"]);
    assert_eq!(
        releases.count(),
        0,
        "the outer layer's end still holds the slot"
    );
    drop(resp);
    drop(_none);
    assert_eq!(releases.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_while_a_retry_is_pending_releases_everything_once() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let releases = Releases::default();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let first = Arc::new(std::sync::Mutex::new(None));
    let request = http::Request::new(());
    let fut = retrying(
        feedback.clone(),
        request,
        vec![429, 429, 200],
        seen.clone(),
        first.clone(),
    );
    let mut fut = tokio_test::task::spawn(fut);
    assert_pending!(fut.poll(), "sleeping before the retry");
    let slot = first.lock().unwrap().clone().unwrap();
    releases.put_in(&slot);
    assert_eq!(feedback.open_slots(), 1);
    drop(fut);
    assert_eq!(releases.count(), 1);
    assert_eq!(releases.reasons(), [EndReason::Cancelled]);
    assert_eq!(feedback.open_slots(), 0);
    assert_eq!(
        recorder.classes(),
        ["overloaded"],
        "no attempt left unpublished"
    );
    assert!(slot.is_ended());
    // A hold offered to an ended slot is released at once.
    let late = Releases::default();
    assert!(!slot.hold(HoldKey::unique(), late.hold()));
    assert_eq!(late.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_layer_sees_one_slot_and_only_the_maker_ends_it() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let outer = Releases::default();
    let inner = Releases::default();
    let mut req = http::Request::new(());
    // Two layers on one handle, one inside the other.
    let (slot, outer_end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
    outer.put_in(&slot);
    let outer_dispatch = slot.dispatch(&feedback);
    let (same, inner_end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
    assert!(same.same_as(&slot) && inner_end.is_none());
    inner.put_in(&same);
    let inner_dispatch = same.dispatch(&feedback);
    let resp = response(503, Frames::data(&["busy"]));
    let resp = settle(Ok::<_, BoxError>(resp), &inner_dispatch, inner_end).unwrap();
    let resp = settle(Ok::<_, BoxError>(resp), &outer_dispatch, outer_end).unwrap();
    assert_eq!(
        recorder.classes(),
        ["overloaded"],
        "published once per handle"
    );
    assert_eq!(outer.count() + inner.count(), 0);
    resp.into_body().collect().await.unwrap();
    assert_eq!((outer.count(), inner.count()), (1, 1));
    assert_eq!(feedback.open_slots(), 0);
    let _ = Instant::now();
}

#[tokio::test(start_paused = true)]
async fn grpc_outcome_is_published_from_the_trailers_at_end_of_stream() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let releases = Releases::default();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "8".parse().unwrap());
    trailers.insert("grpc-retry-pushback-ms", "250".parse().unwrap());
    let grpc = http::Response::builder()
        .header("content-type", "application/grpc")
        .body(Frames::data(&["msg"]).then_trailers(trailers))
        .unwrap();
    let mut req = http::Request::new(());
    let resp = forward(&feedback, &releases, &mut req, |_| ok(grpc))
        .await
        .unwrap();
    assert!(
        recorder.classes().is_empty(),
        "not known until the trailers"
    );
    let mut body = resp.into_body();
    let mut polled = tokio_test::task::spawn(async move { while body.frame().await.is_some() {} });
    assert_ready!(polled.poll());
    let outcomes = recorder.0.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0].class,
        Class::Overloaded {
            retry_after: Some(Duration::from_millis(250))
        }
    );
    assert_eq!(releases.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_is_published_once_its_body_has_had_its_say() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let releases = Releases::default();
    let mut req = http::Request::new(());
    let resp = forward(&feedback, &releases, &mut req, |_| {
        ok(response(
            429,
            Frames::data(&["{\"error\":{\"code\":\"rate_limit_exceeded\"}}"]),
        ))
    })
    .await
    .unwrap();
    assert!(
        recorder.classes().is_empty(),
        "a layer that reads the body may still refine the class"
    );
    resp.into_body().collect().await.unwrap();
    assert_eq!(
        recorder.classes(),
        ["overloaded"],
        "the head's class stands at the end"
    );
    assert_eq!(
        recorder.0.lock().unwrap()[0].status,
        Some(http::StatusCode::TOO_MANY_REQUESTS)
    );
}

#[tokio::test(start_paused = true)]
async fn the_body_reader_refines_a_429_that_a_layer_nearer_the_server_deferred() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let mut req = http::Request::new(());
    // The outer layer (a retry, say) made the slot; the inner one forwards the attempt.
    let (slot, outer_end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
    let outer = slot.dispatch(&feedback);
    let inner = slot.dispatch(&feedback);
    let head = response(429, Frames::data(&[]));
    assert_eq!(
        inner.on_response(&head),
        gentlify_core::Classified::Ready(Class::Overloaded { retry_after: None })
    );
    assert!(recorder.classes().is_empty());
    let body = br#"{"error":{"type":"insufficient_quota"}}"#;
    assert_eq!(
        outer.on_response_body(&head, body),
        gentlify_core::Classified::Ready(Class::Fatal)
    );
    drop(outer_end);
    assert_eq!(recorder.classes(), ["fatal"], "once, with the body's word");
}

#[tokio::test(start_paused = true)]
async fn a_deferred_429_is_published_when_the_next_attempt_is_sent() {
    let feedback = Feedback::new();
    let recorder = Arc::new(Recorder::default());
    feedback.register(&recorder);
    let (slot, _end) = Slot::new(&feedback);
    let first = slot.dispatch(&feedback);
    first.on_response(&response(429, Frames::data(&[])));
    assert!(recorder.classes().is_empty());
    slot.next_attempt();
    let _second = slot.dispatch(&feedback);
    assert_eq!(recorder.attempts(), [0]);
    assert_eq!(recorder.classes(), ["overloaded"]);
}

#[test]
fn holds_answers_for_every_key_and_forgets_a_taken_hold() {
    let feedback = Feedback::new();
    let (slot, end) = Slot::new(&feedback);
    // More keys than a 64-bit summary has bits: some share a bit with the held ones, and must
    // still be answered "no".
    let keys: Vec<HoldKey> = (0..130).map(|_| HoldKey::unique()).collect();
    let (a, b) = (keys[0], keys[1]);
    assert!(!slot.holds(a));
    slot.hold(a, Box::new(|_: &gentlify_core::SlotEnded<'_>| {}));
    slot.hold(b, Box::new(|_: &gentlify_core::SlotEnded<'_>| {}));
    assert!(slot.holds(a) && slot.holds(b));
    for key in &keys[2..] {
        assert!(!slot.holds(*key), "{key:?} was never held");
    }
    assert!(slot.take_hold(a).is_some());
    assert!(!slot.holds(a), "a taken hold is no longer held");
    assert!(slot.holds(b), "taking one hold keeps the others");
    assert!(slot.take_hold(a).is_none());
    slot.hold(a, Box::new(|_: &gentlify_core::SlotEnded<'_>| {}));
    assert!(
        slot.holds(a),
        "a key can hold again after its hold was taken"
    );
    end.end(EndReason::BodyEnded);
    assert!(
        !slot.holds(a) && !slot.holds(b),
        "an ended slot holds nothing"
    );
}

#[test]
fn a_slot_is_ended_exactly_when_its_end_ran_or_was_dropped() {
    let feedback = Feedback::new();
    let (slot, end) = Slot::new(&feedback);
    assert!(!slot.is_ended());
    end.end(EndReason::NoBody);
    assert!(slot.is_ended());
    assert_eq!(feedback.open_slots(), 0);

    let (slot, end) = Slot::new(&feedback);
    drop(end);
    assert!(slot.is_ended(), "dropping the end is a cancellation");
    assert!(
        !slot.hold(
            HoldKey::unique(),
            Box::new(|_: &gentlify_core::SlotEnded<'_>| {})
        ),
        "an ended slot releases a new hold at once"
    );
    assert_eq!(feedback.open_slots(), 0);
}

/// A shared hold that records every share it gets back, with its token, and holds retries back
/// while `pending` is set.
#[derive(Default)]
struct Shares {
    released: std::sync::Mutex<Vec<(u64, EndReason)>>,
    pending: std::sync::atomic::AtomicBool,
}

impl gentlify_core::SharedHold for Shares {
    fn release(&self, token: u64, ended: &gentlify_core::SlotEnded<'_>) {
        self.released.lock().unwrap().push((token, ended.reason));
    }

    fn poll_redispatch(
        &self,
        token: &mut u64,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        *token += 100;
        if self.pending.load(std::sync::atomic::Ordering::SeqCst) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }
}

impl Shares {
    fn released(&self) -> Vec<(u64, EndReason)> {
        self.released.lock().unwrap().clone()
    }
}

#[test]
fn a_shared_hold_is_released_once_with_its_token_when_the_slot_ends() {
    let feedback = Feedback::new();
    let shares = Arc::new(Shares::default());
    let key = HoldKey::unique();
    let (slot, end) = Slot::new(&feedback);
    assert!(slot.hold_shared(key, shares.clone(), 7));
    assert!(slot.holds(key));
    assert_eq!(
        slot.with_hold_token(key, |t| std::mem::replace(t, 8)),
        Some(7)
    );
    assert!(shares.released().is_empty());
    end.end(EndReason::BodyEnded);
    assert_eq!(shares.released(), [(8, EndReason::BodyEnded)]);
    drop(slot);
    assert_eq!(shares.released().len(), 1, "released exactly once");

    // Into a slot that has already ended: released at once.
    let (slot, end) = Slot::new(&feedback);
    drop(end);
    assert!(!slot.hold_shared(key, shares.clone(), 9));
    assert_eq!(shares.released()[1], (9, EndReason::Cancelled));
    assert_eq!(slot.with_hold_token(key, |t| *t), None);
}

#[test]
fn a_shared_hold_answers_poll_redispatch_with_its_token() {
    let feedback = Feedback::new();
    let shares = Arc::new(Shares::default());
    let key = HoldKey::unique();
    let (slot, end) = Slot::new(&feedback);
    slot.hold_shared(key, shares.clone(), 1);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(slot.poll_redispatch(&mut cx).is_ready());
    shares
        .pending
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(slot.poll_redispatch(&mut cx).is_pending());
    assert_eq!(
        slot.with_hold_token(key, |t| *t),
        Some(201),
        "each poll saw the token"
    );
    drop(end);
    assert_eq!(shares.released(), [(201, EndReason::Cancelled)]);
}

#[test]
fn a_shared_hold_taken_out_of_its_slot_is_released_by_its_taker_only() {
    let feedback = Feedback::new();
    let shares = Arc::new(Shares::default());
    let key = HoldKey::unique();
    let (slot, end) = Slot::new(&feedback);
    slot.hold_shared(key, shares.clone(), 3);
    let taken = slot.take_hold(key).expect("held");
    assert!(!slot.holds(key));
    end.end(EndReason::NoBody);
    assert!(
        shares.released().is_empty(),
        "no longer the slot's to release"
    );
    taken.release(&gentlify_core::SlotEnded {
        reason: EndReason::Error,
        attempts: 1,
        recorded_tokens: 0,
        usage: None,
        last_outcome: None,
        body_waited: false,
    });
    assert_eq!(shares.released(), [(3, EndReason::Error)]);
}
