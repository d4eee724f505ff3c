//! The shared feedback handle.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::classify::{Classified, Classify, DefaultClassifier, ResponseParts};
use crate::outcome::{Class, Outcome};
use crate::pause::PauseGate;
use crate::quota::QuotaReport;
use crate::snapshot::{Snapshot, SnapshotPart};

/// A part of gentlify (or of your own code) that listens to the handle: every attempt's outcome
/// and every quota report reach each registered controller exactly once.
///
/// Every method has a default that does nothing, so a controller implements only what it needs,
/// and new kinds of feedback can be added without breaking existing controllers.
///
/// ```
/// use std::sync::{atomic::{AtomicUsize, Ordering}, Arc};
/// use gentlify_core::{Class, Controller, Feedback, Outcome};
///
/// #[derive(Default)]
/// struct CountOverloads(AtomicUsize);
///
/// impl Controller for CountOverloads {
///     fn on_outcome(&self, outcome: &Outcome) {
///         if outcome.class.is_overloaded() {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let feedback = Feedback::new();
/// let counter = Arc::new(CountOverloads::default());
/// feedback.register(&counter);
/// feedback.publish(&Outcome::new(
///     Class::Overloaded { retry_after: None },
///     0,
///     tokio::time::Instant::now(),
/// ));
/// assert_eq!(counter.0.load(Ordering::Relaxed), 1);
/// # }
/// ```
pub trait Controller: Send + Sync + 'static {
    /// Called once for every attempt published to the handle.
    fn on_outcome(&self, outcome: &Outcome) {
        let _ = outcome;
    }

    /// Called once for every quota report published to the handle.
    fn on_quota(&self, report: &QuotaReport) {
        let _ = report;
    }

    /// Whether [`on_outcome`](Controller::on_outcome) does anything. A controller that returns
    /// `false` is not called for attempts, which spares the handle taking and giving back a
    /// reference to it for every attempt. Read once, when the controller is registered; `true`
    /// by default.
    fn wants_outcomes(&self) -> bool {
        true
    }

    /// Whether [`on_quota`](Controller::on_quota) does anything; as
    /// [`wants_outcomes`](Controller::wants_outcomes), for quota reports (one per response
    /// whose headers carry a quota). `true` by default.
    fn wants_quotas(&self) -> bool {
        true
    }

    /// The part of [`Feedback::snapshot`] this controller chooses to expose.
    fn snapshot(&self) -> Option<SnapshotPart> {
        None
    }
}

/// The circuit breaker's state, as the other layers see it through the handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A few probes test whether the upstream is back.
    HalfOpen,
    /// Held open by hand.
    ForcedOpen,
    /// The breaker lets everything through and records nothing.
    Disabled,
}

