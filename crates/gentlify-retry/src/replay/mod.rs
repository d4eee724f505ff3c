//! Sending a request again: cloneable bodies directly, other bodies from a bounded buffer
//! ([`ReplayBodyLayer`]).

mod body;
mod future;
mod layer;
mod service;

pub use body::ReplayBody;
pub use future::ReplayFuture;
pub use layer::ReplayBodyLayer;
pub use service::ReplayBodyService;

/// A request body the retry layer can send again.
///
/// Every `Clone` body is one (`String`, `Bytes`, `http_body_util::Full<Bytes>`, `()`...): the
/// retry layer keeps a clone of the request for the next attempt. A body that is not `Clone` (a
/// stream, hyper's `Incoming`) can be made replayable by a [`ReplayBodyLayer`]
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
