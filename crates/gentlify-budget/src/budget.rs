//! The budget: a set of limits, shared by every stack that draws on it.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use gentlify_core::error::{BudgetWaitTooLong, RequestTooLarge};
use gentlify_core::{
    BoxError, Class, Controller, Dimension, Feedback, Outcome, QuotaReport, SnapshotPart,
};
use tokio::time::{Instant, Sleep};

use crate::cost::TokenCost;
use crate::credit::{actual_amounts, amounts, kind, Amounts, Credits, GEN_BITS};
use crate::error::BuildError;
use crate::limit::Limit;
use crate::window::{nanos, Actual, Reported, Tick, Window, MIN_CHUNK};

/// The most limits one budget holds (requests, tokens, input and output tokens, each per minute
/// and per day is eight). A reservation keeps its charges inline, without allocating.
pub const MAX_LIMITS: usize = 8;

/// The share of each limit the budget uses by default while it flies blind: 90 %, the margin
/// chat-limiter uses, which absorbs the estimation error of requests in flight and requests sent
/// by other clients on the same key before the server's headers report them. Once the server
/// reports the limit itself, its account governs instead, without a margin.
pub const DEFAULT_SAFETY_RATIO: f64 = 0.9;

/// A wait that stands for "never" without overflowing `Instant`.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// For a report that does not say its attempt's send instant ([`QuotaReport::sent_at`]): how
/// long before the budget hears a response (in ticks, nanoseconds) the report may have been read
/// and still be taken for this response's: a layer below reading the head in the same poll reads
/// the clock a moment before (equal in virtual time). A newest report older than this belongs to
/// another response and is not re-dated.
const HEARD_WITHIN: Tick = 1_000_000;

/// How long a request waits for the budget by default before it fails with
/// [`BudgetWaitTooLong`]: one minute, the window of RPM and TPM limits, so that a request that
/// waits longer than a whole refill is refused rather than left hanging.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);

