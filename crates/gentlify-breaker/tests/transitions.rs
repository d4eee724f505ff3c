//! The state machine in virtual time: every transition and what triggers it.

mod support;

use std::time::Duration;

use gentlify_breaker::{
    CircuitBreakerLayer, LatencyAnomaly, SlidingWindow, TransitionReason, Verdict,
};
use gentlify_core::{CircuitState, SnapshotValue};
use support::{harness, Answer};
use tokio::time::{advance, Instant};

use CircuitState::{Closed, HalfOpen, Open};

fn rate_only() -> gentlify_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .sliding_window(SlidingWindow::count(10))
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .consecutive_failures(0)
}

#[tokio::test(start_paused = true)]
async fn failure_rate_reaching_the_threshold_opens_the_breaker() {
    let mut h = harness(rate_only());
    h.calls(6, 200).await;
    h.calls(3, 500).await;
    h.calls(1, 200).await;
    assert_eq!(h.state(), Closed, "3 failures in 10 calls is under 50 %");
    h.calls(1, 500).await;
    assert_eq!(
        h.state(),
        Closed,
        "the window slid: 4 failures in the last 10"
    );
    assert_eq!(h.breaker.snapshot().failure_rate, Some(0.4));
    h.calls(1, 500).await;
    assert_eq!(h.state(), Open, "5 failures in the last 10");
    assert_eq!(
        h.last_transition().reason,
        TransitionReason::FailureRate(0.5)
    );
}

