//! The layer that makes request bodies replayable.

use super::service::ReplayBodyService;

/// Makes request bodies that are not `Clone` replayable, for a [`RetryLayer`](crate::RetryLayer)
/// placed inside it: reads each body into memory up to `max_bytes` before sending the request on.
///
/// A body that ends within the bound becomes a [`ReplayBody`](super::ReplayBody) the retry layer can send again. A
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
        ReplayBodyService::new(inner, self.max_bytes)
    }
}
