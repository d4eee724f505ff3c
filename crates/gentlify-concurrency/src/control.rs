//! How the limit moves: the algorithms, the pacing rules, and the controller state they drive.

use std::time::Duration;

use tokio::time::Instant;

use crate::knee::{self, Knee};

/// The additive-increase / multiplicative-decrease controller (the default): decelerate on
/// overload or failure, cool, then reaccelerate one step per round trip.
///
/// After a deceleration the level that overloaded the server becomes a *safe ceiling*: the limit
/// climbs back toward it quickly (half the remaining distance per round trip, at least `step`) and
/// stops there, so a server whose capacity has not moved is not overloaded again and again. The
/// ceiling relaxes back to the maximum after a quiet period
/// ([`ceiling_relax_after`](crate::AdaptiveConcurrencyBuilder::ceiling_relax_after)); above it
/// growth is additive, `step` per round trip.
///
/// Before the first sign of overload the limit doubles per round trip (TCP's slow start), so a
/// stack started far below the server's capacity finds it in a few round trips. The overload that
/// ends slow start halves the limit back to the last level that was fine, and the limit grows
/// additively from there (TCP's slow-start exit, RFC 5681): the capacity lies somewhere under the
/// doubled level, and climbing back fast toward it would overload the server again.
///
/// ```
/// use gentlify_concurrency::{AdaptiveConcurrencyLayer, Aimd};
///
/// let layer = AdaptiveConcurrencyLayer::builder()
///     .aimd(Aimd::new().decrease_factor(0.5).step(2.0).slow_start(false))
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    pub(crate) decrease_factor: f64,
    pub(crate) step: f64,
    pub(crate) slow_start: bool,
    pub(crate) knee: bool,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            // CUBIC's multiplicative decrease (RFC 8312, β = 0.7): decisive enough that a burst
            // of 429s stops within a round trip or two, gentle enough that the recovery below the
            // ceiling costs little goodput. Rejected requests count toward OpenAI's per-minute
            // limits, so overshooting is not free either.
            decrease_factor: 0.7,
            step: 1.0,
            slow_start: true,
            // On: it moves the limit only when latency measurably rises with this client's own
            // load (see `Aimd::knee`), which a hosted API's latency does not.
            knee: true,
        }
    }
}

impl Aimd {
    /// The defaults: decrease factor 0.7, step 1, slow start on.
    pub fn new() -> Self {
        Aimd::default()
    }

    /// The factor the limit is multiplied by on a deceleration, in `(0, 1)`.
    pub fn decrease_factor(mut self, factor: f64) -> Self {
        self.decrease_factor = factor;
        self
    }

    /// How much the limit grows per round trip above the safe ceiling (and at least, below it).
    pub fn step(mut self, step: f64) -> Self {
        self.step = step;
        self
    }

    /// Whether the limit doubles per round trip until the first overload (default: yes), and
    /// again when the knee's level answers far faster than it did (see [`Aimd::knee`]).
    pub fn slow_start(mut self, on: bool) -> Self {
        self.slow_start = on;
        self
    }

    /// Whether the limit holds at the *knee* of the server's latency curve (default: yes).
    ///
    /// A server that slows down as it gets busier (a self-hosted inference server batching more
    /// sequences, a gateway queueing) serves fewer requests per second past some in-flight
    /// count: by Little's law, throughput is in-flight divided by latency, and there latency
    /// grows faster than in-flight. Overload signals come only later, at the server's cap, so
    /// a controller that listens only to them sits past the knee.
    ///
    /// With the knee on, the limiter keeps, per band of levels 5 % wide, an average of the
    /// latency of the successes sent while the limit was in that band (and its spread). An LLM
    /// call's latency follows the length of its answer, but an average over a few dozen calls
    /// of the same workload does not: the averages of two bands compare the server's load.
    /// Once per round trip, when a lower band (with at least 24 samples) served more requests
    /// per second than the current one by more than 3 %, even with its mean latency taken one
    /// standard error higher, the limit moves down to it and holds there as a safe ceiling;
    /// like any ceiling, it relaxes after
    /// [`ceiling_relax_after`](crate::AdaptiveConcurrencyBuilder::ceiling_relax_after), and the
    /// limit then probes above it again, each band measured afresh. When the probe finds the
    /// knee again within a band of where it was, the hold lasts twice as long as the last one
    /// (up to four periods): a confirmed knee is probed less often, since every probe runs the
    /// server past it. A refusal during a probe (the probe reached the server's cap without
    /// finding a better level) sends the limit back to the knee rather than to just under the
    /// refusal, and confirms the knee as finding it again does (the hold lasts twice as long);
    /// a refusal below the knee (the server's capacity fell) forgets it, and so does a held
    /// level that answers markedly faster than when the hold began (the server's capacity
    /// grew: the hold ends at once), or, once the hold has relaxed, a probe above the knee
    /// that answers markedly faster than the knee did. When the answers come 15 % faster or
    /// more, the capacity grew by far, by how much is unknown, and with slow start on the
    /// limit doubles per round trip again until the next overload. Statistics older than
    /// three relaxation periods are forgotten.
    ///
    /// Above the level an overload's cut went to (or a knee held), the burden of proof lies
    /// with the levels above: the limit climbs in steps of about 10 % (or half the way to a
    /// ceiling), and each step waits
    /// until its level is measured (at most five round trips); a level that serves fewer
    /// requests per second than the base (no margin, no spread: at the top of the curve a
    /// wrong choice costs little either way) sends the limit back to the base, held there as
    /// a knee. A level that serves clearly more (by 3 % and one standard error) becomes the
    /// base, and the climb goes on at its usual pace, one step per round trip: the server is
    /// not past its knee there (`gentlify-sim`'s constant-cap, 12 seeds: goodput 0.953 →
    /// 0.967 × oracle on average; the climb after slow start no longer ends at the server's
    /// cap before a knee is found, nor does each probe above a held knee).
    ///
    /// An answer counts in its band two smoothed round trips after its attempt was sent: until
    /// then, the slower answers to the attempts sent with it are still on their way, and the
    /// average of a level sent to recently would favour its quick answers (`gentlify-sim`'s
    /// constant-cap showed such a level, past the knee, chosen as the knee). After an overload,
    /// the level the cut went to is the one the levels above are compared with as the limit
    /// climbs back: growth waits, past the cooling period, until it is measured (for at most
    /// three more round trips, and only at levels that answer half a measurement per round
    /// trip).
    ///
    /// When a layer of the stack records the answers' usage in the slot (gentlify's token
    /// budget does, when it has a limit), the bands keep each answer's latency scaled to an
    /// answer of the mean length, by a line fitted to latency against output tokens (only the
    /// line's shape: its fixed part over its time per token, which the server's load does not
    /// change), recorded when the answer ends. The length of the answers then no longer adds
    /// its noise to the comparison (`gentlify-sim`'s constant-cap with a budget that does not
    /// bind, full stack, 12 seeds: goodput 0.932 → 0.941 × oracle on average).
    ///
    /// A large hosted API's latency does not depend on one client's load: throughput then grows
    /// with the level, no lower band wins, and the knee changes nothing.
    pub fn knee(mut self, on: bool) -> Self {
        self.knee = on;
        self
    }
}

/// The latency-aware controller, in the spirit of Netflix's Gradient2 and Envoy's adaptive
/// concurrency filter: it compares a short-term average of the attempts' latency with a long-term
/// one and shrinks the limit when latency rises, before the server starts refusing work.
///
/// Each round trip the limit becomes `limit × gradient + √limit` (smoothed), where
/// `gradient = clamp(tolerance × long / short, 0.5, 1)`. Overloads and failures still decelerate
/// as in [`Aimd`] (with its `decrease_factor`), and the same gates apply to growth.
///
/// Latency is measured per attempt, from dispatch to the response head
/// ([`Outcome::latency`](gentlify_core::Outcome)), so it excludes backoff sleeps and client-side
/// queueing. Only successes count: a 429 comes back fast and says nothing about the server's
/// queue.
///
/// LLM APIs vary their latency by an order of magnitude with the length of the answer, which
/// makes a latency gradient noisy there; this is why it is not the default.
///
/// ```
/// use gentlify_concurrency::{AdaptiveConcurrencyLayer, Gradient};
///
/// let layer = AdaptiveConcurrencyLayer::builder()
///     .gradient(Gradient::new().tolerance(2.0))
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gradient {
    pub(crate) tolerance: f64,
    pub(crate) smoothing: f64,
    pub(crate) short_window: u32,
    pub(crate) long_window: u32,
    pub(crate) decrease_factor: f64,
}

impl Default for Gradient {
    fn default() -> Self {
        // Gradient2's published defaults (netflix/concurrency-limits): rttTolerance 1.5,
        // smoothing 0.2, long window 600 samples; the short window is ours (10 samples).
        Gradient {
            tolerance: 1.5,
            smoothing: 0.2,
            short_window: 10,
            long_window: 600,
            decrease_factor: Aimd::default().decrease_factor,
        }
    }
}

