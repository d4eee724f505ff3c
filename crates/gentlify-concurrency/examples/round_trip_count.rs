//! The uncontended admit -> call -> response round trip of `benches/round_trip.rs`, as a plain
//! loop for instruction counts, which are repeatable where wall-clock timings on a shared
//! machine are not:
//!
//! ```text
//! cargo build --release -p gentlify-concurrency --example round_trip_count
//! valgrind --tool=callgrind target/release/examples/round_trip_count <tower|held|gentlify|timed|contract> <iterations>
//! ```
//!
//! Run it at two iteration counts and divide the difference of the totals by the difference of
//! the counts: the setup cancels out.

use gentlify_core::Feedback;
use tower::Layer;

#[path = "../benches/support/mod.rs"]
mod support;
use support::{limiter, round_trips, SlotOnly, Upstream};

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
                round_trips(&mut svc, iterations).await;
            }
            "held" => {
                let mut svc = support::HeldToBodyEnd::new(Upstream, 64);
                round_trips(&mut svc, iterations).await;
            }
            "timed" => {
                let mut svc = support::limiter_timing_every_request().layer(Upstream);
                round_trips(&mut svc, iterations).await;
            }
            "contract" => {
                let mut svc = SlotOnly {
                    inner: Upstream,
                    feedback: Feedback::new(),
                };
                round_trips(&mut svc, iterations).await;
            }
            _ => {
                let mut svc = limiter().layer(Upstream);
                round_trips(&mut svc, iterations).await;
            }
        }
    });
}
