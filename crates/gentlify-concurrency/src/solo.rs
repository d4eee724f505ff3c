//! A request sent by a limiter alone: no slot, its permit in the response future, then in the
//! response body.
//!
//! A limiter built without a handle, whose handle was never handed out, is the only gentlify
//! layer that can see its requests on that handle: nothing could share a slot with it. A request
//! that reaches it without one is sent without one, with the same outcome published and the
//! permit held to the same end (the end of the body), without the slot's allocations and
//! locks (`benches/round_trip.rs`: about half the round trip's time). A response its head cannot
//! classify (a gRPC class in the trailers, a 429 whose body may say more) moves into a slot of
//! its own there.
//!
//! Far below the limit (not filled since it last changed, at most half of it in flight), under
//! the additive controller out of slow start (or at its maximum), only one request in sixteen
//! reads the clock: the others save the two reads (about 50 ns). There a success can change
//! nothing but the smoothed latency and body time, which one sample in sixteen keeps, and the
//! failure window, which hears every success. A request not timed takes as its send time the
//! latest instant the limiter knew of (no later than the true one, and after any deceleration it
//! was sent after), so a refusal or failure is still heard once per round trip; the latency it
//! publishes is an upper bound.

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use gentlify_core::error::is_local_rejection;
use gentlify_core::{settle, BoxError, Class, Outcome, Slot, SlotBody};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::limiter::{body_held, Permit, Sent};

/// The attempt of a request sent without a slot, while its response is awaited. Dropped before
/// the response came (the caller went away), it publishes the attempt as cancelled and gives
/// the permit back.
pub(crate) struct Solo {
    /// `None` once settled.
    permit: Option<Permit>,
    /// When it was sent, or (not timed, far below the limit) the instant the limiter knew of
    /// then ([`Limiter::send_time`](crate::limiter::Limiter)).
    sent: Sent,
}

impl Solo {
    #[inline]
    pub(crate) fn new(permit: Permit, sent: Sent) -> Self {
        Solo {
            permit: Some(permit),
            sent,
        }
    }

    /// Publishes the attempt's outcome and hands the permit to the response's body (or gives it
    /// back, on an error).
    #[inline]
    pub(crate) fn settle<B, E>(
        &mut self,
        result: Result<http::Response<B>, E>,
    ) -> Result<http::Response<PermitBody<B>>, BoxError>
    where
        B: Body,
        E: Into<BoxError>,
    {
        let Some(permit) = self.permit.take() else {
            return Err("response future polled after completion".into());
        };
        let limiter = permit.limiter();
        match result {
            // Classified from its head apart: the head is small enough to be moved without a
            // call to `memcpy`, the whole response is not.
            Ok(response) => {
                let (head, body) = response.into_parts();
                match limiter.feedback.classify_head(&head) {
                    Some(class) => {
                        let status = head.status;
                        // Heard before the permit counts as reading its body, as with a slot; by
                        // this limiter alone, the only controller on a handle no one else holds.
                        let timed = matches!(self.sent, Sent::Timed(_));
                        let head_at = if class == Class::Success && !timed {
                            // Neither its latency nor its body's holding time is known.
                            limiter.feedback.count_untimed(&class, Some(status));
                            limiter.hear_untimed_success();
                            None
                        } else {
                            let sent_at = limiter.sent_at(self.sent);
                            let outcome = Outcome::new(class, 0, sent_at).with_status(status);
                            limiter.feedback.publish_to(&outcome, &**limiter);
                            matches!(class, Class::Success).then(|| outcome.finished_at())
                        };
                        // A body already at its end (none) is not read: its permit comes back below.
                        let streaming = status.is_success() && !body.is_end_stream();
                        if streaming {
                            limiter.solo_body_started();
                        }
                        let solo = SoloBody {
                            permit,
                            head_at,
                            streaming,
                            waited: false,
                        };
                        Ok(http::Response::from_parts(
                            head,
                            PermitBody::solo(body, solo),
                        ))
                    }
                    None => {
                        let sent_at = limiter.sent_at(self.sent);
                        let response = http::Response::from_parts(head, body);
                        Ok(slotted(response, permit, sent_at))
                    }
                }
            }
            Err(error) => {
                let error = error.into();
                publish_error(&permit, &*error, limiter.sent_at(self.sent));
                permit.release_solo(false, None);
                Err(error)
            }
        }
    }
}

impl Drop for Solo {
    #[inline]
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let limiter = permit.limiter();
            let outcome = Outcome::new(Class::Cancelled, 0, limiter.sent_at(self.sent));
            limiter.feedback.publish_to(&outcome, &**limiter);
        }
    }
}

impl fmt::Debug for Solo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Solo")
            .field("settled", &self.permit.is_none())
            .field("sent", &self.sent)
            .finish()
    }
}

