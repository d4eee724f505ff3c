//! Behaviour of the retry layer through its public API, in virtual time.

// The upstream helpers return `impl Service<...>` with their future types spelled out.
#![allow(clippy::type_complexity)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream;
use gentlify_core::error::CircuitOpen;
use gentlify_core::{
    BoxError, CircuitState, Controller, Feedback, HoldKey, Outcome, Slot, SlotEnded,
};
use gentlify_retry::{
    AttemptTimeout, Backoff, ConfigError, Jitter, ReplayBody, ReplayBodyLayer, RetryBudget,
    RetryLayer,
};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

type ResBody = BoxBody<Bytes, Infallible>;

fn body(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into()).boxed()
}

fn response(status: u16) -> http::Response<ResBody> {
    http::Response::builder()
        .status(status)
        .body(body("{}"))
        .unwrap()
}

fn with_header(status: u16, name: &'static str, value: &str) -> http::Response<ResBody> {
    http::Response::builder()
        .status(status)
        .header(name, value)
        .body(body("{}"))
        .unwrap()
}

fn request() -> http::Request<Full<Bytes>> {
    http::Request::new(Full::new(Bytes::from_static(b"{\"prompt\":\"hi\"}")))
}

/// What the upstream saw of one attempt.
#[derive(Clone)]
struct Seen {
    at: Duration,
    attempt: Option<u32>,
    slot: Option<Slot>,
    headers: http::HeaderMap,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    fn calls(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn times(&self) -> Vec<Duration> {
        self.seen().iter().map(|s| s.at).collect()
    }
}

/// An upstream that logs every attempt and answers with `answer(attempt seen, calls so far)`.
fn upstream(
    answer: impl Fn(&Seen, usize) -> http::Response<ResBody> + Clone + Send + Sync + 'static,
) -> (
    impl Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<ResBody>,
            Error = Infallible,
            Future = impl std::future::Future<Output = Result<http::Response<ResBody>, Infallible>>
                         + Send,
        > + Clone
        + Send,
    Log,
) {
    let start = Instant::now();
    let log = Log::default();
    let seen = log.clone();
    let service = service_fn(move |request: http::Request<Full<Bytes>>| {
        let slot = Slot::from_extensions(request.extensions()).cloned();
        let this = Seen {
            at: start.elapsed(),
            attempt: slot.as_ref().map(Slot::attempt),
            slot,
            headers: request.headers().clone(),
        };
        let calls = {
            let mut seen = seen.0.lock().unwrap();
            seen.push(this.clone());
            seen.len()
        };
        std::future::ready(Ok::<_, Infallible>(answer(&this, calls)))
    });
    (service, log)
}

/// An upstream answering with `script` in order, then 200s.
fn scripted(
    script: Vec<http::Response<ResBody>>,
) -> (
    impl Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<ResBody>,
            Error = Infallible,
            Future = impl std::future::Future<Output = Result<http::Response<ResBody>, Infallible>>
                         + Send,
        > + Clone
        + Send,
    Log,
) {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    upstream(move |_, _| {
        script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| response(200))
    })
}

fn layer() -> gentlify_retry::RetryLayerBuilder {
    RetryLayer::builder().backoff(Backoff::constant(Duration::from_millis(100)))
}

/// Sends one request through `layer()` to an upstream answering with `script` in order, then
/// 200s: the response, and the upstream's log.
async fn send_scripted(
    script: Vec<http::Response<ResBody>>,
) -> (
    http::Response<impl http_body::Body<Data = Bytes, Error = impl std::fmt::Debug>>,
    Log,
) {
    let (upstream, log) = scripted(script);
    let client = ServiceBuilder::new()
        .layer(layer().build().unwrap())
        .service(upstream);
    (client.oneshot(request()).await.unwrap(), log)
}

async fn read(
    response: http::Response<impl http_body::Body<Error = impl std::fmt::Debug>>,
) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

// ---- server-directed delays ----

