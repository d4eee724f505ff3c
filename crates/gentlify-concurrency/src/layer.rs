//! The layer and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use gentlify_core::Feedback;
use tower_layer::Layer;

use crate::control::{Aimd, Algorithm, Gradient, Pacing, Settings};
use crate::error::BuildError;
use crate::limiter::{ConcurrencySnapshot, Config, Limiter};
use crate::service::AdaptiveConcurrency;

/// Applies [`AdaptiveConcurrency`] to a service.
///
/// A layer value owns **one** limiter: every service it makes, and every clone of those, share
/// the same limit and the same permits (apply one layer value to two services and they share one
/// limit; build two layer values for two limits). Several layers may share one [`Feedback`]
/// handle; each then hears every attempt published on it (an [`Outcome`] does not say which
/// limiter sent it), so share a handle among limiters in front of the same upstream capacity.
/// Cloning the layer clones the handle to the same limiter.
///
/// [`Outcome`]: gentlify_core::Outcome
///
/// ```
/// use std::time::Duration;
/// use gentlify_concurrency::AdaptiveConcurrencyLayer;
/// use tower::ServiceBuilder;
///
/// let layer = AdaptiveConcurrencyLayer::builder()
///     .initial(8)
///     .max(64)
///     .acquire_timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// let service = ServiceBuilder::new()
///     .layer(layer.clone())
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
///     });
/// assert_eq!(layer.snapshot().limit, 8);
/// # drop(service);
/// ```
#[derive(Clone)]
pub struct AdaptiveConcurrencyLayer {
    limiter: Arc<Limiter>,
}

impl AdaptiveConcurrencyLayer {
    /// A layer with the defaults (see [`AdaptiveConcurrencyBuilder`]) on a handle of its own.
    pub fn new() -> Self {
        AdaptiveConcurrencyBuilder::default()
            .build()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> AdaptiveConcurrencyBuilder {
        AdaptiveConcurrencyBuilder::default()
    }

    /// The handle the limiter listens to.
    ///
    /// A limiter built without [`feedback`](AdaptiveConcurrencyBuilder::feedback) has a handle of
    /// its own, and sends a request that carries no [`Slot`](gentlify_core::Slot) without making
    /// one: no other layer could share it. Once this method hands the handle out, other layers
    /// may be built on it, and the limiter makes a slot for every request again.
    pub fn feedback(&self) -> &Feedback {
        self.limiter.share()
    }

    /// The limiter's state now.
    pub fn snapshot(&self) -> ConcurrencySnapshot {
        self.limiter.snapshot()
    }

    /// Sets the current limit by hand (clamped to `[min, max]`); the controller moves it from
    /// there. A lower limit takes effect at once: no one new is admitted until in-flight falls
    /// under it.
    pub fn set_limit(&self, limit: usize) {
        self.limiter.set_limit(limit as f64);
    }
}

impl Default for AdaptiveConcurrencyLayer {
    fn default() -> Self {
        AdaptiveConcurrencyLayer::new()
    }
}

impl<S> Layer<S> for AdaptiveConcurrencyLayer {
    type Service = AdaptiveConcurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrency::new(inner, &self.limiter)
    }
}

impl fmt::Debug for AdaptiveConcurrencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("limiter", &self.limiter)
            .finish()
    }
}

/// The limit a layer starts from unless [`initial`](AdaptiveConcurrencyBuilder::initial) says
/// otherwise (brought within `min..=max`); see the defaults' table on
/// [`AdaptiveConcurrencyBuilder`].
pub const DEFAULT_INITIAL: usize = 8;

