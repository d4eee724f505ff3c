//! The success path of `full_stack.rs`, one stack per run, for instruction counts under
//! callgrind (repeatable where wall-clock timings on a shared machine are not):
//!
//! ```sh
//! cargo bench -p gentlify --bench instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/instructions-* <stack> <n>
//! ```
//!
//! Run each stack at two counts `n` and `2n`: the difference of the totals over `n` is the cost of
//! one request without the setup. `scripts`-free on purpose: `cargo bench -p gentlify --bench
//! instructions -- list` names the stacks.

#![allow(missing_docs)]

use std::time::Duration;

use gentlify::{Event, Limit, Throttle};
use http_body_util::BodyExt;
use tower::util::BoxCloneService;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

mod support;
use support::{ok, request, Request, RetryServerErrors};

async fn run<S, B>(mut service: S, iters: u64)
where
    S: Service<Request, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for _ in 0..iters {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
}

/// Bytes of a stack's response future and response: what each layer moves at each poll.
fn future_size<S: Service<Request>>(name: &str, _: &S) {
    println!(
        "{name}: future {} bytes, response {} bytes",
        std::mem::size_of::<S::Future>(),
        std::mem::size_of::<S::Response>()
    );
}

fn sizes() {
    let inner = service_fn(ok);
    future_size("bare", &inner);
    future_size(
        "tower",
        &ServiceBuilder::new()
            .concurrency_limit(256)
            .retry(RetryServerErrors(2))
            .service(inner),
    );
    let full = ServiceBuilder::new()
        .layer(Throttle::new().build().unwrap())
        .service(inner);
    future_size("full", &full);
    let stack = full.get_ref();
    future_size("full: breaker", stack);
    if let gentlify::Toggled::On(breaker) = stack {
        let after = breaker.get_ref();
        future_size("full: concurrency", after);
        if let gentlify::Toggled::On(concurrency) = after {
            let retry = concurrency.get_ref().get_ref();
            future_size("full: retry", retry);
            future_size("full: budget", retry.get_ref());
            println!(
                "full: the service under the retry layer (cloned per request): {} bytes",
                std::mem::size_of_val(retry.get_ref())
            );
            if let gentlify::Toggled::Off(headers) = retry.get_ref() {
                future_size("full: headers", headers);
            }
        }
    }
    let with_budget = ServiceBuilder::new()
        .layer(
            Throttle::new()
                .limit(Limit::requests_per_second(1_000_000_000))
                .build()
                .unwrap(),
        )
        .service(inner);
    future_size("full_with_budget", &with_budget);
    if let gentlify::Toggled::On(breaker) = with_budget.get_ref() {
        if let gentlify::Toggled::On(concurrency) = breaker.get_ref() {
            let retry = concurrency.get_ref().get_ref();
            future_size("full_with_budget: retry", retry);
            future_size("full_with_budget: budget", retry.get_ref());
            if let gentlify::Toggled::On(budget) = retry.get_ref() {
                future_size("full_with_budget: budget, unboxed", budget.get_ref());
            }
        }
    }
    future_size(
        "breaker",
        &ServiceBuilder::new()
            .layer(gentlify::CircuitBreakerLayer::new())
            .service(inner),
    );
    future_size(
        "concurrency",
        &ServiceBuilder::new()
            .layer(gentlify::AdaptiveConcurrencyLayer::new())
            .service(inner),
    );
    future_size(
        "retry",
        &ServiceBuilder::new()
            .layer(gentlify::RetryLayer::new())
            .service(inner),
    );
    future_size(
        "headers",
        &ServiceBuilder::new()
            .layer(gentlify::HeaderFeedbackLayer::new())
            .service(inner),
    );
}

const STACKS: &[&str] = &[
    "bare",
    "tower",
    "full",
    "full_with_budget",
    "full_with_callback",
    "full_no_breaker",
    "full_no_headers",
    "full_no_retry",
    "all_off",
    "breaker",
    "concurrency",
    "retry",
    "budget_no_limit",
    "headers",
];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let stack = args.first().map(String::as_str).unwrap_or("list");
    if stack == "sizes" {
        sizes();
        return;
    }
    if stack == "list" || !STACKS.contains(&stack) {
        println!("stacks: {}", STACKS.join(" "));
        return;
    }
    let iters: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let inner = service_fn(ok);
        match stack {
            "bare" => run(inner, iters).await,
            "tower" => {
                run(
                    ServiceBuilder::new()
                        .concurrency_limit(256)
                        .retry(RetryServerErrors(2))
                        .service(inner),
                    iters,
                )
                .await
            }
            "full" => {
                let layer = Throttle::new().build().unwrap();
                run(ServiceBuilder::new().layer(layer).service(inner), iters).await
            }
            "full_with_budget" => {
                let layer = Throttle::openai()
                    .limit(Limit::requests_per_second(1_000_000_000))
                    .limit(Limit::new(
                        gentlify::core::Dimension::Tokens,
                        1_000_000_000_000,
                        Duration::from_secs(1),
                    ))
                    .build()
                    .unwrap();
                run(ServiceBuilder::new().layer(layer).service(inner), iters).await
            }
            "full_with_callback" => {
                let layer = Throttle::new()
                    .on_event(|event: &Event<'_>| {
                        std::hint::black_box(event);
                    })
                    .build()
                    .unwrap();
                run(ServiceBuilder::new().layer(layer).service(inner), iters).await
            }
            // The full stack without one part: what that part adds inside the stack.
            "full_no_breaker" => {
                let layer = Throttle::new().no_breaker().build().unwrap();
                run(ServiceBuilder::new().layer(layer).service(inner), iters).await
            }
            "full_no_headers" => {
                let layer = Throttle::new().no_header_feedback().build().unwrap();
                run(ServiceBuilder::new().layer(layer).service(inner), iters).await
            }
            "full_no_retry" => {
                let layer = Throttle::new().no_retry().build().unwrap();
                run(ServiceBuilder::new().layer(layer).service(inner), iters).await
            }
            "all_off" => {
                let layer = Throttle::new()
                    .no_breaker()
                    .no_concurrency_limit()
                    .no_retry()
                    .no_budget()
                    .no_header_feedback()
                    .build()
                    .unwrap();
                // Boxed so that this arm's type does not depend on how "off" is represented.
                let service: BoxCloneService<Request, _, _> =
                    BoxCloneService::new(ServiceBuilder::new().layer(layer).service(inner));
                run(service, iters).await
            }
            "breaker" => {
                run(
                    ServiceBuilder::new()
                        .layer(gentlify::CircuitBreakerLayer::new())
                        .service(inner),
                    iters,
                )
                .await
            }
            "concurrency" => {
                run(
                    ServiceBuilder::new()
                        .layer(gentlify::AdaptiveConcurrencyLayer::new())
                        .service(inner),
                    iters,
                )
                .await
            }
            "retry" => {
                run(
                    ServiceBuilder::new()
                        .layer(gentlify::RetryLayer::new())
                        .service(inner),
                    iters,
                )
                .await
            }
            "budget_no_limit" => {
                run(
                    ServiceBuilder::new()
                        .layer(gentlify::TokenBudgetLayer::new(
                            gentlify::TokenBudget::builder().build().unwrap(),
                        ))
                        .service(inner),
                    iters,
                )
                .await
            }
            "headers" => {
                run(
                    ServiceBuilder::new()
                        .layer(gentlify::HeaderFeedbackLayer::new())
                        .service(inner),
                    iters,
                )
                .await
            }
            _ => unreachable!(),
        }
    });
}
