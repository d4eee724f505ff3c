//! Helpers shared by the core's behaviour tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use gentlify_core::{Controller, EndReason, Hold, HoldKey, Outcome, Slot, SlotEnded};
use http_body::{Body, Frame};

/// A body that yields the frames it was given, one per poll, and can fail.
#[derive(Debug, Default)]
pub struct Frames(pub VecDeque<Result<Frame<Bytes>, TestError>>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestError(pub &'static str);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for TestError {}

impl Frames {
    pub fn data(chunks: &[&'static str]) -> Self {
        Frames(
            chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                .collect(),
        )
    }

    pub fn then_err(mut self, msg: &'static str) -> Self {
        self.0.push_back(Err(TestError(msg)));
        self
    }

    pub fn then_trailers(mut self, trailers: http::HeaderMap) -> Self {
        self.0.push_back(Ok(Frame::trailers(trailers)));
        self
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = TestError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TestError>>> {
        Poll::Ready(self.0.pop_front())
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Counts releases of the holds it makes, and remembers the end reasons.
#[derive(Debug, Default, Clone)]
pub struct Releases {
    count: Arc<AtomicUsize>,
    reasons: Arc<Mutex<Vec<EndReason>>>,
}

impl Releases {
    pub fn hold(&self) -> Box<dyn Hold> {
        let count = self.count.clone();
        let reasons = self.reasons.clone();
        Box::new(move |ended: &SlotEnded<'_>| {
            count.fetch_add(1, Ordering::SeqCst);
            reasons.lock().unwrap().push(ended.reason);
        })
    }

    pub fn put_in(&self, slot: &Slot) {
        assert!(slot.hold(HoldKey::unique(), self.hold()));
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn reasons(&self) -> Vec<EndReason> {
        self.reasons.lock().unwrap().clone()
    }
}

/// A controller that records every outcome it hears.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<Outcome>>);

impl Controller for Recorder {
    fn on_outcome(&self, outcome: &Outcome) {
        self.0.lock().unwrap().push(outcome.clone());
    }
}

impl Recorder {
    pub fn classes(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.class.as_str())
            .collect()
    }
    pub fn attempts(&self) -> Vec<u32> {
        self.0.lock().unwrap().iter().map(|o| o.attempt).collect()
    }
}

pub fn response(status: u16, body: Frames) -> http::Response<Frames> {
    http::Response::builder().status(status).body(body).unwrap()
}

pub type Never = Infallible;
