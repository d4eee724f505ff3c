//! Per-endpoint groups: a keyed set of stacks (chat / embeddings / per model / per user), each
//! key with limits of its own, all keys sharing a global [`TokenBudget`] and one circuit breaker
//! for the host.
//!
//! ```
//! use std::convert::Infallible;
//! use gentlify::{Limit, Throttle, ThrottleGroup, TokenBudget};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // The organisation's quota, shared by every endpoint.
//! let org = TokenBudget::new([Limit::requests_per_minute(10_000)]).unwrap();
//! let group = ThrottleGroup::builder(|endpoint: &String| match endpoint.as_str() {
//!         "/v1/embeddings" => Throttle::openai().concurrency(|c| c.max(64)),
//!         _ => Throttle::openai().concurrency(|c| c.max(16)),
//!     })
//!     .global_budget(org.clone())
//!     .max_keys(32)
//!     .build()
//!     .unwrap();
//!
//! let client = ServiceBuilder::new()
//!     .layer(group.layer(|request: &http::Request<String>| request.uri().path().to_owned()))
//!     .service_fn(|_request: http::Request<String>| async {
//!         Ok::<_, Infallible>(http::Response::new(String::from("ok")))
//!     });
//! let request = http::Request::post("/v1/embeddings").body(String::new()).unwrap();
//! client.oneshot(request).await.unwrap();
//! assert_eq!(group.len(), 1);
//! assert_eq!(org.remaining(gentlify::core::Dimension::Requests), Some(8_999));
//! # }
//! ```
//!
//! # Hierarchies
//!
//! Limits nest by giving the per-key stacks budgets shared at the level above: provider →
//! model → user is a group keyed by `(model, user)` whose closure gives each stack its model's
//! budget ([`Throttle::shared_budget`]) and its own per-user limits, under the group's global
//! budget. Every request is charged to all three.
//!
//! # Memory
//!
//! A group holds at most [`max_keys`](ThrottleGroupBuilder::max_keys) stacks. When a new key
//! comes to a full group, the least recently used stack with no request in progress is dropped
//! (or, if every stack is busy, the least recently used one: its requests finish on the stack
//! they started on, and the key starts afresh if it comes back).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use gentlify_core::{BoxError, Feedback};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use crate::budget::{JsonEstimate, TokenBudget};
use crate::error::ConfigError;
use crate::layer::ThrottleLayer;
use crate::service::Throttled;
use crate::throttle::Throttle;

/// The most stacks a group holds by default.
pub const DEFAULT_MAX_KEYS: usize = 1024;

type Make<K, E> = Box<dyn Fn(&K) -> Throttle<E> + Send + Sync>;

/// A keyed set of [`ThrottleLayer`]s made lazily by a closure, bounded in number, sharing a
/// global budget and a breaker. See the [module docs](self).
pub struct ThrottleGroup<K, E = JsonEstimate> {
    inner: Arc<Inner<K, E>>,
}

struct Inner<K, E> {
    make: Make<K, E>,
    budget: Option<TokenBudget>,
    breaker: Option<CircuitBreakerLayer>,
    max_keys: usize,
    stacks: Mutex<Stacks<K, E>>,
}

struct Stacks<K, E> {
    map: HashMap<K, (ThrottleLayer<E>, u64)>,
    clock: u64,
}