impl Gradient {
    /// The defaults: tolerance 1.5, smoothing 0.2, windows of 10 and 600 samples.
    pub fn new() -> Self {
        Gradient::default()
    }

    /// How much slower than the long-term latency the short-term latency may get before the
    /// limit shrinks (≥ 1).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How far each round trip moves the limit toward its new value, in `(0, 1]`.
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The samples averaged into the short-term and the long-term latency.
    pub fn windows(mut self, short: u32, long: u32) -> Self {
        self.short_window = short;
        self.long_window = long;
        self
    }

    /// The factor applied on overload or failure, in `(0, 1)`.
    pub fn decrease_factor(mut self, factor: f64) -> Self {
        self.decrease_factor = factor;
        self
    }
}

/// Which controller moves the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Algorithm {
    /// Decelerate / cool / reaccelerate on overload signals ([`Aimd`]).
    Aimd(Aimd),
    /// Also slow down when latency rises ([`Gradient`]).
    Gradient(Gradient),
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::Aimd(Aimd::default())
    }
}

impl Algorithm {
    fn decrease_factor(&self) -> f64 {
        match self {
            Algorithm::Aimd(a) => a.decrease_factor,
            Algorithm::Gradient(g) => g.decrease_factor,
        }
    }

    fn step(&self) -> f64 {
        match self {
            Algorithm::Aimd(a) => a.step,
            Algorithm::Gradient(_) => 1.0,
        }
    }
}

/// Dispatch pacing: a minimum interval between two dispatches, which widens on each deceleration
/// and narrows on each reacceleration, with jitter.
///
/// The defaults fit LLM APIs: no interval while all is well (a call lasts seconds, so the
/// concurrency limit, not the spacing, bounds the load), and from the first deceleration on at
/// least 50 ms, doubling per deceleration up to 1 s. That spreads the requests queued behind a
/// full limit instead of releasing them as one burst, which matters for servers that enforce a
/// per-minute quota over 1 s or 10 s windows (Azure OpenAI does). Each interval is jittered by
/// ±25 % so that several clients do not fall into step.
///
/// ```
/// use std::time::Duration;
/// use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing};
///
/// let layer = AdaptiveConcurrencyLayer::builder()
///     .pacing(Pacing::new().min_interval(Duration::from_millis(10)).jitter(0.1))
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    pub(crate) min_interval: Duration,
    pub(crate) widen_to: Duration,
    pub(crate) max_interval: Duration,
    pub(crate) jitter: f64,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            min_interval: Duration::ZERO,
            widen_to: Duration::from_millis(50),
            max_interval: Duration::from_secs(1),
            jitter: 0.25,
        }
    }
}

impl Pacing {
    /// The defaults: no interval, 50 ms after a deceleration, at most 1 s, ±25 % jitter.
    pub fn new() -> Self {
        Pacing::default()
    }

    /// No pacing at all, ever.
    pub fn disabled() -> Self {
        Pacing {
            min_interval: Duration::ZERO,
            widen_to: Duration::ZERO,
            max_interval: Duration::ZERO,
            jitter: 0.0,
        }
    }

    /// The interval while all is well (and the floor it narrows back to).
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The interval the first deceleration widens to; later ones double it.
    pub fn widen_to(mut self, interval: Duration) -> Self {
        self.widen_to = interval;
        self
    }

    /// The widest interval.
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.max_interval = interval;
        self
    }

    /// The jitter, as a fraction of the interval in `[0, 1)`: each interval is drawn uniformly
    /// from `interval × (1 ± jitter)`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    fn widen(&self, interval: Duration) -> Duration {
        interval
            .saturating_mul(2)
            .max(self.widen_to)
            .max(self.min_interval)
            .min(self.max_interval.max(self.min_interval))
    }

    fn narrow(&self, interval: Duration) -> Duration {
        let half = interval / 2;
        if half < self.widen_to {
            self.min_interval
        } else {
            half.max(self.min_interval)
        }
    }

    pub(crate) fn jittered(&self, interval: Duration) -> Duration {
        if self.jitter <= 0.0 || interval.is_zero() {
            return interval;
        }
        interval.mul_f64(1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0))
    }
}

/// Whether the controller is letting the limit grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlState {
    /// The limit may grow with the next round trip of successes.
    Running,
    /// A deceleration happened recently; the limit does not grow until the cooling period ends.
    Cooling,
}

impl ControlState {
    /// `"running"` or `"cooling"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlState::Running => "running",
            ControlState::Cooling => "cooling",
        }
    }
}

/// Settings of the controller, fixed at build time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) algorithm: Algorithm,
    pub(crate) cooling: Duration,
    pub(crate) max_cooling: Duration,
    pub(crate) ceiling_relax_after: Duration,
    pub(crate) pacing: Pacing,
    pub(crate) failure_threshold: f64,
}

/// How many recent attempts the failure share averages over (the weight of a new attempt is
/// `1 / FAILURE_WINDOW`). Long enough that failures independent of the load do not make a
/// storm by chance: at 5 % of attempts failing (dropped connections), an average over ten
/// crosses the default threshold (a fifth) about six times per 1000 attempts (two or three
/// failures close together), over thirty about once per 8000 (mostly three in a row).
/// Each false storm cuts the limit by a third and holds it under a ceiling
/// (`gentlify-sim`'s dropped-connections, 12 seeds, goodput × oracle: limiter alone 0.908 →
/// 0.966, full stack 0.896 → 0.967, worst seed 0.815 → 0.954). A real storm still shows fast:
/// an outage fails three in a row at once, and a quarter of the attempts failing crosses a
/// fifth within about forty attempts.
const FAILURE_WINDOW: f64 = 30.0;

/// Failures in a row that make a storm whatever their share (an outage shows at once).
const FAILURES_IN_A_ROW: u32 = 3;

/// The largest share of the permits' time that requests may have waited below the limiter
/// (from the limiter's call to the attempt's dispatch, in a token budget say), since the limit
/// last changed, for it to grow.
const WAITED_BELOW: f64 = 0.2;

/// Smoothed round trips (body included) an answer waits before it counts in the knee's bands:
/// by then the attempts sent with it have about all answered, even those twice as slow.
const KNEE_HORIZON: u32 = 2;

/// The most head round trips (body included) past the cooling period that growth waits for
/// the knee estimator to measure the level an overload's cut went to.
const MEASURE_ROUND_TRIPS: u32 = 3;

/// How far a climb above the knee estimator's base level steps at once (without a ceiling, at
/// levels it measures soon), relative to the limit: two bands. Far enough that the base's band
/// serves measurably more than the step's when the base is at the knee, near enough that a
/// step past the knee costs little while it is measured (`gentlify-sim`, goodput × oracle,
/// constant-cap over 12 seeds / capacity-step over 6: 1.07 gave 0.966 / 0.900, 1.1 0.967 /
/// 0.908, 1.13 0.961 / 0.909).
const PROBE_RATIO: f64 = 1.1;

/// How much faster (the relative fall of its mean latency) the knee's level, or a probe above
/// it, must answer than the knee did for the limit to go back to slow start when the server's
/// capacity grew (and not only end the hold). A capacity that triples (`gentlify-sim`'s
/// capacity-step, 20 → 60, 12 seeds) showed falls of 18 to 40 %; levels held long at a
/// constant capacity showed false rises of 13 % (large-backlog, C = 100, 2 seeds of 12), each
/// an overshoot to twice the cap when it restarted slow start. Slow start finds a tripled
/// capacity in a few round trips where additive growth takes tens (capacity-step, goodput ×
/// oracle, seeds 1-6: limiter alone 0.908 → 0.923, full stack 0.907 → 0.924; seeds 7-12:
/// 0.911 → 0.923, 0.912 → 0.931). The fall is the
/// one measured when it first became significant: a band that mixes answers from before and
/// after the rise shows less than the whole of it, and the limit then grows additively, as
/// after a small rise.
const SLOW_START_AFTER_RISE: f64 = 0.15;

/// An exponential moving average that starts as a plain mean over its first `window` samples.
#[derive(Debug, Clone, Copy)]
struct Ema {
    value: f64,
    count: u32,
    window: u32,
}

impl Ema {
    fn new(window: u32) -> Self {
        Ema {
            value: 0.0,
            count: 0,
            window: window.max(1),
        }
    }

    fn add(&mut self, sample: f64) {
        if self.count < self.window {
            self.count += 1;
            self.value += (sample - self.value) / f64::from(self.count);
        } else {
            let alpha = 2.0 / (f64::from(self.window) + 1.0);
            self.value += alpha * (sample - self.value);
        }
    }
}

