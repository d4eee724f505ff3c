//! The simulated LLM API: a `tower::Service` with hidden limits, in virtual time.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gentlify_core::BoxError;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use crate::scenario::{Fault, HeaderStyle, Scenario};

/// The simulated API. Cheap to clone; clones share the limits, the load and the statistics.
///
/// Requests are OpenAI chat requests (`{"max_tokens": n, "stream": bool, "messages": [...]}`);
/// the prompt counts one token per 4 characters of message content. The API answers after the
/// modelled latency, refuses what is over its hidden limits with the provider's status and
/// headers, and injects the scenario's faults. A dropped connection is an `Err`
/// ([`ConnectionDropped`]).
///
/// ```
/// use gentlify_sim::{Scenario, SimUpstream, chat_request};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let scenario = Scenario::builtin().remove(0);
/// let api = SimUpstream::new(&scenario);
/// let resp = api.clone().oneshot(chat_request(100, 20, false)).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// assert_eq!(api.stats().attempts, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct SimUpstream {
    shared: Arc<Shared>,
}

struct Shared {
    scenario: Scenario,
    state: Mutex<ServerState>,
}

impl fmt::Debug for SimUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUpstream")
            .field("scenario", &self.shared.scenario.name)
            .finish()
    }
}

struct ServerState {
    start: Instant,
    wall_start: SystemTime,
    rng: fastrand::Rng,
    in_flight: usize,
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    stats: ServerStats,
}

/// What the simulated API saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerStats {
    /// Attempts that reached the API.
    pub attempts: u64,
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Dropped connections.
    pub dropped: u64,
    /// Refusals for load (429, 503, 529), as seconds since the start.
    pub overload_times_s: Vec<f64>,
    /// Refusals because the concurrency cap was reached, as seconds since the start.
    pub cap_refusal_times_s: Vec<f64>,
    /// Highest concurrency requested of the API (admitted in flight + 1 at an arrival checked
    /// against the cap).
    pub peak_offered_concurrency: usize,
    /// Highest concurrency in service.
    pub peak_in_flight: usize,
    /// Peak offered concurrency divided by the cap in force at that moment (the worst overshoot).
    pub peak_over_cap: f64,
}

/// A continuously refilled bucket (how OpenAI and Anthropic describe their per-minute limits).
#[derive(Debug, Clone)]
struct TokenBucket {
    per_minute: f64,
    capacity: f64,
    level: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_minute: u64, burst_seconds: f64, now: Instant) -> Self {
        let capacity = (per_minute as f64 * burst_seconds / 60.0).max(1.0);
        TokenBucket {
            per_minute: per_minute as f64,
            capacity,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_minute / 60.0).min(self.capacity);
        self.at = now;
    }

    /// Time until `amount` is available.
    fn wait_for(&self, amount: f64) -> Duration {
        let missing = (amount - self.level).max(0.0);
        Duration::from_secs_f64(missing * 60.0 / self.per_minute)
    }

    fn reset_in(&self) -> Duration {
        self.wait_for(self.capacity)
    }
}

/// The attempt's connection dropped before a response (a simulated transport error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionDropped;

impl fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by the simulated API")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Builds an OpenAI chat request with a prompt of `prompt_tokens` (4 characters each) and
/// `max_tokens` output tokens.
pub fn chat_request(prompt_tokens: u64, max_tokens: u64, stream: bool) -> Request<String> {
    let content = "abcd".repeat(prompt_tokens as usize);
    let body = serde_json::json!({
        "model": "sim-1",
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { serde_json::Value::Null },
        "messages": [{"role": "user", "content": content}],
    });
    Request::post("/v1/chat/completions")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .expect("valid request")
}

#[derive(Debug, serde::Deserialize)]
struct ChatRequest {
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Debug, serde::Deserialize)]
struct Message {
    #[serde(default)]
    content: String,
}

/// Releases the request's place in the API's concurrency when dropped (the end of the body, or
/// the caller giving up).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.in_flight -= 1;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Decision {
    Respond(Response<SimBody>),
    Drop(Duration, InFlight),
    Serve(Plan),
}

