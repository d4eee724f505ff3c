//! The shared core of [gentlify]'s Tower middleware: the [`Feedback`] handle every layer of a
//! stack shares, the per-request [`Slot`], outcome [`Class`]es and their [`Classify`]ers, the
//! pause gate, snapshots and the typed local rejections.
//!
//! Users of gentlify rarely touch this crate directly: the layer crates
//! (`gentlify-concurrency`, `gentlify-retry`, `gentlify-budget`, `gentlify-breaker`,
//! `gentlify-headers`) and the `gentlify` facade build on it. It is for reading a stack's state
//! ([`Feedback::snapshot`]), for writing a [`Classify`] of your own, for recording real token
//! usage from the inner service ([`Slot::record_tokens`]), and for writing a new layer that plugs
//! into the same handle.
//!
//! # The contract
//!
//! - A logical request carries a [`Slot`] in its request extensions, made by the first gentlify
//!   layer that sees it and reused by every retry. The resources held for the request (a
//!   concurrency permit, a token reservation) live in the slot as [`Hold`]s (or as shares of a
//!   [`SharedHold`], which take no allocation per request), so a retry never gives up its
//!   permit, whatever the order of the layers.
//! - Every attempt publishes exactly one [`Outcome`] to each handle it passed through
//!   ([`Dispatched`]); each registered [`Controller`] hears it once.
//! - A slot ends when the final response's body has been read to its end or dropped
//!   ([`SlotBody`]), when the response has no body, when the call fails, or when the caller drops
//!   the future. At its end every hold is released, exactly once, on every path.
//!
//! # A layer of your own on the shared handle
//!
//! Everything a gentlify layer does to a request, in a few lines: find or make the slot, send the
//! attempt, and let [`Tracked`] publish its outcome and end the slot at the end of the body.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Service, ServiceExt};
//! use gentlify_core::{Controller, Feedback, Outcome, Slot, Tracked};
//!
//! #[derive(Default)]
//! struct Log(std::sync::Mutex<Vec<String>>);
//! impl Controller for Log {
//!     fn on_outcome(&self, outcome: &Outcome) {
//!         self.0.lock().unwrap().push(outcome.class.to_string());
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let feedback = Feedback::new();
//! let log = Arc::new(Log::default());
//! feedback.register(&log);
//!
//! let mut upstream = service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, Infallible>(
//!         http::Response::builder().status(429).body(Full::new(Bytes::from("slow down"))).unwrap(),
//!     )
//! });
//!
//! // What a layer's `call` does:
//! let mut request = http::Request::new(());
//! let (slot, end) = Slot::get_or_insert(request.extensions_mut(), &feedback);
//! let dispatched = slot.dispatch(&feedback);
//! let future = upstream.ready().await.unwrap().call(request);
//! let response = Tracked::new(future, dispatched, end).await.unwrap();
//!
//! assert_eq!(feedback.open_slots(), 1, "the body is still unread");
//! // A 429's body may still say the quota is gone for good (a retry layer reads it), so its
//! // outcome is published once the body has had its say: here, when the request ends.
//! assert!(log.0.lock().unwrap().is_empty());
//! response.into_body().collect().await.unwrap();
//! assert_eq!(feedback.open_slots(), 0);
//! assert_eq!(*log.0.lock().unwrap(), ["overloaded"]);
//! # }
//! ```
//!
//! [gentlify]: https://docs.rs/gentlify

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod body;
mod classify;
pub mod error;
mod feedback;
mod outcome;
mod pause;
mod quota;
mod slot;
mod snapshot;
mod track;

pub use body::SlotBody;
pub use classify::{
    fatal_reason, parse_millis, parse_retry_after, parse_retry_after_at, retry_after, seconds_f64,
    should_retry, Classified, Classify, DefaultClassifier, FatalReason, GrpcClassifier,
    HttpClassifier, ResponseParts, MAX_SERVER_DELAY, STATUS_SITE_OVERLOADED,
};
pub use error::BoxError;
pub use feedback::{CircuitState, Controller, Feedback, FeedbackBuilder};
pub use outcome::{Class, Outcome};
pub use pause::{PauseGate, PauseWait};
pub use quota::{Dimension, Quota, QuotaReport};
pub use slot::{
    Dispatched, EndReason, Hold, HoldKey, Sending, SharedHold, Slot, SlotEnd, SlotEnded, Usage,
};
pub use snapshot::{Snapshot, SnapshotPart, SnapshotValue};
pub use track::{settle, Tracked};
