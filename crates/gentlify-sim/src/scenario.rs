//! Scenarios: the hidden limits of the simulated API, the workload, the faults and the expected
//! figures, read from TOML files in `scenarios/`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One scenario: what the simulated API hides, what the callers send, and what to expect.
///
/// Scenarios live as TOML files in `crates/gentlify-sim/scenarios/`; [`Scenario::builtin`] returns
/// the ones compiled into the crate.
///
/// ```
/// let all = gentlify_sim::Scenario::builtin();
/// assert!(all.len() >= 10);
/// assert!(all.iter().all(|s| s.requests > 0));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, also the file name of the outputs.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw (sizes, arrivals, jitter, faults, backoff jitter).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Logical requests to send in a full run.
    pub requests: usize,
    /// Logical requests in the reduced run used by the test suite (debug builds); defaults to
    /// `requests`.
    #[serde(default)]
    pub test_requests: Option<usize>,
    /// Who sends, and how fast.
    pub workload: Workload,
    /// Request sizes.
    pub sizes: Sizes,
    /// The hidden limits of the API.
    pub limits: Limits,
    /// The latency model.
    #[serde(default)]
    pub latency: Latency,
    /// Faults injected over time.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// How the common client retry behaves.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Expected figures, checked by the test suite.
    #[serde(default)]
    pub expect: Expect,
}

fn default_seed() -> u64 {
    42
}

/// The callers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    /// Closed-loop backlog or open-loop arrivals.
    #[serde(flatten)]
    pub kind: WorkloadKind,
    /// Independent clients (each with its own client stack) sharing the API's one quota; the
    /// requests are dealt round-robin.
    #[serde(default = "one")]
    pub clients: usize,
}

fn one() -> usize {
    1
}

/// How requests are offered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A backlog of `requests`, worked off by `workers` loops per client, each sending its next
    /// request as soon as the previous one finished.
    Closed {
        /// Loops per client.
        workers: usize,
    },
    /// Poisson arrivals at `rate_per_s` in total (split evenly between the clients).
    Open {
        /// Mean arrivals per second.
        rate_per_s: f64,
    },
}

/// Request sizes in tokens, drawn per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Prompt tokens (the request body carries `4 ×` that many characters).
    pub prompt_tokens: Dist,
    /// Output tokens (sent as `max_tokens`; the API produces exactly that many).
    pub output_tokens: Dist,
    /// Whether responses stream as SSE (the body time is then part of the work).
    #[serde(default)]
    pub stream: bool,
}

/// A seeded distribution of a positive integer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case")]
pub enum Dist {
    /// Always `value`.
    Fixed {
        /// The value.
        value: u64,
    },
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest value.
        min: u64,
        /// Largest value.
        max: u64,
    },
    /// Log-normal around `median` with shape `sigma`, clamped to `min..=max`: a few large
    /// requests among many small ones, as in real LLM traffic.
    LogNormal {
        /// The median.
        median: f64,
        /// The shape (standard deviation of the log).
        sigma: f64,
        /// Lower clamp.
        min: u64,
        /// Upper clamp.
        max: u64,
    },
}

impl Dist {
    /// Draws one value.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { min, max } => rng.u64(min..=max.max(min)),
            Dist::LogNormal {
                median,
                sigma,
                min,
                max,
            } => {
                // Box-Muller: one standard normal from two uniforms.
                let u1 = rng.f64().max(f64::MIN_POSITIVE);
                let u2 = rng.f64();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let v = (median.ln() + sigma * z).exp();
                (v.round() as u64).clamp(min, max.max(min))
            }
        }
    }
}

/// The hidden limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight the API serves at once (C). Capacity faults change it over time.
    pub concurrency: usize,
    /// Status sent when a request arrives over C: 429, 503 or 529.
    #[serde(default = "default_overload_status")]
    pub over_concurrency_status: u16,
    /// Requests per minute (continuously refilled), if limited.
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute (prompt + `max_tokens`, charged at admission, continuously refilled),
    /// if limited.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Seconds of refill the buckets hold at most (and start with). Real providers allow a
    /// minute's worth; a smaller burst keeps short scenarios close to the steady-state oracle.
    #[serde(default = "default_burst_seconds")]
    pub burst_seconds: f64,
    /// Which provider's rate-limit headers the API sends.
    #[serde(default)]
    pub headers: HeaderStyle,
    /// Whether successful responses carry the rate-limit headers too (as OpenAI and Anthropic
    /// do).
    #[serde(default)]
    pub headers_on_success: bool,
}

