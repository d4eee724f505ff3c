//! What one attempt came to: its [`Class`] and its latency.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The class of an attempt's result, as the controllers see it.
///
/// The defaults for HTTP are in [`HttpClassifier`](crate::HttpClassifier) and follow this table:
///
/// | response | class |
/// |---|---|
/// | 2xx, 3xx, 4xx other than below | [`Success`](Class::Success) |
/// | 429, 503, 529 | [`Overloaded`](Class::Overloaded), with the server's delay if it sent one |
/// | 500, 502, 504, 408, other 5xx, transport error, timeout | [`Failure`](Class::Failure) |
/// | a 429 that can never succeed (`insufficient_quota`, ...) | [`Fatal`](Class::Fatal) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// The server did the work (or refused it for a reason of the request's own).
    Success,
    /// The server is over its capacity or the caller's quota: slow down, retry after `retry_after`.
    Overloaded {
        /// The delay the server asked for (`retry-after-ms`, `Retry-After`,
        /// `grpc-retry-pushback-ms`), if any.
        retry_after: Option<Duration>,
    },
    /// The server or the network failed: back off, retry with backoff, count toward the breaker.
    Failure,
    /// The request can never succeed as it is (quota exhausted for good, request too large):
    /// do not retry, do not blame the server.
    Fatal,
    /// The attempt was abandoned before its result was known (the caller dropped it).
    Cancelled,
}

impl Class {
    /// A short lower-case name, used in snapshots, metrics labels and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Class::Success => "success",
            Class::Overloaded { .. } => "overloaded",
            Class::Failure => "failure",
            Class::Fatal => "fatal",
            Class::Cancelled => "cancelled",
        }
    }

    /// True for [`Class::Overloaded`].
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Class::Overloaded { .. })
    }

    /// True for the classes that tell a controller to slow down: overloaded and failure.
    pub fn is_congestion(&self) -> bool {
        matches!(self, Class::Overloaded { .. } | Class::Failure)
    }

    /// True when a later attempt of the same request may succeed: overloaded and failure.
    pub fn is_retryable(&self) -> bool {
        self.is_congestion()
    }

    /// The server's requested delay, for [`Class::Overloaded`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Class::Overloaded { retry_after } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Overloaded {
                retry_after: Some(d),
            } => write!(f, "overloaded (retry after {d:?})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The outcome of one attempt, published once to the [`Feedback`](crate::Feedback) handle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// What the attempt came to.
    pub class: Class,
    /// The attempt's number within its logical request: 0 for the first try.
    pub attempt: u32,
    /// When the attempt was handed to the inner service (after every client-side wait).
    pub sent_at: Instant,
    /// From `sent_at` to the response head (or the error). Excludes backoff sleeps and
    /// client-side queueing by construction.
    pub latency: Duration,
    /// The HTTP status of the response, when there was one.
    pub status: Option<http::StatusCode>,
}

impl Outcome {
    /// An outcome of `class` for an attempt sent at `sent_at` and finished now.
    #[inline]
    pub fn new(class: Class, attempt: u32, sent_at: Instant) -> Self {
        Outcome {
            class,
            attempt,
            sent_at,
            latency: Instant::now().saturating_duration_since(sent_at),
            status: None,
        }
    }

    /// When the attempt's result was known: `sent_at + latency`, the instant the publishing layer
    /// read the clock. A controller that needs "now" in [`on_outcome`] can use it instead of reading
    /// the clock again (a clock read costs tens of nanoseconds, once per controller per attempt).
    ///
    /// ```
    /// use std::time::Duration;
    /// use gentlify_core::{Class, Outcome};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let sent_at = Instant::now();
    /// tokio::time::sleep(Duration::from_millis(120)).await;
    /// let outcome = Outcome::new(Class::Success, 0, sent_at);
    /// assert_eq!(outcome.latency, Duration::from_millis(120));
    /// assert_eq!(outcome.finished_at(), Instant::now());
    /// # }
    /// ```
    ///
    /// [`on_outcome`]: crate::Controller::on_outcome
    #[inline]
    pub fn finished_at(&self) -> Instant {
        self.sent_at + self.latency
    }

    /// The outcome with its status set.
    #[inline]
    pub fn with_status(mut self, status: http::StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The outcome with its latency replaced.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}
