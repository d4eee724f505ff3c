//! Retries keep their request's permit, whichever side of this layer the retry sits on.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{finish, request, settle, Upstream};
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing, PermitBody};
use gentlify_core::{BoxError, EndReason, Feedback, Slot};
use http_body_util::Full;
use tokio_test::{assert_pending, task};
use tower::{Layer, Service, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

type Response = http::Response<PermitBody<Full<Bytes>>>;

fn limit_one(feedback: &Feedback) -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(1)
        .max(1)
        .pacing(Pacing::disabled())
        .build()
        .unwrap()
}

/// `a` fails its first attempt with a 503; everything else succeeds after a second.
fn flaky_a() -> Upstream {
    Upstream::scripted(|name, attempt| match (name, attempt) {
        ("a", 0) => (503, SECOND),
        _ => (200, SECOND),
    })
}

/// What a retry layer placed outside this one does: it makes the slot (so it owns its end), sends
/// an attempt, and on a 503 sends the next attempt with the same slot through `poll_ready` and
/// `call` again: on the same instance, or on a clone made after the call (as tower's `Retry`).
async fn send_with_retry<S>(
    mut svc: S,
    feedback: &Feedback,
    name: &str,
    clone_after_call: bool,
) -> Result<(), BoxError>
where
    S: Service<http::Request<String>, Response = Response, Error = BoxError> + Clone,
{
    let (slot, end) = Slot::new(feedback);
    loop {
        let mut req = request(name);
        req.extensions_mut().insert(slot.clone());
        svc.ready().await?;
        let future = svc.call(req);
        if clone_after_call {
            svc = svc.clone();
        }
        let response = future.await?;
        if response.status() == 503 {
            drop(response);
            slot.next_attempt();
            continue;
        }
        finish(response).await;
        end.end(EndReason::BodyEnded);
        return Ok(());
    }
}

