//! The replayable request body.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::TryCloneBody;
use crate::body::frame_to_bytes;

pin_project! {
    /// A request body made replayable by a [`ReplayBodyLayer`](super::ReplayBodyLayer): the whole body in memory
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
    pub(super) fn buffered(frames: VecDeque<Frame<Bytes>>) -> Self {
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

    pub(super) fn streaming(read: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>>) -> Self {
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
