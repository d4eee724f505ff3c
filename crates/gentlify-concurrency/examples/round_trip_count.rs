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

use std::fmt::Debug;

use gentlify_concurrency::{AdaptiveConcurrencyLayer, Pacing};
use gentlify_core::Feedback;
use http_body::Body;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{SlotOnly, Upstream};

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
