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
use crate::toggle::{Boxed, BoxedCall, Toggled};

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
    pub(crate) feedback: Feedback,
    pub(crate) breaker: CircuitBreakerLayer,
    pub(crate) concurrency: AdaptiveConcurrencyLayer,
    pub(crate) retry: RetryLayer,
    pub(crate) budget: TokenBudgetLayer<StackEstimate<E>>,
    pub(crate) headers: HeaderFeedbackLayer,
    pub(crate) observer: Option<Arc<Observer>>,
    pub(crate) stacked: Stacked,
}

/// Which parts are in the request's path (the others are switched off, and their layer values
/// above only answer the accessors).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stacked {
    pub(crate) breaker: bool,
    pub(crate) concurrency: bool,
    pub(crate) budget: bool,
    pub(crate) headers: bool,
}

impl<E> ThrottleLayer<E> {
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
    /// state now. See [`crate::metrics`] for when they are set otherwise, and why a timer
    /// ([`record_gauges_every`](ThrottleLayer::record_gauges_every)) is needed for exact values.
    #[cfg(feature = "metrics")]
    pub fn record_gauges(&self) {
        if let Some(observer) = &self.observer {
            observer.record_gauges();
        }
    }

    /// A task that sets the gauges every `period` (as [`record_gauges`](Self::record_gauges)),
    /// for as long as the stack exists: spawn it once. It holds no strong reference, and ends
    /// when every clone of this layer and every service it made are dropped (or at once if
    /// metrics are off for this stack).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let throttle = gentlify::Throttle::new().name("chat").metrics(true).build().unwrap();
    /// tokio::spawn(throttle.record_gauges_every(Duration::from_secs(1)));
    /// # }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn record_gauges_every(
        &self,
        period: std::time::Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let observer = self
            .observer
            .as_ref()
            .filter(|o| o.metrics.is_some())
            .map(Arc::downgrade);
        async move {
            let Some(observer) = observer else { return };
            let mut timer = tokio::time::interval(period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                match observer.upgrade() {
                    Some(observer) => observer.record_gauges(),
                    None => return,
                }
            }
        }
    }
}

impl<S, E: Clone> Layer<S> for ThrottleLayer<E> {
    type Service = Throttled<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        fn part<L: Layer<S>, S>(on: bool, layer: &L, inner: S) -> Toggled<L::Service, S> {
            if on {
                Toggled::On(layer.layer(inner))
            } else {
                Toggled::Off(inner)
            }
        }
        let on = self.stacked;
        let inner = part(on.headers, &self.headers, inner);
        let inner = if on.budget {
            Toggled::On(Boxed::new(self.budget.layer(inner)))
        } else {
            Toggled::Off(inner)
        };
        let inner = BoxedCall::new(self.retry.layer(inner));
        let inner = part(on.concurrency, &self.concurrency, inner);
        let inner = part(on.breaker, &self.breaker, inner);
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
            .field("stacked", &self.stacked)
            .finish()
    }
}