impl CircuitState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            3 => CircuitState::ForcedOpen,
            4 => CircuitState::Disabled,
            _ => CircuitState::Closed,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
            CircuitState::ForcedOpen => 3,
            CircuitState::Disabled => 4,
        }
    }

    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
        }
    }

    /// True when new calls are being rejected (open or forced open).
    pub fn rejects(self) -> bool {
        matches!(self, CircuitState::Open | CircuitState::ForcedOpen)
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handle every gentlify layer of a stack shares.
///
/// Cheap to clone (one `Arc`), `Send + Sync`. Through it:
/// - every attempt's [`Outcome`] reaches every registered [`Controller`] once
///   ([`publish`](Feedback::publish)), and so do the server's [`QuotaReport`]s
///   ([`report_quota`](Feedback::report_quota));
/// - the [pause gate](Feedback::pause_until) holds new dispatch until an instant a server named;
/// - the breaker's [`CircuitState`] is visible to the other layers;
/// - state meant to be shared by several stacks (a retry budget, a token budget) lives in
///   [`shared`](Feedback::shared);
/// - [`snapshot`](Feedback::snapshot) collects what each part chooses to expose.
///
/// Controllers are held weakly: dropping a layer unregisters what it registered.
///
/// ```
/// use gentlify_core::Feedback;
///
/// let feedback = Feedback::new();
/// let same = feedback.clone();
/// assert!(feedback.same_as(&same));
/// assert_eq!(feedback.snapshot().open_slots, 0);
/// ```
#[derive(Clone)]
pub struct Feedback {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    name: Option<Box<str>>,
    classifier: Arc<dyn Classify>,
    /// The classifier is the [`DefaultClassifier`]: [`Feedback::classify_head`] calls it
    /// without the vtable.
    default_classifier: bool,
    controllers: RwLock<Vec<Registered>>,
    pause: PauseGate,
    circuit: AtomicU8,
    shared: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
    counters: Counters,
}

/// A registered controller, with what it wants to hear.
struct Registered {
    controller: Weak<dyn Controller>,
    outcomes: bool,
    quotas: bool,
}

#[derive(Default)]
struct Counters {
    open_slots: AtomicUsize,
    success: AtomicU64,
    overloaded: AtomicU64,
    failure: AtomicU64,
    fatal: AtomicU64,
    cancelled: AtomicU64,
}

impl Counters {
    fn count(&self, class: &Class) {
        let counter = match class {
            Class::Success => &self.success,
            Class::Overloaded { .. } => &self.overloaded,
            Class::Failure => &self.failure,
            Class::Fatal => &self.fatal,
            Class::Cancelled => &self.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for Feedback {
    fn default() -> Self {
        Feedback::new()
    }
}

impl Feedback {
    /// A handle with gentlify's [`DefaultClassifier`].
    pub fn new() -> Self {
        Feedback::builder().build()
    }

    /// A builder, to set the classifier or a name.
    pub fn builder() -> FeedbackBuilder {
        FeedbackBuilder::default()
    }

    /// The classifier every layer on this handle uses.
    pub fn classifier(&self) -> &dyn Classify {
        &*self.inner.classifier
    }

    /// The class of a response from its head alone, when the head settles it and its body could
    /// not change it: what a layer that does not read bodies can publish at once. `None` when
    /// the classifier says [`Classified::AtEndOfStream`] (a gRPC class in the trailers) or wants
    /// the body ([`Classify::wants_body`]: a 429 that may say the quota is gone for good).
    ///
    /// ```
    /// use gentlify_core::{Class, Feedback};
    ///
    /// let feedback = Feedback::new();
    /// let ok = http::Response::new(());
    /// assert_eq!(feedback.classify_head(&ok), Some(Class::Success));
    /// let too_many = http::Response::builder().status(429).body(()).unwrap();
    /// assert_eq!(feedback.classify_head(&too_many), None, "its body may say more");
    /// ```
    #[inline]
    pub fn classify_head(&self, response: &dyn ResponseParts) -> Option<Class> {
        if self.inner.default_classifier {
            return DefaultClassifier::head_class(response);
        }
        let classifier = &*self.inner.classifier;
        match classifier.classify_response(response) {
            Classified::Ready(class) if !classifier.wants_body(response) => Some(class),
            _ => None,
        }
    }

    /// [`classify_head`](Feedback::classify_head) when the classifier is the default one, `None`
    /// otherwise (and when the default's head does not settle the class).
    #[inline]
    pub(crate) fn default_head_class(&self, response: &dyn ResponseParts) -> Option<Class> {
        if self.inner.default_classifier {
            DefaultClassifier::head_class(response)
        } else {
            None
        }
    }

    /// The handle's name, if it was given one (used in logs and metrics labels).
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// True when both are clones of one handle.
    pub fn same_as(&self, other: &Feedback) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Registers a controller. The handle keeps only a weak reference: the controller stays
    /// registered while some `Arc` to it lives.
    pub fn register<C: Controller>(&self, controller: &Arc<C>) {
        let weak: Weak<C> = Arc::downgrade(controller);
        let registered = Registered {
            controller: weak,
            outcomes: controller.wants_outcomes(),
            quotas: controller.wants_quotas(),
        };
        let mut controllers = self
            .inner
            .controllers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        controllers.retain(|c| c.controller.strong_count() > 0);
        controllers.push(registered);
    }

    /// The number of controllers registered and still alive.
    pub fn controllers(&self) -> usize {
        self.read_controllers()
            .iter()
            .filter(|c| c.controller.strong_count() > 0)
            .count()
    }

    fn read_controllers(&self) -> std::sync::RwLockReadGuard<'_, Vec<Registered>> {
        self.inner
            .controllers
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes one attempt's outcome to every registered controller.
    ///
    /// Layers publish through [`Dispatched`](crate::Dispatched), which makes sure each attempt is
    /// published once per handle; call this directly only for attempts made outside a gentlify
    /// stack.
    pub fn publish(&self, outcome: &Outcome) {
        self.count(outcome);
        for registered in self.read_controllers().iter().filter(|c| c.outcomes) {
            if let Some(controller) = registered.controller.upgrade() {
                controller.on_outcome(outcome);
            }
        }
    }

    /// Publishes one attempt's outcome to `controller` alone, counted in the handle's snapshot as
    /// [`publish`](Feedback::publish) counts it: for a layer whose controller is the only one on a
    /// handle no one else holds (a concurrency limiter alone on the handle it made), which spares
    /// the walk over the registered controllers.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// use gentlify_core::{Class, Controller, Feedback, Outcome};
    ///
    /// struct Count(AtomicU32);
    /// impl Controller for Count {
    ///     fn on_outcome(&self, _: &Outcome) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let feedback = Feedback::new();
    /// let only = Arc::new(Count(AtomicU32::new(0)));
    /// feedback.register(&only);
    /// feedback.publish_to(&Outcome::new(Class::Success, 0, tokio::time::Instant::now()), &*only);
    /// assert_eq!(only.0.load(Ordering::Relaxed), 1);
    /// assert_eq!(feedback.snapshot().attempts_success, 1);
    /// # }
    /// ```
    #[inline]
    pub fn publish_to(&self, outcome: &Outcome, controller: &dyn Controller) {
        self.count(outcome);
        controller.on_outcome(outcome);
    }

    /// Counts one attempt that ended in `class` in the handle's snapshot, as
    /// [`publish`](Feedback::publish) counts it, without an [`Outcome`] and without calling any
    /// controller: for a layer that hears its only controller itself and did not time the
    /// attempt (a concurrency limiter alone on its handle times one success in sixteen while the
    /// sender does not fill its limit). Every attempt is counted once: by `publish`,
    /// `publish_to` or this.
    ///
    /// ```
    /// use gentlify_core::{Class, Feedback};
    ///
    /// let feedback = Feedback::new();
    /// feedback.count_untimed(&Class::Success, Some(http::StatusCode::OK));
    /// assert_eq!(feedback.snapshot().attempts_success, 1);
    /// ```
    #[inline]
    pub fn count_untimed(&self, class: &Class, status: Option<http::StatusCode>) {
        self.inner.counters.count(class);
        tracing::trace!(
            class = class.as_str(),
            attempt = 0,
            status = status.map(|s| s.as_u16()),
            "gentlify attempt outcome (untimed)"
        );
    }

    #[inline]
    fn count(&self, outcome: &Outcome) {
        self.inner.counters.count(&outcome.class);
        tracing::trace!(
            class = outcome.class.as_str(),
            attempt = outcome.attempt,
            latency_ms = outcome.latency.as_secs_f64() * 1e3,
            status = outcome.status.map(|s| s.as_u16()),
            "gentlify attempt outcome"
        );
    }

    /// Publishes what a server said about its limits to every registered controller.
    pub fn report_quota(&self, report: &QuotaReport) {
        for registered in self.read_controllers().iter().filter(|c| c.quotas) {
            if let Some(controller) = registered.controller.upgrade() {
                controller.on_quota(report);
            }
        }
    }

    /// The pause gate: no new dispatch before the instant it holds.
    #[inline]
    pub fn pause_gate(&self) -> &PauseGate {
        &self.inner.pause
    }

    /// Holds new dispatch until `until` (or later, if it already holds until later).
    /// Shorthand for `self.pause_gate().pause_until(until)`.
    pub fn pause_until(&self, until: tokio::time::Instant) {
        self.inner.pause.pause_until(until);
    }

    /// The circuit breaker's state as last set; [`CircuitState::Closed`] when no breaker is
    /// registered.
    pub fn circuit_state(&self) -> CircuitState {
        CircuitState::from_u8(self.inner.circuit.load(Ordering::Acquire))
    }

    /// Sets the circuit state the other layers see (the breaker layer calls it on every
    /// transition).
    pub fn set_circuit_state(&self, state: CircuitState) {
        self.inner.circuit.store(state.as_u8(), Ordering::Release);
    }

    /// State shared by everything built on this handle, one value per type: made by `init` on
    /// first use, the same `Arc` afterwards.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// let feedback = gentlify_core::Feedback::new();
    /// let a = feedback.shared(|| AtomicU64::new(7));
    /// let b = feedback.shared(|| AtomicU64::new(0));
    /// assert_eq!(b.load(Ordering::Relaxed), 7);
    /// ```
    pub fn shared<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut shared = self.inner.shared.lock().unwrap_or_else(|e| e.into_inner());
        let id = TypeId::of::<T>();
        if let Some((_, value)) = shared.iter().find(|(t, _)| *t == id) {
            if let Ok(value) = Arc::clone(value).downcast::<T>() {
                return value;
            }
        }
        let value = Arc::new(init());
        shared.push((id, Arc::clone(&value) as Arc<dyn Any + Send + Sync>));
        value
    }

    pub(crate) fn slot_opened(&self) {
        self.inner
            .counters
            .open_slots
            .fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn slot_closed(&self) {
        self.inner
            .counters
            .open_slots
            .fetch_sub(1, Ordering::AcqRel);
    }

    /// The number of logical requests (slots) currently open on this handle.
    pub fn open_slots(&self) -> usize {
        self.inner.counters.open_slots.load(Ordering::Acquire)
    }

    /// A snapshot of the handle and of every registered controller that exposes one.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.inner.counters;
        let parts = self
            .read_controllers()
            .iter()
            .filter_map(|c| c.controller.upgrade())
            .filter_map(|c| c.snapshot())
            .collect();
        Snapshot {
            name: self.inner.name.clone(),
            open_slots: c.open_slots.load(Ordering::Acquire),
            attempts_success: c.success.load(Ordering::Relaxed),
            attempts_overloaded: c.overloaded.load(Ordering::Relaxed),
            attempts_failure: c.failure.load(Ordering::Relaxed),
            attempts_fatal: c.fatal.load(Ordering::Relaxed),
            attempts_cancelled: c.cancelled.load(Ordering::Relaxed),
            paused_for: self.inner.pause.remaining(),
            circuit: self.circuit_state(),
            parts,
        }
    }
}

impl fmt::Debug for Feedback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feedback")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("controllers", &self.controllers())
            .field("open_slots", &self.open_slots())
            .field("circuit", &self.circuit_state())
            .finish()
    }
}

/// Builds a [`Feedback`] handle.
#[derive(Default)]
pub struct FeedbackBuilder {
    classifier: Option<Arc<dyn Classify>>,
    name: Option<Box<str>>,
}

impl fmt::Debug for FeedbackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedbackBuilder")
            .field("custom_classifier", &self.classifier.is_some())
            .field("name", &self.name)
            .finish()
    }
}

impl FeedbackBuilder {
    /// Replaces the [`DefaultClassifier`] for every layer built on the handle.
    pub fn classifier<C: Classify>(mut self, classifier: C) -> Self {
        // The default given by name is still the default: it keeps its fast path.
        self.classifier = (TypeId::of::<C>() != TypeId::of::<DefaultClassifier>())
            .then(|| Arc::new(classifier) as Arc<dyn Classify>);
        self
    }

    /// Names the handle (for logs, snapshots and metrics labels), e.g. `"openai-chat"`.
    pub fn name(mut self, name: impl Into<Box<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the handle.
    pub fn build(self) -> Feedback {
        Feedback {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                name: self.name,
                default_classifier: self.classifier.is_none(),
                classifier: self
                    .classifier
                    .unwrap_or_else(|| Arc::new(DefaultClassifier)),
                controllers: RwLock::new(Vec::new()),
                pause: PauseGate::new(),
                circuit: AtomicU8::new(CircuitState::Closed.as_u8()),
                shared: Mutex::new(Vec::new()),
                counters: Counters::default(),
            }),
        }
    }
}
