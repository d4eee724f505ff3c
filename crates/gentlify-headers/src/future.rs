//! The response future of [`HeaderFeedback`](crate::HeaderFeedback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use gentlify_core::{settle, BoxError, Classified, Dispatched, SlotBody, SlotEnd};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::observe::Observer;

pin_project! {
    /// Waits for one attempt's response, reads its headers, then settles the attempt as
    /// [`gentlify_core::Tracked`] does: publishes its outcome, wraps the body so the slot ends at
    /// its end, ends the slot on an error. Dropped early, it ends the slot it owns (cancellation).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        dispatched: Dispatched,
        end: Option<SlotEnd>,
        observer: Arc<Observer>,
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(
        inner: F,
        dispatched: Dispatched,
        end: Option<SlotEnd>,
        observer: Arc<Observer>,
    ) -> Self {
        ResponseFuture {
            inner,
            dispatched,
            end,
            observer,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<SlotBody<B>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            // Classify (and publish, once per handle) first: the server's delay only holds the
            // gate for an attempt the handle's classifier calls overloaded.
            let class = match this.dispatched.on_response(response) {
                Classified::Ready(class) => Some(class),
                Classified::AtEndOfStream => None,
            };
            this.observer
                .observe(response.headers(), class.as_ref(), this.dispatched);
        }
        Poll::Ready(settle(result, this.dispatched, this.end.take()))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("dispatched", &self.dispatched)
            .field("owns_slot", &self.end.is_some())
            .finish()
    }
}
