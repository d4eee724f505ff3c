//! The state machine, registered on the handle as a [`Controller`].

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use gentlify_core::error::CircuitOpen;
use gentlify_core::{CircuitState, Controller, Feedback, Hold, HoldKey, Outcome, SlotEnded};
use gentlify_core::{SnapshotPart, SnapshotValue};
use tokio::time::Instant;

use crate::anomaly::AnomalyDetector;
use crate::config::{Config, SlidingWindow, Verdict};
use crate::window::{Counts, Window};

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The window's failure rate reached the threshold.
    FailureRate(f64),
    /// The window's slow-call rate reached the threshold.
    SlowCallRate(f64),
    /// This many failures came in a row.
    ConsecutiveFailures(u32),
    /// Recent latencies stood this many standard deviations above their rolling mean.
    LatencyAnomaly(f64),
    /// The open period ended: probing starts.
    OpenPeriodOver,
    /// The probes' failure rate (or slow-call rate) reached the threshold.
    ProbesFailed(f64),
    /// The probes succeeded.
    ProbesSucceeded,
    /// Changed by hand through the [`CircuitBreakerHandle`].
    Manual,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::FailureRate(r) => write!(f, "failure rate {:.0}%", r * 100.0),
            TransitionReason::SlowCallRate(r) => write!(f, "slow-call rate {:.0}%", r * 100.0),
            TransitionReason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            TransitionReason::LatencyAnomaly(z) => write!(f, "latency z-score {z:.1}"),
            TransitionReason::OpenPeriodOver => f.write_str("open period over"),
            TransitionReason::ProbesFailed(r) => write!(f, "probes failed ({:.0}%)", r * 100.0),
            TransitionReason::ProbesSucceeded => f.write_str("probes succeeded"),
            TransitionReason::Manual => f.write_str("manual"),
        }
    }
}

/// A change of the breaker's state, as given to the
/// [`on_transition`](crate::CircuitBreakerBuilder::on_transition) callback.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// Why.
    pub reason: TransitionReason,
    /// When opening: how long until the first probe.
    pub open_for: Option<Duration>,
}

/// The breaker's state and figures at one instant, from
/// [`CircuitBreakerHandle::snapshot`]. The same figures are in the handle's snapshot, in the
/// part named `"breaker"`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state.
    pub state: CircuitState,
    /// Calls in the closed state's window (or probes judged so far, when half-open).
    pub calls: u32,
    /// Failures over calls in the same, `None` with no calls.
    pub failure_rate: Option<f64>,
    /// Slow calls over calls in the same, `None` with no calls.
    pub slow_call_rate: Option<f64>,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Probes in flight (half-open).
    pub probes_in_flight: usize,
    /// Time until the next probe can go: open until the open period ends; half-open, zero
    /// when a permit is free, else until the oldest probe's deadline. `None` when closed,
    /// disabled or forced open.
    pub next_probe_in: Option<Duration>,
    /// The factor the open period is multiplied by at the next opening from half-open.
    pub open_factor: f64,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const FORCED_OPEN: u8 = 3;
const DISABLED: u8 = 4;

fn code(state: CircuitState) -> u8 {
    match state {
        CircuitState::Open => OPEN,
        CircuitState::HalfOpen => HALF_OPEN,
        CircuitState::ForcedOpen => FORCED_OPEN,
        CircuitState::Disabled => DISABLED,
        _ => CLOSED,
    }
}

/// What [`Breaker::admit`] decided for one call.
pub(crate) enum Admission {
    Pass,
    Probe(ProbePermit),
    Reject(CircuitOpen),
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Pass => f.write_str("Pass"),
            Admission::Probe(p) => write!(f, "Probe({})", p.id),
            Admission::Reject(e) => write!(f, "Reject({e})"),
        }
    }
}

pub(crate) struct Breaker {
    config: Config,
    feedback: Feedback,
    key: HoldKey,
    /// Mirror of `machine.state`, read without the lock on the hot path.
    state: AtomicU8,
    machine: Mutex<Machine>,
}

