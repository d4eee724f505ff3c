//! Errors: the boxed error type the layers return, and the typed local rejections they share.
//!
//! As in tower, layers that add kinds of error return [`BoxError`]; callers tell the kinds apart
//! with `downcast_ref`:
//!
//! ```
//! use std::time::Duration;
//! use gentlify_core::{error::CircuitOpen, BoxError};
//!
//! let err: BoxError = Box::new(CircuitOpen::new(Duration::from_secs(3)));
//! if let Some(open) = err.downcast_ref::<CircuitOpen>() {
//!     assert_eq!(open.retry_in(), Duration::from_secs(3));
//! }
//! assert!(gentlify_core::error::is_local_rejection(&*err));
//! ```

use std::error::Error;
use std::time::Duration;

use crate::quota::Dimension;

/// The error type of every gentlify layer, as in tower.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// No concurrency permit became free within the acquire timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no concurrency permit within {waited:?}")]
pub struct AcquireTimeout {
    waited: Duration,
}

impl AcquireTimeout {
    /// The rejection after waiting `waited`.
    pub fn new(waited: Duration) -> Self {
        AcquireTimeout { waited }
    }
    /// How long the request waited before it was rejected.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Too many requests were already waiting for a permit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the wait queue is full ({max_waiting} waiting)")]
pub struct QueueFull {
    max_waiting: usize,
}

impl QueueFull {
    /// The rejection by a queue bounded at `max_waiting`.
    pub fn new(max_waiting: usize) -> Self {
        QueueFull { max_waiting }
    }
    /// The queue's bound.
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }
}

/// The circuit breaker is open: the call was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; next probe in {retry_in:?}")]
pub struct CircuitOpen {
    retry_in: Duration,
}

impl CircuitOpen {
    /// The rejection, with the time until the breaker lets a probe through.
    pub fn new(retry_in: Duration) -> Self {
        CircuitOpen { retry_in }
    }
    /// How long until the breaker lets a probe through.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }
}

/// The token budget could not cover the request within the maximum wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dimension} budget would need a wait of {needed:?}, over the maximum of {max_wait:?}")]
pub struct BudgetWaitTooLong {
    dimension: Dimension,
    needed: Duration,
    max_wait: Duration,
}

impl BudgetWaitTooLong {
    /// The rejection: `dimension` would need `needed` to cover the request, over `max_wait`.
    pub fn new(dimension: Dimension, needed: Duration, max_wait: Duration) -> Self {
        BudgetWaitTooLong {
            dimension,
            needed,
            max_wait,
        }
    }
    /// The dimension that was short.
    pub fn dimension(&self) -> Dimension {
        self.dimension
    }
    /// The wait that would have been needed (an estimate).
    pub fn needed(&self) -> Duration {
        self.needed
    }
    /// The configured maximum wait.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

/// The request alone costs more than the whole budget: it could never be admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request needs {cost} {dimension} but the whole budget is {capacity}")]
pub struct RequestTooLarge {
    dimension: Dimension,
    cost: u64,
    capacity: u64,
}

impl RequestTooLarge {
    /// The rejection of a request costing `cost` against a budget of `capacity`.
    pub fn new(dimension: Dimension, cost: u64, capacity: u64) -> Self {
        RequestTooLarge {
            dimension,
            cost,
            capacity,
        }
    }
    /// The dimension that is too small.
    pub fn dimension(&self) -> Dimension {
        self.dimension
    }
    /// The request's estimated cost.
    pub fn cost(&self) -> u64 {
        self.cost
    }
    /// The budget's whole capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// True when `error`, or an error in its `source()` chain, is one of gentlify's local rejections
/// (the request was refused on this side and never reached the server). Such errors are never
/// published as attempt outcomes and never retried.
pub fn is_local_rejection(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        if err.is::<AcquireTimeout>()
            || err.is::<QueueFull>()
            || err.is::<CircuitOpen>()
            || err.is::<BudgetWaitTooLong>()
            || err.is::<RequestTooLarge>()
        {
            return true;
        }
        current = err.source();
    }
    false
}
