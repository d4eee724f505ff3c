//! Shared pieces of the runnable examples (see `examples/*.rs`): the simulated LLM API served on
//! loopback with its statistics at hand, the demo's scenario, request bodies, and small text
//! charts.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let server = gentlify_examples::SimServer::start(gentlify_examples::demo_scenario()).await?;
//! println!("POST {}", server.url());
//! println!("the server saw {} attempts", server.stats().attempts);
//! # Ok(()) }
//! ```

pub mod grpc;

use std::net::SocketAddr;

use gentlify_sim::{Dist, Scenario, ServerStats, SimUpstream};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The demo's simulated API: a hidden concurrency cap of 8 (a 429 without `retry-after` over
/// it), 1 200 requests and 900 000 tokens per minute with OpenAI's headers on every response,
/// and latencies of tens of milliseconds so that a run of a few hundred requests takes seconds.
pub const DEMO_SCENARIO: &str = r#"
name = "demo"
description = "A hidden cap of 8 at once, 1200 RPM and 900k TPM with OpenAI-style headers"
seed = 7
requests = 400

[workload]
kind = "closed"
workers = 48

[sizes]
prompt_tokens = { dist = "log_normal", median = 300, sigma = 1.0, min = 20, max = 4000 }
output_tokens = { dist = "uniform", min = 20, max = 300 }

[limits]
concurrency = 8
over_concurrency_status = 429
requests_per_minute = 1200
tokens_per_minute = 900000
burst_seconds = 3.0
headers = "openai"
headers_on_success = true

[latency]
ttft_ms = 60
per_token_ms = 1.0
knee = 0.5
jitter = 0.2
chunk_tokens = 40
"#;

/// The demo's scenario (see [`DEMO_SCENARIO`]).
pub fn demo_scenario() -> Scenario {
    Scenario::from_toml(DEMO_SCENARIO).expect("the demo scenario is valid")
}

/// The simulated API served over HTTP/1.1 on `127.0.0.1` (a free port), in real time.
///
/// Unlike [`gentlify_sim::serve`], it keeps the [`SimUpstream`] at hand, so that a run can
/// print (or a test can check) what the server saw. The server stops when this is dropped.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    api: SimUpstream,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Binds `127.0.0.1:0` and serves `scenario`; its clock starts now.
    pub async fn start(scenario: Scenario) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let api = SimUpstream::new(&scenario);
        let served = api.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(served.clone());
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(SimServer { addr, api, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The chat completions URL, `http://127.0.0.1:<port>/v1/chat/completions`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }

    /// What the server saw so far.
    pub fn stats(&self) -> ServerStats {
        self.api.stats()
    }

    /// Requests in service right now.
    pub fn in_flight(&self) -> usize {
        self.api.in_flight()
    }

    /// The simulated API itself.
    pub fn api(&self) -> &SimUpstream {
        &self.api
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One chat request of a workload: its sizes and whether it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Prompt tokens (the body carries 4 characters per token).
    pub prompt_tokens: u64,
    /// `max_tokens` (the simulated API produces exactly that many).
    pub max_tokens: u64,
    /// Whether the response streams as server-sent events.
    pub stream: bool,
}

impl Job {
    /// The OpenAI chat request body for this job.
    pub fn body(&self) -> String {
        gentlify_sim::chat_request(self.prompt_tokens, self.max_tokens, self.stream).into_body()
    }

    /// A `POST url` request with this job's body and a (fake) API key.
    pub fn request(&self, url: &str) -> http::Request<String> {
        http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, "Bearer sk-demo-not-a-real-key")
            .body(self.body())
            .expect("a valid request")
    }
}

/// `n` jobs drawn from `scenario`'s size distributions (seeded), one in `stream_every` streamed
/// (0: none).
pub fn jobs(scenario: &Scenario, n: usize, stream_every: usize) -> Vec<Job> {
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let draw = |d: &Dist, rng: &mut fastrand::Rng| d.sample(rng);
    (0..n)
        .map(|i| Job {
            prompt_tokens: draw(&scenario.sizes.prompt_tokens, &mut rng),
            max_tokens: draw(&scenario.sizes.output_tokens, &mut rng),
            stream: stream_every != 0 && i % stream_every == stream_every - 1,
        })
        .collect()
}

/// A one-line chart of `values` scaled to `0..=max`, one block character per value.
///
/// ```
/// assert_eq!(gentlify_examples::sparkline(&[0.0, 4.0, 8.0], 8.0), "▁▅█");
/// ```
pub fn sparkline(values: &[f64], max: f64) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|v| {
            let x = if max > 0.0 {
                (v / max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            BLOCKS[((x * 7.0).round() as usize).min(7)]
        })
        .collect()
}

/// The `q`-quantile (0..=1) of `sorted` (ascending), 0 when empty.
///
/// ```
/// assert_eq!(gentlify_examples::quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
/// ```
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