struct Machine {
    state: CircuitState,
    /// When the current state began: outcomes of attempts sent before are not counted in it.
    entered_at: Instant,
    window: Window,
    consecutive_failures: u32,
    anomaly: Option<AnomalyDetector>,
    open_until: Instant,
    /// Openings from half-open since the breaker last closed.
    reopenings: u32,
    /// Probes in flight: id and start.
    probes: Vec<(u64, Instant)>,
    next_probe_id: u64,
    probe_counts: Counts,
    /// Bumped by every transition and every probe given back: what a waiting call waits for.
    generation: u64,
    /// The calls waiting for admission ([`CircuitBreakerBuilder::wait_while_open`]), one entry
    /// per waiting service (keyed by its id), woken and cleared when `generation` moves.
    ///
    /// [`CircuitBreakerBuilder::wait_while_open`]: crate::CircuitBreakerBuilder::wait_while_open
    waiters: Vec<(u64, Waker)>,
    next_waiter_id: u64,
}

impl Breaker {
    pub(crate) fn new(config: Config, feedback: Feedback) -> Arc<Self> {
        let now = Instant::now();
        let window = match config.window {
            SlidingWindow::Count(n) => Window::count(n),
            SlidingWindow::Time { length, buckets } => Window::time(length, buckets, now),
        };
        let anomaly = config.latency_anomaly.map(AnomalyDetector::new);
        let breaker = Arc::new(Breaker {
            feedback,
            key: HoldKey::unique(),
            state: AtomicU8::new(CLOSED),
            machine: Mutex::new(Machine {
                state: CircuitState::Closed,
                entered_at: now,
                window,
                consecutive_failures: 0,
                anomaly,
                open_until: now,
                reopenings: 0,
                probes: Vec::new(),
                next_probe_id: 0,
                probe_counts: Counts::default(),
                generation: 0,
                waiters: Vec::new(),
                next_waiter_id: 0,
            }),
            config,
        });
        breaker.feedback.set_circuit_state(CircuitState::Closed);
        breaker.feedback.register(&breaker);
        breaker
    }

    pub(crate) fn feedback(&self) -> &Feedback {
        &self.feedback
    }

