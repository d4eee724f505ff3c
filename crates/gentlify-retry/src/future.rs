//! The response futures: [`ResponseFuture`] of [`Retry`](crate::Retry), one logical request
//! attempt after attempt, and [`ReplayFuture`] of [`ReplayBodyService`](crate::ReplayBodyService).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gentlify_core::{
    error::CircuitOpen, retry_after, should_retry, BoxError, Class, Classified, Dispatched,
    EndReason, Slot, SlotBody, SlotEnd,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::body::{frame_to_bytes, RetryBody};
use crate::error::AttemptTimeout;
use crate::layer::Config;
use crate::replay::{IntoHttpResponse, ReplayRequest};

pub use crate::replay::ReplayFuture;

pin_project! {
    /// The response future of [`Retry`](crate::Retry): sends the attempts of one logical request
    /// on the inner service instance made ready for it, sleeping between them, and resolves to the
    /// last response (its body wrapped so that the slot ends at the body's end) or error.
    ///
    /// Dropping it (cancellation), in flight or during a backoff sleep, ends the slot it made and
    /// so releases everything the slot holds.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
        S::Response: IntoHttpResponse,
    {
        #[pin]
        state: State<S::Future, <S::Response as IntoHttpResponse>::Body>,
        service: S,
        template: Option<Box<Req>>,
        end: Option<SlotEnd>,
        // The current attempt, and through it the request's slot.
        dispatched: Dispatched,
        config: Arc<Config>,
        // The per-attempt timeout while an attempt is in flight, the backoff while waiting.
        timer: Option<Pin<Box<Sleep>>>,
        // When the logical request began: read only when a time limit needs it.
        started: Option<Instant>,
        previous_delay: Duration,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // An attempt is in flight.
        Called { #[pin] future: F },
        // Reading the start of an error body to tell a fatal 429 from a transient one.
        Checking {
            head: Option<http::response::Parts>,
            body: Option<Pin<Box<B>>>,
            frames: VecDeque<Frame<Bytes>>,
            read: usize,
        },
        // Sleeping before the next attempt.
        Waiting,
        // Waiting for the inner instance to be ready for the next attempt.
        Readying,
    }
}

/// What one attempt came to.
enum Attempt<B> {
    Response(http::Response<RetryBody<B>>, Classified),
    Error(BoxError, Option<Class>),
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Response: IntoHttpResponse,
{
    #[inline]
    pub(crate) fn start(
        mut service: S,
        request: Req,
        template: Option<Box<Req>>,
        slot: Slot,
        end: Option<SlotEnd>,
        config: Arc<Config>,
    ) -> Self {
        let dispatched = slot.into_dispatched(&config.feedback);
        if dispatched.attempt() == 0 {
            if let Some(budget) = &config.budget {
                // A first attempt, counted when it is sent: at the dispatch's instant, which an
                // outer layer of the stack may have read already.
                budget.deposit_at(dispatched.sent_at());
            }
        }
        let timed = config.attempt_timeout.is_some() || config.max_total_time.is_some();
        let started = timed.then(Instant::now);
        let timer = config
            .attempt_timeout
            .zip(started)
            .map(|(timeout, started)| Box::pin(tokio::time::sleep_until(started + timeout)));
        ResponseFuture {
            // Called in place: the inner future is written where it lives, not moved there.
            state: State::Called {
                future: service.call(request),
            },
            service,
            template,
            end,
            dispatched,
            config,
            timer,
            started,
            previous_delay: Duration::ZERO,
        }
    }
}

/// True when the attempt's timeout (if any) has elapsed; registers the waker otherwise.
fn timed_out(config: &Config, timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    match (config.attempt_timeout, timer) {
        (Some(_), Some(timer)) => timer.as_mut().poll(cx).is_ready(),
        _ => false,
    }
}

fn arm(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) {
    match timer {
        Some(timer) => timer.as_mut().reset(deadline),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    Req: ReplayRequest,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: IntoHttpResponse,
    <S::Response as IntoHttpResponse>::Body: Body,
    <<S::Response as IntoHttpResponse>::Body as Body>::Error: Into<BoxError>,
{
    type Output = Result<
        http::Response<SlotBody<RetryBody<<S::Response as IntoHttpResponse>::Body>>>,
        BoxError,
    >;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        'attempts: loop {
            let attempt = match this.state.as_mut().project() {
                StateProj::Called { future } => 'called: {
                    let response = match future.poll(cx) {
                        Poll::Ready(Ok(response)) => response.into_http_response(),
                        Poll::Ready(Err(error)) => {
                            let error = error.into();
                            let class = this.dispatched.on_error(&*error);
                            break 'called Attempt::Error(error, class);
                        }
                        Poll::Pending => match this.config.attempt_timeout {
                            Some(timeout) if timed_out(this.config, this.timer, cx) => {
                                let error = Box::new(AttemptTimeout::new(timeout)) as BoxError;
                                let class = this.dispatched.on_error(&*error);
                                break 'called Attempt::Error(error, class);
                            }
                            _ => return Poll::Pending,
                        },
                    };
                    let wants_body = this.config.body_prefix_bytes > 0
                        && this.config.feedback.classifier().wants_body(&response);
                    if wants_body {
                        let (head, body) = response.into_parts();
                        this.state.set(State::Checking {
                            head: Some(head),
                            body: Some(Box::pin(body)),
                            frames: VecDeque::new(),
                            read: 0,
                        });
                        continue 'attempts;
                    }
                    let classified = this.dispatched.on_response(&response);
                    if let Classified::Ready(class) = classified {
                        // The success path, decided here as `retry_delay` would decide it (not
                        // retryable, not an error status), without moving the response through
                        // an `Attempt`.
                        if !class.is_retryable() && response.status().is_success() {
                            let end = this.end.take();
                            return Poll::Ready(Ok(response
                                .map(|body| SlotBody::new(RetryBody::direct(body), end, None))));
                        }
                    }
                    Attempt::Response(response.map(RetryBody::direct), classified)
                }
                StateProj::Checking {
                    head,
                    body,
                    frames,
                    read,
                } => {
                    let limit = this.config.body_prefix_bytes;
                    let mut ended = false;
                    let mut failed = None;
                    if let Some(inner) = body.as_mut() {
                        while *read < limit && !inner.is_end_stream() {
                            let polled = match inner.as_mut().poll_frame(cx) {
                                Poll::Ready(polled) => polled,
                                // A body that stalls past the attempt's timeout is classified
                                // from what has arrived, and handed on unread beyond it.
                                Poll::Pending if timed_out(this.config, this.timer, cx) => break,
                                Poll::Pending => return Poll::Pending,
                            };
                            match polled {
                                None => {
                                    ended = true;
                                    break;
                                }
                                Some(Ok(frame)) => {
                                    let frame = frame_to_bytes(frame);
                                    *read += frame.data_ref().map_or(0, Bytes::len);
                                    frames.push_back(frame);
                                }
                                Some(Err(error)) => {
                                    failed = Some(error.into());
                                    break;
                                }
                            }
                        }
                    }
                    let head = head.take().expect("checking a response head once");
                    if let Some(error) = failed {
                        // The body broke while its start was read: a transport failure.
                        let class = this.dispatched.on_error(&*error);
                        Attempt::Error(error, class)
                    } else {
                        let rest = if ended { None } else { body.take() };
                        let prefix = prefix_of(frames, limit);
                        let classified = this.dispatched.on_response_body(&head, &prefix);
                        // Gemini names its delay only in the body (`RetryInfo.retryDelay`).
                        let classified = match classified {
                            Classified::Ready(Class::Overloaded { retry_after: None }) => {
                                Classified::Ready(Class::Overloaded {
                                    retry_after: body_retry_delay(&prefix),
                                })
                            }
                            other => other,
                        };
                        let body = RetryBody::replay(std::mem::take(frames), rest);
                        Attempt::Response(http::Response::from_parts(head, body), classified)
                    }
                }
                StateProj::Waiting => {
                    if let Some(timer) = this.timer.as_mut() {
                        ready!(timer.as_mut().poll(cx));
                    }
                    // What the slot holds may say "not yet": a concurrency permit over a limit
                    // cut since it was granted waits, still held, for in-flight to come down.
                    ready!(this.dispatched.slot().poll_redispatch(cx));
                    // Another response may have paused the handle (server said wait) while this
                    // one slept: the retry waits for the gate like any new dispatch.
                    if let Some(until) = this.config.feedback.pause_gate().paused_until() {
                        arm(this.timer, until);
                        continue;
                    }
                    this.dispatched.slot().next_attempt();
                    this.state.set(State::Readying);
                    continue;
                }
                StateProj::Readying => {
                    if let Err(error) = ready!(this.service.poll_ready(cx)) {
                        if let Some(end) = this.end.take() {
                            end.end(EndReason::Error);
                        }
                        return Poll::Ready(Err(error.into()));
                    }
                    let attempt = this.dispatched.slot().attempt();
                    let last = attempt + 1 >= this.config.max_attempts;
                    let request = match this.template {
                        Some(template) if !last => template.try_clone_request(),
                        _ => None,
                    };
                    let Some(mut request) =
                        request.or_else(|| this.template.take().map(|template| *template))
                    else {
                        unreachable!("a retry is only decided with a request to replay");
                    };
                    // The template may have been copied without the slot (see `Retry::call`).
                    if let Some(extensions) = request.extensions_mut() {
                        extensions.insert(this.dispatched.slot().clone());
                    }
                    if let Some(name) = &this.config.attempt_header {
                        request
                            .headers_mut()
                            .insert(name.clone(), HeaderValue::from(attempt));
                    }
                    *this.dispatched = this.dispatched.slot().dispatch(&this.config.feedback);
                    let future = this.service.call(request);
                    if let Some(timeout) = this.config.attempt_timeout {
                        arm(this.timer, Instant::now() + timeout);
                    }
                    this.state.set(State::Called { future });
                    continue;
                }
            };

            let delay = match &attempt {
                Attempt::Response(response, Classified::Ready(class)) => retry_delay(
                    this.config,
                    this.dispatched.slot(),
                    this.template.is_some(),
                    Some(*class),
                    Some((response.status(), response.headers())),
                    *this.started,
                    *this.previous_delay,
                ),
                // The class is only known at the end of the stream: too late to retry.
                Attempt::Response(_, Classified::AtEndOfStream) => None,
                Attempt::Error(error, class) => match circuit_open(error) {
                    Some(open) => probe_delay(
                        this.config,
                        this.dispatched.slot(),
                        this.template.is_some(),
                        open,
                        *this.started,
                    ),
                    None => retry_delay(
                        this.config,
                        this.dispatched.slot(),
                        this.template.is_some(),
                        *class,
                        None,
                        *this.started,
                        *this.previous_delay,
                    ),
                },
            };
            match delay {
                Some(delay) => {
                    tracing::debug!(
                        attempt = this.dispatched.slot().attempt(),
                        delay_ms = delay.as_millis() as u64,
                        "gentlify retry after backoff"
                    );
                    drop(attempt);
                    *this.previous_delay = delay;
                    arm(this.timer, Instant::now() + delay);
                    this.state.set(State::Waiting);
                }
                None => return Poll::Ready(finish(attempt, this.end.take(), this.dispatched)),
            }
        }
    }
}

/// The delay a JSON error body names in a `"retryDelay": "2.500s"` field (Gemini's `RetryInfo`,
/// a protobuf `Duration` in its JSON form), if any.
fn body_retry_delay(prefix: &[u8]) -> Option<Duration> {
    const FIELD: &[u8] = b"\"retryDelay\"";
    let at = prefix.windows(FIELD.len()).position(|w| w == FIELD)?;
    let rest = &prefix[at + FIELD.len()..];
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let value = std::str::from_utf8(&rest[..end]).ok()?;
    gentlify_core::seconds_f64(value.strip_suffix('s')?.parse().ok()?)
}

/// The first `limit` bytes of the frames read.
fn prefix_of(frames: &VecDeque<Frame<Bytes>>, limit: usize) -> Bytes {
    let mut data = frames.iter().filter_map(Frame::data_ref);
    match (data.next(), data.next()) {
        (None, _) => Bytes::new(),
        (Some(only), None) => only.slice(..only.len().min(limit)),
        (Some(_), Some(_)) => {
            let mut prefix = Vec::with_capacity(limit);
            for chunk in frames.iter().filter_map(Frame::data_ref) {
                let room = limit - prefix.len();
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if prefix.len() == limit {
                    break;
                }
            }
            Bytes::from(prefix)
        }
    }
}

/// The breaker's rejection in `error`'s chain, if that is what it is.
fn circuit_open(error: &BoxError) -> Option<&CircuitOpen> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(err) = current {
        if let Some(open) = err.downcast_ref::<CircuitOpen>() {
            return Some(open);
        }
        current = err.source();
    }
    None
}

