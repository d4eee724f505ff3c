//! Many tasks hammering a half-open breaker on a multi-thread runtime: the upstream never sees
//! more probes at once than configured.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gentlify_breaker::CircuitBreakerLayer;
use gentlify_core::error::CircuitOpen;
use gentlify_core::CircuitState;
use http_body_util::Full;
use tower::{service_fn, Service, ServiceExt};

const PROBES: usize = 3;
const TASKS: usize = 32;
const CALLS_PER_TASK: usize = 200;

#[derive(Default)]
struct Upstream {
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    served: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_never_put_more_probes_in_flight_than_configured() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(3600))
        .half_open_probes(PROBES)
        .build()
        .unwrap();
    let breaker = layer.handle();
    let upstream = Arc::new(Upstream::default());
    let counts = Arc::clone(&upstream);
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |req: http::Request<u16>| {
            let counts = Arc::clone(&counts);
            async move {
                let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_in_flight.fetch_max(now, Ordering::SeqCst);
                counts.served.fetch_add(1, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                counts.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .status(*req.body())
                        .body(Full::new(Bytes::from_static(b"answer")))
                        .unwrap(),
                )
            }
        }));

    let mut first = svc.clone();
    let response = first
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(500))
        .await
        .unwrap();
    drop(response);
    assert_eq!(breaker.state(), CircuitState::Open);
    breaker.half_open();
    upstream.served.store(0, Ordering::SeqCst);
    upstream.most_in_flight.store(0, Ordering::SeqCst);

    let rejected = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut svc = svc.clone();
            let rejected = Arc::clone(&rejected);
            tokio::spawn(async move {
                for _ in 0..CALLS_PER_TASK {
                    // 429s are ignored by the breaker: it stays half-open and every probe's
                    // permit comes back when its body is dropped, so probes keep flowing.
                    match svc
                        .ready()
                        .await
                        .unwrap()
                        .call(http::Request::new(429))
                        .await
                    {
                        Ok(response) => {
                            tokio::task::yield_now().await;
                            drop(response);
                        }
                        Err(e) => {
                            assert!(e.is::<CircuitOpen>(), "{e}");
                            rejected.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let served = upstream.served.load(Ordering::SeqCst);
    let most = upstream.most_in_flight.load(Ordering::SeqCst);
    assert!(
        most <= PROBES,
        "{most} probes in flight at once, over {PROBES}"
    );
    assert!(
        served > PROBES,
        "permits were not recycled: only {served} probes"
    );
    assert!(rejected.load(Ordering::SeqCst) > 0, "nothing was rejected");
    assert_eq!(
        served + rejected.load(Ordering::SeqCst),
        TASKS * CALLS_PER_TASK
    );
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(breaker.snapshot().probes_in_flight, 0);
}
