//! The uncontended admit -> call -> response round trip of `benches/round_trip.rs`, as a plain
//! loop for instruction counts, which are repeatable where wall-clock timings on a shared
//! machine are not:
//!
//! ```text
//! cargo build --release -p gentlify-concurrency --example round_trip_count
//! valgrind --tool=callgrind target/release/examples/round_trip_count <tower|gentlify|contract> <iterations>
//! ```
//!
//! Run it at two iteration counts and divide the difference of the totals by the difference of
//! the counts: the setup cancels out.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing};
use gentlify_core::{BoxError, Feedback, Slot, SlotBody, Tracked};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
struct Upstream;

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

/// The gentlify contract alone (slot, dispatch, outcome, body wrapper), no limiter.
#[derive(Clone)]
struct SlotOnly<S> {
    inner: S,
    feedback: Feedback,
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

async fn run<S, B>(svc: &mut S, iterations: u64)
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

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "gentlify".into());
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        match which.as_str() {
            "tower" => {
                let mut svc = tower::limit::ConcurrencyLimitLayer::new(64).layer(Upstream);
                run(&mut svc, iterations).await;
            }
            "contract" => {
                let mut svc = SlotOnly {
                    inner: Upstream,
                    feedback: Feedback::new(),
                };
                run(&mut svc, iterations).await;
            }
            _ => {
                let layer = AdaptiveConcurrencyLayer::builder()
                    .initial(64)
                    .max(64)
                    .pacing(Pacing::disabled())
                    .build()
                    .unwrap();
                let mut svc = layer.layer(Upstream);
                run(&mut svc, iterations).await;
            }
        }
    });
}
