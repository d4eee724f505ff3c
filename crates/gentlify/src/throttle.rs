//! The [`Throttle`] builder and its provider presets.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gentlify_core::{CircuitState, Dimension, Feedback, QuotaReport};

use crate::breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use crate::budget::{JsonEstimate, Limit, TokenBudget, TokenBudgetBuilder, TokenBudgetLayer};
use crate::concurrency::{AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer, Pacing};
use crate::error::ConfigError;
use crate::estimate::StackEstimate;
use crate::event::{Callback, Event, Observer};
use crate::headers::{AnthropicHeaders, HeaderFeedbackLayer, OpenAiHeaders, ParseHeaders};
use crate::layer::{Stacked, ThrottleLayer};
use crate::retry::{RetryLayer, RetryLayerBuilder};

/// A part of the stack: configured by a builder, given ready-built, or switched off.
#[derive(Clone)]
enum Part<B, L> {
    Build(B),
    Given(L),
    Off,
}

impl<B: Default, L> Part<B, L> {
    fn builder(self) -> B {
        match self {
            Part::Build(b) => b,
            Part::Given(_) | Part::Off => B::default(),
        }
    }
}

impl<B: fmt::Debug, L: fmt::Debug> fmt::Debug for Part<B, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Build(b) => b.fmt(f),
            Part::Given(l) => f.debug_tuple("Given").field(l).finish(),
            Part::Off => f.write_str("Off"),
        }
    }
}

/// Which provider's documented behaviour a preset follows (changes how limits are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Generic,
    OpenAi,
    AzureOpenAi,
    Anthropic,
}

/// "Off" for the concurrency layer: one fixed limit no workload reaches, so the layer admits
/// everything and never paces (it stays in the stack while the header layer may pause dispatch).
const UNLIMITED: usize = 1 << 30;

/// The breaker of every preset and of a [`ThrottleGroup`](crate::ThrottleGroup): the breaker's
/// defaults, except that a call finding it open waits for admission (without bound, as in the
/// limiter's queue) instead of failing at once.
///
/// A caller of these stacks is most often a batch (workers taking the next job when the last
/// one ends): failing fast turns the whole remaining batch into rejections the moment the
/// breaker opens (the simulator's outage-5xx with a 60 s outage: 1594-1606 of 2000 requests on
/// each of six seeds, where the limiter alone lost none). Waiting keeps what the breaker is for
/// (only its probes reach a failing upstream) and matches the limiter, which queues rather than
/// refuses. A caller that would rather be refused sets `.breaker(|b| b.fail_fast())`, or bounds
/// the wait with `.breaker(|b| b.wait_while_open(max))`.
pub(crate) fn default_breaker() -> CircuitBreakerBuilder {
    CircuitBreakerBuilder::default().wait_while_open(Duration::MAX)
}

