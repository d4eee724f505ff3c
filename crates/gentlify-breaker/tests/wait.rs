//! `wait_while_open`: a call that finds the breaker open waits for admission (its `poll_ready`
//! pending) instead of failing at once, so a closed-loop batch is not drained into rejections.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gentlify_breaker::CircuitBreakerLayer;
use gentlify_core::error::CircuitOpen;
use gentlify_core::CircuitState;
use support::{harness, Answer};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const OPEN_FOR: Duration = Duration::from_secs(10);

fn builder() -> gentlify_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .open_for(OPEN_FOR)
        .half_open_probes(1)
}

/// A clone of the harness's service admitted while the breaker is closed, then the breaker
/// opened by three failures: the clone's call goes out after the opening, as that of a request
/// queued below the breaker would.
async fn admitted_then_opened<S>(h: &mut support::Harness<S>) -> S
where
    S: Service<
            http::Request<Answer>,
            Response = support::Response,
            Error = gentlify_core::BoxError,
        > + Clone,
{
    let mut early = h.svc.clone();
    std::future::poll_fn(|cx| early.poll_ready(cx))
        .await
        .expect("admitted while closed");
    h.calls(3, 500).await;
    early
}

/// 20 workers share 60 jobs, each worker taking the next job when its last one ends (a batch
/// over a job queue). Returns the jobs that failed and the instants of the successes.
async fn closed_loop<S>(svc: S, jobs: usize) -> (usize, Vec<Instant>)
where
    S: Service<
            http::Request<Answer>,
            Response = support::Response,
            Error = gentlify_core::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut svc = svc.clone();
        let (next, failed, done) = (next.clone(), failed.clone(), done.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < jobs {
                let answer = Answer::after(200, Duration::from_secs(1));
                let result = match svc.ready().await {
                    Ok(s) => s.call(http::Request::new(answer)).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(_) => done.lock().unwrap().push(Instant::now()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let done = done.lock().unwrap().clone();
    (failed.load(Ordering::SeqCst), done)
}

#[tokio::test(start_paused = true)]
async fn fail_fast_drains_a_closed_loop_batch_the_moment_the_breaker_opens() {
    // The default, for contrast: every job fails at once, none reaches the upstream.
    let mut h = harness(builder());
    h.calls(3, 500).await;
    assert_eq!(h.state(), CircuitState::Open);
    let start = Instant::now();
    let (failed, done) = closed_loop(h.svc.clone(), 60).await;
    assert_eq!((failed, done.len()), (60, 0));
    assert_eq!(start.elapsed(), Duration::ZERO, "drained in no time");
    assert_eq!(h.sent(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_closed_loop_batch_waits_out_an_open_breaker_instead_of_failing() {
    let mut h = harness(builder().wait_while_open(Duration::MAX));
    h.calls(3, 500).await;
    assert_eq!(h.state(), CircuitState::Open);
    let start = Instant::now();
    let (failed, done) = closed_loop(h.svc.clone(), 60).await;
    assert_eq!(failed, 0, "no job was refused");
    assert_eq!(done.len(), 60);
    // Nothing went before the open period's end: the first job done is the probe (1 s long),
    // and the breaker closed on its answer, which let every waiting worker go at once.
    let first = done.iter().min().unwrap().duration_since(start);
    assert_eq!(first, OPEN_FOR + Duration::from_secs(1));
    let second = done
        .iter()
        .map(|t| t.duration_since(start))
        .filter(|&t| t > first)
        .min()
        .unwrap();
    assert_eq!(
        second,
        first + Duration::from_secs(1),
        "the waiting workers went when the probe closed the breaker, not at a later timer"
    );
    assert_eq!(h.state(), CircuitState::Closed);
    assert_eq!(h.sent(), 3 + 60);
}

#[tokio::test(start_paused = true)]
async fn a_call_still_refused_after_its_bound_fails_then() {
    let mut h = harness(builder().wait_while_open(Duration::from_secs(4)));
    h.calls(3, 500).await;
    let start = Instant::now();
    let err = h.call(200).await.expect_err("refused after the wait");
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.retry_in(), OPEN_FOR - Duration::from_secs(4));
    assert_eq!(h.sent(), 3, "nothing reached the upstream");
    // A bound past the open period: the call goes as the probe when the period ends.
    let mut h = harness(builder().wait_while_open(Duration::from_secs(30)));
    h.calls(3, 500).await;
    let start = Instant::now();
    assert_eq!(h.call(200).await.ok(), Some(200));
    assert_eq!(start.elapsed(), OPEN_FOR);
}

#[tokio::test(start_paused = true)]
async fn waiting_calls_follow_a_failed_probe_into_the_next_open_period() {
    let mut h = harness(
        builder()
            .wait_while_open(Duration::MAX)
            .open_backoff_max(1.0),
    );
    h.calls(3, 500).await;
    let start = Instant::now();
    // At 10 s the probe goes and fails (reopened for 10 s); the waiting call goes at 20 s.
    let mut probe = h.svc.clone();
    let failing = tokio::spawn(async move {
        let svc = probe.ready().await.unwrap();
        svc.call(http::Request::new(Answer::status(500))).await
    });
    tokio::task::yield_now().await;
    let mut waiting = h.svc.clone();
    let ok = tokio::spawn(async move {
        let svc = waiting.ready().await.unwrap();
        svc.call(http::Request::new(Answer::status(200))).await
    });
    assert_eq!(failing.await.unwrap().unwrap().status(), 500);
    assert_eq!(start.elapsed(), OPEN_FOR);
    assert_eq!(ok.await.unwrap().unwrap().status(), 200);
    assert_eq!(start.elapsed(), OPEN_FOR * 2);
    assert_eq!(h.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_still_refuses_at_once() {
    let mut h = harness(builder().wait_while_open(Duration::MAX));
    h.breaker.force_open();
    let start = Instant::now();
    h.rejected().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_dropped_leaves_the_breaker_working() {
    let mut h = harness(builder().wait_while_open(Duration::MAX));
    h.calls(3, 500).await;
    {
        let mut svc = h.svc.clone();
        let mut ready = tokio_test::task::spawn(svc.ready());
        assert!(ready.poll().is_pending(), "waits while open");
    }
    tokio::time::advance(OPEN_FOR).await;
    assert_eq!(h.call(200).await.ok(), Some(200), "the probe goes");
    assert_eq!(h.state(), CircuitState::Closed);
}

/// A call admitted while closed and sent after the breaker opened (as a request queued below the
/// breaker is) comes back well: the open period ends at once.
#[tokio::test(start_paused = true)]
async fn a_success_sent_after_the_opening_ends_the_open_period() {
    let mut h = harness(builder());
    let mut early = admitted_then_opened(&mut h).await;
    assert_eq!(h.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.rejected().await, OPEN_FOR - Duration::from_secs(1));
    let answer = early.call(http::Request::new(Answer::status(200))).await;
    assert_eq!(answer.unwrap().status(), 200);
    // The next call goes now, as the probe, and its success closes the breaker.
    assert_eq!(h.call(200).await.ok(), Some(200));
    assert_eq!(
        h.path(),
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed),
        ]
    );
}

/// The same success wakes the calls waiting for the breaker, which go at once.
#[tokio::test(start_paused = true)]
async fn a_success_sent_after_the_opening_wakes_the_waiting_calls() {
    let mut h = harness(builder().wait_while_open(Duration::MAX));
    let mut early = admitted_then_opened(&mut h).await;
    let start = Instant::now();
    let mut waiting = h.svc.clone();
    let waiter = tokio::spawn(async move {
        let svc = waiting.ready().await.unwrap();
        let status = svc
            .call(http::Request::new(Answer::status(200)))
            .await
            .unwrap()
            .status();
        (status, Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.sent(), 3, "the waiting call is held");
    let answer = early.call(http::Request::new(Answer::status(200))).await;
    assert_eq!(answer.unwrap().status(), 200);
    let (status, at) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(at.duration_since(start), Duration::from_secs(2));
    assert_eq!(h.state(), CircuitState::Closed);
}

/// A failure sent after the opening changes nothing: the period runs to its end.
#[tokio::test(start_paused = true)]
async fn a_failure_sent_after_the_opening_keeps_the_period() {
    let mut h = harness(builder());
    let mut early = admitted_then_opened(&mut h).await;
    let answer = early.call(http::Request::new(Answer::status(500))).await;
    assert_eq!(answer.unwrap().status(), 500);
    assert_eq!(h.rejected().await, OPEN_FOR);
}