fn default_overload_status() -> u16 {
    429
}

fn default_burst_seconds() -> f64 {
    5.0
}

/// The provider whose rate-limit headers the simulated API imitates (formats from
/// `shared/reference/rate-limit-signals.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go durations,
    /// `retry-after` and `retry-after-ms` on 429.
    #[default]
    Openai,
    /// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
    /// resets as RFC 3339 times, `retry-after` in whole seconds on 429.
    Anthropic,
    /// Only `retry-after` on 429.
    None,
}

/// Latency model: TTFT + output tokens × per-token time, both inflated by
/// `1 + knee × (in_flight / C)^4` (a queueing knee: about ×1.06 at half load, ×(1 + knee) at C),
/// times a seeded jitter factor uniform in `1 ± jitter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Time to first token, ms.
    #[serde(default = "default_ttft")]
    pub ttft_ms: f64,
    /// Time per output token, ms.
    #[serde(default = "default_per_token")]
    pub per_token_ms: f64,
    /// Inflation at full load.
    #[serde(default = "default_knee")]
    pub knee: f64,
    /// Relative jitter.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Output tokens per SSE chunk when streaming.
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: u64,
}

fn default_ttft() -> f64 {
    400.0
}
fn default_per_token() -> f64 {
    10.0
}
fn default_knee() -> f64 {
    1.0
}
fn default_jitter() -> f64 {
    0.1
}
fn default_chunk_tokens() -> u64 {
    50
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            ttft_ms: default_ttft(),
            per_token_ms: default_per_token(),
            knee: default_knee(),
            jitter: default_jitter(),
            chunk_tokens: default_chunk_tokens(),
        }
    }
}

impl Latency {
    /// Inflation factor with `in_flight` requests in service against a cap of `cap`.
    pub fn inflation(&self, in_flight: usize, cap: usize) -> f64 {
        let u = in_flight as f64 / cap.max(1) as f64;
        1.0 + self.knee * u.powi(4)
    }

    /// Mean service time (no jitter) of a request with `output_tokens`, at `in_flight` of `cap`.
    pub fn service_time(&self, output_tokens: f64, in_flight: usize, cap: usize) -> Duration {
        let ms =
            (self.ttft_ms + output_tokens * self.per_token_ms) * self.inflation(in_flight, cap);
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// A fault injected over a time window (seconds of virtual time from the start of the run).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Every request in the window gets `status` (a 5xx) at once.
    Outage {
        /// Start, s.
        from_s: f64,
        /// End, s.
        to_s: f64,
        /// Status sent, e.g. 500 or 503.
        #[serde(default = "default_outage_status")]
        status: u16,
    },
    /// A fraction `probability` of the requests in the window get 529 `overloaded_error`.
    OverloadBurst {
        /// Start, s.
        from_s: f64,
        /// End, s.
        to_s: f64,
        /// Fraction refused.
        probability: f64,
    },
    /// A fraction `probability` of the requests in the window hang for `after_ms`, then the
    /// connection drops (the attempt returns an error).
    Drop {
        /// Start, s.
        from_s: f64,
        /// End, s.
        to_s: f64,
        /// Fraction dropped.
        probability: f64,
        /// Time before the drop, ms.
        after_ms: f64,
    },
    /// From `at_s` on, the concurrency cap is `concurrency`.
    Capacity {
        /// When, s.
        at_s: f64,
        /// The new C.
        concurrency: usize,
    },
}

fn default_outage_status() -> u16 {
    500
}

/// The retry every contender shares (unless it brings its own): OpenAI's SDK behaviour, from
/// `shared/reference/rate-limit-signals.md`: retry 408, 409, 429, >= 500 and transport errors;
/// honour a server delay up to 120 s; else `min(0.5 × 2^n, 8) × (1 - 0.25 × rand)` s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt. The SDK's default is 2; the default here is higher so
    /// that failures measure the throttle, not the retry count.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_max_retries() -> u32 {
    8
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: default_max_retries(),
        }
    }
}

/// An inclusive range `[min, max]` an expected figure must fall in.
pub type Range = [f64; 2];