struct Plan {
    ttft: Duration,
    chunk_gaps: Vec<Duration>,
    prompt_tokens: u64,
    output_tokens: u64,
    stream: bool,
    headers: HeaderMap,
    guard: InFlight,
}

/// The wall-clock time at the start of a virtual-time run (2026-01-01T00:00:00Z): the simulated
/// API's absolute resets count from it, and a client's header layer reads them with a wall
/// clock starting there too.
pub fn sim_wall_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

impl SimUpstream {
    /// A fresh API with the scenario's hidden limits; the clock starts now, and absolute
    /// resets in headers (Anthropic's RFC 3339 times) count from the real wall clock.
    pub fn new(scenario: &Scenario) -> SimUpstream {
        SimUpstream::with_wall_start(scenario, SystemTime::now())
    }

    /// As [`SimUpstream::new`], with the wall clock reading `wall_start` now: virtual-time runs
    /// use [`sim_wall_epoch`], so that the headers (and the tables) do not depend on the real
    /// date.
    pub fn with_wall_start(scenario: &Scenario, wall_start: SystemTime) -> SimUpstream {
        let now = Instant::now();
        let limits = &scenario.limits;
        let state = ServerState {
            start: now,
            wall_start,
            rng: fastrand::Rng::with_seed(scenario.seed ^ 0x5151_5151),
            in_flight: 0,
            requests: limits
                .requests_per_minute
                .map(|r| TokenBucket::new(r, limits.burst_seconds, now)),
            tokens: limits
                .tokens_per_minute
                .map(|t| TokenBucket::new(t, limits.burst_seconds, now)),
            stats: ServerStats::default(),
        };
        SimUpstream {
            shared: Arc::new(Shared {
                scenario: scenario.clone(),
                state: Mutex::new(state),
            }),
        }
    }

    /// The scenario this API simulates.
    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    /// Requests in service right now.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Virtual time since the API was made.
    pub fn elapsed(&self) -> Duration {
        self.shared.lock().start.elapsed()
    }

    /// A copy of the statistics so far.
    pub fn stats(&self) -> ServerStats {
        self.shared.lock().stats.clone()
    }