/// A set of limits (RPM, TPM, RPD, input and output tokens, ...) that requests draw on: cheap to
/// clone (an `Arc`), and shared by every [`TokenBudgetLayer`](crate::TokenBudgetLayer) given a
/// clone, so that a chat stack and an embeddings stack can draw on one organisation's TPM.
///
/// # Algorithm: a sliding window per limit
///
/// Each limit keeps the amounts charged in its last window (a quantised sliding-window log) and
/// admits a request when the amounts charged in the window ending now, plus the request's cost,
/// fit in the capacity (the limit × the safety ratio). Capacity comes back continuously, each
/// charge exactly one window after it was made; returns from reconciliation come back at once.
///
/// Why not the alternatives:
/// - **Fixed windows** (a counter reset every minute) admit a full limit just before the boundary
///   and another just after: twice the limit within one window's length, which a provider that
///   counts over a sliding window or over shorter sub-windows (Azure OpenAI enforces RPM over 1 s
///   and 10 s windows) answers with 429s.
/// - **A token bucket / GCRA** (capacity C refilling at C per window) is smooth and O(1), but
///   within any one window's length it admits its burst plus a window's refill: up to 2 C, again
///   above the limit for a server counting over a sliding window.
///
/// The sliding window is the one of the three whose guarantee matches how limits are stated:
/// **in every window of the limit's length, the tokens charged never exceed the capacity**
/// (while the budget flies blind: once the server reports the very limit, its own account
/// governs, and a server that keeps a bucket admits its burst and its refill within a window). Its
/// output also conforms to a server-side token bucket of the full limit. The cost is a small
/// queue per limit, bounded at about 1 025 entries however busy (charges within 1/1024 of a
/// window share an entry that expires with its latest charge, so merging can only delay
/// capacity, by at most one slice).
///
/// What it costs in throughput, blind: under a saturating load the budget admits its capacity
/// per window, so goodput is the safety ratio × the limit (90 % by default); raise the ratio when
/// the estimates are good and no other client shares the key. Its shape is bursty where a token
/// bucket's is smooth: what was admitted together comes back together one window later.
///
/// # The lock-free path
///
/// The windows live behind a mutex, and checking them needs the time: a lock and a clock read
/// per reservation. While the budget is far from its limits, most reservations skip both:
///
/// 1. **Credit drawn in chunks.** A reservation made under the lock, when nobody waits, no
///    server account governs and every window stays at most three quarters full with it, also
///    draws a *chunk* of every limit (1/32 of its capacity, less when the limits' fields must
///    share the word; never below 4, so a budget with a limit under 128, 60 RPM say, never
///    draws, nor one whose request does not fit in a chunk) and counts it as used in the
///    window. The chunks sit in one atomic word per budget: a field per limit, the draw's
///    generation, and an open flag.
/// 2. **Reservations take from the credit.** A reservation first tries to take its cost from
///    every field at once: one subtraction and one compare-and-swap, all or nothing, no lock
///    and no clock read ([`try_reserve`](TokenBudget::try_reserve)); a reservation awaited
///    ([`reserve`](TokenBudget::reserve), what the layer does) reads the clock it needs anyway
///    and publishes that instant with one more atomic operation. A request larger than what is
///    left of a chunk goes to the lock, which closes the credit and draws again.
/// 3. **Reconciled through it.** A return goes back into the credit, an overrun is taken from
///    it, one compare-and-swap, while the credit of the reservation's draw is open; once it has
///    closed, under the lock, on the window entry the chunk was closed into (or charged now
///    when that entry has left the window, as for any reservation).
/// 4. **Closed before anyone looks.** Every locked operation that reads or checks the windows
///    (a reservation that did not fit in the credit, a waiter joining the queue,
///    [`remaining`](TokenBudget::remaining), the snapshot, a server report, a 429) first closes
///    the credit: the leftover goes back to the windows, and what was handed out is charged at
///    the last instant it can have been taken: the latest instant a reservation published, or,
///    when one took from the chunk without a clock reading, the instant of the close.
///
/// Why the guarantee holds: from its draw to its close a chunk counts whole in its windows, and
/// from its close what was handed out counts for one window from an instant no earlier than any
/// take from it. Every request taken from a chunk is therefore counted over at least the window
/// it really occupies: no window of the limit's length ever holds more than the capacity. FIFO
/// holds because a waiter closes the credit before it queues, and no chunk is drawn while one
/// waits. The property tests run the same workloads through chunks.
///
/// What it costs: the credit is capacity held for the lock-free path, at most 1/32 of each limit,
/// and a request taken from a chunk without a clock reading (and every other request of that
/// chunk) counts from the close rather than from its send: after a quiet period, up to a chunk
/// of capacity comes back later than it would have. The snapshot and
/// [`remaining`](TokenBudget::remaining) close the credit first, so they show reservations only,
/// never credit not yet handed out.
///
/// # The server's account
///
/// A quota report (from the header layer, or [`report_quota`](TokenBudget::report_quota)) says
/// what the server holds: `remaining`, and the time until its `reset`. The budget reads it as
/// follows, and keeps it up to date with its own charges until the next report.
///
/// - **A continuously refilled bucket** (OpenAI, Azure OpenAI, Groq, Anthropic: every source but
///   the two below). The reset is the time until the bucket is full again, refilling at
///   `limit / window`, so the bucket holds `remaining + reset × limit / window` and what is left
///   grows at that rate. OpenAI's recorded headers read exactly so (`remaining-requests: 4999` of
///   5 000 per minute, `reset-requests: 12ms`: one request is 60 s / 5 000 = 12 ms of refill),
///   and the reading holds for a server whose burst is shorter than its window (limits
///   "enforced over shorter periods", as OpenAI warns): after a reset the budget believes what
///   the bucket holds, not a whole window.
/// - **A fixed window** (GitHub, the IETF `RateLimit` fields, or a report that no bucket of its
///   limit could give, such as 100 left of 100 with a whole window to its reset): the reset is
///   the end of the window; nothing comes back before it, and after it the budget's own window
///   governs again until the next report.
/// - A report without a limit is read as a fixed window, to its reset (or for one window).
/// - **A 429 heard blind** (an attempt refused for quota, HTTP 429, while no report of a limit
///   has come): the server's bucket is empty now. Without its figures the budget reads it as a
///   bucket of its own capacity, refilling at the capacity per window and starting empty, which
///   only ever lowers what it believes: what comes back after a 429 is paced instead of sent at
///   once. Every such 429 empties it again; a report replaces it. A 503 or 529 (the server's
///   load, not the caller's quota) does not.
///
/// When the report's limit is a limit the budget enforces (same amount, and same window when
/// the report gives one), only that limit hears the report, and the server's account replaces
/// its window and its safety margin (a minute's report says nothing of the day's quota of the
/// same dimension). When no limit of the budget is the reported one, every limit of the
/// dimension hears it, and it only lowers what they believe. Overruns found at reconciliation are taken from the
/// server's account, returns are not (providers count a request's estimate when they admit it;
/// the next report says whether anything came back).
///
/// A report describes the server when it counted the reporting attempt, not when its response
/// arrived: it is re-dated to the instant that attempt was sent, and the charges made since
/// (those made at the same instant included: a batch sent together reaches the server one after
/// the other) are replayed on it. The header layer says that instant in the report itself
/// ([`QuotaReport::sent_at`]), so that with many responses in flight each report is re-dated to
/// its own attempt's send. A report without it (one published by hand) is taken for a
/// response's own when it is the newest and was read at most 1 ms before the budget layer hears
/// that response (the layer tells the budget when each attempt was sent): a guess, which two
/// responses read within that millisecond on different threads can mislead. A report older than
/// the account it would replace (a slow response overtaken by a faster one) is dropped.
///
/// # Waiting
///
/// A request that does not fit waits, first come first served across every stack sharing the
/// budget: a small request never overtakes a large one waiting before it. A request whose cost
/// exceeds a limit's whole capacity (the whole limit, without the safety margin, once the
/// server's account of that very limit governs) fails at once with [`RequestTooLarge`]. One that would wait
/// longer than [`max_wait`](TokenBudgetBuilder::max_wait) fails with [`BudgetWaitTooLong`]: at
/// once when the wait can be foreseen (the charges in the window, and the costs of the requests
/// queued before it, assuming no returns), else when the maximum wait is over.
///
/// ```
/// use gentlify_budget::{Limit, TokenBudget, TokenCost};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let budget = TokenBudget::builder()
///     .limit(Limit::requests_per_minute(500))
///     .limit(Limit::tokens_per_minute(10_000))
///     .build()
///     .unwrap();
/// let reservation = budget.try_reserve(&TokenCost::new(6_000, 1_000)).unwrap();
/// assert_eq!(budget.remaining(gentlify_core::Dimension::Tokens), Some(2_000)); // 9 000 - 7 000
/// reservation.reconcile(gentlify_budget::Actual::Tokens(3_000));
/// assert_eq!(budget.remaining(gentlify_core::Dimension::Tokens), Some(6_000));
/// # }
/// ```
#[derive(Clone)]
pub struct TokenBudget {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    name: Option<Box<str>>,
    max_wait: Duration,
    safety_ratio: f64,
    /// The credit of the lock-free path: a chunk of every limit, in one atomic word.
    credits: Credits,
    /// The latest instant (tick) a timed take from the credits said it was made at, or a
    /// credit was drawn at: never lowered.
    last_use: AtomicU64,
    /// Tick 0 of the windows (the state's `base`), for timed takes outside the lock.
    base: Instant,
    /// One more than the tick the newest server report without its attempt's send instant was
    /// observed at (0 before any): a response heard later than that has no report to rebase, and
    /// takes no lock.
    reported: AtomicU64,
    state: Mutex<State>,
    /// How many times the state was locked, for tests of the paths that must not lock.
    #[cfg(test)]
    locks: AtomicU64,
    registered: Mutex<Vec<Feedback>>,
}

struct State {
    /// Tick 0 of the windows.
    base: Instant,
    windows: Vec<Window>,
    queue: VecDeque<Waiter>,
    next_waiter: u64,
    /// The generation of the last credit drawn (see [`Credits`]); the credit is open while
    /// the windows say so.
    generation: u64,
}

struct Waiter {
    id: u64,
    cost: TokenCost,
    waker: Option<Waker>,
}

impl State {
    fn tick(&self, t: Instant) -> Tick {
        nanos(t.saturating_duration_since(self.base))
    }

    fn instant(&self, t: Tick) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn wake_front(&mut self) {
        if let Some(front) = self.queue.front_mut() {
            if let Some(waker) = front.waker.take() {
                waker.wake();
            }
        }
    }

