//! Sending a request again: cloneable bodies directly, other bodies from a bounded buffer.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use gentlify_core::BoxError;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::frame_to_bytes;

/// A request body the retry layer can send again.
///
/// Every `Clone` body is one (`String`, `Bytes`, `http_body_util::Full<Bytes>`, `()`...): the
/// retry layer keeps a clone of the request for the next attempt. A body that is not `Clone` (a
/// stream, hyper's `Incoming`) can be made replayable by a [`ReplayBodyLayer`](crate::ReplayBodyLayer)
/// outside the retry layer: it reads the body into a bounded buffer first, and a body over the
/// bound goes out once, unretried ([`try_clone_body`](TryCloneBody::try_clone_body) says `None`).
pub trait TryCloneBody: Sized {
    /// A copy of the body to send again, or `None` when this body can be sent only once.
    fn try_clone_body(&self) -> Option<Self>;
}

impl<B: Clone> TryCloneBody for B {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// A copy of `request` to send again: same method, URI, version, headers and extensions (so the
/// same [`Slot`](gentlify_core::Slot)), and a copy of the body.
pub(crate) fn try_clone_request<B: TryCloneBody>(
    request: &http::Request<B>,
) -> Option<http::Request<B>> {
    let body = request.body().try_clone_body()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// Makes request bodies that are not `Clone` replayable, for a [`RetryLayer`](crate::RetryLayer)
/// placed inside it: reads each body into memory up to `max_bytes` before sending the request on.
///
/// A body that ends within the bound becomes a [`ReplayBody`] the retry layer can send again. A
/// body over the bound is neither truncated nor dropped: what was read is sent first, then the rest
/// of the body as it streams, and the request goes out once, unretried. A body whose size hint is
/// already over the bound is not read at all.
///
/// As with `reqwest::Request::try_clone` (`None` for a streaming body) and tower's
/// `Policy::clone_request`, only a body held whole in memory is replayed.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full, StreamBody};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use gentlify_retry::{ReplayBody, ReplayBodyLayer, RetryLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let upstream = service_fn(|request: http::Request<ReplayBody<StreamBody<_>>>| async move {
///     let bytes = request.into_body().collect().await.unwrap().to_bytes();
///     Ok::<_, Infallible>(http::Response::new(Full::new(bytes)))
/// });
/// let client = ServiceBuilder::new()
///     .layer(ReplayBodyLayer::new(64 * 1024))
///     .layer(RetryLayer::new())
///     .service(upstream);
///
/// // A streamed body: not `Clone`.
/// let chunks = futures_util::stream::iter(vec![
///     Ok::<_, Infallible>(http_body::Frame::data(Bytes::from("hello "))),
///     Ok(http_body::Frame::data(Bytes::from("world"))),
/// ]);
/// let response = client.oneshot(http::Request::new(StreamBody::new(chunks))).await.unwrap();
/// assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello world");
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodyLayer {
    max_bytes: usize,
}

impl ReplayBodyLayer {
    /// Buffers bodies of up to `max_bytes` for replay.
    pub fn new(max_bytes: usize) -> Self {
        ReplayBodyLayer { max_bytes }
    }
}

impl<S> tower_layer::Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> ReplayBodyService<S> {
        ReplayBodyService {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// The service of a [`ReplayBodyLayer`].
#[derive(Debug, Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    max_bytes: usize,
}

impl<S, B> tower_service::Service<http::Request<B>> for ReplayBodyService<S>
where
    S: tower_service::Service<http::Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ReplayFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let (head, body) = request.into_parts();
        let too_large = body
            .size_hint()
            .lower()
            .try_into()
            .map_or(true, |lower: usize| lower > self.max_bytes);
        let state = if too_large {
            let body = ReplayBody::streaming(VecDeque::new(), Box::pin(body));
            let mut service = service;
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
                max_bytes: self.max_bytes,
            }
        };
        ReplayFuture { state }
    }
}

pin_project! {
    /// The response future of a [`ReplayBodyService`]: reads the body, then calls the inner
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

pin_project! {
    /// A request body made replayable by a [`ReplayBodyLayer`]: the whole body in memory
    /// (replayable), or, for a body over the bound, the part read followed by the rest of the
    /// original body (sent once).
    pub struct ReplayBody<B> {
        #[pin]
        kind: ReplayKind<B>,
    }
}

pin_project! {
    #[project = ReplayKindProj]
    enum ReplayKind<B> {
        Buffered {
            chunks: VecDeque<Bytes>,
            trailers: Option<HeaderMap>,
        },
        Streaming {
            read: VecDeque<Frame<Bytes>>,
            rest: Pin<Box<B>>,
        },
    }
}

impl<B> ReplayBody<B> {
    fn buffered(frames: VecDeque<Frame<Bytes>>) -> Self {
        let mut chunks = VecDeque::with_capacity(frames.len());
        let mut trailers: Option<HeaderMap> = None;
        for frame in frames {
            match frame.into_data() {
                Ok(data) => chunks.push_back(data),
                Err(frame) => {
                    if let Ok(more) = frame.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(more);
                    }
                }
            }
        }
        ReplayBody {
            kind: ReplayKind::Buffered { chunks, trailers },
        }
    }

    fn streaming(read: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>>) -> Self {
        ReplayBody {
            kind: ReplayKind::Streaming { read, rest },
        }
    }

    /// True when the whole body is in memory, so the request can be sent again.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, ReplayKind::Buffered { .. })
    }
}

impl<B> TryCloneBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Option<Self> {
        match &self.kind {
            ReplayKind::Buffered { chunks, trailers } => Some(ReplayBody {
                kind: ReplayKind::Buffered {
                    chunks: chunks.clone(),
                    trailers: trailers.clone(),
                },
            }),
            ReplayKind::Streaming { .. } => None,
        }
    }
}

impl<B: Body> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            ReplayKindProj::Buffered { chunks, trailers } => Poll::Ready(
                chunks
                    .pop_front()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            ReplayKindProj::Streaming { read, rest } => {
                if let Some(frame) = read.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                rest.as_mut()
                    .poll_frame(cx)
                    .map(|frame| frame.map(|f| f.map(frame_to_bytes)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ReplayKind::Buffered { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
            ReplayKind::Streaming { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ReplayKind::Buffered { chunks, .. } => {
                SizeHint::with_exact(chunks.iter().map(|c| c.len() as u64).sum())
            }
            ReplayKind::Streaming { read, rest } => {
                let buffered: u64 = read
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.len() as u64)
                    .sum();
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(buffered));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ReplayKind::Buffered { chunks, trailers } => f
                .debug_struct("ReplayBody")
                .field("buffered_chunks", &chunks.len())
                .field("trailers", &trailers.is_some())
                .finish(),
            ReplayKind::Streaming { read, .. } => f
                .debug_struct("ReplayBody")
                .field("read_frames", &read.len())
                .field("replayable", &false)
                .finish(),
        }
    }
}
