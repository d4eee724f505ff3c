//! Requests and tokens per window for Tower: estimate, reserve, reconcile with real usage.
//!
//! [`TokenBudgetLayer`] keeps a client under its provider's published limits — requests, tokens,
//! input tokens, output tokens, each per second, minute or day, all at once — so that the
//! server's 429s become rare instead of the way the client learns its limits.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use gentlify_budget::{Limit, TokenBudget, TokenBudgetLayer};
//! use gentlify_core::{Dimension, Feedback};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // An OpenAI tier: 500 RPM and 30 000 TPM, used to 90 % (the default safety ratio).
//! let budget = TokenBudget::builder()
//!     .limit(Limit::requests_per_minute(500))
//!     .limit(Limit::tokens_per_minute(30_000))
//!     .max_wait(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! let feedback = Feedback::new();
//!
//! let client = ServiceBuilder::new()
//!     .layer(TokenBudgetLayer::new(budget.clone()).feedback(feedback.clone()))
//!     .service_fn(|_request: http::Request<String>| async {
//!         // Stands for the HTTP client; the server reports the real usage in the body.
//!         let body = r#"{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":80}}"#;
//!         Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
//!     });
//!
//! // The built-in estimator reads the JSON: 6 prompt tokens (24 characters / 4) + max_tokens.
//! let body = r#"{"model":"gpt-4o-mini","max_tokens":1000,
//!     "messages":[{"role":"user","content":"Write a haiku about rain"}]}"#;
//! let request = http::Request::post("/v1/chat/completions").body(body.to_string()).unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(budget.remaining(Dimension::Tokens), Some(27_000 - 1_006), "reserved while it runs");
//!
//! // Reading the body to its end ends the request: the reservation is reconciled with the usage
//! // the server reported (100 tokens), and the rest comes back.
//! response.into_body().collect().await.unwrap();
//! assert_eq!(budget.remaining(Dimension::Tokens), Some(27_000 - 100));
//! assert_eq!(budget.remaining(Dimension::Requests), Some(449));
//! # }
//! ```
//!
//! # How it works
//!
//! 1. **Estimate.** A request's [`TokenCost`] comes from its extensions if it carries one, else
//!    from the layer's [`Estimate`]: the built-in [`JsonEstimate`] (prompt characters / 4 plus
//!    `max_tokens`), a closure, [`FixedEstimate`], or with the `tiktoken` feature an exact count
//!    of OpenAI prompt tokens.
//! 2. **Reserve.** The response future waits for the handle's pause gate, then for every limit
//!    of every budget to cover the cost, first come first served across all stacks sharing the
//!    budget ([`TokenBudget`] explains the sliding-window algorithm and why it was chosen, and
//!    the lock-free path that serves most reservations while the budget is far from its
//!    limits: credit drawn in chunks, taken with one compare-and-swap). A
//!    request larger than a whole limit fails at once with
//!    [`RequestTooLarge`](gentlify_core::error::RequestTooLarge); one that would wait longer than
//!    the maximum wait fails with [`BudgetWaitTooLong`](gentlify_core::error::BudgetWaitTooLong).
//! 3. **Reconcile.** The reservation is a [`Hold`](gentlify_core::Hold) in the request's
//!    [`Slot`](gentlify_core::Slot), settled when the slot ends (the body read to its end or
//!    dropped): with the tokens the inner service recorded
//!    ([`Slot::record_tokens`](gentlify_core::Slot::record_tokens)), else with the usage the
//!    [`UsageBody`] read from the JSON or server-sent events as they streamed past, else the
//!    estimate stands. Unused tokens return to the budget, overruns are charged.
//! 4. **Every attempt is charged.** A retry above the layer (gentlify's default order) reserves
//!    again for each attempt; earlier attempts keep their estimate, since providers count failed
//!    requests. Attempts made by a retry below the layer are charged when the slot ends.
//! 5. **Server truth wins.** Registered on the [`Feedback`](gentlify_core::Feedback) handle, the
//!    budget hears the quota reports of the header layer (give both layers the same handle) and
//!    keeps an account of what the server holds, updated with its own charges since
//!    ([`TokenBudget`] says how a report is read). When the server reports the very limit the
//!    budget enforces, its account replaces the budget's own window and safety margin: the
//!    margin is for flying blind, and the server's word, once heard, is exact. A report of
//!    another limit only ever lowers what the budget believes.
//!
//! In gentlify's default order the budget sits below the retry layer and above the header
//! layer: breaker → adaptive concurrency → retry → **token budget** → header feedback → client.
//!
//! # Gaps
//!
//! - The built-in [`JsonEstimate`] counts characters / 4. With the `tiktoken` feature,
//!   `TiktokenEstimate` counts OpenAI prompts exactly (o200k / cl100k); there is no tokenizer for
//!   Anthropic's models (they publish none), whose prompts keep the character estimate.
//! - An uncontended [`TokenBudget::try_reserve`] + [`Reservation::reconcile`] through the
//!   lock-free path costs two compare-and-swaps, where `governor`'s `check` costs one and a TSC
//!   clock read. On the project's 2-core VM (`benches/reserve.rs`, five alternated rounds):
//!   16.0-16.4 ns against `governor`'s 9.7-10.2 ns, 1.6 times its time; through
//!   [`TokenBudget::try_reserve_owned`] (an [`OwnedReservation`] holds the budget's `Arc`)
//!   14.7-15.4 ns. Neither reads a clock: with one `std::time::Instant::now()` added (24 ns
//!   here) it is 46 ns. Reservations awaited through [`TokenBudget::reserve`] (the layer's
//!   path) read tokio's clock: 60 ns.
//! - Request bodies the estimator can read are those implementing [`RequestBytes`] (`String`,
//!   `Vec<u8>`, `Bytes`, `&'static str`); for others, give a closure or put a [`TokenCost`] in the
//!   request's extensions.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod budget;
mod cost;
mod credit;
mod error;
pub mod future;
mod layer;
mod limit;
mod prompt;
mod service;
mod usage;
mod window;

pub use budget::{
    OwnedReservation, Reservation, Reserve, TokenBudget, TokenBudgetBuilder, DEFAULT_MAX_WAIT,
    DEFAULT_SAFETY_RATIO, MAX_LIMITS,
};
#[cfg(feature = "tiktoken")]
pub use cost::{Encoding, TiktokenEstimate};
pub use cost::{Estimate, FixedEstimate, JsonEstimate, RequestBytes, TokenCost};
pub use error::BuildError;
pub use layer::TokenBudgetLayer;
pub use limit::Limit;
pub use service::Budgeted;
pub use usage::UsageBody;
pub use window::Actual;