    fn too_large(&self, cost: &TokenCost) -> Option<RequestTooLarge> {
        self.windows.iter().find_map(|w| {
            let (amount, bound) = (w.amount_of(cost), w.bound());
            (amount > bound).then(|| RequestTooLarge::new(w.dimension(), amount, bound))
        })
    }

    /// Closes every open credit (see [`Credits`]) at `now`: what was left of it goes back to its
    /// window. Done under the lock before anything reads or checks the windows' room, so that
    /// credit drawn for the lock-free path never makes a request wait or shows as used.
    fn settle(&mut self, shared: &Shared, now: Tick) {
        if !self.windows.first().is_some_and(Window::is_open) {
            return;
        }
        let mut leftovers = [0; MAX_LIMITS];
        let untimed = shared.credits.close(&mut leftovers);
        // A timed take published its instant before taking: the swap above sees it.
        let last = if untimed {
            now
        } else {
            shared.last_use.load(Ordering::Acquire)
        };
        for (w, &leftover) in self.windows.iter_mut().zip(&leftovers) {
            w.close(now, leftover, last);
        }
    }

    /// The full generation of the draw whose generation ends in `low` (its low [`GEN_BITS`]
    /// bits): the latest one drawn.
    fn full_generation(&self, low: u32) -> u64 {
        let mask = (1 << GEN_BITS) - 1;
        self.generation
            .wrapping_sub(self.generation.wrapping_sub(u64::from(low)) & mask)
    }

    /// After a request of `cost` was charged at `now` by the locked path: draws a chunk of
    /// credit in every limit for the lock-free path, when nobody waits and every limit can
    /// spare one (see [`Window::chunk_to_draw`]); else none.
    fn draw(&mut self, shared: &Shared, now: Tick, cost: &TokenCost) {
        if !self.queue.is_empty() || self.windows.is_empty() {
            return;
        }
        let mut chunks = [0; MAX_LIMITS];
        for (i, (chunk, w)) in chunks.iter_mut().zip(&self.windows).enumerate() {
            match w.chunk_to_draw(w.amount_of(cost), shared.credits.max(i)) {
                Some(c) => *chunk = c,
                None => return,
            }
        }
        // What the credit hands out, even an overrun of an older reservation, counts from no
        // earlier than now.
        shared.last_use.fetch_max(now, Ordering::AcqRel);
        self.generation += 1;
        for (w, &chunk) in self.windows.iter_mut().zip(&chunks) {
            w.draw(chunk, self.generation);
        }
        shared
            .credits
            .open(self.generation, &chunks[..self.windows.len()]);
    }

    /// Charges every limit, or none when one is short.
    fn try_charge(&mut self, now: Tick, cost: &TokenCost) -> Option<Charges> {
        let mut seqs = [0; MAX_LIMITS];
        // The amounts, once; then the charges, only when every limit has room.
        let mut amounts = [0; MAX_LIMITS];
        for (amount, w) in amounts.iter_mut().zip(&mut self.windows) {
            *amount = w.amount_of(cost);
            if !w.fits(now, *amount) {
                return None;
            }
        }
        for ((seq, w), &amount) in seqs.iter_mut().zip(&mut self.windows).zip(&amounts) {
            *seq = w.charge(now, amount) as u32;
        }
        Some(Charges::Locked {
            seqs,
            len: self.windows.len() as u8,
        })
    }

    /// When `need` (the request and whoever waits before it: `requests` requests) fits in every
    /// limit, and which limit is the last to allow it.
    fn time_to_fit(
        &mut self,
        now: Instant,
        need: &TokenCost,
        requests: u64,
    ) -> (Instant, Dimension) {
        let now = self.tick(now);
        let mut latest = (now, Dimension::Requests);
        for w in &mut self.windows {
            // More than a whole capacity (a long queue before it) takes a window per capacity
            // after the first; an estimate, the deadline catches the rest.
            let amount = match w.dimension() {
                Dimension::Requests => requests,
                _ => w.amount_of(need),
            };
            let bound = w.bound();
            let whole_windows = amount.saturating_sub(1) / bound;
            let at = w
                .time_to_fit(now, amount.min(bound))
                .and_then(|at| at.checked_add(w.length().checked_mul(whole_windows)?))
                .unwrap_or(now.saturating_add(nanos(NEVER)))
                .min(now.saturating_add(nanos(NEVER)));
            if at > latest.0 {
                latest = (at, w.dimension());
            }
        }
        (self.instant(latest.0), latest.1)
    }
}

/// Where a reservation was charged. The amounts follow from the reservation's cost, so they are
/// not kept.
#[derive(Debug, Clone, Copy)]
enum Charges {
    /// Taken from the credit by the lock-free path: the low bits of the draw's generation (see
    /// [`State::full_generation`]).
    Fast { generation: u32 },
    /// Charged under the lock: the entry of each window, in the budget's order, as the low 32
    /// bits of its sequence number (see [`Window::full_seq`]).
    Locked { seqs: [u32; MAX_LIMITS], len: u8 },
}

impl Charges {
    fn seqs(&self) -> &[u32] {
        match self {
            Charges::Fast { .. } => &[],
            Charges::Locked { seqs, len } => &seqs[..usize::from(*len)],
        }
    }

    #[cfg(test)]
    fn is_fast(&self) -> bool {
        matches!(self, Charges::Fast { .. })
    }
}

/// Builds a [`TokenBudget`].
#[derive(Debug, Clone)]
pub struct TokenBudgetBuilder {
    limits: Vec<Limit>,
    safety_ratio: f64,
    max_wait: Duration,
    name: Option<Box<str>>,
}

impl Default for TokenBudgetBuilder {
    fn default() -> Self {
        TokenBudgetBuilder {
            limits: Vec::new(),
            safety_ratio: DEFAULT_SAFETY_RATIO,
            max_wait: DEFAULT_MAX_WAIT,
            name: None,
        }
    }
}

impl TokenBudgetBuilder {
    /// Adds a limit. Any number of dimensions and windows at once, up to [`MAX_LIMITS`].
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// The share of each limit the budget uses, in `(0, 1]`; [`DEFAULT_SAFETY_RATIO`] unless set.
    pub fn safety_ratio(mut self, ratio: f64) -> Self {
        self.safety_ratio = ratio;
        self
    }

