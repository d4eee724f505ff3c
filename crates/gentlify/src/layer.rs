//! The layer a [`Throttle`](crate::Throttle) builds.

use std::fmt;
use std::sync::Arc;

use gentlify_core::{Feedback, Snapshot};
use tower_layer::Layer;

use crate::breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use crate::budget::{JsonEstimate, TokenBudget, TokenBudgetLayer};
use crate::concurrency::{AdaptiveConcurrencyLayer, ConcurrencySnapshot};
use crate::estimate::StackEstimate;
use crate::event::Observer;
use crate::headers::HeaderFeedbackLayer;
use crate::retry::RetryLayer;
use crate::service::Throttled;

/// The full gentlify stack as one [`Layer`]: breaker → adaptive concurrency → retry → token
/// budget → header feedback, all on one [`Feedback`] handle. Made by
/// [`Throttle::build`](crate::Throttle::build).
///
/// Like each layer it is made of, one `ThrottleLayer` value owns one set of limits: every service
/// it wraps (and every clone of those) shares the same limiter, budget and breaker. Cloning the
/// layer is cheap and keeps sharing them.
///
/// ```
/// use std::convert::Infallible;
/// use gentlify::Throttle;
/// use tower::ServiceBuilder;
///
/// let throttle = Throttle::new().build().unwrap();
/// let client = ServiceBuilder::new()
///     .layer(throttle.clone())
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::from("ok")))
///     });
/// assert_eq!(throttle.snapshot().open_slots, 0);
/// # drop(client);
/// ```
#[derive(Clone)]
pub struct ThrottleLayer<E = JsonEstimate> {
    feedback: Feedback,
    breaker: CircuitBreakerLayer,
    concurrency: AdaptiveConcurrencyLayer,
    retry: RetryLayer,
    budget: TokenBudgetLayer<StackEstimate<E>>,
    headers: HeaderFeedbackLayer,
    observer: Option<Arc<Observer>>,
}

impl<E> ThrottleLayer<E> {
    pub(crate) fn from_parts(
        feedback: Feedback,
        breaker: CircuitBreakerLayer,
        concurrency: AdaptiveConcurrencyLayer,
        retry: RetryLayer,
        budget: TokenBudgetLayer<StackEstimate<E>>,
        headers: HeaderFeedbackLayer,
        observer: Option<Arc<Observer>>,
    ) -> Self {
        ThrottleLayer {
            feedback,
            breaker,
            concurrency,
            retry,
            budget,
            headers,
            observer,
        }
    }

    /// The handle every layer of the stack shares (to read it, register a
    /// [`Controller`](crate::Controller), or build another layer on it).
    pub fn feedback(&self) -> &Feedback {
        &self.feedback
    }

    /// The whole stack at one instant: open slots, attempts by class, pause, circuit state, and a
    /// part per layer (`"concurrency"`, `"budget"`, `"breaker"`, `"headers"`...).
    pub fn snapshot(&self) -> Snapshot {
        self.feedback.snapshot()
    }

    /// The adaptive limiter's state now.
    pub fn concurrency(&self) -> ConcurrencySnapshot {
        self.concurrency.snapshot()
    }

    /// The limiter, e.g. to [`set_limit`](AdaptiveConcurrencyLayer::set_limit) by hand.
    pub fn concurrency_layer(&self) -> &AdaptiveConcurrencyLayer {
        &self.concurrency
    }

    /// The breaker's handle: its state, and forcing it open or closed by hand.
    pub fn breaker(&self) -> CircuitBreakerHandle {
        self.breaker.handle()
    }

    /// The budgets every request is charged to (the stack's own first, then the shared ones).
    pub fn budgets(&self) -> &[TokenBudget] {
        self.budget.budgets()
    }

    /// Sets the metrics' gauges (limit, in flight, remaining tokens, open slots) from the stack's
    /// state now. They are also set after every attempt; call this from a timer to keep them
    /// fresh while the stack is idle.
    #[cfg(feature = "metrics")]
    pub fn record_gauges(&self) {
        if let Some(metrics) = self.observer.as_ref().and_then(|o| o.metrics.as_ref()) {
            metrics.gauges(&self.concurrency.snapshot(), &self.feedback);
        }
    }
}

impl<S, E: Clone> Layer<S> for ThrottleLayer<E> {
    type Service = Throttled<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = self.headers.layer(inner);
        let inner = self.budget.layer(inner);
        let inner = self.retry.layer(inner);
        let inner = self.concurrency.layer(inner);
        let inner = self.breaker.layer(inner);
        Throttled::new(inner, self.observer.clone())
    }
}

impl<E> fmt::Debug for ThrottleLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("feedback", &self.feedback)
            .field("breaker", &self.breaker)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("headers", &self.headers)
            .field("observer", &self.observer)
            .finish()
    }
}