    pub(crate) fn key(&self) -> HoldKey {
        self.key
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            OPEN => CircuitState::Open,
            HALF_OPEN => CircuitState::HalfOpen,
            FORCED_OPEN => CircuitState::ForcedOpen,
            DISABLED => CircuitState::Disabled,
            _ => CircuitState::Closed,
        }
    }

    /// Decides whether one call may go. Closed and disabled cost one atomic load.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let s = self.state.load(Ordering::Acquire);
        if s == CLOSED || s == DISABLED {
            return Admission::Pass;
        }
        let mut transition = None;
        let admission = {
            let mut m = self.lock();
            let now = Instant::now();
            if m.state == CircuitState::Open {
                if let Some(wait) = self.still_open(&mut m, now) {
                    return Admission::Reject(CircuitOpen::new(wait));
                }
                transition = Some(self.enter(
                    &mut m,
                    CircuitState::HalfOpen,
                    TransitionReason::OpenPeriodOver,
                    now,
                ));
            }
            match m.state {
                CircuitState::HalfOpen => self.take_probe(&mut m, now),
                CircuitState::Open | CircuitState::ForcedOpen => {
                    Admission::Reject(CircuitOpen::new(Duration::MAX))
                }
                _ => Admission::Pass,
            }
        };
        if let Some(t) = transition {
            self.announce(&t);
        }
        admission
    }

    /// The time still to wait when open, following a server-directed pause that ends later.
    fn still_open(&self, m: &mut Machine, now: Instant) -> Option<Duration> {
        if let Some(paused) = self.feedback.pause_gate().paused_until() {
            m.open_until = m.open_until.max(paused);
        }
        (now < m.open_until).then(|| m.open_until - now)
    }

    fn take_probe(self: &Arc<Self>, m: &mut Machine, now: Instant) -> Admission {
        let deadline = self.config.probe_deadline;
        let before = m.probes.len();
        m.probes
            .retain(|&(_, started)| now < expiry(started, deadline));
        if m.probes.len() < before {
            tracing::warn!(
                replaced = before - m.probes.len(),
                deadline_ms = deadline.as_millis() as u64,
                "gentlify circuit breaker: hung probe replaced"
            );
        }
        if m.probes.len() < self.config.half_open_probes {
            let id = m.next_probe_id;
            m.next_probe_id += 1;
            m.probes.push((id, now));
            return Admission::Probe(ProbePermit {
                breaker: Arc::clone(self),
                id,
            });
        }
        let wait = m
            .probes
            .iter()
            .map(|&(_, started)| expiry(started, deadline).saturating_duration_since(now))
            .min()
            .unwrap_or_default();
        Admission::Reject(CircuitOpen::new(wait))
    }

    fn release_probe(&self, id: u64) {
        let mut m = self.lock();
        if let Some(i) = m.probes.iter().position(|&(p, _)| p == id) {
            m.probes.swap_remove(i);
            // A probe's place is free: a waiting call may take it.
            Self::changed(&mut m);
        }
    }

    /// How long a refused call waits for admission, when it does.
    pub(crate) fn open_wait(&self) -> Option<Duration> {
        self.config.open_wait
    }

    /// The count of transitions and freed probes so far (see [`wait`](Self::wait)).
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A new id for a waiting service.
    pub(crate) fn waiter_id(&self) -> u64 {
        let mut m = self.lock();
        m.next_waiter_id += 1;
        m.next_waiter_id
    }

    /// Registers `waker` (under `id`) to be woken at the next transition or freed probe, unless
    /// one happened since `generation` was read, before the refusal (then returns `false`:
    /// admit again).
    pub(crate) fn wait(&self, id: u64, generation: u64, waker: &Waker) -> bool {
        let mut m = self.lock();
        if m.generation != generation {
            return false;
        }
        match m.waiters.iter_mut().find(|(w, _)| *w == id) {
            Some((_, old)) => old.clone_from(waker),
            None => m.waiters.push((id, waker.clone())),
        }
        true
    }

    /// Forgets a waiting service's waker (it was admitted, refused for good, or dropped).
    pub(crate) fn unwait(&self, id: u64) {
        let mut m = self.lock();
        if let Some(i) = m.waiters.iter().position(|(w, _)| *w == id) {
            m.waiters.swap_remove(i);
        }
    }

    /// Moves the generation on and wakes every waiting call (they admit themselves again).
    fn changed(m: &mut Machine) {
        m.generation = m.generation.wrapping_add(1);
        for (_, waker) in m.waiters.drain(..) {
            waker.wake();
        }
    }

    /// Moves to `to`; the caller announces the returned transition once the lock is released.
    fn enter(
        &self,
        m: &mut Machine,
        to: CircuitState,
        reason: TransitionReason,
        now: Instant,
    ) -> Transition {
        let from = m.state;
        let mut open_for = None;
        match to {
            CircuitState::Open => {
                if from == CircuitState::HalfOpen {
                    m.reopenings = m.reopenings.saturating_add(1);
                } else {
                    m.reopenings = 0;
                }
                let factor = open_factor(m.reopenings, self.config.open_backoff_max);
                let mut secs = self.config.open_for.as_secs_f64() * factor;
                if self.config.open_jitter > 0.0 {
                    secs *= 1.0 + self.config.open_jitter * (2.0 * fastrand::f64() - 1.0);
                }
                let period = Duration::try_from_secs_f64(secs).unwrap_or(MAX_OPEN);
                let mut until = expiry(now, period);
                if let Some(paused) = self.feedback.pause_gate().paused_until() {
                    until = until.max(paused);
                }
                m.open_until = until;
                open_for = Some(until - now);
            }
            CircuitState::Closed => {
                m.window.clear(now);
                m.consecutive_failures = 0;
                m.reopenings = 0;
                if let Some(a) = &mut m.anomaly {
                    a.clear();
                }
            }
            _ => {}
        }
        m.probes.clear();
        m.probe_counts = Counts::default();
        Self::changed(m);
        m.state = to;
        m.entered_at = now;
        self.state.store(code(to), Ordering::Release);
        self.feedback.set_circuit_state(to);
        Transition {
            from,
            to,
            reason,
            open_for,
        }
    }

    fn announce(&self, t: &Transition) {
        if t.to == CircuitState::Open {
            tracing::warn!(
                handle = self.feedback.name().unwrap_or_default(),
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = %t.reason,
                open_ms = t.open_for.map(|d| d.as_millis() as u64),
                "gentlify circuit breaker opened"
            );
        } else {
            tracing::info!(
                handle = self.feedback.name().unwrap_or_default(),
                from = t.from.as_str(),
                to = t.to.as_str(),
                reason = %t.reason,
                "gentlify circuit breaker state changed"
            );
        }
        if let Some(callback) = &self.config.on_transition {
            callback(t);
        }
    }

    /// Moves to `to` by hand (no-op when already there).
    pub(crate) fn set(&self, to: CircuitState) {
        let t = {
            let mut m = self.lock();
            if m.state == to {
                return;
            }
            self.enter(&mut m, to, TransitionReason::Manual, Instant::now())
        };
        self.announce(&t);
    }

    fn judge(&self, counts: Counts, threshold_calls: u32) -> Option<(bool, f64)> {
        if counts.calls < threshold_calls.max(1) {
            return None;
        }
        let failure = counts.failure_rate().unwrap_or(0.0);
        if failure >= self.config.failure_rate_threshold {
            return Some((true, failure));
        }
        let slow = counts.slow_call_rate().unwrap_or(0.0);
        (slow >= self.config.slow_call_rate_threshold).then_some((false, slow))
    }

    fn record(&self, outcome: &Outcome) -> Option<Transition> {
        let failed = match self.config.verdict(&outcome.class) {
            Verdict::Ignore => return None,
            Verdict::Failure => true,
            Verdict::Success => false,
        };
        let slow = outcome.latency >= self.config.slow_call_duration;
        let mut m = self.lock();
        if outcome.sent_at < m.entered_at {
            return None;
        }
        // The clock is read only when something needs it: a time window, or a transition.
        match m.state {
            CircuitState::Closed => {
                let counts = m.window.record(Instant::now, failed, slow);
                m.consecutive_failures = if failed {
                    m.consecutive_failures + 1
                } else {
                    0
                };
                let z = m.anomaly.as_mut().and_then(|a| a.record(outcome.latency));
                let reason = if self.config.consecutive_failures > 0
                    && m.consecutive_failures >= self.config.consecutive_failures
                {
                    Some(TransitionReason::ConsecutiveFailures(
                        m.consecutive_failures,
                    ))
                } else if let Some((is_failure, rate)) =
                    self.judge(counts, self.config.minimum_calls)
                {
                    Some(if is_failure {
                        TransitionReason::FailureRate(rate)
                    } else {
                        TransitionReason::SlowCallRate(rate)
                    })
                } else {
                    z.map(TransitionReason::LatencyAnomaly)
                };
                reason.map(|r| self.enter(&mut m, CircuitState::Open, r, Instant::now()))
            }
            CircuitState::HalfOpen => {
                m.probe_counts.add(failed, slow);
                let counts = m.probe_counts;
                if (counts.calls as usize) < self.config.half_open_probes {
                    return None;
                }
                let now = Instant::now();
                Some(match self.judge(counts, 1) {
                    Some((_, rate)) => self.enter(
                        &mut m,
                        CircuitState::Open,
                        TransitionReason::ProbesFailed(rate),
                        now,
                    ),
                    None => self.enter(
                        &mut m,
                        CircuitState::Closed,
                        TransitionReason::ProbesSucceeded,
                        now,
                    ),
                })
            }
            // An attempt sent after the breaker opened (by a request admitted before, still
            // queued below it) came back well: the upstream answers again. The open period ends
            // now, so the next call goes as a probe (half-open still decides), instead of every
            // call waiting, or being refused, until a timer set during the outage runs out.
            CircuitState::Open if !failed => {
                let now = Instant::now();
                if self.still_open(&mut m, now).is_some()
                    && self
                        .feedback
                        .pause_gate()
                        .paused_until()
                        .is_none_or(|p| p <= now)
                {
                    m.open_until = now;
                    Self::changed(&mut m);
                }
                None
            }
            _ => None,
        }
    }

    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let mut m = self.lock();
        let now = Instant::now();
        let counts = match m.state {
            CircuitState::HalfOpen => m.probe_counts,
            _ => m.window.counts(now),
        };
        let next_probe_in = match m.state {
            CircuitState::Open => {
                let until = match self.feedback.pause_gate().paused_until() {
                    Some(paused) => m.open_until.max(paused),
                    None => m.open_until,
                };
                Some(until.saturating_duration_since(now))
            }
            CircuitState::HalfOpen => Some(if m.probes.len() < self.config.half_open_probes {
                Duration::ZERO
            } else {
                m.probes
                    .iter()
                    .map(|&(_, s)| {
                        expiry(s, self.config.probe_deadline).saturating_duration_since(now)
                    })
                    .min()
                    .unwrap_or_default()
            }),
            _ => None,
        };
        let next_reopenings = match m.state {
            CircuitState::Closed => 0,
            _ => m.reopenings.saturating_add(1),
        };
        BreakerSnapshot {
            state: m.state,
            calls: counts.calls,
            failure_rate: counts.failure_rate(),
            slow_call_rate: counts.slow_call_rate(),
            consecutive_failures: m.consecutive_failures,
            probes_in_flight: m.probes.len(),
            next_probe_in,
            open_factor: open_factor(next_reopenings, self.config.open_backoff_max),
        }
    }
}