    /// The longest a request waits for the budget; [`DEFAULT_MAX_WAIT`] unless set.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Names the budget in snapshots (`"org-tpm"`, say).
    pub fn name(mut self, name: impl Into<Box<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the budget, or says what is wrong with the configuration.
    pub fn build(self) -> Result<TokenBudget, BuildError> {
        if !(self.safety_ratio > 0.0 && self.safety_ratio <= 1.0) {
            return Err(BuildError::SafetyRatio(self.safety_ratio));
        }
        if self.limits.len() > MAX_LIMITS {
            return Err(BuildError::TooManyLimits(self.limits.len()));
        }
        let mut windows: Vec<Window> = Vec::with_capacity(self.limits.len());
        for limit in self.limits {
            if !matches!(
                limit.dimension(),
                Dimension::Requests
                    | Dimension::Tokens
                    | Dimension::InputTokens
                    | Dimension::OutputTokens
            ) || limit.amount() == 0
                || limit.window().is_zero()
            {
                return Err(BuildError::Limit(limit));
            }
            let capacity = ((limit.amount() as f64 * self.safety_ratio) as u64).max(1);
            windows.push(Window::new(limit, capacity));
        }
        // A day before now, so that a budget made before a test's paused clock starts still
        // sees later instants as later.
        let base = {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
        };
        Ok(TokenBudget {
            shared: Arc::new(Shared {
                name: self.name,
                max_wait: self.max_wait,
                safety_ratio: self.safety_ratio,
                credits: Credits::new(
                    &windows
                        .iter()
                        .map(|w| (w.dimension(), w.natural_chunk()))
                        .collect::<Vec<_>>(),
                    MIN_CHUNK,
                ),
                last_use: AtomicU64::new(0),
                base,
                reported: AtomicU64::new(0),
                #[cfg(test)]
                locks: AtomicU64::new(0),
                state: Mutex::new(State {
                    base,
                    windows,
                    queue: VecDeque::new(),
                    next_waiter: 0,
                    generation: 0,
                }),
                registered: Mutex::new(Vec::new()),
            }),
        })
    }
}

impl TokenBudget {
    /// A builder.
    pub fn builder() -> TokenBudgetBuilder {
        TokenBudgetBuilder::default()
    }

    /// A budget of `limits` with the default safety ratio and maximum wait.
    pub fn new(limits: impl IntoIterator<Item = Limit>) -> Result<TokenBudget, BuildError> {
        limits
            .into_iter()
            .fold(TokenBudget::builder(), TokenBudgetBuilder::limit)
            .build()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// True when both are clones of one budget.
    pub fn same_as(&self, other: &TokenBudget) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The maximum wait of a reservation.
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// Reserves `cost` now if every limit covers it and nobody waits before it; `None` otherwise.
    ///
    /// The [`Reservation`] borrows the budget, as tokio's `Semaphore::try_acquire` does its
    /// permit: no reference count is taken and given back per request.
    /// [`try_reserve_owned`](TokenBudget::try_reserve_owned) returns one that holds the budget,
    /// to keep past the borrow (in a future or another task).
    ///
    /// Takes the cost from the lock-free path's credit when it covers it, without a lock or a
    /// clock read (see "The lock-free path" above): such a reservation counts from when the
    /// credit closes, at the latest when the budget is next read or a reservation does not fit
    /// in the credit. [`reserve`](TokenBudget::reserve) counts from the instant it is made.
    ///
    /// ```
    /// use gentlify_budget::{Actual, Limit, TokenBudget, TokenCost};
    ///
    /// let budget = TokenBudget::new([Limit::tokens_per_minute(10_000)]).unwrap();
    /// let reservation = budget.try_reserve(&TokenCost::new(1_000, 500)).unwrap();
    /// // ... send the request; it used 1 200 tokens in all:
    /// reservation.reconcile(Actual::Tokens(1_200));
    /// assert!(budget.try_reserve(&TokenCost::new(20_000, 0)).is_none());
    /// ```
    #[inline]
    pub fn try_reserve(&self, cost: &TokenCost) -> Option<Reservation<'_>> {
        // Each path builds its result in place: no enum of charges moved through the stack.
        if let Some(charges) = self.shared.take_fast(cost, None) {
            return Some(Reservation {
                budget: self,
                cost: *cost,
                charges,
            });
        }
        self.try_reserve_locked(cost)
    }

    /// [`try_reserve`](TokenBudget::try_reserve) under the lock.
    #[inline(never)]
    fn try_reserve_locked(&self, cost: &TokenCost) -> Option<Reservation<'_>> {
        Some(Reservation {
            budget: self,
            cost: *cost,
            charges: self.shared.try_charges_locked(cost)?,
        })
    }

    /// [`try_reserve`](TokenBudget::try_reserve), returning a reservation that holds a clone of
    /// the budget (an `Arc`), as tokio's `Semaphore::try_acquire_owned` does.
    #[inline]
    pub fn try_reserve_owned(&self, cost: &TokenCost) -> Option<OwnedReservation> {
        self.try_reserve(cost).map(Reservation::into_owned)
    }

    /// The lock-free path of [`reserve`](TokenBudget::reserve) alone: `cost` taken from the
    /// credit, counting from `now` (the caller's clock reading, published before the take), or
    /// `None` when the credit is closed or short (the caller then awaits `reserve`).
    #[inline]
    pub(crate) fn reserve_now(&self, cost: &TokenCost, now: Instant) -> Option<OwnedReservation> {
        let charges = self.shared.take_fast(cost, Some(now))?;
        Some(OwnedReservation {
            budget: self.clone(),
            cost: *cost,
            charges,
        })
    }

    /// Reserves `cost`, waiting (first come, first served) until every limit covers it.
    /// Fails with [`RequestTooLarge`] or [`BudgetWaitTooLong`].
    pub fn reserve(&self, cost: TokenCost) -> Reserve {
        Reserve {
            budget: self.clone(),
            cost,
            waiter: None,
            started: None,
            short: Dimension::Requests,
            sleep: None,
        }
    }

    /// Charges `cost` now without waiting (an attempt that went out without asking, such as a
    /// retry made below the budget layer).
    pub fn charge_now(&self, cost: &TokenCost) {
        let mut state = self.lock();
        let now = state.tick(Instant::now());
        for w in &mut state.windows {
            let amount = w.amount_of(cost);
            w.charge(now, amount);
        }
    }

    /// What is left now of the first limit counting `dimension`.
    pub fn remaining(&self, dimension: Dimension) -> Option<u64> {
        let mut state = self.lock();
        let now = state.tick(Instant::now());
        state.settle(&self.shared, now);
        state
            .windows
            .iter_mut()
            .find(|w| w.dimension() == dimension)
            .map(|w| w.remaining(now))
    }