/// The controller's state: the limit and what moves it.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) limit: f64,
    pub(crate) ceiling: Option<f64>,
    slow_start: bool,
    /// The last change of the limit was a slow-start doubling.
    doubled: bool,
    /// When the limit last changed: growth waits for an attempt sent after it (a round trip).
    last_change: Option<Instant>,
    /// When the limit last decelerated (the ceiling relaxes some time after it).
    last_decel: Option<Instant>,
    /// In-flight is still above the limit set by the last deceleration: every attempt sent now
    /// (a retry inside its permit, a paced dispatch on a permit granted before the cut) still
    /// loads the server at the old level, so its congestion says nothing of the new limit.
    draining: bool,
    /// When in-flight last came down to the limit after a deceleration: congestion (and success)
    /// from attempts sent before it belongs to the round trip that was already answered.
    recovered_at: Option<Instant>,
    /// Share of the recent attempts that failed (an exponential average over about
    /// [`FAILURE_WINDOW`] attempts): failures decelerate only in a storm.
    failure_share: f64,
    /// Failed attempts heard in a row.
    failures_in_a_row: u32,
    /// Smoothed latency of successful attempts in nanoseconds (TCP's SRTT, gain 1/8); 0 before
    /// the first.
    srtt_nanos: u64,
    /// Smoothed time a successful request kept its permit after its response head, in
    /// nanoseconds (gain 1/8): the body's share of the server's round trip. About 0 for a
    /// JSON answer (0 when its body never made its reader wait); the whole generation for a
    /// streamed one.
    body_nanos: u64,
    /// Whether `body_nanos` has had a sample: until then, how long bodies hold the server is
    /// unknown.
    body_heard: bool,
    /// Permits held by requests whose final response head came back a success: their body is
    /// being read (kept by the limiter, set before each outcome is heard).
    pub(crate) bodies: usize,
    /// The time the requests sent in one attempt whose permit came back since `wait_since`
    /// waited below the limiter before their attempt was sent (in a token budget, say), in
    /// nanoseconds.
    waited_below_nanos: u64,
    /// The time the attempts heard since the same instant spent on the wire (dispatch to
    /// head) and the successes' bodies after it, in nanoseconds.
    wire_nanos: u64,
    cooling_until: Option<Instant>,
    /// Until when growth after an overload's cut waits for the knee estimator to have measured
    /// the level the cut went to (see [`Control::on_congestion`]).
    measure_until: Option<Instant>,
    pub(crate) pacing_interval: Duration,
    short: Ema,
    long: Ema,
    /// The knee estimator ([`Aimd::knee`]).
    knee: Option<Knee>,
    pub(crate) decelerations: u64,
}

/// The limit in whole permits: `limit` rounded down, at least 1.
pub(crate) fn effective(limit: f64) -> usize {
    (limit.floor() as usize).max(1)
}

/// What an outcome did to the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    None,
    Grew,
    Shrank,
}

impl Control {
    pub(crate) fn new(initial: f64, settings: &Settings) -> Self {
        let (short, long) = match settings.algorithm {
            Algorithm::Gradient(g) => (g.short_window, g.long_window),
            Algorithm::Aimd(_) => (1, 1),
        };
        Control {
            limit: initial,
            ceiling: None,
            slow_start: matches!(settings.algorithm, Algorithm::Aimd(a) if a.slow_start),
            doubled: false,
            last_change: None,
            last_decel: None,
            draining: false,
            recovered_at: None,
            failure_share: 0.0,
            failures_in_a_row: 0,
            srtt_nanos: 0,
            body_nanos: 0,
            body_heard: false,
            bodies: 0,
            waited_below_nanos: 0,
            wire_nanos: 0,
            cooling_until: None,
            measure_until: None,
            pacing_interval: settings.pacing.min_interval,
            short: Ema::new(short),
            long: Ema::new(long),
            knee: match settings.algorithm {
                Algorithm::Aimd(a) if a.knee => {
                    let mut knee = Knee::new();
                    knee.limit_changed(effective(initial), Instant::now());
                    Some(knee)
                }
                _ => None,
            },
            decelerations: 0,
        }
    }

