//! The client side: the meter every attempt passes through, the type-erased client stack a
//! contender builds, and the retry all contenders share.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gentlify_core::BoxError;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use crate::scenario::RetryPolicy;
use crate::upstream::{SimBody, SimUpstream};

/// The response body a client stack returns (any body, boxed).
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// A contender's client stack, type-erased: OpenAI chat requests in, responses out.
pub type ClientStack = BoxCloneService<Request<String>, Response<ClientBody>, BoxError>;

/// Boxes a response body into a [`ClientBody`] (for `map_response` at the top of a stack).
pub fn box_response<B>(resp: Response<B>) -> Response<ClientBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    resp.map(|b| b.map_err(Into::into).boxed_unsync())
}

thread_local! {
    static LAST_RTT: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// The virtual-time latency of the attempt that completed last on this thread.
///
/// Peers that time requests with `std::time::Instant` (tower-acc, tower-resilience) cannot see
/// the paused tokio clock; their algorithm is wrapped to read this value instead, which the
/// [`MeteredUpstream`] sets when an attempt's response arrives. The peer's response future
/// completes and is dropped within the same poll, on the same thread, so the value read is the
/// attempt's own.
pub fn take_virtual_rtt() -> Option<Duration> {
    LAST_RTT.with(Cell::take)
}

/// What one client observed of its own attempts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClientMeter {
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts answered 429, 503 or 529.
    pub overloaded: u64,
    /// Attempts sent while a `retry-after` this client had received had not yet expired.
    pub sent_before_retry_after: u64,
    /// Attempts in flight now.
    pub in_flight: usize,
    #[serde(skip)]
    retry_after_until: Option<Instant>,
}

/// The simulated API seen through one client's meter: what a contender's stack wraps.
#[derive(Clone)]
pub struct MeteredUpstream {
    api: SimUpstream,
    meter: Arc<Mutex<ClientMeter>>,
}

impl fmt::Debug for MeteredUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredUpstream")
            .field("api", &self.api)
            .finish()
    }
}

impl MeteredUpstream {
    /// Meters `api` for one client.
    pub fn new(api: SimUpstream) -> MeteredUpstream {
        MeteredUpstream {
            api,
            meter: Arc::default(),
        }
    }

    /// A copy of what this client observed.
    pub fn meter(&self) -> ClientMeter {
        self.meter.lock().expect("meter lock").clone()
    }

    /// The simulated API behind the meter.
    pub fn api(&self) -> &SimUpstream {
        &self.api
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl Service<Request<String>> for MeteredUpstream {
    type Response = Response<SimBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<SimBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let start = Instant::now();
        {
            let mut m = self.meter.lock().expect("meter lock");
            m.attempts += 1;
            m.in_flight += 1;
            if m.retry_after_until.is_some_and(|until| start < until) {
                m.sent_before_retry_after += 1;
            }
        }
        let meter = self.meter.clone();
        let fut = self.api.clone().oneshot(req);
        Box::pin(async move {
            let result = fut.await;
            let now = Instant::now();
            LAST_RTT.with(|c| c.set(Some(now - start)));
            let mut m = meter.lock().expect("meter lock");
            m.in_flight -= 1;
            if let Ok(resp) = &result {
                if matches!(resp.status().as_u16(), 429 | 503 | 529) {
                    m.overloaded += 1;
                }
                if let Some(delay) = gentlify_core::retry_after(resp.headers()) {
                    let until = now + delay;
                    if m.retry_after_until.is_none_or(|u| u < until) {
                        m.retry_after_until = Some(until);
                    }
                }
            }
            result
        })
    }
}

/// How a logical request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The last answer was 429, 503 or 529.
    Overloaded,
    /// The last answer was another 5xx.
    Server,
    /// The last answer was a 4xx other than 429 (or a 429 that can never succeed).
    Client,
    /// The last attempt failed in transport (dropped connection, peer error).
    Transport,
    /// The client stack refused locally (circuit open, acquire timeout, ...).
    Local,
}

/// The result of one logical request.
#[derive(Debug, Clone, Copy)]
pub struct RequestResult {
    /// `None` when completed (2xx and the body read to its end).
    pub failure: Option<FailureClass>,
    /// Attempts this request made (as seen by the retry loop; 1 when the stack retries itself).
    pub attempts: u32,
}

/// Sends one logical request through `stack`, reading the body to its end, retrying as the
/// official OpenAI SDK does when `policy` is given (see [`RetryPolicy`]).
pub async fn send<F>(
    stack: &mut ClientStack,
    make_request: F,
    policy: Option<&RetryPolicy>,
    rng: &mut fastrand::Rng,
) -> RequestResult
where
    F: Fn() -> Request<String>,
{
    let max_retries = policy.map_or(0, |p| p.max_retries);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match stack.ready().await {
            Ok(svc) => svc.call(make_request()).await,
            Err(e) => Err(e),
        };
        let retries_done = attempts - 1;
        let (failure, server_delay) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    match resp.into_body().collect().await {
                        Ok(_) => {
                            return RequestResult {
                                failure: None,
                                attempts,
                            }
                        }
                        Err(_) => (FailureClass::Transport, None),
                    }
                } else {
                    let headers = resp.headers().clone();
                    let body = resp.into_body().collect().await.map(|c| c.to_bytes());
                    let fatal = body
                        .as_ref()
                        .ok()
                        .and_then(|b| gentlify_core::fatal_reason(b))
                        .is_some();
                    let class = match status {
                        _ if fatal => FailureClass::Client,
                        429 | 503 | 529 => FailureClass::Overloaded,
                        408 | 409 => FailureClass::Server,
                        s if s >= 500 => FailureClass::Server,
                        _ => FailureClass::Client,
                    };
                    let retryable = match gentlify_core::should_retry(&headers) {
                        Some(v) => v,
                        None => class != FailureClass::Client || matches!(status, 408 | 409),
                    };
                    if !retryable || fatal {
                        return RequestResult {
                            failure: Some(class),
                            attempts,
                        };
                    }
                    (class, gentlify_core::retry_after(&headers))
                }
            }
            Err(e) => {
                let class = if gentlify_core::error::is_local_rejection(&*e) {
                    FailureClass::Local
                } else {
                    FailureClass::Transport
                };
                (class, None)
            }
        };
        if retries_done >= max_retries {
            return RequestResult {
                failure: Some(failure),
                attempts,
            };
        }
        // The SDK honours a server delay up to 120 s; otherwise exponential backoff with jitter.
        let delay = match server_delay {
            Some(d) if d <= Duration::from_secs(120) => d,
            _ => {
                let base = (0.5 * 2f64.powi(retries_done as i32)).min(8.0);
                Duration::from_secs_f64(base * (1.0 - 0.25 * rng.f64()))
            }
        };
        tokio::time::sleep(delay).await;
    }
}