/// Builds the full gentlify stack on **one** [`Feedback`] handle, as one [`ThrottleLayer`].
///
/// The order, outermost first, is the one DESIGN.md recommends:
/// **breaker → adaptive concurrency → retry → token budget → header feedback → the client**.
/// The breaker admits or rejects a logical request once (its retries do not pass through it again,
/// though the retry layer stops retrying while the circuit is open), and, as a controller on the
/// handle, judges every attempt published there; a retry stays inside
/// its concurrency permit; the budget charges every attempt (providers count failed requests); the header layer
/// reads every response before anyone else, so the server's quotas reach the budget and the
/// limiter before the next request goes.
///
/// Every part is configured by a closure over its own builder (`.concurrency(|c| c.max(64))`),
/// given ready-built (`.breaker_layer(..)`, `.shared_budget(..)`, to share it with other stacks),
/// or switched off (`.no_retry()`...). A part with nothing to do is left out of the request's
/// path (each part of the service is [`Toggled`](crate::Toggled), so the stack's type does not
/// change): a breaker switched off, a budget with no limit (the default until one is set), a
/// header layer switched off. Two parts switched off stay, because they still do something: the
/// retry layer sends each request once but still reads a 429's body for the markers of a quota
/// gone for good, and the limiter, pinned at 2³⁰, still holds dispatch while the server's pause
/// (set by the header layer) is in force — it is left out too when the header layer is off.
///
/// # A call that finds the breaker open waits
///
/// In every preset the breaker holds a call while it is open (its `poll_ready` is pending until
/// the open period ends and a probe's answer closes it), where the breaker on its own refuses it
/// at once with [`CircuitOpen`](crate::core::error::CircuitOpen). Only probes reach a failing
/// upstream either way. A caller of these stacks is most often a batch, workers each taking the
/// next job when the last one ends: refusing at once turns the whole remaining batch into
/// rejections the moment the breaker opens (the simulator's outage-5xx with a 60 s outage lost
/// 1594 to 1606 of its 2000 requests that way on each of six seeds, where the limiter alone lost
/// none). Waiting matches the limiter, which queues rather than refuses. A caller that would
/// rather be refused (to answer its own users at once) sets `.breaker(|b| b.fail_fast())`, or
/// bounds the wait with `.breaker(|b| b.wait_while_open(max))`; a timeout around the stack
/// bounds it too.
///
/// [`build`](Throttle::build) checks everything and reports a [`ConfigError`]. It gives a
/// [`ThrottleLayer`]: clone *that* to throttle several services together (every clone shares
/// one handle, limiter, budget and breaker). A `Throttle` itself is only the builder; to make
/// several independent stacks with the same settings, call a function that returns one (as
/// [`ThrottleGroup`](crate::ThrottleGroup) does per key).
///
/// ```
/// use std::time::Duration;
/// use gentlify::Throttle;
///
/// let throttle = Throttle::openai()
///     .name("openai-chat")
///     .requests_per_minute(500)
///     .tokens_per_minute(30_000)
///     .concurrency(|c| c.max(64).acquire_timeout(Duration::from_secs(60)))
///     .retry(|r| r.max_attempts(5))
///     .build()
///     .unwrap();
/// assert_eq!(throttle.feedback().name(), Some("openai-chat"));
/// ```
pub struct Throttle<E = JsonEstimate> {
    feedback: Option<Feedback>,
    name: Option<Box<str>>,
    provider: Provider,
    breaker: Part<CircuitBreakerBuilder, CircuitBreakerLayer>,
    concurrency: Part<AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer>,
    retry: Part<RetryLayerBuilder, RetryLayer>,
    limits: TokenBudgetBuilder,
    has_limits: bool,
    shared_budgets: Vec<TokenBudget>,
    budget_on: bool,
    headers: Option<HeaderFeedbackLayer>,
    estimate: E,
    callbacks: Vec<Callback>,
    #[cfg(feature = "metrics")]
    metrics: bool,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

impl Throttle {
    /// The full stack with each layer's own defaults (see each crate's docs for where they come
    /// from), every built-in header parser, and no request or token limit until one is set.
    pub fn new() -> Self {
        Throttle {
            feedback: None,
            name: None,
            provider: Provider::Generic,
            breaker: Part::Build(default_breaker()),
            concurrency: Part::Build(AdaptiveConcurrencyBuilder::default()),
            retry: Part::Build(RetryLayerBuilder::default()),
            limits: TokenBudgetBuilder::default(),
            has_limits: false,
            shared_budgets: Vec::new(),
            budget_on: true,
            headers: Some(HeaderFeedbackLayer::new()),
            estimate: JsonEstimate::new(),
            callbacks: Vec::new(),
            #[cfg(feature = "metrics")]
            metrics: false,
        }
    }

    /// OpenAI's API (`api.openai.com`).
    ///
    /// From OpenAI's documentation and official SDK (see `rate-limit-signals.md`):
    /// - headers: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` ([`OpenAiHeaders`]),
    ///   resets as Go durations; the `_usage_based` families are ignored;
    /// - retries: 3 attempts (the SDK's 2 retries), `min(0.5 s × 2ⁿ, 8 s)` with jitter, a server
    ///   delay (`retry-after-ms`, then `retry-after`) honoured up to 120 s and no longer — the
    ///   SDK's bounds; `x-should-retry` is obeyed; `insufficient_quota` is never retried;
    /// - RPM and TPM depend on the account's tier and the model: unknown until you set them with
    ///   [`requests_per_minute`](Throttle::requests_per_minute) and
    ///   [`tokens_per_minute`](Throttle::tokens_per_minute). Until then the server's headers are
    ///   the only quota the stack knows. Failed requests count toward both (OpenAI says so), and
    ///   the budget charges every attempt.
    pub fn openai() -> Self {
        Throttle::new()
            .provider(Provider::OpenAi)
            .header_parser(OpenAiHeaders::new())
            .retry(openai_sdk_retry)
    }

