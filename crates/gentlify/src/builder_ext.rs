//! [`ServiceBuilderExt`]: the gentlify layers as `ServiceBuilder` methods, for stacking by hand.

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::breaker::CircuitBreakerLayer;
use crate::budget::TokenBudgetLayer;
use crate::concurrency::AdaptiveConcurrencyLayer;
use crate::headers::HeaderFeedbackLayer;
use crate::layer::ThrottleLayer;
use crate::retry::RetryLayer;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds gentlify's layers to a [`ServiceBuilder`], as tower-http's `ServiceBuilderExt` does for
/// its own.
///
/// For stacks put together by hand: build every layer on the **same**
/// [`Feedback`](crate::Feedback) handle, so that they share the slot's permit, the classifier, the pause
/// gate and the circuit state. The order is yours; the contract (a retry keeps its permit, every
/// attempt reaches every controller) holds in any order, because it travels in the slot.
///
/// ```
/// use std::convert::Infallible;
/// use gentlify::prelude::*;
/// use gentlify::{budget::TokenBudget, Feedback, ServiceBuilderExt};
/// use tower::ServiceBuilder;
///
/// let feedback = Feedback::builder().name("embeddings").build();
/// let client = ServiceBuilder::new()
///     .circuit_breaker(CircuitBreakerLayer::builder().feedback(feedback.clone()).build().unwrap())
///     .adaptive_concurrency(
///         AdaptiveConcurrencyLayer::builder().feedback(feedback.clone()).max(32).build().unwrap(),
///     )
///     .gentle_retry(RetryLayer::builder().feedback(feedback.clone()).build().unwrap())
///     .token_budget(
///         TokenBudgetLayer::new(TokenBudget::new([Limit::requests_per_minute(3_000)]).unwrap())
///             .feedback(feedback.clone()),
///     )
///     .header_feedback(HeaderFeedbackLayer::new().feedback(feedback.clone()))
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::from("ok")))
///     });
/// # drop(client);
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// The whole stack a [`Throttle`](crate::Throttle) built.
    fn throttle<E>(self, layer: ThrottleLayer<E>) -> ServiceBuilder<Stack<ThrottleLayer<E>, L>>;

    /// A [`CircuitBreakerLayer`].
    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;

    /// An [`AdaptiveConcurrencyLayer`].
    fn adaptive_concurrency(
        self,
        layer: AdaptiveConcurrencyLayer,
    ) -> ServiceBuilder<Stack<AdaptiveConcurrencyLayer, L>>;

    /// A gentlify [`RetryLayer`] (named so as not to clash with tower's `retry`).
    fn gentle_retry(self, layer: RetryLayer) -> ServiceBuilder<Stack<RetryLayer, L>>;

    /// A [`TokenBudgetLayer`].
    fn token_budget<E>(
        self,
        layer: TokenBudgetLayer<E>,
    ) -> ServiceBuilder<Stack<TokenBudgetLayer<E>, L>>;

    /// A [`HeaderFeedbackLayer`].
    fn header_feedback(
        self,
        layer: HeaderFeedbackLayer,
    ) -> ServiceBuilder<Stack<HeaderFeedbackLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn throttle<E>(self, layer: ThrottleLayer<E>) -> ServiceBuilder<Stack<ThrottleLayer<E>, L>> {
        self.layer(layer)
    }

    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(layer)
    }

    fn adaptive_concurrency(
        self,
        layer: AdaptiveConcurrencyLayer,
    ) -> ServiceBuilder<Stack<AdaptiveConcurrencyLayer, L>> {
        self.layer(layer)
    }

    fn gentle_retry(self, layer: RetryLayer) -> ServiceBuilder<Stack<RetryLayer, L>> {
        self.layer(layer)
    }

    fn token_budget<E>(
        self,
        layer: TokenBudgetLayer<E>,
    ) -> ServiceBuilder<Stack<TokenBudgetLayer<E>, L>> {
        self.layer(layer)
    }

    fn header_feedback(
        self,
        layer: HeaderFeedbackLayer,
    ) -> ServiceBuilder<Stack<HeaderFeedbackLayer, L>> {
        self.layer(layer)
    }
}
