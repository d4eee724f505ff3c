//! A batch of 1 000 prompts through the full stack, with a progress bar and a summary: the
//! everyday job of summarising, classifying or embedding a data set against a rate-limited API.
//!
//! The simulated API here is roomier than the demo's (a hidden cap of 32, 12 000 requests and
//! 6 000 000 tokens per minute, answers in a few tens of ms), so the batch takes seconds.
//!
//! `cargo run --release -p gentlify-examples --example batch`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gentlify::{BoxError, Throttle};
use gentlify_examples::{demo_scenario, jobs, quantile, SimServer};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use tower::{ServiceBuilder, ServiceExt};

const PROMPTS: usize = 1_000;
/// Tasks sending at once; the stack decides how many of them are in flight.
const TASKS: usize = 64;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut scenario = demo_scenario();
    scenario.limits.concurrency = 32;
    scenario.limits.requests_per_minute = Some(12_000);
    scenario.limits.tokens_per_minute = Some(6_000_000);
    scenario.latency.ttft_ms = 20.0;
    scenario.latency.per_token_ms = 0.1;
    let server = SimServer::start(scenario.clone()).await?;

    let throttle = Throttle::openai()
        .name("batch")
        .requests_per_minute(12_000)
        .tokens_per_minute(6_000_000)
        .concurrency(|c| c.acquire_timeout(Duration::from_secs(120)))
        .build()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(client);

    let prompts: Arc<[_]> = jobs(&scenario, PROMPTS, 0).into();
    let bar = ProgressBar::new(PROMPTS as u64).with_style(ProgressStyle::with_template(
        "{elapsed_precise} {bar:40} {pos}/{len} {msg}",
    )?);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (stack, url, prompts, next, bar, throttle) = (
            stack.clone(),
            server.url(),
            prompts.clone(),
            next.clone(),
            bar.clone(),
            throttle.clone(),
        );
        tasks.spawn(async move {
            let mut done = Vec::new();
            while let Some(job) = prompts.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t0 = Instant::now();
                let result = match stack.clone().oneshot(job.request(&url)).await {
                    Ok(response) => {
                        let status = response.status();
                        match response.into_body().collect().await {
                            Ok(_) if status.is_success() => Ok(t0.elapsed()),
                            Ok(_) => Err(format!("HTTP {status}")),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                done.push(result);
                bar.set_message(format!("limit {}", throttle.concurrency().limit));
                bar.inc(1);
            }
            done
        });
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        for result in done? {
            match result {
                Ok(latency) => latencies.push(latency.as_secs_f64()),
                Err(e) => failures.push(e),
            }
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let snapshot = throttle.snapshot();
    println!(
        "{} of {PROMPTS} prompts answered in {wall:.1} s ({:.0} per second), {} failed",
        latencies.len(),
        latencies.len() as f64 / wall,
        failures.len()
    );
    println!(
        "latency p50 {:.3} s, p99 {:.3} s; attempts {} ({} refused by the server and retried)",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        snapshot.attempts(),
        snapshot.attempts_overloaded
    );
    println!("{snapshot}");
    if let Some(e) = failures.first() {
        println!("first failure: {e}");
    }
    Ok(())
}
