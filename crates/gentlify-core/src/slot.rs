//! The slot: one per logical request, shared by all its attempts.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap};
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::classify::{Classified, ResponseParts};
use crate::error::is_local_rejection;
use crate::outcome::{Class, Outcome};
use crate::Feedback;

/// One logical request, carried in its request extensions and shared by all its attempts.
///
/// The first gentlify layer that sees a request makes its slot ([`Slot::get_or_insert`]); every
/// later layer, and every retry, finds the same one. (One exception: an adaptive concurrency
/// limiter alone on a handle nobody else holds has nothing to share, and sends a request that
/// comes without a slot without making one.) The slot holds:
/// - the attempt number ([`attempt`](Slot::attempt): 0 for the first try), which the inner service
///   can read (for idempotency keys, say);
/// - the tokens the request used, recorded by the inner service ([`record_tokens`](Slot::record_tokens))
///   or by the layers that read usage from the response ([`record_usage`](Slot::record_usage));
/// - the resources held for the request's whole life, such as a concurrency permit or a token
///   reservation, as type-erased [`Hold`]s released **exactly once** when the slot ends.
///
/// The slot ends when the final response's body reaches its end, fails or is dropped, when the
/// response has no body, when the call fails, or when the caller drops the future.
///
/// ```
/// use gentlify_core::{Feedback, Slot};
///
/// let feedback = Feedback::new();
/// let mut request = http::Request::new(());
/// let (slot, end) = Slot::get_or_insert(request.extensions_mut(), &feedback);
/// assert!(end.is_some(), "the first layer to see a request owns its end");
/// let (again, none) = Slot::get_or_insert(request.extensions_mut(), &feedback);
/// assert!(none.is_none() && again.same_as(&slot));
/// assert_eq!(slot.attempt(), 0);
/// slot.record_tokens(120);
/// assert_eq!(again.recorded_tokens(), 120);
/// ```
#[derive(Clone)]
pub struct Slot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    owner: Feedback,
    attempt: AtomicU32,
    recorded_tokens: AtomicU64,
    /// 1 + the newest attempt whose class the owner handle knows (published or deferred), 0
    /// before any, in the high 32 bits; that class in the low 32 ([`ClassCode`]). Written under
    /// the state's lock, read without it: the layers outside the one that published an attempt
    /// learn it is settled, and most often its class, without taking the lock.
    owner_settled: AtomicU64,
    /// 1 + the attempt whose owner-handle dispatch is running its inner `call`
    /// ([`Slot::dispatch_sending`]), 0 outside: a layer inside that dispatches the same attempt
    /// reuses that dispatch's instant instead of reading the clock again.
    owner_sending: AtomicU32,
    /// `state.ended`, readable without the lock (written under it).
    ended: AtomicBool,
    /// The final response's body made its reader wait at least once ([`SlotEnd::body_waited`]).
    body_waited: AtomicBool,
    /// One bit per [`HoldKey`] held (the key's value modulo 64), set under the state's lock: a
    /// clear bit tells [`Slot::holds`] "no" without the lock, which is the answer for every new
    /// request.
    held: AtomicU64,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    ended: bool,
    // Inline room for a full stack's holds (a permit and a reservation; a breaker's probe, when
    // half-open, spills): no allocation per request beyond the boxed holds themselves (a shared
    // hold needs none). Every slot is this big, so no bigger than the common case.
    holds: SmallVec<[(HoldKey, Held); 2]>,
    /// Publication marks for the handle that made the slot (the common case: one handle).
    owner_marks: Marks,
    /// Publication marks for any other handle the request passed through.
    other_marks: Vec<(Feedback, Marks)>,
    usage: Option<Usage>,
    last_outcome: Option<Outcome>,
}

/// A resource in a slot: a hold of its own ([`Slot::hold`]), or a share of a [`SharedHold`] with
/// the request's state ([`Slot::hold_shared`]).
enum Held {
    Boxed(Box<dyn Hold>),
    Shared(Arc<dyn SharedHold>, u64),
}

impl Held {
    fn release(self, ended: &SlotEnded<'_>) {
        match self {
            Held::Boxed(hold) => hold.release(ended),
            Held::Shared(hold, token) => hold.release(token, ended),
        }
    }

    fn poll_redispatch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Held::Boxed(hold) => hold.poll_redispatch(cx),
            Held::Shared(hold, token) => hold.poll_redispatch(token, cx),
        }
    }

    fn into_boxed(self) -> Box<dyn Hold> {
        match self {
            Held::Boxed(hold) => hold,
            Held::Shared(hold, token) => Box::new(SharedShare { hold, token }),
        }
    }
}

/// A share of a [`SharedHold`] taken out of its slot ([`Slot::take_hold`]), as a [`Hold`].
struct SharedShare {
    hold: Arc<dyn SharedHold>,
    token: u64,
}

impl Hold for SharedShare {
    fn release(self: Box<Self>, ended: &SlotEnded<'_>) {
        self.hold.release(self.token, ended);
    }

    fn poll_redispatch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.hold.poll_redispatch(&mut self.token, cx)
    }
}

/// A [`Class`] in 32 bits, for [`SlotInner::owner_settled`]: the tag in the low 3 bits, a
/// server's delay above them in whole milliseconds. 0 for a class that does not fit (a delay
/// that is not whole milliseconds, or longer than six days), read under the lock instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClassCode(u32);

impl ClassCode {
    const UNKNOWN: ClassCode = ClassCode(0);

    fn of(class: Class) -> ClassCode {
        ClassCode(match class {
            Class::Success => 1,
            Class::Failure => 2,
            Class::Fatal => 3,
            Class::Cancelled => 4,
            Class::Overloaded { retry_after: None } => 5,
            Class::Overloaded {
                retry_after: Some(delay),
            } => {
                let millis = delay.as_millis();
                if delay.subsec_nanos() % 1_000_000 != 0 || millis >= 1 << 29 {
                    return ClassCode::UNKNOWN;
                }
                // Fits: checked just above.
                (millis as u32) << 3 | 6
            }
        })
    }

