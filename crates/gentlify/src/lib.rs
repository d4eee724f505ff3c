//! Client-side, closed-loop throttling for rate-limited APIs (LLM APIs first), as Tower middleware.
//!
//! One [`Throttle`] gives the whole stack — circuit breaker, adaptive concurrency, retry, token
//! budget, header feedback — on one shared [`Feedback`] handle, so that every attempt's outcome
//! (a 429, its `retry-after`, the server's remaining quota) reaches every part at once, and the
//! client slows down before the next 429 instead of after it.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use gentlify::Throttle;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // The whole stack for OpenAI: its headers, its SDK's retry policy, our tier's limits.
//! let throttle = Throttle::openai()
//!     .name("openai-chat")
//!     .requests_per_minute(500)
//!     .tokens_per_minute(200_000)
//!     .build()
//!     .unwrap();
//!
//! // A fake OpenAI that serves 2 calls at a time and answers a third with a 429.
//! let in_flight = Arc::new(AtomicUsize::new(0));
//! let openai = service_fn(move |_request: http::Request<String>| {
//!     let in_flight = in_flight.clone();
//!     async move {
//!         if in_flight.fetch_add(1, Ordering::SeqCst) >= 2 {
//!             in_flight.fetch_sub(1, Ordering::SeqCst);
//!             let body = r#"{"error":{"code":"rate_limit_exceeded"}}"#;
//!             return Ok::<_, Infallible>(
//!                 http::Response::builder()
//!                     .status(429)
//!                     .header("retry-after-ms", "2000")
//!                     .body(Full::new(Bytes::from(body)))
//!                     .unwrap(),
//!             );
//!         }
//!         tokio::time::sleep(Duration::from_secs(2)).await; // the model writes
//!         in_flight.fetch_sub(1, Ordering::SeqCst);
//!         let body = r#"{"choices":[{"message":{"content":"Hi!"}}],
//!                        "usage":{"prompt_tokens":9,"completion_tokens":3}}"#;
//!         Ok(http::Response::new(Full::new(Bytes::from(body))))
//!     }
//! });
//!
//! let client = ServiceBuilder::new().layer(throttle.clone()).service(openai);
//! assert_eq!(throttle.concurrency().limit, 8, "the starting limit");
//!
//! let mut calls = tokio::task::JoinSet::new();
//! for _ in 0..8 {
//!     let request = http::Request::post("https://api.openai.com/v1/chat/completions")
//!         .header("authorization", "Bearer sk-...")
//!         .body(r#"{"model":"gpt-4o-mini","max_tokens":50,
//!                   "messages":[{"role":"user","content":"Say hi"}]}"#.to_string())
//!         .unwrap();
//!     let client = client.clone();
//!     calls.spawn(async move {
//!         let response = client.oneshot(request).await.unwrap();
//!         assert_eq!(response.status(), 200, "every call succeeds in the end");
//!         response.into_body().collect().await.unwrap().to_bytes()
//!     });
//! }
//! while let Some(body) = calls.join_next().await {
//!     assert!(body.unwrap().starts_with(b"{\"choices\""));
//! }
//!
//! // The 429s cut the limit down to what the server serves, and the retries were heard.
//! let snapshot = throttle.snapshot();
//! assert!(throttle.concurrency().limit <= 2, "{snapshot}");
//! assert_eq!(snapshot.attempts_success, 8);
//! assert!(snapshot.attempts_overloaded > 0);
//! assert_eq!(snapshot.open_slots, 0);
//! println!("{snapshot}");
//! # }
//! ```
//!
//! # What is in the box
//!
//! - [`Throttle`] → [`ThrottleLayer`]: the full stack, in the recommended order (breaker →
//!   adaptive concurrency → retry → token budget → header feedback → the client), each part
//!   configurable by a closure over its builder, given ready-built, or switched off; presets
//!   [`Throttle::openai`], [`Throttle::azure_openai`], [`Throttle::anthropic`],
//!   [`Throttle::openai_compatible`], each documented with where its numbers come from.
//! - [`ServiceBuilderExt`]: the layers as `ServiceBuilder` methods for stacks put together by
//!   hand.
//! - [`ThrottleGroup`]: per-endpoint (per-model, per-user) stacks made lazily and bounded in
//!   number, sharing a global budget and a breaker; hierarchies of limits.
//! - Observability: the layers emit `tracing` events (decelerations, backoffs, pauses, breaker
//!   transitions, every attempt's outcome at TRACE), never a request's or a response's headers;
//!   [`ThrottleLayer::snapshot`] reads the whole stack; [`Throttle::on_event`] calls back on each
//!   [`Event`] (including the limit's rises, [`Event::Reacceleration`], also logged at DEBUG
//!   when a callback or metrics are set); with the `metrics` feature, `Throttle::metrics(true)`
//!   records gauges, counters and histograms labelled per stack. A stack with neither callbacks
//!   nor metrics has no observer at all: nothing is done per request for them.
//! - The layer crates, re-exported as modules: [`core`], [`concurrency`], [`retry`], [`budget`],
//!   [`headers`], [`breaker`].
//!
//! # Request bodies
//!
//! Retries replay the request, so its body must be `Clone` (`String`, `Bytes`, `Full<Bytes>`...)
//! or be wrapped by [`retry::ReplayBodyLayer`]; the budget's default estimate reads bodies that
//! implement [`budget::RequestBytes`] (`String`, `Bytes`, `Vec<u8>`). For other bodies give
//! [`Throttle::estimate`] a closure or a [`budget::FixedEstimate`].

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod builder_ext;
mod error;
mod estimate;
mod event;
pub mod future;
pub mod group;
mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;
mod service;
mod throttle;
pub mod toggle;