impl<K, E> Clone for ThrottleGroup<K, E> {
    fn clone(&self) -> Self {
        ThrottleGroup {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, E> ThrottleGroup<K, E>
where
    K: Hash + Eq + Clone,
    E: Clone,
{
    /// A builder; `make` gives the [`Throttle`] for a key the first time the key is seen.
    pub fn builder(
        make: impl Fn(&K) -> Throttle<E> + Send + Sync + 'static,
    ) -> ThrottleGroupBuilder<K, E> {
        ThrottleGroupBuilder {
            make: Box::new(make),
            budget: None,
            breaker: Some(crate::throttle::default_breaker()),
            breaker_layer: None,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// The stack for `key`, made now if it does not exist yet (with the group's global budget
    /// and breaker added to what the closure configured).
    pub fn get(&self, key: &K) -> Result<ThrottleLayer<E>, ConfigError> {
        let mut stacks = self.inner.stacks.lock().unwrap_or_else(|e| e.into_inner());
        stacks.clock += 1;
        let now = stacks.clock;
        if let Some((layer, used)) = stacks.map.get_mut(key) {
            *used = now;
            return Ok(layer.clone());
        }
        let mut throttle = (self.inner.make)(key);
        if let Some(budget) = &self.inner.budget {
            throttle = throttle.shared_budget(budget.clone());
        }
        if let Some(breaker) = &self.inner.breaker {
            throttle = throttle.breaker_layer(breaker.clone());
        }
        let layer = throttle.build()?;
        if stacks.map.len() >= self.inner.max_keys {
            let victim = stacks
                .map
                .iter()
                .min_by_key(|(_, (layer, used))| (layer.feedback().open_slots() > 0, *used))
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                stacks.map.remove(&victim);
            }
        }
        stacks.map.insert(key.clone(), (layer.clone(), now));
        Ok(layer)
    }

    /// The number of stacks held now.
    pub fn len(&self) -> usize {
        self.inner
            .stacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// True when no stack has been made yet (or all were dropped).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global budget every key is charged to, if one was set.
    pub fn global_budget(&self) -> Option<&TokenBudget> {
        self.inner.budget.as_ref()
    }

    /// The breaker every key shares, if any.
    pub fn breaker(&self) -> Option<&CircuitBreakerLayer> {
        self.inner.breaker.as_ref()
    }

    /// A [`Layer`] routing each request to its key's stack; `key_of` reads the key from the
    /// request (its path, a header naming the model or the user...).
    pub fn layer<F>(&self, key_of: F) -> ThrottleGroupLayer<K, E, F> {
        ThrottleGroupLayer {
            group: self.clone(),
            key_of: Arc::new(key_of),
        }
    }
}

impl<K, E> fmt::Debug for ThrottleGroup<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stacks = self.inner.stacks.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("ThrottleGroup")
            .field("keys", &stacks.map.len())
            .field("max_keys", &self.inner.max_keys)
            .field("budget", &self.inner.budget)
            .field("breaker", &self.inner.breaker)
            .finish()
    }
}

/// Builds a [`ThrottleGroup`].
pub struct ThrottleGroupBuilder<K, E = JsonEstimate> {
    make: Make<K, E>,
    budget: Option<TokenBudget>,
    breaker: Option<CircuitBreakerBuilder>,
    breaker_layer: Option<CircuitBreakerLayer>,
    max_keys: usize,
}

impl<K, E> ThrottleGroupBuilder<K, E>
where
    K: Hash + Eq + Clone,
    E: Clone,
{
    /// A budget every key's requests are charged to, on top of the key's own.
    pub fn global_budget(mut self, budget: TokenBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Configures the breaker all keys share (the default: one breaker with the presets'
    /// settings, which wait while open (see [`Throttle`](crate::Throttle#a-call-that-finds-the-breaker-open-waits)),
    /// on a handle of the group's own).
    pub fn breaker(
        mut self,
        f: impl FnOnce(CircuitBreakerBuilder) -> CircuitBreakerBuilder,
    ) -> Self {
        self.breaker = Some(f(self
            .breaker
            .unwrap_or_else(crate::throttle::default_breaker)));
        self.breaker_layer = None;
        self
    }

    /// Shares this breaker between all keys (and whatever else it is given to).
    pub fn breaker_layer(mut self, layer: CircuitBreakerLayer) -> Self {
        self.breaker_layer = Some(layer);
        self
    }

    /// No shared breaker: each key's stack has the breaker its closure configured.
    pub fn no_shared_breaker(mut self) -> Self {
        self.breaker = None;
        self.breaker_layer = None;
        self
    }

    /// The most stacks held at once (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Checks the settings and builds the group (no stack is made until its key is seen).
    pub fn build(self) -> Result<ThrottleGroup<K, E>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroKeys);
        }
        let breaker = match (self.breaker_layer, self.breaker) {
            (Some(layer), _) => Some(layer),
            (None, Some(builder)) => Some(builder.feedback(Feedback::new()).build()?),
            (None, None) => None,
        };
        Ok(ThrottleGroup {
            inner: Arc::new(Inner {
                make: self.make,
                budget: self.budget,
                breaker,
                max_keys: self.max_keys,
                stacks: Mutex::new(Stacks {
                    map: HashMap::new(),
                    clock: 0,
                }),
            }),
        })
    }
}

impl<K, E> fmt::Debug for ThrottleGroupBuilder<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleGroupBuilder")
            .field("budget", &self.budget)
            .field("breaker", &self.breaker)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

/// Routes each request to its key's stack of a [`ThrottleGroup`]. Made by
/// [`ThrottleGroup::layer`].
pub struct ThrottleGroupLayer<K, E, F> {
    group: ThrottleGroup<K, E>,
    key_of: Arc<F>,
}

impl<K, E, F> Clone for ThrottleGroupLayer<K, E, F> {
    fn clone(&self) -> Self {
        ThrottleGroupLayer {
            group: self.group.clone(),
            key_of: Arc::clone(&self.key_of),
        }
    }
}

impl<K, E, F> fmt::Debug for ThrottleGroupLayer<K, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleGroupLayer")
            .field("group", &self.group)
            .finish()
    }
}

