//! Per-endpoint stacks with `ThrottleGroup`: chat and embeddings each get their own adaptive
//! limit and retries, and both draw on one organisation-wide request budget and one breaker
//! for the host.
//!
//! `cargo run -p gentlify-examples --example groups` (a few seconds).

use gentlify::core::Dimension;
use gentlify::{BoxError, Limit, Throttle, ThrottleGroup, TokenBudget};
use gentlify_examples::{demo_scenario, jobs, SimServer};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scenario = demo_scenario();
    // The simulated API reads the body, not the path: both endpoints reach the same quota.
    let server = SimServer::start(scenario.clone()).await?;
    let base = format!("http://{}", server.addr());

    // The organisation's quota, shared by every endpoint's stack.
    let org = TokenBudget::new([Limit::requests_per_minute(1_200)])?;
    let group = ThrottleGroup::builder(|endpoint: &String| match endpoint.as_str() {
        // Embeddings are short: let more of them run at once.
        "/v1/embeddings" => Throttle::openai().concurrency(|c| c.initial(6).max(16)),
        _ => Throttle::openai().concurrency(|c| c.initial(2).max(8)),
    })
    .global_budget(org.clone())
    .max_keys(8)
    .build()?;

    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    let stack = ServiceBuilder::new()
        .layer(group.layer(|request: &http::Request<String>| request.uri().path().to_owned()))
        .service(client);

    let mut calls = tokio::task::JoinSet::new();
    for (i, job) in jobs(&scenario, 40, 0).into_iter().enumerate() {
        let path = if i % 2 == 0 {
            "/v1/chat/completions"
        } else {
            "/v1/embeddings"
        };
        let (stack, url) = (stack.clone(), format!("{base}{path}"));
        calls.spawn(async move {
            let response = stack.oneshot(job.request(&url)).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, BoxError>(status)
        });
    }
    let mut ok = 0;
    while let Some(status) = calls.join_next().await {
        ok += usize::from(status??.is_success());
    }
    println!("{ok}/40 succeeded over {} endpoint stacks", group.len());
    for endpoint in ["/v1/chat/completions", "/v1/embeddings"] {
        let stack = group.get(&endpoint.to_owned())?;
        println!("{endpoint}: {}", stack.snapshot());
    }
    println!(
        "organisation budget: {:?} requests left this minute",
        org.remaining(Dimension::Requests)
    );
    Ok(())
}
