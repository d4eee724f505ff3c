//! The response body: the inner body, or a prefix read to classify it, replayed, then the rest.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response returned by [`Retry`](crate::Retry): the inner body's bytes, exactly.
    ///
    /// When the retry layer read the start of an error body to tell a fatal 429 from a transient
    /// one, the frames it read are replayed first, then the rest of the inner body: the caller
    /// sees the response as the server sent it.
    pub struct RetryBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Direct { #[pin] inner: B },
        Replay {
            frames: VecDeque<Frame<Bytes>>,
            // `None` once the inner body reached its end while its prefix was read.
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B> RetryBody<B> {
    pub(crate) fn direct(inner: B) -> Self {
        RetryBody {
            kind: Kind::Direct { inner },
        }
    }

    pub(crate) fn replay(frames: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<B>>>) -> Self {
        RetryBody {
            kind: Kind::Replay { frames, rest },
        }
    }
}

pub(crate) fn frame_to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> Body for RetryBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Direct { inner } => inner
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(frame_to_bytes))),
            KindProj::Replay { frames, rest } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                match rest {
                    Some(rest) => rest
                        .as_mut()
                        .poll_frame(cx)
                        .map(|frame| frame.map(|f| f.map(frame_to_bytes))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Direct { inner } => inner.is_end_stream(),
            Kind::Replay { frames, rest } => {
                frames.is_empty() && rest.as_ref().is_none_or(|rest| rest.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Direct { inner } => inner.size_hint(),
            Kind::Replay { frames, rest } => {
                let buffered: u64 = frames
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                let rest = rest.as_ref().map(|r| r.size_hint()).unwrap_or_else(|| {
                    let mut none = SizeHint::new();
                    none.set_upper(0);
                    none
                });
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(buffered));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Direct { inner } => f.debug_tuple("RetryBody").field(inner).finish(),
            Kind::Replay { frames, rest } => f
                .debug_struct("RetryBody")
                .field("replayed_frames", &frames.len())
                .field("rest", rest)
                .finish(),
        }
    }
}
