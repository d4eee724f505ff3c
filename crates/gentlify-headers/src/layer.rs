use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gentlify_core::{Feedback, MAX_SERVER_DELAY};
use tower_layer::Layer;

use crate::family::{default_gated, Gated};
use crate::observe::{Observer, WallClock};
use crate::parse::ParseHeaders;
use crate::service::HeaderFeedback;
use crate::state::LastQuotas;

/// The default bound on any pause this layer sets: one minute.
///
/// Every per-minute quota in the reference document (OpenAI, Azure OpenAI, Anthropic, Groq's
/// tokens) is full again within 60 s, so a minute covers every reset worth holding *all* dispatch
/// for. Longer waits (a per-day or per-hour quota at 0, a `Retry-After: 3600`) are cut to a
/// minute: the gate reopens, the next response re-arms it if the quota is still gone, and the
/// retry layer decides whether its request is worth waiting for (the OpenAI SDK gives up beyond
/// 120 s).
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Reads every attempt's response headers and publishes what the server says about its limits to
/// the shared [`Feedback`] handle, so the other layers act on the server's state instead of
/// guessing. See the [crate docs](crate) for what it does with each response.
///
/// ```
/// use std::time::Duration;
/// use gentlify_headers::{AnthropicHeaders, HeaderFeedbackLayer};
///
/// // Only Anthropic's headers, pauses of at most 30 s, on a handle shared with other layers.
/// let feedback = gentlify_core::Feedback::new();
/// let layer = HeaderFeedbackLayer::only(AnthropicHeaders::new())
///     .feedback(feedback.clone())
///     .max_pause(Duration::from_secs(30));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct HeaderFeedbackLayer {
    feedback: Feedback,
    parsers: Vec<Gated>,
    max_pause: Duration,
    server_delay: bool,
    hold_dispatch: bool,
    wall_clock: WallClock,
}

impl Default for HeaderFeedbackLayer {
    fn default() -> Self {
        HeaderFeedbackLayer::new()
    }
}

impl HeaderFeedbackLayer {
    /// A layer with every built-in parser ([`default_parsers`](crate::default_parsers)), pauses bounded by
    /// [`DEFAULT_MAX_PAUSE`], server delays honoured, and a handle of its own.
    pub fn new() -> Self {
        HeaderFeedbackLayer {
            feedback: Feedback::new(),
            parsers: default_gated(),
            max_pause: DEFAULT_MAX_PAUSE,
            server_delay: true,
            hold_dispatch: true,
            wall_clock: WallClock::default(),
        }
    }

    /// A layer that runs only `parser` (add more with [`parser`](Self::parser)).
    pub fn only(parser: impl ParseHeaders) -> Self {
        HeaderFeedbackLayer {
            parsers: vec![Gated::new(parser)],
            ..HeaderFeedbackLayer::new()
        }
    }

    /// Builds on `feedback`, shared with the other layers of the stack.
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = feedback;
        self
    }

    /// Adds a parser, built-in or your own, after those already there.
    pub fn parser(mut self, parser: impl ParseHeaders) -> Self {
        self.parsers.push(Gated::new(parser));
        self
    }

    /// Bounds every pause the layer sets (default [`DEFAULT_MAX_PAUSE`]); `Duration::ZERO` sets
    /// none, while still publishing the quotas. Delays of 24 h or more
    /// ([`MAX_SERVER_DELAY`]) are ignored as absurd whatever
    /// this bound.
    pub fn max_pause(mut self, max_pause: Duration) -> Self {
        self.max_pause = max_pause.min(MAX_SERVER_DELAY);
        self
    }

    /// Whether the server's delay on an overloaded attempt (`retry-after-ms`, `Retry-After`,
    /// `grpc-retry-pushback-ms`) holds the pause gate (default: yes).
    pub fn server_delay(mut self, honour: bool) -> Self {
        self.server_delay = honour;
        self
    }

    /// Whether the service itself waits in `poll_ready` while the handle's pause gate is closed
    /// (default: yes), so the layer works alone. In a full stack an outer layer waits too; that
    /// costs one atomic load per request here.
    pub fn hold_dispatch(mut self, hold: bool) -> Self {
        self.hold_dispatch = hold;
        self
    }

    /// The wall clock the parsers measure absolute resets from (Anthropic's RFC 3339 times,
    /// GitHub's epoch seconds, HTTP-dates); `SystemTime::now` by default. Tests fix it.
    pub fn wall_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.wall_clock = WallClock(Arc::new(clock));
        self
    }

    /// The handle the layer publishes to.
    pub fn handle(&self) -> &Feedback {
        &self.feedback
    }
}

impl<S> Layer<S> for HeaderFeedbackLayer {
    type Service = HeaderFeedback<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let observer = Observer {
            feedback: self.feedback.clone(),
            parsers: self.parsers.clone(),
            max_pause: self.max_pause,
            server_delay: self.server_delay,
            wall_clock: self.wall_clock.clone(),
            board: LastQuotas::of(&self.feedback),
        };
        HeaderFeedback::new(
            inner,
            self.feedback.clone(),
            Arc::new(observer),
            self.hold_dispatch,
        )
    }
}

impl fmt::Debug for HeaderFeedbackLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderFeedbackLayer")
            .field("feedback", &self.feedback)
            .field("parsers", &self.parsers)
            .field("max_pause", &self.max_pause)
            .field("server_delay", &self.server_delay)
            .field("hold_dispatch", &self.hold_dispatch)
            .finish()
    }
}
