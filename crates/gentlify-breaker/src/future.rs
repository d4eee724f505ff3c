//! The response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use gentlify_core::error::CircuitOpen;
use gentlify_core::{BoxError, SlotBody, Tracked};
use http_body::Body;
use pin_project_lite::pin_project;

pin_project! {
    /// The future of a [`CircuitBreaker`](crate::CircuitBreaker) call: either the inner
    /// service's call, tracked on the handle, or a rejection that is ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            tracked: Tracked<F>,
        },
        Rejected {
            rejection: Option<CircuitOpen>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(tracked: Tracked<F>) -> Self {
        ResponseFuture {
            kind: Kind::Called { tracked },
        }
    }

    pub(crate) fn rejected(rejection: CircuitOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
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
        match self.project().kind.project() {
            KindProj::Called { tracked } => tracked.poll(cx),
            KindProj::Rejected { rejection } => Poll::Ready(Err(Box::new(
                rejection
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { tracked } => f
                .debug_struct("ResponseFuture")
                .field("called", tracked)
                .finish(),
            Kind::Rejected { rejection } => f
                .debug_struct("ResponseFuture")
                .field("rejected", rejection)
                .finish(),
        }
    }
}
