//! The service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gentlify_core::{BoxError, CircuitState, Slot, SlotBody, Tracked};
use http_body::Body;
use tower_service::Service;

use crate::breaker::{expiry, Admission, Breaker, CircuitBreakerHandle};
use crate::future::ResponseFuture;

/// A circuit breaker around `S`: fails fast with a
/// [`CircuitOpen`](gentlify_core::error::CircuitOpen) while the upstream is down, then lets a few
/// probes test whether it is back.
///
/// Admission is decided in `poll_ready`, as tower's `load_shed` does: when the breaker rejects,
/// `poll_ready` is ready at once and `call` returns a future that fails at once, without calling
/// the inner service (under [`wait_while_open`], `poll_ready` is pending until the breaker admits
/// the call or the wait's bound is reached). While closed, admission is one atomic load. The
/// outcomes that move the breaker are not read from this service's futures but heard on the
/// [`Feedback`] handle, so every attempt counts, including the attempts of a retry layer below
/// the breaker.
///
/// Made by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer); clones share the breaker.
///
/// [`Feedback`]: gentlify_core::Feedback
/// [`wait_while_open`]: crate::CircuitBreakerBuilder::wait_while_open
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
    admission: Option<Admission>,
    /// While a call waits for an open breaker ([`wait_while_open`]): its deadline and timer.
    ///
    /// [`wait_while_open`]: crate::CircuitBreakerBuilder::wait_while_open
    wait: Option<Box<Wait>>,
}

/// One call's wait for admission: its registration with the breaker (withdrawn on drop), its
/// deadline, and the timer for the next moment the breaker may admit it on its own (the open
/// period's end, a hung probe's deadline) or the deadline, whichever is first.
struct Wait {
    breaker: Arc<Breaker>,
    id: u64,
    deadline: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.breaker.unwait(self.id);
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("id", &self.id)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn from_breaker(inner: S, breaker: Arc<Breaker>) -> Self {
        CircuitBreaker {
            inner,
            breaker,
            admission: None,
            wait: None,
        }
    }

    /// Admitted after a wait: withdraws it (out of the admitted path, which only tests for it).
    #[cold]
    #[inline(never)]
    fn end_wait(&mut self) {
        self.wait = None;
    }

    /// After a refusal: `Some` to return (ready, `call` gives the refusal; or pending, waiting
    /// for admission under [`wait_while_open`]), `None` once admitted after a wait.
    ///
    /// [`wait_while_open`]: crate::CircuitBreakerBuilder::wait_while_open
    #[cold]
    fn poll_refused(&mut self, cx: &mut Context<'_>) -> Option<Poll<Result<(), BoxError>>> {
        let Some(max) = self.breaker.open_wait() else {
            // Fail fast: `call` gives the rejection.
            return Some(Poll::Ready(Ok(())));
        };
        loop {
            // Read before the admission it may wait on, so that no change after it is missed.
            let generation = self.breaker.generation();
            let admission = self.admission.insert(self.breaker.admit());
            let Admission::Reject(error) = admission else {
                self.wait = None;
                return None;
            };
            let retry_in = error.retry_in();
            if self.breaker.state() == CircuitState::ForcedOpen {
                self.wait = None;
                return Some(Poll::Ready(Ok(())));
            }
            let now = tokio::time::Instant::now();
            let wait = self.wait.get_or_insert_with(|| {
                let deadline = expiry(now, max);
                Box::new(Wait {
                    id: self.breaker.waiter_id(),
                    breaker: Arc::clone(&self.breaker),
                    deadline,
                    timer: Box::pin(tokio::time::sleep_until(deadline)),
                })
            });
            if now >= wait.deadline {
                // Waited long enough: `call` gives the last rejection.
                self.wait = None;
                return Some(Poll::Ready(Ok(())));
            }
            // Wake when the breaker could admit on its own (at least 1 ms on, so that a refusal
            // with nothing to wait for cannot spin), or at the deadline.
            let wake_at = expiry(now, retry_in.max(Duration::from_millis(1))).min(wait.deadline);
            if wait.timer.deadline() != wake_at {
                wait.timer.as_mut().reset(wake_at);
            }
            if wait.timer.as_mut().poll(cx).is_pending()
                && self.breaker.wait(wait.id, generation, cx.waker())
            {
                // A refusal is only kept for `call`: a pending call admits itself again.
                self.admission = None;
                return Some(Poll::Pending);
            }
        }
    }

    /// A handle to read and steer the breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: Arc::clone(&self.breaker),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        // An admission (and its probe permit) belongs to the clone that was made ready.
        CircuitBreaker {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            admission: None,
            wait: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("admission", &self.admission)
            .field("wait", &self.wait)
            .finish()
    }
}

impl<S, ReqBody, B> Service<http::Request<ReqBody>> for CircuitBreaker<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = http::Response<SlotBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let admission = self.admission.get_or_insert_with(|| self.breaker.admit());
        if let Admission::Reject(_) = admission {
            if let Some(ready) = self.poll_refused(cx) {
                return ready;
            }
        } else if self.wait.is_some() {
            self.end_wait();
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let admission = self
            .admission
            .take()
            .unwrap_or_else(|| self.breaker.admit());
        let permit = match admission {
            Admission::Reject(rejection) => return ResponseFuture::rejected(rejection),
            Admission::Pass => None,
            Admission::Probe(permit) => Some(permit),
        };
        let feedback = self.breaker.feedback();
        let (slot, end) = Slot::get_or_insert(request.extensions_mut(), feedback);
        if let Some(permit) = permit {
            // A retry of a request that already holds a probe permit keeps that one; the new
            // permit is dropped here, which gives it back.
            if !slot.holds(self.breaker.key()) {
                slot.hold(self.breaker.key(), Box::new(permit));
            }
        }
        let dispatched = slot.into_dispatched(feedback);
        let sending = dispatched.sending();
        let future = self.inner.call(request);
        drop(sending);
        ResponseFuture::called(Tracked::new(future, dispatched, end))
    }
}
