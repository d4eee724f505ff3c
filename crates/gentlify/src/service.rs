//! The service a [`ThrottleLayer`](crate::ThrottleLayer) makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use gentlify_core::error::is_local_rejection;
use gentlify_core::BoxError;
use tower_service::Service;

use crate::breaker::CircuitBreaker;
use crate::budget::{Budgeted, JsonEstimate};
use crate::concurrency::AdaptiveConcurrency;
use crate::estimate::StackEstimate;
use crate::event::Observer;
use crate::future::ResponseFuture;
use crate::headers::HeaderFeedback;
use crate::retry::Retry;
use crate::toggle::{Boxed, BoxedCall, Toggled};

/// The layers of the full stack, outermost first, around the client `S`; each part that can be
/// left out is [`Toggled`]: a part with nothing to do is not in the request's path.
pub type Stack<S, E = JsonEstimate> =
    Toggled<CircuitBreaker<AfterBreaker<S, E>>, AfterBreaker<S, E>>;

/// The stack under the breaker: the concurrency limiter around the rest, whose future is
/// [`BoxedCall`] (the request's state for all its attempts, which the limiter, the breaker and
/// every caller would otherwise move again).
pub type AfterBreaker<S, E = JsonEstimate> = Toggled<
    AdaptiveConcurrency<BoxedCall<AfterConcurrency<S, E>>>,
    BoxedCall<AfterConcurrency<S, E>>,
>;

/// The stack under the concurrency limiter: the retry layer, always there (switched off, it
/// sends each request once and still reads a 429's body for a quota gone for good).
pub type AfterConcurrency<S, E = JsonEstimate> = Retry<AfterRetry<S, E>>;

/// The stack under the retry layer: the token budget, [`Boxed`] (its future and body are much
/// larger than the rest of the stack's, which would otherwise move them at every step, switched
/// on or not).
pub type AfterRetry<S, E = JsonEstimate> =
    Toggled<Boxed<Budgeted<AfterBudget<S>, StackEstimate<E>>>, AfterBudget<S>>;

/// The stack under the token budget: the header feedback layer around the client.
pub type AfterBudget<S> = Toggled<HeaderFeedback<S>, S>;

/// The full gentlify stack around a client `S`: breaker → adaptive concurrency → retry → token
/// budget → header feedback → `S`. Made by [`ThrottleLayer`](crate::ThrottleLayer).
///
/// Requests are `http::Request<B>`; a retried request's body must be `Clone` (or wrapped by
/// [`ReplayBodyLayer`](crate::retry::ReplayBodyLayer)) and readable by the budget's estimate
/// (`String`, `Bytes`, `Vec<u8>`... with the default [`JsonEstimate`]). Errors are [`BoxError`]s:
/// downcast to the typed local rejections of [`crate::core::error`].
pub struct Throttled<S, E = JsonEstimate> {
    inner: Stack<S, E>,
    observer: Option<Arc<Observer>>,
}

impl<S, E> Throttled<S, E> {
    pub(crate) fn new(inner: Stack<S, E>, observer: Option<Arc<Observer>>) -> Self {
        Throttled { inner, observer }
    }

    /// The layers inside.
    pub fn get_ref(&self) -> &Stack<S, E> {
        &self.inner
    }
}

impl<S, E, Request> Service<Request> for Throttled<S, E>
where
    Stack<S, E>: Service<Request, Error = BoxError>,
{
    type Response = <Stack<S, E> as Service<Request>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<Stack<S, E> as Service<Request>>::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                if let Some(observer) = &self.observer {
                    if is_local_rejection(&*error) {
                        observer.rejected(&*error);
                    }
                }
                Poll::Ready(Err(error))
            }
            other => other,
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        ResponseFuture::new(self.inner.call(request), self.observer.clone())
    }
}

impl<S: Clone, E: Clone> Clone for Throttled<S, E> {
    fn clone(&self) -> Self {
        Throttled {
            inner: self.inner.clone(),
            observer: self.observer.clone(),
        }
    }
}

impl<S: fmt::Debug, E> fmt::Debug for Throttled<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttled")
            .field("inner", &self.inner)
            .finish()
    }
}
