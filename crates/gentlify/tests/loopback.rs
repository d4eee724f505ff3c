//! The full stack over real HTTP on loopback: the simulated LLM API (`gentlify-sim`) served by
//! hyper on `127.0.0.1:0`, called through reqwest and through hyper-util's client, across a 429
//! storm (more callers than the server's hidden concurrency cap), an outage (503 to everything)
//! and the recovery after it; then an outage of 500s, over which the circuit breaker opens, fails
//! requests fast with its typed error, probes, and closes when the server is back.
//!
//! Real sockets need real time: each run takes a second or two. Nothing here depends on how fast
//! the machine is: the bounds on time are generous and nothing asserts a speed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gentlify::concurrency::Pacing;
use gentlify::core::error::{is_local_rejection, CircuitOpen};
use gentlify::core::CircuitState;
use gentlify::retry::Backoff;
use gentlify::{BoxError, Event, Throttle, ThrottleLayer};
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

/// The simulated API both runs call: 12 callers against a hidden cap of 3 (429s over it, OpenAI
/// headers), 30 ms to the first token, and an outage answering `status` to everything from
/// `from_s` to `to_s` on the server's clock.
fn scenario(name: &str, seed: u64, (from_s, to_s, status): (f64, f64, u16)) -> String {
    format!(
        r#"
name = "{name}"
seed = {seed}
requests = {REQUESTS}

[workload]
kind = "closed"
workers = {CALLERS}

[sizes]
prompt_tokens = {{ dist = "uniform", min = 10, max = 200 }}
output_tokens = {{ dist = "uniform", min = 10, max = 40 }}

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
from_s = {from_s:?}
to_s = {to_s:?}
status = {status}
"#
    )
}

/// A 429 storm from the first instant, then an outage of 503s (overload) from 0.3 s to 0.9 s.
fn storm_and_outage() -> String {
    scenario("loopback-storm-outage", 11, (0.3, 0.9, 503))
}

/// The same server, down with 500s (failures, not overload) for its first 0.6 s: every request
/// sent then fails, enough of them in a row to open the breaker. The run lasts at least 0.6 s
/// of service after the outage (60 requests, 3 at once, 30 ms each), so the recovery is seen.
fn outage_500() -> String {
    scenario("loopback-outage-500", 12, (0.0, 0.6, 500))
}

/// Serves a fresh simulated API on `127.0.0.1:0`; the handle reads what the server saw.
async fn serve(scenario: &str) -> (SocketAddr, SimUpstream, tokio::task::JoinHandle<()>) {
    let scenario = Scenario::from_toml(scenario).unwrap();
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
/// The breaker opens after 4 failures in a row and probes after 100 ms; every transition is
/// recorded as `"<from>-><to>"`. A call that finds it open waits (the presets' default).
fn throttle() -> (ThrottleLayer, Transitions) {
    throttle_with(|b| b)
}

/// As [`throttle`], with a breaker that refuses a call at once while open.
fn fail_fast_throttle() -> (ThrottleLayer, Transitions) {
    throttle_with(|b| b.fail_fast())
}

fn throttle_with(
    breaker: impl FnOnce(
        gentlify::breaker::CircuitBreakerBuilder,
    ) -> gentlify::breaker::CircuitBreakerBuilder,
) -> (ThrottleLayer, Transitions) {
    let transitions = Transitions::default();
    let layer = Throttle::openai_compatible()
        .name("loopback")
        .on_event({
            let transitions = transitions.clone();
            move |event: &Event<'_>| {
                if let Event::Breaker(t) = event {
                    transitions
                        .lock()
                        .unwrap()
                        .push(format!("{}->{}", t.from, t.to));
                }
            }
        })
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
        .breaker(|b| {
            breaker(
                b.open_for(Duration::from_millis(100))
                    .consecutive_failures(4),
            )
        })
        .build()
        .unwrap();
    (layer, transitions)
}

type Transitions = Arc<Mutex<Vec<String>>>;

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
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
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

/// reqwest as the stack's client. reqwest's own `Request` has no public extensions, so the stack
/// runs on `http` types and converts at the bottom.
fn reqwest_client() -> impl Service<
    http::Request<String>,
    Response = http::Response<reqwest::Body>,
    Error = reqwest::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let client = reqwest::Client::new();
    service_fn(move |request: http::Request<String>| {
        let client = client.clone();
        async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok::<_, reqwest::Error>(http::Response::<reqwest::Body>::from(response))
        }
    })
}

fn hyper_util_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, String>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<String>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_loses_nothing_through_a_429_storm_an_outage_and_recovery() {
    let (addr, api, server) = serve(&storm_and_outage()).await;
    let url = format!("http://{addr}/v1/chat/completions");
    storm_outage_recovery(reqwest_client(), throttle().0, api, url).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_client_loses_nothing_through_a_429_storm_an_outage_and_recovery() {
    let (addr, api, server) = serve(&storm_and_outage()).await;
    let url = format!("http://{addr}/v1/chat/completions");
    storm_outage_recovery(hyper_util_client(), throttle().0, api, url).await;
    server.abort();
}

/// What a caller does with one logical request until it gets its 200: it sends it again after a
/// local rejection (the breaker's `CircuitOpen`: the request never left) and after a 5xx the
/// stack gave back (the stack stops retrying once the circuit is open, and hands the last
/// answer back), as an application that treats "the upstream is down" as "later" does.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    circuit_open: usize,
    gave_back_5xx: usize,
    lost: Vec<String>,
}