/// Publishes an error from the inner service, unless it is a local rejection (it never reached
/// the server), as a slot's dispatch does.
fn publish_error(permit: &Permit, error: &(dyn Error + 'static), sent_at: Instant) {
    if is_local_rejection(error) {
        return;
    }
    let limiter = permit.limiter();
    let class = limiter.feedback.classifier().classify_error(error);
    let outcome = Outcome::new(class, 0, sent_at);
    limiter.feedback.publish_to(&outcome, &**limiter);
}

/// A response whose head does not settle its class: it gets a slot of its own (held by no
/// request extensions), which classifies it from its trailers or waits for a word on its body
/// as any slot does, and holds the permit until the body ends.
#[cold]
fn slotted<B: Body>(
    response: http::Response<B>,
    permit: Permit,
    sent_at: Instant,
) -> http::Response<PermitBody<B>> {
    let limiter = Arc::clone(permit.limiter());
    let (slot, end) = Slot::new(&limiter.feedback);
    let dispatched = slot.dispatch_at(&limiter.feedback, sent_at);
    permit.hold_in(&slot, Some(sent_at));
    let streaming = response.status().is_success();
    let Ok(response) = settle(Ok::<_, BoxError>(response), &dispatched, Some(end)) else {
        unreachable!("settling a response is a response")
    };
    if streaming {
        slot.with_hold_token(limiter.key, |token| limiter.body_started(token));
    }
    PermitBody::wrap(response)
}

/// The permit of a request sent without a slot, in its response body.
struct SoloBody {
    permit: Permit,
    /// When the response head came back, for a timed success: the body's holding time counts
    /// from here. `None` after any other class (its body's time says nothing of the server's
    /// work), or when the request was not timed.
    head_at: Option<Instant>,
    streaming: bool,
    /// A poll of the body was pending: its bytes were still coming (as a slot's
    /// [`SlotEnded::body_waited`](gentlify_core::SlotEnded)).
    waited: bool,
}

impl SoloBody {
    /// The body ended: `read` to its end, or not (an error, dropped). How long it held the
    /// server after the head ([`body_held`]) counts only when it was read to its end after a
    /// success.
    fn end(self, read: bool) {
        let held = match (read, self.head_at) {
            (true, Some(head)) => Some(body_held(head, self.waited).0),
            _ => None,
        };
        self.permit.release_solo(self.streaming, held);
    }
}

pin_project! {
    /// The response body of [`AdaptiveConcurrency`](crate::AdaptiveConcurrency): it holds the
    /// request's concurrency permit until the body reaches its end, fails or is dropped, so a
    /// streamed LLM answer keeps its permit while it streams.
    ///
    /// When the request has a [`Slot`], the permit is in the slot, and this is the slot's
    /// [`SlotBody`]. A limiter alone on a handle of its own sends requests without a slot, and
    /// the permit is here (see [`AdaptiveConcurrencyLayer::feedback`]).
    ///
    /// ```
    /// use gentlify_concurrency::AdaptiveConcurrencyLayer;
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = AdaptiveConcurrencyLayer::new();
    /// let service = layer.layer(service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("answer"))))
    /// }));
    /// let response = service.oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!(layer.snapshot().in_flight, 1, "held while the body is unread");
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "answer");
    /// assert_eq!(layer.snapshot().in_flight, 0, "given back at the end of the body");
    /// # }
    /// ```
    ///
    /// [`AdaptiveConcurrencyLayer::feedback`]: crate::AdaptiveConcurrencyLayer::feedback
    pub struct PermitBody<B> {
        #[pin]
        inner: Inner<B>,
    }

    impl<B> PinnedDrop for PermitBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let InnerProj::Solo { solo, .. } = this.project().inner.project() {
                if let Some(solo) = solo.take() {
                    solo.end(false);
                }
            }
        }
    }
}

pin_project! {
    /// The body: the slot's, or (without a slot) the inner service's as it is.
    #[project = InnerProj]
    enum Inner<B> {
        Slotted { #[pin] body: SlotBody<B> },
        // The permit, until the body ends (`None` then).
        Solo { #[pin] body: B, solo: Option<SoloBody> },
    }
}

impl<B: Body> PermitBody<B> {
    /// The body of a response whose permit is in its slot.
    #[inline]
    pub(crate) fn wrap(response: http::Response<SlotBody<B>>) -> http::Response<PermitBody<B>> {
        let (head, body) = response.into_parts();
        let inner = Inner::Slotted { body };
        http::Response::from_parts(head, PermitBody { inner })
    }

    /// The body of a request sent without a slot, holding its permit: given back at once when
    /// there is no body.
    #[inline]
    fn solo(body: B, solo: SoloBody) -> Self {
        let solo = if body.is_end_stream() {
            solo.end(true);
            None
        } else {
            Some(solo)
        };
        PermitBody {
            inner: Inner::Solo { body, solo },
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        match &self.inner {
            Inner::Slotted { body } => body.get_ref(),
            Inner::Solo { body, .. } => body,
        }
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // One value, returned from one place, on every path: the frame is written where the
        // caller reads it rather than copied there (a frame is over a hundred bytes).
        let polled;
        match self.project().inner.project() {
            InnerProj::Slotted { body } => polled = body.poll_frame(cx),
            InnerProj::Solo { mut body, solo } => {
                polled = body.as_mut().poll_frame(cx);
                if let Some(held) = solo {
                    // Whether the body has ended, and was read to its end.
                    let ended = match &polled {
                        Poll::Pending => {
                            held.waited = true;
                            None
                        }
                        Poll::Ready(None) => Some(true),
                        Poll::Ready(Some(Ok(_))) => body.is_end_stream().then_some(true),
                        Poll::Ready(Some(Err(_))) => Some(false),
                    };
                    if let Some(read) = ended {
                        if let Some(held) = solo.take() {
                            held.end(read);
                        }
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Slotted { body } => body.is_end_stream(),
            Inner::Solo { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Slotted { body } => body.size_hint(),
            Inner::Solo { body, .. } => body.size_hint(),
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner: &dyn fmt::Debug = match &self.inner {
            Inner::Slotted { body } => body,
            Inner::Solo { body, .. } => body,
        };
        f.debug_struct("PermitBody")
            .field("inner", inner)
            .field(
                "holds_permit",
                &matches!(&self.inner, Inner::Solo { solo: Some(_), .. }),
            )
            .finish()
    }
}
