//! The limiter state shared by a layer value, every service made from it and every clone: the
//! current limit, the permits in flight, the FIFO queue of waiters, and the controller.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use gentlify_core::error::{AcquireTimeout, QueueFull};
use gentlify_core::{
    BoxError, CircuitState, Class, Controller, EndReason, Feedback, HoldKey, Outcome, SharedHold,
    Slot, SlotEnded, SnapshotPart,
};
use tokio::time::{Instant, Sleep};

use crate::control::{effective, Change, Control, ControlState, Settings};

/// What a limiter shows of its state: the part `"concurrency"` of the handle's snapshot, typed.
///
/// ```
/// use gentlify_concurrency::{AdaptiveConcurrencyLayer, ControlState};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = AdaptiveConcurrencyLayer::builder().initial(4).build().unwrap();
/// let snapshot = layer.snapshot();
/// assert_eq!(snapshot.limit, 4);
/// assert_eq!(snapshot.in_flight, 0);
/// assert_eq!(snapshot.state, ControlState::Running);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConcurrencySnapshot {
    /// The current limit: at most this many requests in flight.
    pub limit: usize,
    /// The limit before rounding down (it moves in fractions).
    pub limit_exact: f64,
    /// Requests holding a permit: from admission to the end of the final response's body.
    pub in_flight: usize,
    /// Requests waiting in the queue for a permit.
    pub waiting: usize,
    /// Running or cooling.
    pub state: ControlState,
    /// The safe ceiling the limit climbs back to after a deceleration, if one is in force.
    pub ceiling: Option<f64>,
    /// The current minimum interval between two dispatches (before jitter).
    pub pacing_interval: Duration,
    /// Decelerations so far.
    pub decelerations: u64,
}

/// The rejections a waiter can get.
#[derive(Debug)]
pub(crate) enum Rejection {
    Timeout(AcquireTimeout),
    Full(QueueFull),
}

impl From<Rejection> for BoxError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Timeout(e) => Box::new(e),
            Rejection::Full(e) => Box::new(e),
        }
    }
}

/// Fixed at build time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) settings: Settings,
    pub(crate) acquire_timeout: Option<Duration>,
    pub(crate) max_waiting: Option<usize>,
    pub(crate) pause_on_retry_after: bool,
}

pub(crate) struct Limiter {
    pub(crate) key: HoldKey,
    pub(crate) feedback: Feedback,
    config: Config,
    state: Mutex<State>,
    /// What taking and giving back a permit needs, outside the lock (tokio's semaphore keeps its
    /// permits in an atomic the same way): in-flight in the low 32 bits ([`IN_FLIGHT`]), the
    /// limit a permit may be taken under without the lock above them ([`OPEN`]; 0 while anything
    /// needs the lock: waiters, parked retries, a deceleration draining, pacing), and `filled`
    /// ([`FILLED`]). The lock closes it for as long as it is held ([`Limiter::lock`]), so that
    /// in-flight changes only under the lock then, and writes it back when it is released.
    gate: AtomicU64,
    /// A body's holding time a release without the lock left for the next holder of the lock to
    /// feed to the controller ([`Control::on_body_end`](crate::control::Control)), in
    /// nanoseconds plus one; 0 when none. Applied first thing under the lock, so that the
    /// controller sees the samples in the order the permits came back (but for `zero_bodies`,
    /// applied after it).
    pending_body: AtomicU64,
    /// Bodies that never made their reader wait, given back without the lock since its last
    /// holder: each a holding time of 0 for the controller, applied with `pending_body`.
    zero_bodies: AtomicU64,
    /// Successes heard without the lock while growth was off under the additive controller
    /// ([`Control::on_idle_success`]): their latency in nanoseconds plus one, 0 for an empty
    /// place. Filled from the first empty place, applied in place order by the next holder of
    /// the lock, first thing: a sender that never fills the limit takes the lock for one success
    /// in nine rather than for each. (One cache line.)
    idle_successes: [AtomicU64; IDLE_SUCCESSES],
    /// Successes of requests sent without a clock read ([`Limiter::send_time`]) heard
    /// without the lock, for the next holder of the lock to feed to the failure window
    /// ([`Control::on_untimed_successes`]).
    untimed: AtomicU64,
    /// Requests sent without a slot far below the limit, for [`Limiter::send_time`]: counted
    /// without a read-modify-write (a count lost to a race only moves which request is timed).
    turns: AtomicU32,
    /// A recent instant the limiter knew of, in nanoseconds since [`Limiter::base`]: the latest
    /// of the timed dispatches' clock reads and the instants the controller compares send times
    /// with ([`Control::compared_since`]), stored before the lock is given back. A request sent
    /// without a clock read takes it as its send time: no later than the true one, and not
    /// earlier than any of those instants that came before it, so the controller tells as it
    /// would with the true one whether it was sent before or after a deceleration.
    seen: AtomicU64,
    /// Permits held by requests whose final response head was a success (their body is being
    /// read). Outside the lock: counted on the response's path, read when an outcome is heard.
    streaming: AtomicUsize,
    /// The origin of the call instants kept in permit tokens ([`Limiter::called_token`]) and
    /// of [`Limiter::seen`].
    base: Instant,
    /// Only one request in [`TIMED_EVERY`] sent without a slot far below the limit reads the
    /// clock ([`Limiter::send_time`]): false when every request must (the gradient controller
    /// reads every latency).
    sample_times: bool,
    /// [`Limiter::sample_times`], unless the limit is ramping up ([`Control::ramping`]): the
    /// first requests of a burst are sent far below the limit and answered at it, where their
    /// latencies feed the knee estimator and the growth (timing one in sixteen of them cost
    /// the simulator 0.001-0.002 of goodput over several seeds). Stored with the gate when the
    /// lock is given back.
    untimed_ok: AtomicBool,
    /// True while no one but this limiter can reach its handle: the layer made it and has not
    /// handed it out ([`AdaptiveConcurrencyLayer::feedback`](crate::AdaptiveConcurrencyLayer)).
    /// No other gentlify layer can then share a request with this one, so a request that comes
    /// without a slot is sent without one ([`Limiter::alone`]).
    alone: AtomicBool,
}

