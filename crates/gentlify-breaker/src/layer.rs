//! The layer.

use std::fmt;
use std::sync::Arc;

use gentlify_core::Feedback;
use tower_layer::Layer;

use crate::breaker::{Breaker, CircuitBreakerHandle};
use crate::config::CircuitBreakerBuilder;
use crate::service::CircuitBreaker;

/// Wraps a service in a [`CircuitBreaker`]. Every service the layer makes shares one breaker
/// (one state, one window), registered on the layer's [`Feedback`] handle.
///
/// ```
/// use gentlify_breaker::CircuitBreakerLayer;
/// use gentlify_core::Feedback;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let feedback = Feedback::new();
/// let layer = CircuitBreakerLayer::builder()
///     .feedback(feedback.clone())
///     .build()
///     .unwrap();
/// assert!(layer.feedback().same_as(&feedback));
/// assert!(feedback.snapshot().part("breaker").is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerLayer {
    /// A breaker with the defaults of [`CircuitBreakerBuilder`], on a handle of its own.
    pub fn new() -> Self {
        CircuitBreakerBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder, to change the defaults.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    pub(crate) fn from_breaker(breaker: Arc<Breaker>) -> Self {
        CircuitBreakerLayer { breaker }
    }

    /// A handle to read and steer the breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: Arc::clone(&self.breaker),
        }
    }

    /// The feedback handle the breaker listens on.
    pub fn feedback(&self) -> &Feedback {
        self.breaker.feedback()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        CircuitBreakerLayer::new()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_breaker(inner, Arc::clone(&self.breaker))
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish()
    }
}
