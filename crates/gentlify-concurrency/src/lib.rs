//! Adaptive concurrency limiting for Tower: find and follow the real capacity of a rate-limited
//! API. The limiter admits a request only while fewer than *limit* are in flight, and moves the
//! limit with what the shared [`Feedback`](gentlify_core::Feedback) handle hears from every
//! attempt: it **decelerates** on overload (429 / 503 / 529) and failure, **cools** for a while,
//! then **reaccelerates** step by step toward a safe ceiling while successes continue.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use gentlify_concurrency::AdaptiveConcurrencyLayer;
//! use gentlify_core::Feedback;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let feedback = Feedback::new(); // shared with the other gentlify layers of the stack
//! let concurrency = AdaptiveConcurrencyLayer::builder()
//!     .feedback(feedback.clone())
//!     .initial(4)
//!     .max(64)
//!     .acquire_timeout(Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//!
//! let client = ServiceBuilder::new()
//!     .layer(concurrency.clone())
//!     .service(service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("{\"ok\":true}"))))
//!     }));
//!
//! let response = client.oneshot(http::Request::new(String::from("hi"))).await.unwrap();
//! assert_eq!(concurrency.snapshot().in_flight, 1, "held until the body ends");
//! response.into_body().collect().await.unwrap();
//! assert_eq!(concurrency.snapshot().in_flight, 0);
//!
//! let part = feedback.snapshot();
//! let part = part.part("concurrency").unwrap();
//! assert_eq!(part.get("limit").unwrap().to_string(), "4");
//! # }
//! ```
//!
//! # How it behaves
//!
//! - **Admission in `poll_ready`**, as tower's `ConcurrencyLimit`: no task and no async mutex per
//!   request. A permit taken in `poll_ready` moves into the request's
//!   [`Slot`](gentlify_core::Slot) in `call`, and comes back when the slot ends: at the end of the
//!   final response's body (a streamed answer keeps it while it streams), on an error, or when
//!   the caller drops the future.
//! - **Alone, no slot**: a limiter built without
//!   [`feedback`](AdaptiveConcurrencyBuilder::feedback), whose handle was never handed out
//!   ([`AdaptiveConcurrencyLayer::feedback`]), is the only gentlify layer on its handle: a
//!   request that reaches it without a slot is sent without one, since nothing could share it.
//!   Its permit then lives in the response future and in the body ([`PermitBody`]), with the same
//!   ends, and its outcome is published as from a slot; the round trip costs no allocation.
//!   A request that already carries a slot (a gentlify layer outside) keeps using it, and the
//!   inner service finds no slot in a request sent without one. (`benches/round_trip.rs`:
//!   figures in the README.)
//! - **Alone and far below its limit, it times one request in sixteen**: while the limit has
//!   not been filled since it last changed and at most half of it is in flight, under the
//!   additive controller out of slow start (or at its maximum), a success can change nothing
//!   but the smoothed latency and body time (which one sample in sixteen keeps) and the failure
//!   window (which hears every success).
//!   The other requests save two reads of the clock. They take as their send time the latest
//!   instant the limiter knew of, so that a refusal or failure among them is still heard once
//!   per round trip; the latency it publishes is then an upper bound. Near the limit, in slow
//!   start below the maximum (the first requests of a burst are sent far below the limit and
//!   answered at it, where their latency feeds the knee), with a slot, or under the gradient
//!   controller, every attempt is timed. The simulator's figures are the same with and without
//!   it.
//! - **Retries keep the permit**, whatever the order of the layers. A retry layer inside this one
//!   never comes back here. A retry layer outside (tower's `Retry`, say) calls `poll_ready` again
//!   for the next attempt while the request's slot holds the permit: the instance remembers the
//!   slot it was last called with, and admits its retry without a second permit (with a limit of
//!   1 that would deadlock otherwise). If the call turns out to be another request, it waits for
//!   its own permit in the response future, in queue order: the limit is never exceeded.
//! - **Waiting is FIFO**, with an optional acquire timeout ([`AcquireTimeout`]) and queue bound
//!   ([`QueueFull`]). Rejections come from the response future as [`BoxError`]; `poll_ready`
//!   stays `Ok`, as with tower's `LoadShed`, so a `Buffer` in front keeps working.
//! - **A shrink takes effect at once**, even when every permit is in flight: nobody new is
//!   admitted until in-flight falls under the new limit, and a retry sent inside its permit
//!   (by a retry layer that asks [`Slot::poll_redispatch`](gentlify_core::Slot::poll_redispatch)
//!   first, as gentlify's does) waits, keeping its permit, until the other permits that may be
//!   on the wire are fewer than the new limit. Permits whose retries wait so do not count, so
//!   retries held back by one cut go one after another, never all waiting on each other.
//! - **At most one deceleration per round trip**: a deceleration takes effect when in-flight has
//!   come down to the new limit (or, if permits stay held longer, one smoothed round trip after
//!   it); an overload from an attempt sent before that is ignored. 20 429s from one burst divide
//!   the limit once, and so do the 429s of retries sent inside their permits, or of dispatches
//!   paced on permits granted before the cut, while the server still carries the old load.
//! - **Streamed answers**: a streamed answer holds the server until its body ends, long after
//!   its head. The limiter counts the permits whose request got a successful head and is still
//!   reading its body, and smooths how long bodies hold their permit after the head. While
//!   those streams alone exceed a cut's new limit, a refusal (a retry inside its permit, say)
//!   answers the load sent before the cut and does not cut again; the wait for in-flight to
//!   come down lasts up to a round trip body included. Growth waits, after each change of the
//!   limit, for the bodies' smoothed holding time as well as for a success sent after the
//!   change: otherwise the head's round trip (a few hundred milliseconds) paces growth while
//!   the server has not yet carried the new limit for a whole stream. Cuts are still judged
//!   per head round trip. With non-streamed answers the body time is 0 and nothing changes:
//!   a body counts its time only when it made its reader wait (a poll of it was pending, its
//!   bytes still coming); a body that was all there whenever it was read held the server no
//!   longer than its head, however late the caller reads it (and no clock is read for it). (`gentlify-sim`'s streaming-long-bodies, C = 30, 18 s streams: 429s per 1000
//!   attempts 48.8 → 5.0 with the limiter alone, 119.9 → 23.2 with the full stack; goodput
//!   0.900 → 0.934 and 0.867 → 0.932 × oracle.)
//! - **Failures decelerate only in a storm**: a few percent of dropped connections or stray 5xx
//!   are noise, not load. Failures count when three come in a row or when they make at least a
//!   fifth of the recent attempts
//!   ([`failure_threshold`](AdaptiveConcurrencyBuilder::failure_threshold)); then every failure
//!   sent after the last deceleration decelerates again (an outage empties the pipe fast), and
//!   the safe ceiling stays where the storm found the limit, so that it climbs back quickly.
//! - **Slow start** doubles the limit per round trip until the first overload, which halves it
//!   back to the last limit known good (TCP's slow-start exit, RFC 5681) and grows from there:
//!   additively, or, with the knee on (the default), in measured steps described next.
//! - **The latency knee**: the default controller also keeps, per band of levels, the mean
//!   latency of the successes sent there, and holds the limit at a lower band when that one
//!   served more requests per second (Little's law: in-flight / latency). A server that slows
//!   down with load (a self-hosted inference server, a queueing gateway) is then run at the
//!   level of its best throughput instead of just under the point where it refuses work; on a
//!   hosted API whose latency does not depend on this client's load nothing changes
//!   ([`Aimd::knee`]). A knee found again where it was after a probe above it is held twice
//!   as long (up to four relaxation periods), and a refusal during a probe sends the limit
//!   back to the knee: every probe runs the server past it. Above such a base (the level a cut
//!   went to, or a knee held), the limit climbs in steps of about a tenth, each held until the
//!   knee's estimator has measured it: a step that serves fewer requests per second than the
//!   base sends the limit back to the base, held as a knee; a clear win (3 % and one standard
//!   error) becomes the new base and lets the limit climb each round trip again. (Constant-cap,
//!   12 seeds: 0.953 → 0.967 × the oracle, fewer 429s.)
//! - **No growth** while cooling, while the breaker is half-open, or while the sender has not
//!   filled the current limit since it last changed (a limit nobody tests is not raised).
//!   Nor while the permits fill it waiting below the limiter rather than on the wire: when the
//!   requests sent in one attempt have waited, between the limiter's call and their dispatch
//!   (in a token budget below, say), more than a fifth of the time heard of since the limit
//!   last changed, the limit stays where it is (`gentlify-sim`, full stack: the limit's peak
//!   on tpm-mixed-sizes 256 → 64 with about 10 requests on the wire, on shared-quota 200 → 68;
//!   goodput unchanged). Retried requests do not count: their permits idle through a backoff,
//!   and the limit grows past them so that the server stays busy.
//! - **Pacing narrows** a step per round trip once cooling is over, whether or not the limit
//!   grows (it holds at a ceiling, at the knee, or for the reason above): a pacing interval
//!   widened by a deceleration would otherwise keep dispatch under the limit for the whole
//!   hold.
//! - **Every attempt counts**: the limiter is a [`Controller`](gentlify_core::Controller) on the
//!   handle and hears each attempt's outcome, including attempts a retry later turns into a
//!   success, with latency measured per attempt (far below the limit of a limiter alone, one
//!   attempt in sixteen: see above).
//! - **Pacing**: a minimum interval between dispatches that widens on deceleration and narrows on
//!   reacceleration ([`Pacing`]); and the handle's pause gate (the server said wait) holds all
//!   dispatch. An overload that names a delay (`retry-after`) sets the pause gate for it, so
//!   the requests queued behind a refused one wait too instead of being refused in turn
//!   ([`pause_on_retry_after`](AdaptiveConcurrencyBuilder::pause_on_retry_after)).
//! - **One limiter per layer value**, shared by every service made from it and their clones.
//!
//! The limiter's state is in [`AdaptiveConcurrencyLayer::snapshot`] and, as the part
//! `"concurrency"`, in the handle's [`Feedback::snapshot`](gentlify_core::Feedback::snapshot).
//!
//! [`AcquireTimeout`]: gentlify_core::error::AcquireTimeout
//! [`QueueFull`]: gentlify_core::error::QueueFull
//! [`BoxError`]: gentlify_core::BoxError

#![forbid(unsafe_code)]

mod control;
mod error;
pub mod future;
mod knee;
mod layer;
mod limiter;
mod service;
mod solo;

pub use control::{Aimd, Algorithm, ControlState, Gradient, Pacing};
pub use error::BuildError;
pub use layer::{AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer, DEFAULT_INITIAL};
pub use limiter::ConcurrencySnapshot;
pub use service::AdaptiveConcurrency;
pub use solo::PermitBody;
