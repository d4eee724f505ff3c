//! The breaker's settings and their builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use gentlify_core::{Class, Feedback};

use crate::anomaly::LatencyAnomaly;
use crate::breaker::{Breaker, Transition};
use crate::error::ConfigError;
use crate::layer::CircuitBreakerLayer;

/// How the breaker counts an attempt of a given [`Class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Counts as a failed call.
    Failure,
    /// Counts as a successful call.
    Success,
    /// Not counted at all: it neither trips the breaker nor dilutes the failure rate.
    Ignore,
}

/// The window of recent calls the closed state judges the upstream by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `n` counted calls.
    Count(usize),
    /// The calls of the last `length`, kept in `buckets` buckets of `length / buckets` each: a
    /// call is forgotten between `length - length / buckets` and `length` after it was recorded.
    Time {
        /// How far back the window reaches.
        length: Duration,
        /// How many buckets it is cut into (the granularity of expiry).
        buckets: usize,
    },
}

impl SlidingWindow {
    /// The last `calls` counted calls.
    pub fn count(calls: usize) -> Self {
        SlidingWindow::Count(calls)
    }

    /// The calls of the last `length`, in 10 buckets.
    pub fn time(length: Duration) -> Self {
        SlidingWindow::Time {
            length,
            buckets: 10,
        }
    }
}

type Callback = Arc<dyn Fn(&Transition) + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) consecutive_failures: u32,
    pub(crate) slow_call_duration: Duration,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) open_for: Duration,
    pub(crate) open_backoff_max: f64,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_probes: usize,
    pub(crate) probe_deadline: Duration,
    pub(crate) open_wait: Option<Duration>,
    pub(crate) overloaded: Verdict,
    pub(crate) fatal: Verdict,
    pub(crate) cancelled: Verdict,
    pub(crate) latency_anomaly: Option<LatencyAnomaly>,
    pub(crate) on_transition: Option<Callback>,
}

impl Config {
    pub(crate) fn verdict(&self, class: &Class) -> Verdict {
        match class {
            Class::Success => Verdict::Success,
            Class::Failure => Verdict::Failure,
            Class::Overloaded { .. } => self.overloaded,
            Class::Fatal => self.fatal,
            Class::Cancelled => self.cancelled,
            _ => Verdict::Ignore,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: SlidingWindow::Count(100),
            minimum_calls: 20,
            failure_rate_threshold: 0.5,
            consecutive_failures: 10,
            slow_call_duration: Duration::from_secs(60),
            slow_call_rate_threshold: 1.0,
            open_for: Duration::from_secs(30),
            open_backoff_max: 5.0,
            open_jitter: 0.0,
            half_open_probes: 3,
            probe_deadline: Duration::from_secs(60),
            open_wait: None,
            overloaded: Verdict::Ignore,
            fatal: Verdict::Ignore,
            cancelled: Verdict::Ignore,
            latency_anomaly: None,
            on_transition: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("slow_call_rate_threshold", &self.slow_call_rate_threshold)
            .field("open_for", &self.open_for)
            .field("open_backoff_max", &self.open_backoff_max)
            .field("open_jitter", &self.open_jitter)
            .field("half_open_probes", &self.half_open_probes)
            .field("probe_deadline", &self.probe_deadline)
            .field("open_wait", &self.open_wait)
            .field("overloaded", &self.overloaded)
            .field("fatal", &self.fatal)
            .field("cancelled", &self.cancelled)
            .field("latency_anomaly", &self.latency_anomaly)
            .field("on_transition", &self.on_transition.is_some())
            .finish()
    }
}

/// Builds a [`CircuitBreakerLayer`]; every setting has a default, listed with its method.
///
/// The defaults follow resilience4j's semantics with numbers sized for LLM APIs, whose traffic is
/// a few requests per second rather than thousands: a window of the last 100 calls, judged once
/// it holds 20; open at a failure rate of 50 % or after 10 failures in a row; open for 30 s,
/// doubling on each reopening up to 5× (150 s); 3 probes in half-open.
///
/// ```
/// use std::time::Duration;
/// use gentlify_breaker::{CircuitBreakerLayer, SlidingWindow, Verdict};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = CircuitBreakerLayer::builder()
///     .sliding_window(SlidingWindow::time(Duration::from_secs(60)))
///     .minimum_calls(10)
///     .failure_rate_threshold(0.25)
///     .open_for(Duration::from_secs(10))
///     .count_overloaded_as(Verdict::Failure)
///     .on_transition(|t| println!("breaker {} -> {}", t.from, t.to))
///     .build()
///     .expect("a valid configuration");
/// # let _ = layer; }
/// ```
#[derive(Default)]
pub struct CircuitBreakerBuilder {
    config: Config,
    feedback: Option<Feedback>,
}

impl fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("config", &self.config)
            .field("feedback", &self.feedback)
            .finish()
    }
}

