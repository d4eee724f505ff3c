//! The gentlify contenders: the adaptive limiter alone, and the full [`gentlify::Throttle`]
//! stack with and without its header layer.
//!
//! All the clients of one run share one stack value (one limiter, one budget, one breaker on
//! one [`Feedback`] handle) through [`ContenderCtx::shared`]: they share one quota, and a user
//! running several workers against one API key gives them one throttle.

use std::sync::Arc;
use std::time::SystemTime;

use gentlify::concurrency::AdaptiveConcurrencyLayer;
use gentlify::core::{Controller, Outcome};
use gentlify::headers::{AnthropicHeaders, OpenAiHeaders};
use gentlify::{Feedback, Throttle, ThrottleLayer};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::client::{box_response, ClientStack, MeteredUpstream};
use crate::contenders::{ContenderCtx, LimitGauge};
use crate::scenario::HeaderStyle;
use crate::upstream::sim_wall_epoch;

/// Reports the limiter's limit to the plot's gauge after every attempt's outcome.
struct LimitReporter {
    limiter: AdaptiveConcurrencyLayer,
    gauge: LimitGauge,
}

impl Controller for LimitReporter {
    fn on_outcome(&self, _outcome: &Outcome) {
        self.gauge.set(self.limiter.snapshot().limit_exact);
    }
}

/// Keeps the gauge's reporter registered (the handle holds controllers weakly) and reports the
/// limit for the first client only: the clients share one limiter, and the plot sums the
/// clients' gauges.
fn report_limit(ctx: &ContenderCtx<'_>, feedback: &Feedback, limiter: &AdaptiveConcurrencyLayer) {
    if ctx.client != 0 {
        return;
    }
    let reporter = Arc::new(LimitReporter {
        limiter: limiter.clone(),
        gauge: ctx.limit.clone(),
    });
    reporter.gauge.set(limiter.snapshot().limit_exact);
    feedback.register(&reporter);
    // Registered weakly: keep it alive as long as the run's shared values (the run).
    ctx.shared(|| KeepAlive(Arc::new(std::sync::Mutex::new(Vec::new()))))
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reporter);
}

#[derive(Clone)]
struct KeepAlive(Arc<std::sync::Mutex<Vec<Arc<LimitReporter>>>>);

/// `gentlify-concurrency`: [`AdaptiveConcurrencyLayer`] with its defaults, one limiter for all
/// the run's clients, under the shared SDK-like retry.
///
/// The limit is read from the layer after each answer (into the first client's gauge: the plot
/// sums the clients' gauges), not by a controller on the handle: handing the handle out would
/// make the limiter send with slots, and this contender is the limiter alone as users run it,
/// without one.
pub(crate) fn concurrency_only(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    let limiter: AdaptiveConcurrencyLayer = ctx.shared(AdaptiveConcurrencyLayer::new);
    let gauge = ctx.shared(|| FirstGauge(ctx.limit.clone())).0;
    gauge.set(limiter.snapshot().limit_exact);
    let reading = limiter.clone();
    BoxCloneService::new(
        ServiceBuilder::new()
            .map_response(box_response)
            .map_result(move |result| {
                gauge.set(reading.snapshot().limit_exact);
                result
            })
            .layer(limiter)
            .service(up),
    )
}

/// The first client's limit gauge, shared by the run's clients.
#[derive(Clone)]
struct FirstGauge(crate::contenders::LimitGauge);

#[derive(Clone)]
struct SharedThrottle(ThrottleLayer);

/// The virtual wall clock of the run: the simulated API's RFC 3339 resets are measured from
/// [`sim_wall_epoch`] at the API's start, so the header layer reads them against the same
/// clock (deterministic: no real clock is read).
fn virtual_wall_clock() -> impl Fn() -> SystemTime + Send + Sync + 'static {
    let start = tokio::time::Instant::now();
    let epoch = sim_wall_epoch();
    move || epoch + (tokio::time::Instant::now() - start)
}

fn full_throttle(ctx: &ContenderCtx<'_>, headers: bool) -> ThrottleLayer {
    let limits = &ctx.scenario.limits;
    let mut throttle = match limits.headers {
        HeaderStyle::Anthropic => Throttle::anthropic(),
        HeaderStyle::Openai | HeaderStyle::None => Throttle::openai(),
    };
    // The same number of attempts as the shared retry gives the peers.
    let attempts = ctx.scenario.retry.max_retries + 1;
    throttle = throttle.retry(|r| r.max_attempts(attempts));
    if headers {
        let clock = virtual_wall_clock();
        throttle = match limits.headers {
            HeaderStyle::Anthropic => {
                throttle.headers(|_| gentlify::HeaderFeedbackLayer::only(AnthropicHeaders::new()))
            }
            HeaderStyle::Openai => {
                throttle.headers(|_| gentlify::HeaderFeedbackLayer::only(OpenAiHeaders::new()))
            }
            HeaderStyle::None => throttle,
        };
        throttle = throttle.headers(|h| h.wall_clock(clock));
    } else {
        throttle = throttle.no_header_feedback();
    }
    // A user knows their tier's published limits.
    if let Some(rpm) = limits.requests_per_minute {
        throttle = throttle.requests_per_minute(rpm);
    }
    if let Some(tpm) = limits.tokens_per_minute {
        throttle = throttle.tokens_per_minute(tpm);
    }
    throttle.build().expect("valid gentlify stack")
}

fn full(up: MeteredUpstream, ctx: &ContenderCtx<'_>, headers: bool) -> ClientStack {
    let SharedThrottle(throttle) = ctx.shared(|| SharedThrottle(full_throttle(ctx, headers)));
    report_limit(ctx, throttle.feedback(), throttle.concurrency_layer());
    BoxCloneService::new(throttle.layer(up).map_response(box_response))
}

/// `gentlify-full`: the facade's full stack, header parser of the scenario's style.
pub(crate) fn full_with_headers(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    full(up, ctx, true)
}

/// `gentlify-full-no-headers`: the same without the header layer.
pub(crate) fn full_without_headers(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    full(up, ctx, false)
}