    /// Azure OpenAI.
    ///
    /// As [`openai`](Throttle::openai) (the same headers, read by [`OpenAiHeaders::azure`]; the
    /// SDK's retry curve), with what Azure documents differently:
    /// - RPM is enforced over 1 s or 10 s windows, so bursts are refused under the per-minute
    ///   total: [`requests_per_minute(n)`](Throttle::requests_per_minute) also sets a limit of
    ///   ⌈n / 6⌉ requests per 10 s;
    /// - a 429 carries `Retry-After: 6` and `retry-after-ms`: the concurrency layer's cooling
    ///   (5 s, stretched to the server's delay) covers it;
    /// - `x-ratelimit-limit-tokens: -1` (unknown) is read as no figure.
    pub fn azure_openai() -> Self {
        Throttle::new()
            .provider(Provider::AzureOpenAi)
            .header_parser(OpenAiHeaders::azure())
            .retry(openai_sdk_retry)
    }

    /// Anthropic's API.
    ///
    /// From Anthropic's recorded responses and SDK:
    /// - headers: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
    ///   remaining,reset}` ([`AnthropicHeaders`]), resets as RFC 3339 instants;
    /// - 429 `rate_limit_error` with `retry-after` in whole seconds and 529 `overloaded_error`
    ///   are both retried after the server's delay (the SDK's 2 retries: 3 attempts, 0.5 s × 2ⁿ
    ///   up to 8 s); `enforced_spend_limit_reached` never is;
    /// - limits are per model and tier: set them with
    ///   [`requests_per_minute`](Throttle::requests_per_minute),
    ///   [`input_tokens_per_minute`](Throttle::input_tokens_per_minute) and
    ///   [`output_tokens_per_minute`](Throttle::output_tokens_per_minute) (Anthropic counts
    ///   input and output tokens separately).
    pub fn anthropic() -> Self {
        Throttle::new()
            .provider(Provider::Anthropic)
            .header_parser(AnthropicHeaders::new())
            .retry(openai_sdk_retry)
    }

    /// Any OpenAI-compatible server (Groq, OpenRouter, vLLM, a gateway...): every built-in header
    /// parser (OpenAI-style, Anthropic, IETF `RateLimit`, GitHub-style), the default retries, and
    /// the server's delays honoured up to 120 s. Use [`headers`](Throttle::headers) with
    /// [`OpenAiHeaders::groq`] for Groq's per-day request headers.
    pub fn openai_compatible() -> Self {
        Throttle::new().retry(openai_sdk_retry)
    }
}

/// The official OpenAI SDK's retry policy, which Anthropic's SDK shares: 2 retries, 0.5 s × 2ⁿ
/// capped at 8 s, a server delay honoured up to 120 s.
fn openai_sdk_retry(retry: RetryLayerBuilder) -> RetryLayerBuilder {
    retry
        .max_attempts(3)
        .backoff(crate::retry::Backoff::exponential(
            Duration::from_millis(500),
            Duration::from_secs(8),
        ))
        .max_server_delay(Duration::from_secs(120))
}

impl<E> Throttle<E> {
    fn provider(mut self, provider: Provider) -> Self {
        self.provider = provider;
        self
    }