    /// Requests waiting for the budget now.
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Applies what a server said about its limits (see "The server's account" above): no limit
    /// of a reported dimension believes it has more left than the server's `remaining`, as of
    /// the report's [`sent_at`](QuotaReport::sent_at) when it says it, the charges made since
    /// counted on top. The layer registers the budget on its [`Feedback`] handle so that the
    /// header layer's reports arrive here by themselves.
    pub fn report_quota(&self, report: &QuotaReport) {
        self.shared.on_quota(report);
    }

    /// Says that the attempt whose response was just received (now) was sent at `sent`: a
    /// server report that arrived with it describes the server as of then, before the charges
    /// this budget made while the attempt was in flight. The layer calls it for every response.
    ///
    /// Only a report that did not say its attempt's send instant, observed at the instant its
    /// response is heard, is rebased here (see [`Window::rebase`]; one that said it was rebased
    /// when heard): while no such report is that recent, this reads the clock at most and takes
    /// no lock.
    pub(crate) fn response_heard(&self, sent: Instant) {
        let shared = &*self.shared;
        let reported = shared.reported.load(Ordering::Acquire);
        if reported == 0 {
            return;
        }
        let observed = reported - 1;
        let now = nanos(Instant::now().saturating_duration_since(shared.base));
        // The header layer below read this response's head within the same poll, a moment ago:
        // a newest report older than that is not this response's.
        if now.saturating_sub(observed) > HEARD_WITHIN {
            return;
        }
        let mut state = self.lock();
        let sent = state.tick(sent);
        for w in &mut state.windows {
            w.rebase(sent, observed);
        }
    }

    /// Registers the budget with `feedback` (once per handle): it then hears the server's quota
    /// reports and shows in the handle's snapshots.
    pub fn register(&self, feedback: &Feedback) {
        let mut registered = self
            .shared
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if registered.iter().any(|f| f.same_as(feedback)) {
            return;
        }
        feedback.register(&self.shared);
        registered.push(feedback.clone());
    }

    /// The budget's part of a snapshot (also what [`Feedback::snapshot`] shows under
    /// `"budget"`): per limit, `<dimension>_per_<seconds>s_limit`, `_used` (charged by this
    /// budget in the window: its own attempts and tokens), `_remaining` (what the budget
    /// believes is left: the server's account when it reported this limit, else the capacity
    /// less `_used`, lowered by any other report), `_unseen` (the capacity less `_used` less
    /// `_remaining`, never negative: what the server's account says was consumed beyond this
    /// budget's charges, by other clients on the key or against a server burst smaller than the
    /// window), `_reset` (time until everything charged has left the window)
    /// and, once a server reported it, `_server_remaining` and `_server_reset`; and `waiting`.
    /// Taking the snapshot closes the lock-free path's credit first (see "The lock-free path"
    /// above): `_used` counts reservations, never credit not yet handed out.
    pub fn snapshot(&self) -> SnapshotPart {
        self.shared.part()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        #[cfg(test)]
        self.locks.fetch_add(1, Ordering::Relaxed);
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`try_reserve`](TokenBudget::try_reserve) under the lock.
    fn try_charges_locked(&self, cost: &TokenCost) -> Option<Charges> {
        let now = Instant::now();
        let mut state = self.lock();
        let now = state.tick(now);
        state.settle(self, now);
        if !state.queue.is_empty() {
            return None;
        }
        let charges = state.try_charge(now, cost)?;
        state.draw(self, now, cost);
        Some(charges)
    }

    /// Replaces the estimate `cost`, charged as `charges`, by the real consumption.
    #[inline(always)]
    fn reconcile(&self, cost: &TokenCost, charges: &Charges, actual: Actual) {
        if let Charges::Fast { generation } = *charges {
            let from = amounts(cost);
            let to = actual_amounts(actual, &from);
            self.adjust_fast(generation, &from, &to);
        } else {
            self.reconcile_locked(cost, charges, actual);
        }
    }

    /// [`reconcile`](Shared::reconcile) of a reservation made under the lock.
    #[inline(never)]
    fn reconcile_locked(&self, cost: &TokenCost, charges: &Charges, actual: Actual) {
        let mut state = self.lock();
        let mut now = lazy_tick(state.base);
        let mut returned = false;
        for (w, &seq) in state.windows.iter_mut().zip(charges.seqs()) {
            let amount = w.amount_of(cost);
            let to = w.amount_of_actual(actual, amount);
            if to != amount {
                let seq = w.full_seq(seq);
                returned |= w.adjust(seq, amount, to, &mut now);
            }
        }
        if returned {
            state.wake_front();
        }
    }

    /// Gives the whole reservation of `cost`, charged as `charges`, back.
    fn cancel(&self, cost: &TokenCost, charges: &Charges) {
        if let Charges::Fast { generation } = *charges {
            let from = amounts(cost);
            self.adjust_fast(generation, &from, &[0; 4]);
            return;
        }
        let mut state = self.lock();
        let mut now = lazy_tick(state.base);
        for (w, &seq) in state.windows.iter_mut().zip(charges.seqs()) {
            let amount = w.amount_of(cost);
            let seq = w.full_seq(seq);
            w.adjust(seq, amount, 0, &mut now);
        }
        state.wake_front();
    }

    /// The lock-free path: takes `cost` from every limit's chunk at once, or from none when the
    /// credit is closed or short. Reads no clock: with `now` (the caller's reading) the take
    /// counts from then, without it from when the credit is closed (see "The lock-free path" on
    /// [`TokenBudget`]).
    #[inline]
    fn take_fast(&self, cost: &TokenCost, now: Option<Instant>) -> Option<Charges> {
        let timed = match now {
            Some(now) => {
                // Published before the take: the lock holder that closes the credit sees it.
                let tick = nanos(now.saturating_duration_since(self.base));
                self.last_use.fetch_max(tick, Ordering::AcqRel);
                true
            }
            None => false,
        };
        let generation = self.credits.take(&amounts(cost), timed)?;
        Some(Charges::Fast { generation })
    }

    /// Moves each limit's charge of a fast reservation from `from` to `to` (see [`amounts`]):
    /// through the credit it was taken from while that credit is open; else under the lock, on
    /// the windows.
    #[inline]
    fn adjust_fast(&self, generation: u32, from: &Amounts, to: &Amounts) {
        if !self.credits.adjust(generation, from, to) {
            self.adjust_locked(generation, from, to);
        }
    }

