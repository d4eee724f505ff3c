//! The layer and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use gentlify_core::Feedback;
use http::HeaderName;
use tower_layer::Layer;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::error::ConfigError;
use crate::service::Retry;

/// The longest server-directed delay the layer waits for by default: long enough for a
/// minute-window quota (RPM, TPM) to reset with room for rounding, short enough that a caller is
/// not held for a daily quota. A longer delay returns the response to the caller.
pub const DEFAULT_MAX_SERVER_DELAY: Duration = Duration::from_secs(120);

/// How much of an error body is read to tell a fatal 429 from a transient one by default. Every
/// provider body in `rate-limit-signals.md` puts its error type in the first few hundred bytes.
pub const DEFAULT_BODY_PREFIX_BYTES: usize = 8 * 1024;

/// What every service of one layer shares.
pub(crate) struct Config {
    pub(crate) feedback: Feedback,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) max_total_time: Option<Duration>,
    pub(crate) max_server_delay: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) body_prefix_bytes: usize,
    pub(crate) attempt_header: Option<HeaderName>,
    pub(crate) idempotency_header: Option<HeaderName>,
    pub(crate) wait_for_probe: Option<Duration>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("feedback", &self.feedback)
            .field("budget", &self.budget)
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("max_total_time", &self.max_total_time)
            .field("max_server_delay", &self.max_server_delay)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("body_prefix_bytes", &self.body_prefix_bytes)
            .field("attempt_header", &self.attempt_header)
            .field("idempotency_header", &self.idempotency_header)
            .field("wait_for_probe", &self.wait_for_probe)
            .finish()
    }
}

/// Retries requests inside their [`Slot`](gentlify_core::Slot): see the [crate docs](crate).
///
/// `RetryLayer::new()` gives the defaults: 3 attempts (the OpenAI and Anthropic SDKs' 2 retries),
/// [`Backoff::default`], server delays honoured up to [`DEFAULT_MAX_SERVER_DELAY`], the handle's
/// shared [`RetryBudget`], no per-attempt timeout and no total time limit.
///
/// ```
/// use std::time::Duration;
/// use gentlify_core::Feedback;
/// use gentlify_retry::{Backoff, Jitter, RetryLayer};
///
/// let feedback = Feedback::new();
/// let layer = RetryLayer::builder()
///     .feedback(feedback.clone())
///     .max_attempts(5)
///     .backoff(Backoff::exponential(Duration::from_millis(200), Duration::from_secs(10)))
///     .attempt_timeout(Duration::from_secs(60))
///     .idempotency_header(http::HeaderName::from_static("idempotency-key"))
///     .build()
///     .expect("a valid configuration");
/// assert!(layer.feedback().same_as(&feedback));
///
/// let refused = RetryLayer::builder().max_attempts(0).build();
/// assert!(refused.is_err());
/// ```
#[derive(Clone)]
pub struct RetryLayer {
    config: Arc<Config>,
}

impl RetryLayer {
    /// The layer with the defaults, on a handle of its own.
    pub fn new() -> Self {
        RetryLayer::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for every setting.
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::default()
    }

    /// The handle the layer publishes to.
    pub fn feedback(&self) -> &Feedback {
        &self.config.feedback
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::from_config(inner, self.config.clone())
    }
}

#[derive(Debug, Clone)]
enum BudgetChoice {
    Handle,
    Given(Arc<RetryBudget>),
    Disabled,
}

/// Builds a [`RetryLayer`]; [`build`](RetryLayerBuilder::build) checks the settings.
#[derive(Debug, Clone)]
pub struct RetryLayerBuilder {
    feedback: Option<Feedback>,
    budget: BudgetChoice,
    backoff: Backoff,
    max_attempts: u32,
    max_total_time: Option<Duration>,
    max_server_delay: Duration,
    attempt_timeout: Option<Duration>,
    body_prefix_bytes: usize,
    attempt_header: Option<HeaderName>,
    idempotency_header: Option<HeaderName>,
    wait_for_probe: Option<Duration>,
}