/// Builds an [`AdaptiveConcurrencyLayer`]; [`build`](AdaptiveConcurrencyBuilder::build) checks
/// the settings and reports a [`BuildError`].
///
/// The defaults are chosen for LLM APIs, where one call lasts seconds and the binding limits are
/// per-minute request and token quotas:
///
/// | setting | default | why |
/// |---|---|---|
/// | `initial` | 8, within `min..=max` | a modest start for a paid tier of the large providers (their per-minute quotas are the budget's to keep; a server that allows fewer answers the first 429 and the limit comes down); slow start doubles it per round trip until the first 429. Each doubling waits a whole LLM round trip (seconds): in the simulator, starting from 4 rather than 8 cost about 0.6 % of a 3-minute run's goodput (constant-cap, six seeds: 0.948 → 0.954 × the oracle) |
/// | `min` | 1 | the limiter never stops traffic by itself; the breaker does that |
/// | `max` | 256 | above what one API key sustains for LLM calls; a bound against runaway growth |
/// | algorithm | [`Aimd`] (×0.7, +1, knee on) | latency of LLM calls follows the answer's length, so overload signals are the reliable input for cuts. The knee ([`Aimd::knee`]) only compares mean latencies over dozens of calls per band, which the answer's length does not move, and only ever holds the limit where it measured more throughput; on the simulator's queueing knee it raised constant-cap from 0.895 to 0.94 × the oracle and large-backlog from 0.843 to 0.93-0.95 (limiter alone; the figures move by ±0.01 with the seed), and changed nothing measurable with a flat latency (0.861 → 0.865 on constant-cap with `knee = 0`) |
/// | `cooling` | 5 s, or the server's `retry-after` if longer (≤ 60 s) | covers the few seconds a 429's `retry-after` usually names (Azure sends `Retry-After: 6`) |
/// | `ceiling_relax_after` | 20 s | a few LLM round trips of quiet after the cooling period. The simulator (`gentlify-sim`) showed 60 s pinning the limit far below the server's capacity: a deceleration from a small limit leaves the ceiling at the new limit, and each later deceleration restarts the period, so one early burst of 429s cost a minute or more at a limit of 1. Shorter than 20 s re-probes above a capacity step too often (the capacity test's goodput falls) |
/// | pacing | [`Pacing::default`] | no spacing while calm; 50 ms–1 s after decelerations |
/// | `failure_threshold` | 0.2 | a few percent of dropped connections or stray 5xx are noise, not a sign of load, and cutting the limit for each ratchets it down to `min` (the simulator's dropped-connections scenario: 5 % of failures took the limit to 1); an outage or a server timing out under load fails three attempts in a row at once. In a storm every failure sent after the last deceleration decelerates again |
/// | `pause_on_retry_after` | on | a 429 that names a delay says the key's quota is empty: the requests behind it would be refused too. The simulator's per-minute scenarios without header feedback showed other requests sent before the named delay, each refused and retried (rpm-bound, full stack without headers: 56.7 → 23.4 429s per 1000 attempts, 2 → 0 failed) |
/// | `acquire_timeout` | none | waiting is the point of a client-side limiter; set one to fail fast |
/// | `max_waiting` | none | bound the queue to shed load instead of queueing it |
#[derive(Clone)]
pub struct AdaptiveConcurrencyBuilder {
    feedback: Option<Feedback>,
    /// `None`: [`DEFAULT_INITIAL`], brought within `min..=max`.
    initial: Option<usize>,
    min: usize,
    max: usize,
    algorithm: Algorithm,
    cooling: Duration,
    max_cooling: Duration,
    ceiling_relax_after: Duration,
    pacing: Pacing,
    failure_threshold: f64,
    pause_on_retry_after: bool,
    acquire_timeout: Option<Duration>,
    max_waiting: Option<usize>,
}

impl Default for AdaptiveConcurrencyBuilder {
    fn default() -> Self {
        AdaptiveConcurrencyBuilder {
            feedback: None,
            initial: None,
            min: 1,
            max: 256,
            algorithm: Algorithm::default(),
            cooling: Duration::from_secs(5),
            max_cooling: Duration::from_secs(60),
            ceiling_relax_after: Duration::from_secs(20),
            pacing: Pacing::default(),
            failure_threshold: 0.2,
            pause_on_retry_after: true,
            acquire_timeout: None,
            max_waiting: None,
        }
    }
}

