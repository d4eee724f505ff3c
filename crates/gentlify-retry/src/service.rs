//! The retry service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use gentlify_core::{BoxError, Slot, SlotBody};
use http::HeaderValue;
use http_body::Body;
use tower_service::Service;

use crate::body::RetryBody;
use crate::future::ResponseFuture;
use crate::layer::{Config, RetryLayer};
use crate::replay::{IntoHttpResponse, ReplayRequest};

/// Retries requests inside their [`Slot`]: made by [`RetryLayer`]; see the [crate docs](crate).
///
/// Each call takes the inner service instance that `poll_ready` made ready and keeps it for every
/// attempt of the request (`poll_ready` then `call` on that same instance), as tower's `Retry`
/// does. A concurrency limiter below it thus recognises a retry of a request it already admitted
/// and lets it through on the permit the request holds.
pub struct Retry<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with the default [`RetryLayer`] settings, on a handle of its own.
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&RetryLayer::new(), inner)
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Retry { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, Req> Service<Req> for Retry<S>
where
    Req: ReplayRequest,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: IntoHttpResponse,
    <S::Response as IntoHttpResponse>::Body: Body,
    <<S::Response as IntoHttpResponse>::Body as Body>::Error: Into<BoxError>,
{
    type Response = http::Response<SlotBody<RetryBody<<S::Response as IntoHttpResponse>::Body>>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Req) -> Self::Future {
        // The instance made ready serves every attempt of this request; the clone serves the next.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let config = &self.config;

        let found = request
            .extensions_mut()
            .and_then(|extensions| extensions.get::<Slot>().cloned());
        let in_extensions = found.is_some();
        let (slot, end) = match found {
            // Extensions copied from a request whose slot already ended: a new request.
            Some(slot) if !slot.is_ended() => (slot, None),
            _ => {
                let (slot, end) = Slot::new(&config.feedback);
                (slot, Some(end))
            }
        };
        if let Some(name) = &config.idempotency_header {
            if !request.headers_mut().contains_key(name) {
                let key = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                if let Ok(value) = HeaderValue::from_str(&key) {
                    request.headers_mut().insert(name.clone(), value);
                }
            }
        }
        if let Some(name) = &config.attempt_header {
            request
                .headers_mut()
                .insert(name.clone(), HeaderValue::from(slot.attempt()));
        }
        let template = if config.max_attempts > 1 {
            // Each retry puts the slot back into its copy (see `ResponseFuture`), so the
            // template need not hold it: a new slot goes in after the copy is made, and when a
            // slot is all the extensions hold (an outer gentlify layer's), they are set aside
            // while the request is copied. No extension map is then copied and dropped per
            // request.
            let set_aside = match request.extensions_mut() {
                Some(extensions) if in_extensions && extensions.len() == 1 => {
                    Some(std::mem::take(extensions))
                }
                _ => None,
            };
            let template = request.try_clone_request().map(Box::new);
            if let (Some(set_aside), Some(extensions)) = (set_aside, request.extensions_mut()) {
                *extensions = set_aside;
            }
            template
        } else {
            None
        };
        if end.is_some() {
            if let Some(extensions) = request.extensions_mut() {
                extensions.insert(slot.clone());
            }
        }
        ResponseFuture::start(service, request, template, slot, end, self.config.clone())
    }
}