struct State {
    /// `control.limit` rounded down, at least 1.
    limit: usize,
    /// Permits taken, granted-but-unclaimed ones included.
    in_flight: usize,
    /// Waiters in arrival order; the first `granted` of them have been handed a permit and have
    /// not claimed it yet. Ids grow, so the queue is sorted by id.
    queue: VecDeque<Entry>,
    granted: usize,
    next_id: u64,
    /// In-flight reached the limit since the limit last changed: the sender, not the limiter,
    /// bounds the load otherwise, and growth would only inflate a limit nobody tests.
    filled: bool,
    next_dispatch: Option<Instant>,
    control: Control,
    /// The last [`Control::compared_since`] stored in [`Limiter::seen`].
    seen_compared: Option<Instant>,
    /// Permits whose retry waits for in-flight to come down to the limit
    /// ([`Limiter::poll_redispatch`](SharedHold::poll_redispatch)), by park id, with the waker to wake when it may have.
    /// At most one entry per permit in flight.
    parked: Vec<(u64, Option<Waker>)>,
}

struct Entry {
    id: u64,
    waker: Option<Waker>,
}

/// [`Limiter::gate`]: permits in flight.
const IN_FLIGHT: u64 = (1 << 32) - 1;
/// [`Limiter::gate`]: the limit a permit may be taken under without the lock, 0 when closed.
const OPEN: u64 = ((1 << 31) - 1) << 32;
const OPEN_SHIFT: u32 = 32;
/// [`Limiter::gate`]: [`State::filled`].
const FILLED: u64 = 1 << 63;
/// The places for successes heard without the lock ([`Limiter::idle_successes`]).
const IDLE_SUCCESSES: usize = 8;
/// The most zero-time bodies applied one by one ([`Limiter::lock`]): after 64, the smoothed
/// holding time is within 0.02 % of 0, and the rest change nothing.
const ZERO_BODIES_APPLIED: u64 = 64;
/// One request in this many is timed far below the limit under the additive controller, out of
/// slow start ([`Limiter::send_time`]); a power of two. There, a success can change nothing but
/// the smoothed latency and the body's holding time (gain 1/8 each) and the failure window: one
/// latency in sixteen keeps them, and the others' two clock reads are saved (about 50 ns:
/// `two_clock_reads` in `benches/round_trip.rs`).
const TIMED_EVERY: u32 = 16;
const _: () = assert!(TIMED_EVERY.is_power_of_two());

/// The limiter's state under its lock: the gate stays closed until it is dropped, and then opens
/// again if nothing needs the lock.
struct Locked<'a> {
    limiter: &'a Limiter,
    state: MutexGuard<'a, State>,
}

impl Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let compared = self.state.control.compared_since();
        if compared != self.state.seen_compared {
            // Before the gate opens: a request sent without a clock read after this sees it.
            self.state.seen_compared = compared;
            if let Some(at) = compared {
                self.limiter.see(at);
            }
        }
        let settings = &self.limiter.config.settings;
        let untimed_ok = self.limiter.sample_times && !self.state.control.ramping(settings);
        self.limiter.untimed_ok.store(untimed_ok, Ordering::Relaxed);
        // Still under the lock (the guard is dropped after this): nobody else writes the gate
        // while it is closed.
        self.limiter
            .gate
            .store(self.state.gate(), Ordering::Release);
    }
}

