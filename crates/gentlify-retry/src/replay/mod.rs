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

/// A request the retry layer can send again, and the little it needs to see of it.
///
/// Implemented for `http::Request<B>` with a [`TryCloneBody`] body (every `Clone` body, and
/// [`ReplayBody`]), and, behind the `reqwest` feature, for `reqwest::Request` (replayable when
/// `try_clone` is: not for a streaming body).
pub trait ReplayRequest: Sized {
    /// A copy to send again (same method, URI, headers, extensions, body), or `None` when the
    /// request can be sent only once.
    fn try_clone_request(&self) -> Option<Self>;

    /// The request's headers (for the attempt and idempotency-key headers).
    fn headers_mut(&mut self) -> &mut http::HeaderMap;

    /// The extensions the [`Slot`](gentlify_core::Slot) travels in, if the type has them.
    fn extensions_mut(&mut self) -> Option<&mut http::Extensions>;
}

impl<B: TryCloneBody> ReplayRequest for http::Request<B> {
    fn try_clone_request(&self) -> Option<Self> {
        let body = self.body().try_clone_body()?;
        let mut copy = http::Request::new(body);
        *copy.method_mut() = self.method().clone();
        *copy.uri_mut() = self.uri().clone();
        *copy.version_mut() = self.version();
        *copy.headers_mut() = self.headers().clone();
        *copy.extensions_mut() = self.extensions().clone();
        Some(copy)
    }

    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        http::Request::headers_mut(self)
    }

    fn extensions_mut(&mut self) -> Option<&mut http::Extensions> {
        Some(http::Request::extensions_mut(self))
    }
}

/// `reqwest::Request` has no public extensions in reqwest 0.13: the slot cannot travel in it, so
/// the retry layer keeps the request's slot to itself and the inner service cannot read
/// [`Slot::attempt`](gentlify_core::Slot::attempt) (set an
/// [`attempt_header`](crate::RetryLayerBuilder::attempt_header) instead).
#[cfg(feature = "reqwest")]
impl ReplayRequest for reqwest::Request {
    fn try_clone_request(&self) -> Option<Self> {
        self.try_clone()
    }

    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        reqwest::Request::headers_mut(self)
    }

    fn extensions_mut(&mut self) -> Option<&mut http::Extensions> {
        None
    }
}

/// A response the retry layer can read: an `http::Response`, or, behind the `reqwest` feature, a
/// `reqwest::Response` (turned into `http::Response<reqwest::Body>`).
pub trait IntoHttpResponse {
    /// The response's body.
    type Body;

    /// The response as an `http::Response`.
    fn into_http_response(self) -> http::Response<Self::Body>;
}

impl<B> IntoHttpResponse for http::Response<B> {
    type Body = B;

    fn into_http_response(self) -> http::Response<B> {
        self
    }
}

#[cfg(feature = "reqwest")]
impl IntoHttpResponse for reqwest::Response {
    type Body = reqwest::Body;

    fn into_http_response(self) -> http::Response<reqwest::Body> {
        http::Response::from(self)
    }
}
