//! What the round-trip bench and the `round_trip_count` / `round_trip_usage_count` examples
//! share: a ready upstream, the gentlify contract alone (no limiter), the limiter they measure
//! and the round-trip loop.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing};
use gentlify_core::{BoxError, Feedback, Slot, SlotBody, Tracked};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

/// The limiter measured: a limit of 64 (never reached by one caller), no pacing. At its
/// maximum, it times one request in sixteen.
pub(crate) fn limiter() -> AdaptiveConcurrencyLayer {
    limiter_at_64_of(64)
}

/// The same limiter below its maximum of 128 in slow start (the defaults' shape before a first
/// refusal): it reads the clock for every request, twice.
pub(crate) fn limiter_timing_every_request() -> AdaptiveConcurrencyLayer {
    limiter_at_64_of(128)
}

fn limiter_at_64_of(max: usize) -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .initial(64)
        .max(max)
        .pacing(Pacing::disabled())
        .build()
        .unwrap()
}

/// `iterations` uncontended round trips: admit, call, read the body to its end.
pub(crate) async fn round_trips<S, B>(svc: &mut S, iterations: u64)
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    for _ in 0..iterations {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        std::hint::black_box(response.into_body().collect().await.unwrap());
    }
}

#[derive(Clone)]
pub(crate) struct Upstream;

/// The gentlify contract and nothing else: what `gentlify_core`'s docs show a layer does.
#[derive(Clone)]
pub(crate) struct SlotOnly<S> {
    pub(crate) inner: S,
    pub(crate) feedback: Feedback,
}

impl<S, B> Service<http::Request<()>> for SlotOnly<S>
where
    S: Service<http::Request<()>, Response = http::Response<B>, Error = Infallible>,
    B: Body,
{
    type Response = http::Response<SlotBody<B>>;
    type Error = BoxError;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<()>) -> Self::Future {
        let (slot, end) = Slot::get_or_insert(req.extensions_mut(), &self.feedback);
        let dispatched = slot.dispatch(&self.feedback);
        Tracked::new(self.inner.call(req), dispatched, end)
    }
}

impl Service<http::Request<()>> for Upstream {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<()>) -> Self::Future {
        ready(Ok(http::Response::new(Full::new(Bytes::from_static(
            b"ok",
        )))))
    }
}

/// The least a limiter that holds its permit to the end of the response body does, for a
/// reference: tower's `ConcurrencyLimit` (a tokio semaphore permit taken in `poll_ready`), with
/// the permit moved into the response body and given back at its end instead of when the
/// response future resolves. No timing, no classification, no publication. Uncontended only:
/// `poll_ready` fails when no permit is free.
pub(crate) struct HeldToBodyEnd<S> {
    pub(crate) inner: S,
    pub(crate) semaphore: std::sync::Arc<tokio::sync::Semaphore>,
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<S> HeldToBodyEnd<S> {
    pub(crate) fn new(inner: S, permits: usize) -> Self {
        HeldToBodyEnd {
            inner,
            semaphore: std::sync::Arc::new(tokio::sync::Semaphore::new(permits)),
            permit: None,
        }
    }
}

impl<S, B> Service<http::Request<()>> for HeldToBodyEnd<S>
where
    S: Service<http::Request<()>, Response = http::Response<B>, Error = Infallible>,
    B: Body,
{
    type Response = http::Response<HeldBody<B>>;
    type Error = BoxError;
    type Future = HeldFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.permit.is_none() {
            let permit = std::sync::Arc::clone(&self.semaphore)
                .try_acquire_owned()
                .map_err(|_| "no permit free (this reference is for the uncontended case)")?;
            self.permit = Some(permit);
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<()>) -> Self::Future {
        HeldFuture {
            inner: self.inner.call(req),
            permit: self.permit.take(),
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct HeldFuture<F> {
        #[pin]
        inner: F,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl<F, B> std::future::Future for HeldFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, Infallible>>,
{
    type Output = Result<http::Response<HeldBody<B>>, BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx)).map_err(BoxError::from)?;
        let permit = this.permit.take();
        Poll::Ready(Ok(response.map(|inner| HeldBody { inner, permit })))
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct HeldBody<B> {
        #[pin]
        inner: B,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl<B: Body> Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Pending => false,
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
        };
        if ended {
            this.permit.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