    fn class(self) -> Option<Class> {
        Some(match self.0 & 7 {
            1 => Class::Success,
            2 => Class::Failure,
            3 => Class::Fatal,
            4 => Class::Cancelled,
            5 => Class::Overloaded { retry_after: None },
            6 => Class::Overloaded {
                retry_after: Some(std::time::Duration::from_millis(u64::from(self.0 >> 3))),
            },
            _ => return None,
        })
    }
}

/// What the slot remembers per handle, to publish each attempt exactly once to each.
#[derive(Default, Clone)]
struct Marks {
    /// Attempts below this number have been published to this handle.
    published_below: u32,
    /// The last attempt dispatched on this handle, and when.
    dispatched: Option<(u32, Instant)>,
    /// The class last published to this handle, with its attempt.
    last_class: Option<(u32, Class)>,
    /// An attempt classified from its head whose body may still change its class (a 429 that
    /// may say `insufficient_quota`): published when a layer reads the body, when the next
    /// attempt is sent, or when the slot ends, whichever comes first.
    deferred: Option<Outcome>,
}

impl Marks {
    /// The attempt dispatched but not yet published, if any.
    fn unpublished(&self) -> Option<(u32, Instant)> {
        self.dispatched
            .filter(|&(attempt, _)| attempt >= self.published_below)
    }

    /// What to publish for this handle when the slot ends: the deferred outcome, else a
    /// cancellation of an attempt sent but never answered.
    fn final_outcome(&mut self) -> Option<Outcome> {
        self.take_deferred().or_else(|| {
            self.unpublished()
                .map(|(attempt, sent_at)| Outcome::new(Class::Cancelled, attempt, sent_at))
        })
    }

    /// The deferred outcome, if it is still unpublished.
    fn take_deferred(&mut self) -> Option<Outcome> {
        self.deferred
            .take()
            .filter(|o| o.attempt >= self.published_below)
    }
}

impl Marks {
    /// The class that stands for `attempt` on this handle, if it is settled: deferred, published,
    /// or older than the last published attempt.
    fn settled_class(&self, attempt: u32) -> Option<Class> {
        if let Some(deferred) = self.deferred.as_ref().filter(|d| d.attempt == attempt) {
            return Some(deferred.class);
        }
        match self.last_class {
            Some((published, class)) if published == attempt => Some(class),
            // An older attempt, published long ago: its class no longer matters to anyone.
            _ if attempt < self.published_below => Some(Class::Cancelled),
            _ => None,
        }
    }

    /// Records `outcome` as published on this handle.
    fn mark_published(&mut self, outcome: &Outcome) {
        self.published_below = outcome.attempt + 1;
        self.last_class = Some((outcome.attempt, outcome.class));
        self.deferred = None;
    }
}

impl SlotState {
    /// The marks of `other`, or of the owner handle for `None`.
    fn marks(&mut self, other: Option<&Feedback>) -> Option<&mut Marks> {
        match other {
            None => Some(&mut self.owner_marks),
            Some(feedback) => self
                .other_marks
                .iter_mut()
                .find(|(f, _)| f.same_as(feedback))
                .map(|(_, m)| m),
        }
    }
}

/// Token usage of a request, as the server reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens, cache reads and writes included.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Usage of `input_tokens` in and `output_tokens` out.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
        }
    }

    /// Input and output together.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A key naming who put a [`Hold`] in a slot, so that a layer can tell whether a slot already
/// holds its permit (a retry) or not (a new request). Make one per limiter with
/// [`HoldKey::unique`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldKey(u64);

static NEXT_HOLD_KEY: AtomicU64 = AtomicU64::new(1);

impl HoldKey {
    /// A key no other call returns.
    pub fn unique() -> Self {
        HoldKey(NEXT_HOLD_KEY.fetch_add(1, Ordering::Relaxed))
    }

    /// The key's bit in [`SlotInner::held`].
    fn bit(self) -> u64 {
        1 << (self.0 % 64)
    }
}

/// Why a slot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The response's body was read to its end.
    BodyEnded,
    /// The response's body failed while being read.
    BodyError,
    /// The response's body was dropped before its end.
    BodyDropped,
    /// The response had no body.
    NoBody,
    /// The call returned an error.
    Error,
    /// The caller dropped the request's future before a response.
    Cancelled,
}

/// What a [`Hold`] is told when its slot ends.
#[derive(Debug)]
pub struct SlotEnded<'a> {
    /// Why the slot ended.
    pub reason: EndReason,
    /// The number of attempts the request made (1 + retries).
    pub attempts: u32,
    /// Tokens recorded with [`Slot::record_tokens`].
    pub recorded_tokens: u64,
    /// Usage recorded with [`Slot::record_usage`], if any.
    pub usage: Option<Usage>,
    /// The outcome of the last published attempt, if any.
    pub last_outcome: Option<&'a Outcome>,
    /// The response's body made its reader wait at least once (a poll of it was pending): its
    /// bytes were still coming from the server, as a streamed answer's are. False for a body
    /// that was all there whenever it was read (the server was done with it at its head, however
    /// long the caller took to read it), and for a slot that ended without a body.
    pub body_waited: bool,
}

/// A resource held for a logical request's whole life (a concurrency permit, a token
/// reservation), released exactly once when the slot ends.
///
/// Closures taking `&SlotEnded` are holds too. A hold is boxed in the slot ([`Slot::hold`]); a
/// resource that is a share of one value many requests use (a limiter's permits) can be a
/// [`SharedHold`] instead, which takes no box.
pub trait Hold: Any + Send {
    /// Gives the resource back. Called exactly once, when the slot ends.
    fn release(self: Box<Self>, ended: &SlotEnded<'_>);

    /// May the request send its next attempt (a retry) now? A hold that must hold retries back
    /// (a concurrency permit over a limit that was just cut) returns `Pending` and wakes `cx`'s
    /// waker when the answer may have changed; the default says yes at once.
    ///
    /// Called through [`Slot::poll_redispatch`], under the slot's lock: it must not call back
    /// into the slot. A hold that returned `Pending` must forget the waiter when it is released.
    fn poll_redispatch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }
}