impl CircuitBreakerBuilder {
    /// The shared handle the breaker listens on and reports its state to. Without one, the
    /// breaker makes its own.
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// The window the closed state judges by (default: the last 100 calls).
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.config.window = window;
        self
    }

    /// The calls the window must hold before the failure and slow-call rates can open the
    /// breaker (default 20). The consecutive-failures trigger does not wait for it.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// The failure rate, in `(0, 1]`, at which the breaker opens (default 0.5).
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.config.failure_rate_threshold = rate;
        self
    }

    /// The number of failures in a row that open the breaker whatever the window says
    /// (default 10; 0 turns the trigger off).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.config.consecutive_failures = failures;
        self
    }

    /// The latency (to the response head) from which a call counts as slow (default 60 s).
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration = duration;
        self
    }

    /// The slow-call rate, in `(0, 1]`, at which the breaker opens (default 1.0: only when every
    /// call in the window is slow, as in resilience4j).
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.config.slow_call_rate_threshold = rate;
        self
    }

    /// How long the breaker stays open the first time (default 30 s).
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.config.open_for = duration;
        self
    }

    /// The cap on the open period's growth: each reopening from half-open doubles the period,
    /// up to `max_factor` times [`open_for`](Self::open_for) (default 5; 1 turns the growth off).
    pub fn open_backoff_max(mut self, max_factor: f64) -> Self {
        self.config.open_backoff_max = max_factor;
        self
    }

    /// Spreads the open period by a random factor in `[1 - fraction, 1 + fraction]`, so that
    /// many clients do not probe at the same instant (default 0: no jitter).
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.config.open_jitter = fraction;
        self
    }

    /// The probes half-open lets through at once, and the outcomes it waits for before it
    /// decides (default 3).
    pub fn half_open_probes(mut self, probes: usize) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// How long a probe may stay in flight before its permit is handed to a new probe
    /// (default 60 s).
    pub fn probe_deadline(mut self, deadline: Duration) -> Self {
        self.config.probe_deadline = deadline;
        self
    }

    /// Makes a call that finds the breaker open (or half-open with every probe out) wait for
    /// admission instead of failing at once: the service's `poll_ready` stays pending until the
    /// open period ends, a probe's place frees up or the breaker closes, and a call still refused
    /// after `max` fails with [`CircuitOpen`](gentlify_core::error::CircuitOpen) as it would
    /// have at once (`Duration::MAX`: no bound, as a concurrency limiter's queue). Only probes
    /// reach the upstream either way; what changes is the caller's view. A closed-loop batch
    /// (workers each taking the next job when the last one ends) whose calls fail at once would
    /// turn the whole remaining batch into rejections the moment the breaker opens; waiting holds
    /// it until the upstream answers again. Forced open still refuses at once. Default: off
    /// (fail fast), see [`fail_fast`](Self::fail_fast).
    pub fn wait_while_open(mut self, max: Duration) -> Self {
        self.config.open_wait = Some(max);
        self
    }

    /// Refuses a call at once while open (the default): the caller gets
    /// [`CircuitOpen`](gentlify_core::error::CircuitOpen), with the time until the next probe.
    pub fn fail_fast(mut self) -> Self {
        self.config.open_wait = None;
        self
    }

    /// How overloaded answers (429, 503, 529, `RESOURCE_EXHAUSTED`) count (default
    /// [`Verdict::Ignore`]: the concurrency layer handles overload; a breaker that opened on it
    /// would only add a second, blunter reaction).
    pub fn count_overloaded_as(mut self, verdict: Verdict) -> Self {
        self.config.overloaded = verdict;
        self
    }

    /// How fatal answers (a quota exhausted for good) count (default [`Verdict::Ignore`]: the
    /// request is at fault, not the server).
    pub fn count_fatal_as(mut self, verdict: Verdict) -> Self {
        self.config.fatal = verdict;
        self
    }

    /// How attempts abandoned by the caller count (default [`Verdict::Ignore`]).
    pub fn count_cancelled_as(mut self, verdict: Verdict) -> Self {
        self.config.cancelled = verdict;
        self
    }

    /// Turns on the latency-anomaly trigger (default off).
    pub fn latency_anomaly(mut self, anomaly: LatencyAnomaly) -> Self {
        self.config.latency_anomaly = Some(anomaly);
        self
    }

    /// Called on every state change, after the breaker's lock is released. It runs on the task
    /// that caused the change, often from inside the handle's publishing of an outcome: keep it
    /// short and do not call back into the [`Feedback`] handle from it (send the transition to
    /// a channel instead).
    pub fn on_transition(mut self, callback: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.config.on_transition = Some(Arc::new(callback));
        self
    }

    /// Checks the settings and builds the layer (and registers the breaker on the handle).
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        let c = &self.config;
        rate("failure_rate_threshold", c.failure_rate_threshold)?;
        rate("slow_call_rate_threshold", c.slow_call_rate_threshold)?;
        match c.window {
            SlidingWindow::Count(0) => {
                return Err(ConfigError::Zero {
                    name: "window size",
                })
            }
            SlidingWindow::Time { length, buckets } => {
                if buckets == 0 {
                    return Err(ConfigError::Zero { name: "buckets" });
                }
                if length.is_zero() {
                    return Err(ConfigError::Zero {
                        name: "window length",
                    });
                }
            }
            SlidingWindow::Count(_) => {}
        }
        if c.half_open_probes == 0 {
            return Err(ConfigError::Zero {
                name: "half_open_probes",
            });
        }
        if c.probe_deadline.is_zero() {
            return Err(ConfigError::Zero {
                name: "probe_deadline",
            });
        }
        if !(c.open_backoff_max >= 1.0 && c.open_backoff_max.is_finite()) {
            return Err(ConfigError::Rate {
                name: "open_backoff_max",
                range: "[1, inf)",
                value: c.open_backoff_max,
            });
        }
        if !(0.0..1.0).contains(&c.open_jitter) {
            return Err(ConfigError::Rate {
                name: "open_jitter",
                range: "[0, 1)",
                value: c.open_jitter,
            });
        }
        if let Some(a) = c.latency_anomaly {
            if a.baseline == 0 || a.recent == 0 {
                return Err(ConfigError::Zero {
                    name: "latency_anomaly window",
                });
            }
            if !(a.z_score > 0.0 && a.z_score.is_finite()) {
                return Err(ConfigError::Rate {
                    name: "latency_anomaly z_score",
                    range: "(0, inf)",
                    value: a.z_score,
                });
            }
        }
        let feedback = self.feedback.unwrap_or_default();
        Ok(CircuitBreakerLayer::from_breaker(Breaker::new(
            self.config,
            feedback,
        )))
    }
}

fn rate(name: &'static str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::Rate {
            name,
            range: "(0, 1]",
            value,
        })
    }
}
