//! How the limit moves: deceleration, cooling, reacceleration, the ceiling, the gates on growth.

mod common;

use std::time::Duration;

use common::{overloaded, publish, request, Upstream};
use gentlify_concurrency::{
    AdaptiveConcurrency, AdaptiveConcurrencyLayer, Aimd, BuildError, ControlState, Gradient,
};
use gentlify_core::{CircuitState, Class, Feedback, Outcome, SnapshotValue};
use tokio::time::{advance, Instant};
use tokio_test::{assert_pending, task};
use tower::{Layer, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

type Call = task::Spawn<tower::util::Oneshot<AdaptiveConcurrency<Upstream>, http::Request<String>>>;

/// A limiter over an upstream that never answers, so the test holds requests in flight at will
/// and publishes the outcomes itself.
struct Rig {
    feedback: Feedback,
    layer: AdaptiveConcurrencyLayer,
    service: AdaptiveConcurrency<Upstream>,
    held: Vec<Call>,
}

impl Rig {
    fn new(
        build: impl FnOnce(
            gentlify_concurrency::AdaptiveConcurrencyBuilder,
        ) -> gentlify_concurrency::AdaptiveConcurrencyBuilder,
    ) -> Self {
        let feedback = Feedback::new();
        let layer = build(AdaptiveConcurrencyLayer::builder().feedback(feedback.clone()))
            .build()
            .unwrap();
        let service = layer.layer(Upstream::ok_after(100 * HOUR));
        Rig {
            feedback,
            layer,
            service,
            held: Vec::new(),
        }
    }

    fn limit(&self) -> usize {
        self.layer.snapshot().limit
    }

    /// Holds requests in flight until the limit is full.
    fn fill(&mut self) {
        while self.layer.snapshot().in_flight < self.limit() {
            let mut call = task::spawn(self.service.clone().oneshot(request("held")));
            assert_pending!(call.poll());
            self.held.push(call);
        }
    }

    /// Keeps exactly `n` requests in flight.
    fn hold(&mut self, n: usize) {
        self.held.truncate(n);
        while self.held.len() < n {
            let mut call = task::spawn(self.service.clone().oneshot(request("held")));
            assert_pending!(call.poll());
            self.held.push(call);
        }
    }

    /// One round trip later, a success of an attempt sent at its start.
    async fn round_trip_of_success(&self) {
        let sent_at = Instant::now();
        advance(SECOND).await;
        publish(&self.feedback, Class::Success, sent_at);
    }
}

#[tokio::test(start_paused = true)]
async fn overload_decelerates_at_most_once_per_round_trip() {
    let rig = Rig::new(|b| b.initial(20));
    let burst_sent = Instant::now();
    advance(SECOND).await;
    for _ in 0..20 {
        publish(&rig.feedback, overloaded(), burst_sent);
    }
    assert_eq!(rig.limit(), 14, "one burst, one deceleration (× 0.7)");
    assert_eq!(rig.layer.snapshot().decelerations, 1);

    let sent = Instant::now();
    advance(SECOND).await;
    publish(&rig.feedback, overloaded(), sent);
    assert_eq!(
        rig.limit(),
        9,
        "an attempt sent after the deceleration counts again"
    );
}

#[tokio::test(start_paused = true)]
async fn overloads_sent_on_permits_granted_before_the_cut_decelerate_once() {
    // 20 permits in flight when the first 429 comes back. Until in-flight is down to the new
    // limit (14), every attempt sent (a retry inside its permit, a paced dispatch on a permit
    // granted before the cut) still loads the server at 20: its 429 is part of the same answer.
    let mut rig = Rig::new(|b| b.initial(20).max(20));
    rig.fill();
    let burst_sent = Instant::now();
    advance(SECOND).await;
    publish(&rig.feedback, overloaded(), burst_sent);
    assert_eq!(rig.limit(), 14);
    for _ in 0..20 {
        advance(Duration::from_millis(10)).await;
        let retry_sent = Instant::now();
        advance(Duration::from_millis(10)).await;
        publish(&rig.feedback, overloaded(), retry_sent);
    }
    assert_eq!(rig.limit(), 14, "sent after the cut, but at the old load");
    assert_eq!(rig.layer.snapshot().decelerations, 1);

    // In-flight comes down to 14: the cut has taken effect.
    let sent_while_draining = Instant::now();
    advance(SECOND).await;
    rig.hold(14);
    publish(&rig.feedback, overloaded(), sent_while_draining);
    assert_eq!(rig.limit(), 14, "sent before in-flight came down");

    let sent = Instant::now();
    advance(SECOND).await;
    publish(&rig.feedback, overloaded(), sent);
    assert_eq!(
        rig.limit(),
        9,
        "a round trip at the new limit: the next cut"
    );
    assert_eq!(rig.layer.snapshot().decelerations, 2);
}

#[tokio::test(start_paused = true)]
async fn permits_that_never_come_down_hold_off_the_next_cut_for_one_round_trip_only() {
    // Retries inside their permits keep in-flight above the new limit for longer than a round
    // trip (each backs off and tries again): one smoothed round trip after the cut, their
    // refusals count as the answer to the new limit.
    let mut rig = Rig::new(|b| b.initial(20).max(20));
    rig.fill();
    let sent = Instant::now();
    advance(2 * SECOND).await;
    publish(&rig.feedback, Class::Success, sent); // a round trip of 2 s
    let sent = Instant::now();
    publish(&rig.feedback, overloaded(), sent);
    assert_eq!(rig.limit(), 14);
    advance(SECOND).await;
    publish(&rig.feedback, overloaded(), Instant::now());
    assert_eq!(rig.limit(), 14, "within one round trip of the cut");
    advance(SECOND).await;
    let retry_sent = Instant::now();
    advance(Duration::from_millis(100)).await;
    publish(&rig.feedback, overloaded(), retry_sent);
    assert_eq!(
        rig.limit(),
        9,
        "sent a round trip after the cut, 20 still in flight"
    );
}

#[tokio::test(start_paused = true)]
async fn isolated_failures_at_a_few_percent_leave_the_limit_alone() {
    // One attempt in twenty fails (a dropped connection, a stray 500), and one in a hundred more
    // at random; the rest succeed. Each failure comes from an attempt sent after the previous
    // one was heard: with every failure decelerating, the limit would ratchet down to 1.
    let mut rig = Rig::new(|b| b.initial(20).max(20).cooling(SECOND));
    let mut rng = fastrand::Rng::with_seed(7);
    let mut failures = 0;
    let mut lowest = rig.limit();
    for i in 0..2000 {
        rig.fill();
        let sent = Instant::now();
        advance(Duration::from_millis(50)).await;
        let class = if i % 20 == 7 || rng.f64() < 0.01 {
            failures += 1;
            Class::Failure
        } else {
            Class::Success
        };
        publish(&rig.feedback, class, sent);
        lowest = lowest.min(rig.limit());
    }
    let decelerations = rig.layer.snapshot().decelerations;
    assert!(failures > 110, "{failures}");
    // A random cluster (three failures in a row, or three in about ten attempts) now and then
    // looks like a storm: it costs one cut, never a ratchet.
    assert!(
        decelerations <= 5,
        "{decelerations} for {failures} failures"
    );
    assert!(lowest >= 14, "never more than one cut deep: {lowest}");
    assert!(rig.limit() >= 19, "{}", rig.limit());
}

#[tokio::test(start_paused = true)]
async fn independent_failures_at_five_percent_make_no_storm() {
    // Each attempt fails with probability 5 %, independently of the load (dropped connections):
    // over 4000 attempts, clusters of failures come by chance (two or three within ten attempts
    // every few hundred), and a share averaged over ten attempts crosses a fifth at each of them.
    // A cut for each keeps the limit under the server's knee (`gentlify-sim`'s
    // dropped-connections). Averaged over thirty, only three in a row (about once in 8000
    // attempts) makes a storm.
    let mut rig = Rig::new(|b| b.initial(20).max(20).cooling(SECOND));
    let mut rng = fastrand::Rng::with_seed(11);
    let mut failures = 0;
    for _ in 0..4000 {
        rig.fill();
        let sent = Instant::now();
        advance(Duration::from_millis(50)).await;
        let class = if rng.f64() < 0.05 {
            failures += 1;
            Class::Failure
        } else {
            Class::Success
        };
        publish(&rig.feedback, class, sent);
    }
    let decelerations = rig.layer.snapshot().decelerations;
    assert!((170..=230).contains(&failures), "{failures}");
    assert!(
        decelerations <= 2,
        "{decelerations} for {failures} failures"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fifth_of_the_attempts_failing_is_a_storm_without_three_in_a_row() {
    // A server timing out under load: every fourth attempt fails, never two in a row. The share
    // of failures, averaged over about thirty attempts, crosses a fifth after some forty (ten
    // with an average over ten, which storms on independent failures at 5 %), and the limit
    // comes down.
    let mut rig = Rig::new(|b| b.initial(20).max(20).cooling(SECOND));
    let mut first_cut = None;
    for i in 0..60 {
        rig.fill();
        let sent = Instant::now();
        advance(Duration::from_millis(50)).await;
        let class = if i % 4 == 3 {
            Class::Failure
        } else {
            Class::Success
        };
        publish(&rig.feedback, class, sent);
        if first_cut.is_none() && rig.layer.snapshot().decelerations > 0 {
            first_cut = Some(i);
        }
    }
    let first_cut = first_cut.expect("a fifth failing is a storm");
    assert!(first_cut <= 50, "first cut after {first_cut} attempts");
    assert!(rig.limit() < 20);
}

#[tokio::test(start_paused = true)]
async fn a_failure_storm_decelerates_like_overload() {
    let rig = Rig::new(|b| b.initial(20));
    let mut limits = Vec::new();
    for _ in 0..6 {
        let sent = Instant::now();
        advance(SECOND).await;
        publish(&rig.feedback, Class::Failure, sent);
        limits.push(rig.limit());
    }
    // Three failures in a row make a storm; from then on each failure sent after the last
    // deceleration decelerates again.
    assert_eq!(limits, [20, 20, 14, 9, 6, 4]);
}

#[tokio::test(start_paused = true)]
async fn after_a_failure_storm_the_limit_climbs_back_to_where_the_storm_found_it() {
    // An outage says nothing of the server's capacity: the ceiling stays at the limit the storm
    // found, and the limit climbs back half the distance per round trip once failures stop.
    let mut rig = Rig::new(|b| {
        b.initial(20)
            .max(100)
            .cooling(SECOND)
            .ceiling_relax_after(HOUR)
            .aimd(Aimd::new().slow_start(false))
    });
    for _ in 0..6 {
        let sent = Instant::now();
        advance(SECOND).await;
        publish(&rig.feedback, Class::Failure, sent);
    }
    assert_eq!(rig.limit(), 4);
    assert_eq!(rig.layer.snapshot().ceiling, Some(20.0));
    let mut limits = Vec::new();
    for _ in 0..6 {
        rig.hold(rig.limit());
        rig.round_trip_of_success().await;
        limits.push(rig.limit());
    }
    assert_eq!(limits, [12, 16, 18, 19, 20, 20]);
}

#[tokio::test(start_paused = true)]
async fn failure_threshold_zero_makes_every_failure_decelerate() {
    let rig = Rig::new(|b| b.initial(20).failure_threshold(0.0));
    publish(&rig.feedback, Class::Failure, Instant::now());
    assert_eq!(rig.limit(), 14);
}

#[tokio::test(start_paused = true)]
async fn fatal_and_cancelled_attempts_leave_the_limit_alone() {
    let rig = Rig::new(|b| b.initial(20));
    publish(&rig.feedback, Class::Fatal, Instant::now());
    publish(&rig.feedback, Class::Cancelled, Instant::now());
    assert_eq!(rig.limit(), 20);
    assert_eq!(rig.layer.snapshot().decelerations, 0);
}

#[tokio::test(start_paused = true)]
async fn the_limit_does_not_grow_while_cooling() {
    let mut rig = Rig::new(|b| {
        b.initial(10)
            .max(20)
            .cooling(5 * SECOND)
            .aimd(Aimd::new().slow_start(false))
    });
    publish(&rig.feedback, overloaded(), Instant::now());
    assert_eq!(rig.limit(), 7);
    assert_eq!(rig.layer.snapshot().state, ControlState::Cooling);
    for _ in 0..4 {
        rig.fill();
        rig.round_trip_of_success().await;
        assert_eq!(rig.limit(), 7, "cooling");
    }
    advance(SECOND).await;
    assert_eq!(rig.layer.snapshot().state, ControlState::Running);
    rig.fill();
    rig.round_trip_of_success().await;
    assert_eq!(rig.limit(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_extends_the_cooling_period() {
    let rig = Rig::new(|b| b.initial(10).cooling(5 * SECOND));
    publish(
        &rig.feedback,
        Class::Overloaded {
            retry_after: Some(20 * SECOND),
        },
        Instant::now(),
    );
    advance(19 * SECOND).await;
    assert_eq!(rig.layer.snapshot().state, ControlState::Cooling);
    advance(SECOND).await;
    assert_eq!(rig.layer.snapshot().state, ControlState::Running);
}

#[tokio::test(start_paused = true)]
async fn reacceleration_climbs_step_by_step_to_the_safe_ceiling_and_stops() {
    let mut rig = Rig::new(|b| {
        b.initial(20)
            .max(100)
            .cooling(SECOND)
            .ceiling_relax_after(HOUR)
            .aimd(Aimd::new().slow_start(false))
    });
    publish(&rig.feedback, overloaded(), Instant::now());
    assert_eq!(rig.limit(), 14);
    assert_eq!(
        rig.layer.snapshot().ceiling,
        Some(19.0),
        "one step under what overloaded"
    );
    advance(SECOND).await;
    let mut limits = Vec::new();
    for _ in 0..7 {
        rig.fill();
        rig.round_trip_of_success().await;
        limits.push(rig.limit());
    }
    // Half the distance to the ceiling per round trip, at least one step; never above it.
    assert_eq!(limits, [16, 17, 18, 19, 19, 19, 19]);
}

#[tokio::test(start_paused = true)]
async fn the_ceiling_relaxes_after_a_quiet_period() {
    let mut rig = Rig::new(|b| {
        b.initial(20)
            .max(100)
            .cooling(SECOND)
            .ceiling_relax_after(30 * SECOND)
            .aimd(Aimd::new().slow_start(false))
    });
    publish(&rig.feedback, overloaded(), Instant::now());
    advance(SECOND).await;
    let mut under_ceiling = Vec::new();
    loop {
        rig.fill();
        rig.round_trip_of_success().await;
        if rig.layer.snapshot().ceiling.is_none() {
            break;
        }
        under_ceiling.push(rig.limit());
    }
    assert!(under_ceiling.iter().all(|l| *l <= 19), "{under_ceiling:?}");
    assert!(
        under_ceiling.len() >= 28,
        "held for the quiet period (30 s)"
    );
    let mut limits = vec![rig.limit()];
    for _ in 0..3 {
        rig.fill();
        rig.round_trip_of_success().await;
        limits.push(rig.limit());
    }
    assert_eq!(limits, [20, 21, 22, 23], "additive above the old ceiling");
    assert!(limits[2] > 19);
}

#[tokio::test(start_paused = true)]
async fn slow_start_doubles_per_round_trip_until_the_first_overload() {
    let mut rig = Rig::new(|b| b.initial(2).max(64).cooling(SECOND));
    let mut limits = Vec::new();
    for _ in 0..4 {
        rig.fill();
        rig.round_trip_of_success().await;
        limits.push(rig.limit());
    }
    assert_eq!(limits, [4, 8, 16, 32]);

    // A success of an attempt sent before the last change is not a round trip of the new limit.
    rig.fill();
    let before = Instant::now() - SECOND;
    publish(&rig.feedback, Class::Success, before);
    assert_eq!(rig.limit(), 32);

    publish(&rig.feedback, overloaded(), Instant::now());
    assert_eq!(
        rig.limit(),
        16,
        "back to the last limit known good, as TCP's slow start exits (RFC 5681)"
    );
    rig.hold(16);
    advance(SECOND).await;
    rig.round_trip_of_success().await;
    assert_eq!(
        rig.layer.snapshot().ceiling,
        None,
        "no level known to overload"
    );
    assert_eq!(
        rig.limit(),
        17,
        "no more doubling: additive from the last good limit"
    );
}

#[tokio::test(start_paused = true)]
async fn sender_limited_load_does_not_inflate_the_limit() {
    let mut rig = Rig::new(|b| b.initial(10).max(100));
    for _ in 0..50 {
        rig.hold(3);
        rig.round_trip_of_success().await;
    }
    assert_eq!(
        rig.limit(),
        10,
        "three in flight never tested a limit of ten"
    );
    rig.fill();
    rig.round_trip_of_success().await;
    assert_eq!(rig.limit(), 20, "filled once: it grows");
}

#[tokio::test(start_paused = true)]
async fn queueing_behind_permits_granted_but_not_yet_claimed_does_not_fill_the_limit() {
    let mut rig = Rig::new(|b| b.initial(4).max(64));
    rig.fill();
    // Two more wait in the queue.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut call = task::spawn(rig.service.clone().oneshot(request("waiting")));
        assert_pending!(call.poll());
        waiting.push(call);
    }
    rig.round_trip_of_success().await;
    assert_eq!(rig.limit(), 8);
    // The limit doubled: both waiters are granted a permit (6 of 8 in flight) and have not
    // claimed it yet. A newcomer queues behind them, though the limit is not full.
    let mut newcomer = task::spawn(rig.service.clone().oneshot(request("newcomer")));
    assert_pending!(newcomer.poll());
    assert!(rig.layer.snapshot().in_flight < rig.limit());
    rig.round_trip_of_success().await;
    assert_eq!(rig.limit(), 8, "in flight never reached the limit of 8");
    drop((waiting, newcomer));
}

#[tokio::test(start_paused = true)]
async fn no_growth_while_the_breaker_is_half_open() {
    let mut rig = Rig::new(|b| b.initial(4).max(100));
    rig.feedback.set_circuit_state(CircuitState::HalfOpen);
    for _ in 0..5 {
        rig.fill();
        rig.round_trip_of_success().await;
    }
    assert_eq!(rig.limit(), 4);
    rig.feedback.set_circuit_state(CircuitState::Closed);
    rig.fill();
    rig.round_trip_of_success().await;
    assert_eq!(rig.limit(), 8);
}

#[tokio::test(start_paused = true)]
async fn the_gradient_shrinks_the_limit_when_latency_rises_before_any_error() {
    let rig = Rig::new(|b| {
        b.initial(20)
            .max(20)
            .gradient(Gradient::new().windows(5, 100))
    });
    let success = |latency_ms: u64| {
        let outcome = Outcome::new(Class::Success, 0, Instant::now())
            .with_latency(Duration::from_millis(latency_ms));
        rig.feedback.publish(&outcome);
    };
    for _ in 0..50 {
        advance(SECOND).await;
        success(100);
    }
    assert_eq!(rig.limit(), 20, "steady latency: the limit holds");
    for _ in 0..10 {
        advance(SECOND).await;
        success(400);
    }
    let snapshot = rig.layer.snapshot();
    assert!(snapshot.limit < 16, "latency ×4: {snapshot:?}");
    assert_eq!(snapshot.decelerations, 0, "no error was seen");
}

#[tokio::test(start_paused = true)]
async fn the_handle_snapshot_has_a_concurrency_part() {
    let mut rig = Rig::new(|b| b.initial(3).max(3));
    rig.fill();
    let mut waiter = task::spawn(rig.service.clone().oneshot(request("w")));
    assert_pending!(waiter.poll());
    publish(&rig.feedback, overloaded(), Instant::now());

    let snapshot = rig.feedback.snapshot();
    let part = snapshot.part("concurrency").expect("registered");
    assert_eq!(part.get("limit"), Some(&SnapshotValue::U64(2)));
    assert_eq!(part.get("in_flight"), Some(&SnapshotValue::U64(3)));
    assert_eq!(part.get("waiting"), Some(&SnapshotValue::U64(1)));
    assert_eq!(
        part.get("state"),
        Some(&SnapshotValue::Text("cooling".into()))
    );
    assert_eq!(
        part.get("pacing_interval"),
        Some(&SnapshotValue::Duration(Duration::from_millis(50)))
    );
}

#[test]
fn the_default_initial_limit_is_brought_within_min_and_max() {
    let start =
        |b: gentlify_concurrency::AdaptiveConcurrencyBuilder| b.build().unwrap().snapshot().limit;
    let build = AdaptiveConcurrencyLayer::builder;
    assert_eq!(start(build()), gentlify_concurrency::DEFAULT_INITIAL);
    assert_eq!(start(build().max(3)), 3);
    assert_eq!(start(build().min(20)), 20);
    // A value set by hand is not moved: out of range, it is an error.
    assert!(matches!(
        build().max(3).initial(4).build().unwrap_err(),
        BuildError::InitialOutOfRange { initial: 4, .. }
    ));
}

#[test]
fn the_builder_rejects_settings_that_cannot_work() {
    let build = AdaptiveConcurrencyLayer::builder;
    assert_eq!(build().min(0).build().unwrap_err(), BuildError::ZeroMin);
    assert!(matches!(
        build().initial(300).build().unwrap_err(),
        BuildError::InitialOutOfRange { initial: 300, .. }
    ));
    assert!(matches!(
        build()
            .aimd(Aimd::new().decrease_factor(1.0))
            .build()
            .unwrap_err(),
        BuildError::OutOfRange {
            name: "decrease_factor",
            ..
        }
    ));
    assert!(matches!(
        build()
            .gradient(Gradient::new().tolerance(0.5))
            .build()
            .unwrap_err(),
        BuildError::OutOfRange {
            name: "tolerance",
            ..
        }
    ));
    assert!(matches!(
        build().failure_threshold(1.5).build().unwrap_err(),
        BuildError::OutOfRange {
            name: "failure_threshold",
            ..
        }
    ));
    assert!(build().build().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_while_streams_answered_before_the_cut_fill_the_server_does_not_cut_again() {
    let feedback = Feedback::new();
    let layer = AdaptiveConcurrencyLayer::builder()
        .feedback(feedback.clone())
        .initial(4)
        .max(4)
        .aimd(Aimd::new().slow_start(false))
        .build()
        .unwrap();
    // Three streamed answers: their heads come back after 300 ms, their bodies stay open.
    let service = layer.layer(Upstream::scripted(|name, _| {
        if name == "x" {
            (429, Duration::from_millis(10))
        } else {
            (200, Duration::from_millis(300))
        }
    }));
    let mut streams = Vec::new();
    for name in ["s1", "s2", "s3"] {
        streams.push(service.clone().oneshot(request(name)).await.unwrap());
    }
    // A fourth request is refused (its outcome is settled once its body is read): the limit
    // is cut to 2, under the 3 bodies being read.
    let refused = service.clone().oneshot(request("x")).await.unwrap();
    assert_eq!(refused.status(), 429);
    common::finish(refused).await;
    assert_eq!(layer.snapshot().limit, 2);
    assert_eq!(layer.snapshot().decelerations, 1);

    // A refusal of an attempt sent well after a head round trip (a retry, another client's
    // request): the three streams sent before the cut still fill the server, so it answers
    // them, not the new limit.
    advance(2 * SECOND).await;
    let sent = Instant::now();
    advance(Duration::from_millis(10)).await;
    publish(&feedback, overloaded(), sent);
    assert_eq!(
        layer.snapshot().decelerations,
        1,
        "no cascade on old streams"
    );
    assert_eq!(layer.snapshot().limit, 2);

    // Once a stream has ended (in flight back at the limit), a refusal answers the new limit
    // and cuts again.
    for response in streams.drain(..1) {
        common::finish(response).await;
    }
    assert_eq!(layer.snapshot().in_flight, 2);
    advance(SECOND).await;
    let sent = Instant::now();
    advance(Duration::from_millis(10)).await;
    publish(&feedback, overloaded(), sent);
    assert_eq!(layer.snapshot().decelerations, 2);
}

#[tokio::test(start_paused = true)]
async fn with_streamed_answers_growth_waits_for_a_whole_body_after_a_change() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(3)
        .max(10)
        .aimd(Aimd::new().slow_start(false).knee(false))
        .build()
        .unwrap();
    // Heads after 300 ms; each body streams for 10 s after its head, read as it comes.
    let service = layer.layer(tower::service_fn(|_: http::Request<String>| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, std::convert::Infallible>(http::Response::new(common::Streamed::new(10 * SECOND)))
    }));
    let mut first = Vec::new();
    for name in ["a", "b"] {
        let response = service.clone().oneshot(request(name)).await.unwrap();
        first.push(tokio::spawn(common::finish(response)));
    }
    advance(10 * SECOND).await;
    for reading in first {
        reading.await.unwrap();
    }
    // The limit is set (a change) and filled: three streams start under it.
    layer.set_limit(3);
    let changed = Instant::now();
    let mut streams = Vec::new();
    for name in ["c", "d", "e"] {
        let response = service.clone().oneshot(request(name)).await.unwrap();
        streams.push(tokio::spawn(common::finish(response)));
    }
    // Their heads are successes of attempts sent after the change, but the server has carried
    // the new limit for 300 ms, not for a whole body: no growth yet.
    assert_eq!(layer.snapshot().limit, 3);
    assert!(changed.elapsed() < SECOND);

    // A body's time after the change, the streams end and the next request's success grows it.
    advance(10 * SECOND).await;
    for reading in streams {
        reading.await.unwrap();
    }
    let _f = service.clone().oneshot(request("f")).await.unwrap();
    assert_eq!(layer.snapshot().limit, 4);
}