/// A resource many requests hold a share of (a limiter's permits), kept in each request's slot as
/// an `Arc` to the shared value and a `u64` of the request's own state (its *token*), so that
/// putting it in a slot ([`Slot::hold_shared`]) allocates nothing, where a [`Hold`] of its own
/// takes a box per request.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use gentlify_core::{EndReason, Feedback, HoldKey, SharedHold, Slot, SlotEnded};
///
/// /// Counts the requests in flight; a request's token is its weight.
/// #[derive(Default)]
/// struct InFlight(AtomicU64);
/// impl SharedHold for InFlight {
///     fn release(&self, weight: u64, _: &SlotEnded<'_>) {
///         self.0.fetch_sub(weight, Ordering::Relaxed);
///     }
/// }
///
/// let in_flight = Arc::new(InFlight::default());
/// let key = HoldKey::unique();
/// let (slot, end) = Slot::new(&Feedback::new());
/// in_flight.0.fetch_add(1, Ordering::Relaxed);
/// slot.hold_shared(key, in_flight.clone(), 1);
/// // A retry of a heavier request: the slot's share grows.
/// slot.with_hold_token(key, |weight| {
///     *weight += 2;
///     in_flight.0.fetch_add(2, Ordering::Relaxed);
/// });
/// assert_eq!(in_flight.0.load(Ordering::Relaxed), 3);
/// end.end(EndReason::BodyEnded);
/// assert_eq!(in_flight.0.load(Ordering::Relaxed), 0);
/// ```
pub trait SharedHold: Send + Sync + 'static {
    /// Gives back the share of the request whose state is `token`. Called exactly once per
    /// [`Slot::hold_shared`], when the slot ends (or at once, if it had already ended).
    fn release(&self, token: u64, ended: &SlotEnded<'_>);

    /// [`Hold::poll_redispatch`] for the share whose state is `token` (which it may update).
    /// Called under the slot's lock: it must not call back into the slot.
    fn poll_redispatch(&self, token: &mut u64, cx: &mut Context<'_>) -> Poll<()> {
        let _ = (token, cx);
        Poll::Ready(())
    }
}

