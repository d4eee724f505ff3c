//! The service: admission in `poll_ready`, the permit into the request's slot in `call`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use gentlify_core::{BoxError, Feedback, PauseWait, Slot};
use http_body::Body;
use tokio::time::Sleep;
use tower_service::Service;

use crate::future::{ResponseFuture, Slotted, Waiting};
use crate::limiter::{Acquire, ConcurrencySnapshot, Limiter, Permit, Rejection};
use crate::solo::{PermitBody, Solo};

/// Limits the requests in flight to the inner service to an adaptive limit. Made by
/// [`AdaptiveConcurrencyLayer`](crate::AdaptiveConcurrencyLayer); see the crate docs.
///
/// Admission is decided in `poll_ready`, as in tower's `ConcurrencyLimit`: a service that returns
/// `Ready` holds a permit, which `call` moves into the request's [`Slot`] (or, for a limiter alone
/// on a handle of its own, into the response future and its [`PermitBody`]); the permit comes
/// back when the slot ends (the end of the final response's body). Waiters are served in arrival
/// order. A rejection ([`AcquireTimeout`], [`QueueFull`]) leaves `poll_ready` `Ok` and comes out
/// of the response future, as with tower's `LoadShed`, so a `Buffer` in front keeps working.
///
/// The inner service must be `Clone`: a request that reaches `call` without a permit (an instance
/// reused while its previous request, possibly a retry's, still holds one) waits for its permit
/// in the response future, with a clone of the inner service.
///
/// [`AcquireTimeout`]: gentlify_core::error::AcquireTimeout
/// [`QueueFull`]: gentlify_core::error::QueueFull
pub struct AdaptiveConcurrency<S> {
    inner: S,
    acquire: Acquire,
    admission: Admission,
    /// The slot this instance was last called with: while it holds this limiter's permit, a
    /// `poll_ready` is taken to be its retry's and admitted without a second permit.
    last_slot: Option<Slot>,
    pause: Option<PauseWait>,
    /// The permit admitted was taken without the lock far below the limit: sent without a
    /// slot, its request may go without a clock read ([`Limiter::send_time`]).
    far_below: bool,
}

enum Admission {
    /// Nothing taken yet.
    Idle,
    /// Queued, or about to try.
    Acquiring,
    /// Admitted; waiting for the pacing interval.
    Pacing(Option<Permit>, Pin<Box<Sleep>>),
    /// Admitted: with a permit, or without one when the last request's slot holds it (a retry).
    Admitted(Option<Permit>),
    /// Rejected; `call` returns the error.
    Rejected(Rejection),
}

