//! Calling an axum `Router` through the full gentlify stack, in process, as a Tower service:
//! no socket between the stack and the router. Useful to test a client stack against an
//! in-process fake, or to call a rate-limited internal service mounted in the same binary.
//!
//! The router here is a small gateway whose chat route forwards to the simulated LLM API
//! (`SimUpstream`, the service behind the loopback server), hidden concurrency cap and all.
//!
//! `cargo run -p gentlify-examples --example axum_service` (a few seconds).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use gentlify::{BoxError, Throttle};
use gentlify_examples::{demo_scenario, jobs};
use gentlify_sim::SimUpstream;
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};

/// The gateway's chat route: hands the request to the simulated API and its answer back.
async fn chat(State(api): State<SimUpstream>, request: Request) -> Response {
    match api.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scenario = demo_scenario();
    let api = SimUpstream::new(&scenario);
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(api.clone());

    // A `Router` is a `Service<http::Request<B>>` for any body `B` it can read, with
    // `Error = Infallible`: it goes under the stack like any client.
    let throttle = Throttle::openai()
        .name("axum-example")
        .requests_per_minute(1_200)
        .tokens_per_minute(900_000)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(router);

    let mut calls = tokio::task::JoinSet::new();
    for job in jobs(&scenario, 30, 3) {
        let stack = stack.clone();
        calls.spawn(async move {
            let response = stack.oneshot(job.request("/v1/chat/completions")).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, BoxError>(status)
        });
    }
    let mut ok = 0;
    while let Some(status) = calls.join_next().await {
        ok += usize::from(status??.is_success());
    }
    println!("{ok}/30 succeeded through the router");
    println!("{}", throttle.snapshot());
    println!("the simulated API saw: {:?}", api.stats().statuses);
    Ok(())
}