impl<F> Hold for F
where
    F: FnOnce(&SlotEnded<'_>) + Send + 'static,
{
    fn release(self: Box<Self>, ended: &SlotEnded<'_>) {
        (*self)(ended)
    }
}

impl Slot {
    /// A new slot, not attached to any request, with its end.
    pub fn new(feedback: &Feedback) -> (Slot, SlotEnd) {
        feedback.slot_opened();
        let slot = Slot {
            inner: Arc::new(SlotInner {
                owner: feedback.clone(),
                attempt: AtomicU32::new(0),
                recorded_tokens: AtomicU64::new(0),
                owner_settled: AtomicU64::new(0),
                owner_sending: AtomicU32::new(0),
                ended: AtomicBool::new(false),
                body_waited: AtomicBool::new(false),
                held: AtomicU64::new(0),
                state: Mutex::new(SlotState::default()),
            }),
        };
        let end = SlotEnd { slot: slot.clone() };
        (slot, end)
    }

    /// The slot in `extensions`, or a new one inserted there. The [`SlotEnd`] is returned only
    /// with a new slot: the layer that made the slot ends it.
    pub fn get_or_insert(
        extensions: &mut Extensions,
        feedback: &Feedback,
    ) -> (Slot, Option<SlotEnd>) {
        if let Some(slot) = extensions.get::<Slot>() {
            return (slot.clone(), None);
        }
        let (slot, end) = Slot::new(feedback);
        extensions.insert(slot.clone());
        (slot, Some(end))
    }

    /// The slot in `extensions`, if a gentlify layer put one there.
    #[inline]
    pub fn from_extensions(extensions: &Extensions) -> Option<&Slot> {
        extensions.get::<Slot>()
    }

    /// True when both are the same logical request.
    pub fn same_as(&self, other: &Slot) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The current attempt's number: 0 for the first try, 1 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.inner.attempt.load(Ordering::Acquire)
    }

    /// Moves to the next attempt and returns its number. Called by the retry layer before it
    /// sends a retry.
    pub fn next_attempt(&self) -> u32 {
        self.inner.attempt.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Adds `tokens` to the tokens this request used. Call it from the inner service when you know
    /// the real usage; the token budget reconciles its reservation with it when the slot ends.
    /// The count is the request's, summed over its attempts (record each attempt's usage once).
    pub fn record_tokens(&self, tokens: u64) {
        self.inner
            .recorded_tokens
            .fetch_add(tokens, Ordering::AcqRel);
    }

    /// The tokens recorded with [`record_tokens`](Slot::record_tokens).
    pub fn recorded_tokens(&self) -> u64 {
        self.inner.recorded_tokens.load(Ordering::Acquire)
    }

    /// Records the usage the server reported for the current response, replacing any usage
    /// recorded before (streams report cumulative usage: the last value is the true one).
    pub fn record_usage(&self, usage: Usage) {
        self.lock().usage = Some(usage);
    }

    /// The usage recorded with [`record_usage`](Slot::record_usage).
    pub fn usage(&self) -> Option<Usage> {
        self.lock().usage
    }

    /// The outcome last published for this request, if any.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.lock().last_outcome.clone()
    }

    /// Puts a resource in the slot, to be released when the slot ends. When the slot has already
    /// ended, the resource is released at once and `false` returned.
    pub fn hold(&self, key: HoldKey, hold: Box<dyn Hold>) -> bool {
        self.put(key, Held::Boxed(hold))
    }

    /// Puts a share of `hold` in the slot, with the request's `token`, to be released when the
    /// slot ends ([`SharedHold::release`]): a [`hold`](Slot::hold) without a box of its own.
    /// When the slot has already ended, the share is released at once and `false` returned.
    pub fn hold_shared(&self, key: HoldKey, hold: Arc<dyn SharedHold>, token: u64) -> bool {
        self.put(key, Held::Shared(hold, token))
    }

    fn put(&self, key: HoldKey, hold: Held) -> bool {
        let (usage, last_outcome) = {
            let mut state = self.lock();
            if !state.ended {
                state.holds.push((key, hold));
                // Every write of `held` is under the lock: a load and a store, no atomic
                // read-modify-write.
                let held = self.inner.held.load(Ordering::Relaxed);
                self.inner.held.store(held | key.bit(), Ordering::Release);
                return true;
            }
            (state.usage, state.last_outcome.clone())
        };
        hold.release(&SlotEnded {
            reason: EndReason::Cancelled,
            attempts: self.attempt() + 1,
            recorded_tokens: self.recorded_tokens(),
            usage,
            last_outcome: last_outcome.as_ref(),
            body_waited: false,
        });
        false
    }

    /// True when the slot holds a resource put there under `key`.
    pub fn holds(&self, key: HoldKey) -> bool {
        if self.inner.held.load(Ordering::Acquire) & key.bit() == 0 {
            return false;
        }
        self.lock().holds.iter().any(|(k, _)| *k == key)
    }

    /// Runs `f` on the resource held under `key`, if it is a `T`: a layer that sees a retry of a
    /// request can add to the hold it made for the first attempt. `f` runs under the slot's lock:
    /// it must not call back into the slot.
    ///
    /// ```
    /// use gentlify_core::{Feedback, Hold, HoldKey, Slot, SlotEnded};
    ///
    /// struct Charges(Vec<u64>);
    /// impl Hold for Charges {
    ///     fn release(self: Box<Self>, _: &SlotEnded<'_>) {}
    /// }
    ///
    /// let (slot, _end) = Slot::new(&Feedback::new());
    /// let key = HoldKey::unique();
    /// slot.hold(key, Box::new(Charges(vec![100])));
    /// slot.with_hold_mut(key, |c: &mut Charges| c.0.push(80));
    /// assert_eq!(slot.with_hold_mut(key, |c: &mut Charges| c.0.clone()), Some(vec![100, 80]));
    /// ```
    pub fn with_hold_mut<T: Hold, R>(
        &self,
        key: HoldKey,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let mut state = self.lock();
        let (_, Held::Boxed(hold)) = state.holds.iter_mut().find(|(k, _)| *k == key)? else {
            return None;
        };
        let any: &mut dyn Any = &mut **hold;
        any.downcast_mut::<T>().map(f)
    }

    /// Runs `f` on the token of the [`SharedHold`] share held under `key`, if there is one
    /// ([`hold_shared`](Slot::hold_shared)): what [`with_hold_mut`](Slot::with_hold_mut) is to a
    /// boxed hold. `f` runs under the slot's lock: it must not call back into the slot.
    pub fn with_hold_token<R>(&self, key: HoldKey, f: impl FnOnce(&mut u64) -> R) -> Option<R> {
        let mut state = self.lock();
        match state.holds.iter_mut().find(|(k, _)| *k == key)? {
            (_, Held::Shared(_, token)) => Some(f(token)),
            (_, Held::Boxed(_)) => None,
        }
    }

    /// Takes the resource held under `key` back out of the slot (it will not be released by the
    /// slot's end).
    pub fn take_hold(&self, key: HoldKey) -> Option<Box<dyn Hold>> {
        let mut state = self.lock();
        let i = state.holds.iter().position(|(k, _)| *k == key)?;
        let (_, hold) = state.holds.swap_remove(i);
        let held = state.holds.iter().fold(0, |bits, (k, _)| bits | k.bit());
        self.inner.held.store(held, Ordering::Release);
        Some(hold.into_boxed())
    }

    /// `Ready` when every hold in the slot lets the request send its next attempt now
    /// ([`Hold::poll_redispatch`]); `Pending` otherwise, with `cx`'s waker registered by the hold
    /// that said "not yet". A retry layer polls it before each retry, keeping everything the slot
    /// holds while it waits; dropping the waiter (cancellation) and ending the slot releases
    /// the holds as usual. An ended slot holds nothing and is always `Ready`.
    ///
    /// ```
    /// use std::task::{Context, Poll};
    /// use gentlify_core::{Feedback, Hold, HoldKey, Slot, SlotEnded};
    ///
    /// struct NotYet;
    /// impl Hold for NotYet {
    ///     fn release(self: Box<Self>, _: &SlotEnded<'_>) {}
    ///     fn poll_redispatch(&mut self, _: &mut Context<'_>) -> Poll<()> {
    ///         Poll::Pending
    ///     }
    /// }
    ///
    /// let (slot, _end) = Slot::new(&Feedback::new());
    /// let mut cx = Context::from_waker(std::task::Waker::noop());
    /// assert!(slot.poll_redispatch(&mut cx).is_ready());
    /// slot.hold(HoldKey::unique(), Box::new(NotYet));
    /// assert!(slot.poll_redispatch(&mut cx).is_pending());
    /// ```
    pub fn poll_redispatch(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        for (_, hold) in state.holds.iter_mut() {
            if hold.poll_redispatch(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// True once the slot has ended.
    pub fn is_ended(&self) -> bool {
        self.inner.ended.load(Ordering::Acquire)
    }

    /// Marks the current attempt as sent to the inner service now, on `feedback`'s behalf, and
    /// returns the record through which its outcome is published. Each layer calls it just before
    /// calling its inner service; the innermost layer's record is the one that publishes first.
    ///
    /// Inside the `call` of an outer layer that dispatched the same attempt on the same handle
    /// with [`dispatch_sending`](Slot::dispatch_sending), it takes that dispatch's instant rather than
    /// reading the clock again: no time can pass between the two, the inner `call` being
    /// synchronous.
    pub fn dispatch(&self, feedback: &Feedback) -> Dispatched {
        let (other, attempt, sent_at) = self.dispatch_parts(feedback);
        Dispatched {
            slot: self.clone(),
            other,
            attempt,
            sent_at,
        }
    }

    /// [`dispatch`](Slot::dispatch), for a layer done with its handle on the slot: the record
    /// takes this one rather than a clone (a reference count less to take and give back per
    /// request).
    ///
    /// ```
    /// use gentlify_core::{Feedback, Slot};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let feedback = Feedback::new();
    /// let (slot, _end) = Slot::new(&feedback);
    /// let dispatched = slot.clone().into_dispatched(&feedback);
    /// assert!(dispatched.slot().same_as(&slot));
    /// assert_eq!(dispatched.attempt(), 0);
    /// # }
    /// ```
    pub fn into_dispatched(self, feedback: &Feedback) -> Dispatched {
        let (other, attempt, sent_at) = self.dispatch_parts(feedback);
        Dispatched {
            slot: self,
            other,
            attempt,
            sent_at,
        }
    }

    /// The dispatch of [`dispatch`](Slot::dispatch): the record's handle (when not the owner),
    /// attempt and instant (`None` when nested in the owner's [`dispatch_sending`](Slot::dispatch_sending)).
    #[inline]
    fn dispatch_parts(&self, feedback: &Feedback) -> (Option<Feedback>, u32, Option<Instant>) {
        let sending = self.inner.owner_sending.load(Ordering::Acquire);
        let attempt = self.attempt();
        if sending != 0 && sending == attempt.wrapping_add(1) {
            if self.inner.owner.same_as(feedback) {
                // The outer dispatch marked this attempt sent on this handle (and published what
                // it had to): nothing to do under the lock. Its instant is read from the marks
                // when this record publishes, which takes the lock anyway.
                return (None, attempt, None);
            }
            return self.dispatch_sent_at(feedback, None);
        }
        self.dispatch_sent_at(feedback, Some(Instant::now()))
    }

    /// Dispatches the current attempt like [`dispatch`](Slot::dispatch), for a layer that calls
    /// its inner service right away: until the returned [`Sending`] is dropped (keep it for the
    /// inner `call`), a gentlify layer inside that dispatches the same attempt on the same handle
    /// shares this dispatch's clock read. A stack of layers that send from their `call` reads the
    /// clock once.
    ///
    /// ```
    /// use gentlify_core::{Feedback, Slot};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let feedback = Feedback::new();
    /// let (slot, _end) = Slot::new(&feedback);
    /// let (outer, sending) = slot.dispatch_sending(&feedback);
    /// // The inner service's `call`: here, another layer on the same request.
    /// let inner = slot.dispatch(&feedback);
    /// drop(sending);
    /// assert_eq!(inner.sent_at(), outer.sent_at());
    /// # }
    /// ```
    pub fn dispatch_sending(&self, feedback: &Feedback) -> (Dispatched, Sending<'_>) {
        let dispatched = self.dispatch(feedback);
        let sending = self.sending(&dispatched);
        (dispatched, sending)
    }

    /// Marks `dispatched` (an attempt of this slot) as being handed to the inner service, until
    /// the returned [`Sending`] is dropped ([`dispatch_sending`](Slot::dispatch_sending)).
    fn sending(&self, dispatched: &Dispatched) -> Sending<'_> {
        let sending = &self.inner.owner_sending;
        // A load and a store rather than a swap: the slot is sent from one task at a time, and
        // were two threads to race here, the worst is a dispatch of the same attempt taking the
        // other's instant.
        let outer = sending.load(Ordering::Acquire);
        if dispatched.other.is_none() {
            sending.store(dispatched.attempt.wrapping_add(1), Ordering::Release);
        }
        Sending { sending, outer }
    }

    /// [`dispatch`](Slot::dispatch) with the instant the layer has just read from the clock
    /// (after its own waits, right before calling its inner service), to spare a second read.
    ///
    /// ```
    /// use gentlify_core::{Feedback, Slot};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let feedback = Feedback::new();
    /// let (slot, _end) = Slot::new(&feedback);
    /// let now = Instant::now();
    /// assert_eq!(slot.dispatch_at(&feedback, now).sent_at(), now);
    /// # }
    /// ```
    pub fn dispatch_at(&self, feedback: &Feedback, sent_at: Instant) -> Dispatched {
        let (other, attempt, sent_at) = self.dispatch_sent_at(feedback, Some(sent_at));
        Dispatched {
            slot: self.clone(),
            other,
            attempt,
            sent_at,
        }
    }

    /// Dispatches at `sent_at`; `None` takes the instant of the owner handle's dispatch of the
    /// same attempt (an outer layer's [`dispatch_sending`](Slot::dispatch_sending) still live), or
    /// reads the clock when there is none.
    fn dispatch_sent_at(
        &self,
        feedback: &Feedback,
        sent_at: Option<Instant>,
    ) -> (Option<Feedback>, u32, Option<Instant>) {
        let attempt = self.attempt();
        let other = self.other(feedback);
        let (sent_at, flush) = {
            let mut state = self.lock();
            match state.marks(other) {
                Some(marks) => {
                    let sent_at = sent_at.unwrap_or_else(|| match marks.dispatched {
                        Some((a, at)) if a == attempt && other.is_none() => at,
                        _ => Instant::now(),
                    });
                    marks.dispatched = Some((attempt, sent_at));
                    let flush = match &marks.deferred {
                        Some(d) if d.attempt < attempt => marks.take_deferred(),
                        _ => None,
                    };
                    (sent_at, flush)
                }
                None => {
                    let sent_at = sent_at.unwrap_or_else(Instant::now);
                    state.other_marks.push((
                        feedback.clone(),
                        Marks {
                            dispatched: Some((attempt, sent_at)),
                            ..Marks::default()
                        },
                    ));
                    (sent_at, None)
                }
            }
        };
        // A deferred outcome of the previous attempt nobody refined: the head's class stands.
        if let Some(outcome) = flush {
            self.publish_once(other, outcome.attempt, |_| outcome);
        }
        (other.cloned(), attempt, Some(sent_at))
    }

    /// `None` for the handle that made the slot (whose marks live apart, without a lookup),
    /// `Some(feedback)` for any other.
    fn other<'a>(&self, feedback: &'a Feedback) -> Option<&'a Feedback> {
        (!self.inner.owner.same_as(feedback)).then_some(feedback)
    }

    fn feedback<'a>(&'a self, other: Option<&'a Feedback>) -> &'a Feedback {
        other.unwrap_or(&self.inner.owner)
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes, under the lock, that the owner handle knows `class` for `attempt`.
    fn note_settled(&self, other: Option<&Feedback>, attempt: u32, class: Class) {
        if other.is_none() {
            let settled = &self.inner.owner_settled;
            let below = u64::from(attempt) + 1;
            // Under the lock: no other writer, a load and a store suffice. An older attempt
            // settled late does not hide the newest.
            if settled.load(Ordering::Relaxed) >> 32 <= below {
                let code = u64::from(ClassCode::of(class).0);
                settled.store(below << 32 | code, Ordering::Release);
            }
        }
    }

    /// True when the owner handle is known, without the lock, to have settled `attempt` as its
    /// newest attempt (so [`is_published`](Slot::is_published) would say `Some`).
    fn settled_on_owner(&self, attempt: u32) -> bool {
        self.inner.owner_settled.load(Ordering::Acquire) >> 32 == u64::from(attempt) + 1
    }

    /// The class the owner handle settled `attempt` with, read without the lock, when `attempt`
    /// is its newest settled attempt and the class fits [`ClassCode`]; `None` says "ask under
    /// the lock".
    fn owner_settled_class(&self, attempt: u32) -> Option<Class> {
        let settled = self.inner.owner_settled.load(Ordering::Acquire);
        if settled >> 32 != u64::from(attempt) + 1 {
            return None;
        }
        ClassCode(settled as u32).class()
    }

    /// Publishes the outcome of `attempt` to the handle unless that attempt was already published
    /// there. `outcome` makes it, under the lock, from the handle's last dispatch.
    fn publish_once(
        &self,
        other: Option<&Feedback>,
        attempt: u32,
        outcome: impl FnOnce(Option<(u32, Instant)>) -> Outcome,
    ) -> bool {
        let outcome = {
            let mut state = self.lock();
            let Some(marks) = state.marks(other) else {
                return false;
            };
            if attempt < marks.published_below {
                return false;
            }
            let outcome = outcome(marks.dispatched);
            marks.mark_published(&outcome);
            self.note_settled(other, outcome.attempt, outcome.class);
            state.last_outcome = Some(outcome.clone());
            outcome
        };
        self.feedback(other).publish(&outcome);
        true
    }

    /// Settles `attempt` on the handle under one lock: when the attempt already has a class there
    /// (published or deferred), that class; else the outcome `outcome` makes (under the lock,
    /// from the handle's last dispatch) is deferred (`defer`) or published, and `class` returned.
    fn settle(
        &self,
        other: Option<&Feedback>,
        attempt: u32,
        class: Class,
        defer: bool,
        outcome: impl FnOnce(Option<(u32, Instant)>) -> Outcome,
    ) -> Class {
        let outcome = {
            let mut state = self.lock();
            let Some(marks) = state.marks(other) else {
                return class;
            };
            if let Some(class) = marks.settled_class(attempt) {
                return class;
            }
            let outcome = outcome(marks.dispatched);
            if defer {
                self.note_settled(other, attempt, outcome.class);
                marks.deferred = Some(outcome);
                return class;
            }
            marks.mark_published(&outcome);
            self.note_settled(other, attempt, outcome.class);
            state.last_outcome = Some(outcome.clone());
            outcome
        };
        self.feedback(other).publish(&outcome);
        class
    }

    fn is_published(&self, other: Option<&Feedback>, attempt: u32) -> Option<Class> {
        self.lock().marks(other)?.settled_class(attempt)
    }

    fn end(&self, reason: EndReason) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        state.ended = true;
        self.inner.ended.store(true, Ordering::Release);
        self.inner.held.store(0, Ordering::Release);
        // A deferred outcome nobody refined is published as the head said; an attempt sent but
        // never answered (the caller went away) as cancelled: every attempt publishes exactly one
        // outcome. All are marked under this one lock and published after it.
        let owner = state.owner_marks.final_outcome();
        if let Some(outcome) = &owner {
            state.owner_marks.mark_published(outcome);
            self.note_settled(None, outcome.attempt, outcome.class);
            state.last_outcome = Some(outcome.clone());
        }
        let mut others: Vec<(Feedback, Outcome)> = Vec::new();
        if !state.other_marks.is_empty() {
            for (feedback, marks) in state.other_marks.iter_mut() {
                if let Some(outcome) = marks.final_outcome() {
                    marks.mark_published(&outcome);
                    others.push((feedback.clone(), outcome));
                }
            }
            if let Some((_, outcome)) = others.last() {
                state.last_outcome = Some(outcome.clone());
            }
        }
        // The common end of a request that held nothing and whose attempts are all published
        // (a stack without a concurrency limit or budget): nothing to hand out after the lock.
        if state.holds.is_empty() && owner.is_none() && others.is_empty() {
            drop(state);
            self.inner.owner.slot_closed();
            tracing::trace!(reason = ?reason, attempts = self.attempt() + 1, "gentlify slot ended");
            return;
        }
        let mut holds = std::mem::take(&mut state.holds);
        let usage = state.usage;
        let last_outcome = if holds.is_empty() {
            None
        } else {
            state.last_outcome.clone()
        };
        drop(state);

        if let Some(outcome) = &owner {
            self.inner.owner.publish(outcome);
        }
        for (feedback, outcome) in &others {
            feedback.publish(outcome);
        }
        let attempts = self.attempt() + 1;
        if !holds.is_empty() {
            let summary = SlotEnded {
                reason,
                attempts,
                recorded_tokens: self.recorded_tokens(),
                usage,
                last_outcome: last_outcome.as_ref(),
                body_waited: self.inner.body_waited.load(Ordering::Relaxed),
            };
            for (_, hold) in holds.drain(..) {
                hold.release(&summary);
            }
        }
        self.inner.owner.slot_closed();
        tracing::trace!(reason = ?reason, attempts, "gentlify slot ended");
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Slot")
            .field("attempt", &self.attempt())
            .field("recorded_tokens", &self.recorded_tokens())
            .field("usage", &state.usage)
            .field("holds", &state.holds.len())
            .field("ended", &state.ended)
            .finish()
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        // A slot whose end was leaked still gives its resources back.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if !state.ended {
            state.ended = true;
            *self.ended.get_mut() = true;
            let summary = SlotEnded {
                reason: EndReason::Cancelled,
                attempts: self.attempt.load(Ordering::Acquire) + 1,
                recorded_tokens: self.recorded_tokens.load(Ordering::Acquire),
                usage: state.usage,
                last_outcome: state.last_outcome.as_ref(),
                body_waited: *self.body_waited.get_mut(),
            };
            for (_, hold) in std::mem::take(&mut state.holds) {
                hold.release(&summary);
            }
            self.owner.slot_closed();
        }
    }
}