async fn delay_before_second_attempt(first: http::Response<ResBody>) -> (Duration, usize) {
    let (response, log) = send_scripted(vec![first]).await;
    assert_eq!(response.status(), 200);
    let times = log.times();
    (times[1] - times[0], log.calls())
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_honoured_to_the_millisecond() {
    let (delay, calls) =
        delay_before_second_attempt(with_header(429, "retry-after-ms", "1234")).await;
    assert_eq!((delay, calls), (Duration::from_millis(1234), 2));
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_are_honoured_to_the_millisecond() {
    let (delay, _) = delay_before_second_attempt(with_header(503, "retry-after", "2")).await;
    assert_eq!(delay, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn fractional_retry_after_is_honoured_to_the_millisecond() {
    let (delay, _) = delay_before_second_attempt(with_header(429, "retry-after", "1.5")).await;
    assert_eq!(delay, Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_wins_over_retry_after() {
    let first = http::Response::builder()
        .status(429)
        .header("retry-after", "3")
        .header("retry-after-ms", "750")
        .body(body("{}"))
        .unwrap();
    let (delay, _) = delay_before_second_attempt(first).await;
    assert_eq!(delay, Duration::from_millis(750));
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_honoured_to_its_second() {
    // An HTTP-date has a resolution of one second and is read against the system clock, which
    // moves on between formatting it here and parsing it in the layer: the delay is 3 s less the
    // fraction of the current second, less that (tiny) real time.
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (delay, _) = delay_before_second_attempt(with_header(429, "retry-after", &at)).await;
    assert!(
        delay > Duration::from_secs(1) && delay <= Duration::from_secs(3),
        "{delay:?}"
    );
}

fn grpc(status: &str, pushback: Option<&str>) -> http::Response<ResBody> {
    let mut builder = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", status);
    if let Some(ms) = pushback {
        builder = builder.header("grpc-retry-pushback-ms", ms);
    }
    builder.body(body("")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn grpc_retry_pushback_is_honoured_to_the_millisecond() {
    let (delay, _) = delay_before_second_attempt(grpc("8", Some("700"))).await;
    assert_eq!(delay, Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn negative_grpc_pushback_is_not_retried() {
    let (response, log) = send_scripted(vec![grpc("8", Some("-1"))]).await;
    assert_eq!(response.headers()["grpc-status"], "8");
    assert_eq!(log.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_is_not_retried() {
    let (response, log) = send_scripted(vec![with_header(500, "x-should-retry", "false")]).await;
    assert_eq!((response.status().as_u16(), log.calls()), (500, 1));
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_true_retries_an_error_status() {
    let (response, log) = send_scripted(vec![with_header(409, "x-should-retry", "true")]).await;
    assert_eq!((response.status().as_u16(), log.calls()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_true_does_not_retry_a_success() {
    let (response, log) = send_scripted(vec![with_header(200, "x-should-retry", "true")]).await;
    assert_eq!((response.status().as_u16(), log.calls()), (200, 1));
}

/// Says a 200 carrying `x-busy` is overloaded, as a server that reports load in a success might.
struct BusySuccessIsOverload;

impl gentlify_core::Classify for BusySuccessIsOverload {
    fn classify_response(
        &self,
        response: &dyn gentlify_core::ResponseParts,
    ) -> gentlify_core::Classified {
        if response.headers().contains_key("x-busy") {
            gentlify_core::Classified::Ready(gentlify_core::Class::Overloaded { retry_after: None })
        } else {
            gentlify_core::DefaultClassifier.classify_response(response)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_status_the_classifier_calls_overloaded_is_retried() {
    let feedback = Feedback::builder()
        .classifier(BusySuccessIsOverload)
        .build();
    let (upstream, log) = scripted(vec![with_header(200, "x-busy", "1")]);
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback).build().unwrap())
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("x-busy"));
    assert_eq!(log.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_server_delay_over_the_maximum_returns_the_response() {
    let (upstream, log) = scripted(vec![with_header(429, "retry-after", "121")]);
    let client = ServiceBuilder::new()
        .layer(layer().build().unwrap())
        .service(upstream);
    let start = Instant::now();
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "121");
    assert_eq!((start.elapsed(), log.calls()), (Duration::ZERO, 1));
}

#[tokio::test(start_paused = true)]
async fn a_raised_maximum_waits_for_the_long_delay() {
    let (upstream, log) = scripted(vec![with_header(429, "retry-after", "121")]);
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .max_server_delay(Duration::from_secs(180))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(log.times()[1], Duration::from_secs(121));
}

#[tokio::test(start_paused = true)]
async fn the_pause_gate_lengthens_the_backoff() {
    let feedback = Feedback::new();
    let gate = feedback.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let upstream = service_fn({
        let calls = calls.clone();
        let times = times.clone();
        move |_request: http::Request<Full<Bytes>>| {
            times.lock().unwrap().push(start.elapsed());
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // What the header layer does with a reset hint.
                gate.pause_gate().pause_for(Duration::from_secs(3));
                return std::future::ready(Ok::<_, Infallible>(response(500)));
            }
            std::future::ready(Ok(response(200)))
        }
    });
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback).build().unwrap())
        .service(upstream);
    client.oneshot(request()).await.unwrap();
    assert_eq!(
        *times.lock().unwrap(),
        [Duration::ZERO, Duration::from_secs(3)]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_a_server_error_is_honoured() {
    let (delay, _) = delay_before_second_attempt(with_header(502, "retry-after", "4")).await;
    assert_eq!(delay, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_429_body_is_judged_on_what_arrived_by_the_attempt_timeout() {
    let stalled = || {
        let first = stream::iter(vec![Ok::<_, Infallible>(Frame::data(Bytes::from_static(
            br#"{"error":{"code":"rate_limit_exceeded""#,
        )))]);
        let body = StreamBody::new(futures_util::StreamExt::chain(first, stream::pending()));
        http::Response::builder()
            .status(429)
            .body(body.boxed())
            .unwrap()
    };
    let (upstream, log) = scripted(vec![stalled()]);
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .attempt_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(log.times(), [Duration::ZERO, Duration::from_millis(1100)]);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_retried_and_the_last_one_returned() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn({
        let calls = calls.clone();
        move |_request: http::Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err::<http::Response<ResBody>, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset by peer",
            )))
        }
    });
    let feedback = Feedback::new();
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(upstream);
    let error = client.oneshot(request()).await.unwrap_err();
    assert!(error.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(feedback.snapshot().attempts_failure, 3);
    assert_eq!(feedback.open_slots(), 0);
}

// ---- what is never retried ----

fn fatal_body() -> ResBody {
    // The fatal marker in the first frame, then more than the 8 KiB prefix in further frames.
    let mut frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from_static(
        br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","#,
    )))];
    for i in 0..12u8 {
        frames.push(Ok(Frame::data(Bytes::from(vec![b'a' + i; 1024]))));
    }
    frames.push(Ok(Frame::data(Bytes::from_static(b"}}"))));
    StreamBody::new(stream::iter(frames)).boxed()
}

async fn all_bytes(body: ResBody) -> Bytes {
    body.collect().await.unwrap().to_bytes()
}

#[derive(Default)]
struct Classes(Mutex<Vec<(u32, &'static str)>>);

impl Controller for Classes {
    fn on_outcome(&self, outcome: &Outcome) {
        self.0
            .lock()
            .unwrap()
            .push((outcome.attempt, outcome.class.as_str()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_fatal_429_is_not_retried_and_its_body_comes_back_intact() {
    let feedback = Feedback::new();
    let classes = Arc::new(Classes::default());
    feedback.register(&classes);
    let fatal = http::Response::builder()
        .status(429)
        .body(fatal_body())
        .unwrap();
    let (upstream, log) = scripted(vec![fatal]);
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!((response.status().as_u16(), log.calls()), (429, 1));
    assert_eq!(read(response).await, all_bytes(fatal_body()).await);
    assert_eq!(*classes.0.lock().unwrap(), [(0, "fatal")]);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fatal_429_is_heard_as_fatal_even_when_a_layer_below_saw_it_first() {
    // A gentlify layer below the retry (the header layer, in the recommended order) sees each
    // attempt's head first; for a 429 it defers publishing until the retry layer has read the
    // body, so the handle hears "fatal", once, and the request is not retried.
    let feedback = Feedback::new();
    let classes = Arc::new(Classes::default());
    feedback.register(&classes);
    let calls = Arc::new(AtomicUsize::new(0));
    let below = service_fn({
        let feedback = feedback.clone();
        let calls = calls.clone();
        move |request: http::Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let slot = Slot::from_extensions(request.extensions()).unwrap().clone();
            let dispatched = slot.dispatch(&feedback);
            let fatal = http::Response::builder()
                .status(429)
                .body(fatal_body())
                .unwrap();
            std::future::ready(gentlify_core::settle(
                Ok::<_, Infallible>(fatal),
                &dispatched,
                None,
            ))
        }
    });
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(below);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), calls.load(Ordering::SeqCst)),
        (429, 1)
    );
    assert_eq!(read(response).await, all_bytes(fatal_body()).await);
    assert_eq!(*classes.0.lock().unwrap(), [(0, "fatal")]);
}

#[tokio::test(start_paused = true)]
async fn provider_bodies_that_can_never_succeed_are_not_retried() {
    // From rate-limit-signals.md: OpenAI, Anthropic, Gemini.
    let bodies: [&'static [u8]; 5] = [
        br#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota"}}"#,
        br#"{"error":{"code":"credit_balance_exhausted"}}"#,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"enforced_spend_limit_reached"}}"#,
        br#"{"error":{"code":"rate_limit_exceeded","message":"Request too large for gpt-4o on tokens per min (TPM)"}}"#,
        br#"{"error":{"status":"RESOURCE_EXHAUSTED","details":[{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#,
    ];
    for fatal in bodies {
        let response = http::Response::builder()
            .status(429)
            .header("retry-after", "1")
            .body(body(Bytes::from_static(fatal)))
            .unwrap();
        let (upstream, log) = scripted(vec![response]);
        let client = ServiceBuilder::new()
            .layer(layer().build().unwrap())
            .service(upstream);
        let response = client.oneshot(request()).await.unwrap();
        assert_eq!(log.calls(), 1, "{}", String::from_utf8_lossy(fatal));
        assert_eq!(read(response).await, Bytes::from_static(fatal));
    }
}

#[tokio::test(start_paused = true)]
async fn anthropic_529_overloaded_is_retried() {
    let (delay, calls) = delay_before_second_attempt(with_header(529, "retry-after", "3")).await;
    assert_eq!((delay, calls), (Duration::from_secs(3), 2));
}

#[tokio::test(start_paused = true)]
async fn gemini_retry_delay_in_the_body_is_honoured_to_the_millisecond() {
    let gemini = http::Response::builder()
        .status(429)
        .body(body(Bytes::from_static(
            br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay": "2.500s"}]}}"#,
        )))
        .unwrap();
    let (delay, calls) = delay_before_second_attempt(gemini).await;
    assert_eq!((delay, calls), (Duration::from_millis(2500), 2));
}

#[tokio::test(start_paused = true)]
async fn a_transient_429_body_is_read_then_replayed_when_retries_run_out() {
    let transient = || {
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                br#"{"error":{"code":"rate_limit_exceeded","#,
            ))),
            Ok(Frame::data(Bytes::from(vec![b'x'; 9000]))),
            Ok(Frame::data(Bytes::from_static(b"}}"))),
        ];
        http::Response::builder()
            .status(429)
            .body(StreamBody::new(stream::iter(frames)).boxed())
            .unwrap()
    };
    let expected = all_bytes(transient().into_body()).await;
    let (upstream, log) = scripted(vec![transient(), transient()]);
    let client = ServiceBuilder::new()
        .layer(layer().max_attempts(2).build().unwrap())
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!((response.status().as_u16(), log.calls()), (429, 2));
    assert_eq!(read(response).await, expected);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn({
        let calls = calls.clone();
        move |_request: http::Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err::<http::Response<ResBody>, BoxError>(Box::new(
                CircuitOpen::new(Duration::from_secs(5)),
            )))
        }
    });
    let feedback = Feedback::new();
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(upstream);
    let error = client.oneshot(request()).await.unwrap_err();
    assert!(error.downcast_ref::<CircuitOpen>().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_rejection_can_wait_for_the_probe() {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let upstream = service_fn({
        let times = times.clone();
        move |_request: http::Request<Full<Bytes>>| {
            let mut times = times.lock().unwrap();
            times.push(start.elapsed());
            std::future::ready(if times.len() == 1 {
                Err::<_, BoxError>(Box::new(CircuitOpen::new(Duration::from_secs(2))))
            } else {
                Ok(response(200))
            })
        }
    });
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .wait_for_probe(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        *times.lock().unwrap(),
        [Duration::ZERO, Duration::from_secs(2)]
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_retried_while_the_circuit_is_open() {
    let feedback = Feedback::new();
    feedback.set_circuit_state(CircuitState::Open);
    let (upstream, log) = scripted(vec![response(500)]);
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback).build().unwrap())
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!((response.status().as_u16(), log.calls()), (500, 1));
}

#[tokio::test(start_paused = true)]
async fn successes_and_client_errors_are_not_retried() {
    for status in [200, 400, 404] {
        let (upstream, log) = scripted(vec![response(status)]);
        let client = ServiceBuilder::new()
            .layer(layer().build().unwrap())
            .service(upstream);
        let response = client.oneshot(request()).await.unwrap();
        assert_eq!((response.status().as_u16(), log.calls()), (status, 1));
    }
}

// ---- limits ----

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_retries() {
    let (upstream, log) = scripted((0..10).map(|_| response(500)).collect());
    let client = ServiceBuilder::new()
        .layer(layer().max_attempts(4).build().unwrap())
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!((response.status().as_u16(), log.calls()), (500, 4));
}

#[tokio::test(start_paused = true)]
async fn max_total_time_stops_retries_that_would_start_too_late() {
    let (upstream, log) = scripted((0..10).map(|_| response(500)).collect());
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::constant(Duration::from_secs(1)))
                .max_attempts(10)
                .max_total_time(Duration::from_millis(3500))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        log.times(),
        [0, 1, 2, 3].map(Duration::from_secs).to_vec(),
        "a fifth attempt would start at 4 s, past 3.5 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let upstream = service_fn({
        let calls = calls.clone();
        let times = times.clone();
        move |_request: http::Request<Full<Bytes>>| {
            times.lock().unwrap().push(start.elapsed());
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, Infallible>(response(200))
            }
        }
    });
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .attempt_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        *times.lock().unwrap(),
        [Duration::ZERO, Duration::from_millis(2100)]
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_timeout_is_a_typed_error() {
    let upstream = service_fn(|_request: http::Request<Full<Bytes>>| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, Infallible>(response(200))
    });
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .max_attempts(2)
                .attempt_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let start = Instant::now();
    let error = client.oneshot(request()).await.unwrap_err();
    let timeout = error.downcast_ref::<AttemptTimeout>().expect("typed");
    assert_eq!(timeout.timeout(), Duration::from_secs(1));
    assert_eq!(start.elapsed(), Duration::from_millis(2100));
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    // Finagle's default budget: 20 % of requests, plus 10 per second over a 10 s window.
    let (failing, log) = upstream(|_, _| response(500));
    let client = ServiceBuilder::new()
        .layer(layer().max_attempts(10).build().unwrap())
        .service(failing);
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(client.clone().oneshot(request())))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), 500);
    }
    let retries = log.calls() - 1000;
    assert!(
        (200..=300).contains(&retries),
        "{retries} retries for 1000 failing requests: 0.2 × 1000 + 10 × 10 at most"
    );

    // The same storm without a budget: every request uses all its attempts.
    let (failing, log) = upstream(|_, _| response(500));
    let client = ServiceBuilder::new()
        .layer(layer().max_attempts(10).without_budget().build().unwrap())
        .service(failing);
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(client.clone().oneshot(request())))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(log.calls() - 1000, 9000);
}

#[tokio::test(start_paused = true)]
async fn stacks_on_one_handle_share_one_budget() {
    let feedback = Feedback::new();
    // Two first attempts pay for one retry: only a budget both stacks draw on has it.
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap());
    let failing = || {
        let (upstream, log) = scripted((0..10).map(|_| response(500)).collect());
        (upstream, log)
    };
    let (a, log_a) = failing();
    let (b, log_b) = failing();
    let with_budget = |budget: Arc<RetryBudget>| {
        layer()
            .feedback(feedback.clone())
            .budget(budget)
            .max_attempts(10)
            .build()
            .unwrap()
    };
    let layer_on = |feedback: &Feedback| {
        layer()
            .feedback(feedback.clone())
            .max_attempts(10)
            .build()
            .unwrap()
    };
    let stack_a = ServiceBuilder::new()
        .layer(with_budget(budget.clone()))
        .service(a);
    let stack_b = ServiceBuilder::new().layer(with_budget(budget)).service(b);
    stack_a.oneshot(request()).await.unwrap();
    stack_b.oneshot(request()).await.unwrap();
    assert_eq!((log_a.calls(), log_b.calls()), (1, 2));

    // Without an explicit budget, a layer draws on the handle's: here one that never pays out.
    let stingy = Feedback::new();
    stingy.shared(|| RetryBudget::new(Duration::from_secs(10), 0, 0.0).unwrap());
    let (c, log_c) = failing();
    let stack_c = ServiceBuilder::new().layer(layer_on(&stingy)).service(c);
    stack_c.oneshot(request()).await.unwrap();
    assert_eq!(log_c.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_a_thousand_clients_at_the_cap() {
    // 10 ms doubling, capped at 1 s: the 8th retry (n = 7) would be 1.28 s, so it is at the cap.
    // Each client fails 8 times, then succeeds.
    let (failing, log) =
        upstream(|seen, _| response(if seen.attempt < Some(8) { 500 } else { 200 }));
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::exponential(
                    Duration::from_millis(10),
                    Duration::from_secs(1),
                ))
                .max_attempts(9)
                .without_budget()
                .build()
                .unwrap(),
        )
        .service(failing);
    let tasks: Vec<_> = (0..1000)
        .map(|client_id| {
            let request = http::Request::builder()
                .header("x-client", client_id)
                .body(Full::new(Bytes::new()))
                .unwrap();
            tokio::spawn(client.clone().oneshot(request))
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), 200);
    }
    let mut sent = std::collections::HashMap::<(String, u32), Duration>::new();
    for seen in log.seen() {
        let id = seen.headers["x-client"].to_str().unwrap().to_owned();
        sent.insert((id, seen.attempt.unwrap()), seen.at);
    }
    let waits: Vec<Duration> = (0..1000)
        .map(|id| sent[&(id.to_string(), 8)] - sent[&(id.to_string(), 7)])
        .collect();
    let cap = Duration::from_secs(1);
    assert!(
        waits.iter().all(|w| *w <= cap),
        "the cap holds after the jitter"
    );
    // Capping after the jitter would put about 22 % of them at exactly 1 s (U × 1.28 s ≥ 1 s).
    let at_cap = waits.iter().filter(|w| **w == cap).count();
    assert!(at_cap < 20, "{at_cap} clients retry together at the cap");
    let millis: std::collections::HashSet<u128> = waits.iter().map(|d| d.as_millis()).collect();
    assert!(millis.len() > 500, "{} distinct milliseconds", millis.len());
    let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    assert!(*min < Duration::from_millis(50) && *max > Duration::from_millis(950));
}

// ---- the slot ----

#[tokio::test(start_paused = true)]
async fn attempts_count_up_in_one_slot() {
    let (response, log) =
        send_scripted(vec![response(500), with_header(429, "retry-after-ms", "5")]).await;
    assert_eq!(response.status(), 200);
    let seen = log.seen();
    assert_eq!(
        seen.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );
    let first = seen[0].slot.clone().unwrap();
    assert!(seen
        .iter()
        .all(|s| s.slot.as_ref().unwrap().same_as(&first)));
}

#[derive(Debug, Clone, PartialEq)]
struct Tenant(&'static str);

#[tokio::test(start_paused = true)]
async fn the_callers_extensions_and_an_outer_slot_reach_every_attempt() {
    // With an extension of the caller's beside the slot, and with the slot alone.
    for tenant in [Some(Tenant("acme")), None] {
        let feedback = Feedback::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = service_fn({
            let seen = seen.clone();
            move |request: http::Request<Full<Bytes>>| {
                let mut seen = seen.lock().unwrap();
                let extensions = request.extensions();
                seen.push((
                    extensions.get::<Tenant>().cloned(),
                    Slot::from_extensions(extensions).cloned(),
                    extensions.len(),
                ));
                let status = if seen.len() < 3 { 500 } else { 200 };
                std::future::ready(Ok::<_, Infallible>(response(status)))
            }
        });
        let client = ServiceBuilder::new()
            .layer(layer().feedback(feedback.clone()).build().unwrap())
            .service(upstream);
        let mut request = request();
        if let Some(tenant) = tenant.clone() {
            request.extensions_mut().insert(tenant);
        }
        // An outer gentlify layer made the slot: every attempt carries it, and its end stays
        // with that layer.
        let (outer, end) = Slot::get_or_insert(request.extensions_mut(), &feedback);
        let sent = request.extensions().len();
        let response = client.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        read(response).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 3);
            for (seen_tenant, slot, len) in seen.iter() {
                assert_eq!(seen_tenant, &tenant);
                assert!(slot.as_ref().unwrap().same_as(&outer));
                assert_eq!(*len, sent);
            }
        }
        assert_eq!(outer.attempt(), 2);
        assert!(!outer.is_ended(), "the outer layer ends its slot");
        drop(end);
        assert_eq!(feedback.open_slots(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_carrying_an_ended_slot_gets_a_fresh_one() {
    let feedback = Feedback::new();
    let (upstream, log) = scripted(vec![response(500)]);
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(upstream);
    let mut stale = request();
    let (old, end) = Slot::get_or_insert(stale.extensions_mut(), &feedback);
    drop(end);
    assert!(old.is_ended());
    let response = client.oneshot(stale).await.unwrap();
    assert_eq!((response.status().as_u16(), log.calls()), (200, 2));
    let seen = log.seen();
    let slot = seen[0].slot.as_ref().unwrap();
    assert!(!slot.same_as(&old) && slot.same_as(seen[1].slot.as_ref().unwrap()));
    read(response).await;
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_inner_service_to_be_ready_again() {
    let (mock, mut handle) =
        tower_test::mock::pair::<http::Request<Full<Bytes>>, http::Response<ResBody>>();
    let mut client = ServiceBuilder::new()
        .layer(layer().build().unwrap())
        .service(mock);
    handle.allow(1);
    tokio_test::assert_ready_ok!(tokio_test::task::spawn(client.ready()).poll());
    let mut call = tokio_test::task::spawn(client.call(request()));
    tokio_test::assert_pending!(call.poll());
    let (first, send) = handle.next_request().await.unwrap();
    send.send_response(response(500));
    tokio_test::assert_pending!(call.poll());

    // The backoff is over, but the inner service is not ready: nothing is sent.
    tokio::time::advance(Duration::from_millis(100)).await;
    tokio_test::assert_pending!(call.poll());
    tokio_test::assert_pending!(tokio_test::task::spawn(handle.next_request()).poll());

    handle.allow(1);
    tokio_test::assert_pending!(call.poll());
    let (second, send) = handle.next_request().await.unwrap();
    let slot = |r: &http::Request<Full<Bytes>>| Slot::from_extensions(r.extensions()).cloned();
    assert!(slot(&first).unwrap().same_as(&slot(&second).unwrap()));
    assert_eq!(slot(&second).unwrap().attempt(), 1);
    send.send_response(response(200));
    let response = tokio_test::assert_ready_ok!(call.poll());
    assert_eq!(response.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_published_to_the_controllers() {
    let feedback = Feedback::new();
    let classes = Arc::new(Classes::default());
    feedback.register(&classes);
    let (upstream, _log) = scripted(vec![
        with_header(429, "retry-after-ms", "10"),
        response(500),
    ]);
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(upstream);
    let response = client.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        *classes.0.lock().unwrap(),
        [(0, "overloaded"), (1, "failure"), (2, "success")]
    );
    assert_eq!(feedback.open_slots(), 1, "held until the body is read");
    read(response).await;
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_the_backoff_releases_the_holds() {
    let feedback = Feedback::new();
    let released = Arc::new(AtomicBool::new(false));
    let upstream = service_fn({
        let released = released.clone();
        move |request: http::Request<Full<Bytes>>| {
            let slot = Slot::from_extensions(request.extensions()).unwrap();
            if slot.attempt() == 0 {
                // What a concurrency limiter or a token budget below does.
                let flag = released.clone();
                slot.hold(
                    HoldKey::unique(),
                    Box::new(move |_: &SlotEnded<'_>| flag.store(true, Ordering::SeqCst)),
                );
            }
            std::future::ready(Ok::<_, Infallible>(response(500)))
        }
    });
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .feedback(feedback.clone())
                .backoff(Backoff::constant(Duration::from_secs(10)))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let mut call = tokio_test::task::spawn(client.oneshot(request()));
    tokio_test::assert_pending!(call.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio_test::assert_pending!(call.poll());
    assert!(!released.load(Ordering::SeqCst), "held across the backoff");
    assert_eq!(feedback.open_slots(), 1);
    drop(call);
    assert!(released.load(Ordering::SeqCst));
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_idempotency_key_is_the_same_on_every_attempt() {
    let (upstream, log) = scripted(vec![response(500), response(502)]);
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .idempotency_header(http::HeaderName::from_static("idempotency-key"))
                .attempt_header(http::HeaderName::from_static("x-attempt"))
                .build()
                .unwrap(),
        )
        .service(upstream.clone());
    client.oneshot(request()).await.unwrap();
    let seen = log.seen();
    let keys: Vec<_> = seen
        .iter()
        .map(|s| s.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]) && keys[0].len() == 32);
    let attempts: Vec<_> = seen
        .iter()
        .map(|s| s.headers["x-attempt"].clone())
        .collect();
    assert_eq!(attempts, ["0", "1", "2"]);

    // A key the caller set is kept.
    let client = ServiceBuilder::new()
        .layer(
            layer()
                .idempotency_header(http::HeaderName::from_static("idempotency-key"))
                .build()
                .unwrap(),
        )
        .service(upstream);
    let mut mine = request();
    mine.headers_mut()
        .insert("idempotency-key", http::HeaderValue::from_static("mine"));
    client.oneshot(mine).await.unwrap();
    assert_eq!(
        log.seen().last().unwrap().headers["idempotency-key"],
        "mine"
    );
}

// ---- bodies that are not Clone ----

type Streamed = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn streamed(chunks: usize, chunk_len: usize) -> http::Request<Streamed> {
    let frames: Vec<_> = (0..chunks)
        .map(|i| Ok(Frame::data(Bytes::from(vec![b'0' + i as u8; chunk_len]))))
        .collect();
    http::Request::new(StreamBody::new(stream::iter(frames)))
}

fn body_recording_upstream(
    failures: usize,
) -> (
    impl Service<
            http::Request<ReplayBody<Streamed>>,
            Response = http::Response<ResBody>,
            Error = Infallible,
        > + Clone,
    Arc<Mutex<Vec<Bytes>>>,
) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let service = service_fn(move |request: http::Request<ReplayBody<Streamed>>| {
        let seen = seen.clone();
        async move {
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(bytes);
                seen.len()
            };
            Ok::<_, Infallible>(response(if n <= failures { 500 } else { 200 }))
        }
    });
    (service, bodies)
}

#[tokio::test(start_paused = true)]
async fn a_non_clone_body_under_the_bound_is_replayed() {
    let (upstream, bodies) = body_recording_upstream(1);
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(1024))
        .layer(layer().build().unwrap())
        .service(upstream);
    let response = client.oneshot(streamed(4, 256)).await.unwrap();
    assert_eq!(response.status(), 200);
    let expected = all_streamed(4, 256).await;
    assert_eq!(*bodies.lock().unwrap(), [expected.clone(), expected]);
}

#[tokio::test(start_paused = true)]
async fn a_non_clone_body_over_the_bound_goes_out_once_intact() {
    let (upstream, bodies) = body_recording_upstream(1);
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(1024))
        .layer(layer().build().unwrap())
        .service(upstream);
    let response = client.oneshot(streamed(8, 256)).await.unwrap();
    assert_eq!(
        response.status(),
        500,
        "not retried: the body cannot be replayed"
    );
    let expected = all_streamed(8, 256).await;
    assert_eq!(*bodies.lock().unwrap(), [expected]);
}

async fn all_streamed(chunks: usize, chunk_len: usize) -> Bytes {
    streamed(chunks, chunk_len)
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
}

// ---- configuration ----

#[test]
fn the_builder_refuses_what_cannot_work() {
    let err = |b: gentlify_retry::RetryLayerBuilder| b.build().unwrap_err();
    assert_eq!(
        err(RetryLayer::builder().max_attempts(0)),
        ConfigError::ZeroAttempts
    );
    assert!(matches!(
        err(RetryLayer::builder().backoff(Backoff::exponential(
            Duration::from_secs(2),
            Duration::from_secs(1)
        ))),
        ConfigError::BaseAboveCap { .. }
    ));
    assert!(matches!(
        err(RetryLayer::builder().backoff(Backoff::default().multiplier(0.5))),
        ConfigError::Multiplier(_)
    ));
    assert!(matches!(
        err(RetryLayer::builder().attempt_timeout(Duration::ZERO)),
        ConfigError::ZeroDuration(_)
    ));
    assert!(matches!(
        RetryBudget::new(Duration::from_secs(61), 1, 0.2),
        Err(ConfigError::BudgetTtl(_))
    ));
    assert!(matches!(
        RetryBudget::new(Duration::from_secs(10), 1, -1.0),
        Err(ConfigError::BudgetRatio(_))
    ));
}

#[test]
fn jitters_stay_within_their_bounds() {
    let base = Duration::from_millis(100);
    let cap = Duration::from_secs(2);
    let exp = |jitter| Backoff::exponential(base, cap).jitter(jitter);
    for retry in 0..20 {
        let capped = (base * 2u32.saturating_pow(retry.min(10))).min(cap);
        let full = exp(Jitter::Full).delay(retry, Duration::ZERO);
        assert!(full <= capped);
        let equal = exp(Jitter::Equal).delay(retry, Duration::ZERO);
        assert!(equal >= capped / 2 && equal <= capped);
        assert_eq!(exp(Jitter::None).delay(retry, Duration::ZERO), capped);
    }
    let mut previous = Duration::ZERO;
    for retry in 0..20 {
        let d = exp(Jitter::Decorrelated).delay(retry, previous);
        assert!(d >= base && d <= cap, "{d:?}");
        assert!(d <= (previous.max(base) * 3).min(cap));
        previous = d;
    }
    assert_eq!(
        Backoff::constant(Duration::from_millis(300)).delay(7, Duration::ZERO),
        Duration::from_millis(300)
    );
}

// ---- waiting before a re-dispatch ----

#[tokio::test(start_paused = true)]
async fn a_pause_set_by_another_response_during_the_backoff_holds_the_retry() {
    let feedback = Feedback::new();
    let (upstream, log) = scripted(vec![response(500)]);
    let client = ServiceBuilder::new()
        .layer(layer().feedback(feedback.clone()).build().unwrap())
        .service(upstream);
    let call = tokio::spawn(client.oneshot(request()));
    // 50 ms into the 100 ms backoff, another request's response pauses the handle for a second
    // (what the header layer does with `remaining: 0` and a reset).
    tokio::time::sleep(Duration::from_millis(50)).await;
    feedback.pause_gate().pause_for(Duration::from_secs(1));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        log.times(),
        [Duration::ZERO, Duration::from_millis(1050)],
        "the retry waits for the gate, not only for its own backoff"
    );
}

/// A hold that lets its request re-send only once `open` is set.
struct Gate {
    open: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<std::task::Waker>>>,
    released: Arc<AtomicBool>,
}

impl gentlify_core::Hold for Gate {
    fn release(self: Box<Self>, _: &SlotEnded<'_>) {
        self.released.store(true, Ordering::SeqCst);
    }

    fn poll_redispatch(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.open.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn a_hold_that_says_not_yet_holds_the_retry_in_its_slot() {
    let open = Arc::new(AtomicBool::new(false));
    let waker = Arc::new(Mutex::new(None::<std::task::Waker>));
    let released = Arc::new(AtomicBool::new(false));
    let gate = Gate {
        open: open.clone(),
        waker: waker.clone(),
        released: released.clone(),
    };
    let gate = Arc::new(Mutex::new(Some(gate)));
    let (upstream, log) = upstream(move |seen, calls| {
        if calls == 1 {
            // A layer below puts its resource in the request's slot (as a permit is).
            let gate = gate.lock().unwrap().take().unwrap();
            let slot = seen.slot.as_ref().unwrap();
            slot.hold(HoldKey::unique(), Box::new(gate));
            return response(503);
        }
        response(200)
    });
    let client = ServiceBuilder::new()
        .layer(layer().build().unwrap())
        .service(upstream);
    let call = tokio::spawn(client.oneshot(request()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        log.calls(),
        1,
        "the retry waits for its hold, past its backoff"
    );
    assert!(
        !released.load(Ordering::SeqCst),
        "and keeps it while it waits"
    );

    open.store(true, Ordering::SeqCst);
    waker.lock().unwrap().take().unwrap().wake();
    let response = call.await.unwrap().unwrap();
    assert_eq!(log.times(), [Duration::ZERO, Duration::from_secs(2)]);
    assert_eq!(log.seen()[1].attempt, Some(1));
    read(response).await;
    assert!(
        released.load(Ordering::SeqCst),
        "released when the slot ends"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_retry_held_by_its_slot_releases_the_hold() {
    let released = Arc::new(AtomicBool::new(false));
    let gate = Gate {
        open: Arc::new(AtomicBool::new(false)),
        waker: Arc::default(),
        released: released.clone(),
    };
    let gate = Arc::new(Mutex::new(Some(gate)));
    let (upstream, log) = upstream(move |seen, _| {
        if let Some(gate) = gate.lock().unwrap().take() {
            seen.slot
                .as_ref()
                .unwrap()
                .hold(HoldKey::unique(), Box::new(gate));
        }
        response(503)
    });
    let client = ServiceBuilder::new()
        .layer(layer().build().unwrap())
        .service(upstream);
    let call = tokio::spawn(client.oneshot(request()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!released.load(Ordering::SeqCst));
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert!(released.load(Ordering::SeqCst));
    assert_eq!(log.calls(), 1);
}
