//! Configuration errors of the [`AdaptiveConcurrencyBuilder`](crate::AdaptiveConcurrencyBuilder).
//!
//! The rejections a request can meet at run time are gentlify's shared ones,
//! [`AcquireTimeout`](gentlify_core::error::AcquireTimeout) and
//! [`QueueFull`](gentlify_core::error::QueueFull), returned by the response future as
//! [`BoxError`](gentlify_core::BoxError).

/// A setting the builder refused.
///
/// ```
/// use gentlify_concurrency::{AdaptiveConcurrencyLayer, BuildError};
///
/// let err = AdaptiveConcurrencyLayer::builder().min(10).max(5).build().unwrap_err();
/// assert_eq!(err, BuildError::MinAboveMax { min: 10, max: 5 });
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The minimum limit must be at least 1: with 0 nothing is ever sent again.
    #[error("the minimum limit must be at least 1")]
    ZeroMin,
    /// `min` is above `max`.
    #[error("the minimum limit {min} is above the maximum {max}")]
    MinAboveMax {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// The initial limit lies outside `[min, max]`.
    #[error("the initial limit {initial} is outside [{min}, {max}]")]
    InitialOutOfRange {
        /// The initial limit given.
        initial: usize,
        /// The minimum.
        min: usize,
        /// The maximum.
        max: usize,
    },
    /// A parameter of the algorithm or of the pacing is out of its range.
    #[error("{name} = {value} is out of range: {expected}")]
    OutOfRange {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The range it must lie in.
        expected: &'static str,
    },
}