/// An attempt being handed to the inner service ([`Slot::dispatch_sending`]): while it lives, the
/// layers inside share the dispatch's clock read. Dropping it (or unwinding past it) ends that.
#[must_use = "drop it once the inner service's `call` has returned"]
pub struct Sending<'a> {
    sending: &'a AtomicU32,
    outer: u32,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.sending.store(self.outer, Ordering::Release);
    }
}

impl fmt::Debug for Sending<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sending").finish_non_exhaustive()
    }
}

/// The right to end a slot, owned by the layer that made it. Ending it (or dropping it, which
/// counts as [`EndReason::Cancelled`]) releases every [`Hold`] in the slot, once.
pub struct SlotEnd {
    // Not an `Option`, so that an `Option<SlotEnd>` (in every response future and body of a
    // stack) is one pointer: ending twice is harmless, and the drop after `end` only reads the
    // ended flag.
    slot: Slot,
}

impl SlotEnd {
    /// The slot this ends.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// Ends the slot now, for `reason`.
    pub fn end(self, reason: EndReason) {
        self.slot.end(reason);
    }

    /// Notes that the response's body made its reader wait ([`SlotEnded::body_waited`]): the
    /// [`SlotBody`](crate::SlotBody) that owns the end calls it when a poll of its body is
    /// pending.
    #[inline]
    pub fn body_waited(&self) {
        let waited = &self.slot.inner.body_waited;
        if !waited.load(Ordering::Relaxed) {
            waited.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for SlotEnd {
    fn drop(&mut self) {
        if !self.slot.is_ended() {
            self.slot.end(EndReason::Cancelled);
        }
    }
}

impl fmt::Debug for SlotEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotEnd").field("slot", &self.slot).finish()
    }
}

/// One attempt of a logical request as one layer sent it: publishes the attempt's outcome to that
/// layer's handle, once per attempt per handle, whichever layer sees the result first.
#[derive(Clone)]
pub struct Dispatched {
    slot: Slot,
    /// The handle, when it is not the one that made the slot (the common case needs no clone).
    other: Option<Feedback>,
    attempt: u32,
    /// `None` for a dispatch nested in an outer [`Slot::dispatch_sending`] of the same attempt on
    /// the owner handle: its instant is the one in the owner's marks.
    sent_at: Option<Instant>,
}

impl Dispatched {
    /// The attempt's number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the attempt was sent.
    pub fn sent_at(&self) -> Instant {
        match self.sent_at {
            Some(sent_at) => sent_at,
            None => self.resolve_sent_at(self.slot.lock().owner_marks.dispatched),
        }
    }