/// Expected figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The oracle's goodput over the whole scenario (requests/s), as computed from the limits.
    #[serde(default)]
    pub oracle_rps: Option<Range>,
    /// Ranges for gentlify's contenders (checked for every contender whose name starts with
    /// `gentlify`); empty until those contenders are registered.
    #[serde(default)]
    pub gentlify: Option<FigureRanges>,
}

/// Ranges for a contender's figures; a missing range is not checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureRanges {
    /// Goodput / oracle.
    #[serde(default)]
    pub goodput_ratio: Option<Range>,
    /// 429s (and 503/529) per 1 000 attempts.
    #[serde(default)]
    pub overloads_per_1000: Option<Range>,
    /// Failed logical requests.
    #[serde(default)]
    pub failed: Option<Range>,
    /// p99 latency, s.
    #[serde(default)]
    pub p99_s: Option<Range>,
    /// Peak server-side concurrency / C.
    #[serde(default)]
    pub peak_over_cap: Option<Range>,
    /// Attempts per logical request.
    #[serde(default)]
    pub attempts_per_request: Option<Range>,
    /// Settling time after a capacity step, s.
    #[serde(default)]
    pub settling_s: Option<Range>,
    /// Jain's fairness index across clients.
    #[serde(default)]
    pub fairness: Option<Range>,
    /// Highest client-side limit reported, summed over clients (e.g. to check that a limit
    /// does not inflate when the sender is the bound).
    #[serde(default)]
    pub peak_limit: Option<Range>,
}

/// Error reading a scenario file.
#[derive(Debug)]
pub struct ScenarioError(String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

macro_rules! builtin {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../scenarios/", $file)))),*]
    };
}

/// The scenario files compiled into the crate.
const BUILTIN: &[(&str, &str)] = builtin![
    "constant-cap.toml",
    "rpm-bound.toml",
    "tpm-mixed-sizes.toml",
    "capacity-step.toml",
    "outage-5xx.toml",
    "outage-5xx-long.toml",
    "burst-529.toml",
    "streaming-long-bodies.toml",
    "sender-limited.toml",
    "shared-quota.toml",
    "anthropic-headers.toml",
    "dropped-connections.toml",
    "open-loop-poisson.toml",
    "large-backlog.toml",
];

impl Scenario {
    /// Parses a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        Scenario::from_toml(&text).map_err(|e| ScenarioError(format!("{}: {e}", path.display())))
    }

    /// The scenarios shipped in `scenarios/`, in a fixed order.
    pub fn builtin() -> Vec<Scenario> {
        BUILTIN
            .iter()
            .map(|(file, text)| {
                Scenario::from_toml(text).unwrap_or_else(|e| panic!("scenarios/{file}: {e}"))
            })
            .collect()
    }

    /// This scenario with `requests` replaced by `test_requests` (for quick runs).
    pub fn reduced(mut self) -> Scenario {
        if let Some(n) = self.test_requests {
            self.requests = n;
        }
        self
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError(format!("{}: {m}", self.name)));
        if self.requests == 0 {
            return bad("requests must be > 0");
        }
        if self.limits.concurrency == 0 {
            return bad("limits.concurrency must be > 0");
        }
        if self.workload.clients == 0 {
            return bad("workload.clients must be > 0");
        }
        if ![429, 503, 529].contains(&self.limits.over_concurrency_status) {
            return bad("limits.over_concurrency_status must be 429, 503 or 529");
        }
        if let WorkloadKind::Closed { workers: 0 } = self.workload.kind {
            return bad("workload.workers must be > 0");
        }
        if let WorkloadKind::Open { rate_per_s } = self.workload.kind {
            if rate_per_s <= 0.0 {
                return bad("workload.rate_per_s must be > 0");
            }
        }
        Ok(())
    }

    /// The concurrency cap in force at `t` (virtual time since the start).
    pub fn cap_at(&self, t: Duration) -> usize {
        let mut cap = self.limits.concurrency;
        let mut at = -1.0;
        for f in &self.faults {
            if let Fault::Capacity {
                at_s, concurrency, ..
            } = *f
            {
                if at_s <= t.as_secs_f64() && at_s >= at {
                    cap = concurrency;
                    at = at_s;
                }
            }
        }
        cap.max(1)
    }
}
