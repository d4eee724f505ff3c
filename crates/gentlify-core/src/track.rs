//! The response future shared by layers that forward one attempt and watch its result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Body;
use pin_project_lite::pin_project;

use crate::body::SlotBody;
use crate::classify::Classified;
use crate::error::BoxError;
use crate::slot::{Dispatched, EndReason, SlotEnd};

/// Settles one attempt's result: publishes its outcome (once per handle), wraps a response's body
/// in a [`SlotBody`] that ends the slot at the body's end (when `end` is given) and publishes a
/// gRPC outcome from the trailers, or ends the slot at once on an error.
///
/// Layers that run their own futures (a retry loop, say) call it on the final result;
/// [`Tracked`] calls it for layers that forward one attempt.
#[inline]
pub fn settle<B, E>(
    result: Result<http::Response<B>, E>,
    dispatched: &Dispatched,
    end: Option<SlotEnd>,
) -> Result<http::Response<SlotBody<B>>, BoxError>
where
    B: Body,
    E: Into<BoxError>,
{
    match result {
        Ok(response) => {
            // In a stack, a layer nearer the server has usually settled the attempt already.
            let eos = if dispatched.is_settled() {
                None
            } else {
                match dispatched.on_response(&response) {
                    Classified::Ready(_) => None,
                    Classified::AtEndOfStream => Some(dispatched.clone()),
                }
            };
            Ok(SlotBody::wrap(response, end, eos))
        }
        Err(error) => {
            let error = error.into();
            dispatched.on_error(&*error);
            if let Some(end) = end {
                end.end(EndReason::Error);
            }
            Err(error)
        }
    }
}

pin_project! {
    /// A response future that [settles](settle) its attempt when the inner future completes.
    /// Dropping it before then ends the slot it owns (cancellation) and publishes the attempt as
    /// cancelled.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        dispatched: Dispatched,
        end: Option<SlotEnd>,
    }
}

impl<F> Tracked<F> {
    /// Tracks `inner`, the inner service's future for the attempt `dispatched`; `end` is the
    /// slot's end if the calling layer made the slot.
    pub fn new(inner: F, dispatched: Dispatched, end: Option<SlotEnd>) -> Self {
        Tracked {
            inner,
            dispatched,
            end,
        }
    }
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<SlotBody<B>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (dispatched, end) = (this.dispatched, this.end);
        this.inner
            .poll(cx)
            .map(|result| settle(result, dispatched, end.take()))
    }
}

impl<F> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("dispatched", &self.dispatched)
            .field("owns_slot", &self.end.is_some())
            .finish()
    }
}