impl<S> AdaptiveConcurrency<S> {
    pub(crate) fn new(inner: S, limiter: &Arc<Limiter>) -> Self {
        AdaptiveConcurrency {
            inner,
            acquire: Acquire::new(limiter),
            admission: Admission::Idle,
            last_slot: None,
            pause: None,
            far_below: false,
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

    /// The limiter's state (shared with every service from the same layer value).
    pub fn snapshot(&self) -> ConcurrencySnapshot {
        self.acquire.limiter().snapshot()
    }

    fn limiter(&self) -> &Arc<Limiter> {
        self.acquire.limiter()
    }

    /// True when the request this instance last sent still holds this limiter's permit: the
    /// coming call is (taken to be) its retry.
    fn last_request_holds(&self) -> bool {
        let key = self.limiter().key;
        self.last_slot.as_ref().is_some_and(|slot| slot.holds(key))
    }
}

/// Waits while the handle's pause gate holds dispatch; allocates only while it does.
pub(crate) fn poll_pause(
    feedback: &Feedback,
    pause: &mut Option<PauseWait>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if feedback.pause_gate().paused_until().is_none() {
        *pause = None;
        return Poll::Ready(());
    }
    pause
        .get_or_insert_with(|| PauseWait::new(feedback.clone()))
        .poll_wait(cx)
}

fn paced(permit: Option<Permit>, at: Option<tokio::time::Instant>) -> Admission {
    match at {
        Some(at) => Admission::Pacing(permit, Box::pin(tokio::time::sleep_until(at))),
        None => Admission::Admitted(permit),
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AdaptiveConcurrency<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = http::Response<PermitBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, http::Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let (Admission::Idle, None) = (&self.admission, &self.pause) {
            if self
                .limiter()
                .feedback
                .pause_gate()
                .paused_until()
                .is_none()
                && !self.last_request_holds()
            {
                // The common path: a new request, no pause, a permit free without the lock.
                if let Some((permit, far_below)) = self.acquire.try_acquire_fast() {
                    let idle =
                        std::mem::replace(&mut self.admission, Admission::Admitted(Some(permit)));
                    // `Idle` (matched above) owns nothing: no drop glue to run for it.
                    std::mem::forget(idle);
                    self.far_below = far_below;
                    return self.inner.poll_ready(cx).map_err(Into::into);
                }
            }
        }
        self.far_below = false;
        // The pause gate holds everyone, admitted or not: the server said wait.
        ready!(poll_pause(
            &self.acquire.limiter().feedback,
            &mut self.pause,
            cx
        ));
        loop {
            match &mut self.admission {
                Admission::Idle => {
                    if self.last_request_holds() {
                        let at = self.limiter().reserve_dispatch();
                        self.admission = paced(None, at);
                    } else {
                        self.admission = Admission::Acquiring;
                    }
                }
                Admission::Acquiring => {
                    self.admission = match ready!(self.acquire.poll_acquire(cx)) {
                        Ok((permit, at)) => paced(Some(permit), at),
                        Err(rejection) => Admission::Rejected(rejection),
                    };
                }
                Admission::Pacing(permit, sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.admission = Admission::Admitted(permit.take());
                }
                Admission::Admitted(_) => break,
                Admission::Rejected(_) => return Poll::Ready(Ok(())),
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match std::mem::replace(&mut self.admission, Admission::Idle) {
            Admission::Admitted(Some(permit))
                if self.limiter().alone()
                    && Slot::from_extensions(request.extensions()).is_none() =>
            {
                // No other layer can share this request: no slot to make (see `solo`).
                self.last_slot = None;
                let far_below = std::mem::take(&mut self.far_below);
                let sent = self.limiter().send_time(far_below);
                let solo = Solo::new(permit, sent);
                // The inner service's future is written in place here: built after a branch
                // that joins the other paths, it would be copied (twice) into the caller's.
                ResponseFuture::solo(self.inner.call(request), solo)
            }
            admission => match self.admit_slotted(admission, request.extensions_mut()) {
                Ok(slotted) => {
                    // The layers inside share the slot's dispatch while the call runs.
                    let sending = slotted.dispatched.sending();
                    let future = self.inner.call(request);
                    drop(sending);
                    ResponseFuture::called(future, slotted)
                }
                Err(Unsent::Rejected(error)) => ResponseFuture::rejected(error),
                Err(Unsent::Waiting(waiting)) => ResponseFuture::waiting(waiting, request),
            },
        }
    }
}

/// A request `call` does not send now.
enum Unsent<S, Req> {
    Rejected(BoxError),
    Waiting(Box<Waiting<S, Req>>),
}

impl<S: Clone> AdaptiveConcurrency<S> {
    /// `call` for every request but a limiter alone's with its permit: the request gets a slot
    /// (or has one), the permit goes into it, and the attempt is dispatched; or the request is
    /// rejected, or waits for its permit in the response future.
    #[inline(never)]
    fn admit_slotted<Req>(
        &mut self,
        admission: Admission,
        extensions: &mut http::Extensions,
    ) -> Result<Slotted, Unsent<S, Req>> {
        let permit = match admission {
            Admission::Rejected(rejection) => return Err(Unsent::Rejected(rejection.into())),
            Admission::Admitted(permit) | Admission::Pacing(permit, _) => permit,
            Admission::Idle | Admission::Acquiring => {
                // `call` without a `Ready`: give up any place in the queue and wait in the future.
                self.acquire.cancel();
                None
            }
        };
        self.far_below = false;
        let limiter = self.acquire.limiter();
        let (mut slot, mut end) = Slot::get_or_insert(extensions, &limiter.feedback);
        if end.is_none() && slot.is_ended() {
            // A request cloned with the extensions of one whose slot already ended (a retry
            // outside every gentlify layer): a new logical request as far as permits go.
            let (fresh, fresh_end) = Slot::new(&limiter.feedback);
            extensions.insert(fresh.clone());
            (slot, end) = (fresh, Some(fresh_end));
        }
        let retry = end.is_none() && slot.holds(limiter.key);
        let permit = if retry {
            // The request already holds a permit of this limiter: give back the one taken for
            // it (if any) and send it under the one it holds.
            drop(permit);
            None
        } else if permit.is_some() {
            permit
        } else {
            // Admitted without a permit, but not a retry: this instance was reused for another
            // request. It waits for its permit in the response future, in the FIFO queue.
            let clone = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, clone);
            self.last_slot = Some(slot.clone());
            return Err(Unsent::Waiting(Waiting::new(limiter, ready, slot, end)));
        };
        let dispatched = slot.dispatch(&limiter.feedback);
        if let Some(permit) = permit {
            // The permit knows when its request left the limiter (not the pacing wait before).
            permit.hold_in(&slot, Some(dispatched.sent_at()));
        }
        let limiter = Arc::clone(limiter);
        // The slot itself is kept (no clone to take and give back per request).
        self.last_slot = Some(slot);
        Ok(Slotted {
            dispatched,
            end,
            limiter,
        })
    }
}

impl<S: Clone> Clone for AdaptiveConcurrency<S> {
    fn clone(&self) -> Self {
        AdaptiveConcurrency {
            inner: self.inner.clone(),
            acquire: Acquire::new(self.limiter()),
            admission: Admission::Idle,
            // Copied, so that a retry made through a clone taken after the call (as tower's
            // `Retry` does) is still recognised.
            last_slot: self.last_slot.clone(),
            pause: None,
            far_below: false,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AdaptiveConcurrency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admission = match &self.admission {
            Admission::Idle => "idle",
            Admission::Acquiring => "acquiring",
            Admission::Pacing(..) => "pacing",
            Admission::Admitted(Some(_)) => "admitted",
            Admission::Admitted(None) => "admitted (retry)",
            Admission::Rejected(_) => "rejected",
        };
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("admission", &admission)
            .field("limiter", self.limiter())
            .finish()
    }
}
