//! The full stack over real HTTP on loopback: the simulated LLM API (`gentlify-sim`) served by
//! hyper on `127.0.0.1:0`, called through reqwest and through hyper-util's client, across a 429
//! storm (more callers than the server's hidden concurrency cap), an outage (503 to everything)
//! and the recovery after it.
//!
//! Real sockets need real time: each run takes a second or two. Nothing here depends on how fast
//! the machine is: the bounds on time are generous and nothing asserts a speed.

use std::net::SocketAddr;
use std::time::Duration;

use gentlify::concurrency::Pacing;
use gentlify::core::error::is_local_rejection;
use gentlify::retry::Backoff;
use gentlify::{BoxError, Throttle, ThrottleLayer};
use gentlify_sim::{Scenario, SimUpstream};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// Requests per run: at most 3 in service at once and at least 30 ms each, so a run lasts at
/// least 0.6 s and the outage (0.3 s to 0.9 s on the server's clock) cannot be missed.
const REQUESTS: usize = 60;
/// Callers at once: four times the hidden cap, a 429 storm from the first instant.
const CALLERS: usize = 12;

const SCENARIO: &str = r#"
name = "loopback-storm-outage"
seed = 11
requests = 60

[workload]
kind = "closed"
workers = 12

[sizes]
prompt_tokens = { dist = "uniform", min = 10, max = 200 }
output_tokens = { dist = "uniform", min = 10, max = 40 }

[limits]
concurrency = 3
over_concurrency_status = 429
headers = "openai"

[latency]
ttft_ms = 30
per_token_ms = 0.5
jitter = 0.0

[[faults]]
kind = "outage"
from_s = 0.3
to_s = 0.9
status = 503
"#;

/// Serves a fresh simulated API on `127.0.0.1:0`; the handle reads what the server saw.
async fn serve() -> (SocketAddr, SimUpstream, tokio::task::JoinHandle<()>) {
    let scenario = Scenario::from_toml(SCENARIO).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = SimUpstream::new(&scenario);
    let served = api.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(served.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, api, task)
}

/// The full stack (breaker → concurrency → retry → budget → headers), with retries enough to
/// outlast a 0.6 s outage and delays (backoff, cooling and pacing after a cut) scaled to a
/// loopback server answering in tens of ms (the defaults are scaled to LLM calls of seconds).
fn throttle() -> ThrottleLayer {
    Throttle::openai_compatible()
        .name("loopback")
        .concurrency(|c| {
            c.acquire_timeout(Duration::from_secs(60))
                .cooling(Duration::from_millis(300))
                .max_cooling(Duration::from_secs(1))
                .pacing(
                    Pacing::new()
                        .widen_to(Duration::from_millis(5))
                        .max_interval(Duration::from_millis(50)),
                )
        })
        .retry(|r| {
            r.max_attempts(30)
                .backoff(Backoff::exponential(
                    Duration::from_millis(20),
                    Duration::from_millis(200),
                ))
                .without_budget()
                .wait_for_probe(Duration::from_secs(10))
        })
        .breaker(|b| b.open_for(Duration::from_millis(100)))
        .build()
        .unwrap()
}

fn request(url: &str, i: usize) -> http::Request<String> {
    let prompt = 10 + (i as u64 * 37) % 190;
    let max_tokens = 10 + (i as u64 * 13) % 30;
    let mut request = gentlify_sim::chat_request(prompt, max_tokens, i % 5 == 0);
    *request.uri_mut() = url.parse().unwrap();
    request
}

/// Sends `REQUESTS` through `client` from `CALLERS` tasks, reads every body to its end, and
/// checks what the stack and the server saw. The caller resubmits a request refused locally
/// (an open circuit: it never reached the server), as an application would; such resubmissions
/// are counted and are not losses.
async fn storm_outage_recovery<S, B>(
    client: S,
    throttle: ThrottleLayer,
    api: SimUpstream,
    url: String,
) where
    S: Service<http::Request<String>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(client);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (stack, next, url) = (stack.clone(), next.clone(), url.clone());
        callers.spawn(async move {
            let mut results = Vec::new();
            let mut resubmitted = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= REQUESTS {
                    break;
                }
                let status = loop {
                    match stack.clone().oneshot(request(&url, i)).await {
                        Ok(response) => {
                            let status = response.status();
                            let body = response.into_body().collect().await;
                            break body.map(|_| status).map_err(|_| "body error".to_string());
                        }
                        Err(e) if is_local_rejection(&*e) && resubmitted < 100 => {
                            resubmitted += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => break Err(e.to_string()),
                    }
                };
                results.push(status);
            }
            (results, resubmitted)
        });
    }
    let mut ok = 0;
    let mut lost = Vec::new();
    let mut resubmitted = 0;
    let everything = async {
        while let Some(done) = callers.join_next().await {
            let (results, again) = done.unwrap();
            resubmitted += again;
            for r in results {
                match r {
                    Ok(s) if s == 200 => ok += 1,
                    other => lost.push(other),
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), everything)
        .await
        .expect("the run ends (the bound is generous: it takes seconds)");

    let stats = api.stats();
    let snapshot = throttle.snapshot();
    let seen = |status: u16| stats.statuses.get(&status).copied().unwrap_or(0);
    let context = format!("{snapshot}\nserver: {stats:?}\nresubmitted: {resubmitted}");

    assert!(lost.is_empty(), "lost {lost:?}\n{context}");
    assert_eq!(ok, REQUESTS, "{context}");
    assert!(seen(429) > 0, "the storm happened: {context}");
    assert!(seen(503) > 0, "the outage happened: {context}");
    assert_eq!(
        throttle.feedback().open_slots(),
        0,
        "every slot ended: {context}"
    );
    assert_eq!(snapshot.open_slots, 0, "{context}");

    // The stack heard every attempt the server answered, classified as the server answered it.
    assert_eq!(snapshot.attempts(), stats.attempts, "{context}");
    assert_eq!(snapshot.attempts_success, seen(200), "{context}");
    assert_eq!(snapshot.attempts_success, REQUESTS as u64, "{context}");
    assert_eq!(
        snapshot.attempts_overloaded,
        seen(429) + seen(503),
        "{context}"
    );
    assert_eq!(
        snapshot.attempts_failure + snapshot.attempts_fatal,
        0,
        "{context}"
    );
    assert_eq!(snapshot.attempts_cancelled, 0, "{context}");
    assert!(
        stats.peak_in_flight <= 3,
        "the server's cap holds by construction: {context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_loses_nothing_through_a_429_storm_an_outage_and_recovery() {
    let (addr, api, server) = serve().await;
    let client = reqwest::Client::new();
    // reqwest's own `Request` has no public extensions, so the stack runs on `http` types and
    // converts at the bottom.
    let adapter = service_fn(move |request: http::Request<String>| {
        let client = client.clone();
        async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok::<_, reqwest::Error>(http::Response::<reqwest::Body>::from(response))
        }
    });
    let url = format!("http://{addr}/v1/chat/completions");
    storm_outage_recovery(adapter, throttle(), api, url).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_client_loses_nothing_through_a_429_storm_an_outage_and_recovery() {
    let (addr, api, server) = serve().await;
    let client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<String>();
    let url = format!("http://{addr}/v1/chat/completions");
    storm_outage_recovery(client, throttle(), api, url).await;
    server.abort();
}