    /// [`adjust_fast`](Shared::adjust_fast) under the lock: in the credit of draw `generation`
    /// while it is open, else in the entry it was closed into.
    #[cold]
    #[inline(never)]
    fn adjust_locked(&self, generation: u32, from: &Amounts, to: &Amounts) {
        let mut state = self.lock();
        let generation = state.full_generation(generation);
        let mut now = lazy_tick(state.base);
        let mut returned = false;
        for w in &mut state.windows {
            let k = kind(w.dimension());
            returned |= w.adjust_credit(generation, from[k], to[k], &mut now);
        }
        if returned {
            state.wake_front();
        }
    }

    fn part(&self) -> SnapshotPart {
        let mut state = self.lock();
        let now = state.tick(Instant::now());
        state.settle(self, now);
        let mut part = SnapshotPart::new("budget");
        if let Some(name) = &self.name {
            part = part.field("name", &**name);
        }
        part = part.field("safety_ratio", self.safety_ratio);
        for w in &mut state.windows {
            let key = format!("{}_per_{}s", w.dimension(), w.limit.window().as_secs());
            part = part
                .field(format!("{key}_limit"), w.limit.amount())
                .field(format!("{key}_used"), w.used(now))
                .field(format!("{key}_unseen"), w.unseen(now))
                .field(format!("{key}_remaining"), w.remaining(now))
                .field(format!("{key}_reset"), w.reset_in(now));
            if let Some(server) = w.server {
                part = part.field(format!("{key}_server_remaining"), server.remaining);
                if let Some(at) = server.reset_at {
                    part = part.field(
                        format!("{key}_server_reset"),
                        Duration::from_nanos(at.saturating_sub(now)),
                    );
                }
            }
        }
        part.field("waiting", state.queue.len())
    }
}

impl Controller for Shared {
    fn on_outcome(&self, outcome: &Outcome) {
        if !(matches!(outcome.class, Class::Overloaded { .. })
            && outcome.status == Some(http::StatusCode::TOO_MANY_REQUESTS))
        {
            return;
        }
        let mut state = self.lock();
        let now = state.tick(Instant::now());
        state.settle(self, now);
        for w in &mut state.windows {
            w.refused(now);
        }
    }

    fn on_quota(&self, report: &QuotaReport) {
        let mut state = self.lock();
        // The report describes the server as of the send instant of the attempt whose response
        // carried it: rebased on it below when the report says it, else by the layer when the
        // attempt's response future hears it, a moment after the report was observed.
        let observed = state.tick(report.observed_at.min(Instant::now()));
        let sent = report.sent_at.map(|sent| state.tick(sent));
        if sent.is_none() {
            // Published under the lock, before the windows hear it: a response heard at this
            // instant finds it (see `response_heard`). A report that says its attempt's send
            // instant needs no guess, and a response heard after it takes no lock.
            self.reported
                .fetch_max(observed.saturating_add(1), Ordering::AcqRel);
        }
        // The server's account governs from now on: no more credit for the lock-free path.
        let now = state.tick(Instant::now());
        state.settle(self, now);
        // The windows that heard the report (at most `MAX_LIMITS`).
        let mut heard: u16 = 0;
        for quota in &report.quotas {
            let Some(remaining) = quota.remaining else {
                continue;
            };
            let reported = Reported {
                source: report.source,
                limit: quota.limit,
                remaining,
                reset_after: quota.reset_after,
                window: quota.window,
            };
            // A report of one quota says nothing of another of the same dimension (the minute's
            // remaining is not the day's): when a limit of the budget is the reported one, only
            // it hears the report; else every limit of the dimension does, and is only lowered.
            let described = |w: &Window| {
                w.dimension() == quota.dimension
                    && quota.limit == Some(w.limit.amount())
                    && quota.window.is_none_or(|d| d == w.limit.window())
            };
            let any_described = state.windows.iter().any(described);
            for (i, w) in state.windows.iter_mut().enumerate() {
                if w.dimension() == quota.dimension && (!any_described || described(w)) {
                    w.report(observed, &reported);
                    heard |= 1 << i;
                }
            }
        }
        if let Some(sent) = sent {
            for (i, w) in state.windows.iter_mut().enumerate() {
                if heard & (1 << i) != 0 {
                    w.rebase_exact(sent, observed);
                }
            }
        }
    }

    fn snapshot(&self) -> Option<SnapshotPart> {
        Some(self.part())
    }
}

impl fmt::Debug for TokenBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("TokenBudget")
            .field("name", &self.shared.name)
            .field(
                "limits",
                &state.windows.iter().map(|w| w.limit).collect::<Vec<_>>(),
            )
            .field("safety_ratio", &self.shared.safety_ratio)
            .field("max_wait", &self.shared.max_wait)
            .field("waiting", &state.queue.len())
            .finish()
    }
}

/// A cost reserved in a [`TokenBudget`], borrowing the budget (what
/// [`try_reserve`](TokenBudget::try_reserve) returns). [`reconcile`](Reservation::reconcile)
/// it with what the request really used: unused tokens go back to the budget, overruns are
/// charged. Dropped without reconciling, the estimate stands.
pub struct Reservation<'a> {
    budget: &'a TokenBudget,
    cost: TokenCost,
    charges: Charges,
}

impl<'a> Reservation<'a> {
    /// The cost reserved.
    pub fn cost(&self) -> TokenCost {
        self.cost
    }

    /// The budget it was reserved in.
    pub fn budget(&self) -> &'a TokenBudget {
        self.budget
    }

    /// Replaces the estimate by the real consumption.
    #[inline]
    pub fn reconcile(self, actual: Actual) {
        self.budget
            .shared
            .reconcile(&self.cost, &self.charges, actual);
    }

    /// Gives the whole reservation back, the request included: for a request that was never
    /// sent.
    pub fn cancel(self) {
        self.budget.shared.cancel(&self.cost, &self.charges);
    }

    /// The same reservation, holding a clone of its budget.
    #[inline]
    pub fn into_owned(self) -> OwnedReservation {
        OwnedReservation {
            budget: self.budget.clone(),
            cost: self.cost,
            charges: self.charges,
        }
    }
}

impl fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("cost", &self.cost)
            .finish()
    }
}

