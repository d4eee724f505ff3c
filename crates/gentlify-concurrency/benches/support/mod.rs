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

/// The limiter measured: a limit of 64 (never reached by one caller), no pacing.
pub(crate) fn limiter() -> AdaptiveConcurrencyLayer {
    AdaptiveConcurrencyLayer::builder()
        .initial(64)
        .max(64)
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
