//! The round trip of `round_trip_count`'s `gentlify` mode over an upstream that records each
//! answer's token usage in the request's slot, as the budget's usage reader does: the limiter
//! then gives the knee a sample on every release, under its lock. A separate binary, so that
//! this second instantiation of the layer does not move the other example's figures:
//!
//! ```text
//! cargo build --release -p gentlify-concurrency --example round_trip_usage_count
//! valgrind --tool=callgrind target/release/examples/round_trip_usage_count <iterations>
//! ```

use gentlify_core::{Slot, Usage};
use tower::{Layer, Service};

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{limiter, round_trips, Upstream};

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream = tower::service_fn(|request: http::Request<()>| {
            if let Some(slot) = Slot::from_extensions(request.extensions()) {
                slot.record_usage(Usage::new(100, 20));
            }
            Upstream.call(request)
        });
        let mut svc = limiter().layer(upstream);
        round_trips(&mut svc, iterations).await;
    });
}
