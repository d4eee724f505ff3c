//! The handle: outcomes reach every controller once; the pause gate holds and then lets go.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gentlify_core::{
    CircuitState, Class, Controller, Dimension, Feedback, Outcome, PauseWait, Quota, QuotaReport,
    SnapshotPart, SnapshotValue,
};
use support::Recorder;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};

#[tokio::test(start_paused = true)]
async fn one_published_outcome_reaches_each_registered_controller_exactly_once() {
    let feedback = Feedback::new();
    let recorders: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
    for r in &recorders {
        feedback.register(r);
    }
    feedback.publish(&Outcome::new(Class::Failure, 0, Instant::now()));
    for r in &recorders {
        assert_eq!(r.classes(), ["failure"]);
    }
    assert_eq!(feedback.snapshot().attempts_failure, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_controller_is_no_longer_called_nor_kept() {
    let feedback = Feedback::new();
    let kept = Arc::new(Recorder::default());
    let dropped = Arc::new(Recorder::default());
    feedback.register(&kept);
    feedback.register(&dropped);
    assert_eq!(feedback.controllers(), 2);
    drop(dropped);
    assert_eq!(feedback.controllers(), 1);
    feedback.publish(&Outcome::new(Class::Success, 0, Instant::now()));
    assert_eq!(kept.classes(), ["success"]);
}

#[derive(Default)]
struct Quotas(std::sync::Mutex<Vec<QuotaReport>>);
impl Controller for Quotas {
    fn on_quota(&self, report: &QuotaReport) {
        self.0.lock().unwrap().push(report.clone());
    }
    fn snapshot(&self) -> Option<SnapshotPart> {
        Some(SnapshotPart::new("quotas").field("reports", self.0.lock().unwrap().len()))
    }
}

#[tokio::test(start_paused = true)]
async fn quota_reports_reach_controllers_and_snapshots_collect_parts() {
    let feedback = Feedback::builder().name("chat").build();
    let quotas = Arc::new(Quotas::default());
    feedback.register(&quotas);
    let report = QuotaReport::new(
        "test",
        vec![Quota::new(Dimension::Tokens)
            .with_limit(1000)
            .with_remaining(0)
            .with_reset_after(Duration::from_secs(6))],
    );
    assert_eq!(
        report.exhausted_until(),
        Some(Instant::now() + Duration::from_secs(6))
    );
    feedback.report_quota(&report);
    assert_eq!(quotas.0.lock().unwrap().len(), 1);
    let snapshot = feedback.snapshot();
    assert_eq!(snapshot.name.as_deref(), Some("chat"));
    assert_eq!(
        snapshot.part("quotas").unwrap().get("reports"),
        Some(&SnapshotValue::U64(1))
    );
    assert!(snapshot.to_string().contains("quotas: reports=1"));
}

#[tokio::test(start_paused = true)]
async fn the_pause_gate_holds_dispatch_until_its_instant_and_no_longer() {
    let feedback = Feedback::new();
    let start = Instant::now();
    feedback.pause_until(start + Duration::from_millis(1500));
    let mut wait = tokio_test::task::spawn(PauseWait::new(feedback.clone()));
    assert_pending!(wait.poll());
    tokio::time::advance(Duration::from_millis(1499)).await;
    assert_pending!(wait.poll());
    assert!(feedback.snapshot().paused_for.is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_ready!(wait.poll());
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(feedback.pause_gate().paused_until(), None);
    // Once open, a new waiter passes at once.
    assert_ready!(tokio_test::task::spawn(PauseWait::new(feedback.clone())).poll());
}

#[tokio::test(start_paused = true)]
async fn a_pause_extended_while_waiting_is_followed_and_a_shorter_one_ignored() {
    let feedback = Feedback::new();
    let start = Instant::now();
    feedback.pause_gate().pause_for(Duration::from_secs(1));
    let waiter = tokio::spawn(PauseWait::new(feedback.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    feedback.pause_gate().pause_for(Duration::from_secs(2)); // now until 2.5 s
    feedback.pause_gate().pause_for(Duration::from_millis(100)); // shorter: ignored
    waiter.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn a_cleared_pause_lets_waiters_go() {
    let feedback = Feedback::new();
    feedback.pause_gate().pause_for(Duration::from_secs(60));
    let mut wait = tokio_test::task::spawn(PauseWait::new(feedback.clone()));
    assert_pending!(wait.poll());
    feedback.pause_gate().clear();
    tokio::time::advance(Duration::from_millis(1)).await;
    // The waiter's timer is still armed for 60 s; a poll sees the gate open.
    assert_ready!(wait.poll());
}

#[test]
fn absurd_pauses_do_not_overflow() {
    let feedback = Feedback::new();
    // Not representable as an instant: ignored, never a panic.
    feedback.pause_gate().pause_for(Duration::MAX);
    assert_eq!(feedback.pause_gate().paused_until(), None);
    // A far but representable instant holds.
    feedback
        .pause_gate()
        .pause_for(Duration::from_secs(100 * 365 * 24 * 3600));
    assert!(feedback.pause_gate().remaining().unwrap() > Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn an_absurd_reset_in_a_report_does_not_panic() {
    let report = QuotaReport::new(
        "test",
        vec![Quota::new(Dimension::Requests)
            .with_remaining(0)
            .with_reset_after(Duration::MAX)],
    );
    assert_eq!(report.exhausted_until(), None);
}

#[test]
fn circuit_state_and_shared_state_are_seen_by_every_clone() {
    let feedback = Feedback::new();
    let clone = feedback.clone();
    assert_eq!(clone.circuit_state(), CircuitState::Closed);
    feedback.set_circuit_state(CircuitState::HalfOpen);
    assert_eq!(clone.circuit_state(), CircuitState::HalfOpen);
    assert!(!CircuitState::HalfOpen.rejects() && CircuitState::Open.rejects());

    let a = feedback.shared(|| std::sync::atomic::AtomicU32::new(1));
    let b = clone.shared(|| std::sync::atomic::AtomicU32::new(2));
    assert!(Arc::ptr_eq(&a, &b));
    let other = Feedback::new().shared(|| std::sync::atomic::AtomicU32::new(3));
    assert!(!Arc::ptr_eq(&a, &other));
}

/// Counts what it hears, and says which of the two it wants.
struct Picky {
    outcomes: bool,
    quotas: bool,
    heard: std::sync::Mutex<(usize, usize)>,
}

impl Controller for Picky {
    fn on_outcome(&self, _: &Outcome) {
        self.heard.lock().unwrap().0 += 1;
    }

    fn on_quota(&self, _: &QuotaReport) {
        self.heard.lock().unwrap().1 += 1;
    }

    fn wants_outcomes(&self) -> bool {
        self.outcomes
    }

    fn wants_quotas(&self) -> bool {
        self.quotas
    }
}

#[tokio::test(start_paused = true)]
async fn a_controller_hears_only_what_it_wants_and_still_counts_as_registered() {
    let feedback = Feedback::new();
    let picky = |outcomes, quotas| {
        Arc::new(Picky {
            outcomes,
            quotas,
            heard: std::sync::Mutex::new((0, 0)),
        })
    };
    let (all, outcomes_only, quotas_only) =
        (picky(true, true), picky(true, false), picky(false, true));
    feedback.register(&all);
    feedback.register(&outcomes_only);
    feedback.register(&quotas_only);
    assert_eq!(feedback.controllers(), 3);
    feedback.publish(&Outcome::new(Class::Success, 0, Instant::now()));
    feedback.report_quota(&QuotaReport::new(
        "test",
        vec![Quota::new(Dimension::Requests).with_remaining(1)],
    ));
    assert_eq!(*all.heard.lock().unwrap(), (1, 1));
    assert_eq!(*outcomes_only.heard.lock().unwrap(), (1, 0));
    assert_eq!(*quotas_only.heard.lock().unwrap(), (0, 1));
}
