//! Client-side, closed-loop throttling for rate-limited APIs (LLM APIs first), as Tower middleware.
//!
//! DOC_EXAMPLE

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod builder_ext;
mod error;
mod event;
pub mod future;
pub mod group;
mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;
mod service;
mod throttle;

/// The shared handle, the slot, outcome classes and typed rejections
/// (the `gentlify-core` crate).
pub mod core {
    pub use gentlify_core::*;
}

/// Adaptive concurrency limiting (the `gentlify-concurrency` crate).
pub mod concurrency {
    pub use gentlify_concurrency::*;
}

/// Retries inside the request's slot (the `gentlify-retry` crate).
pub mod retry {
    pub use gentlify_retry::*;
}

/// Requests and tokens per window (the `gentlify-budget` crate).
pub mod budget {
    pub use gentlify_budget::*;
}

/// Provider rate-limit headers fed back into the handle (the `gentlify-headers` crate).
pub mod headers {
    pub use gentlify_headers::*;
}

/// The circuit breaker (the `gentlify-breaker` crate).
pub mod breaker {
    pub use gentlify_breaker::*;
}

/// The types most stacks need, for a glob import.
pub mod prelude {
    pub use crate::breaker::CircuitBreakerLayer;
    pub use crate::budget::{Limit, TokenBudget, TokenBudgetLayer};
    pub use crate::concurrency::AdaptiveConcurrencyLayer;
    pub use crate::headers::HeaderFeedbackLayer;
    pub use crate::retry::RetryLayer;
    pub use crate::{Feedback, ServiceBuilderExt, Throttle, ThrottleGroup, ThrottleLayer};
}

pub use builder_ext::ServiceBuilderExt;
pub use error::ConfigError;
pub use event::Event;
pub use group::{ThrottleGroup, ThrottleGroupBuilder};
pub use layer::ThrottleLayer;
pub use service::{Stack, Throttled};
pub use throttle::Throttle;

pub use gentlify_breaker::{CircuitBreaker, CircuitBreakerLayer};
pub use gentlify_budget::{Limit, TokenBudget, TokenBudgetLayer};
pub use gentlify_concurrency::{AdaptiveConcurrency, AdaptiveConcurrencyLayer};
pub use gentlify_core::{BoxError, Class, Controller, Feedback, Outcome, Slot, SlotBody, Snapshot};
pub use gentlify_headers::{HeaderFeedback, HeaderFeedbackLayer};
pub use gentlify_retry::{Retry, RetryLayer};
