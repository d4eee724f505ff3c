//! The full gentlify stack in front of reqwest, against the loopback simulated LLM API.
//!
//! reqwest's own `Request` has no public extensions (where the stack keeps each request's slot),
//! so the stack runs on `http` types and a small adapter converts at the bottom:
//! `http::Request<String>` → `reqwest::Request`, `reqwest::Response` → `http::Response<reqwest::Body>`.
//!
//! `cargo run -p gentlify-examples --example reqwest_client` (a few seconds).

use std::time::Duration;

use gentlify::{BoxError, Throttle};
use gentlify_examples::{demo_scenario, jobs, SimServer};
use http_body_util::BodyExt;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scenario = demo_scenario();
    let server = SimServer::start(scenario.clone()).await?;

    // The adapter: any `http::Request<B>` whose body converts into a `reqwest::Body`.
    let client = reqwest::Client::new();
    let reqwest_service = service_fn(move |request: http::Request<String>| {
        let client = client.clone();
        async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok::<_, reqwest::Error>(http::Response::<reqwest::Body>::from(response))
        }
    });

    let throttle = Throttle::openai()
        .name("reqwest-example")
        .requests_per_minute(1_200)
        .tokens_per_minute(900_000)
        .concurrency(|c| c.acquire_timeout(Duration::from_secs(60)))
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(reqwest_service);

    // 40 requests from 16 tasks: twice the server's hidden cap of 8.
    let mut calls = tokio::task::JoinSet::new();
    for (i, job) in jobs(&scenario, 40, 4).into_iter().enumerate() {
        let (stack, url) = (stack.clone(), server.url());
        calls.spawn(async move {
            if i >= 16 {
                tokio::time::sleep(Duration::from_millis(20 * (i as u64 - 16))).await;
            }
            let response = stack.oneshot(job.request(&url)).await?;
            let status = response.status();
            // Read the body to its end: the request's slot (and its permit) ends with it.
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, body.len()))
        });
    }
    let mut ok = 0;
    while let Some(done) = calls.join_next().await {
        let (status, _bytes) = done??;
        if status.is_success() {
            ok += 1;
        }
    }
    println!("{ok}/40 succeeded");
    println!("{}", throttle.snapshot());
    println!("server saw: {:?}", server.stats().statuses);
    Ok(())
}
