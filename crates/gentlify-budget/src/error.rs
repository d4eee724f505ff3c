//! Errors: configuration mistakes reported by the builder. The rejections of requests are
//! gentlify-core's [`RequestTooLarge`](gentlify_core::error::RequestTooLarge) and
//! [`BudgetWaitTooLong`](gentlify_core::error::BudgetWaitTooLong), shared by every layer.

use crate::limit::Limit;

/// What is wrong with a budget's configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The safety ratio must be in `(0, 1]`.
    #[error("safety ratio {0} is not in (0, 1]")]
    SafetyRatio(f64),
    /// More limits than [`MAX_LIMITS`](crate::MAX_LIMITS).
    #[error("{0} limits, more than the {max} a budget holds", max = crate::MAX_LIMITS)]
    TooManyLimits(usize),
    /// A limit with a zero amount or window, or a dimension the budget cannot count
    /// (concurrent requests belong to the concurrency layer; content bytes are not counted).
    #[error("unsupported limit: {0}")]
    Limit(Limit),
}
