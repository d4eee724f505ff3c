//! A closed-loop batch (workers each taking the next job when the last one ends) through a
//! preset across an outage: the breaker opens, and its calls wait for it instead of turning the
//! rest of the batch into rejections.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{drain, request, response};
use gentlify::core::error::is_local_rejection;
use gentlify::core::CircuitState;
use gentlify::{Throttle, ThrottleLayer};
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

const WORKERS: usize = 20;
const JOBS: usize = 200;
const OUTAGE: Duration = Duration::from_secs(20);

#[derive(Debug, Default, PartialEq)]
struct Tally {
    ok: usize,
    refused: usize,
    server_error: usize,
}

/// Runs the batch against an upstream answering 500 to everything for [`OUTAGE`], then 200, each
/// answer after 1 s.
async fn batch(throttle: ThrottleLayer) -> Tally {
    let start = Instant::now();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn(
            move |_request: http::Request<String>| async move {
                let status = if start.elapsed() < OUTAGE { 500 } else { 200 };
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, Infallible>(response(status, "{}"))
            },
        ));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (client, next) = (client.clone(), next.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            while next.fetch_add(1, Ordering::SeqCst) < JOBS {
                match client.clone().oneshot(request("job")).await {
                    Ok(answer) => {
                        let status = answer.status();
                        drain(answer).await;
                        if status == 200 {
                            tally.ok += 1;
                        } else {
                            tally.server_error += 1;
                        }
                    }
                    Err(e) if is_local_rejection(&*e) => tally.refused += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(done) = workers.join_next().await {
        let t = done.unwrap();
        total.ok += t.ok;
        total.refused += t.refused;
        total.server_error += t.server_error;
    }
    total
}

#[tokio::test(start_paused = true)]
async fn a_closed_loop_batch_is_held_not_drained_while_the_breaker_is_open() {
    let throttle = Throttle::openai().build().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let breaker = throttle.breaker().clone();
    let watch = {
        let opened = opened.clone();
        tokio::spawn(async move {
            loop {
                if breaker.state() == CircuitState::Open {
                    opened.store(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let total = batch(throttle.clone()).await;
    watch.abort();
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the outage opened the breaker"
    );
    assert_eq!(total.refused, 0, "no job refused locally: {total:?}");
    assert_eq!(total.ok + total.server_error, JOBS, "{total:?}");
    // Only the jobs already past the breaker when it opened can have ended with the outage's 500.
    assert!(total.server_error <= WORKERS, "{total:?}");
    assert_eq!(throttle.breaker().state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failing_fast_drains_the_same_batch_into_rejections() {
    // The breaker's own default, for contrast (and as a caller who asks for it gets it).
    let throttle = Throttle::openai()
        .breaker(|b| b.fail_fast())
        .build()
        .unwrap();
    let total = batch(throttle).await;
    assert!(total.refused > JOBS / 2, "{total:?}");
}