    /// The instant of a dispatch nested in the owner's: the owner's last dispatch, when it is
    /// still this attempt's. (Were a later attempt dispatched on the owner handle before this one
    /// published, which no gentlify layer does, the instant is lost: the latency counts from now.)
    fn resolve_sent_at(&self, dispatched: Option<(u32, Instant)>) -> Instant {
        match (self.sent_at, dispatched) {
            (Some(sent_at), _) => sent_at,
            (None, Some((attempt, sent_at))) if attempt == self.attempt => sent_at,
            (None, _) => Instant::now(),
        }
    }

    /// The slot the attempt belongs to.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// [`Slot::dispatch_sending`] for a record made with [`Slot::into_dispatched`]: marks this
    /// attempt as being handed to the inner service until the returned [`Sending`] is dropped, so
    /// that the gentlify layers inside share this dispatch's clock read. A layer done with its
    /// handle on the slot keeps one reference to it, in the record, rather than two.
    ///
    /// ```
    /// use gentlify_core::{Feedback, Slot};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let feedback = Feedback::new();
    /// let (slot, _end) = Slot::new(&feedback);
    /// let outer = slot.clone().into_dispatched(&feedback);
    /// let sending = outer.sending();
    /// // The inner service's `call`: here, another layer on the same request.
    /// let inner = slot.dispatch(&feedback);
    /// drop(sending);
    /// assert_eq!(inner.sent_at(), outer.sent_at());
    /// # }
    /// ```
    pub fn sending(&self) -> Sending<'_> {
        self.slot.sending(self)
    }