    fn decide(&self, req: ChatRequest) -> Decision {
        let shared = &self.shared;
        let sc = &shared.scenario;
        let style = sc.limits.headers;
        let prompt_tokens = req
            .messages
            .iter()
            .map(|m| (m.content.len() as u64).div_ceil(4))
            .sum::<u64>();
        let output_tokens = req.max_tokens.unwrap_or(256).max(1);
        let cost = (prompt_tokens + output_tokens) as f64;

        let mut guard = shared.lock();
        let st = &mut *guard;
        let now = Instant::now();
        let t = now.saturating_duration_since(st.start);
        let ts = t.as_secs_f64();
        st.stats.attempts += 1;
        if let Some(b) = st.requests.as_mut() {
            b.refill(now);
        }
        if let Some(b) = st.tokens.as_mut() {
            b.refill(now);
        }

        // Requests per minute: every attempt that finds a request in the bucket takes it,
        // whatever happens to it next (failed attempts count, as OpenAI documents).
        if let Some(b) = st.requests.as_mut() {
            if b.level < 1.0 {
                let wait = b.wait_for(1.0);
                return Decision::Respond(st.rate_limited(style, wait, "requests", ts));
            }
            b.level -= 1.0;
        }

        for fault in &sc.faults {
            match *fault {
                Fault::Outage {
                    from_s,
                    to_s,
                    status,
                } if (from_s..to_s).contains(&ts) => {
                    return Decision::Respond(st.plain(status, ts, style, sc));
                }
                Fault::OverloadBurst {
                    from_s,
                    to_s,
                    probability,
                } if (from_s..to_s).contains(&ts) && st.rng.f64() < probability => {
                    return Decision::Respond(st.plain(529, ts, style, sc));
                }
                _ => {}
            }
        }

        if let Some(b) = st.tokens.as_mut() {
            if cost > b.capacity {
                // Can never succeed: OpenAI's "Request too large" (fatal for a good client).
                let body = format!(
                    "{{\"error\":{{\"message\":\"Request too large for sim-1: Limit {}, Requested {}\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}}}",
                    b.capacity as u64, cost as u64
                );
                return Decision::Respond(st.respond(429, body, HeaderMap::new(), ts));
            }
            if b.level < cost {
                let wait = b.wait_for(cost);
                return Decision::Respond(st.rate_limited(style, wait, "tokens", ts));
            }
            b.level -= cost;
        }

        let cap = sc.cap_at(t);
        let offered = st.in_flight + 1;
        st.stats.peak_offered_concurrency = st.stats.peak_offered_concurrency.max(offered);
        st.stats.peak_over_cap = st.stats.peak_over_cap.max(offered as f64 / cap as f64);
        if st.in_flight >= cap {
            st.stats.cap_refusal_times_s.push(ts);
            let status = sc.limits.over_concurrency_status;
            return Decision::Respond(st.plain(status, ts, style, sc));
        }

        st.in_flight += 1;
        st.stats.peak_in_flight = st.stats.peak_in_flight.max(st.in_flight);
        let guard_in_flight = InFlight(shared.clone());

        for fault in &sc.faults {
            if let Fault::Drop {
                from_s,
                to_s,
                probability,
                after_ms,
            } = *fault
            {
                if (from_s..to_s).contains(&ts) && st.rng.f64() < probability {
                    st.stats.dropped += 1;
                    return Decision::Drop(
                        Duration::from_secs_f64(after_ms / 1000.0),
                        guard_in_flight,
                    );
                }
            }
        }

        let lat = &sc.latency;
        let inflation = lat.inflation(st.in_flight, cap);
        let jitter = 1.0 + lat.jitter * (st.rng.f64() * 2.0 - 1.0);
        let scale = inflation * jitter.max(0.05) / 1000.0;
        let ttft = Duration::from_secs_f64(lat.ttft_ms * scale);
        let chunk = lat.chunk_tokens.max(1);
        let mut chunk_gaps = Vec::new();
        let mut left = output_tokens;
        while left > 0 {
            let n = left.min(chunk);
            chunk_gaps.push(Duration::from_secs_f64(n as f64 * lat.per_token_ms * scale));
            left -= n;
        }
        let headers = if sc.limits.headers_on_success {
            st.quota_headers(style)
        } else {
            HeaderMap::new()
        };
        *st.stats.statuses.entry(200).or_default() += 1;
        Decision::Serve(Plan {
            ttft,
            chunk_gaps,
            prompt_tokens,
            output_tokens,
            stream: req.stream,
            headers,
            guard: guard_in_flight,
        })
    }
}