/// The wait for the breaker's next probe when the layer is configured to wait for it
/// ([`RetryLayerBuilder::wait_for_probe`](crate::RetryLayerBuilder::wait_for_probe)) and the
/// probe is near enough; `None` (return the rejection) otherwise. The attempt never reached the
/// server, so nothing is drawn from the retry budget.
fn probe_delay(
    config: &Config,
    slot: &Slot,
    replayable: bool,
    open: &CircuitOpen,
    started: Option<Instant>,
) -> Option<Duration> {
    let max_wait = config.wait_for_probe?;
    let wait = open.retry_in();
    let within_total = config
        .max_total_time
        .zip(started)
        .is_none_or(|(limit, started)| started.elapsed().saturating_add(wait) <= limit);
    let ok = replayable
        && wait <= max_wait
        && within_total
        && slot.attempt().saturating_add(1) < config.max_attempts;
    ok.then_some(wait)
}

/// The delay before the next attempt, or `None` when the request must not be retried.
fn retry_delay(
    config: &Config,
    slot: &Slot,
    replayable: bool,
    class: Option<Class>,
    head: Option<(StatusCode, &HeaderMap)>,
    started: Option<Instant>,
    previous: Duration,
) -> Option<Duration> {
    // `None`: a local rejection (never reached the server) or a class only known later.
    let class = class?;
    // A class that is not retryable is retried only for an error status the server marks
    // `x-should-retry: true`: a success is decided here, without reading a header.
    let error_status = head.is_some_and(|(status, _)| !status.is_success());
    if !class.is_retryable() && !error_status {
        return None;
    }
    let attempt = slot.attempt();
    if !replayable || attempt.saturating_add(1) >= config.max_attempts {
        return None;
    }
    let headers = head.map(|(_, headers)| headers);
    let server_says = headers.and_then(should_retry);
    let retryable = match server_says {
        Some(false) => false,
        // `x-should-retry: true` (OpenAI) makes any error status retryable, never a fatal one.
        Some(true) => class.is_retryable() || (class != Class::Fatal && error_status),
        None => class.is_retryable(),
    };
    if !retryable || config.feedback.circuit_state().rejects() {
        return None;
    }
    let server_delay = class
        .retry_after()
        .or_else(|| headers.and_then(retry_after));
    let paused_for = config.feedback.pause_gate().remaining();
    if server_delay.max(paused_for) > Some(config.max_server_delay) {
        return None;
    }
    let delay = server_delay
        .unwrap_or_else(|| config.backoff.delay(attempt, previous))
        .max(paused_for.unwrap_or_default());
    if let Some((limit, started)) = config.max_total_time.zip(started) {
        if started.elapsed().saturating_add(delay) > limit {
            return None;
        }
    }
    if let Some(budget) = &config.budget {
        if !budget.withdraw() {
            tracing::debug!("gentlify retry budget spent; returning the last result");
            return None;
        }
    }
    Some(delay)
}

fn finish<B: Body>(
    attempt: Attempt<B>,
    end: Option<SlotEnd>,
    dispatched: &Dispatched,
) -> Result<http::Response<SlotBody<RetryBody<B>>>, BoxError> {
    match attempt {
        Attempt::Response(response, classified) => {
            let eos = match classified {
                Classified::Ready(_) => None,
                Classified::AtEndOfStream => Some(dispatched.clone()),
            };
            Ok(SlotBody::wrap(response, end, eos))
        }
        Attempt::Error(error, _) => {
            if let Some(end) = end {
                end.end(EndReason::Error);
            }
            Err(error)
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Response: IntoHttpResponse,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Checking { .. } => "checking body",
            State::Waiting => "waiting",
            State::Readying => "readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("slot", self.dispatched.slot())
            .field("replayable", &self.template.is_some())
            .field("owns_slot", &self.end.is_some())
            .finish()
    }
}