/// A cost reserved in a [`TokenBudget`], holding a clone of the budget: what
/// [`reserve`](TokenBudget::reserve) and [`try_reserve_owned`](TokenBudget::try_reserve_owned)
/// return, for a reservation kept in a future or sent to another task.
/// [`reconcile`](OwnedReservation::reconcile) it with what the request really used: unused
/// tokens go back to the budget, overruns are charged. Dropped without reconciling, the estimate
/// stands.
pub struct OwnedReservation {
    budget: TokenBudget,
    cost: TokenCost,
    charges: Charges,
}

impl OwnedReservation {
    /// The cost reserved.
    pub fn cost(&self) -> TokenCost {
        self.cost
    }

    /// The budget it was reserved in.
    pub fn budget(&self) -> &TokenBudget {
        &self.budget
    }

    /// Replaces the estimate by the real consumption.
    #[inline]
    pub fn reconcile(self, actual: Actual) {
        self.reconcile_in_place(actual);
    }

    /// [`reconcile`](OwnedReservation::reconcile) without consuming the reservation, for one
    /// read where it is kept (a slot's hold, freed whole afterwards). Called once at most.
    pub(crate) fn reconcile_in_place(&self, actual: Actual) {
        self.budget
            .shared
            .reconcile(&self.cost, &self.charges, actual);
    }

    /// Gives the whole reservation back, the request included: for a request that was never
    /// sent.
    pub fn cancel(self) {
        self.budget.shared.cancel(&self.cost, &self.charges);
    }

    /// Moves the charge to now: for a reservation granted before the request could be sent
    /// (while it waited for another budget), so that it leaves the window one window after the
    /// request really went out.
    pub(crate) fn restamp(&mut self) {
        let shared = &self.budget.shared;
        let mut state = shared.lock();
        let now = state.tick(Instant::now());
        // A fast reservation's credit may have closed before the request is sent: it moves to
        // the locked path's log, charged now.
        let (fast, old) = match self.charges {
            Charges::Fast { generation } => {
                state.settle(shared, now);
                (Some(state.full_generation(generation)), [0; MAX_LIMITS])
            }
            Charges::Locked { seqs, .. } => (None, seqs),
        };
        let mut seqs = [0; MAX_LIMITS];
        for (i, (w, seq)) in state.windows.iter_mut().zip(&mut seqs).enumerate() {
            let amount = w.amount_of(&self.cost);
            match fast {
                Some(generation) => w.adjust_credit(generation, amount, 0, &mut || now),
                None => w.adjust(w.full_seq(old[i]), amount, 0, &mut || now),
            };
            *seq = w.charge(now, amount) as u32;
        }
        self.charges = Charges::Locked {
            seqs,
            len: state.windows.len() as u8,
        };
    }
}

impl fmt::Debug for OwnedReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedReservation")
            .field("cost", &self.cost)
            .finish()
    }
}

/// Reads the clock on first use only.
fn lazy_tick(base: Instant) -> impl FnMut() -> Tick {
    let mut now = None;
    move || *now.get_or_insert_with(|| nanos(Instant::now().saturating_duration_since(base)))
}

