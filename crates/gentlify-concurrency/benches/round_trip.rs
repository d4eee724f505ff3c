//! The uncontended admit -> call -> response round trip (body read to its end), against tower's
//! `ConcurrencyLimit` in the same run, over the same ready upstream. A third line measures the
//! floor every gentlify layer pays for the shared contract alone (slot, dispatch, outcome
//! publication, body wrapper), with no limiter, to show which part of the cost is whose.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gentlify_core::Feedback;
use http_body::Body;
use tokio::runtime::Runtime;
use tower::{Layer, Service};

mod support;
use support::{limiter, round_trips, SlotOnly, Upstream};

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

    let mut tower_limit = tower::limit::ConcurrencyLimitLayer::new(64).layer(Upstream);
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| run(&rt, &mut tower_limit, iters))
    });

    let mut adaptive = limiter().layer(Upstream);
    group.bench_function("gentlify_adaptive_concurrency", |b| {
        b.iter_custom(|iters| run(&rt, &mut adaptive, iters))
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
