//! Fakes shared by the behaviour tests: an upstream that records what it saw, and a body
//! streamed from a channel.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use gentlify::core::Slot;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

/// What the upstream saw: `"<id><attempt + 1>"` per attempt, e.g. `A1`, `A2`, `B1`.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The request's id (header `x-id`) and its attempt number from the slot.
pub fn id_and_attempt<B>(request: &http::Request<B>) -> (String, u32) {
    let id = request
        .headers()
        .get("x-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let attempt = Slot::from_extensions(request.extensions())
        .map(|slot| slot.attempt())
        .unwrap_or(0);
    (id, attempt)
}

pub fn request(id: &str) -> http::Request<String> {
    http::Request::post("/v1/chat/completions")
        .header("x-id", id)
        .body(String::from(
            r#"{"model":"m","max_tokens":10,"messages":[]}"#,
        ))
        .unwrap()
}

pub fn response(status: u16, body: &'static str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

pub type Response = http::Response<Full<Bytes>>;

pub fn ok() -> Result<Response, Infallible> {
    Ok(response(200, "ok"))
}

/// Reads a response body to its end.
pub async fn drain<B>(response: http::Response<B>) -> Bytes
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

/// A body whose chunks come from a channel; it ends when the sender is dropped.
pub struct ChannelBody(pub mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