    /// The limit was set to `self.limit` at `now`.
    fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
        self.restart_wait();
        if let Some(knee) = self.knee.as_mut() {
            knee.limit_changed(effective(self.limit), now);
        }
    }

    /// How long knee statistics stay valid.
    fn knee_stale(settings: &Settings) -> Duration {
        settings.ceiling_relax_after.saturating_mul(3)
    }

    pub(crate) fn state(&self, now: Instant) -> ControlState {
        match self.cooling_until {
            Some(until) if until > now => ControlState::Cooling,
            _ => ControlState::Running,
        }
    }

    /// Counts an attempt toward the failure share; true when the failures of the recent attempts
    /// make a storm: their share reached `failure_threshold`, or [`FAILURES_IN_A_ROW`] failed
    /// in a row (at a few percent of random failures, three in a row come once in thousands of
    /// attempts; an outage fails every attempt).
    pub(crate) fn note_attempt(&mut self, settings: &Settings, failed: bool) -> bool {
        let sample = if failed { 1.0 } else { 0.0 };
        self.failure_share += (sample - self.failure_share) * (1.0 / FAILURE_WINDOW);
        self.failures_in_a_row = if failed {
            self.failures_in_a_row.saturating_add(1)
        } else {
            0
        };
        failed
            && (self.failure_share >= settings.failure_threshold
                || self.failures_in_a_row >= FAILURES_IN_A_ROW)
    }

    /// [`note_attempt`](Control::note_attempt)`(false)` `n` times: `n` successes the limiter did
    /// not time (see `solo`), heard for the failure window only.
    pub(crate) fn on_untimed_successes(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        self.failure_share *= (1.0 - 1.0 / FAILURE_WINDOW).powi(n);
        self.failures_in_a_row = 0;
    }

    /// Whether the limit is ramping up: in slow start (doubling per round trip), below the
    /// maximum. Its successes then feed the knee estimator and the growth at each new level.
    pub(crate) fn ramping(&self, settings: &Settings) -> bool {
        self.slow_start && self.limit < settings.max
    }

    /// The latest instant an attempt's send time is compared with (the last deceleration, or the
    /// end of its drain). A request sent without a clock read takes as its send time an instant
    /// the limiter knew of when it was sent, which is never earlier than this one if it was sent
    /// after it (see `Limiter::seen`).
    pub(crate) fn compared_since(&self) -> Option<Instant> {
        self.last_decel.max(self.recovered_at)
    }

    /// Whether the last deceleration still waits for in-flight to come down to the new limit.
    pub(crate) fn draining(&self) -> bool {
        self.draining
    }

    /// The longest a deceleration waits for in-flight to come down before the next round trip
    /// counts anyway: one smoothed round trip (1 s before any is known), body included. Permits
    /// can stay held far longer than a round trip (retries inside their permit, each backing
    /// off and trying again under a per-minute quota): their new attempts then keep the load
    /// up, and one round trip later their refusals are an answer to the new limit. A streamed
    /// answer holds the server until its body ends: until then, the streams sent at the old
    /// limit still fill the server, and a retry's refusal answers the old limit, not the new.
    fn drain_bound(&self) -> Duration {
        self.head_round_trip()
            .saturating_add(Duration::from_nanos(self.body_nanos))
    }

    /// The smoothed latency to the response head (1 s before any is known).
    fn head_round_trip(&self) -> Duration {
        if self.srtt_nanos == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_nanos(self.srtt_nanos)
        }
    }

    /// Whether the last deceleration still waits for in-flight to come down at `now`; ends the
    /// wait when one round trip has passed.
    ///
    /// Streams change the wait: while the bodies being read alone exceed the new limit, the
    /// server is still busy with the load sent before the cut, and a refusal (a retry inside
    /// its permit) answers that load, not the new limit. And while bodies are being read but
    /// none has ended yet (the first round trip), how long they hold the server is unknown, and
    /// the heads of attempts sent before the cut may still be arriving, each starting another
    /// stream: a success (`from_success`) does not end the wait then.
    fn still_draining(&mut self, now: Instant, from_success: bool) -> bool {
        if !self.draining {
            return false;
        }
        let bound = self
            .last_decel
            .and_then(|d| d.checked_add(self.drain_bound()));
        if bound.is_some_and(|b| now < b) {
            return true;
        }
        if self.bodies > effective(self.limit) {
            return true;
        }
        if from_success && self.bodies > 0 && !self.body_heard {
            return true;
        }
        self.drained(bound.unwrap_or(now));
        false
    }

    /// In-flight came down to the limit at `now`: from here on, attempts are sent under it.
    pub(crate) fn drained(&mut self, now: Instant) {
        self.draining = false;
        self.recovered_at = Some(now);
        self.last_change = Some(now);
        self.restart_wait();
    }

    fn restart_wait(&mut self) {
        self.waited_below_nanos = 0;
        self.wire_nanos = 0;
    }

    /// A request sent in one attempt gave its permit back: it waited `waited` nanoseconds below
    /// the limiter before its attempt was sent.
    pub(crate) fn on_waited_below(&mut self, waited: u64) {
        self.waited_below_nanos = self.waited_below_nanos.saturating_add(waited);
    }

    /// An attempt was on the wire for `time` (dispatch to head), or a success's body after it.
    #[inline]
    pub(crate) fn on_wire_time(&mut self, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.wire_nanos = self.wire_nanos.saturating_add(nanos);
    }

    /// Whether the permits are on the wire rather than waiting below the limiter: since the
    /// limit last changed, the requests sent in one attempt waited below it (in a token budget,
    /// a pause) for at most [`WAITED_BELOW`] of the time heard of (that wait, and the attempts'
    /// and bodies' time on the wire). Permits fill a limit while they wait there, but nothing
    /// more goes on the wire: growing it would only inflate a limit nobody tests. Requests
    /// retried are left out of the wait (their permits idle through the backoff, and the limit
    /// grows past them so that the server stays busy), as is the wait for pacing (before the
    /// limiter's call).
    pub(crate) fn on_wire(&self) -> bool {
        let waited = self.waited_below_nanos as f64;
        waited <= WAITED_BELOW * (waited + self.wire_nanos as f64)
    }

    /// A request whose last attempt succeeded released its permit `body` after its response
    /// head: the server was busy with it that much longer than the head's round trip says.
    pub(crate) fn on_body_end(&mut self, body: Duration) {
        self.on_wire_time(body);
        let sample = u64::try_from(body.as_nanos()).unwrap_or(u64::MAX);
        self.body_nanos = if !self.body_heard {
            self.body_heard = true;
            sample
        } else {
            let smoothed = self.body_nanos as i64;
            (smoothed + (sample.min(i64::MAX as u64) as i64 - smoothed) / 8).max(0) as u64
        };
    }

    /// Whether growth must still wait at `now` for the round trip of the limit's last change:
    /// a success from an attempt sent after the change, and, when answers are streamed, the
    /// bodies' smoothed holding time after it too. A streamed answer holds the server until its
    /// body ends; until the requests sent at the new limit have held the server that long, the
    /// streams that ended meanwhile were sent before the change, and the server has not yet
    /// carried the new limit for a whole round trip.
    fn round_trip_pending(&self, sent_at: Instant, now: Instant) -> bool {
        self.last_change.is_some_and(|c| {
            sent_at < c
                || (self.body_nanos > 0
                    && now.saturating_duration_since(c) < Duration::from_nanos(self.body_nanos))
        })
    }

    /// An overload (or a failure storm) of an attempt sent at `sent_at`, heard while `in_flight`
    /// permits are held. Decelerates at most once per round trip: an attempt sent before
    /// in-flight came down to the limit of the last deceleration was sent at the old load, and
    /// that load has already had its answer.
    pub(crate) fn on_congestion(
        &mut self,
        settings: &Settings,
        sent_at: Instant,
        retry_after: Option<Duration>,
        in_flight: usize,
        now: Instant,
    ) -> Change {
        if self.still_draining(now, false) {
            return Change::None;
        }
        if self.recovered_at.is_some_and(|r| sent_at < r) {
            return Change::None;
        }
        let change = self.decelerate(settings, retry_after, in_flight, now);
        self.measure_until = None;
        if self.knee.is_some() && effective(self.limit) * 2 >= knee::MIN_SAMPLES as usize {
            // The level under the cut is the one the knee estimator compares the levels above
            // with when the limit climbs back: growth waits until it has been measured
            // (`MIN_SAMPLES` answers, two round trips or less at this level), for at most a few
            // round trips past the cooling period. A lower level would take longer to measure
            // than its growth is worth.
            self.measure_until = self.cooling_until.and_then(|c| {
                c.checked_add(self.drain_bound().saturating_mul(MEASURE_ROUND_TRIPS))
            });
            // The levels above are compared with it, the knee's too when one is held: a knee
            // held past the true one (found against a level further past it) is otherwise
            // restored after every probe's refusal unchallenged (`gentlify-sim`'s
            // constant-cap, C = 40, seed 17: a knee held at 37, goodput 0.932 → 0.953 ×
            // oracle; 24 seeds, limiter alone 0.9647 → 0.9659, full stack 0.9644 → 0.9659).
            let cut = self.limit;
            if let Some(knee) = self.knee.as_mut() {
                knee.set_base(cut);
            }
        }
        change
    }

    /// A failure of an attempt sent at `sent_at` during a failure storm (an outage, a server
    /// timing out under load). Decelerates for every failed attempt sent after the last
    /// deceleration, without waiting for in-flight to come down: the retries of the requests
    /// already admitted are failing too, and the server needs the load gone, not a gentler one.
    pub(crate) fn on_failure_storm(
        &mut self,
        settings: &Settings,
        sent_at: Instant,
        in_flight: usize,
        now: Instant,
    ) -> Change {
        if self.last_decel.is_some_and(|d| sent_at < d) {
            return Change::None;
        }
        self.draining = false;
        self.measure_until = None;
        // A failing server says nothing of its capacity: the ceiling stays where overloads put
        // it, or at the limit the storm found, so that the limit climbs back quickly (half the
        // distance per round trip) once the failures stop.
        let ceiling = self.ceiling.unwrap_or(self.limit).max(self.limit);
        let change = self.decelerate(settings, None, in_flight, now);
        self.ceiling = Some(ceiling.min(settings.max));
        change
    }

    fn decelerate(
        &mut self,
        settings: &Settings,
        retry_after: Option<Duration>,
        in_flight: usize,
        now: Instant,
    ) -> Change {
        let old = self.limit;
        let algorithm = settings.algorithm;
        // Slow start doubled the limit in the last round trip: the level before it is the last
        // one known to be good (TCP's slow-start exit halves too, RFC 5681).
        let exit_slow_start = self.doubled;
        let factor = if exit_slow_start {
            algorithm.decrease_factor().min(0.5)
        } else {
            algorithm.decrease_factor()
        };
        self.limit = (old * factor).max(settings.min);
        self.doubled = false;
        // After a slow-start doubling overloaded the server, its capacity lies somewhere between
        // the level that was fine and the doubled one: the limit grows additively from the
        // former, as TCP's congestion avoidance does after its slow-start exit. After any other
        // deceleration the level that overloaded is known within a step, and the limit climbs
        // back quickly to just under it.
        self.ceiling = if exit_slow_start {
            None
        } else {
            Some((old - algorithm.step()).max(self.limit))
        };
        self.slow_start = false;
        self.last_decel = Some(now);
        if let Some(knee) = self.knee.as_mut() {
            knee.forget_below(old);
            // A probe above the knee ended in a refusal without finding a better level: the
            // limit climbs back to the knee, not to just under the refusal (past the knee, the
            // server serves less).
            if let Some(level) = knee.found_level() {
                let ceiling = self.ceiling.unwrap_or(old).min(level).max(self.limit);
                self.ceiling = Some(ceiling);
                // Refused more than a band above the knee: the probe found nothing better
                // between the knee and the server's cap, which confirms the knee as much as
                // finding it again does. The hold starts over from here, twice as long.
                if knee.above(old, level) {
                    knee.hold(level, now);
                }
            }
        }
        self.changed(now);
        if in_flight > effective(self.limit) {
            self.draining = true;
        } else {
            self.recovered_at = Some(now);
        }
        let cool = settings
            .cooling
            .max(retry_after.unwrap_or_default().min(settings.max_cooling));
        self.cooling_until = now.checked_add(cool);
        self.pacing_interval = settings.pacing.widen(self.pacing_interval);
        self.decelerations += 1;
        tracing::debug!(
            from = old,
            to = self.limit,
            ceiling = self.ceiling,
            "gentlify concurrency decelerates"
        );
        Change::Shrank
    }

    /// Whether a success heard while growth is off (the limit not filled since it last changed)
    /// changes nothing but the smoothed latency and the failure window
    /// ([`on_idle_success`](Control::on_idle_success)): true for the additive controller, which
    /// only grows on a success; the gradient controller reads every sample.
    pub(crate) fn idle_success_is_latency_only(settings: &Settings) -> bool {
        matches!(settings.algorithm, Algorithm::Aimd(_))
    }

    /// A success heard while growth was off, under the additive controller: all that
    /// [`Limiter`](crate::limiter)'s `on_outcome` and [`on_success`](Control::on_success) would
    /// have done with it (its time on the wire, the failure window, the smoothed latency), so
    /// that it can be heard without the lock and applied later, in order.
    pub(crate) fn on_idle_success(&mut self, settings: &Settings, latency: Duration) {
        self.on_wire_time(latency);
        self.note_attempt(settings, false);
        self.smooth_rtt(latency);
    }

    fn smooth_rtt(&mut self, latency: Duration) {
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.srtt_nanos = if self.srtt_nanos == 0 {
            sample.max(1)
        } else {
            // Gain 1/8 (RFC 6298), in integer nanoseconds: a success is the common path.
            let srtt = self.srtt_nanos as i64;
            (srtt + (sample.min(i64::MAX as u64) as i64 - srtt) / 8).max(1) as u64
        };
    }

    /// A success of an attempt sent at `sent_at` that took `latency`. `may_grow` is false while
    /// the sender has not filled the limit since its last change, or while the breaker probes.
    /// Nor does it grow while the permits wait below the limiter more than they are on the wire
    /// ([`Control::on_wire`]).
    pub(crate) fn on_success(
        &mut self,
        settings: &Settings,
        sent_at: Instant,
        latency: Duration,
        may_grow: bool,
        now: Instant,
    ) -> Change {
        self.smooth_rtt(latency);
        if !may_grow && Self::idle_success_is_latency_only(settings) {
            // The additive controller only grows on a success; growth is off.
            return Change::None;
        }
        if let Some(level) = self.knee_below(settings, sent_at, latency, now) {
            // A lower level served more per second: hold there (a ceiling, relaxing as any).
            self.limit = level.max(settings.min);
            self.ceiling = Some(self.limit);
            self.doubled = false;
            self.slow_start = false;
            if let Some(knee) = self.knee.as_mut() {
                knee.hold(self.limit, now);
            }
            self.changed(now);
            tracing::debug!(
                to = self.limit,
                "gentlify concurrency holds at the latency knee"
            );
            return Change::Shrank;
        }
        if let Algorithm::Gradient(_) = settings.algorithm {
            let sample = latency.as_secs_f64();
            self.short.add(sample);
            self.long.add(sample);
            // Gradient2: when the short-term latency has dropped far below the long-term one,
            // the long-term average is stale; let it decay so recovery is not held back.
            if self.long.value > 2.0 * self.short.value {
                self.long.value *= 0.95;
            }
        }
        if self.still_draining(now, true) || self.round_trip_pending(sent_at, now) {
            return Change::None;
        }
        let cooling = self.state(now) == ControlState::Cooling;
        // A probe above a knee held answered faster than the knee (`Knee::better_below`).
        let mut rose = self.knee.as_mut().and_then(Knee::take_grew);
        if self.ceiling.is_some() && rose.is_none() {
            let level = effective(self.limit);
            let stale = Self::knee_stale(settings);
            // The held level answers faster than when the hold began.
            rose = self
                .knee
                .as_mut()
                .and_then(|k| k.capacity_rose(level, stale, now));
        }
        if let Some(fall) = rose {
            // The held level answers faster than when the hold began, or, once the hold has
            // relaxed, a probe above the knee answers faster than the knee did: the server can
            // carry more. How much more is unknown; answering markedly faster
            // ([`SLOW_START_AFTER_RISE`]), far more, and with slow start on, the limit doubles
            // per round trip until the next overload, as at the start.
            self.ceiling = None;
            if fall >= SLOW_START_AFTER_RISE
                && matches!(settings.algorithm, Algorithm::Aimd(a) if a.slow_start)
            {
                self.slow_start = true;
            }
            tracing::debug!(
                at = self.limit,
                fall,
                "gentlify concurrency: the server answers faster at the knee, the hold ends"
            );
        }
        // The ceiling relaxes a period after it was set; a knee hold (the last to set it)
        // lasts longer each time the knee is found again where it was.
        let relax_at = match (self.last_decel, self.knee.as_ref()) {
            (decel, Some(knee)) if knee.moved_at.is_some_and(|m| decel.is_none_or(|d| m >= d)) => {
                knee.moved_at.and_then(|m| {
                    m.checked_add(
                        settings
                            .ceiling_relax_after
                            .saturating_mul(knee.hold_periods()),
                    )
                })
            }
            (decel, _) => decel.and_then(|d| d.checked_add(settings.ceiling_relax_after)),
        };
        if self.ceiling.is_some() && relax_at.is_some_and(|r| now >= r) {
            self.ceiling = None;
        }
        let cap = self.ceiling.unwrap_or(settings.max).min(settings.max);
        let proposed = match settings.algorithm {
            Algorithm::Aimd(a) => match self.ceiling {
                Some(ceiling) => self.limit + a.step.max((ceiling - self.limit) / 2.0),
                None if self.slow_start => self.limit * 2.0,
                None => {
                    let next = self.limit + a.step;
                    // A climb from a base level steps two bands at a time, where the base's
                    // band serves measurably more if it is the knee, and waits at each step to
                    // measure it (`measure_probe`).
                    let measured_steps = self.knee.as_ref().and_then(Knee::base).is_some()
                        && effective(self.limit) * 2 >= knee::MIN_SAMPLES as usize;
                    if measured_steps {
                        next.max(self.limit * PROBE_RATIO)
                    } else {
                        next
                    }
                }
            },
            Algorithm::Gradient(g) => {
                if self.short.value <= 0.0 || self.long.value <= 0.0 {
                    self.limit
                } else {
                    let gradient =
                        (g.tolerance * self.long.value / self.short.value).clamp(0.5, 1.0);
                    let target = self.limit * gradient + self.limit.sqrt();
                    self.limit * (1.0 - g.smoothing) + target * g.smoothing
                }
            }
        };
        let doubling = self.slow_start && self.ceiling.is_none();
        let proposed = proposed.min(cap).max(settings.min);
        if proposed > self.limit && self.limit < cap {
            if cooling || !may_grow {
                return Change::None;
            }
            if self.measuring_cut(settings, now) {
                return Change::None;
            }
            if !self.on_wire() {
                // Permits wait below the limiter, not on the wire: the limit does not grow,
                // but the pacing a deceleration widened narrows all the same (its waiters
                // hold permits too).
                self.narrow_pacing(settings, now);
                return Change::None;
            }
            self.doubled = doubling && matches!(settings.algorithm, Algorithm::Aimd(_));
            let old = self.limit;
            self.limit = proposed;
            self.changed(now);
            if self.limit >= cap {
                self.slow_start = false;
            }
            self.measure_probe(now);
            self.pacing_interval = settings.pacing.narrow(self.pacing_interval);
            tracing::debug!(
                from = old,
                to = self.limit,
                ceiling = self.ceiling,
                "gentlify concurrency reaccelerates"
            );
            Change::Grew
        } else if proposed < self.limit - 1e-9 {
            // Only the gradient proposes less on a success: latency is rising.
            self.doubled = false;
            self.limit = proposed;
            self.changed(now);
            Change::Shrank
        } else {
            if !cooling {
                // The limit holds at its ceiling (or a knee) and cannot grow: the pacing a
                // deceleration widened narrows all the same, or it would throttle dispatch
                // under the limit for as long as the hold lasts.
                self.narrow_pacing(settings, now);
            }
            Change::None
        }
    }

    /// The limit grew above the knee estimator's base level (the level an overload's cut went
    /// to, or a knee held): the next step waits until the estimator has measured the new
    /// level, so that a level that serves less than the base sends the limit back to it a step
    /// above it, rather than after a climb to the server's cap and a refusal there. For at
    /// most [`KNEE_HORIZON`]` + `[`MEASURE_ROUND_TRIPS`] round trips, and only at levels that
    /// answer half a measurement per round trip. Once a step served clearly more than the
    /// base, the climb goes on without waiting ([`Knee::probing`]).
    fn measure_probe(&mut self, now: Instant) {
        let level = effective(self.limit);
        let probing = level * 2 >= knee::MIN_SAMPLES as usize
            && self.knee.as_ref().is_some_and(|k| k.probing(self.limit));
        if probing {
            let round_trips = KNEE_HORIZON + MEASURE_ROUND_TRIPS;
            self.measure_until = now.checked_add(self.drain_bound().saturating_mul(round_trips));
        }
    }

    /// Whether growth still waits for the knee estimator to measure the level an overload's cut
    /// went to; stops waiting once it has, or at the deadline.
    fn measuring_cut(&mut self, settings: &Settings, now: Instant) -> bool {
        let Some(until) = self.measure_until else {
            return false;
        };
        let level = effective(self.limit);
        let stale = Self::knee_stale(settings);
        let measured = self
            .knee
            .as_mut()
            .is_none_or(|k| k.measured(level, stale, now));
        if measured || now >= until {
            self.measure_until = None;
            return false;
        }
        true
    }

    /// Narrows the pacing a deceleration widened by a step, when the limit does not grow; the
    /// next step waits a round trip.
    fn narrow_pacing(&mut self, settings: &Settings, now: Instant) {
        if self.pacing_interval > settings.pacing.min_interval {
            self.pacing_interval = settings.pacing.narrow(self.pacing_interval);
            self.last_change = Some(now);
        }
    }

    /// Feeds a success (sent while the sender filled the limit) to the knee estimator; the
    /// level to move down to when a lower one served more per second.
    fn knee_below(
        &mut self,
        settings: &Settings,
        sent_at: Instant,
        latency: Duration,
        now: Instant,
    ) -> Option<f64> {
        if self.draining {
            // Attempts sent now still carry the load of the level before the cut.
            return None;
        }
        let every = self.head_round_trip();
        let horizon = self.drain_bound().saturating_mul(KNEE_HORIZON);
        let limit = self.limit;
        let knee = self.knee.as_mut()?;
        knee.horizon = horizon;
        let stale = Self::knee_stale(settings);
        if !knee.by_usage {
            knee.record(sent_at, latency, stale, now);
        }
        knee.better_below(effective(limit), every, stale, now)
            .filter(|level| *level < limit - 1e-9)
    }

    /// A request whose attempt sent at `sent_at` succeeded after `latency` (to its head) ended
    /// with `tokens` output tokens: a sample for the knee, normalised by the answer's length
    /// ([`Knee::record_usage`]), kept when the sender `filled` the limit.
    pub(crate) fn on_usage(
        &mut self,
        settings: &Settings,
        sent_at: Instant,
        latency: Duration,
        tokens: u64,
        filled: bool,
        now: Instant,
    ) {
        let record = filled && !self.draining;
        let stale = Self::knee_stale(settings);
        if let Some(knee) = self.knee.as_mut() {
            knee.record_usage(sent_at, latency, tokens, record, stale, now);
        }
    }

    /// Sets the limit by hand (clamped to `[min, max]`).
    pub(crate) fn set(&mut self, settings: &Settings, limit: f64, now: Instant) -> Change {
        let old = self.limit;
        self.doubled = false;
        self.limit = limit.clamp(settings.min, settings.max);
        self.changed(now);
        if self.limit > old {
            Change::Grew
        } else if self.limit < old {
            Change::Shrank
        } else {
            Change::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: f64) -> Settings {
        Settings {
            min: 1.0,
            max,
            algorithm: Algorithm::Aimd(Aimd::new().slow_start(false)),
            cooling: Duration::from_secs(5),
            max_cooling: Duration::from_secs(60),
            ceiling_relax_after: Duration::from_secs(20),
            pacing: Pacing::default(),
            failure_threshold: 0.2,
        }
    }

    /// `n` successes sent at `sent_at`, latency `mean` ± 30 %, each heard when it ends.
    fn successes(c: &mut Control, s: &Settings, n: usize, mean: f64, sent_at: Instant) -> Change {
        let mut last = Change::None;
        for i in 0..n {
            let lat = mean * if i % 2 == 0 { 1.3 } else { 0.7 };
            let latency = Duration::from_secs_f64(lat);
            let change = c.on_success(s, sent_at, latency, true, sent_at + latency);
            if change != Change::None {
                last = change;
            }
        }
        last
    }

    /// Three round trips of `mean` later, one more success at the same level: by then the
    /// answers heard before have passed the knee's horizon (two smoothed round trips) and count
    /// in their bands.
    async fn one_more_later(c: &mut Control, s: &Settings, mean: f64) -> Change {
        tokio::time::advance(Duration::from_secs_f64(3.0 * mean)).await;
        let now = Instant::now();
        let latency = Duration::from_secs_f64(mean);
        c.on_success(s, now - latency, latency, true, now)
    }

    #[tokio::test(start_paused = true)]
    async fn growth_waits_for_the_bodies_holding_time_after_a_change() {
        let s = settings(40.0);
        let mut c = Control::new(10.0, &s);
        let head = Duration::from_millis(300);
        // Streamed answers: the body holds the permit 10 s after the head.
        let t0 = Instant::now();
        assert_eq!(c.on_success(&s, t0, head, true, t0 + head), Change::Grew);
        c.on_body_end(Duration::from_secs(10));
        let changed = t0 + head;
        // A head round trip later, an attempt sent after the change succeeds: the server has
        // not yet carried the new limit for a whole round trip (the old streams still run).
        tokio::time::advance(Duration::from_secs(1)).await;
        let sent = Instant::now();
        let now = sent + head;
        assert_eq!(c.on_success(&s, sent, head, true, now), Change::None);
        assert_eq!(effective(c.limit), 11);
        // Once the requests sent at the new limit have held the server a whole body's time.
        tokio::time::advance(Duration::from_secs(10)).await;
        let sent = Instant::now();
        assert!(sent.duration_since(changed) >= Duration::from_secs(10));
        assert_eq!(
            c.on_success(&s, sent, head, true, sent + head),
            Change::Grew
        );
        assert_eq!(effective(c.limit), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_still_streaming_above_the_new_limit_hold_off_the_next_cut() {
        let s = settings(40.0);
        let mut c = Control::new(31.0, &s);
        let head = Duration::from_millis(300);
        let t0 = Instant::now();
        c.on_success(&s, t0, head, false, t0 + head);
        // 30 streams are running (heads heard, bodies being read); a 31st request is refused.
        c.bodies = 30;
        let refused = t0 + head;
        assert_eq!(
            c.on_congestion(&s, refused, None, 31, refused),
            Change::Shrank
        );
        assert_eq!(effective(c.limit), 21);
        // Its retry, inside its permit, is refused again two head round trips later: the 30
        // old streams still fill the server, so this answers them, not the new limit.
        tokio::time::advance(Duration::from_secs(2)).await;
        let retry = Instant::now();
        assert_eq!(c.on_congestion(&s, retry, None, 31, retry), Change::None);
        assert_eq!(effective(c.limit), 21);
        // Once the streams have come down to the new limit, a refusal is an answer to it.
        c.bodies = 21;
        tokio::time::advance(Duration::from_secs(2)).await;
        let later = Instant::now();
        assert_eq!(c.on_congestion(&s, later, None, 21, later), Change::Shrank);
    }

    #[tokio::test(start_paused = true)]
    async fn before_any_body_has_ended_a_success_does_not_end_the_drain() {
        let s = settings(40.0);
        let mut c = Control::new(32.0, &s);
        let head = Duration::from_millis(300);
        let t0 = Instant::now();
        c.on_success(&s, t0, head, false, t0 + head);
        // The first round trip of streams: 9 heads heard when the 33rd is refused; none of
        // their bodies has ended yet.
        c.bodies = 9;
        let cut = t0 + head;
        assert_eq!(c.on_congestion(&s, cut, None, 32, cut), Change::Shrank);
        assert_eq!(effective(c.limit), 22);
        // After a head round trip, with fewer bodies than the limit so far, a success does not
        // end the wait: the other heads are still arriving.
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(c.on_success(&s, now, head, true, now + head), Change::None);
        assert!(c.draining());
        // They have: the streams alone exceed the new limit, and a refusal answers them.
        c.bodies = 30;
        let later = Instant::now() + head;
        assert_eq!(c.on_congestion(&s, later, None, 32, later), Change::None);
        assert_eq!(effective(c.limit), 22);
    }

    #[tokio::test(start_paused = true)]
    async fn the_knee_holds_a_lower_level_and_the_hold_relaxes_without_any_overload() {
        let pinned = settings(40.0);
        let mut c = Control::new(30.0, &pinned);
        let t0 = Instant::now();
        // 30 in flight at 1 s: 30 per second.
        successes(&mut c, &pinned, 60, 1.0, t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        c.set(&pinned, 40.0, Instant::now());
        // 40 in flight at 2 s: 20 per second. Once the answers have passed the horizon, the
        // knee moves the limit back to 30.
        let t1 = Instant::now();
        assert_eq!(successes(&mut c, &pinned, 60, 2.0, t1), Change::None);
        assert_eq!(one_more_later(&mut c, &pinned, 2.0).await, Change::Shrank);
        assert_eq!(effective(c.limit), 30);
        assert_eq!(c.ceiling, Some(c.limit));
        assert_eq!(c.decelerations, 0, "a knee hold is not a deceleration");

        // Without any deceleration, the hold relaxes like any ceiling, and the limit probes
        // above it again.
        let free = settings(256.0);
        tokio::time::advance(Duration::from_secs(25)).await;
        let t2 = Instant::now();
        assert_eq!(successes(&mut c, &free, 1, 1.0, t2), Change::Grew);
        assert_eq!(c.ceiling, None);
        assert!(c.limit > 30.0);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_narrows_while_the_limit_holds_at_its_ceiling() {
        let s = settings(40.0);
        let mut c = Control::new(30.0, &s);
        let t0 = Instant::now();
        assert_eq!(c.on_congestion(&s, t0, None, 30, t0), Change::Shrank);
        assert_eq!(c.pacing_interval, Duration::from_millis(50));
        // The limit climbs to its ceiling and holds there.
        let ceiling = c.ceiling.unwrap();
        c.set(&s, ceiling, t0);
        tokio::time::advance(Duration::from_secs(6)).await;
        let sent = Instant::now();
        let latency = Duration::from_secs(1);
        assert_eq!(
            c.on_success(&s, sent, latency, true, sent + latency),
            Change::None
        );
        assert_eq!(c.limit, ceiling);
        // Cooling is over and a round trip has passed: dispatch is no longer spaced.
        assert_eq!(c.pacing_interval, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn permits_waiting_below_the_limiter_do_not_make_it_grow() {
        let s = settings(256.0);
        let mut c = Control::new(20.0, &s);
        c.set(&s, 20.0, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        // Requests waited 3 s in a token budget below the limiter, then 2 s on the wire.
        for _ in 0..10 {
            c.on_waited_below(3_000_000_000);
            c.on_wire_time(Duration::from_secs(2));
        }
        assert!(!c.on_wire());
        let (sent, latency) = (now - Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(c.on_success(&s, sent, latency, true, now), Change::None);
        assert_eq!(effective(c.limit), 20);
        // Once they wait little (the budget no longer binds), the limit grows.
        c.set(&s, 20.0, now);
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        for _ in 0..10 {
            c.on_waited_below(100_000_000);
            c.on_wire_time(Duration::from_secs(2));
        }
        assert!(c.on_wire());
        let sent = now - Duration::from_secs(1);
        assert_eq!(c.on_success(&s, sent, latency, true, now), Change::Grew);
    }

    /// Holds the limit at the knee at 30: 30 in flight at 1 s, then 40 in flight at 2 s, then
    /// 30 again at 1 s while held.
    /// The settings pin the limit at 40 at most, so that nothing but the knee moves it.
    async fn find_the_knee(c: &mut Control, s: &Settings) {
        let t0 = Instant::now();
        c.set(s, 30.0, t0);
        successes(c, s, 60, 1.0, t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        c.set(s, 40.0, Instant::now());
        let t1 = Instant::now();
        assert_eq!(successes(c, s, 60, 2.0, t1), Change::None);
        assert_eq!(one_more_later(c, s, 2.0).await, Change::Shrank);
        assert_eq!(effective(c.limit), 30);
        assert_eq!(c.ceiling, Some(c.limit));
        // Held there, the level is measured afresh.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(successes(c, s, 60, 1.0, Instant::now()), Change::None);
    }

    /// Successes at 1 s, four a second (the held level goes on being measured), until the limit
    /// grows: the seconds that took, if under `max`.
    async fn until_growth(c: &mut Control, s: &Settings, max: u64) -> Option<u64> {
        for second in 1..=max {
            tokio::time::advance(Duration::from_secs(1)).await;
            if successes(c, s, 4, 1.0, Instant::now()) == Change::Grew {
                return Some(second);
            }
        }
        None
    }

    #[tokio::test(start_paused = true)]
    async fn a_knee_found_again_where_it_was_holds_twice_as_long() {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        // The first hold relaxes after one period (20 s; 5 s of it passed in `find_the_knee`).
        let first = until_growth(&mut c, &s, 60).await.unwrap();
        assert!((14..=17).contains(&first), "relaxed after {first} s");
        assert_eq!(c.ceiling, None);
        // The probe above finds the knee where it was: the hold now lasts two periods.
        c.set(&pinned, 40.0, Instant::now());
        let t = Instant::now();
        assert_eq!(successes(&mut c, &pinned, 60, 2.0, t), Change::None);
        assert_eq!(one_more_later(&mut c, &pinned, 2.0).await, Change::Shrank);
        assert_eq!(effective(c.limit), 30);
        let second = until_growth(&mut c, &s, 80).await.unwrap();
        assert!((38..=42).contains(&second), "relaxed after {second} s");
    }

    /// A knee found at 30 (server capped at 40), then a probe above it that reaches the cap at
    /// 40 without finding a better level and is refused there: the controller after the cut,
    /// and the settings it runs with.
    async fn refused_at_40_while_probing_above_the_knee() -> (Control, Settings) {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        until_growth(&mut c, &s, 60).await.unwrap();
        c.set(&s, 40.0, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert_eq!(c.on_congestion(&s, now, None, 40, now), Change::Shrank);
        (c, s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_while_probing_above_the_knee_climbs_back_to_the_knee() {
        let (c, _) = refused_at_40_while_probing_above_the_knee().await;
        assert_eq!(effective(c.limit), 28);
        // Back to the knee (30), not to just under the refusal (39).
        assert_eq!(c.ceiling.map(effective), Some(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_below_the_knee_forgets_it() {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        // The server's capacity fell under the knee: refused at 25.
        c.set(&s, 25.0, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert_eq!(c.on_congestion(&s, now, None, 25, now), Change::Shrank);
        assert_eq!(c.ceiling.map(effective), Some(24), "just under the refusal");
        assert_eq!(c.knee.as_ref().and_then(Knee::found_level), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_above_the_knee_confirms_it_and_the_next_hold_lasts_twice_as_long() {
        let (mut c, s) = refused_at_40_while_probing_above_the_knee().await;
        assert_eq!(c.ceiling.map(effective), Some(30));
        // The limit climbs back to the knee and holds there two periods (40 s), not one.
        let mut above = None;
        for second in 1..=80u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            successes(&mut c, &s, 4, 1.0, Instant::now());
            if c.limit > 30.0 + 1e-9 {
                above = Some(second);
                break;
            }
        }
        let above = above.expect("the hold relaxes");
        assert!((38..=42).contains(&above), "relaxed after {above} s");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_refusal_above_the_knee_the_knee_must_serve_as_much_as_the_cut() {
        // The knee was held at 30 (1 s: 30 per second); a probe above it was refused at 40 and
        // the limit cut to 28, where answers take 0.92 s (30.4 per second, by a point estimate,
        // less than a margin and a standard error better).
        let (mut c, s) = refused_at_40_while_probing_above_the_knee().await;
        assert_eq!(effective(c.limit), 28);
        let mut changes = Vec::new();
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let latency = if effective(c.limit) == 28 { 0.92 } else { 1.0 };
            let change = successes(&mut c, &s, 8, latency, Instant::now());
            if change != Change::None {
                changes.push((change, effective(c.limit)));
            }
        }
        // The climb back to the knee is measured against the cut: the knee's level serves less,
        // and the limit goes back to the cut, held there as the knee.
        assert_eq!(changes.last(), Some(&(Change::Shrank, 28)), "{changes:?}");
        assert_eq!(c.knee.as_ref().and_then(Knee::found_level), Some(28.0));
    }

    /// A cut from 40 at `t0` (to 28), with a round trip of 1 s assumed (none known yet).
    fn cut_from_40(s: &Settings, t0: Instant) -> Control {
        let mut c = Control::new(40.0, s);
        assert_eq!(c.on_congestion(s, t0, None, 40, t0), Change::Shrank);
        assert_eq!(effective(c.limit), 28);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_overload_growth_waits_for_the_level_of_the_cut_to_be_measured() {
        let s = settings(256.0);
        let t0 = Instant::now();
        let mut c = cut_from_40(&s, t0);
        // Cooling is over (5 s) and a round trip has passed, but the knee estimator has not
        // measured 28 yet: the limit does not grow.
        tokio::time::advance(Duration::from_secs(6)).await;
        let now = Instant::now();
        let half = Duration::from_millis(500);
        assert_eq!(c.on_success(&s, now - half, half, true, now), Change::None);
        // 60 answers sent at 28, in half a second: still within the estimator's horizon (two
        // round trips), so not yet counted.
        assert_eq!(successes(&mut c, &s, 60, 0.5, now), Change::None);
        assert_eq!(effective(c.limit), 28);
        // Past the horizon they count, 28 is measured, and the limit grows (before the wait's
        // deadline: cooling + three round trips, 8 s after the cut).
        tokio::time::advance(Duration::from_millis(1500)).await;
        let now = Instant::now();
        assert!(now < t0 + Duration::from_secs(8));
        assert_eq!(c.on_success(&s, now - half, half, true, now), Change::Grew);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_for_the_level_of_the_cut_ends_at_its_deadline() {
        let s = settings(256.0);
        let t0 = Instant::now();
        let mut c = cut_from_40(&s, t0);
        // Too few answers to measure 28, but cooling and three round trips have passed.
        tokio::time::advance(Duration::from_secs(7)).await;
        let one = Duration::from_secs(1);
        let now = Instant::now();
        assert_eq!(c.on_success(&s, now - one, one, true, now), Change::None);
        tokio::time::advance(Duration::from_millis(1100)).await;
        let now = Instant::now();
        assert_eq!(c.on_success(&s, now - one, one, true, now), Change::Grew);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_to_a_level_too_low_to_measure_soon_does_not_wait_for_it() {
        let s = settings(256.0);
        let t0 = Instant::now();
        // A first cut (to 28) would wait; the second, to 19, sends fewer answers per round
        // trip than half of what a measurement takes: growth resumes with cooling's end.
        let mut c = cut_from_40(&s, t0);
        tokio::time::advance(Duration::from_millis(1200)).await;
        let now = Instant::now();
        assert_eq!(c.on_congestion(&s, now, None, 28, now), Change::Shrank);
        assert_eq!(effective(c.limit), 19);
        tokio::time::advance(Duration::from_millis(5300)).await;
        let one = Duration::from_secs(1);
        let now = Instant::now();
        assert!(
            now < t0 + Duration::from_secs(8),
            "before the first cut's deadline"
        );
        assert_eq!(c.on_success(&s, now - one, one, true, now), Change::Grew);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_level_that_answers_faster_than_when_the_hold_began_ends_the_hold() {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        assert_eq!(c.ceiling.map(effective), Some(30));
        // The server's capacity grew: 30 in flight now answer in 0.6 s, not 1 s. The hold
        // ends well before its period (20 s, 15 s from here).
        let mut grew = None;
        for second in 1..=30u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            if successes(&mut c, &s, 8, 0.6, Instant::now()) == Change::Grew {
                grew = Some(second);
                break;
            }
        }
        let grew = grew.expect("the limit grows again");
        assert!(grew <= 10, "grew after {grew} s");
        assert_eq!(c.knee.as_ref().and_then(Knee::found_level), None);
    }

    /// A knee held at 30, then answers 40 % faster (0.6 s), with slow start on or off: the
    /// limit right after the hold ends, and the one after the next round trip of growth.
    async fn after_a_rise(slow_start: bool) -> (usize, usize) {
        let pinned = settings(40.0);
        let s = Settings {
            algorithm: Algorithm::Aimd(Aimd::new().slow_start(slow_start)),
            ..settings(256.0)
        };
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        assert!(!c.slow_start);
        let mut first = None;
        for _ in 1..=60u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            if successes(&mut c, &s, 8, 0.6, Instant::now()) == Change::Grew {
                if let Some(first) = first {
                    return (first, effective(c.limit));
                }
                first = Some(effective(c.limit));
            }
        }
        panic!("the limit did not grow twice: {first:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_level_that_answers_faster_goes_back_to_slow_start() {
        // The server can carry more, how much more is unknown: the limit doubles per round
        // trip, as at the start.
        assert_eq!(after_a_rise(true).await, (60, 120));
    }

    #[tokio::test(start_paused = true)]
    async fn without_slow_start_a_held_level_that_answers_faster_grows_a_step_at_a_time() {
        assert_eq!(after_a_rise(false).await, (31, 32));
    }

    /// A knee found at 30 under `pinned`, then, under `s`, the hold relaxed and the limit
    /// probing two bands above it (33).
    async fn probing_above_the_knee(pinned: &Settings, s: &Settings) -> Control {
        let mut c = Control::new(30.0, pinned);
        find_the_knee(&mut c, pinned).await;
        until_growth(&mut c, s, 60).await.expect("the hold relaxes");
        assert_eq!(effective(c.limit), 33);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_above_a_knee_that_answers_faster_than_the_knee_goes_back_to_slow_start() {
        let pinned = settings(40.0);
        let s = Settings {
            algorithm: Algorithm::Aimd(Aimd::new()),
            ..settings(256.0)
        };
        // The hold relaxes; the limit probes two bands above the knee.
        let mut c = probing_above_the_knee(&pinned, &s).await;
        // The server's capacity grew meanwhile: 33 in flight answer in 0.7 s, 30 did in 1 s.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(successes(&mut c, &s, 60, 0.7, Instant::now()), Change::None);
        assert_eq!(one_more_later(&mut c, &s, 0.7).await, Change::Grew);
        assert_eq!(effective(c.limit), 66, "doubled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_above_a_knee_that_answers_a_little_faster_forgets_the_knee() {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = probing_above_the_knee(&pinned, &s).await;
        // 33 in flight answer in 0.87 s ± 30 %, 30 did in 1 s ± 30 %: faster by between two
        // and three standard errors of the difference.
        tokio::time::advance(Duration::from_secs(2)).await;
        successes(&mut c, &s, 60, 0.87, Instant::now());
        one_more_later(&mut c, &s, 0.87).await;
        assert_eq!(c.knee.as_ref().and_then(Knee::found_level), None);
    }

    /// `n` successes sent at `sent_at`, each `latency` s (no spread), heard when they end.
    fn even_successes(c: &mut Control, s: &Settings, n: usize, latency: f64, sent_at: Instant) {
        let latency = Duration::from_secs_f64(latency);
        for _ in 0..n {
            c.on_success(s, sent_at, latency, true, sent_at + latency);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_level_that_answers_a_little_faster_ends_the_hold_without_slow_start() {
        let pinned = settings(40.0);
        let s = Settings {
            algorithm: Algorithm::Aimd(Aimd::new()),
            ..settings(256.0)
        };
        // A knee at 30 (1 s), 40 beyond it (2 s), every answer alike.
        let mut c = Control::new(30.0, &pinned);
        let t0 = Instant::now();
        c.set(&pinned, 30.0, t0);
        even_successes(&mut c, &pinned, 60, 1.0, t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        c.set(&pinned, 40.0, Instant::now());
        even_successes(&mut c, &pinned, 60, 2.0, Instant::now());
        assert_eq!(one_more_later(&mut c, &pinned, 2.0).await, Change::Shrank);
        assert_eq!(effective(c.limit), 30);
        tokio::time::advance(Duration::from_secs(5)).await;
        even_successes(&mut c, &pinned, 60, 1.0, Instant::now());
        // 10 % faster: the server can carry somewhat more. The hold ends before its period
        // (20 s, 15 s from here), the knee is forgotten, and the limit grows a step.
        for second in 1..=12u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = Instant::now();
            let latency = Duration::from_secs_f64(0.9);
            for _ in 0..8 {
                if c.on_success(&s, now, latency, true, now + latency) == Change::Grew {
                    assert_eq!(effective(c.limit), 31, "after {second} s");
                    assert_eq!(c.knee.as_ref().and_then(Knee::found_level), None);
                    assert!(!c.slow_start);
                    return;
                }
            }
        }
        panic!("the hold did not end: {}", c.limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_level_that_answers_as_fast_as_before_keeps_the_hold() {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        let growth = until_growth(&mut c, &s, 60).await.unwrap();
        assert!(growth >= 14, "grew after {growth} s");
    }

    /// A cut from 40 (to 28) whose level is then measured at 1 s: the limit climbs to 33 (half
    /// the way to the ceiling, 39).
    async fn cut_and_climb(s: &Settings) -> Control {
        let t0 = Instant::now();
        let mut c = cut_from_40(s, t0);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(successes(&mut c, s, 60, 1.0, Instant::now()), Change::None);
        assert_eq!(one_more_later(&mut c, s, 1.0).await, Change::Grew);
        assert_eq!(effective(c.limit), 33);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_above_the_cut_that_serves_less_sends_the_limit_back_to_the_cut() {
        let s = settings(256.0);
        let mut c = cut_and_climb(&s).await;
        // A round trip later the new level is not measured yet: the limit does not grow.
        tokio::time::advance(Duration::from_millis(1500)).await;
        let one = Duration::from_secs(1);
        let now = Instant::now();
        assert_eq!(c.on_success(&s, now - one, one, true, now), Change::None);
        assert_eq!(effective(c.limit), 33);
        // 33 in flight at 1.2 s: 27.5 per second, less than 28 at 1 s (within the margin a
        // lower band must win by). The limit goes back to 28 and holds there.
        assert_eq!(successes(&mut c, &s, 60, 1.2, Instant::now()), Change::None);
        assert_eq!(one_more_later(&mut c, &s, 1.2).await, Change::Shrank);
        assert_eq!(effective(c.limit), 28);
        assert_eq!(c.ceiling.map(effective), Some(28));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_above_the_cut_that_serves_clearly_more_lets_the_limit_climb_each_round_trip() {
        let s = settings(256.0);
        let mut c = cut_and_climb(&s).await;
        // 33 at 1 s: 33 per second, clearly more than 28 (latency does not follow the load).
        assert_eq!(successes(&mut c, &s, 60, 1.0, Instant::now()), Change::None);
        assert_eq!(one_more_later(&mut c, &s, 1.0).await, Change::Grew);
        assert_eq!(effective(c.limit), 36);
        // The next step does not wait for its level to be measured: a round trip is enough.
        tokio::time::advance(Duration::from_millis(1500)).await;
        let one = Duration::from_secs(1);
        let now = Instant::now();
        assert_eq!(c.on_success(&s, now - one, one, true, now), Change::Grew);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_above_a_held_knee_steps_two_bands_and_comes_back_when_it_serves_less() {
        let (pinned, s) = (settings(40.0), settings(256.0));
        let mut c = Control::new(30.0, &pinned);
        find_the_knee(&mut c, &pinned).await;
        until_growth(&mut c, &s, 60).await.unwrap();
        // The hold relaxed: the probe steps to 33, not 31.
        assert_eq!(effective(c.limit), 33);
        // 33 at 1.15 s serves 28.7 per second, less than the knee's 30: back to the knee,
        // found again where it was (the hold lasts twice as long), with no refusal.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            successes(&mut c, &s, 60, 1.15, Instant::now()),
            Change::None
        );
        assert_eq!(one_more_later(&mut c, &s, 1.15).await, Change::Shrank);
        assert_eq!(effective(c.limit), 30);
        assert_eq!(c.knee.as_ref().map(Knee::hold_periods), Some(2));
        assert_eq!(c.decelerations, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_climb_below_its_base_steps_from_the_limit_not_from_the_base() {
        let s = settings(256.0);
        let mut c = Control::new(25.0, &s);
        // A base far above (a knee held at 40 before a failure storm cut the limit, say).
        c.knee.as_mut().unwrap().set_base(40.0);
        let t0 = Instant::now();
        c.set(&s, 25.0, t0);
        tokio::time::advance(Duration::from_secs(2)).await;
        let one = Duration::from_secs(1);
        let now = Instant::now();
        assert_eq!(c.on_success(&s, now - one, one, true, now), Change::Grew);
        assert_eq!(effective(c.limit), 27, "a step from 25, not a jump past 40");
    }
}
