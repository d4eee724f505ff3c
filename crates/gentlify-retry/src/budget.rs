//! The retry budget: retries as a share of first attempts, so failures cannot multiply load.

use std::fmt;
use std::time::Duration;

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::error::ConfigError;

/// A budget of retries, shared by every request that draws on it: each first attempt deposits a
/// fraction of a retry, each retry withdraws one; a small reserve per second lets a client that
/// sends little still retry. When the budget is spent, the last response or error goes back to
/// the caller instead of a retry.
///
/// This is tower's `TpsBudget` (a port of Finagle's `RetryBudget`; gRPC's retry throttling
/// pursues the same aim with a token bucket), ported here with the same arithmetic so that its
/// limits are checked by a `Result` instead of panicking, and so that a deposit can take the
/// instant the stack has already read ([`deposit_at`](RetryBudget::deposit_at)) and take no lock
/// while the current window lasts: tower's reads the clock and takes a mutex on every deposit,
/// once per request. The default
/// is Finagle's: deposits live 10 s, `retry_ratio` 0.2 (one retry per five requests), and a reserve
/// of 10 retries per second over that window. A burst of `n` failing requests thus produces at most
/// about `0.2 × n + 10 × 10` retries.
///
/// By default a [`RetryLayer`](crate::RetryLayer) uses the budget stored in its [`Feedback`]
/// handle ([`Feedback::shared`]), so every stack built on one handle shares one budget.
///
/// [`Feedback`]: gentlify_core::Feedback
/// [`Feedback::shared`]: gentlify_core::Feedback::shared
///
/// ```
/// use std::time::Duration;
/// use gentlify_retry::RetryBudget;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.withdraw(), "two requests pay for one retry at a ratio of 0.5");
/// assert!(!budget.withdraw());
/// assert!(RetryBudget::new(Duration::from_secs(0), 10, 0.2).is_err());
/// ```
pub struct RetryBudget {
    inner: TpsBudget,
    ttl: Duration,
    min_per_sec: u32,
    retry_ratio: f32,
}

impl RetryBudget {
    /// A budget whose deposits live `ttl` (1 to 60 s), allowing `retry_ratio` retries per request
    /// (0 to 1000) plus `min_per_sec` retries per second regardless.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_ratio: f32) -> Result<Self, ConfigError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::BudgetTtl(ttl));
        }
        if !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(ConfigError::BudgetRatio(retry_ratio));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::BudgetReserve(min_per_sec));
        }
        Ok(RetryBudget {
            inner: TpsBudget::new(ttl, min_per_sec, retry_ratio),
            ttl,
            min_per_sec,
            retry_ratio,
        })
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.inner.deposit(Instant::now())
    }

    /// Records a first attempt sent at `now`, an instant the caller has just read from the clock
    /// (tokio's, which a paused test runtime drives): the same as [`deposit`](Self::deposit)
    /// without reading the clock again, and without a lock unless a window of the budget has
    /// passed since the last deposit or withdrawal.
    pub fn deposit_at(&self, now: Instant) {
        self.inner.deposit(now)
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw(Instant::now())
    }

    /// How long a deposit counts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Retries allowed per second regardless of deposits.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// Retries allowed per first attempt.
    pub fn retry_ratio(&self) -> f32 {
        self.retry_ratio
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            inner: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.ttl)
            .field("min_per_sec", &self.min_per_sec)
            .field("retry_ratio", &self.retry_ratio)
            .field("inner", &self.inner)
            .finish()
    }
}

/// The budget's state: tower 0.5's `TpsBudget`, whose arithmetic it keeps (ten windows of
/// `ttl / 10`, a running count for the current window, a reserve of `min_per_sec × ttl`
/// retries), with the end of the current window kept in an atomic so that a deposit checks it
/// without the lock.
struct TpsBudget {
    generation: Mutex<Generation>,
    /// When the current window ends, in nanoseconds since `base`: an instant at or past it
    /// expires the window (under the lock) before counting.
    window_end: AtomicU64,
    base: Instant,
    reserve: isize,
    slots: Box<[AtomicIsize]>,
    window: Duration,
    writer: AtomicIsize,
    deposit_amount: isize,
    withdraw_amount: isize,
}

#[derive(Debug)]
struct Generation {
    index: usize,
    time: Instant,
}

const WINDOWS: usize = 10;

impl TpsBudget {
    /// Arguments checked by [`RetryBudget::new`].
    fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let (deposit_amount, withdraw_amount) = if retry_percent == 0.0 {
            // Nothing is gained from deposits: withdrawals draw on the reserve only.
            (0, 1)
        } else if retry_percent <= 1.0 {
            (1, (1.0 / retry_percent) as isize)
        } else {
            // `retry_percent` retries per deposit, in thousandths.
            (1000, (1000.0 / retry_percent) as isize)
        };
        let reserve = (min_per_sec as isize)
            .saturating_mul(ttl.as_secs() as isize)
            .saturating_mul(withdraw_amount);
        let window = ttl / WINDOWS as u32;
        let now = Instant::now();
        TpsBudget {
            generation: Mutex::new(Generation {
                index: 0,
                time: now,
            }),
            window_end: AtomicU64::new(nanos(window)),
            base: now,
            reserve,
            slots: (0..WINDOWS).map(|_| AtomicIsize::new(0)).collect(),
            window,
            writer: AtomicIsize::new(0),
            deposit_amount,
            withdraw_amount,
        }
    }

    /// Moves the running count into its window and clears the windows that have passed, when the
    /// current window has ended by `now`.
    fn expire(&self, now: Instant) {
        let since_base = nanos(now.saturating_duration_since(self.base));
        if since_base < self.window_end.load(Ordering::Acquire) {
            return;
        }
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let diff = now.saturating_duration_since(generation.time);
        if diff < self.window {
            // Another thread expired it first.
            return;
        }
        let to_commit = self.writer.swap(0, Ordering::SeqCst);
        self.slots[generation.index].store(to_commit, Ordering::SeqCst);
        let mut diff = diff;
        let mut index = (generation.index + 1) % self.slots.len();
        while diff > self.window {
            self.slots[index].store(0, Ordering::SeqCst);
            diff -= self.window;
            index = (index + 1) % self.slots.len();
        }
        generation.index = index;
        generation.time = now;
        let end =
            nanos(now.saturating_duration_since(self.base)).saturating_add(nanos(self.window));
        self.window_end.store(end, Ordering::Release);
    }

    fn sum(&self) -> isize {
        let windowed = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::SeqCst))
            .fold(0, isize::saturating_add);
        self.writer
            .load(Ordering::SeqCst)
            .saturating_add(windowed)
            .saturating_add(self.reserve)
    }

    fn deposit(&self, now: Instant) {
        self.expire(now);
        self.writer.fetch_add(self.deposit_amount, Ordering::SeqCst);
    }

    fn withdraw(&self, now: Instant) -> bool {
        self.expire(now);
        if self.sum() >= self.withdraw_amount {
            self.writer
                .fetch_add(-self.withdraw_amount, Ordering::SeqCst);
            true
        } else {
            false
        }
    }
}

impl fmt::Debug for TpsBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("deposit", &self.deposit_amount)
            .field("withdraw", &self.withdraw_amount)
            .field("balance", &self.sum())
            .finish()
    }
}

/// A duration in nanoseconds, saturating (584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
