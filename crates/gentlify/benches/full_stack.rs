//! The success path (one attempt, a 200, the body read to its end) through the full gentlify
//! stack, against the bare service and against tower's `ConcurrencyLimit` + `Retry`, in the same
//! run.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gentlify::{Limit, Throttle};
use http_body_util::BodyExt;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

mod support;
use support::{ok, request, Request, RetryServerErrors};

fn run<S, B>(rt: &tokio::runtime::Runtime, service: &S, iters: u64) -> Duration
where
    S: Service<Request, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let mut service = service.clone();
        let start = Instant::now();
        for _ in 0..iters {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(request())
                .await
                .unwrap();
            // Reading the body ends the slot, as a caller would.
            response.into_body().collect().await.unwrap();
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("success_path");

    let bare = service_fn(ok);
    group.bench_function("bare", |b| b.iter_custom(|n| run(&rt, &bare, n)));

    let tower_stack = ServiceBuilder::new()
        .concurrency_limit(256)
        .retry(RetryServerErrors(2))
        .service(service_fn(ok));
    group.bench_function("tower_concurrency_limit_retry", |b| {
        b.iter_custom(|n| run(&rt, &tower_stack, n))
    });

    let full = ServiceBuilder::new()
        .layer(Throttle::new().build().unwrap())
        .service(service_fn(ok));
    group.bench_function("gentlify_full_stack", |b| {
        b.iter_custom(|n| run(&rt, &full, n))
    });

    // With a budget of requests and tokens, so the estimate and the reservation run too.
    let budgeted = ServiceBuilder::new()
        .layer(
            Throttle::openai()
                .limit(Limit::requests_per_second(1_000_000_000))
                .limit(Limit::new(
                    gentlify::core::Dimension::Tokens,
                    1_000_000_000_000,
                    Duration::from_secs(1),
                ))
                .build()
                .unwrap(),
        )
        .service(service_fn(ok));
    group.bench_function("gentlify_full_stack_with_budget", |b| {
        b.iter_custom(|n| run(&rt, &budgeted, n))
    });
    group.finish();

    // Where the time goes: each layer alone, on a handle of its own.
    let mut alone = c.benchmark_group("one_layer");
    let breaker = ServiceBuilder::new()
        .layer(gentlify::CircuitBreakerLayer::new())
        .service(service_fn(ok));
    alone.bench_function("breaker", |b| b.iter_custom(|n| run(&rt, &breaker, n)));
    let concurrency = ServiceBuilder::new()
        .layer(gentlify::AdaptiveConcurrencyLayer::new())
        .service(service_fn(ok));
    alone.bench_function("concurrency", |b| {
        b.iter_custom(|n| run(&rt, &concurrency, n))
    });
    let retry = ServiceBuilder::new()
        .layer(gentlify::RetryLayer::new())
        .service(service_fn(ok));
    alone.bench_function("retry", |b| b.iter_custom(|n| run(&rt, &retry, n)));
    let budget = ServiceBuilder::new()
        .layer(gentlify::TokenBudgetLayer::new(
            gentlify::TokenBudget::builder().build().unwrap(),
        ))
        .service(service_fn(ok));
    alone.bench_function("budget_no_limit", |b| {
        b.iter_custom(|n| run(&rt, &budget, n))
    });
    let headers = ServiceBuilder::new()
        .layer(gentlify::HeaderFeedbackLayer::new())
        .service(service_fn(ok));
    alone.bench_function("headers", |b| b.iter_custom(|n| run(&rt, &headers, n)));
    alone.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
