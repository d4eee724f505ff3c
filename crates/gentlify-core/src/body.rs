//! The body wrapper that ends a slot at the true end of the response.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::outcome::Class;
use crate::slot::{Dispatched, EndReason, SlotEnd};

pin_project! {
    /// A response body that ends its request's slot when the body reaches its end, fails, or is
    /// dropped, so that a streamed LLM answer keeps its concurrency permit and its token
    /// reservation while it streams (the pattern of tower-http's `in_flight_requests`).
    ///
    /// It also publishes, at the end of the stream, the outcome of an attempt whose class is only
    /// known from the trailers (gRPC). Every gentlify layer returns its responses with this body;
    /// for the layers that did not make the slot it only passes frames through.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use gentlify_core::{EndReason, Feedback, HoldKey, Slot, SlotBody};
    /// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let feedback = Feedback::new();
    /// let (slot, end) = Slot::new(&feedback);
    /// let released = Arc::new(AtomicBool::new(false));
    /// let flag = released.clone();
    /// slot.hold(HoldKey::unique(), Box::new(move |_: &gentlify_core::SlotEnded<'_>| {
    ///     flag.store(true, Ordering::SeqCst)
    /// }));
    ///
    /// let body = SlotBody::new(Full::new(bytes::Bytes::from("streamed answer")), Some(end), None);
    /// assert!(!released.load(Ordering::SeqCst), "held while the body is unread");
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(bytes, "streamed answer");
    /// assert!(released.load(Ordering::SeqCst), "released at the end of the body");
    /// # }
    /// ```
    pub struct SlotBody<B> {
        #[pin]
        inner: B,
        end: Option<SlotEnd>,
        // Boxed: only a gRPC response classified from its trailers has one, and every layer of a
        // stack wraps the body again, so each unboxed `Dispatched` would grow every move of the
        // response by its size.
        eos: Option<Box<Dispatched>>,
    }

    impl<B> PinnedDrop for SlotBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(eos) = this.eos.take() {
                eos.publish(Class::Cancelled);
            }
            if let Some(end) = this.end.take() {
                end.end(EndReason::BodyDropped);
            }
        }
    }
}

impl<B: Body> SlotBody<B> {
    /// Wraps `inner`. `end` is the slot's end when the wrapping layer made the slot; `eos` the
    /// attempt to classify and publish from the trailers when its head could not say. A body that
    /// is already at its end (no body) ends the slot at once.
    #[inline]
    pub fn new(inner: B, mut end: Option<SlotEnd>, mut eos: Option<Dispatched>) -> Self {
        if (end.is_some() || eos.is_some()) && inner.is_end_stream() {
            if let Some(eos) = eos.take() {
                eos.on_trailers(None);
            }
            if let Some(end) = end.take() {
                end.end(EndReason::NoBody);
            }
        }
        SlotBody {
            inner,
            end,
            eos: eos.map(Box::new),
        }
    }

    /// Wraps the body of `response` (see [`SlotBody::new`]).
    #[inline]
    pub fn wrap(
        response: http::Response<B>,
        end: Option<SlotEnd>,
        eos: Option<Dispatched>,
    ) -> http::Response<SlotBody<B>> {
        // Taken apart and put back together rather than `Response::map`: the optimizer then
        // writes the new response where it goes instead of copying the old one whole
        // (`instructions` bench: three `memcpy` calls less per request in the full stack).
        let (head, body) = response.into_parts();
        http::Response::from_parts(head, SlotBody::new(body, end, eos))
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if this.end.is_none() && this.eos.is_none() {
            // Nothing left to do at the end: a plain pass-through (in a stack, every layer but
            // one), without asking the bodies inside whether they ended after each frame.
            return this.inner.poll_frame(cx);
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        let reason = match &polled {
            Poll::Pending => {
                if let Some(end) = this.end.as_ref() {
                    end.body_waited();
                }
                return polled;
            }
            Poll::Ready(None) => {
                if let Some(eos) = this.eos.take() {
                    eos.on_trailers(None);
                }
                EndReason::BodyEnded
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(eos) = this.eos.take() {
                        eos.on_trailers(Some(trailers));
                    }
                }
                if !this.inner.is_end_stream() {
                    return polled;
                }
                if let Some(eos) = this.eos.take() {
                    eos.on_trailers(None);
                }
                EndReason::BodyEnded
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(eos) = this.eos.take() {
                    eos.publish(Class::Failure);
                }
                EndReason::BodyError
            }
        };
        if let Some(end) = this.end.take() {
            end.end(reason);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for SlotBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotBody")
            .field("inner", &self.inner)
            .field("owns_slot", &self.end.is_some())
            .field("classifies_at_end", &self.eos.is_some())
            .finish()
    }
}
