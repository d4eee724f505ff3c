//! Retries for Tower, inside the request's held [`Slot`]: jittered backoff, server-directed
//! delays, a retry budget, request replay.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use gentlify_core::Feedback;
//! use gentlify_retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let feedback = Feedback::new();
//! let calls = Arc::new(AtomicUsize::new(0));
//! let upstream = service_fn({
//!     let calls = calls.clone();
//!     move |_request: http::Request<Full<Bytes>>| {
//!         let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
//!         async move {
//!             let response = if first {
//!                 // The server asks for 250 ms: the retry waits exactly that.
//!                 http::Response::builder().status(429).header("retry-after-ms", "250")
//!             } else {
//!                 http::Response::builder().status(200)
//!             };
//!             Ok::<_, Infallible>(response.body(Full::new(Bytes::from("done"))).unwrap())
//!         }
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::builder().feedback(feedback.clone()).build().unwrap())
//!     .service(upstream);
//!
//! let start = tokio::time::Instant::now();
//! let response = client.oneshot(http::Request::new(Full::new(Bytes::from("hi")))).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(start.elapsed(), Duration::from_millis(250));
//! assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "done");
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! // Both attempts reached the handle: the 429 slowed the controllers down even though the
//! // caller saw a success.
//! let snapshot = feedback.snapshot();
//! assert_eq!((snapshot.attempts_overloaded, snapshot.attempts_success), (1, 1));
//! # }
//! ```
//!
//! # What is retried, and when
//!
//! Each attempt is classified by the handle's classifier ([`Feedback::classifier`]) and published
//! to the handle, retried or not. A request is sent again when all of these hold:
//! - its class is retryable (overloaded: 429 / 503 / 529, `RESOURCE_EXHAUSTED`; failure: 5xx, 408,
//!   transport errors, [`AttemptTimeout`]), or the server sent `x-should-retry: true` with an error
//!   status; and the server did not send `x-should-retry: false` or a negative
//!   `grpc-retry-pushback-ms`;
//! - it is not fatal: for a 429 the layer reads the first [`DEFAULT_BODY_PREFIX_BYTES`] of the body
//!   and asks the classifier ([`Classify::classify_body`]) whether it says `insufficient_quota`, a
//!   spend limit, a request larger than the limit...; the caller gets the body back intact either
//!   way;
//! - it is not a local rejection ([`is_local_rejection`]: an open circuit, an acquire timeout, a
//!   budget wait too long), and the breaker is not open ([`Feedback::circuit_state`]);
//! - attempts remain ([`RetryLayerBuilder::max_attempts`]), the next one would start within
//!   [`RetryLayerBuilder::max_total_time`], and the [`RetryBudget`] has a retry to give;
//! - the request can be replayed ([`TryCloneBody`]; see [`ReplayBodyLayer`] for bodies that are not
//!   `Clone`).
//!
//! The delay is the server's when it named one — `retry-after-ms`, then `Retry-After` (seconds,
//! fractional seconds or an HTTP-date, the last to its second), then `grpc-retry-pushback-ms`,
//! then, in a 429's body, Gemini's `"retryDelay": "2.500s"` — else the [`Backoff`]; never shorter
//! than the handle's pause gate (which the header layer sets from reset hints). A server
//! delay (or pause) longer than [`RetryLayerBuilder::max_server_delay`] is not waited for: the
//! response goes back to the caller.
//!
//! After the delay, and before each retry, the retry also waits:
//! - for the handle's pause gate again, when another response paused it during the delay (a
//!   pause set by a header layer or a limiter is bounded there; this wait is not counted
//!   against [`RetryLayerBuilder::max_total_time`], the retry having been decided);
//! - for what the request's slot holds to let it go ([`Slot::poll_redispatch`]): a concurrency
//!   permit over a limit cut since it was granted holds the retry until in-flight has come
//!   down, so a retry does not add load the limiter has just taken away. The slot keeps
//!   everything it holds meanwhile; dropping the future releases it.
//!
//! When no retry happens, none of this runs.
//!
//! # The slot is kept
//!
//! The retry future keeps the inner service instance that was made ready for the request and sends
//! every attempt through it, with the request's [`Slot`] (the same one, [`Slot::attempt`] counting
//! 0, 1, 2...). Whatever holds a resource in the slot — a concurrency permit, a token reservation —
//! keeps it across attempts, whether the retry layer sits inside or outside the limiter. The slot
//! ends when the final response's body ends or is dropped, or when the caller drops the future,
//! during a backoff sleep included.
//!
//! # Where it goes in a stack
//!
//! gentlify's recommended order (outermost first) is breaker → adaptive concurrency → **retry** →
//! token budget → header feedback → the client: a retry then stays inside the concurrency permit
//! and the breaker admits one logical request (a retry needs no second admission), while the
//! budget and the header layer see every attempt. Every attempt's outcome is still published to
//! the handle, so the breaker and the concurrency controller hear each 5xx or 429, also those a
//! retry later turns into a success. Put the layers in another order and the contract still holds, because it travels in
//! the slot and the handle, not in the position: with retry outside the concurrency layer, the
//! retry goes back through the same limiter instance, which recognises the request by its slot and
//! lets it through on the permit it holds.
//!
//! Build every layer of a stack on one [`Feedback`] handle (`.feedback(handle.clone())`), so that
//! they share the classifier, the pause gate, the circuit state and the retry budget.
//!
//! # Defaults, and where they come from
//!
//! | setting | default | source |
//! |---|---|---|
//! | [`max_attempts`](RetryLayerBuilder::max_attempts) | 3 | the OpenAI and Anthropic SDKs' 2 retries |
//! | [`backoff`](RetryLayerBuilder::backoff) | 500 ms × 2ⁿ, capped at 8 s, full jitter | the same SDKs' curve; full jitter from Brooker, "Exponential Backoff And Jitter" (AWS, 2015) |
//! | [`max_server_delay`](RetryLayerBuilder::max_server_delay) | 120 s | a minute-window quota resets within it |
//! | [`budget`](RetryLayerBuilder::budget) | the handle's: 20 % + 10/s over 10 s | Finagle's `RetryBudget`, as tower's `TpsBudget` has it |
//! | [`body_prefix_bytes`](RetryLayerBuilder::body_prefix_bytes) | 8 KiB | provider error bodies name their type in the first few hundred bytes |
//! | [`attempt_timeout`](RetryLayerBuilder::attempt_timeout), [`max_total_time`](RetryLayerBuilder::max_total_time), [`wait_for_probe`](RetryLayerBuilder::wait_for_probe) | off | |
//!
//! # Bodies
//!
//! Requests: a `Clone` body (`Full<Bytes>`, `String`, `Bytes`...) is replayed as is. Put a
//! [`ReplayBodyLayer`] outside the retry layer for bodies that are not `Clone`: bodies within its
//! bound are buffered and replayed, larger ones go out once, unretried, never truncated.
//!
//! Responses come back as `http::Response<SlotBody<RetryBody<B>>>`: [`RetryBody`] yields the
//! inner body's bytes exactly (the prefix read to classify a 429 is replayed first), and
//! [`SlotBody`] ends the slot at the end of the body.
//!
//! # reqwest
//!
//! With the `reqwest` feature, [`Retry`] also serves `reqwest::Request`s, replayed with
//! `try_clone` (a streaming body goes out once), over an inner service answering
//! `reqwest::Response`s; it returns `http::Response`s (`response.map(reqwest::Body::wrap)` and
//! `reqwest::Response::from` give a reqwest response back). reqwest 0.13's `Request` has no public
//! extensions, so the slot cannot travel in it: the retry layer keeps the slot to itself, every
//! attempt is still published to the handle, but layers below it and the inner service cannot
//! see the slot (read the [`attempt_header`](RetryLayerBuilder::attempt_header) instead). To
//! stack gentlify layers around a reqwest client with the slot intact, send `http::Request`s
//! through the stack and convert at the bottom, in a `service_fn` around the client:
//! `reqwest::Request::try_from(http_request)` then `http::Response::from(reqwest_response)`.
//!
//! # Limits
//!
//! - A 429 whose class the body may change is published by the layers nearer the server only once
//!   the retry layer has read its body (or the next attempt is sent, or the request ends), so the
//!   handle hears "fatal" for an `insufficient_quota` 429 whatever the order of the layers.
//! - A gRPC response whose class is only known from its trailers is not retried (the caller has
//!   the stream by then).
//! - The body of an attempt that is retried is dropped unread: over HTTP/1.1 its connection is
//!   not reused.
//! - An error from the inner service's `poll_ready` before a retry ends the request with that
//!   error; [`wait_for_probe`](RetryLayerBuilder::wait_for_probe) applies to rejections from the
//!   response future (as gentlify's breaker makes them).
//!
//! [`Feedback::classifier`]: gentlify_core::Feedback::classifier
//! [`Feedback::circuit_state`]: gentlify_core::Feedback::circuit_state
//! [`Classify::classify_body`]: gentlify_core::Classify::classify_body
//! [`is_local_rejection`]: gentlify_core::error::is_local_rejection
//! [`Slot`]: gentlify_core::Slot
//! [`Slot::poll_redispatch`]: gentlify_core::Slot::poll_redispatch
//! [`Slot::attempt`]: gentlify_core::Slot::attempt
//! [`Feedback`]: gentlify_core::Feedback
//! [`SlotBody`]: gentlify_core::SlotBody

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod backoff;
mod body;
mod budget;
mod error;
pub mod future;
mod layer;
mod replay;
mod service;

pub use backoff::{Backoff, Jitter};
pub use body::RetryBody;
pub use budget::RetryBudget;
pub use error::{AttemptTimeout, ConfigError};
pub use layer::{
    RetryLayer, RetryLayerBuilder, DEFAULT_BODY_PREFIX_BYTES, DEFAULT_MAX_SERVER_DELAY,
};
pub use replay::{
    IntoHttpResponse, ReplayBody, ReplayBodyLayer, ReplayBodyService, ReplayRequest, TryCloneBody,
};
pub use service::Retry;