impl ServerState {
    fn respond(
        &mut self,
        status: u16,
        body: String,
        headers: HeaderMap,
        ts: f64,
    ) -> Response<SimBody> {
        *self.stats.statuses.entry(status).or_default() += 1;
        if matches!(status, 429 | 503 | 529) {
            self.stats.overload_times_s.push(ts);
        }
        let mut resp = Response::new(SimBody::full(body));
        *resp.status_mut() = StatusCode::from_u16(status).expect("valid status");
        *resp.headers_mut() = headers;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    fn plain(
        &mut self,
        status: u16,
        ts: f64,
        style: HeaderStyle,
        sc: &Scenario,
    ) -> Response<SimBody> {
        let (kind, message) = match status {
            429 => ("rate_limit_error", "Too many concurrent requests"),
            503 => ("service_unavailable", "The server is overloaded"),
            529 => ("overloaded_error", "Overloaded"),
            _ => ("api_error", "Internal server error"),
        };
        let body = error_body(style, kind, message);
        let headers = if sc.limits.headers_on_success {
            self.quota_headers(style)
        } else {
            HeaderMap::new()
        };
        self.respond(status, body, headers, ts)
    }

    fn rate_limited(
        &mut self,
        style: HeaderStyle,
        wait: Duration,
        dimension: &str,
        ts: f64,
    ) -> Response<SimBody> {
        let mut headers = self.quota_headers(style);
        let secs = wait.as_secs_f64();
        // Whole seconds, rounded up, as both providers send; OpenAI adds the exact milliseconds.
        let whole = secs.ceil().max(1.0) as u64;
        headers.insert("retry-after", HeaderValue::from(whole));
        if style == HeaderStyle::Openai {
            headers.insert(
                "retry-after-ms",
                HeaderValue::from_str(&format!("{:.0}", (secs * 1000.0).ceil().max(1.0)))
                    .expect("ascii"),
            );
        }
        let message = format!("Rate limit reached for {dimension} per min");
        let body = error_body(style, "rate_limit_error", &message);
        self.respond(429, body, headers, ts)
    }

    fn quota_headers(&self, style: HeaderStyle) -> HeaderMap {
        let mut h = HeaderMap::new();
        let dims = [("requests", &self.requests), ("tokens", &self.tokens)];
        for (name, bucket) in dims {
            let Some(b) = bucket else { continue };
            let limit = b.per_minute as u64;
            let remaining = b.level.max(0.0).floor() as u64;
            match style {
                HeaderStyle::Openai => {
                    h.insert(hname(format!("x-ratelimit-limit-{name}")), limit.into());
                    h.insert(
                        hname(format!("x-ratelimit-remaining-{name}")),
                        remaining.into(),
                    );
                    h.insert(
                        hname(format!("x-ratelimit-reset-{name}")),
                        hval(go_duration(b.reset_in())),
                    );
                }
                HeaderStyle::Anthropic => {
                    let reset = self.wall_start + self.start.elapsed() + b.reset_in();
                    h.insert(
                        hname(format!("anthropic-ratelimit-{name}-limit")),
                        limit.into(),
                    );
                    h.insert(
                        hname(format!("anthropic-ratelimit-{name}-remaining")),
                        remaining.into(),
                    );
                    h.insert(
                        hname(format!("anthropic-ratelimit-{name}-reset")),
                        hval(rfc3339(reset)),
                    );
                }
                HeaderStyle::None => {}
            }
        }
        h
    }
}

fn hname(s: String) -> http::HeaderName {
    http::HeaderName::try_from(s).expect("valid header name")
}

fn hval(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("valid header value")
}

fn error_body(style: HeaderStyle, kind: &str, message: &str) -> String {
    match style {
        HeaderStyle::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        })
        .to_string(),
        _ => {
            let code = if kind == "rate_limit_error" {
                "rate_limit_exceeded"
            } else {
                kind
            };
            serde_json::json!({
                "error": {"message": message, "type": kind, "code": code},
            })
            .to_string()
        }
    }
}

/// Formats a duration as OpenAI's reset headers do (Go's `time.Duration`): `12ms`, `1.574s`,
/// `6m0s`, `2m59.56s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    let trim = |v: f64| {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    };
    if secs < 60.0 {
        format!("{}s", trim(secs))
    } else {
        let m = (secs / 60.0).floor() as u64;
        let rest = secs - m as f64 * 60.0;
        format!("{m}m{}s", trim(rest))
    }
}

/// Formats a wall-clock time as RFC 3339 in UTC with whole seconds (Anthropic's reset headers).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<Request<B>> for SimUpstream
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<SimBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<SimBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(Into::into)?
                .to_bytes();
            let parsed: ChatRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    let mut resp = Response::new(SimBody::full(format!(
                        "{{\"error\":{{\"message\":\"invalid JSON: {e}\",\"type\":\"invalid_request_error\"}}}}"
                    )));
                    *resp.status_mut() = StatusCode::BAD_REQUEST;
                    return Ok(resp);
                }
            };
            let style = this.shared.scenario.limits.headers;
            match this.decide(parsed) {
                Decision::Respond(resp) => Ok(resp),
                Decision::Drop(after, guard) => {
                    tokio::time::sleep(after).await;
                    drop(guard);
                    Err(ConnectionDropped.into())
                }
                Decision::Serve(plan) => Ok(serve(plan, style).await),
            }
        })
    }
}

