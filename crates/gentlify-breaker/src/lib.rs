//! A circuit breaker for Tower that shares [gentlify]'s feedback handle: it fails fast while the
//! upstream is down, then probes it back carefully.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use gentlify_breaker::CircuitBreakerLayer;
//! use gentlify_core::{error::CircuitOpen, CircuitState, Feedback};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let feedback = Feedback::new();
//! let breaker = CircuitBreakerLayer::builder()
//!     .feedback(feedback.clone())
//!     .consecutive_failures(3)
//!     .open_for(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! let handle = breaker.handle();
//!
//! // An upstream that is down: every call is a 502.
//! let mut client = ServiceBuilder::new().layer(breaker).service(service_fn(
//!     |_req: http::Request<()>| async {
//!         Ok::<_, Infallible>(
//!             http::Response::builder().status(502).body(Full::new(Bytes::new())).unwrap(),
//!         )
//!     },
//! ));
//!
//! for _ in 0..3 {
//!     let response = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//!     assert_eq!(response.status(), 502);
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//! assert_eq!(feedback.circuit_state(), CircuitState::Open, "the other layers see it");
//!
//! // Open: rejected at once, with the time until the next probe.
//! let err = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.retry_in(), Duration::from_secs(10));
//!
//! // After the open period, a probe goes through.
//! tokio::time::advance(Duration::from_secs(10)).await;
//! let probe = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(handle.state(), CircuitState::HalfOpen);
//! # drop(probe); }
//! ```
//!
//! # States
//!
//! - **Closed**: calls flow; every attempt's outcome is recorded in a sliding window
//!   ([`SlidingWindow`]: the last *n* calls, or the calls of the last *d*, both O(1) per update).
//!   The breaker opens when the window holds at least [`minimum_calls`] and its failure rate
//!   reaches the threshold (or its slow-call rate reaches its own), after
//!   [`consecutive_failures`] failures in a row (10 by default), or, when turned on, when
//!   latencies jump several standard deviations above their rolling mean ([`LatencyAnomaly`]).
//! - **Open**: calls are rejected at once with
//!   [`CircuitOpen`](gentlify_core::error::CircuitOpen), which says how long until the next
//!   probe. The open period ([`open_for`], 30 s by default) doubles each time probing fails, up to
//!   5× by default, with optional jitter; a server-directed pause on the handle (a `Retry-After`
//!   seen by another layer) holds it open longer. An attempt sent after the breaker opened
//!   (by a request admitted before, still queued below it) that comes back well ends the open
//!   period at once: the next call goes as a probe. With [`wait_while_open`], a call waits for
//!   admission instead (its `poll_ready` stays pending until the period ends, a probe's place
//!   frees up or the breaker closes, up to a bound): only probes reach the upstream either way,
//!   but a closed-loop batch is held rather than drained into rejections.
//! - **Half-open**: up to [`half_open_probes`] calls at once go through as probes. A probe holds
//!   its permit in the request's slot until the response body ends; a dropped probe gives it back;
//!   a probe still in flight after [`probe_deadline`] is replaced. Once that many probes have
//!   answered, the breaker closes, or opens again if their failure rate reached the threshold.
//! - **Forced open** and **disabled**, set by hand through the [`CircuitBreakerHandle`].
//!
//! # What counts
//!
//! The breaker does not read its own responses: it is a [`Controller`] on the shared handle and
//! hears every attempt's [`Outcome`], including the attempts a retry layer below it makes.
//! Failures (5xx, transport errors, timeouts) count as failures. Overload answers (429, 503, 529)
//! are **not** failures by default: the adaptive concurrency layer slows down for them, and a
//! breaker that also opened would turn a rate limit into an outage. [`Verdict`]s change that per
//! class; the handle's classifier decides the class. Each state judges only the attempts sent
//! after it began: a slow straggler sent before the breaker opened does not decide a half-open
//! breaker's fate.
//!
//! Admission is decided in `poll_ready`, before the request is known, so put the breaker
//! *outside* a retry layer (gentlify's default order): retries then happen inside one admitted
//! call. A retry layer outside the breaker makes every retry pass admission again, and in
//! half-open a retry competes for the probe permits like any new request.
//!
//! Every state change sets the handle's [`CircuitState`] (so the concurrency layer does not grow
//! while half-open, and the retry layer does not retry a rejection), emits a `tracing` event and
//! calls the optional [`on_transition`] callback. The handle's snapshot carries a `"breaker"`
//! part; [`CircuitBreakerHandle::snapshot`] gives the same figures typed.
//!
//! [gentlify]: https://docs.rs/gentlify
//! [`Controller`]: gentlify_core::Controller
//! [`Outcome`]: gentlify_core::Outcome
//! [`CircuitState`]: gentlify_core::CircuitState
//! [`minimum_calls`]: CircuitBreakerBuilder::minimum_calls
//! [`consecutive_failures`]: CircuitBreakerBuilder::consecutive_failures
//! [`open_for`]: CircuitBreakerBuilder::open_for
//! [`half_open_probes`]: CircuitBreakerBuilder::half_open_probes
//! [`probe_deadline`]: CircuitBreakerBuilder::probe_deadline
//! [`wait_while_open`]: CircuitBreakerBuilder::wait_while_open
//! [`on_transition`]: CircuitBreakerBuilder::on_transition

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod anomaly;
mod breaker;
mod config;
pub mod error;
pub mod future;
mod layer;
mod service;
mod window;

pub use anomaly::LatencyAnomaly;
pub use breaker::{BreakerSnapshot, CircuitBreakerHandle, Transition, TransitionReason};
pub use config::{CircuitBreakerBuilder, SlidingWindow, Verdict};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
