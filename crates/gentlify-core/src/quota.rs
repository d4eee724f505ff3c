//! What a server says about its own limits: quota per dimension, remaining, time to reset.
//!
//! A [`QuotaReport`] is published to the [`Feedback`](crate::Feedback) handle by whichever part
//! reads it (the header feedback layer reads response headers; a user may publish their own) and
//! reaches every registered [`Controller`](crate::Controller) through
//! [`Controller::on_quota`](crate::Controller::on_quota).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The unit a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dimension {
    /// Requests (RPM, RPD, ...).
    Requests,
    /// Tokens, input and output together (TPM).
    Tokens,
    /// Input (prompt) tokens only, as Anthropic reports them.
    InputTokens,
    /// Output (completion) tokens only, as Anthropic reports them.
    OutputTokens,
    /// Concurrent requests (IETF `qu="concurrent-requests"`).
    ConcurrentRequests,
    /// Bytes of content (IETF `qu="content-bytes"`).
    ContentBytes,
}

impl Dimension {
    /// A short lower-case name, used in snapshots, metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::InputTokens => "input_tokens",
            Dimension::OutputTokens => "output_tokens",
            Dimension::ConcurrentRequests => "concurrent_requests",
            Dimension::ContentBytes => "content_bytes",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One quota the server reported: for example "requests: 59 of 60 left, full again in 1 s".
///
/// Every field but the dimension is optional, because servers send only part of it (a missing
/// header, or `-1` for "unknown" as Azure OpenAI has been seen to send).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// What the quota counts.
    pub dimension: Dimension,
    /// The quota's size, if the server said.
    pub limit: Option<u64>,
    /// What is left in the current window, if the server said.
    pub remaining: Option<u64>,
    /// How long until the quota is full again (or the window rolls over), if the server said.
    pub reset_after: Option<Duration>,
    /// The length of the quota's window, if the server said (IETF `w`).
    pub window: Option<Duration>,
    /// The server's name for this quota (IETF policy name, GitHub resource), if any.
    pub name: Option<Box<str>>,
}

impl Quota {
    /// A quota of `dimension` with nothing known yet; fill the fields with the `with_*` methods.
    pub fn new(dimension: Dimension) -> Self {
        Quota {
            dimension,
            limit: None,
            remaining: None,
            reset_after: None,
            window: None,
            name: None,
        }
    }

    /// Sets the quota's size.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets what is left.
    pub fn with_remaining(mut self, remaining: u64) -> Self {
        self.remaining = Some(remaining);
        self
    }

    /// Sets the time until reset.
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = Some(reset_after);
        self
    }

    /// Sets the window length.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// Sets the server's name for the quota.
    pub fn with_name(mut self, name: impl Into<Box<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// True when the server says nothing is left.
    pub fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// Everything one response said about the server's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaReport {
    /// Which parser or party produced the report (`"openai"`, `"anthropic"`, `"ietf"`, ...).
    pub source: &'static str,
    /// When the response carrying it was received.
    pub observed_at: Instant,
    /// When the attempt whose response carried it was sent, when the publisher knows it (the
    /// header feedback layer always does): the server produced its figures after that instant,
    /// before the requests sent since had reached it. `None` for a report published without it;
    /// a controller then guesses which attempt it belongs to, if it needs to.
    pub sent_at: Option<Instant>,
    /// The quotas, one per dimension and window the server reported.
    pub quotas: Vec<Quota>,
}

impl QuotaReport {
    /// A report from `source`, observed now.
    pub fn new(source: &'static str, quotas: Vec<Quota>) -> Self {
        QuotaReport {
            source,
            observed_at: Instant::now(),
            sent_at: None,
            quotas,
        }
    }

    /// The report with the send instant of the attempt whose response carried it (see
    /// [`sent_at`](QuotaReport#structfield.sent_at)).
    ///
    /// ```
    /// use gentlify_core::{Dimension, Quota, QuotaReport};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let sent = Instant::now();
    /// let report = QuotaReport::new("openai", vec![Quota::new(Dimension::Requests)]);
    /// assert_eq!(report.sent_at, None);
    /// assert_eq!(report.sent_at(sent).sent_at, Some(sent));
    /// # }
    /// ```
    pub fn sent_at(mut self, at: Instant) -> Self {
        self.sent_at = Some(at);
        self
    }

    /// The report with its observation instant replaced.
    pub fn observed_at(mut self, at: Instant) -> Self {
        self.observed_at = at;
        self
    }

    /// The latest instant at which an exhausted quota in this report is full again, if any
    /// quota is exhausted and says when it resets (and that instant is representable).
    pub fn exhausted_until(&self) -> Option<Instant> {
        self.quotas
            .iter()
            .filter(|q| q.is_exhausted())
            .filter_map(|q| q.reset_after)
            .max()
            .and_then(|d| self.observed_at.checked_add(d))
    }
}
