//! Admission in `poll_ready`, as tower's `load_shed`: a rejection is ready at once, whatever
//! the inner service's readiness; an admitted call waits for the inner service.

use std::time::Duration;

use bytes::Bytes;
use gentlify_breaker::error::{CircuitOpen, ConfigError};
use gentlify_breaker::{CircuitBreakerLayer, LatencyAnomaly, SlidingWindow};
use http_body_util::Full;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::Layer;

type Mock = tower_test::mock::Mock<http::Request<()>, http::Response<Full<Bytes>>>;

#[tokio::test(start_paused = true)]
async fn a_rejection_is_ready_even_when_the_inner_service_is_not() {
    let layer = CircuitBreakerLayer::new();
    let breaker = layer.handle();
    let (mut svc, mut upstream) = tower_test::mock::spawn_with(|mock: Mock| layer.layer(mock));
    upstream.allow(0);

    assert_pending!(svc.poll_ready(), "closed: waits for the inner service");
    breaker.force_open();
    // The admission decided while closed stands until the call; a fresh clone decides anew.
    let mut fresh = tower_test::mock::Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(fresh.poll_ready());
    let mut call = tokio_test::task::spawn(fresh.call(http::Request::new(())));
    let err = assert_ready!(call.poll()).unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert!(
        upstream.poll_request().is_pending(),
        "nothing reached the inner service"
    );
}

#[tokio::test(start_paused = true)]
async fn an_admitted_call_reaches_the_inner_service() {
    let layer = CircuitBreakerLayer::new();
    let (mut svc, mut upstream) = tower_test::mock::spawn_with(|mock: Mock| layer.layer(mock));
    upstream.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut call = tokio_test::task::spawn(svc.call(http::Request::new(())));
    let (_request, send) = upstream.next_request().await.unwrap();
    assert_pending!(call.poll());
    send.send_response(http::Response::new(Full::new(Bytes::new())));
    let response = assert_ready!(call.poll()).unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn impossible_settings_are_reported_by_build() {
    let b = CircuitBreakerLayer::builder;
    assert!(matches!(
        b().failure_rate_threshold(0.0).build(),
        Err(ConfigError::Rate {
            name: "failure_rate_threshold",
            ..
        })
    ));
    assert!(matches!(
        b().slow_call_rate_threshold(1.01).build(),
        Err(ConfigError::Rate { .. })
    ));
    assert!(matches!(
        b().sliding_window(SlidingWindow::count(0)).build(),
        Err(ConfigError::Zero { .. })
    ));
    assert!(matches!(
        b().sliding_window(SlidingWindow::time(Duration::ZERO))
            .build(),
        Err(ConfigError::Zero { .. })
    ));
    assert!(matches!(
        b().half_open_probes(0).build(),
        Err(ConfigError::Zero {
            name: "half_open_probes"
        })
    ));
    assert!(matches!(
        b().open_backoff_max(0.5).build(),
        Err(ConfigError::Rate { .. })
    ));
    assert!(matches!(
        b().open_jitter(1.0).build(),
        Err(ConfigError::Rate { .. })
    ));
    assert!(matches!(
        b().latency_anomaly(LatencyAnomaly::default().z_score(f64::NAN))
            .build(),
        Err(ConfigError::Rate { .. })
    ));
    assert!(b().build().is_ok());
}
