//! The response future of [`Throttled`](crate::Throttled).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use gentlify_core::error::is_local_rejection;
use gentlify_core::BoxError;
use pin_project_lite::pin_project;

use crate::event::Observer;

pin_project! {
    /// The stack's response future; reports local rejections to the event callbacks and
    /// metrics, if any.
    ///
    /// The futures of the layers under the concurrency limiter are boxed, once per request
    /// ([`BoxedCall`](crate::toggle::BoxedCall)): together they are several hundred bytes (the
    /// client's own future, the retry's copy of the request, each layer's record of the
    /// attempt), which the limiter, the breaker, this future and every caller would otherwise
    /// move again (into its own future, a task, a join set). What is left here is the breaker's
    /// and the limiter's records of the attempt and a pointer, at most 128 bytes, and the future
    /// is `Unpin`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        observer: Option<Arc<Observer>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, observer: Option<Arc<Observer>>) -> Self {
        ResponseFuture { inner, observer }
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(observer) = this.observer.as_ref() {
            observer.check_pause();
            if let Err(error) = &result {
                if is_local_rejection(&**error) {
                    observer.rejected(&**error);
                }
            }
        }
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