/// Sends `REQUESTS` through the stack while the server answers 500 to everything, then serves
/// again: the breaker must open, reject fast with `CircuitOpen` (`fail_fast`) or hold the calls
/// until it closes (the default: then no caller ever sees `CircuitOpen`), probe, and close.
async fn outage_opens_and_closes_the_breaker<S, B>(
    client: S,
    (throttle, transitions): (ThrottleLayer, Transitions),
    api: SimUpstream,
    url: String,
    fail_fast: bool,
) where
    S: Service<http::Request<String>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(client);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (stack, next, url) = (stack.clone(), next.clone(), url.clone());
        callers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= REQUESTS {
                    break;
                }
                // Bounded: 200 sends of one request at 50 ms apart outlast the outage many times.
                for send in 0.. {
                    if send == 200 {
                        tally.lost.push(format!("request {i}: still failing"));
                        break;
                    }
                    match stack.clone().oneshot(request(&url, i)).await {
                        Ok(response) => {
                            let status = response.status();
                            if response.into_body().collect().await.is_err() {
                                tally.lost.push(format!("request {i}: body error"));
                                break;
                            }
                            if status == 200 {
                                tally.ok += 1;
                                break;
                            }
                            if !status.is_server_error() {
                                tally.lost.push(format!("request {i}: {status}"));
                                break;
                            }
                            tally.gave_back_5xx += 1;
                        }
                        Err(e) if e.is::<CircuitOpen>() => tally.circuit_open += 1,
                        Err(e) => {
                            tally.lost.push(format!("request {i}: {e}"));
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    let everything = async {
        while let Some(done) = callers.join_next().await {
            let tally = done.unwrap();
            total.ok += tally.ok;
            total.circuit_open += tally.circuit_open;
            total.gave_back_5xx += tally.gave_back_5xx;
            total.lost.extend(tally.lost);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), everything)
        .await
        .expect("the run ends (the bound is generous: it takes seconds)");

    let stats = api.stats();
    let snapshot = throttle.snapshot();
    let transitions = transitions.lock().unwrap().clone();
    let seen = |status: u16| stats.statuses.get(&status).copied().unwrap_or(0);
    let context =
        format!("{snapshot}\nserver: {stats:?}\ncaller: {total:?}\nbreaker: {transitions:?}");

    assert!(total.lost.is_empty(), "{context}");
    assert_eq!(total.ok, REQUESTS, "{context}");
    assert!(seen(500) > 0, "the outage happened: {context}");

    // The breaker opened, failed requests fast with its typed error (they never reached the
    // server: the server's count of attempts is the stack's) or held them, probed, and closed.
    if fail_fast {
        assert!(total.circuit_open > 0, "fast failures: {context}");
    } else {
        assert_eq!(total.circuit_open, 0, "held, never refused: {context}");
    }
    let at = |t: &str| transitions.iter().position(|x| x == t);
    let opened = at("closed->open").unwrap_or_else(|| panic!("opened: {context}"));
    let probed = at("open->half_open").unwrap_or_else(|| panic!("probed: {context}"));
    assert!(opened < probed, "{context}");
    assert_eq!(
        transitions.last().map(String::as_str),
        Some("half_open->closed"),
        "closed after a good probe: {context}"
    );
    assert_eq!(
        throttle.breaker().state(),
        CircuitState::Closed,
        "{context}"
    );
    assert_eq!(snapshot.circuit, CircuitState::Closed, "{context}");

    // The stack heard every attempt the server answered, as the server answered it.
    assert_eq!(snapshot.attempts(), stats.attempts, "{context}");
    assert_eq!(snapshot.attempts_success, seen(200), "{context}");
    assert_eq!(snapshot.attempts_success, REQUESTS as u64, "{context}");
    assert_eq!(snapshot.attempts_failure, seen(500), "{context}");
    assert_eq!(
        snapshot.attempts_overloaded,
        seen(429) + seen(503),
        "{context}"
    );
    assert!(total.gave_back_5xx as u64 <= seen(500), "{context}");
    assert_eq!(
        snapshot.attempts_fatal + snapshot.attempts_cancelled,
        0,
        "{context}"
    );
    assert_eq!(snapshot.open_slots, 0, "every slot ended: {context}");
    assert!(stats.peak_in_flight <= 3, "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_breaker_opens_fails_fast_probes_and_closes_over_an_outage_of_500s() {
    let (addr, api, server) = serve(&outage_500()).await;
    let url = format!("http://{addr}/v1/chat/completions");
    outage_opens_and_closes_the_breaker(reqwest_client(), fail_fast_throttle(), api, url, true)
        .await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_client_calls_wait_for_the_breaker_to_probe_and_close_over_an_outage_of_500s() {
    let (addr, api, server) = serve(&outage_500()).await;
    let url = format!("http://{addr}/v1/chat/completions");
    outage_opens_and_closes_the_breaker(reqwest_client(), throttle(), api, url, false).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_client_breaker_opens_fails_fast_probes_and_closes_over_an_outage_of_500s() {
    let (addr, api, server) = serve(&outage_500()).await;
    let url = format!("http://{addr}/v1/chat/completions");
    outage_opens_and_closes_the_breaker(hyper_util_client(), fail_fast_throttle(), api, url, true)
        .await;
    server.abort();
}