impl State {
    /// The gate ([`Limiter::gate`]) for this state: open, at the limit, when taking and giving
    /// back a permit need nothing but the count (no one waits or is parked, no deceleration
    /// waits for in-flight to come down, no pacing interval to reserve).
    fn gate(&self) -> u64 {
        let open = self.queue.is_empty()
            && self.parked.is_empty()
            && !self.control.draining()
            && self.control.pacing_interval.is_zero();
        let limit = match u64::try_from(self.limit) {
            Ok(limit) if open && limit <= OPEN >> OPEN_SHIFT => limit,
            _ => 0,
        };
        // In-flight is bounded by the largest limit ever set, far below 2^32 permits.
        (self.in_flight as u64 & IN_FLIGHT)
            | limit << OPEN_SHIFT
            | if self.filled { FILLED } else { 0 }
    }

    fn waiting(&self) -> usize {
        self.queue.len() - self.granted
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&id, |e| e.id).ok()
    }

    fn note_fill(&mut self) {
        if self.in_flight >= self.limit {
            self.filled = true;
        }
    }

    /// Wakes every parked retry: in-flight came down or the limit grew. Nothing to do (and no
    /// cost) when no retry is parked.
    #[inline(always)]
    fn wake_parked(&mut self, wake: &mut Wake) {
        if self.parked.is_empty() {
            return;
        }
        self.wake_parked_slow(wake);
    }

    #[cold]
    fn wake_parked_slow(&mut self, wake: &mut Wake) {
        for (_, waker) in self.parked.iter_mut() {
            if let Some(waker) = waker.take() {
                wake.push(waker);
            }
        }
    }

    /// Forgets a parked retry (its permit came back).
    #[cold]
    fn unpark(&mut self, id: u64) {
        self.parked.retain(|(parked, _)| *parked != id);
    }

    /// Hands free permits to the waiters at the front of the queue, in order.
    fn grant(&mut self, wake: &mut Wake) {
        while self.in_flight < self.limit && self.granted < self.queue.len() {
            if let Some(waker) = self.queue[self.granted].waker.take() {
                wake.push(waker);
            }
            self.granted += 1;
            self.in_flight += 1;
        }
        self.note_fill();
    }

    /// After a permit came back (or the limit moved): a deceleration waiting for in-flight to
    /// come down to its limit is complete once it has.
    fn check_drained(&mut self) {
        if self.control.draining() && self.in_flight <= self.limit {
            self.control.drained(Instant::now());
        }
    }

    fn apply(&mut self, change: Change, wake: &mut Wake) {
        if change == Change::None {
            return;
        }
        self.limit = effective(self.control.limit);
        self.filled = false;
        self.note_fill();
        self.check_drained();
        if change == Change::Grew {
            self.wake_parked(wake);
            self.grant(wake);
        }
    }

    /// The instant the next dispatch may go, reserving it.
    fn reserve_dispatch(&mut self, config: &Config) -> Option<Instant> {
        let interval = self.control.pacing_interval;
        if interval.is_zero() {
            return None;
        }
        let now = Instant::now();
        let at = self.next_dispatch.map_or(now, |next| next.max(now));
        self.next_dispatch = at.checked_add(config.settings.pacing.jittered(interval));
        (at > now).then_some(at)
    }
}

/// Wakers collected under the lock and woken after it: none on the common path, and no
/// allocation unless more than one waiter is granted at once.
#[derive(Default)]
struct Wake {
    one: Option<Waker>,
    more: Option<Vec<Waker>>,
}

impl Wake {
    fn push(&mut self, waker: Waker) {
        if self.one.is_none() {
            self.one = Some(waker);
        } else {
            self.more.get_or_insert_with(Vec::new).push(waker);
        }
    }

    #[inline(always)]
    fn run(self) {
        if let Some(w) = self.one {
            w.wake();
            for w in self.more.into_iter().flatten() {
                w.wake();
            }
        }
    }
}

impl Limiter {
    pub(crate) fn new(feedback: Feedback, config: Config, initial: f64, alone: bool) -> Arc<Self> {
        let control = Control::new(initial, &config.settings);
        let limiter = Arc::new(Limiter {
            key: HoldKey::unique(),
            feedback,
            config,
            state: Mutex::new(State {
                limit: effective(control.limit),
                in_flight: 0,
                queue: VecDeque::new(),
                granted: 0,
                next_id: 1,
                filled: false,
                next_dispatch: None,
                control,
                seen_compared: None,
                parked: Vec::new(),
            }),
            gate: AtomicU64::new(0),
            pending_body: AtomicU64::new(0),
            zero_bodies: AtomicU64::new(0),
            idle_successes: Default::default(),
            untimed: AtomicU64::new(0),
            turns: AtomicU32::new(0),
            seen: AtomicU64::new(0),
            streaming: AtomicUsize::new(0),
            base: Instant::now(),
            sample_times: Control::idle_success_is_latency_only(&config.settings),
            untimed_ok: AtomicBool::new(false),
            alone: AtomicBool::new(alone),
        });
        drop(limiter.lock());
        limiter.feedback.register(&limiter);
        limiter
    }