async fn serve(plan: Plan, style: HeaderStyle) -> Response<SimBody> {
    let Plan {
        ttft,
        chunk_gaps,
        prompt_tokens,
        output_tokens,
        stream,
        headers,
        guard,
    } = plan;
    tokio::time::sleep(ttft).await;
    let anthropic = style == HeaderStyle::Anthropic;
    let (body, content_type) = if stream {
        let mut frames = VecDeque::new();
        let per_chunk = output_tokens.div_ceil(chunk_gaps.len().max(1) as u64);
        let first = if anthropic {
            format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_sim\",\"type\":\"message\",\"role\":\"assistant\",\"usage\":{{\"input_tokens\":{prompt_tokens},\"output_tokens\":1}}}}}}\n\n"
            )
        } else {
            String::new()
        };
        let mut emitted = 0;
        for (i, gap) in chunk_gaps.iter().enumerate() {
            let n = per_chunk.min(output_tokens - emitted);
            emitted += n;
            let text = "tok ".repeat(n as usize);
            let mut s = if i == 0 { first.clone() } else { String::new() };
            if anthropic {
                s.push_str(&format!(
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
                ));
            } else {
                s.push_str(&format!(
                    "data: {{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
                ));
            }
            frames.push_back((*gap, Bytes::from(s)));
        }
        let last = if anthropic {
            format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{output_tokens}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
            )
        } else {
            format!(
                "data: {{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
                prompt_tokens + output_tokens
            )
        };
        frames.push_back((Duration::ZERO, Bytes::from(last)));
        (SimBody::stream(frames, guard), "text/event-stream")
    } else {
        let total: Duration = chunk_gaps.iter().sum();
        tokio::time::sleep(total).await;
        drop(guard);
        let body = if anthropic {
            serde_json::json!({
                "id": "msg_sim", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": prompt_tokens, "output_tokens": output_tokens},
            })
        } else {
            serde_json::json!({
                "id": "chatcmpl-sim", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                          "total_tokens": prompt_tokens + output_tokens},
            })
        };
        (SimBody::full(body.to_string()), "application/json")
    };
    let mut resp = Response::new(body);
    *resp.headers_mut() = headers;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

/// The simulated API's response body: a whole JSON document, or SSE chunks released over
/// (virtual) time. A streamed body holds the request's place in the API's concurrency until it
/// ends or is dropped.
pub struct SimBody {
    full: Option<Bytes>,
    frames: VecDeque<(Duration, Bytes)>,
    sleep: Option<Pin<Box<Sleep>>>,
    guard: Option<InFlight>,
}

impl fmt::Debug for SimBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBody")
            .field("full", &self.full.as_ref().map(|b| b.len()))
            .field("frames_left", &self.frames.len())
            .finish()
    }
}

impl SimBody {
    fn full(s: String) -> SimBody {
        SimBody {
            full: Some(Bytes::from(s)),
            frames: VecDeque::new(),
            sleep: None,
            guard: None,
        }
    }

    fn stream(frames: VecDeque<(Duration, Bytes)>, guard: InFlight) -> SimBody {
        SimBody {
            full: None,
            frames,
            sleep: None,
            guard: Some(guard),
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(b) = this.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some((gap, _)) = this.frames.front() else {
            this.guard = None;
            return Poll::Ready(None);
        };
        if !gap.is_zero() {
            let gap = *gap;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let (_, bytes) = this.frames.pop_front().expect("front exists");
        if this.frames.is_empty() {
            // The last frame: the request leaves the API's concurrency now.
            this.guard = None;
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.full {
            Some(b) if self.frames.is_empty() => SizeHint::with_exact(b.len() as u64),
            _ => SizeHint::default(),
        }
    }
}