#[tokio::test(start_paused = true)]
async fn no_trip_below_the_minimum_number_of_calls() {
    let mut h = harness(rate_only());
    h.calls(9, 500).await;
    assert_eq!(h.state(), Closed, "9 calls: under the minimum of 10");
    assert_eq!(h.breaker.snapshot().failure_rate, Some(1.0));
    h.calls(1, 500).await;
    assert_eq!(h.state(), Open);
    assert_eq!(
        h.last_transition().reason,
        TransitionReason::FailureRate(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn ten_consecutive_failures_open_the_breaker_by_default() {
    let mut h = harness(CircuitBreakerLayer::builder());
    h.calls(9, 502).await;
    h.calls(1, 200).await;
    h.calls(9, 502).await;
    assert_eq!(
        h.state(),
        Closed,
        "a success breaks the run; 19 calls is under the minimum"
    );
    h.calls(1, 502).await;
    assert_eq!(h.state(), Open);
    assert_eq!(
        h.last_transition().reason,
        TransitionReason::ConsecutiveFailures(10)
    );
}

fn time_window() -> gentlify_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .sliding_window(SlidingWindow::time(Duration::from_secs(10)))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .consecutive_failures(0)
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_calls_older_than_the_window() {
    let mut h = harness(time_window());
    h.calls(3, 500).await;
    advance(Duration::from_secs(10)).await;
    h.calls(3, 200).await;
    h.calls(1, 500).await;
    assert_eq!(h.state(), Closed, "the first 3 failures expired: 1 in 4");
    assert_eq!(h.breaker.snapshot().calls, 4);
}

#[tokio::test(start_paused = true)]
async fn time_window_counts_calls_still_inside_the_window() {
    let mut h = harness(time_window());
    h.calls(3, 500).await;
    advance(Duration::from_millis(9_000)).await;
    h.calls(1, 200).await;
    assert_eq!(h.state(), Open, "3 failures in 4 calls within 10 s");
}

async fn tripped(
    builder: gentlify_breaker::CircuitBreakerBuilder,
) -> support::Harness<
    impl tower::Service<
            http::Request<Answer>,
            Response = support::Response,
            Error = gentlify_core::BoxError,
            Future = impl std::future::Future<
                Output = Result<support::Response, gentlify_core::BoxError>,
            > + Send,
        > + Clone
        + Send,
> {
    let mut h = harness(builder.consecutive_failures(2));
    h.calls(2, 500).await;
    assert_eq!(h.state(), Open);
    h
}

#[tokio::test(start_paused = true)]
async fn open_rejects_at_once_with_the_time_until_the_next_probe() {
    let mut h = tripped(CircuitBreakerLayer::builder().open_for(Duration::from_secs(10))).await;
    assert_eq!(h.rejected().await, Duration::from_secs(10));
    advance(Duration::from_secs(4)).await;
    assert_eq!(h.rejected().await, Duration::from_secs(6));
    assert_eq!(
        h.breaker.snapshot().next_probe_in,
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        h.sent(),
        2,
        "only the two calls before the trip reached the upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn open_period_over_moves_to_half_open_and_lets_a_probe_through() {
    let mut h = tripped(CircuitBreakerLayer::builder().open_for(Duration::from_secs(10))).await;
    advance(Duration::from_millis(9_999)).await;
    h.rejected().await;
    advance(Duration::from_millis(1)).await;
    assert_eq!(h.call(200).await.unwrap(), 200);
    assert_eq!(h.state(), HalfOpen, "1 probe of 3 answered");
    assert_eq!(h.path(), [(Closed, Open), (Open, HalfOpen)]);
    assert_eq!(h.last_transition().reason, TransitionReason::OpenPeriodOver);
}

#[tokio::test(start_paused = true)]
async fn probes_that_succeed_close_the_breaker() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(2),
    )
    .await;
    advance(Duration::from_secs(1)).await;
    h.calls(2, 200).await;
    assert_eq!(h.state(), Closed);
    assert_eq!(
        h.path(),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
    assert_eq!(
        h.last_transition().reason,
        TransitionReason::ProbesSucceeded
    );
    assert_eq!(
        h.breaker.snapshot().calls,
        0,
        "closing starts a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn probes_that_fail_reopen_the_breaker() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(2),
    )
    .await;
    advance(Duration::from_secs(1)).await;
    h.calls(1, 200).await;
    h.calls(1, 500).await;
    assert_eq!(
        h.state(),
        Open,
        "1 failure in 2 probes reaches the 50 % threshold"
    );
    assert_eq!(
        h.last_transition().reason,
        TransitionReason::ProbesFailed(0.5)
    );
    assert_eq!(
        h.path(),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_configured_number_of_probes_through() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(2)
            .probe_deadline(Duration::from_secs(30)),
    )
    .await;
    advance(Duration::from_secs(1)).await;
    let _first = h.start_hanging().await;
    let _second = h.start_hanging().await;
    assert_eq!(h.breaker.snapshot().probes_in_flight, 2);
    assert_eq!(
        h.rejected().await,
        Duration::from_secs(30),
        "until the oldest probe's deadline"
    );
    assert_eq!(h.sent(), 4);
    assert_eq!(h.state(), HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_permit_back() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(1),
    )
    .await;
    advance(Duration::from_secs(1)).await;
    let probe = h.start_hanging().await;
    h.rejected().await;
    drop(probe);
    assert_eq!(h.breaker.snapshot().probes_in_flight, 0);
    assert_eq!(h.state(), HalfOpen, "a cancelled probe is not counted");
    assert_eq!(h.call(200).await.unwrap(), 200);
    assert_eq!(h.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_body_holds_its_permit_until_the_body_is_dropped() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(1)
            .count_overloaded_as(Verdict::Ignore),
    )
    .await;
    advance(Duration::from_secs(1)).await;
    let mut probe = h.start_hanging().await;
    drop(probe);
    // An ignored answer (429) keeps the breaker half-open; its body still holds the permit.
    use tower::{Service, ServiceExt};
    let response = h
        .svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Answer::status(429)))
        .await
        .unwrap();
    assert_eq!(h.breaker.snapshot().probes_in_flight, 1);
    h.rejected().await;
    drop(response);
    assert_eq!(h.breaker.snapshot().probes_in_flight, 0);
    probe = h.start_hanging().await;
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_hangs_past_its_deadline_is_replaced() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(1)
            .probe_deadline(Duration::from_secs(5)),
    )
    .await;
    advance(Duration::from_secs(1)).await;
    let hung = h.start_hanging().await;
    advance(Duration::from_millis(4_900)).await;
    assert_eq!(h.rejected().await, Duration::from_millis(100));
    advance(Duration::from_millis(100)).await;
    let replacement = h.start_hanging().await;
    assert_eq!(h.sent(), 4);
    drop(hung);
    assert_eq!(
        h.breaker.snapshot().probes_in_flight,
        1,
        "the hung probe's late end does not free the replacement's permit"
    );
    h.rejected().await;
    drop(replacement);
    assert_eq!(h.breaker.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_open_period_doubles_on_each_reopening_up_to_five_times() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(10))
            .half_open_probes(1),
    )
    .await;
    let mut periods = vec![h.rejected().await];
    for _ in 0..4 {
        advance(*periods.last().unwrap()).await;
        h.calls(1, 500).await;
        assert_eq!(h.state(), Open);
        periods.push(h.rejected().await);
    }
    let secs: Vec<u64> = periods.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [10, 20, 40, 50, 50]);
    assert_eq!(h.last_transition().open_for, Some(Duration::from_secs(50)));

    advance(Duration::from_secs(50)).await;
    h.calls(1, 200).await;
    assert_eq!(h.state(), Closed);
    h.calls(2, 500).await;
    assert_eq!(
        h.rejected().await,
        Duration::from_secs(10),
        "closing resets the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_open_period_within_its_bounds() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(10))
            .open_jitter(0.2),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let wait = h.rejected().await;
        assert!(
            (Duration::from_secs(8)..=Duration::from_secs(12)).contains(&wait),
            "{wait:?}"
        );
        seen.push(wait);
        h.breaker.close();
        h.calls(2, 500).await;
    }
    seen.dedup();
    assert!(seen.len() > 1, "20 openings, all with the same period");
}

