//! Hear the server's own account of its limits: [`HeaderFeedbackLayer`] reads every attempt's
//! response headers and publishes what they say to gentlify's shared [`Feedback`] handle, so the
//! other layers act on the server's state instead of guessing.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use gentlify_core::Feedback;
//! use gentlify_headers::HeaderFeedbackLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let feedback = Feedback::new();
//! let client = ServiceBuilder::new()
//!     .layer(HeaderFeedbackLayer::new().feedback(feedback.clone()))
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         // An OpenAI-style server with no request left for the next 1.5 s.
//!         let response = http::Response::builder()
//!             .header("x-ratelimit-limit-requests", "60")
//!             .header("x-ratelimit-remaining-requests", "0")
//!             .header("x-ratelimit-reset-requests", "1.5s")
//!             .body(Full::new(Bytes::from("{}")))
//!             .unwrap();
//!         Ok::<_, Infallible>(response)
//!     }));
//!
//! let response = client.oneshot(http::Request::new(())).await.unwrap();
//! drop(response);
//!
//! // The handle now holds new dispatch for 1.5 s, and its snapshot says why.
//! assert_eq!(feedback.pause_gate().remaining(), Some(Duration::from_millis(1500)));
//! let part = feedback.snapshot().part("headers").cloned().unwrap();
//! assert_eq!(part.get("requests.remaining"), Some(&0u64.into()));
//! assert_eq!(part.get("requests.source"), Some(&"openai".into()));
//! # }
//! ```
//!
//! # What it does with each response
//!
//! For every attempt (retries included, not only the final response), as soon as its head
//! arrives:
//!
//! 1. **Quotas.** Each parser that recognises its family publishes a [`QuotaReport`]
//!    ([`Feedback::report_quota`]): limit, remaining and time to reset per [`Dimension`]. The
//!    token budget adopts them; every registered [`Controller`](gentlify_core::Controller) hears
//!    them.
//! 2. **Server delay.** On an attempt the handle's classifier calls overloaded (429, 503, 529,
//!    gRPC `RESOURCE_EXHAUSTED` by default), `retry-after-ms`, `Retry-After` or
//!    `grpc-retry-pushback-ms` ([`ServerDelay`]) holds the handle's pause gate for that long,
//!    unless `x-should-retry: false` says waiting will not help.
//! 3. **Exhausted quota.** Otherwise, a quota at `remaining: 0` with a known reset holds the gate
//!    until that reset (the latest, if several are exhausted).
//!
//! Every pause is bounded by [`max_pause`](HeaderFeedbackLayer::max_pause), one minute by default
//! ([`DEFAULT_MAX_PAUSE`], where that number comes from is said there), and a delay of 24 h or
//! more ([`MAX_SERVER_DELAY`](gentlify_core::MAX_SERVER_DELAY)) is ignored as absurd. The gate
//! only ever moves forward, so a short pause never shortens a longer one. The service waits on
//! the gate in `poll_ready` ([`hold_dispatch`](HeaderFeedbackLayer::hold_dispatch)), so the layer
//! is useful alone.
//!
//! # Parsers
//!
//! Selected automatically by default ([`default_parsers`]): each recognises its own family by
//! exact header names, so they never mistake one another's headers.
//! One pass over each response's header names tells the layer which families are there at all, and a
//! built-in parser whose family is absent is skipped (it would find nothing): a response without
//! any rate-limit header costs that pass and no allocation. A built-in parser that runs reads the
//! headers in one more pass rather than looking each of its names up. Parsers of your own always
//! run.
//!
//! | parser | family | resets |
//! |---|---|---|
//! | [`OpenAiHeaders`] | OpenAI, Azure OpenAI, Groq: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` | Go durations (`6m0s`, `12ms`) |
//! | [`AnthropicHeaders`] | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*` | RFC 3339, bounded to 60 s |
//! | [`IetfHeaders`] | `RateLimit` / `RateLimit-Policy` (structured fields), older `RateLimit-Limit` | delta seconds |
//! | [`GitHubHeaders`] | `x-ratelimit-{limit,remaining,reset,used,resource}` | epoch seconds, bounded to 1 h |
//!
//! Pick some with [`HeaderFeedbackLayer::only`] and [`HeaderFeedbackLayer::parser`], and write
//! your own with [`ParseHeaders`].
//!
//! # The snapshot
//!
//! The handle's [`snapshot`](Feedback::snapshot) gains a part `"headers"`: `reports`, `pauses`,
//! `last_pause`, `last_pause_cause`, and for each dimension (and quota name, as
//! `requests.burst` for an IETF policy named `burst`) the last `source`, `limit`, `remaining`,
//! `reset_in` (time left until the reported reset) and `window`. At most 32 quotas are kept: a
//! server naming a new quota on every response replaces the one heard from longest ago rather
//! than growing the snapshot.
//!
//! # Hostile headers
//!
//! No header value can make a parser panic, overflow a `Duration`, or pause the client beyond
//! [`max_pause`](HeaderFeedbackLayer::max_pause): malformed values are ignored, negative counts
//! mean unknown, durations are clamped. Fuzz targets for each parser live in `fuzz/`.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod family;
pub mod future;
mod layer;
mod observe;
mod parse;
mod service;
mod state;

pub use gentlify_core::{Dimension, Feedback, Quota, QuotaReport};
pub use layer::{HeaderFeedbackLayer, DEFAULT_MAX_PAUSE};
pub use parse::{
    default_parsers, parse_go_duration, AnthropicHeaders, DelaySource, GitHubHeaders, IetfHeaders,
    OpenAiHeaders, ParseHeaders, ServerDelay,
};
pub use service::HeaderFeedback;
