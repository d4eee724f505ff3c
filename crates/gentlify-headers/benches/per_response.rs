//! The cost of reading one response's headers: each parser on its own documented block, all the
//! default parsers on a response without rate-limit headers (the common case for most APIs), and
//! the layer around an instant upstream against the bare upstream, in the same run, on a response
//! with OpenAI's headers and on one with none.
//!
//! `cargo bench -p gentlify-headers --bench per_response -- --warm-up-time 1 --measurement-time 3`
//!
//! For instruction counts (repeatable on a noisy machine), the same request loop without
//! criterion: `PER_RESPONSE_ITERS=N PER_RESPONSE_MODE=bare|core|layer
//! PER_RESPONSE_HEADERS=none|openai|anthropic valgrind --tool=callgrind <bench binary>`. `core` is
//! the gentlify-core contract alone (pause gate wait, slot, dispatch, classify, publish, body
//! wrap, slot end: what any gentlify layer pays, as [`Tracked`] does it); `layer` minus `core` is
//! what reading the headers costs.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use gentlify_core::{BoxError, Feedback, PauseWait, Slot, SlotBody, Tracked};
use gentlify_headers::{
    default_parsers, AnthropicHeaders, HeaderFeedbackLayer, IetfHeaders, OpenAiHeaders,
    ParseHeaders,
};
use http::HeaderMap;
use http_body_util::Full;
use tower::{service_fn, Layer, Service};