async fn retry_then_other(clone_after_call: bool) {
    let feedback = Feedback::new();
    let layer = limit_one(&feedback);
    let upstream = flaky_a();
    let template = layer.layer(upstream.clone());

    let svc = template.clone();
    let fb = feedback.clone();
    let a = tokio::spawn(async move { send_with_retry(svc, &fb, "a", clone_after_call).await });
    settle().await;
    assert_eq!(upstream.arrivals(), ["a"]);
    let b = tokio::spawn(template.clone().oneshot(request("b")));
    settle().await;
    assert_eq!(layer.snapshot().waiting, 1, "b waits behind a");

    let done = tokio::time::timeout(60 * SECOND, async {
        a.await.unwrap().unwrap();
        finish(b.await.unwrap().unwrap()).await;
    })
    .await;
    assert!(done.is_ok(), "deadlock: {:?}", layer.snapshot());
    assert_eq!(
        upstream.arrivals(),
        ["a", "a", "b"],
        "never b between a's attempts"
    );
    assert_eq!(upstream.peak(), 1);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_outside_keeps_the_permit_on_the_same_instance() {
    retry_then_other(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_outside_keeps_the_permit_on_a_clone_made_after_the_call() {
    retry_then_other(true).await;
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_heard_even_when_a_retry_succeeds() {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(8)
        .build()
        .unwrap();
    let upstream = flaky_a();
    send_with_retry(layer.layer(upstream.clone()), &feedback, "a", false)
        .await
        .unwrap();
    assert_eq!(upstream.arrivals(), ["a", "a"]);
    assert_eq!(
        layer.snapshot().decelerations,
        1,
        "the 503 of attempt 0 was heard"
    );
    assert_eq!(layer.snapshot().limit, 5, "8 × 0.7");
}

#[tokio::test(start_paused = true)]
async fn a_reused_instance_waits_for_its_own_permit() {
    let feedback = Feedback::new();
    let layer = limit_one(&feedback);
    let upstream = Upstream::ok_after(SECOND);
    let mut svc = layer.layer(upstream.clone());

    svc.ready().await.unwrap();
    let a = svc.call(request("a")).await.unwrap();
    // The instance's last request still holds the permit: `poll_ready` takes this for its retry.
    tokio::time::timeout(SECOND, svc.ready())
        .await
        .expect("poll_ready of a reused instance must not wait behind its own request")
        .unwrap();
    let mut b = task::spawn(svc.call(request("b")));
    assert_pending!(b.poll());
    assert_eq!(
        upstream.arrivals(),
        ["a"],
        "b is not a retry of a: it waits"
    );
    assert_eq!(layer.snapshot().waiting, 1);

    finish(a).await;
    assert!(b.is_woken());
    finish(b.await.unwrap()).await;
    assert_eq!(upstream.arrivals(), ["a", "b"]);
    assert_eq!(upstream.peak(), 1);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[derive(Clone)]
struct RetryOn503;

impl tower::retry::Policy<http::Request<String>, Response, BoxError> for RetryOn503 {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut http::Request<String>,
        result: &mut Result<Response, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if response.status() == 503 => Some(std::future::ready(())),
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &http::Request<String>) -> Option<http::Request<String>> {
        let mut clone = http::Request::new(req.body().clone());
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[tokio::test(start_paused = true)]
async fn a_plain_tower_retry_outside_never_exceeds_the_limit() {
    // No gentlify layer outside: each attempt gets its own slot here, which ends with its
    // response, so the retry must take a permit of its own (and waits behind b for it).
    let feedback = Feedback::new();
    let layer = limit_one(&feedback);
    let upstream = flaky_a();
    let svc = tower::retry::Retry::new(RetryOn503, layer.layer(upstream.clone()));

    let send = |name: &'static str| {
        let svc = svc.clone();
        tokio::spawn(async move { finish(svc.oneshot(request(name)).await.unwrap()).await })
    };
    let a = send("a");
    settle().await;
    let b = send("b");
    // a's first attempt ends at 1 s and frees the permit for b (1 s – 2 s); a's retry runs from
    // 2 s to 3 s and must hold a permit of its own: c, arriving at 2.5 s, waits for it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(upstream.arrivals(), ["a", "b", "a"]);
    let c = send("c");
    a.await.unwrap();
    b.await.unwrap();
    c.await.unwrap();
    assert_eq!(upstream.arrivals(), ["a", "b", "a", "c"]);
    assert_eq!(upstream.peak(), 1);
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_carrying_an_ended_slot_takes_a_permit_of_its_own() {
    // A wrapper outside every gentlify layer that copies the extensions of an earlier request,
    // slot included, after that slot ended.
    let feedback = Feedback::new();
    let layer = limit_one(&feedback);
    let upstream = Upstream::ok_after(SECOND);
    let template = layer.layer(upstream.clone());
    let (stale, end) = Slot::new(&feedback);
    end.end(EndReason::BodyEnded);

    let mut a = request("a");
    a.extensions_mut().insert(stale.clone());
    let a = template.clone().oneshot(a).await.unwrap();
    assert_eq!(
        layer.snapshot().in_flight,
        1,
        "held, not released into the ended slot"
    );
    let mut b = task::spawn(template.clone().oneshot(request("b")));
    assert_pending!(b.poll());
    finish(a).await;
    finish(b.await.unwrap()).await;
    assert_eq!(layer.snapshot().in_flight, 0);
}

// ---- a retry inside its permit after the limit was cut ----

fn limit_two(feedback: &Feedback) -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(2)
        .max(2)
        .pacing(Pacing::disabled())
        .build()
        .unwrap()
}

/// A retry layer as gentlify's: on a 503 it keeps the slot, waits until what the slot holds
/// lets it re-send (`Slot::poll_redispatch`), then sends the next attempt. `on_503` runs once,
/// when the first 503 comes back.
async fn send_gated<S>(
    mut svc: S,
    feedback: &Feedback,
    name: &str,
    on_503: impl FnOnce(),
) -> Result<(), BoxError>
where
    S: Service<http::Request<String>, Response = Response, Error = BoxError>,
{
    let (slot, end) = Slot::new(feedback);
    let mut on_503 = Some(on_503);
    loop {
        let mut req = request(name);
        req.extensions_mut().insert(slot.clone());
        svc.ready().await?;
        let response = svc.call(req).await?;
        if response.status() == 503 {
            drop(response);
            if let Some(f) = on_503.take() {
                f();
            }
            std::future::poll_fn(|cx| slot.poll_redispatch(cx)).await;
            slot.next_attempt();
            continue;
        }
        finish(response).await;
        end.end(EndReason::BodyEnded);
        return Ok(());
    }
}

fn arrivals_at(upstream: &Upstream, start: tokio::time::Instant) -> Vec<(String, Duration)> {
    upstream
        .arrival_times()
        .into_iter()
        .map(|(name, at)| (name, at - start))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_retry_over_a_cut_limit_waits_in_its_permit_until_in_flight_comes_down() {
    let feedback = Feedback::new();
    let layer = limit_two(&feedback);
    // a's first attempt fails after 100 ms; b takes a second.
    let upstream = Upstream::scripted(|name, attempt| match (name, attempt) {
        ("a", 0) => (503, SECOND / 10),
        _ => (200, SECOND),
    });
    let start = tokio::time::Instant::now();
    let svc = layer.layer(upstream.clone());
    let fb = feedback.clone();
    let cut = layer.clone();
    let a = tokio::spawn(async move { send_gated(svc, &fb, "a", move || cut.set_limit(1)).await });
    settle().await;
    let b = tokio::spawn(layer.layer(upstream.clone()).oneshot(request("b")));
    settle().await;
    assert_eq!(upstream.arrivals(), ["a", "b"]);

    tokio::time::sleep(SECOND / 2).await;
    assert_eq!(layer.snapshot().limit, 1);
    assert_eq!(
        layer.snapshot().in_flight,
        2,
        "a keeps its permit while its retry waits"
    );
    assert_eq!(upstream.arrivals(), ["a", "b"], "a's retry waits for b");

    finish(b.await.unwrap().unwrap()).await;
    a.await.unwrap().unwrap();
    assert_eq!(
        arrivals_at(&upstream, start),
        [
            ("a".to_owned(), Duration::ZERO),
            ("b".to_owned(), Duration::ZERO),
            ("a".to_owned(), SECOND),
        ],
        "a's retry goes when b's permit comes back, not at once"
    );
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn retries_held_by_one_cut_do_not_wait_on_each_other() {
    let feedback = Feedback::new();
    let layer = limit_two(&feedback);
    // Both first attempts fail; every retry takes a second.
    let upstream = Upstream::scripted(|_, attempt| match attempt {
        0 => (503, SECOND / 10),
        _ => (200, SECOND),
    });
    let start = tokio::time::Instant::now();
    let spawn = |name: &'static str| {
        let svc = layer.layer(upstream.clone());
        let fb = feedback.clone();
        let cut = layer.clone();
        tokio::spawn(async move { send_gated(svc, &fb, name, move || cut.set_limit(1)).await })
    };
    let a = spawn("a");
    let b = spawn("b");
    let done = tokio::time::timeout(60 * SECOND, async {
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    })
    .await;
    assert!(done.is_ok(), "deadlock: {:?}", layer.snapshot());
    let times: Vec<Duration> = arrivals_at(&upstream, start)
        .into_iter()
        .map(|(_, at)| at)
        .collect();
    assert_eq!(
        times,
        [
            Duration::ZERO,
            Duration::ZERO,
            SECOND / 10,
            SECOND / 10 + SECOND
        ],
        "one retry goes at once, the other when it is done: one at a time under the cut limit"
    );
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_held_retry_gives_its_permit_back() {
    let feedback = Feedback::new();
    let layer = limit_two(&feedback);
    let upstream = Upstream::scripted(|name, attempt| match (name, attempt) {
        ("a", 0) => (503, SECOND / 10),
        _ => (200, SECOND),
    });
    let svc = layer.layer(upstream.clone());
    let fb = feedback.clone();
    let cut = layer.clone();
    let a = tokio::spawn(async move { send_gated(svc, &fb, "a", move || cut.set_limit(1)).await });
    settle().await;
    let b = tokio::spawn(layer.layer(upstream.clone()).oneshot(request("b")));
    tokio::time::sleep(SECOND / 2).await;
    assert_eq!(layer.snapshot().in_flight, 2);

    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(
        layer.snapshot().in_flight,
        1,
        "the held retry's permit came back"
    );
    finish(b.await.unwrap().unwrap()).await;
    assert_eq!(layer.snapshot().in_flight, 0);
    assert_eq!(upstream.arrivals(), ["a", "b"]);
}
