//! The full gentlify stack in front of hyper-util's client, against the loopback simulated LLM
//! API. hyper's requests are `http` types already: the client is the stack's inner service as
//! it is.
//!
//! `cargo run -p gentlify-examples --example hyper_client` (a few seconds).

use gentlify::{BoxError, Throttle};
use gentlify_examples::{demo_scenario, jobs, SimServer};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scenario = demo_scenario();
    let server = SimServer::start(scenario.clone()).await?;

    // The request body must be `Clone` for retries: `String` is (so are `Bytes` and `Full`).
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    let throttle = Throttle::openai()
        .name("hyper-example")
        .requests_per_minute(1_200)
        .tokens_per_minute(900_000)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(client);

    // 40 requests at once: five times the server's hidden cap of 8.
    let mut calls = tokio::task::JoinSet::new();
    for job in jobs(&scenario, 40, 4) {
        let (stack, url) = (stack.clone(), server.url());
        calls.spawn(async move {
            let response = stack.oneshot(job.request(&url)).await?;
            let status = response.status();
            // A streamed answer holds its place until its last chunk: read to the end.
            response.into_body().collect().await?;
            Ok::<_, BoxError>(status)
        });
    }
    let mut ok = 0;
    while let Some(status) = calls.join_next().await {
        ok += usize::from(status??.is_success());
    }
    let snapshot = throttle.snapshot();
    println!(
        "{ok}/40 succeeded; the limit is now {}",
        throttle.concurrency().limit
    );
    println!("{snapshot}");
    println!("server saw: {:?}", server.stats().statuses);
    assert_eq!(snapshot.open_slots, 0);
    Ok(())
}
