//! [`Toggled`]: a part of the stack that is either there or not, chosen when the stack is built;
//! [`Boxed`]: a part whose future and body live on the heap.
//!
//! A part switched off in a [`Throttle`](crate::Throttle) (`.no_retry()`, a budget with no
//! limit...) is left out of the request's path rather than kept in an inert form: the service
//! is the part around the rest of the stack, or the rest of the stack alone. The response body
//! is an [`Either`] of the two, so the stack's type does not depend on the settings.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use gentlify_core::BoxError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use pin_project_lite::pin_project;
use sync_wrapper::SyncWrapper;
use tower_service::Service;

/// Either a layer's service around `Off` (`On`), or `Off` alone.
#[derive(Clone, Debug)]
pub enum Toggled<On, Off> {
    /// The part is in the stack.
    On(On),
    /// The part is switched off: requests go straight to the rest of the stack.
    Off(Off),
}

impl<On, Off, Request, OnBody, OffBody> Service<Request> for Toggled<On, Off>
where
    On: Service<Request, Response = http::Response<OnBody>>,
    On::Error: Into<BoxError>,
    Off: Service<Request, Response = http::Response<OffBody>>,
    Off::Error: Into<BoxError>,
{
    type Response = http::Response<Either<OnBody, OffBody>>;
    type Error = BoxError;
    type Future = ToggledFuture<On::Future, Off::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Toggled::On(on) => on.poll_ready(cx).map_err(Into::into),
            Toggled::Off(off) => off.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        match self {
            Toggled::On(on) => ToggledFuture {
                inner: Inner::On {
                    future: on.call(request),
                },
            },
            Toggled::Off(off) => ToggledFuture {
                inner: Inner::Off {
                    future: off.call(request),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`Toggled`].
    pub struct ToggledFuture<On, Off> {
        #[pin]
        inner: Inner<On, Off>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<On, Off> {
        On { #[pin] future: On },
        Off { #[pin] future: Off },
    }
}

impl<On, Off, OnBody, OffBody, OnError, OffError> Future for ToggledFuture<On, Off>
where
    On: Future<Output = Result<http::Response<OnBody>, OnError>>,
    OnError: Into<BoxError>,
    Off: Future<Output = Result<http::Response<OffBody>, OffError>>,
    OffError: Into<BoxError>,
{
    type Output = Result<http::Response<Either<OnBody, OffBody>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::On { future } => future.poll(cx).map(|r| {
                r.map(|response| response.map(Either::Left))
                    .map_err(Into::into)
            }),
            InnerProj::Off { future } => future.poll(cx).map(|r| {
                r.map(|response| response.map(Either::Right))
                    .map_err(Into::into)
            }),
        }
    }
}

impl<On, Off> fmt::Debug for ToggledFuture<On, Off> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Inner::On { .. } => "ToggledFuture::On",
            Inner::Off { .. } => "ToggledFuture::Off",
        })
    }
}

/// A part of the stack whose response future and response body live on the heap, in one
/// allocation.
///
/// The stack's futures and bodies nest by value, so a part whose future or body is much larger
/// than the rest of the stack makes every layer around it move those bytes at each step, and an
/// enum ([`Toggled`]) is as large as its larger side even when that side is switched off. The
/// token budget is such a part (its future holds the request while it waits for the windows, its
/// body reads the usage): boxed, the stack around it moves a pointer.
///
/// The future and the body share one heap cell: the cell is allocated when the request is
/// called, holds the future while it runs, and when the response arrives the future is dropped
/// in place and the response's body moved into the same cell, which the response then carries
/// ([`BoxedBody`]). One allocation per request rather than one for the future and one for the
/// body.
///
/// Under callgrind (`cargo bench -p gentlify --bench instructions`, instructions per request),
/// boxing the budget took the default stack's future from 1,472 to 912 bytes and its response
/// from 536 to 368, and a request through it from 14,548 instructions to 13,302 (22,363 from
/// 23,211 with the budget on). The shared cell then took a request through the stack with the
/// budget on from 16,146 instructions to 15,994 (18 allocations to 17); the budget's future,
/// unboxed, is 912 bytes and its response 296.
#[derive(Clone, Debug)]
pub struct Boxed<S> {
    inner: S,
}

