use std::fmt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use gentlify_core::{BoxError, Feedback, PauseWait, Slot, SlotBody};
use http_body::Body;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::observe::Observer;

/// The service made by [`HeaderFeedbackLayer`](crate::HeaderFeedbackLayer): forwards each attempt
/// and reads the headers of its response.
pub struct HeaderFeedback<S> {
    inner: S,
    // The handle is the observer's (`observer.feedback`): one reference count to clone and drop
    // when the retry layer above clones this service for a request, not two.
    observer: Arc<Observer>,
    // A waiter only when the layer holds dispatch: the retry layer above clones this service for
    // every request, and a waiter is one more handle to clone and drop (two atomic operations).
    wait: Option<PauseWait>,
}

impl<S> HeaderFeedback<S> {
    pub(crate) fn new(
        inner: S,
        feedback: Feedback,
        observer: Arc<Observer>,
        hold_dispatch: bool,
    ) -> Self {
        debug_assert!(observer.feedback.same_as(&feedback));
        let wait = hold_dispatch.then(|| PauseWait::new(feedback));
        HeaderFeedback {
            inner,
            observer,
            wait,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for HeaderFeedback<S> {
    fn clone(&self) -> Self {
        HeaderFeedback {
            inner: self.inner.clone(),
            observer: Arc::clone(&self.observer),
            wait: self
                .wait
                .as_ref()
                .map(|_| PauseWait::new(self.observer.feedback.clone())),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for HeaderFeedback<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderFeedback")
            .field("inner", &self.inner)
            .field("feedback", &self.observer.feedback)
            .field("parsers", &self.observer.parsers)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for HeaderFeedback<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = http::Response<SlotBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(wait) = &mut self.wait {
            ready!(wait.poll_wait(cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let feedback = &self.observer.feedback;
        let (slot, end) = Slot::get_or_insert(request.extensions_mut(), feedback);
        let dispatched = slot.into_dispatched(feedback);
        let observer = Arc::clone(&self.observer);
        // Called in place: the client's future is written where it lives, not moved there.
        ResponseFuture::new(self.inner.call(request), dispatched, end, observer)
    }
}