impl AdaptiveConcurrencyBuilder {
    /// The handle to listen to (the other layers of the stack publish on it); without one the
    /// layer makes its own.
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// The limit to start from (default 8, brought within `min..=max`; a value set here must lie
    /// within them).
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = Some(initial);
        self
    }

    /// The lowest limit (at least 1).
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest limit.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Use the [`Aimd`] controller with these parameters (the default controller).
    pub fn aimd(mut self, aimd: Aimd) -> Self {
        self.algorithm = Algorithm::Aimd(aimd);
        self
    }

    /// Use the latency-aware [`Gradient`] controller.
    pub fn gradient(mut self, gradient: Gradient) -> Self {
        self.algorithm = Algorithm::Gradient(gradient);
        self
    }

    /// Sets the controller.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// How long the limit does not grow after a deceleration. A server's `retry-after` longer
    /// than this extends it, up to `max_cooling`.
    pub fn cooling(mut self, cooling: Duration) -> Self {
        self.cooling = cooling;
        self
    }

    /// The longest a server's `retry-after` may extend the cooling period.
    pub fn max_cooling(mut self, max_cooling: Duration) -> Self {
        self.max_cooling = max_cooling;
        self
    }

    /// After how long without a deceleration the safe ceiling relaxes back to the maximum.
    pub fn ceiling_relax_after(mut self, after: Duration) -> Self {
        self.ceiling_relax_after = after;
        self
    }

    /// Dispatch pacing.
    pub fn pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    /// The share of recent attempts (about the last 10) that must have failed (5xx, transport
    /// error, timeout) before a failure decelerates, in `[0, 1]`; three failures in a row
    /// decelerate whatever the share; 0 makes every failure decelerate. Overloads (429 / 503 / 529) always decelerate, once per round trip.
    pub fn failure_threshold(mut self, share: f64) -> Self {
        self.failure_threshold = share;
        self
    }

    /// Whether an overload that names a delay (`retry-after`, `retry-after-ms`) holds every
    /// dispatch through the handle for that delay (at most `max_cooling`), through the handle's
    /// pause gate (default: yes). Off, only the retry of the refused request waits.
    pub fn pause_on_retry_after(mut self, on: bool) -> Self {
        self.pause_on_retry_after = on;
        self
    }

    /// Reject a request that waited this long for a permit with
    /// [`AcquireTimeout`](gentlify_core::error::AcquireTimeout).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Reject a request that finds this many already waiting with
    /// [`QueueFull`](gentlify_core::error::QueueFull) (0: never wait).
    pub fn max_waiting(mut self, max_waiting: usize) -> Self {
        self.max_waiting = Some(max_waiting);
        self
    }

    /// Checks the settings and builds the layer (registering its limiter on the handle).
    pub fn build(self) -> Result<AdaptiveConcurrencyLayer, BuildError> {
        if self.min == 0 {
            return Err(BuildError::ZeroMin);
        }
        if self.min > self.max {
            return Err(BuildError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        let initial = match self.initial {
            Some(initial) if !(self.min..=self.max).contains(&initial) => {
                return Err(BuildError::InitialOutOfRange {
                    initial,
                    min: self.min,
                    max: self.max,
                });
            }
            Some(initial) => initial,
            None => DEFAULT_INITIAL.clamp(self.min, self.max),
        };
        let open_unit = |name, value: f64| {
            if value > 0.0 && value < 1.0 {
                Ok(())
            } else {
                Err(BuildError::OutOfRange {
                    name,
                    value,
                    expected: "(0, 1)",
                })
            }
        };
        match self.algorithm {
            Algorithm::Aimd(a) => {
                open_unit("decrease_factor", a.decrease_factor)?;
                if !(a.step > 0.0 && a.step.is_finite()) {
                    return Err(BuildError::OutOfRange {
                        name: "step",
                        value: a.step,
                        expected: "> 0",
                    });
                }
            }
            Algorithm::Gradient(g) => {
                open_unit("decrease_factor", g.decrease_factor)?;
                if !(g.tolerance >= 1.0 && g.tolerance.is_finite()) {
                    return Err(BuildError::OutOfRange {
                        name: "tolerance",
                        value: g.tolerance,
                        expected: ">= 1",
                    });
                }
                if !(g.smoothing > 0.0 && g.smoothing <= 1.0) {
                    return Err(BuildError::OutOfRange {
                        name: "smoothing",
                        value: g.smoothing,
                        expected: "(0, 1]",
                    });
                }
                if g.short_window == 0 || g.long_window < g.short_window {
                    return Err(BuildError::OutOfRange {
                        name: "windows",
                        value: f64::from(g.long_window),
                        expected: "0 < short <= long",
                    });
                }
            }
        }
        if !(0.0..1.0).contains(&self.pacing.jitter) {
            return Err(BuildError::OutOfRange {
                name: "jitter",
                value: self.pacing.jitter,
                expected: "[0, 1)",
            });
        }
        if !(0.0..=1.0).contains(&self.failure_threshold) {
            return Err(BuildError::OutOfRange {
                name: "failure_threshold",
                value: self.failure_threshold,
                expected: "[0, 1]",
            });
        }
        let config = Config {
            settings: Settings {
                min: self.min as f64,
                max: self.max as f64,
                algorithm: self.algorithm,
                cooling: self.cooling,
                max_cooling: self.max_cooling,
                ceiling_relax_after: self.ceiling_relax_after,
                pacing: self.pacing,
                failure_threshold: self.failure_threshold,
            },
            acquire_timeout: self.acquire_timeout,
            max_waiting: self.max_waiting,
            pause_on_retry_after: self.pause_on_retry_after,
        };
        let alone = self.feedback.is_none();
        let feedback = self.feedback.unwrap_or_default();
        Ok(AdaptiveConcurrencyLayer {
            limiter: Limiter::new(feedback, config, initial as f64, alone),
        })
    }
}

impl fmt::Debug for AdaptiveConcurrencyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyBuilder")
            .field("initial", &self.initial)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("algorithm", &self.algorithm)
            .field("cooling", &self.cooling)
            .field("ceiling_relax_after", &self.ceiling_relax_after)
            .field("pacing", &self.pacing)
            .field("failure_threshold", &self.failure_threshold)
            .field("pause_on_retry_after", &self.pause_on_retry_after)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("max_waiting", &self.max_waiting)
            .finish()
    }
}
