//! Configuration mistakes, reported by [`Throttle::build`](crate::Throttle::build).
//!
//! The rejections of requests (an open circuit, an acquire timeout, a budget wait too long...)
//! are gentlify-core's typed errors, re-exported in [`crate::core::error`].

/// What is wrong with a [`Throttle`](crate::Throttle)'s settings.
///
/// ```
/// use gentlify::{ConfigError, Throttle};
///
/// let err = Throttle::new().concurrency(|c| c.min(8).max(4)).build().unwrap_err();
/// assert!(matches!(err, ConfigError::Concurrency(_)));
/// assert!(err.to_string().starts_with("adaptive concurrency:"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The adaptive concurrency settings.
    #[error("adaptive concurrency: {0}")]
    Concurrency(#[from] crate::concurrency::BuildError),
    /// The retry settings.
    #[error("retry: {0}")]
    Retry(#[from] crate::retry::ConfigError),
    /// The token budget's limits.
    #[error("token budget: {0}")]
    Budget(#[from] crate::budget::BuildError),
    /// The circuit breaker settings.
    #[error("circuit breaker: {0}")]
    Breaker(#[from] crate::breaker::error::ConfigError),
    /// A layer given ready-built listens to another [`Feedback`](crate::Feedback) handle than
    /// the stack's: its permits and retries would not be seen by the rest of the stack.
    #[error("the {layer} layer given is built on another feedback handle than the stack's")]
    OtherHandle {
        /// `"concurrency"` or `"retry"`.
        layer: &'static str,
    },
    /// A group was asked to hold no stack at all.
    #[error("a group must hold at least one key")]
    ZeroKeys,
}