/// The longest open period the breaker represents (a year), so that no configuration makes the
/// arithmetic on instants overflow.
const MAX_OPEN: Duration = Duration::from_secs(365 * 24 * 3600);

/// `start + period`, saturated at [`MAX_OPEN`] from `start`.
pub(crate) fn expiry(start: Instant, period: Duration) -> Instant {
    start.checked_add(period.min(MAX_OPEN)).unwrap_or(start)
}

fn open_factor(reopenings: u32, max: f64) -> f64 {
    2f64.powi(reopenings.min(64) as i32).min(max)
}

impl Controller for Breaker {
    fn wants_quotas(&self) -> bool {
        false
    }

    fn on_outcome(&self, outcome: &Outcome) {
        let s = self.state.load(Ordering::Acquire);
        if s == FORCED_OPEN || s == DISABLED {
            return;
        }
        if let Some(t) = self.record(outcome) {
            self.announce(&t);
        }
    }

    fn snapshot(&self) -> Option<SnapshotPart> {
        let s = Breaker::snapshot(self);
        Some(
            SnapshotPart::new("breaker")
                .field("state", s.state.as_str())
                .field("calls", s.calls)
                .field("failure_rate", s.failure_rate)
                .field("slow_call_rate", s.slow_call_rate)
                .field("consecutive_failures", s.consecutive_failures)
                .field("probes_in_flight", s.probes_in_flight)
                .field(
                    "next_probe_in",
                    s.next_probe_in
                        .map_or(SnapshotValue::Unknown, SnapshotValue::Duration),
                ),
        )
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish()
    }
}

