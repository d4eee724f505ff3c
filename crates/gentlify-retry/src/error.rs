//! The errors of the retry layer.

use std::time::Duration;

/// One attempt took longer than the per-attempt timeout
/// ([`RetryLayerBuilder::attempt_timeout`](crate::RetryLayerBuilder::attempt_timeout)). It counts
/// as a failure and is retried like one; it reaches the caller (boxed) when no retry follows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempt timed out after {timeout:?}")]
pub struct AttemptTimeout {
    timeout: Duration,
}

impl AttemptTimeout {
    pub(crate) fn new(timeout: Duration) -> Self {
        AttemptTimeout { timeout }
    }

    /// The per-attempt timeout that elapsed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A configuration the [`RetryLayerBuilder`](crate::RetryLayerBuilder) or
/// [`RetryBudget::new`](crate::RetryBudget::new) refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_attempts` must be at least 1 (1 means: never retry).
    #[error("max_attempts must be at least 1")]
    ZeroAttempts,
    /// The backoff's base delay is above its cap.
    #[error("backoff base {base:?} is above its cap {max:?}")]
    BaseAboveCap {
        /// The base delay.
        base: Duration,
        /// The cap.
        max: Duration,
    },
    /// The backoff's multiplier must be finite and at least 1.
    #[error("backoff multiplier must be finite and >= 1, got {0}")]
    Multiplier(f64),
    /// A timeout or time limit of zero would fail every request.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The budget's deposits must live between 1 and 60 seconds (Finagle's bounds).
    #[error("retry budget ttl must be between 1 s and 60 s, got {0:?}")]
    BudgetTtl(Duration),
    /// The budget's ratio must be between 0 and 1000.
    #[error("retry budget ratio must be between 0 and 1000, got {0}")]
    BudgetRatio(f32),
    /// The budget's reserve per second is too large.
    #[error("retry budget reserve of {0} per second is too large")]
    BudgetReserve(u32),
}
