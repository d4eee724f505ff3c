//! A scripted upstream for the behaviour tests, in virtual time.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gentlify_concurrency::PermitBody;
use gentlify_core::{Class, Feedback, Outcome};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::Service;

pub type Reply = (u16, Duration);
type Script = dyn Fn(&str, u32) -> Reply + Send + Sync;

/// An upstream that answers each request after a scripted delay with a scripted status, and
/// records the arrival order, the attempts per request and the peak concurrency it saw.
#[derive(Clone)]
pub struct Upstream {
    pub state: Arc<Mutex<UpstreamState>>,
    script: Arc<Script>,
}

#[derive(Default)]
pub struct UpstreamState {
    pub arrivals: Vec<(String, Instant)>,
    pub attempts: HashMap<String, u32>,
    pub in_flight: usize,
    pub peak: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// Every request: 200 after `delay`.
    pub fn ok_after(delay: Duration) -> Self {
        Upstream::scripted(move |_, _| (200, delay))
    }

    /// `script(name, attempt)` gives the status and the delay.
    pub fn scripted(script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) -> Self {
        Upstream {
            state: Arc::default(),
            script: Arc::new(script),
        }
    }

    pub fn arrivals(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.arrivals.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn arrival_times(&self) -> Vec<(String, Instant)> {
        self.state.lock().unwrap().arrivals.clone()
    }

    pub fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight
    }
}

impl Service<http::Request<String>> for Upstream {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<String>) -> Self::Future {
        let name = request.into_body();
        let (attempt, reply) = {
            let mut state = self.state.lock().unwrap();
            state.arrivals.push((name.clone(), Instant::now()));
            let attempt = state.attempts.entry(name.clone()).or_insert(0);
            let this = *attempt;
            *attempt += 1;
            state.in_flight += 1;
            state.peak = state.peak.max(state.in_flight);
            (this, (self.script)(&name, this))
        };
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let _ = attempt;
            let (status, delay) = reply;
            tokio::time::sleep(delay).await;
            state.lock().unwrap().in_flight -= 1;
            Ok(http::Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(name)))
                .unwrap())
        })
    }
}

pub fn request(name: &str) -> http::Request<String> {
    http::Request::new(name.to_owned())
}

/// Reads a response's body to its end (which ends its slot).
pub async fn finish<B>(response: http::Response<PermitBody<B>>)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap();
}

/// A streamed answer's body: its one frame comes `length` after the body was made (its head),
/// and a reader polling it before then waits, as for a server still generating.
pub struct Streamed {
    sleep: Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
}

impl Streamed {
    pub fn new(length: Duration) -> Self {
        Streamed {
            sleep: Box::pin(tokio::time::sleep(length)),
            data: Some(Bytes::from_static(b"streamed")),
        }
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(
            self.data
                .take()
                .map(|data| Ok(http_body::Frame::data(data))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }
}

/// Publishes an attempt's outcome on the handle, as a layer below would.
pub fn publish(feedback: &Feedback, class: Class, sent_at: Instant) {
    feedback.publish(&Outcome::new(class, 0, sent_at));
}

pub fn overloaded() -> Class {
    Class::Overloaded { retry_after: None }
}

/// Lets spawned tasks run until they are all waiting (virtual time does not move).
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}