    /// Classifies a response with the handle's classifier and publishes it, unless a layer nearer
    /// the server already published this attempt (then its class is returned). When the
    /// classifier says the body could change the class ([`Classify::wants_body`]: a 429 that may
    /// say `insufficient_quota`), publishing waits until a layer that reads the body calls
    /// [`on_response_body`](Dispatched::on_response_body), the next attempt is sent, or the slot
    /// ends — whichever comes first — so the attempt is still published exactly once. Returns
    /// [`Classified::AtEndOfStream`] when the class is only known from the trailers: call
    /// [`on_trailers`](Dispatched::on_trailers) at the end of the body (the [`SlotBody`]
    /// does).
    ///
    /// [`SlotBody`]: crate::SlotBody
    /// [`Classify::wants_body`]: crate::Classify::wants_body
    pub fn on_response(&self, response: &dyn ResponseParts) -> Classified {
        if self.other.is_none() {
            if let Some(class) = self.slot.owner_settled_class(self.attempt) {
                return Classified::Ready(class);
            }
        }
        if self.is_settled() {
            if let Some(class) = self.slot.is_published(self.other.as_ref(), self.attempt) {
                return Classified::Ready(class);
            }
        }
        let feedback = self.feedback();
        let (class, defer) = match feedback.default_head_class(response) {
            // The common case, settled by the head: the default classifier without its vtable.
            Some(class) => (class, false),
            None => {
                let classifier = feedback.classifier();
                let Classified::Ready(class) = classifier.classify_response(response) else {
                    return match self.slot.is_published(self.other.as_ref(), self.attempt) {
                        Some(class) => Classified::Ready(class),
                        None => Classified::AtEndOfStream,
                    };
                };
                // A layer that reads the body (the retry layer) may refine the class when the
                // classifier says it could: keep the outcome until it does, the next attempt is
                // sent, or the slot ends.
                (class, classifier.wants_body(response))
            }
        };
        let status = Some(response.status());
        Classified::Ready(self.slot.settle(
            self.other.as_ref(),
            self.attempt,
            class,
            defer,
            |dispatched| self.outcome(class, status, dispatched),
        ))
    }

