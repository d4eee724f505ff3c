//! What the breaker's tests share: a scripted upstream (the request says how it answers) and a
//! harness that records the calls that reached it and every transition.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gentlify_breaker::{CircuitBreakerBuilder, CircuitBreakerHandle, Transition};
use gentlify_core::error::CircuitOpen;
use gentlify_core::{BoxError, CircuitState, Feedback, SlotBody};
use http_body_util::Full;
use tower::{service_fn, Service, ServiceExt};

pub type Body = Full<Bytes>;
pub type Response = http::Response<SlotBody<Body>>;

/// How the upstream answers one request.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub latency: Duration,
    pub hang: bool,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            latency: Duration::ZERO,
            hang: false,
        }
    }

    pub fn after(status: u16, latency: Duration) -> Self {
        Answer {
            latency,
            ..Answer::status(status)
        }
    }

    pub fn hang() -> Self {
        Answer {
            hang: true,
            ..Answer::status(200)
        }
    }
}

/// An upstream that answers as each request asks, counting the requests that reached it.
pub fn upstream(
    sent: Arc<AtomicUsize>,
) -> impl Service<
    http::Request<Answer>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, Infallible>> + Send,
> + Clone
       + Send {
    service_fn(move |req: http::Request<Answer>| {
        sent.fetch_add(1, Ordering::SeqCst);
        let answer = *req.body();
        async move {
            if answer.hang {
                std::future::pending::<()>().await;
            }
            if !answer.latency.is_zero() {
                tokio::time::sleep(answer.latency).await;
            }
            Ok(http::Response::builder()
                .status(answer.status)
                .body(Full::new(Bytes::from_static(b"answer")))
                .unwrap())
        }
    })
}

pub struct Harness<S> {
    pub svc: S,
    pub breaker: CircuitBreakerHandle,
    pub feedback: Feedback,
    pub sent: Arc<AtomicUsize>,
    pub transitions: Arc<Mutex<Vec<Transition>>>,
}

/// The breaker `builder` describes (its transitions recorded) around [`upstream`].
pub fn harness(
    builder: CircuitBreakerBuilder,
) -> Harness<
    impl Service<
            http::Request<Answer>,
            Response = Response,
            Error = BoxError,
            Future = impl Future<Output = Result<Response, BoxError>> + Send,
        > + Clone
        + Send,
> {
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&transitions);
    let feedback = Feedback::new();
    let layer = builder
        .feedback(feedback.clone())
        .on_transition(move |t| log.lock().unwrap().push(t.clone()))
        .build()
        .expect("valid test configuration");
    let sent = Arc::new(AtomicUsize::new(0));
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Arc::clone(&sent)));
    Harness {
        svc,
        breaker: layer.handle(),
        feedback,
        sent,
        transitions,
    }
}

impl<S> Harness<S>
where
    S: Service<http::Request<Answer>, Response = Response, Error = BoxError>,
{
    /// One call answered with `answer`, its body dropped at once; the status, or the error.
    pub async fn send(&mut self, answer: Answer) -> Result<u16, BoxError> {
        let response = self
            .svc
            .ready()
            .await?
            .call(http::Request::new(answer))
            .await?;
        Ok(response.status().as_u16())
    }

    pub async fn call(&mut self, status: u16) -> Result<u16, BoxError> {
        self.send(Answer::status(status)).await
    }

    /// `n` calls answered with `status`, each expected to go through.
    pub async fn calls(&mut self, n: usize, status: u16) {
        for i in 0..n {
            let got = self.call(status).await;
            assert_eq!(got.ok(), Some(status), "call {i} of {n} was rejected");
        }
    }

    /// A call the breaker is expected to reject: how long it said to wait.
    pub async fn rejected(&mut self) -> Duration {
        let before = self.sent();
        let err = self
            .call(200)
            .await
            .expect_err("the breaker should reject this call");
        assert_eq!(self.sent(), before, "a rejected call reached the upstream");
        err.downcast_ref::<CircuitOpen>()
            .unwrap_or_else(|| panic!("not a CircuitOpen: {err}"))
            .retry_in()
    }

    /// Starts a call that hangs in the upstream; the caller polls or drops it.
    pub async fn start_hanging(&mut self) -> tokio_test::task::Spawn<S::Future> {
        self.svc.ready().await.expect("ready");
        let mut fut = tokio_test::task::spawn(self.svc.call(http::Request::new(Answer::hang())));
        assert!(fut.poll().is_pending());
        fut
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// The (from, to) pairs of every transition so far.
    pub fn path(&self) -> Vec<(CircuitState, CircuitState)> {
        self.transitions
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.from, t.to))
            .collect()
    }

    pub fn last_transition(&self) -> Transition {
        self.transitions
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a transition")
    }
}
