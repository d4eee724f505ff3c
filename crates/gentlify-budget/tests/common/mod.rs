//! Test bodies and services shared by the behaviour tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use gentlify_budget::{Limit, TokenBudget};
use http_body::{Body, Frame};

/// A body of scripted chunks; an `Err` chunk cuts the stream.
#[derive(Debug, Clone)]
pub struct Chunks(pub VecDeque<Result<Bytes, &'static str>>);

impl Chunks {
    pub fn ok<I: IntoIterator<Item = &'static str>>(chunks: I) -> Self {
        Chunks(chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect())
    }
    pub fn cut<I: IntoIterator<Item = &'static str>>(chunks: I) -> Self {
        let mut body = Chunks::ok(chunks);
        body.0.push_back(Err("connection reset"));
        body
    }
}

#[derive(Debug)]
pub struct Cut(pub &'static str);
impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Cut {}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        Poll::Ready(self.0.pop_front().map(|c| c.map(Frame::data).map_err(Cut)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A budget of `tokens` per minute and 1 000 requests per minute, used in full (ratio 1).
pub fn tpm(tokens: u64) -> TokenBudget {
    TokenBudget::builder()
        .limit(Limit::requests_per_minute(1_000))
        .limit(Limit::tokens_per_minute(tokens))
        .safety_ratio(1.0)
        .build()
        .unwrap()
}

pub fn sse(body: Chunks) -> Result<http::Response<Chunks>, Infallible> {
    Ok(http::Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap())
}

pub fn json(body: &'static str) -> Result<http::Response<Chunks>, Infallible> {
    Ok(http::Response::builder()
        .header("content-type", "application/json")
        .body(Chunks::ok([body]))
        .unwrap())
}