fn block(text: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.lines().filter_map(|l| l.trim().split_once(':')) {
        headers.append(
            http::HeaderName::from_bytes(line.0.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(line.1.trim()).unwrap(),
        );
    }
    headers
}

const OPENAI: &str = "
x-ratelimit-limit-requests: 5000
x-ratelimit-limit-tokens: 160000
x-ratelimit-limit-tokens_usage_based: 160000
x-ratelimit-remaining-requests: 4999
x-ratelimit-remaining-tokens: 159976
x-ratelimit-remaining-tokens_usage_based: 159976
x-ratelimit-reset-requests: 12ms
x-ratelimit-reset-tokens: 9ms
x-ratelimit-reset-tokens_usage_based: 9ms
content-type: application/json
";

const ANTHROPIC: &str = "
anthropic-ratelimit-input-tokens-limit: 80000
anthropic-ratelimit-input-tokens-remaining: 80000
anthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:59Z
anthropic-ratelimit-output-tokens-limit: 16000
anthropic-ratelimit-output-tokens-remaining: 16000
anthropic-ratelimit-output-tokens-reset: 2025-08-21T12:41:00Z
anthropic-ratelimit-requests-limit: 1000
anthropic-ratelimit-requests-remaining: 999
anthropic-ratelimit-requests-reset: 2025-08-21T12:40:59Z
anthropic-ratelimit-tokens-limit: 96000
anthropic-ratelimit-tokens-remaining: 96000
anthropic-ratelimit-tokens-reset: 2025-08-21T12:40:59Z
";

const IETF: &str = r#"
RateLimit-Policy: "burst";q=100;w=60,"daily";q=1000;w=86400
RateLimit: "burst";r=50;t=30
"#;

fn parsers(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut group = c.benchmark_group("parse");
    let openai = block(OPENAI);
    group.bench_function("openai", |b| {
        b.iter(|| OpenAiHeaders::new().parse(black_box(&openai), now))
    });
    let anthropic = block(ANTHROPIC);
    group.bench_function("anthropic", |b| {
        b.iter(|| AnthropicHeaders::new().parse(black_box(&anthropic), now))
    });
    let ietf = block(IETF);
    group.bench_function("ietf", |b| {
        b.iter(|| IetfHeaders::new().parse(black_box(&ietf), now))
    });
    let all = default_parsers();
    let plain = block("content-type: application/json\nx-request-id: req_123");
    group.bench_function("all_defaults_no_rate_limit_headers", |b| {
        b.iter(|| {
            all.iter()
                .filter_map(|p| p.parse(black_box(&plain), now))
                .count()
        })
    });
    group.finish();
}

/// Calls a service whose futures complete at once, polling by hand (no runtime in the loop).
fn call_ready<S>(svc: &mut S) -> bool
where
    S: Service<http::Request<()>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let future = pin!(svc.call(http::Request::new(())));
    matches!(future.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let headers = block(OPENAI);
    let upstream = service_fn(move |_req: http::Request<()>| {
        let mut response = http::Response::new(Full::new(Bytes::new()));
        *response.headers_mut() = headers.clone();
        std::future::ready(Ok::<_, Infallible>(response))
    });

    let mut group = c.benchmark_group("per_request_openai_headers");
    let mut bare = upstream.clone();
    group.bench_function("bare", |b| b.iter(|| call_ready(&mut bare)));
    let mut layered = HeaderFeedbackLayer::new().layer(upstream.clone());
    group.bench_function("header_feedback", |b| b.iter(|| call_ready(&mut layered)));
    group.finish();

    // The common case: a response carrying no rate-limit header at all.
    let plain = block("content-type: application/json\nx-request-id: req_123");
    let upstream = service_fn(move |_req: http::Request<()>| {
        let mut response = http::Response::new(Full::new(Bytes::new()));
        *response.headers_mut() = plain.clone();
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut group = c.benchmark_group("per_request_no_rate_limit_headers");
    let mut bare = upstream.clone();
    group.bench_function("bare", |b| b.iter(|| call_ready(&mut bare)));
    let mut layered = HeaderFeedbackLayer::new().layer(upstream.clone());
    group.bench_function("header_feedback", |b| b.iter(|| call_ready(&mut layered)));
    group.finish();
}

/// The gentlify-core contract alone, as the header service does it without reading headers.
struct CoreOnly<S> {
    inner: S,
    feedback: Feedback,
    wait: PauseWait,
}

impl<S> Service<http::Request<()>> for CoreOnly<S>
where
    S: Service<http::Request<()>, Response = http::Response<Full<Bytes>>, Error = Infallible>,
{
    type Response = http::Response<SlotBody<Full<Bytes>>>;
    type Error = BoxError;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        std::task::ready!(self.wait.poll_wait(cx));
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<()>) -> Self::Future {
        let (slot, end) = Slot::get_or_insert(request.extensions_mut(), &self.feedback);
        let dispatched = slot.dispatch(&self.feedback);
        Tracked::new(self.inner.call(request), dispatched, end)
    }
}

criterion_group!(benches, parsers, layer);

fn main() {
    if let Ok(iters) = std::env::var("PER_RESPONSE_ITERS") {
        callgrind_loop(iters.parse().expect("a number of iterations"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// The request loop alone, for `valgrind --tool=callgrind`: see the module docs.
fn callgrind_loop(iters: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let headers = match std::env::var("PER_RESPONSE_HEADERS").as_deref() {
        Ok("openai") => block(OPENAI),
        Ok("anthropic") => block(ANTHROPIC),
        _ => block("content-type: application/json\nx-request-id: req_123"),
    };
    let upstream = service_fn(move |_req: http::Request<()>| {
        let mut response = http::Response::new(Full::new(Bytes::new()));
        *response.headers_mut() = headers.clone();
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mode = std::env::var("PER_RESPONSE_MODE").unwrap_or_default();
    let run = |svc: &mut dyn FnMut() -> bool| {
        for _ in 0..iters {
            assert!(black_box(svc()));
        }
    };
    match mode.as_str() {
        "layer" => {
            let mut svc = HeaderFeedbackLayer::new().layer(upstream);
            run(&mut || call_ready(&mut svc));
        }
        "core" => {
            let feedback = Feedback::new();
            let mut svc = CoreOnly {
                inner: upstream,
                wait: PauseWait::new(feedback.clone()),
                feedback,
            };
            run(&mut || call_ready(&mut svc));
        }
        _ => {
            let mut svc = upstream;
            run(&mut || call_ready(&mut svc));
        }
    }
}
