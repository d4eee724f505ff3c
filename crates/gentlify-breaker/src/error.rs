//! Errors: the configuration mistakes [`CircuitBreakerBuilder::build`] reports.
//!
//! The breaker's rejection itself is [`gentlify_core::error::CircuitOpen`], re-exported here,
//! shared with the other gentlify layers so a retry layer can tell it apart.
//!
//! [`CircuitBreakerBuilder::build`]: crate::CircuitBreakerBuilder::build

pub use gentlify_core::error::CircuitOpen;

/// A configuration the breaker cannot run with.
///
/// ```
/// use gentlify_breaker::{error::ConfigError, CircuitBreakerLayer};
///
/// let err = CircuitBreakerLayer::builder().failure_rate_threshold(1.5).build().unwrap_err();
/// assert!(matches!(err, ConfigError::Rate { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate or fraction outside the range it must lie in.
    #[error("{name} must be in {range}, got {value}")]
    Rate {
        /// The setting.
        name: &'static str,
        /// The allowed range, as text.
        range: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count or duration that must not be zero.
    #[error("{name} must not be zero")]
    Zero {
        /// The setting.
        name: &'static str,
    },
}