    /// True when a layer nearer the server on the handle that made the slot has already settled
    /// this attempt (published or deferred its outcome), known without taking the slot's lock.
    /// [`settle`](crate::settle) uses it to skip classifying again in every outer layer.
    pub(crate) fn is_settled(&self) -> bool {
        self.other.is_none() && self.slot.settled_on_owner(self.attempt)
    }

    /// Classifies a response from its head and a prefix of its body
    /// ([`Classify::classify_body`]), and publishes it at once: what a layer that read the body
    /// calls instead of [`on_response`](Dispatched::on_response). The body's word wins over a class
    /// deferred from the head by a layer nearer the server.
    ///
    /// [`Classify::classify_body`]: crate::Classify::classify_body
    pub fn on_response_body(&self, response: &dyn ResponseParts, body_prefix: &[u8]) -> Classified {
        let classifier = self.feedback().classifier();
        let classified = match classifier.classify_body(response, body_prefix) {
            Some(class) => Classified::Ready(class),
            None => classifier.classify_response(response),
        };
        if let Classified::Ready(class) = classified {
            if !self.publish_with_status(class, Some(response.status())) {
                if let Some(published) = self.slot.is_published(self.other.as_ref(), self.attempt) {
                    return Classified::Ready(published);
                }
            }
        }
        classified
    }

    fn feedback(&self) -> &Feedback {
        self.slot.feedback(self.other.as_ref())
    }

    fn outcome(
        &self,
        class: Class,
        status: Option<http::StatusCode>,
        dispatched: Option<(u32, Instant)>,
    ) -> Outcome {
        let sent_at = self.resolve_sent_at(dispatched);
        let mut outcome = Outcome::new(class, self.attempt, sent_at);
        outcome.status = status;
        outcome
    }

    /// Classifies an error from the inner service and publishes it. Local rejections
    /// ([`is_local_rejection`]) never reached the server and are not published: `None`.
    pub fn on_error(&self, error: &(dyn Error + 'static)) -> Option<Class> {
        if is_local_rejection(error) {
            return None;
        }
        let class = self.feedback().classifier().classify_error(error);
        Some(self.slot.settle(
            self.other.as_ref(),
            self.attempt,
            class,
            false,
            |dispatched| self.outcome(class, None, dispatched),
        ))
    }

    /// Classifies the end of a body whose head said [`Classified::AtEndOfStream`] and publishes it.
    pub fn on_trailers(&self, trailers: Option<&HeaderMap>) -> Class {
        let class = self.feedback().classifier().classify_trailers(trailers);
        self.slot.settle(
            self.other.as_ref(),
            self.attempt,
            class,
            false,
            |dispatched| self.outcome(class, None, dispatched),
        )
    }

    /// Publishes `class` for this attempt, unless it was already published on this handle.
    /// Returns whether it was.
    pub fn publish(&self, class: Class) -> bool {
        self.publish_with_status(class, None)
    }

    /// Publishes `class` with the response's `status` for this attempt, unless it was already
    /// published on this handle. Returns whether it was.
    pub fn publish_with_status(&self, class: Class, status: Option<http::StatusCode>) -> bool {
        self.slot
            .publish_once(self.other.as_ref(), self.attempt, |dispatched| {
                self.outcome(class, status, dispatched)
            })
    }
}

impl fmt::Debug for Dispatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatched")
            .field("attempt", &self.attempt)
            .field("sent_at", &self.sent_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Class, ClassCode};

    #[test]
    fn every_class_that_fits_its_code_comes_back_the_same() {
        let classes = [
            Class::Success,
            Class::Failure,
            Class::Fatal,
            Class::Cancelled,
            Class::Overloaded { retry_after: None },
            Class::Overloaded {
                retry_after: Some(Duration::ZERO),
            },
            Class::Overloaded {
                retry_after: Some(Duration::from_millis(1_500)),
            },
            Class::Overloaded {
                retry_after: Some(Duration::from_millis((1 << 29) - 1)),
            },
        ];
        for class in classes {
            assert_eq!(ClassCode::of(class).class(), Some(class), "{class:?}");
        }
    }

    #[test]
    fn a_delay_the_code_cannot_carry_exactly_is_unknown() {
        for delay in [
            Duration::from_micros(1_500),
            Duration::from_nanos(1),
            Duration::from_millis(1 << 29),
            Duration::MAX,
        ] {
            let class = Class::Overloaded {
                retry_after: Some(delay),
            };
            assert_eq!(ClassCode::of(class), ClassCode::UNKNOWN, "{delay:?}");
            assert_eq!(ClassCode::UNKNOWN.class(), None);
        }
    }
}