/// The right of one half-open probe to be in flight. Held in the request's slot; given back when
/// the slot ends (or when dropped unused).
pub(crate) struct ProbePermit {
    breaker: Arc<Breaker>,
    id: u64,
}

impl Drop for ProbePermit {
    fn drop(&mut self) {
        self.breaker.release_probe(self.id);
    }
}

impl Hold for ProbePermit {
    fn release(self: Box<Self>, _ended: &SlotEnded<'_>) {}
}

impl fmt::Debug for ProbePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbePermit").field("id", &self.id).finish()
    }
}

/// Reads and steers a breaker by hand: its state, its [`BreakerSnapshot`], and the manual states
/// (forced open, disabled) of resilience4j. Cheap to clone; get it from
/// [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle).
///
/// ```
/// use gentlify_breaker::CircuitBreakerLayer;
/// use gentlify_core::CircuitState;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = CircuitBreakerLayer::new();
/// let breaker = layer.handle();
/// breaker.force_open();
/// assert_eq!(breaker.state(), CircuitState::ForcedOpen);
/// assert_eq!(layer.feedback().circuit_state(), CircuitState::ForcedOpen);
/// breaker.close();
/// assert_eq!(breaker.snapshot().state, CircuitState::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) breaker: Arc<Breaker>,
}

impl CircuitBreakerHandle {
    /// The current state. An open breaker whose period is over reads `Open` until the next call
    /// moves it to half-open.
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// The breaker's figures now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.breaker.snapshot()
    }

    /// Holds the breaker open until [`close`](Self::close) (or another manual state): every call
    /// is rejected with a [`CircuitOpen`] whose `retry_in` is `Duration::MAX`.
    pub fn force_open(&self) {
        self.breaker.set(CircuitState::ForcedOpen);
    }

    /// Lets every call through and counts nothing, until [`close`](Self::close).
    pub fn disable(&self) {
        self.breaker.set(CircuitState::Disabled);
    }

    /// Closes the breaker now, forgetting its window and its open-period backoff.
    pub fn close(&self) {
        self.breaker.set(CircuitState::Closed);
    }

    /// Moves to half-open now, as if the open period were over.
    pub fn half_open(&self) {
        self.breaker.set(CircuitState::HalfOpen);
    }

    /// The handle the breaker listens on.
    pub fn feedback(&self) -> &Feedback {
        self.breaker.feedback()
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("state", &self.state())
            .finish()
    }
}
