//! A built stack is cheap to clone, and every clone (and every service made from any of them)
//! shares one handle, one limiter, one budget and one breaker: `ServiceBuilder::layer(throttle
//! .clone())` in several places throttles them together.

mod common;

use common::{drain, ok, request};
use gentlify::core::error::CircuitOpen;
use gentlify::core::Dimension;
use gentlify::Throttle;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn clones_of_a_throttle_share_one_handle_limiter_budget_and_breaker() {
    let throttle = Throttle::new()
        .requests_per_minute(100)
        .concurrency(|c| c.initial(4))
        .build()
        .unwrap();
    let copy = throttle.clone();
    let a = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn(|_: http::Request<String>| async { ok() }));
    let b = ServiceBuilder::new()
        .layer(copy.clone())
        .service(service_fn(|_: http::Request<String>| async { ok() }));

    assert!(throttle.feedback().same_as(copy.feedback()));

    // A request through either service is charged to the one budget and heard by the one handle.
    let before = throttle.budgets()[0]
        .remaining(Dimension::Requests)
        .unwrap();
    drain(a.clone().oneshot(request("a")).await.unwrap()).await;
    drain(b.clone().oneshot(request("b")).await.unwrap()).await;
    assert_eq!(
        throttle.budgets()[0].remaining(Dimension::Requests),
        Some(before - 2)
    );
    assert_eq!(
        copy.budgets()[0].remaining(Dimension::Requests),
        Some(before - 2)
    );
    assert_eq!(copy.snapshot().attempts_success, 2);

    // One limiter: a limit set through one clone is the other's, and the permits of both
    // services are counted together.
    throttle.concurrency_layer().set_limit(3);
    assert_eq!(copy.concurrency().limit, 3);
    let held_a = a.clone().oneshot(request("held a")).await.unwrap();
    let held_b = b.clone().oneshot(request("held b")).await.unwrap();
    assert_eq!(throttle.concurrency().in_flight, 2);
    assert_eq!(copy.concurrency().in_flight, 2);
    drain(held_a).await;
    drain(held_b).await;
    assert_eq!(copy.concurrency().in_flight, 0);

    // One breaker: opened by hand through one clone, it rejects the other's requests.
    copy.breaker().force_open();
    let error = a.oneshot(request("rejected")).await.unwrap_err();
    assert!(error.is::<CircuitOpen>(), "{error}");
    assert_eq!(throttle.snapshot().open_slots, 0);
}