    /// Builds the stack on this handle (to share its classifier, or its retry budget and pause
    /// gate with other stacks). Without one, the stack makes its own, named by
    /// [`name`](Throttle::name).
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// Names the stack's handle (used in snapshots and as the `stack` label of metrics). Ignored
    /// when a handle is given with [`feedback`](Throttle::feedback).
    pub fn name(mut self, name: impl Into<Box<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Configures the circuit breaker (outermost). Starts from the breaker's defaults except
    /// one: a call that finds it open **waits** for admission (`wait_while_open(Duration::MAX)`),
    /// see [the type's docs](Throttle#a-call-that-finds-the-breaker-open-waits); `b.fail_fast()`
    /// gives the breaker's own default back.
    pub fn breaker(
        mut self,
        f: impl FnOnce(CircuitBreakerBuilder) -> CircuitBreakerBuilder,
    ) -> Self {
        let builder = match self.breaker {
            Part::Build(b) => b,
            Part::Given(_) | Part::Off => default_breaker(),
        };
        self.breaker = Part::Build(f(builder));
        self
    }

    /// Uses this breaker, e.g. one breaker per host shared by several stacks. It may live on
    /// another handle than the stack's: it then judges the logical requests of every stack it is
    /// given to, and its state is on its own handle.
    pub fn breaker_layer(mut self, layer: CircuitBreakerLayer) -> Self {
        self.breaker = Part::Given(layer);
        self
    }

    /// No circuit breaker (left out of the stack; the handle's circuit state says `disabled`).
    pub fn no_breaker(mut self) -> Self {
        self.breaker = Part::Off;
        self
    }

    /// Configures the adaptive concurrency limiter.
    pub fn concurrency(
        mut self,
        f: impl FnOnce(AdaptiveConcurrencyBuilder) -> AdaptiveConcurrencyBuilder,
    ) -> Self {
        self.concurrency = Part::Build(f(self.concurrency.builder()));
        self
    }

    /// Uses this limiter (built on the stack's handle).
    pub fn concurrency_layer(mut self, layer: AdaptiveConcurrencyLayer) -> Self {
        self.concurrency = Part::Given(layer);
        self
    }

    /// No concurrency limit: the limiter is pinned at a limit no workload reaches, unpaced. It
    /// stays in the stack while header feedback is on (it holds dispatch during the server's
    /// pauses), and is left out with [`no_header_feedback`](Throttle::no_header_feedback).
    pub fn no_concurrency_limit(mut self) -> Self {
        self.concurrency = Part::Off;
        self
    }

    /// Configures the retry layer.
    pub fn retry(mut self, f: impl FnOnce(RetryLayerBuilder) -> RetryLayerBuilder) -> Self {
        self.retry = Part::Build(f(self.retry.builder()));
        self
    }

    /// Uses this retry layer (built on the stack's handle).
    pub fn retry_layer(mut self, layer: RetryLayer) -> Self {
        self.retry = Part::Given(layer);
        self
    }

    /// No retries (the layer stays, sending each request once and still telling a 429 that can
    /// never succeed from overload).
    pub fn no_retry(mut self) -> Self {
        self.retry = Part::Off;
        self
    }

    /// Configures the stack's own token budget (its limits, safety ratio, maximum wait).
    pub fn budget(mut self, f: impl FnOnce(TokenBudgetBuilder) -> TokenBudgetBuilder) -> Self {
        self.limits = f(self.limits);
        self.has_limits = true;
        self.budget_on = true;
        self
    }

    /// Adds a limit to the stack's own token budget.
    pub fn limit(self, limit: Limit) -> Self {
        self.budget(|b| b.limit(limit))
    }

    /// Requests per minute. For [`azure_openai`](Throttle::azure_openai) also ⌈n / 6⌉ per 10 s.
    pub fn requests_per_minute(self, requests: u64) -> Self {
        let azure = self.provider == Provider::AzureOpenAi;
        let this = self.limit(Limit::requests_per_minute(requests));
        if azure {
            this.limit(Limit::new(
                Dimension::Requests,
                requests.div_ceil(6),
                Duration::from_secs(10),
            ))
        } else {
            this
        }
    }

    /// Tokens (input + output) per minute.
    pub fn tokens_per_minute(self, tokens: u64) -> Self {
        self.limit(Limit::tokens_per_minute(tokens))
    }

    /// Input tokens per minute (Anthropic's ITPM).
    pub fn input_tokens_per_minute(self, tokens: u64) -> Self {
        self.limit(Limit::input_tokens_per_minute(tokens))
    }

    /// Output tokens per minute (Anthropic's OTPM).
    pub fn output_tokens_per_minute(self, tokens: u64) -> Self {
        self.limit(Limit::output_tokens_per_minute(tokens))
    }

    /// Also charges this budget, shared with other stacks (a provider-wide or per-model budget,
    /// say). Every stack given a clone charges the same windows.
    pub fn shared_budget(mut self, budget: TokenBudget) -> Self {
        self.shared_budgets.push(budget);
        self.budget_on = true;
        self
    }

    /// No token budget (left out of the stack; [`ThrottleLayer::budgets`] then lists a budget with
    /// no limit).
    pub fn no_budget(mut self) -> Self {
        self.budget_on = false;
        self
    }

    /// How a request's token cost is estimated before it is sent (default: [`JsonEstimate`]).
    pub fn estimate<E2>(self, estimate: E2) -> Throttle<E2> {
        Throttle {
            feedback: self.feedback,
            name: self.name,
            provider: self.provider,
            breaker: self.breaker,
            concurrency: self.concurrency,
            retry: self.retry,
            limits: self.limits,
            has_limits: self.has_limits,
            shared_budgets: self.shared_budgets,
            budget_on: self.budget_on,
            headers: self.headers,
            estimate,
            callbacks: self.callbacks,
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
        }
    }

    /// Configures the header feedback layer (its parsers, maximum pause...).
    pub fn headers(mut self, f: impl FnOnce(HeaderFeedbackLayer) -> HeaderFeedbackLayer) -> Self {
        self.headers = Some(f(self.headers.unwrap_or_default()));
        self
    }

    /// Reads only this family of rate-limit headers.
    pub fn header_parser(self, parser: impl ParseHeaders) -> Self {
        self.headers(|_| HeaderFeedbackLayer::only(parser))
    }

    /// No header feedback (left out of the stack).
    pub fn no_header_feedback(mut self) -> Self {
        self.headers = None;
        self
    }

    /// Calls `f` on every [`Event`]: each attempt's outcome, quota reports, cuts of the limit,
    /// pauses, breaker transitions and local rejections. Several callbacks may be added.
    ///
    /// A breaker configured here reports its transitions to these callbacks; this replaces an
    /// `on_transition` callback set in [`breaker`](Throttle::breaker). A breaker given ready-built
    /// keeps its own.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use gentlify::{Event, Throttle};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let throttle = Throttle::new()
    ///     .on_event({
    ///         let seen = seen.clone();
    ///         move |event: &Event<'_>| {
    ///             if let Event::Attempt(outcome) = event {
    ///                 seen.lock().unwrap().push(outcome.class.as_str());
    ///             }
    ///         }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # drop(throttle);
    /// ```
    pub fn on_event(mut self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }

    /// Records metrics through the `metrics` crate, labelled `stack = <the handle's name>`
    /// (see [`crate::metrics`]).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Checks the settings and builds the stack.
    pub fn build(self) -> Result<ThrottleLayer<E>, ConfigError> {
        let feedback = match self.feedback {
            Some(feedback) => feedback,
            None => {
                let from_concurrency = match &self.concurrency {
                    Part::Given(l) => Some(l.feedback()),
                    _ => None,
                };
                let from_retry = match &self.retry {
                    Part::Given(l) => Some(l.feedback()),
                    _ => None,
                };
                match from_concurrency.or(from_retry) {
                    Some(feedback) => feedback.clone(),
                    None => {
                        let mut builder = Feedback::builder();
                        if let Some(name) = self.name {
                            builder = builder.name(name);
                        }
                        builder.build()
                    }
                }
            }
        };

        // A limiter switched off stays in the stack (pinned at a limit no workload reaches) while
        // the header layer may set the pause gate: it is the part that holds dispatch then.
        let headers_stacked = self.headers.is_some();
        let concurrency_stacked = headers_stacked || !matches!(self.concurrency, Part::Off);
        let concurrency = match self.concurrency {
            Part::Build(b) => b.feedback(feedback.clone()).build()?,
            Part::Given(layer) => {
                if !layer.feedback().same_as(&feedback) {
                    return Err(ConfigError::OtherHandle {
                        layer: "concurrency",
                    });
                }
                layer
            }
            // Out of the stack: built on a handle of its own, so that it hears nothing.
            Part::Off => AdaptiveConcurrencyBuilder::default()
                .feedback(if concurrency_stacked {
                    feedback.clone()
                } else {
                    Feedback::new()
                })
                .min(UNLIMITED)
                .max(UNLIMITED)
                .initial(UNLIMITED)
                .pacing(Pacing::disabled())
                .build()?,
        };
        let retry = match self.retry {
            Part::Build(b) => b.feedback(feedback.clone()).build()?,
            Part::Given(layer) => {
                if !layer.feedback().same_as(&feedback) {
                    return Err(ConfigError::OtherHandle { layer: "retry" });
                }
                layer
            }
            // Stays in the stack, sending each request once: it still reads a 429's body for
            // the markers of a quota gone for good, so that such a 429 is not taken for overload.
            Part::Off => RetryLayerBuilder::default()
                .feedback(feedback.clone())
                .max_attempts(1)
                .without_budget()
                .build()?,
        };

        let mut budgets = Vec::new();
        if self.budget_on {
            if self.has_limits || self.shared_budgets.is_empty() {
                budgets.push(self.limits.build()?);
            }
            budgets.extend(self.shared_budgets);
        } else {
            budgets.push(TokenBudget::builder().build()?);
        }
        // A budget with no limit at all has nothing to hold back nor to reconcile.
        let budget_stacked = budgets.iter().any(has_limits);
        let estimate = StackEstimate::new(self.estimate, &budgets);
        let mut budget = TokenBudgetLayer::new(budgets[0].clone()).estimate(estimate);
        if budget_stacked {
            budget = budget.feedback(feedback.clone());
        }
        for extra in &budgets[1..] {
            budget = budget.with_budget(extra.clone());
        }

        let headers = match self.headers {
            Some(layer) => layer.feedback(feedback.clone()),
            None => HeaderFeedbackLayer::only(NoHeaders)
                .server_delay(false)
                .hold_dispatch(false)
                .feedback(Feedback::new()),
        };

        #[cfg(feature = "metrics")]
        let metrics = self.metrics;
        #[cfg(not(feature = "metrics"))]
        let metrics = false;
        let observer = if !self.callbacks.is_empty() || metrics {
            #[allow(unused_mut)]
            let mut observer = Observer::new(self.callbacks, feedback.clone(), concurrency.clone());
            #[cfg(feature = "metrics")]
            if metrics {
                observer.metrics = Some(crate::metrics::StackMetrics::new(
                    feedback.name().unwrap_or("default"),
                    budgets.clone(),
                ));
            }
            Some(Arc::new(observer))
        } else {
            None
        };

        let stacked = Stacked {
            breaker: !matches!(self.breaker, Part::Off),
            concurrency: concurrency_stacked,
            budget: budget_stacked,
            headers: headers_stacked,
        };
        let breaker = match self.breaker {
            Part::Build(mut b) => {
                if let Some(observer) = &observer {
                    let observer = Arc::clone(observer);
                    b = b.on_transition(move |t| observer.transition(t));
                }
                b.feedback(feedback.clone()).build()?
            }
            Part::Given(layer) => layer,
            Part::Off => {
                let layer = CircuitBreakerBuilder::default()
                    .feedback(Feedback::new())
                    .build()?;
                layer.handle().disable();
                feedback.set_circuit_state(CircuitState::Disabled);
                layer
            }
        };
        if let Some(observer) = &observer {
            // Registered last, so it hears each outcome after the limiter has acted on it.
            feedback.register(observer);
        }

        Ok(ThrottleLayer {
            feedback,
            breaker,
            concurrency,
            retry,
            budget,
            headers,
            observer,
            stacked,
        })
    }
}

impl<E> fmt::Debug for Throttle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("feedback", &self.feedback)
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("breaker", &self.breaker)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("limits", &self.limits)
            .field("shared_budgets", &self.shared_budgets)
            .field("budget_on", &self.budget_on)
            .field("headers", &self.headers)
            .field("callbacks", &self.callbacks.len())
            .finish()
    }
}

/// The parser of a header layer switched off: reads nothing.
#[derive(Debug, Clone, Copy)]
struct NoHeaders;

impl ParseHeaders for NoHeaders {
    fn name(&self) -> &'static str {
        "none"
    }

    fn parse(&self, _: &http::HeaderMap, _: SystemTime) -> Option<QuotaReport> {
        None
    }
}

/// Whether `budget` limits anything at all.
fn has_limits(budget: &TokenBudget) -> bool {
    [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
        Dimension::ConcurrentRequests,
        Dimension::ContentBytes,
    ]
    .into_iter()
    .any(|d| budget.remaining(d).is_some())
}