/// The shared handle, the slot, outcome classes and typed rejections
/// (the `gentlify-core` crate).
pub mod core {
    pub use gentlify_core::*;
}

/// Adaptive concurrency limiting (the `gentlify-concurrency` crate).
pub mod concurrency {
    pub use gentlify_concurrency::*;
}

/// Retries inside the request's slot (the `gentlify-retry` crate).
pub mod retry {
    pub use gentlify_retry::*;
}

/// Requests and tokens per window (the `gentlify-budget` crate).
pub mod budget {
    pub use gentlify_budget::*;
}

/// Provider rate-limit headers fed back into the handle (the `gentlify-headers` crate).
pub mod headers {
    pub use gentlify_headers::*;
}

/// The circuit breaker (the `gentlify-breaker` crate).
pub mod breaker {
    pub use gentlify_breaker::*;
}

/// The types most stacks need, for a glob import.
pub mod prelude {
    pub use crate::breaker::CircuitBreakerLayer;
    pub use crate::budget::{Limit, TokenBudget, TokenBudgetLayer};
    pub use crate::concurrency::AdaptiveConcurrencyLayer;
    pub use crate::headers::HeaderFeedbackLayer;
    pub use crate::retry::RetryLayer;
    pub use crate::{Feedback, ServiceBuilderExt, Throttle, ThrottleGroup, ThrottleLayer};
}

pub use builder_ext::ServiceBuilderExt;
pub use error::ConfigError;
pub use estimate::StackEstimate;
pub use event::Event;
pub use group::{ThrottleGroup, ThrottleGroupBuilder};
pub use layer::ThrottleLayer;
pub use service::{AfterBreaker, AfterBudget, AfterConcurrency, AfterRetry, Stack, Throttled};
pub use throttle::Throttle;
pub use toggle::Toggled;

pub use gentlify_breaker::{CircuitBreaker, CircuitBreakerLayer};
pub use gentlify_budget::{Limit, TokenBudget, TokenBudgetLayer};
pub use gentlify_concurrency::{AdaptiveConcurrency, AdaptiveConcurrencyLayer, PermitBody};
pub use gentlify_core::{BoxError, Class, Controller, Feedback, Outcome, Slot, SlotBody, Snapshot};
pub use gentlify_headers::{HeaderFeedback, HeaderFeedbackLayer};
pub use gentlify_retry::{Retry, RetryLayer};