#[tokio::test(start_paused = true)]
async fn a_server_directed_pause_holds_the_breaker_open_longer() {
    let mut h = harness(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(10))
            .consecutive_failures(2),
    );
    h.feedback
        .pause_until(Instant::now() + Duration::from_secs(60));
    h.calls(2, 500).await;
    assert_eq!(h.rejected().await, Duration::from_secs(60));
    assert_eq!(h.last_transition().open_for, Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn a_pause_set_while_open_delays_the_first_probe() {
    let mut h = tripped(CircuitBreakerLayer::builder().open_for(Duration::from_secs(10))).await;
    h.feedback
        .pause_until(Instant::now() + Duration::from_secs(25));
    advance(Duration::from_secs(10)).await;
    assert_eq!(h.rejected().await, Duration::from_secs(15));
    advance(Duration::from_secs(15)).await;
    h.calls(1, 200).await;
    assert_eq!(h.state(), HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn overloaded_answers_do_not_count_by_default() {
    let mut h = harness(
        CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .minimum_calls(3),
    );
    for status in [429, 503, 529] {
        h.calls(10, status).await;
    }
    assert_eq!(h.state(), Closed);
    assert_eq!(h.breaker.snapshot().calls, 0, "not even counted as calls");
    assert_eq!(h.feedback.snapshot().attempts_overloaded, 30);
}

#[tokio::test(start_paused = true)]
async fn overloaded_answers_count_as_failures_when_configured() {
    let mut h = harness(
        CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .count_overloaded_as(Verdict::Failure),
    );
    h.calls(3, 429).await;
    assert_eq!(h.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn cancelled_attempts_are_ignored_unless_configured() {
    for (verdict, expected) in [(Verdict::Ignore, Closed), (Verdict::Failure, Open)] {
        let mut h = harness(
            CircuitBreakerLayer::builder()
                .consecutive_failures(1)
                .count_cancelled_as(verdict),
        );
        let call = h.start_hanging().await;
        drop(call);
        assert_eq!(h.state(), expected, "{verdict:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let mut h = harness(
        CircuitBreakerLayer::builder()
            .sliding_window(SlidingWindow::count(4))
            .minimum_calls(4)
            .consecutive_failures(0)
            .slow_call_duration(Duration::from_secs(1))
            .slow_call_rate_threshold(0.5),
    );
    h.calls(2, 200).await;
    h.send(Answer::after(200, Duration::from_millis(999)))
        .await
        .unwrap();
    assert_eq!(h.state(), Closed);
    h.send(Answer::after(200, Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(h.state(), Closed, "1 slow call in 4");
    h.send(Answer::after(200, Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(h.state(), Open, "2 slow calls in the last 4");
    assert_eq!(
        h.last_transition().reason,
        TransitionReason::SlowCallRate(0.5)
    );
}

#[tokio::test(start_paused = true)]
async fn a_latency_jump_opens_the_breaker_when_the_anomaly_trigger_is_on() {
    let mut h = harness(
        CircuitBreakerLayer::builder()
            .consecutive_failures(0)
            .latency_anomaly(LatencyAnomaly::default()),
    );
    for i in 0..40u64 {
        h.send(Answer::after(200, Duration::from_millis(100 + i % 5 * 4)))
            .await
            .unwrap();
    }
    assert_eq!(h.state(), Closed);
    for _ in 0..4 {
        h.send(Answer::after(200, Duration::from_millis(300)))
            .await
            .unwrap();
    }
    assert_eq!(
        h.state(),
        Closed,
        "4 of the 5 recent latencies are high: not yet"
    );
    h.send(Answer::after(200, Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(
        h.state(),
        Open,
        "all 5 recent latencies stand far above the baseline"
    );
    assert!(matches!(
        h.last_transition().reason,
        TransitionReason::LatencyAnomaly(z) if z >= 3.0
    ));
}

#[tokio::test(start_paused = true)]
async fn steady_latency_does_not_trip_the_anomaly_trigger() {
    let mut h = harness(CircuitBreakerLayer::builder().latency_anomaly(LatencyAnomaly::default()));
    for i in 0..200u64 {
        h.send(Answer::after(200, Duration::from_millis(100 + i % 5 * 4)))
            .await
            .unwrap();
    }
    assert_eq!(h.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_everything_until_closed() {
    let mut h = harness(CircuitBreakerLayer::builder());
    h.breaker.force_open();
    assert_eq!(h.feedback.circuit_state(), CircuitState::ForcedOpen);
    assert_eq!(h.rejected().await, Duration::MAX);
    advance(Duration::from_secs(3600)).await;
    h.rejected().await;
    h.breaker.close();
    h.calls(1, 200).await;
    assert_eq!(
        h.path(),
        [
            (Closed, CircuitState::ForcedOpen),
            (CircuitState::ForcedOpen, Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn disabled_lets_everything_through_and_counts_nothing() {
    let mut h = harness(CircuitBreakerLayer::builder().consecutive_failures(2));
    h.breaker.disable();
    assert_eq!(h.feedback.circuit_state(), CircuitState::Disabled);
    h.calls(50, 500).await;
    assert_eq!(h.state(), CircuitState::Disabled);
    assert_eq!(h.breaker.snapshot().calls, 0);
    h.breaker.close();
    h.calls(2, 500).await;
    assert_eq!(h.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn every_transition_sets_the_handle_state() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(1))
            .half_open_probes(1),
    )
    .await;
    assert_eq!(h.feedback.circuit_state(), Open);
    advance(Duration::from_secs(1)).await;
    let probe = h.start_hanging().await;
    assert_eq!(h.feedback.circuit_state(), HalfOpen);
    drop(probe);
    h.calls(1, 200).await;
    assert_eq!(h.feedback.circuit_state(), Closed);
    assert_eq!(h.feedback.snapshot().circuit, Closed);
}

#[tokio::test(start_paused = true)]
async fn attempts_retried_below_the_breaker_each_count() {
    use gentlify_core::{Class, Slot};
    use tower::{Service, ServiceExt};

    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .build()
        .unwrap();
    let feedback = layer.feedback().clone();
    let inner_feedback = feedback.clone();
    // An inner "retry layer": two failed attempts published on the shared handle, then the
    // final answer.
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn(move |req: http::Request<()>| {
            let slot = Slot::from_extensions(req.extensions()).unwrap().clone();
            for class in [Class::Failure, Class::Failure, Class::Success] {
                slot.dispatch(&inner_feedback).publish(class);
                if class == Class::Failure {
                    slot.next_attempt();
                }
            }
            async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::new(),
                )))
            }
        }));
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    let s = layer.handle().snapshot();
    assert_eq!(s.calls, 3);
    assert_eq!(s.failure_rate, Some(2.0 / 3.0));
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_state_rates_and_time_until_the_next_probe() {
    let mut h = harness(
        rate_only()
            .open_for(Duration::from_secs(10))
            .slow_call_duration(Duration::from_millis(500)),
    );
    h.calls(3, 200).await;
    h.send(Answer::after(500, Duration::from_secs(1)))
        .await
        .unwrap();
    let part = h.feedback.snapshot().part("breaker").cloned().unwrap();
    assert_eq!(part.get("state"), Some(&SnapshotValue::from("closed")));
    assert_eq!(part.get("failure_rate"), Some(&SnapshotValue::F64(0.25)));
    assert_eq!(part.get("slow_call_rate"), Some(&SnapshotValue::F64(0.25)));
    assert_eq!(part.get("next_probe_in"), Some(&SnapshotValue::Unknown));

    h.calls(6, 500).await;
    assert_eq!(h.state(), Open);
    advance(Duration::from_secs(3)).await;
    let part = h.feedback.snapshot().part("breaker").cloned().unwrap();
    assert_eq!(part.get("state"), Some(&SnapshotValue::from("open")));
    assert_eq!(
        part.get("next_probe_in"),
        Some(&SnapshotValue::Duration(Duration::from_secs(7)))
    );
    let typed = h.breaker.snapshot();
    assert_eq!(typed.state, Open);
    assert_eq!(typed.next_probe_in, Some(Duration::from_secs(7)));
    assert_eq!(typed.open_factor, 2.0);
}

#[tokio::test(start_paused = true)]
async fn huge_periods_saturate_instead_of_overflowing() {
    let mut h = tripped(
        CircuitBreakerLayer::builder()
            .open_for(Duration::MAX)
            .probe_deadline(Duration::MAX),
    )
    .await;
    let wait = h.rejected().await;
    assert!(wait >= Duration::from_secs(300 * 24 * 3600), "{wait:?}");
    h.breaker.half_open();
    let _probes = [
        h.start_hanging().await,
        h.start_hanging().await,
        h.start_hanging().await,
    ];
    assert!(h.rejected().await >= Duration::from_secs(300 * 24 * 3600));
}
