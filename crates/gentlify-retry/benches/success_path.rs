//! The success path (one attempt, a 200) through gentlify's `Retry` against tower's `Retry` with
//! a policy that clones the request and never retries, and against the bare service, in the same
//! run.
//!
//! `SUCCESS_PATH_ITERS=N SUCCESS_PATH_MODE=<mode>` (`bare`, `tower`, `gentlify`, `floor`,
//! `bare_in_slot`, `gentlify_in_slot`) runs one of the loops N times without criterion, for
//! instruction counts under `valgrind --tool=callgrind` (repeatable on a noisy machine): the
//! difference between the counts of two iteration numbers, divided by the difference of those
//! numbers, is the cost of one request.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Ready;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use gentlify_core::Feedback;
use http_body_util::{BodyExt, Full};
use tower::retry::Policy;
use tower::{service_fn, Service, ServiceExt};

fn request() -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri("http://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap()
}

async fn ok(
    _request: http::Request<Full<Bytes>>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    ))))
}

#[derive(Clone)]
struct CloneNeverRetry;

impl<E> Policy<http::Request<Full<Bytes>>, http::Response<Full<Bytes>>, E> for CloneNeverRetry {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut http::Request<Full<Bytes>>,
        _result: &mut Result<http::Response<Full<Bytes>>, E>,
    ) -> Option<Self::Future> {
        None
    }

    fn clone_request(
        &mut self,
        request: &http::Request<Full<Bytes>>,
    ) -> Option<http::Request<Full<Bytes>>> {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

/// Sends `iters` requests through `service`, reading each body to its end. With `outer`, each
/// request already carries a slot made on that handle, as when an outer gentlify layer (the
/// facade's breaker and concurrency limiter) made it; the loop ends it after the body.
fn run<S, B>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    iters: u64,
    outer: Option<&Feedback>,
) -> Duration
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let mut service = service.clone();
        let start = Instant::now();
        for _ in 0..iters {
            let mut request = request();
            let end = outer.and_then(|feedback| {
                gentlify_core::Slot::get_or_insert(request.extensions_mut(), feedback).1
            });
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            // Reading the body ends the slot, as a caller would.
            response.into_body().collect().await.unwrap();
            drop(end);
        }
        start.elapsed()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn gentlify_default(feedback: &Feedback) -> gentlify_retry::RetryLayer {
    gentlify_retry::RetryLayer::builder()
        .feedback(feedback.clone())
        .build()
        .unwrap()
}

/// The floor: the slot and the outcome alone (no request copy, no budget).
fn gentlify_floor() -> gentlify_retry::RetryLayer {
    gentlify_retry::RetryLayer::builder()
        .max_attempts(1)
        .without_budget()
        .build()
        .unwrap()
}

fn success_path(c: &mut Criterion) {
    let rt = runtime();
    let feedback = Feedback::new();
    let mut group = c.benchmark_group("success_path");

    let bare = service_fn(ok);
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| run(&rt, &bare, iters, None))
    });

    let tower_retry = tower::retry::Retry::new(CloneNeverRetry, service_fn(ok));
    group.bench_function("tower_retry", |b| {
        b.iter_custom(|iters| run(&rt, &tower_retry, iters, None))
    });

    let gentlify_retry = tower_layer::Layer::layer(&gentlify_default(&feedback), service_fn(ok));
    group.bench_function("gentlify_retry", |b| {
        b.iter_custom(|iters| run(&rt, &gentlify_retry, iters, None))
    });

    let gentlify_floor = tower_layer::Layer::layer(&gentlify_floor(), service_fn(ok));
    group.bench_function("gentlify_retry_one_attempt_no_budget", |b| {
        b.iter_custom(|iters| run(&rt, &gentlify_floor, iters, None))
    });

    // As in the facade's stack: an outer layer made the slot; its baseline is the bare service
    // with the same slot made and ended around it.
    group.bench_function("bare_in_slot", |b| {
        b.iter_custom(|iters| run(&rt, &bare, iters, Some(&feedback)))
    });
    group.bench_function("gentlify_retry_in_slot", |b| {
        b.iter_custom(|iters| run(&rt, &gentlify_retry, iters, Some(&feedback)))
    });
    group.finish();
}

criterion_group!(benches, success_path);

fn main() {
    if let Ok(iters) = std::env::var("SUCCESS_PATH_ITERS") {
        let iters: u64 = iters.parse().expect("SUCCESS_PATH_ITERS: a number");
        let mode = std::env::var("SUCCESS_PATH_MODE").unwrap_or_default();
        let rt = runtime();
        let feedback = Feedback::new();
        let gentlify = || tower_layer::Layer::layer(&gentlify_default(&feedback), service_fn(ok));
        match mode.as_str() {
            "bare" => run(&rt, &service_fn(ok), iters, None),
            "tower" => run(
                &rt,
                &tower::retry::Retry::new(CloneNeverRetry, service_fn(ok)),
                iters,
                None,
            ),
            "gentlify" => run(&rt, &gentlify(), iters, None),
            "floor" => run(
                &rt,
                &tower_layer::Layer::layer(&gentlify_floor(), service_fn(ok)),
                iters,
                None,
            ),
            "bare_in_slot" => run(&rt, &service_fn(ok), iters, Some(&feedback)),
            "gentlify_in_slot" => run(&rt, &gentlify(), iters, Some(&feedback)),
            other => panic!(
                "SUCCESS_PATH_MODE: bare, tower, gentlify, floor, bare_in_slot or \
                 gentlify_in_slot, not {other:?}"
            ),
        };
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