/// The future of [`TokenBudget::reserve`]: resolves to an [`OwnedReservation`] once every limit covers
/// the cost and every request that waited before it was served.
pub struct Reserve {
    budget: TokenBudget,
    cost: TokenCost,
    waiter: Option<u64>,
    started: Option<Instant>,
    short: Dimension,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Reserve {
    /// Polls for the reservation (for futures that hold a `Reserve` by value).
    pub fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<OwnedReservation, BoxError>> {
        let max_wait = self.budget.shared.max_wait;
        if self.started.is_none() {
            // Open credit means nobody waits: the lock-free path keeps first come, first served.
            let now = Instant::now();
            self.started = Some(now);
            if let Some(charges) = self.budget.shared.take_fast(&self.cost, Some(now)) {
                return Poll::Ready(Ok(OwnedReservation {
                    budget: self.budget.clone(),
                    cost: self.cost,
                    charges,
                }));
            }
        }
        loop {
            let now = Instant::now();
            let started = *self.started.get_or_insert(now);
            let wake_at = {
                let shared = &*self.budget.shared;
                let mut state = shared.lock();
                let tick = state.tick(now);
                state.settle(shared, tick);
                if self.waiter.is_none() {
                    if let Some(err) = state.too_large(&self.cost) {
                        return Poll::Ready(Err(err.into()));
                    }
                }
                let my_turn = match self.waiter {
                    None => state.queue.is_empty(),
                    Some(id) => state.queue.front().is_some_and(|w| w.id == id),
                };
                let mut wake_at = started + max_wait;
                if my_turn {
                    if let Some(charges) = state.try_charge(tick, &self.cost) {
                        if self.waiter.take().is_some() {
                            state.queue.pop_front();
                            state.wake_front();
                        }
                        state.draw(shared, tick, &self.cost);
                        return Poll::Ready(Ok(OwnedReservation {
                            budget: self.budget.clone(),
                            cost: self.cost,
                            charges,
                        }));
                    }
                    let (at, dimension) = state.time_to_fit(now, &self.cost, 1);
                    self.short = dimension;
                    wake_at = wake_at.min(at);
                    if self.waiter.is_none() && at > started + max_wait {
                        return Poll::Ready(Err(BudgetWaitTooLong::new(
                            dimension,
                            at - now,
                            max_wait,
                        )
                        .into()));
                    }
                } else if self.waiter.is_none() {
                    // Everyone before it is served first: it fits once their costs and its own do.
                    let ahead = state.queue.iter().fold(self.cost, |sum, w| {
                        TokenCost::new(
                            sum.input_tokens.saturating_add(w.cost.input_tokens),
                            sum.output_tokens.saturating_add(w.cost.output_tokens),
                        )
                    });
                    let requests = state.queue.len() as u64 + 1;
                    let (at, dimension) = state.time_to_fit(now, &ahead, requests);
                    self.short = dimension;
                    if at > started + max_wait {
                        return Poll::Ready(Err(BudgetWaitTooLong::new(
                            dimension,
                            at - now,
                            max_wait,
                        )
                        .into()));
                    }
                }
                if now >= started + max_wait {
                    leave(&mut self.waiter, &mut state);
                    return Poll::Ready(Err(BudgetWaitTooLong::new(
                        self.short,
                        now - started,
                        max_wait,
                    )
                    .into()));
                }
                match self.waiter {
                    Some(id) => {
                        if let Some(w) = state.queue.iter_mut().find(|w| w.id == id) {
                            w.waker = Some(cx.waker().clone());
                        }
                    }
                    None => {
                        let id = state.next_waiter;
                        state.next_waiter += 1;
                        state.queue.push_back(Waiter {
                            id,
                            cost: self.cost,
                            waker: Some(cx.waker().clone()),
                        });
                        self.waiter = Some(id);
                    }
                }
                // Rounding in the fade of a server deficit can make "fits at t" one tick early:
                // never spin.
                wake_at.max(now + Duration::from_millis(1))
            };
            match &mut self.sleep {
                Some(sleep) => {
                    if sleep.deadline() != wake_at {
                        sleep.as_mut().reset(wake_at);
                    }
                }
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(wake_at))),
            }
            if let Some(sleep) = &mut self.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Takes a waiter out of the queue, waking the next if it was first.
fn leave(waiter: &mut Option<u64>, state: &mut State) {
    if let Some(id) = waiter.take() {
        let was_front = state.queue.front().is_some_and(|w| w.id == id);
        state.queue.retain(|w| w.id != id);
        if was_front {
            state.wake_front();
        }
    }
}

impl Future for Reserve {
    type Output = Result<OwnedReservation, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_reserve(cx)
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        if self.waiter.is_some() {
            let mut state = self.budget.shared.lock();
            leave(&mut self.waiter, &mut state);
        }
    }
}

impl fmt::Debug for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserve")
            .field("cost", &self.cost)
            .field("waiting", &self.waiter.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> TokenBudget {
        TokenBudget::builder()
            .limit(Limit::requests_per_minute(1_000))
            .limit(Limit::tokens_per_minute(100_000))
            .safety_ratio(1.0)
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_locked_reservation_the_next_ones_take_the_credit() {
        let budget = budget();
        let cost = TokenCost::new(100, 0);
        let first = budget.try_reserve(&cost).unwrap();
        assert!(!first.charges.is_fast(), "the locked path draws the chunks");
        let second = budget.try_reserve(&cost).unwrap();
        assert!(second.charges.is_fast());
        let third = budget.reserve(cost).await.unwrap();
        assert!(third.charges.is_fast());
        // 31 requests per chunk: the 31st after the draw goes to the lock, which draws again.
        let more: Vec<_> = (0..29)
            .map(|_| budget.try_reserve(&cost).unwrap())
            .collect();
        assert!(more.iter().all(|r| r.charges.is_fast()));
        assert!(!budget.try_reserve(&cost).unwrap().charges.is_fast());
        assert!(budget.try_reserve(&cost).unwrap().charges.is_fast());
    }

    // The real clock on purpose (no sleep, nothing timed): two readings of it differ, so a
    // request whose reservation and dispatch read the clock apart would be restamped (under the
    // lock) as if it had waited.
    #[tokio::test]
    async fn a_request_through_the_layer_on_open_credit_takes_no_lock() {
        use tower::{Layer, ServiceExt};
        let budget = budget();
        let svc = crate::TokenBudgetLayer::new(budget.clone()).layer(tower::service_fn(
            |_req: http::Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            },
        ));
        let request = || {
            let mut request = http::Request::new(String::new());
            request.extensions_mut().insert(TokenCost::new(100, 0));
            request
        };
        // The first reservation is made under the lock and draws the credit.
        svc.clone().oneshot(request()).await.unwrap();
        let before = budget.shared.locks.load(Ordering::Relaxed);
        for _ in 0..3 {
            svc.clone().oneshot(request()).await.unwrap();
        }
        assert_eq!(budget.shared.locks.load(Ordering::Relaxed), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_heard_takes_the_lock_only_when_a_report_of_its_head_waits() {
        let budget = budget();
        let locks = || budget.shared.locks.load(Ordering::Relaxed);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        let before = locks();
        budget.response_heard(sent);
        assert_eq!(locks(), before, "no report at all: no lock");
        let report = QuotaReport::new(
            "openai",
            vec![gentlify_core::Quota::new(Dimension::Tokens)
                .with_limit(100_000)
                .with_remaining(50_000)
                .with_reset_after(Duration::from_secs(30))],
        );
        budget.report_quota(&report);
        let before = locks();
        budget.response_heard(sent);
        assert_eq!(locks(), before + 1, "a report of this instant is rebased");
        tokio::time::advance(Duration::from_millis(2)).await;
        let before = locks();
        budget.response_heard(sent);
        assert_eq!(
            locks(),
            before,
            "every report is older than the response's head (by more than HEARD_WITHIN): no lock"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_that_says_its_attempt_s_send_is_rebased_at_once_and_no_response_locks() {
        let budget = budget();
        let locks = || budget.shared.locks.load(Ordering::Relaxed);
        let sent = Instant::now();
        let _in_flight = budget.try_reserve(&TokenCost::new(1_000, 0)).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        let report = QuotaReport::new(
            "openai",
            vec![gentlify_core::Quota::new(Dimension::Tokens)
                .with_limit(100_000)
                .with_remaining(50_000)
                .with_reset_after(Duration::ZERO)],
        )
        .sent_at(sent);
        let before = locks();
        budget.report_quota(&report);
        assert_eq!(locks(), before + 1, "one lock, to hear the report");
        assert_eq!(
            budget.remaining(Dimension::Tokens),
            Some(50_000 + 166 - 1_000),
            "re-dated to its attempt's send (100 ms of refill at 100 000 a minute since): the \
             charge made then is replayed"
        );
        let before = locks();
        budget.response_heard(sent);
        assert_eq!(locks(), before, "nothing left to guess: no lock");
    }

    #[tokio::test(start_paused = true)]
    async fn no_chunk_is_drawn_near_the_limit_or_larger_than_a_chunk() {
        let budget = budget();
        let large = TokenCost::new(5_000, 0);
        let _a = budget.try_reserve(&large).unwrap();
        assert!(
            !budget.try_reserve(&large).unwrap().charges.is_fast(),
            "a request larger than a chunk (3 125 tokens) draws none"
        );
        let _b = budget.try_reserve(&TokenCost::new(65_000, 0)).unwrap();
        let small = TokenCost::new(10, 0);
        let _c = budget.try_reserve(&small).unwrap();
        assert!(
            !budget.try_reserve(&small).unwrap().charges.is_fast(),
            "75 % of the tokens used: a chunk would leave less than a quarter of the capacity"
        );
    }
}