impl<S, K, E, F> Layer<S> for ThrottleGroupLayer<K, E, F> {
    type Service = Grouped<S, K, E, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Grouped {
            inner,
            group: self.group.clone(),
            key_of: Arc::clone(&self.key_of),
        }
    }
}

/// The service of a [`ThrottleGroupLayer`]: finds the request's stack and sends it through.
pub struct Grouped<S, K, E, F> {
    inner: S,
    group: ThrottleGroup<K, E>,
    key_of: Arc<F>,
}

impl<S: Clone, K, E, F> Clone for Grouped<S, K, E, F> {
    fn clone(&self) -> Self {
        Grouped {
            inner: self.inner.clone(),
            group: self.group.clone(),
            key_of: Arc::clone(&self.key_of),
        }
    }
}

impl<S: fmt::Debug, K, E, F> fmt::Debug for Grouped<S, K, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grouped")
            .field("inner", &self.inner)
            .field("group", &self.group)
            .finish()
    }
}

impl<S, K, E, F, ReqBody> Service<http::Request<ReqBody>> for Grouped<S, K, E, F>
where
    S: Clone,
    K: Hash + Eq + Clone,
    E: Clone,
    F: Fn(&http::Request<ReqBody>) -> K,
    Throttled<S, E>: Service<http::Request<ReqBody>, Error = BoxError>,
{
    type Response = <Throttled<S, E> as Service<http::Request<ReqBody>>>::Response;
    type Error = BoxError;
    type Future = GroupFuture<Throttled<S, E>, http::Request<ReqBody>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per key: each request waits for its own stack in the future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let key = (self.key_of)(&request);
        match self.group.get(&key) {
            Ok(layer) => GroupFuture::running(layer.layer(self.inner.clone()), request),
            Err(error) => GroupFuture::failed(error.into()),
        }
    }
}

pin_project! {
    /// The response future of [`Grouped`].
    pub struct GroupFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Running {
            #[pin]
            inner: Oneshot<S, Req>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<S: Service<Req>, Req> GroupFuture<S, Req> {
    fn running(service: S, request: Req) -> Self {
        GroupFuture {
            state: State::Running {
                inner: Oneshot::new(service, request),
            },
        }
    }

    fn failed(error: BoxError) -> Self {
        GroupFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, Req> Future for GroupFuture<S, Req>
where
    S: Service<Req, Error = BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { inner } => inner.poll(cx),
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "polled after completion".into()))),
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for GroupFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupFuture")
    }
}
