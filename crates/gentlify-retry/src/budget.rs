//! The retry budget: retries as a share of first attempts, so failures cannot multiply load.

use std::fmt;
use std::time::Duration;

use tower::retry::budget::{Budget as _, TpsBudget};

use crate::error::ConfigError;

/// A budget of retries, shared by every request that draws on it: each first attempt deposits a
/// fraction of a retry, each retry withdraws one; a small reserve per second lets a client that
/// sends little still retry. When the budget is spent, the last response or error goes back to
/// the caller instead of a retry.
///
/// This is tower's [`TpsBudget`] (a port of Finagle's `RetryBudget`; gRPC's retry throttling
/// pursues the same aim with a token bucket), wrapped so that its limits are checked by a `Result` instead of panicking. The default
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
        self.inner.deposit()
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
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
