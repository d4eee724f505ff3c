//! The response future of [`AdaptiveConcurrency`](crate::AdaptiveConcurrency).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use gentlify_core::{settle, BoxError, Dispatched, EndReason, PauseWait, Slot, SlotEnd};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::limiter::{Acquire, Limiter};
use crate::service::poll_pause;
use crate::solo::{PermitBody, Solo};

pin_project! {
    /// The response future of [`AdaptiveConcurrency`](crate::AdaptiveConcurrency).
    ///
    /// On the common path it forwards the inner service's future and settles the attempt
    /// (publishes its outcome, wraps the body so the slot ends at the body's end). It resolves to
    /// a local rejection ([`AcquireTimeout`], [`QueueFull`]) when admission failed, and waits for
    /// a permit first when its request reached `call` without one. Dropping it while it waits
    /// gives up its place in the queue.
    ///
    /// [`AcquireTimeout`]: gentlify_core::error::AcquireTimeout
    /// [`QueueFull`]: gentlify_core::error::QueueFull
    pub struct ResponseFuture<F, S, Req> {
        #[pin]
        state: State<F, S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req> {
        // Sent without a slot (a limiter alone): the permit is here until the response comes.
        Solo {
            #[pin]
            future: F,
            solo: Solo,
        },
        // Sent with a slot: `Tracked`'s parts, apart so that the slot comes from the dispatch
        // (no clone of it to keep), and the limiter whose permit that slot holds: the permit
        // counts as reading its body once a success's head is in (`None` once marked).
        Called {
            #[pin]
            future: F,
            dispatched: Dispatched,
            end: Option<SlotEnd>,
            limiter: Option<Arc<Limiter>>,
        },
        Waiting { waiting: Box<Waiting<S, Req>> },
        Rejected { error: Option<BoxError> },
    }
}

/// A request `call` has given a slot and dispatched: what settles its attempt once the inner
/// service's future is made ([`ResponseFuture::called`]).
pub(crate) struct Slotted {
    pub(crate) dispatched: Dispatched,
    pub(crate) end: Option<SlotEnd>,
    /// The limiter whose permit the slot holds.
    pub(crate) limiter: Arc<Limiter>,
}

pub(crate) struct Waiting<S, Req> {
    acquire: Acquire,
    service: S,
    /// Given by `call` ([`ResponseFuture::waiting`]), which keeps the request until it knows
    /// where it goes; taken when it is sent.
    request: Option<Req>,
    slot: Slot,
    end: Option<SlotEnd>,
    phase: Phase,
    pause: Option<PauseWait>,
}

impl<S, Req> Waiting<S, Req> {
    /// A request admitted without a permit that is not a retry (an instance reused for another
    /// request): it waits for its permit in the response future, in the FIFO queue, then is
    /// sent with `service` (a ready clone).
    pub(crate) fn new(
        limiter: &Arc<Limiter>,
        service: S,
        slot: Slot,
        end: Option<SlotEnd>,
    ) -> Box<Self> {
        Box::new(Waiting {
            acquire: Acquire::new(limiter),
            service,
            request: None,
            slot,
            end,
            phase: Phase::Acquiring,
            pause: None,
        })
    }
}

enum Phase {
    Acquiring,
    Pacing(Pin<Box<Sleep>>),
    Ready,
}

impl<F, S, Req> ResponseFuture<F, S, Req> {
    #[inline]
    pub(crate) fn solo(future: F, solo: Solo) -> Self {
        ResponseFuture {
            state: State::Solo { future, solo },
        }
    }

    #[inline]
    pub(crate) fn called(future: F, slotted: Slotted) -> Self {
        let Slotted {
            dispatched,
            end,
            limiter,
        } = slotted;
        ResponseFuture {
            state: State::Called {
                future,
                dispatched,
                end,
                limiter: Some(limiter),
            },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn waiting(mut waiting: Box<Waiting<S, Req>>, request: Req) -> Self {
        waiting.request = Some(request);
        ResponseFuture {
            state: State::Waiting { waiting },
        }
    }
}

type Sent<F> = (F, Dispatched, Option<SlotEnd>, Arc<Limiter>);

impl<S, Req> Waiting<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    fn fail(&mut self, error: BoxError) -> Poll<Result<Sent<S::Future>, BoxError>> {
        if let Some(end) = self.end.take() {
            end.end(EndReason::Error);
        }
        Poll::Ready(Err(error))
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<Sent<S::Future>, BoxError>> {
        let limiter = Arc::clone(self.acquire.limiter());
        ready!(poll_pause(&limiter.feedback, &mut self.pause, cx));
        loop {
            match &mut self.phase {
                Phase::Acquiring => match ready!(self.acquire.poll_acquire(cx)) {
                    Ok((permit, at)) => {
                        permit.hold_in(&self.slot, None);
                        self.phase = match at {
                            Some(at) => Phase::Pacing(Box::pin(tokio::time::sleep_until(at))),
                            None => Phase::Ready,
                        };
                    }
                    Err(rejection) => return self.fail(rejection.into()),
                },
                Phase::Pacing(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.phase = Phase::Ready;
                }
                Phase::Ready => {
                    if let Err(error) = ready!(self.service.poll_ready(cx)) {
                        return self.fail(error.into());
                    }
                    let Some(request) = self.request.take() else {
                        return self.fail("response future polled after completion".into());
                    };
                    let dispatched = self.slot.dispatch(&limiter.feedback);
                    let future = self.service.call(request);
                    return Poll::Ready(Ok((future, dispatched, self.end.take(), limiter)));
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S::Future, S, http::Request<ReqBody>>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Output = Result<http::Response<PermitBody<ResBody>>, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let StateProj::Solo { future, solo } = self.as_mut().project().state.project() {
            // The response is written where it goes, not moved through the loop below.
            return future.poll(cx).map(|polled| solo.settle(polled));
        }
        loop {
            let (future, dispatched, end, limiter) = match self.as_mut().project().state.project() {
                StateProj::Called {
                    future,
                    dispatched,
                    end,
                    limiter,
                } => {
                    let polled = ready!(future.poll(cx));
                    let success = matches!(&polled, Ok(response) if response.status().is_success());
                    // Settled first: the outcome is heard before the permit counts as reading
                    // its body.
                    let result = settle(polled, dispatched, end.take());
                    if let (true, Some(limiter)) = (success, limiter.take()) {
                        // The body is read from here until the permit comes back.
                        let slot = dispatched.slot();
                        slot.with_hold_token(limiter.key, |token| limiter.body_started(token));
                    }
                    return Poll::Ready(result.map(PermitBody::wrap));
                }
                StateProj::Solo { .. } => unreachable!("answered above"),
                StateProj::Rejected { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "response future polled after completion".into())))
                }
                StateProj::Waiting { waiting } => ready!(waiting.poll_send(cx))?,
            };
            self.as_mut().project().state.set(State::Called {
                future,
                dispatched,
                end,
                limiter: Some(limiter),
            });
        }
    }
}

impl<F, S, Req> fmt::Debug for ResponseFuture<F, S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Solo { .. } => "called (no slot)",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