impl Default for RetryLayerBuilder {
    fn default() -> Self {
        RetryLayerBuilder {
            feedback: None,
            budget: BudgetChoice::Handle,
            backoff: Backoff::default(),
            max_attempts: 3,
            max_total_time: None,
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
            attempt_timeout: None,
            body_prefix_bytes: DEFAULT_BODY_PREFIX_BYTES,
            attempt_header: None,
            idempotency_header: None,
            wait_for_probe: None,
        }
    }
}

impl RetryLayerBuilder {
    /// The handle to publish to and read from (pause gate, circuit state, classifier, shared
    /// budget). Without one the layer makes its own.
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// Attempts per logical request, the first included (3 by default; 1 never retries).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The backoff used when the server names no delay.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// No retry that would start later than `limit` after the logical request began.
    pub fn max_total_time(mut self, limit: Duration) -> Self {
        self.max_total_time = Some(limit);
        self
    }

    /// A server delay over `limit` is not waited for: the response goes back to the caller
    /// ([`DEFAULT_MAX_SERVER_DELAY`] by default).
    pub fn max_server_delay(mut self, limit: Duration) -> Self {
        self.max_server_delay = limit;
        self
    }

    /// Fails an attempt that has no response after `timeout` with [`AttemptTimeout`] (a failure,
    /// retried like one).
    ///
    /// [`AttemptTimeout`]: crate::AttemptTimeout
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How many bytes of a body the classifier wants (a 429's) are read to find out whether it is
    /// fatal ([`DEFAULT_BODY_PREFIX_BYTES`] by default; 0 never reads).
    pub fn body_prefix_bytes(mut self, bytes: usize) -> Self {
        self.body_prefix_bytes = bytes;
        self
    }

    /// Draws retries from `budget`, shared with whoever else holds it, instead of the handle's.
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = BudgetChoice::Given(budget);
        self
    }

    /// Retries without a budget (only the attempt and time limits bound them).
    pub fn without_budget(mut self) -> Self {
        self.budget = BudgetChoice::Disabled;
        self
    }

    /// Sets `name: <attempt number>` (0 for the first try) on every attempt.
    pub fn attempt_header(mut self, name: HeaderName) -> Self {
        self.attempt_header = Some(name);
        self
    }

    /// Sets `name` to one random value per logical request, the same on every attempt (kept when
    /// the request already has it), so that a server that deduplicates on it runs the request once.
    /// The value is 128 random bits in hex from `fastrand`: unique in practice, not unguessable
    /// (set your own key when it must be).
    pub fn idempotency_header(mut self, name: HeaderName) -> Self {
        self.idempotency_header = Some(name);
        self
    }

    /// When a circuit breaker inside this layer refuses an attempt ([`CircuitOpen`]) and lets its
    /// next probe through within `max_wait`, waits for it and tries again (an attempt of its own,
    /// not drawn from the budget). Off by default: the rejection goes back to the caller at once.
    ///
    /// [`CircuitOpen`]: gentlify_core::error::CircuitOpen
    pub fn wait_for_probe(mut self, max_wait: Duration) -> Self {
        self.wait_for_probe = Some(max_wait);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<RetryLayer, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        let b = &self.backoff;
        if b.base > b.max {
            return Err(ConfigError::BaseAboveCap {
                base: b.base,
                max: b.max,
            });
        }
        if !b.multiplier.is_finite() || b.multiplier < 1.0 {
            return Err(ConfigError::Multiplier(b.multiplier));
        }
        if self.max_total_time == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroDuration("max_total_time"));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroDuration("attempt_timeout"));
        }
        let feedback = self.feedback.unwrap_or_default();
        let budget = match self.budget {
            BudgetChoice::Handle => Some(feedback.shared(RetryBudget::default)),
            BudgetChoice::Given(budget) => Some(budget),
            BudgetChoice::Disabled => None,
        };
        Ok(RetryLayer {
            config: Arc::new(Config {
                feedback,
                budget,
                backoff: self.backoff,
                max_attempts: self.max_attempts,
                max_total_time: self.max_total_time,
                max_server_delay: self.max_server_delay,
                attempt_timeout: self.attempt_timeout,
                body_prefix_bytes: self.body_prefix_bytes,
                attempt_header: self.attempt_header,
                idempotency_header: self.idempotency_header,
                wait_for_probe: self.wait_for_probe,
            }),
        })
    }
}
