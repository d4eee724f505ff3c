//! The service that makes request bodies replayable.

use std::task::{Context, Poll};

use gentlify_core::BoxError;
use http_body::Body;

use super::body::ReplayBody;
use super::future::ReplayFuture;

/// The service of a [`ReplayBodyLayer`](super::ReplayBodyLayer).
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
        // The instance made ready sends this request once its body is read.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ReplayFuture::new(service, request, self.max_bytes)
    }
}

impl<S> ReplayBodyService<S> {
    pub(super) fn new(inner: S, max_bytes: usize) -> Self {
        ReplayBodyService { inner, max_bytes }
    }
}
