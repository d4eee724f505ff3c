//! The future that reads a request body, then sends the request.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use gentlify_core::BoxError;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use super::body::ReplayBody;
use crate::body::frame_to_bytes;

pin_project! {
    /// The response future of a [`ReplayBodyService`](super::ReplayBodyService): reads the body, then calls the inner
    /// service.
    pub struct ReplayFuture<S, B>
    where
        S: tower_service::Service<http::Request<ReplayBody<B>>>,
    {
        #[pin]
        state: ReplayState<S, S::Future, B>,
    }
}

pin_project! {
    #[project = ReplayStateProj]
    enum ReplayState<S, F, B> {
        Collecting {
            service: Option<S>,
            head: Option<http::request::Parts>,
            body: Option<Pin<Box<B>>>,
            frames: VecDeque<Frame<Bytes>>,
            read: usize,
            max_bytes: usize,
        },
        Called { #[pin] future: F },
    }
}

impl<S, B> ReplayFuture<S, B>
where
    S: tower_service::Service<http::Request<ReplayBody<B>>>,
    B: Body,
{
    pub(super) fn new(mut service: S, request: http::Request<B>, max_bytes: usize) -> Self {
        let (head, body) = request.into_parts();
        let too_large = usize::try_from(body.size_hint().lower()).map_or(true, |n| n > max_bytes);
        let state = if too_large {
            let body = ReplayBody::streaming(VecDeque::new(), Box::pin(body));
            ReplayState::Called {
                future: service.call(http::Request::from_parts(head, body)),
            }
        } else {
            ReplayState::Collecting {
                service: Some(service),
                head: Some(head),
                body: Some(Box::pin(body)),
                frames: VecDeque::new(),
                read: 0,
                max_bytes,
            }
        };
        ReplayFuture { state }
    }
}

impl<S, B> Future for ReplayFuture<S, B>
where
    S: tower_service::Service<http::Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                ReplayStateProj::Called { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                ReplayStateProj::Collecting {
                    service,
                    head,
                    body,
                    frames,
                    read,
                    max_bytes,
                } => {
                    let inner = body.as_mut().expect("collecting a body once");
                    let mut whole = false;
                    while *read <= *max_bytes {
                        if inner.is_end_stream() {
                            whole = true;
                            break;
                        }
                        match ready!(inner.as_mut().poll_frame(cx)) {
                            None => {
                                whole = true;
                                break;
                            }
                            Some(Ok(frame)) => {
                                let frame = frame_to_bytes(frame);
                                *read += frame.data_ref().map_or(0, Bytes::len);
                                frames.push_back(frame);
                            }
                            Some(Err(error)) => return Poll::Ready(Err(error.into())),
                        }
                    }
                    let frames = std::mem::take(frames);
                    let body = if whole {
                        ReplayBody::buffered(frames)
                    } else {
                        ReplayBody::streaming(frames, body.take().expect("collecting a body once"))
                    };
                    let request = http::Request::from_parts(head.take().expect("one head"), body);
                    let mut service = service.take().expect("one service");
                    let future = service.call(request);
                    this.state.set(ReplayState::Called { future });
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ReplayFuture<S, B>
where
    S: tower_service::Service<http::Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            ReplayState::Collecting { .. } => "collecting",
            ReplayState::Called { .. } => "called",
        };
        f.debug_struct("ReplayFuture")
            .field("state", &state)
            .finish()
    }
}