    /// Takes the lock and closes the gate: from here until the guard drops, in-flight changes
    /// only under the lock. Feeds the body left by a release without the lock to the
    /// controller first.
    fn lock(&self) -> Locked<'_> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let word = self.gate.fetch_and(!OPEN, Ordering::AcqRel);
        state.in_flight = (word & IN_FLIGHT) as usize;
        state.filled = word & FILLED != 0;
        let pending = self.pending_body.load(Ordering::Acquire);
        if pending != 0 {
            // A load and a store, not a swap: releases only fill an empty slot (from 0), and
            // only the holder of the lock empties it.
            self.pending_body.store(0, Ordering::Relaxed);
            state.control.on_body_end(Duration::from_nanos(pending - 1));
        }
        if self.zero_bodies.load(Ordering::Relaxed) != 0 {
            let zeros = self.zero_bodies.swap(0, Ordering::Acquire);
            for _ in 0..zeros.min(ZERO_BODIES_APPLIED) {
                state.control.on_body_end(Duration::ZERO);
            }
        }
        if self.untimed.load(Ordering::Relaxed) != 0 {
            let untimed = self.untimed.swap(0, Ordering::Acquire);
            state.control.on_untimed_successes(untimed);
        }
        for place in &self.idle_successes {
            if place.load(Ordering::Relaxed) != 0 {
                let latency = place.swap(0, Ordering::Acquire);
                if latency != 0 {
                    let latency = Duration::from_nanos(latency - 1);
                    state
                        .control
                        .on_idle_success(&self.config.settings, latency);
                }
            }
        }
        Locked {
            limiter: self,
            state,
        }
    }

    /// Takes a permit without the lock, when the gate is open and in-flight is under its limit:
    /// `Some(far_below)`, true when the limit has not been filled since it last changed and
    /// in-flight (this permit included) is at most half of it: the sender, not the limit,
    /// bounds the load, and the limit is not about to be tested.
    fn try_acquire_fast(&self) -> Option<bool> {
        let mut word = self.gate.load(Ordering::Acquire);
        loop {
            let limit = (word & OPEN) >> OPEN_SHIFT;
            let in_flight = word & IN_FLIGHT;
            if in_flight >= limit {
                // Closed (0), or full: the queue decides, under the lock.
                return None;
            }
            let mut next = word + 1;
            if in_flight + 1 >= limit {
                next |= FILLED;
            }
            match self
                .gate
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next & FILLED == 0 && 2 * (in_flight + 1) <= limit),
                Err(current) => word = current,
            }
        }
    }

    /// When a request sent without a slot is sent: `far_below` when its permit was taken far
    /// below the limit ([`Limiter::try_acquire_fast`]). Such requests, when they may go untimed
    /// ([`Limiter::untimed_ok`]), read the clock once in [`TIMED_EVERY`]; the others take
    /// [`Limiter::seen`] as their send time, their success is heard for the failure window only
    /// ([`Limiter::hear_untimed_success`]), and any other outcome is timed from that send time
    /// (its latency then an upper bound).
    #[inline]
    pub(crate) fn send_time(&self, far_below: bool) -> Sent {
        if far_below && self.untimed_ok.load(Ordering::Relaxed) {
            let turn = self.turns.load(Ordering::Relaxed);
            self.turns.store(turn.wrapping_add(1), Ordering::Relaxed);
            if turn & (TIMED_EVERY - 1) != 0 {
                return Sent::Untimed(self.seen.load(Ordering::Acquire));
            }
            let now = Instant::now();
            self.see(now);
            return Sent::Timed(now);
        }
        Sent::Timed(Instant::now())
    }

    /// The instant a request was sent at (for one not timed, the instant the limiter knew of
    /// then).
    pub(crate) fn sent_at(&self, sent: Sent) -> Instant {
        match sent {
            Sent::Timed(at) => at,
            Sent::Untimed(nanos) => self
                .base
                .checked_add(Duration::from_nanos(nanos))
                .unwrap_or(self.base),
        }
    }

    /// Notes an instant read from the clock (or compared with): see [`Limiter::seen`].
    pub(crate) fn see(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.seen.fetch_max(nanos, Ordering::Release);
    }

    /// Hears a success of a request sent without a clock read: for the failure window only,
    /// without the lock while the gate is open and the limit not filled (as
    /// [`Limiter::hear_idle_success`] hears a timed one), under it otherwise (the limit filled
    /// while the request was out: this success cannot make it grow, having no latency).
    #[inline]
    pub(crate) fn hear_untimed_success(&self) {
        let word = self.gate.load(Ordering::Acquire);
        if word & OPEN != 0 && word & FILLED == 0 {
            self.untimed.fetch_add(1, Ordering::Release);
            return;
        }
        self.lock().control.on_untimed_successes(1);
    }

    /// Gives a permit back without the lock, when the gate is open: nobody waits for it, and
    /// nothing but the count changes (the lock would only lower in-flight). The body's holding
    /// time is left for the next holder of the lock; `body` is `None` once it is. False when
    /// the lock must do it.
    #[inline]
    fn try_release_fast(&self, body: &mut Option<Duration>) -> bool {
        let mut word = self.gate.load(Ordering::Acquire);
        if word & OPEN == 0 {
            return false;
        }
        if *body == Some(Duration::ZERO) {
            self.zero_bodies.fetch_add(1, Ordering::Release);
            *body = None;
        } else if let Some(sample) = *body {
            let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
            let pending = nanos.min(u64::MAX - 1) + 1;
            if self
                .pending_body
                .compare_exchange(0, pending, Ordering::Release, Ordering::Relaxed)
                .is_err()
            {
                return false;
            }
            *body = None;
        }
        loop {
            if word & OPEN == 0 || word & IN_FLIGHT == 0 {
                return false;
            }
            match self.gate.compare_exchange_weak(
                word,
                word - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
    }

    /// Hears a success without the lock when it can change nothing but what
    /// [`Control::on_idle_success`] keeps: under the additive controller, while the gate is open
    /// and the limit not filled since it last changed (no growth). False when the lock must hear
    /// it (or every place is taken).
    #[inline]
    fn hear_idle_success(&self, latency: Duration) -> bool {
        if !Control::idle_success_is_latency_only(&self.config.settings) {
            return false;
        }
        let word = self.gate.load(Ordering::Acquire);
        if word & OPEN == 0 || word & FILLED != 0 {
            return false;
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let value = nanos.min(u64::MAX - 1) + 1;
        self.idle_successes.iter().any(|place| {
            place.load(Ordering::Relaxed) == 0
                && place
                    .compare_exchange(0, value, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
        })
    }

    /// A permit comes back; `body` is how long after its response head a request whose last
    /// attempt succeeded kept it; `waited`, how long a request sent in one attempt waited below
    /// the limiter before it was sent, in nanoseconds; `usage`, a success's dispatch, latency to
    /// the head, output tokens and body end, when a layer recorded its usage.
    #[inline(always)]
    fn release_permit(
        &self,
        streaming: bool,
        mut body: Option<Duration>,
        parked: u64,
        waited: u64,
        usage: Option<UsageSample>,
    ) {
        if streaming {
            self.streaming.fetch_sub(1, Ordering::Relaxed);
        }
        if parked == 0 && waited == 0 && usage.is_none() && self.try_release_fast(&mut body) {
            return;
        }
        self.release_locked(body, parked, waited, usage);
    }

    /// [`release_permit`](Limiter::release_permit) under the lock: someone waits, or the
    /// controller has more to hear than a body's time.
    fn release_locked(
        &self,
        body: Option<Duration>,
        parked: u64,
        waited: u64,
        usage: Option<UsageSample>,
    ) {
        let mut wake = Wake::default();
        {
            let mut state = self.lock();
            if let Some((sent_at, latency, tokens, now)) = usage {
                let filled = state.filled;
                state.control.on_usage(
                    &self.config.settings,
                    sent_at,
                    latency,
                    tokens,
                    filled,
                    now,
                );
            }
            if waited != 0 {
                state.control.on_waited_below(waited);
            }
            if parked != 0 {
                state.unpark(parked);
            }
            if let Some(body) = body {
                state.control.on_body_end(body);
            }
            state.in_flight -= 1;
            state.check_drained();
            state.wake_parked(&mut wake);
            state.grant(&mut wake);
        }
        wake.run();
    }

    /// True while this limiter's handle is its own and unseen (see [`Limiter::alone`]'s field).
    #[inline]
    pub(crate) fn alone(&self) -> bool {
        self.alone.load(Ordering::Acquire)
    }

    /// The handle, handed out: from here on, every request is sent with a slot.
    pub(crate) fn share(&self) -> &Feedback {
        self.alone.store(false, Ordering::Release);
        &self.feedback
    }

    /// Reserves a dispatch instant for a request that needs no permit (a retry of a held one).
    pub(crate) fn reserve_dispatch(&self) -> Option<Instant> {
        self.lock().reserve_dispatch(&self.config)
    }

    pub(crate) fn set_limit(&self, limit: f64) {
        let mut wake = Wake::default();
        {
            let mut state = self.lock();
            let change = state
                .control
                .set(&self.config.settings, limit, Instant::now());
            state.apply(change, &mut wake);
        }
        wake.run();
    }

    pub(crate) fn snapshot(&self) -> ConcurrencySnapshot {
        let state = self.lock();
        ConcurrencySnapshot {
            limit: state.limit,
            limit_exact: state.control.limit,
            in_flight: state.in_flight,
            waiting: state.waiting(),
            state: state.control.state(Instant::now()),
            ceiling: state.control.ceiling,
            pacing_interval: state.control.pacing_interval,
            decelerations: state.control.decelerations,
        }
    }
}

impl Controller for Limiter {
    fn wants_quotas(&self) -> bool {
        // The limit follows outcomes only; quotas are the budget's.
        false
    }

    fn on_outcome(&self, outcome: &Outcome) {
        if outcome.class == Class::Success && self.hear_idle_success(outcome.latency) {
            return;
        }
        let failed = match outcome.class {
            Class::Success | Class::Overloaded { .. } => false,
            Class::Failure => true,
            _ => return,
        };
        // The instant the outcome was made, without another read of the clock.
        let now = outcome.sent_at + outcome.latency;
        let settings = &self.config.settings;
        if let Class::Overloaded {
            retry_after: Some(delay),
        } = outcome.class
        {
            if self.config.pause_on_retry_after {
                // The server said wait: every request sent through this handle waits, not only
                // the one that was refused (a per-minute quota is the key's, not the request's).
                if let Some(until) = now.checked_add(delay.min(self.config.settings.max_cooling)) {
                    self.feedback.pause_until(until);
                }
            }
        }
        let mut wake = Wake::default();
        {
            let mut state = self.lock();
            state.control.bodies = self.streaming.load(Ordering::Relaxed);
            state.control.on_wire_time(outcome.latency);
            let storm = state.control.note_attempt(settings, failed);
            let change = match outcome.class {
                Class::Overloaded { retry_after } => {
                    let in_flight = state.in_flight;
                    state.control.on_congestion(
                        settings,
                        outcome.sent_at,
                        retry_after,
                        in_flight,
                        now,
                    )
                }
                Class::Failure if storm => {
                    let in_flight = state.in_flight;
                    state
                        .control
                        .on_failure_storm(settings, outcome.sent_at, in_flight, now)
                }
                Class::Success => {
                    // No growth while the breaker probes (read only when it could grow).
                    let may_grow =
                        state.filled && self.feedback.circuit_state() != CircuitState::HalfOpen;
                    state.control.on_success(
                        settings,
                        outcome.sent_at,
                        outcome.latency,
                        may_grow,
                        now,
                    )
                }
                _ => Change::None,
            };
            state.apply(change, &mut wake);
        }
        wake.run();
    }

    fn snapshot(&self) -> Option<SnapshotPart> {
        let s = Limiter::snapshot(self);
        Some(
            SnapshotPart::new("concurrency")
                .field("limit", s.limit)
                .field("in_flight", s.in_flight)
                .field("waiting", s.waiting)
                .field("state", s.state.as_str())
                .field("pacing_interval", s.pacing_interval)
                .field("ceiling", s.ceiling.map(|c| c.floor() as u64))
                .field("decelerations", s.decelerations),
        )
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("key", &self.key)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// One permit of a limiter, taken but not yet in a request's slot: released when dropped. In the
/// slot it becomes a share of the limiter ([`Permit::hold_in`]), a [`SharedHold`] whose token
/// carries the permit's state, so that holding it allocates nothing per request.
pub(crate) struct Permit {
    /// `None` once moved into a slot.
    limiter: Option<Arc<Limiter>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release_permit(false, None, 0, 0, None);
        }
    }
}

impl Permit {
    /// Moves the permit into `slot`, under the limiter's key: the slot gives it back when the
    /// request ends. `called_at`: when the limiter called the inner service with the request
    /// (not the pacing wait before), when it did so at once.
    pub(crate) fn hold_in(mut self, slot: &Slot, called_at: Option<Instant>) {
        if let Some(limiter) = self.limiter.take() {
            // Nothing left to drop.
            std::mem::forget(self);
            let token = called_at.map_or(0, |at| limiter.called_token(at));
            slot.hold_shared(limiter.key, limiter, token);
        }
    }

    /// The limiter the permit is of.
    #[inline]
    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        self.limiter
            .as_ref()
            .unwrap_or_else(|| unreachable!("a permit outside a slot keeps its limiter"))
    }

    /// Gives back the permit of a request sent without a slot: `streaming` when its response
    /// head was a success ([`Limiter::solo_body_started`]); `body`, how long its body held the
    /// permit after the head, when it was read to its end after a success.
    #[inline]
    pub(crate) fn release_solo(mut self, streaming: bool, body: Option<Duration>) {
        if let Some(limiter) = self.limiter.take() {
            // Nothing left to drop: one fewer drop per request.
            std::mem::forget(self);
            limiter.release_permit(streaming, body, 0, 0, None);
        }
    }
}

/// How long a successful response's body held the server after its head (at `head`), and when
/// it ended. A body that never made its reader wait (`waited` false) was all there at the head:
/// 0, ended at the head, and no clock to read. Both ways a permit comes back (from a slot, or
/// from the body of a request sent without one) use it.
pub(crate) fn body_held(head: Instant, waited: bool) -> (Duration, Instant) {
    if waited {
        let now = Instant::now();
        (now.saturating_duration_since(head), now)
    } else {
        (Duration::ZERO, head)
    }
}

/// When a request sent without a slot was sent ([`Limiter::send_time`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sent {
    /// Read from the clock.
    Timed(Instant),
    /// Not timed: [`Limiter::seen`] then ([`Limiter::sent_at`] makes it an instant).
    Untimed(u64),
}

/// An answer's attempt: its dispatch, its latency to the head, its output tokens, and when its
/// body ended.
type UsageSample = (Instant, Duration, u64, Instant);

/// A permit's token in its slot. Bit 0: the request's final response head came back a success,
/// its body is being read. Bit 1 ([`PARKED`]) set: the bits above hold the park id while a retry
/// of the request waits in `Limiter`'s parked list. Bit 1 clear: the bits above hold when the
/// limiter called the inner service, in nanoseconds since [`Limiter::base`] plus one (0:
/// unknown); a retry drops it (only requests sent in one attempt measure their wait below).
const STREAMING: u64 = 1;
const PARKED: u64 = 2;
const SHIFT: u32 = 2;

/// The park id a permit's token holds, 0 when none.
fn park_id(token: u64) -> u64 {
    if token & PARKED != 0 {
        token >> SHIFT
    } else {
        0
    }
}

impl Limiter {
    /// A fresh permit token recording `called_at`.
    fn called_token(&self, called_at: Instant) -> u64 {
        let nanos = called_at.saturating_duration_since(self.base).as_nanos();
        // 2^62 ns is 146 years: beyond that, the instant is unknown.
        u64::try_from(nanos + 1)
            .ok()
            .filter(|n| *n < 1 << (64 - SHIFT))
            .map_or(0, |n| n << SHIFT)
    }

    /// When the limiter called the inner service with the request holding the permit whose
    /// token is `token`, when known.
    fn called_at(&self, token: u64) -> Option<Instant> {
        if token & PARKED != 0 || token >> SHIFT == 0 {
            return None;
        }
        self.base
            .checked_add(Duration::from_nanos((token >> SHIFT) - 1))
    }

    /// The request holding the permit whose token is `token` got a successful response head: its
    /// body is being read from here until the permit comes back.
    pub(crate) fn body_started(&self, token: &mut u64) {
        if *token & STREAMING == 0 {
            *token |= STREAMING;
            self.streaming.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request sent without a slot got a successful response head: its body is being read.
    pub(crate) fn solo_body_started(&self) {
        self.streaming.fetch_add(1, Ordering::Relaxed);
    }
}

impl SharedHold for Limiter {
    fn release(&self, token: u64, ended: &SlotEnded<'_>) {
        let (mut body, mut waited, mut usage) = (None, 0, None);
        if let Some(outcome) = ended.last_outcome {
            let read = matches!(ended.reason, EndReason::BodyEnded | EndReason::NoBody);
            if read && matches!(outcome.class, Class::Success) {
                let (held, now) = body_held(outcome.finished_at(), ended.body_waited);
                body = Some(held);
                if let Some(recorded) = ended.usage {
                    // The same instant for the knee's sample: one clock read per release.
                    let tokens = recorded.output_tokens;
                    usage = Some((outcome.sent_at, outcome.latency, tokens, now));
                }
            }
            if ended.attempts == 1 {
                // Sent when the limiter called (the common case: nothing waits below), or later.
                match self.called_at(token) {
                    Some(called) if outcome.sent_at != called => {
                        let wait = outcome.sent_at.saturating_duration_since(called);
                        waited = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
                    }
                    _ => {}
                }
            }
        }
        let streaming = token & STREAMING != 0;
        self.release_permit(streaming, body, park_id(token), waited, usage);
    }

    /// A retry inside this permit goes only when the other permits' requests that may be on the
    /// wire are fewer than the limit: after a cut, the requests over the new limit hold their
    /// retries (keeping their permits) until in-flight has come down to it. Permits whose
    /// retries wait here do not count as on the wire, so retries held back by one cut never
    /// wait on each other: when every permit is parked, the first to be polled goes.
    fn poll_redispatch(&self, token: &mut u64, cx: &mut Context<'_>) -> Poll<()> {
        let streaming = *token & STREAMING;
        let mut parked = park_id(*token);
        let mut state = self.lock();
        let mine = usize::from(parked == 0);
        let others = state
            .in_flight
            .saturating_sub(state.parked.len())
            .saturating_sub(mine);
        if others < state.limit {
            if parked != 0 {
                state.parked.retain(|(id, _)| *id != parked);
                *token = streaming;
            }
            return Poll::Ready(());
        }
        if parked == 0 {
            parked = state.next_id;
            state.next_id += 1;
            state.parked.push((parked, Some(cx.waker().clone())));
            *token = parked << SHIFT | PARKED | streaming;
        } else if let Some((_, waker)) = state.parked.iter_mut().find(|(id, _)| *id == parked) {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        tracing::trace!(
            in_flight = state.in_flight,
            limit = state.limit,
            "gentlify retry held until in-flight comes down to the limit"
        );
        Poll::Pending
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.limiter.as_ref().map(|l| l.key))
            .finish()
    }
}

/// A permit and the instant its dispatch may go (pacing), if later than now.
pub(crate) type Admit = (Permit, Option<Instant>);

/// Taking a permit, waiting in the FIFO queue if none is free. Dropping it while queued gives
/// up the place (and a permit granted but not yet claimed).
pub(crate) struct Acquire {
    limiter: Arc<Limiter>,
    /// The queue entry's id; 0 while not queued.
    id: u64,
    started: Option<Instant>,
    timeout: Option<Pin<Box<Sleep>>>,
}

impl Acquire {
    pub(crate) fn new(limiter: &Arc<Limiter>) -> Self {
        Acquire {
            limiter: Arc::clone(limiter),
            id: 0,
            started: None,
            timeout: None,
        }
    }

    pub(crate) fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<Result<Admit, Rejection>> {
        let limiter = &*self.limiter;
        if self.id == 0 && limiter.try_acquire_fast().is_some() {
            return Poll::Ready(Ok((self.permit(), None)));
        }
        let config = &limiter.config;
        {
            let mut state = limiter.lock();
            if self.id == 0 {
                if state.queue.is_empty() && state.in_flight < state.limit {
                    state.in_flight += 1;
                    state.note_fill();
                    let at = state.reserve_dispatch(config);
                    drop(state);
                    return Poll::Ready(Ok((self.permit(), at)));
                }
                if let Some(max) = config.max_waiting {
                    if state.waiting() >= max {
                        return Poll::Ready(Err(Rejection::Full(QueueFull::new(max))));
                    }
                }
                // Queued behind permits granted but not yet claimed, the limit may not be full:
                // it is filled only when in-flight reaches it.
                state.note_fill();
                self.id = state.next_id;
                state.next_id += 1;
                state.queue.push_back(Entry {
                    id: self.id,
                    waker: Some(cx.waker().clone()),
                });
                self.started = Some(Instant::now());
                if let Some(timeout) = config.acquire_timeout {
                    self.timeout = Some(Box::pin(tokio::time::sleep(timeout)));
                }
            } else if let Some(i) = state.position(self.id) {
                if i < state.granted {
                    state.queue.remove(i);
                    state.granted -= 1;
                    self.id = 0;
                    self.timeout = None;
                    let at = state.reserve_dispatch(config);
                    drop(state);
                    return Poll::Ready(Ok((self.permit(), at)));
                }
                let entry = &mut state.queue[i];
                match &entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => entry.waker = Some(cx.waker().clone()),
                }
            }
        }
        let timed_out = match &mut self.timeout {
            Some(timeout) => timeout.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if timed_out {
            self.cancel();
            let waited = self
                .started
                .map(|s| s.elapsed())
                .or(self.limiter.config.acquire_timeout)
                .unwrap_or_default();
            return Poll::Ready(Err(Rejection::Timeout(AcquireTimeout::new(waited))));
        }
        Poll::Pending
    }

    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// A permit taken at once without the lock, when not queued and one is free with nobody
    /// waiting and no pacing (so no dispatch instant to reserve); with whether it was taken far
    /// below the limit ([`Limiter::try_acquire_fast`]).
    pub(crate) fn try_acquire_fast(&self) -> Option<(Permit, bool)> {
        if self.id != 0 {
            return None;
        }
        let far_below = self.limiter.try_acquire_fast()?;
        Some((self.permit(), far_below))
    }

    fn permit(&self) -> Permit {
        Permit {
            limiter: Some(Arc::clone(&self.limiter)),
        }
    }

    /// Leaves the queue; a permit granted meanwhile goes to the next waiter.
    pub(crate) fn cancel(&mut self) {
        if self.id == 0 {
            return;
        }
        let id = std::mem::replace(&mut self.id, 0);
        self.timeout = None;
        let mut wake = Wake::default();
        {
            let mut state = self.limiter.lock();
            if let Some(i) = state.position(id) {
                state.queue.remove(i);
                if i < state.granted {
                    state.granted -= 1;
                    state.in_flight -= 1;
                    state.check_drained();
                    state.wake_parked(&mut wake);
                    state.grant(&mut wake);
                }
            }
        }
        wake.run();
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("queued", &(self.id != 0))
            .field("started", &self.started)
            .finish()
    }
}
