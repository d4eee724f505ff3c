//! The uncontended admit -> call -> response round trip (body read to its end), against tower's
//! `ConcurrencyLimit` in the same run, over the same ready upstream. The limiter is alone on a
//! handle of its own, as a user stacks it alone: it sends without a slot. Beside them, in the
//! same run: the loop with no limiter (`upstream_alone`); two reads of tokio's clock, which a
//! limiter measuring each attempt's latency cannot avoid (`two_clock_reads`); and the floor
//! every gentlify layer pays for the shared contract (slot, dispatch, outcome publication, body
//! wrapper) with no limiter (`gentlify_core_contract_only`); and tower's semaphore permit held to
//! the end of the body instead of the response head, with nothing else
//! (`semaphore_held_to_body_end`), to show which part of the cost is whose. The limiter measured
//! sits at its maximum, where it times one request in sixteen; `gentlify_every_request_timed` is
//! the same limiter below its maximum in slow start, timing every request.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gentlify_core::Feedback;
use http_body::Body;
use tokio::runtime::Runtime;
use tower::{Layer, Service};

mod support;
use support::{
    limiter, limiter_timing_every_request, round_trips, HeldToBodyEnd, SlotOnly, Upstream,
};

fn run<S, B>(rt: &Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        round_trips(svc, iters).await;
        start.elapsed()
    })
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("admit_call_response");

    // The loop itself (request, ready upstream, body collected): what neither limiter adds.
    let mut bare = Upstream;
    group.bench_function("upstream_alone", |b| {
        b.iter_custom(|iters| run(&rt, &mut bare, iters))
    });

    // What a limiter that measures each attempt's latency cannot avoid: two reads of tokio's
    // clock (the send, the response head), the floor under the gentlify round trip.
    group.bench_function("two_clock_reads", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let sent = tokio::time::Instant::now();
                    let now = tokio::time::Instant::now();
                    std::hint::black_box(now.saturating_duration_since(sent));
                }
                start.elapsed()
            })
        })
    });

    let mut tower_limit = tower::limit::ConcurrencyLimitLayer::new(64).layer(Upstream);
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| run(&rt, &mut tower_limit, iters))
    });

    // A reference, not a limiter anyone ships: tower's semaphore permit held to the end of the
    // body (as gentlify's is) rather than to the response head. What holding the permit that long
    // costs, with nothing else (no timing, classification or publication).
    let mut held = HeldToBodyEnd::new(Upstream, 64);
    group.bench_function("semaphore_held_to_body_end", |b| {
        b.iter_custom(|iters| run(&rt, &mut held, iters))
    });

    let mut adaptive = limiter().layer(Upstream);
    group.bench_function("gentlify_adaptive_concurrency", |b| {
        b.iter_custom(|iters| run(&rt, &mut adaptive, iters))
    });

    // Below its maximum in slow start, as a limiter at its defaults is until its first refusal:
    // every request is timed.
    let mut timed = limiter_timing_every_request().layer(Upstream);
    group.bench_function("gentlify_every_request_timed", |b| {
        b.iter_custom(|iters| run(&rt, &mut timed, iters))
    });

    let mut slot_only = SlotOnly {
        inner: Upstream,
        feedback: Feedback::new(),
    };
    group.bench_function("gentlify_core_contract_only", |b| {
        b.iter_custom(|iters| run(&rt, &mut slot_only, iters))
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
