//! A retry keeps its request's concurrency permit: with a limit of 1 and request A's first attempt
//! failing, the upstream sees A1, A2, then B1, whether the retry layer sits inside the limiter (the
//! recommended order) or outside it.
//!
//! The limiter here is a minimal one written for this test, following the contract of
//! `gentlify-concurrency` (which this crate may not depend on): the permit is taken in
//! `poll_ready` unless the instance's last slot already holds it, and is kept as a `Hold` in the
//! slot until the slot ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gentlify_core::{BoxError, Feedback, HoldKey, Slot, SlotBody, SlotEnded, Tracked};
use gentlify_retry::{Backoff, RetryLayer};
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

#[derive(Clone)]
struct LimitLayer {
    semaphore: Arc<Semaphore>,
    key: HoldKey,
    feedback: Feedback,
}

impl LimitLayer {
    fn new(limit: usize, feedback: &Feedback) -> Self {
        LimitLayer {
            semaphore: Arc::new(Semaphore::new(limit)),
            key: HoldKey::unique(),
            feedback: feedback.clone(),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            limit: self.clone(),
            permit: None,
            acquiring: None,
            last_slot: None,
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

struct Limit<S> {
    inner: S,
    limit: LimitLayer,
    permit: Option<OwnedSemaphorePermit>,
    acquiring: Option<Acquire>,
    last_slot: Option<Slot>,
}

impl<S: Clone> Clone for Limit<S> {
    // A clone is a fresh instance: no permit, no last slot.
    fn clone(&self) -> Self {
        self.limit.layer(self.inner.clone())
    }
}

impl<S, B> Service<http::Request<Full<Bytes>>> for Limit<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body,
{
    type Response = http::Response<SlotBody<B>>;
    type Error = BoxError;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let retry_of_held = self
            .last_slot
            .as_ref()
            .is_some_and(|slot| slot.holds(self.limit.key));
        if !retry_of_held && self.permit.is_none() {
            let semaphore = self.limit.semaphore.clone();
            let acquiring = self.acquiring.get_or_insert_with(|| {
                Box::pin(async move { semaphore.acquire_owned().await.unwrap() })
            });
            self.permit = Some(ready!(acquiring.as_mut().poll(cx)));
            self.acquiring = None;
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Full<Bytes>>) -> Self::Future {
        let feedback = &self.limit.feedback;
        let (slot, end) = Slot::get_or_insert(request.extensions_mut(), feedback);
        if !slot.holds(self.limit.key) {
            let permit = self.permit.take().expect("poll_ready took a permit");
            slot.hold(
                self.limit.key,
                Box::new(move |_: &SlotEnded<'_>| drop(permit)),
            );
        }
        self.last_slot = Some(slot.clone());
        let dispatched = slot.dispatch(feedback);
        Tracked::new(self.inner.call(request), dispatched, end)
    }
}

/// An upstream that logs `name attempt` and fails A's first attempt.
fn upstream(
    log: Arc<Mutex<Vec<String>>>,
) -> impl Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
       + Send {
    service_fn(move |request: http::Request<Full<Bytes>>| {
        let name = request.headers()["x-name"].to_str().unwrap().to_owned();
        let attempt = Slot::from_extensions(request.extensions())
            .unwrap()
            .attempt();
        log.lock().unwrap().push(format!("{name}{}", attempt + 1));
        let status = if name == "A" && attempt == 0 {
            500
        } else {
            200
        };
        std::future::ready(Ok(http::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"answer")))
            .unwrap()))
    })
}

fn named(name: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .header("x-name", name)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn retry(feedback: &Feedback) -> RetryLayer {
    RetryLayer::builder()
        .feedback(feedback.clone())
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .build()
        .unwrap()
}

/// Sends A, then B while A waits for its retry, each reading its whole body.
async fn a_then_b<S, B>(client: S)
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    let send = |name| {
        let client = client.clone();
        tokio::spawn(async move {
            let response = client.oneshot(named(name)).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        })
    };
    let a = send("A");
    // A1 has failed and A is in its backoff when B arrives.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = send("B");
    assert_eq!(a.await.unwrap(), 200);
    assert_eq!(b.await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_retry_keeps_the_permit_with_retry_inside_the_limiter() {
    let feedback = Feedback::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = ServiceBuilder::new()
        .layer(LimitLayer::new(1, &feedback))
        .layer(retry(&feedback))
        .service(upstream(log.clone()));
    a_then_b(client).await;
    assert_eq!(*log.lock().unwrap(), ["A1", "A2", "B1"]);
    assert_eq!(feedback.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_keeps_the_permit_with_retry_outside_the_limiter() {
    let feedback = Feedback::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = ServiceBuilder::new()
        .layer(retry(&feedback))
        .layer(LimitLayer::new(1, &feedback))
        .service(upstream(log.clone()));
    a_then_b(client).await;
    assert_eq!(*log.lock().unwrap(), ["A1", "A2", "B1"]);
    assert_eq!(feedback.open_slots(), 0);
}

/// A limiter that releases its permit after each attempt instead of holding it in the slot: B
/// overtakes A's retry. Shows that the tests above would fail without the slot.
#[tokio::test(start_paused = true)]
async fn without_the_slot_b_would_overtake_the_retry() {
    let feedback = Feedback::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let semaphore = Arc::new(Semaphore::new(1));
    let inner = upstream(log.clone());
    let per_attempt = service_fn(move |request: http::Request<Full<Bytes>>| {
        let semaphore = semaphore.clone();
        let mut inner = inner.clone();
        async move {
            let _permit = semaphore.acquire_owned().await.unwrap();
            inner.call(request).await
        }
    });
    let client = ServiceBuilder::new()
        .layer(retry(&feedback))
        .service(per_attempt);
    a_then_b(client).await;
    assert_eq!(*log.lock().unwrap(), ["A1", "B1", "A2"]);
}