impl<S> Boxed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Boxed { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Request, B> Service<Request> for Boxed<S>
where
    S: Service<Request, Response = http::Response<B>>,
{
    type Response = http::Response<BoxedBody<S::Future, B>>;
    type Error = S::Error;
    type Future = BoxedFuture<S::Future, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        BoxedFuture {
            cell: Some(Box::pin(Cell::Future {
                future: SyncWrapper::new(self.inner.call(request)),
            })),
        }
    }
}

pin_project! {
    /// The heap cell of [`Boxed`]: the inner future, then the inner response's body.
    ///
    /// The future is only ever reached through `Pin<&mut _>`, so it is in a [`SyncWrapper`]:
    /// the cell, and the response body that carries it, are `Sync` when the body is, whatever
    /// the future (clients' futures are rarely `Sync`; `BoxBody::new` needs a `Sync` body).
    #[project = CellProj]
    enum Cell<F, B> {
        Future { #[pin] future: SyncWrapper<F> },
        Body { #[pin] body: B },
    }
}

/// The response future of [`Boxed`].
pub struct BoxedFuture<F, B> {
    // `None` once the future has completed (the cell went with the response, or was dropped
    // with the error).
    cell: Option<Pin<Box<Cell<F, B>>>>,
}

impl<F, B, E> Future for BoxedFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<BoxedBody<F, B>>, E>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let cell = self
            .cell
            .as_mut()
            .expect("BoxedFuture polled after completion");
        let CellProj::Future { future } = cell.as_mut().project() else {
            unreachable!("the cell holds the future until the future completes")
        };
        let result = std::task::ready!(future.get_pin_mut().poll(cx));
        let mut cell = self.cell.take().expect("checked above");
        Poll::Ready(result.map(|response| {
            let (parts, body) = response.into_parts();
            cell.set(Cell::Body { body });
            http::Response::from_parts(parts, BoxedBody { cell })
        }))
    }
}

impl<F, B> fmt::Debug for BoxedFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedFuture").finish_non_exhaustive()
    }
}

/// The response body of [`Boxed`]: the inner response's body, in the cell its future ran in.
pub struct BoxedBody<F, B> {
    cell: Pin<Box<Cell<F, B>>>,
}

impl<F, B: Body> Body for BoxedBody<F, B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.cell.as_mut().project() {
            CellProj::Body { body } => body.poll_frame(cx),
            CellProj::Future { .. } => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &*self.cell {
            Cell::Body { body } => body.is_end_stream(),
            Cell::Future { .. } => true,
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &*self.cell {
            Cell::Body { body } => body.size_hint(),
            Cell::Future { .. } => SizeHint::with_exact(0),
        }
    }
}

impl<F, B> fmt::Debug for BoxedBody<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedBody").finish_non_exhaustive()
    }
}

/// A part of the stack whose response future lives on the heap (its response is untouched).
///
/// The full stack keeps its retry layer, and everything under it, there: that future is the
/// request's state for all its attempts (the copy of the request, the client's future, several
/// hundred bytes), which the limiter, the breaker, the stack's future and every caller would
/// otherwise each move once more while it is built and handed out. Moves of more than 128 bytes
/// are `memcpy` calls, and those were about a fifth of the full stack's CPU time per request
/// (`perf` on the `instructions` bench). With the box (one allocation the stack had anyway: it
/// used to box its whole future on top) the limiter's future is 72 bytes and the whole stack's
/// 128, and the `instructions` bench's request takes three `memcpy` calls of 500-600 bytes less
/// than with the whole future boxed on top.
#[derive(Clone, Debug)]
pub struct BoxedCall<S> {
    inner: S,
}

impl<S> BoxedCall<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        BoxedCall { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Request> Service<Request> for BoxedCall<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<S::Future>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        Box::pin(self.inner.call(request))
    }
}
