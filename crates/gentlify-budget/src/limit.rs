//! One quota: an amount of one dimension per window.

use std::fmt;
use std::time::Duration;

use gentlify_core::Dimension;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// One quota the budget enforces: `amount` of a [`Dimension`] per `window`, for example
/// 90 000 tokens per minute.
///
/// Providers publish their limits in exactly these terms (RPM, TPM, RPD, ITPM/OTPM for
/// Anthropic), so a limit is written as the provider states it; the budget applies its safety
/// ratio on top.
///
/// ```
/// use std::time::Duration;
/// use gentlify_budget::Limit;
/// use gentlify_core::Dimension;
///
/// let tpm = Limit::tokens_per_minute(90_000);
/// assert_eq!(tpm.dimension(), Dimension::Tokens);
/// assert_eq!(tpm.amount(), 90_000);
/// assert_eq!(tpm.window(), Duration::from_secs(60));
/// assert_eq!(Limit::new(Dimension::Requests, 10, Duration::from_secs(1)), Limit::requests_per_second(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    dimension: Dimension,
    amount: u64,
    window: Duration,
}

impl Limit {
    /// `amount` of `dimension` per `window`. Supported dimensions: [`Dimension::Requests`],
    /// [`Dimension::Tokens`], [`Dimension::InputTokens`], [`Dimension::OutputTokens`]; the
    /// budget's builder refuses the others, and a zero amount or window.
    pub fn new(dimension: Dimension, amount: u64, window: Duration) -> Self {
        Limit {
            dimension,
            amount,
            window,
        }
    }

    /// Requests per second.
    pub fn requests_per_second(amount: u64) -> Self {
        Limit::new(Dimension::Requests, amount, SECOND)
    }
    /// Requests per minute (RPM).
    pub fn requests_per_minute(amount: u64) -> Self {
        Limit::new(Dimension::Requests, amount, MINUTE)
    }
    /// Requests per day (RPD).
    pub fn requests_per_day(amount: u64) -> Self {
        Limit::new(Dimension::Requests, amount, DAY)
    }
    /// Tokens (input and output together) per minute (TPM).
    pub fn tokens_per_minute(amount: u64) -> Self {
        Limit::new(Dimension::Tokens, amount, MINUTE)
    }
    /// Tokens per day (TPD).
    pub fn tokens_per_day(amount: u64) -> Self {
        Limit::new(Dimension::Tokens, amount, DAY)
    }
    /// Input tokens per minute (Anthropic's ITPM).
    pub fn input_tokens_per_minute(amount: u64) -> Self {
        Limit::new(Dimension::InputTokens, amount, MINUTE)
    }
    /// Output tokens per minute (Anthropic's OTPM).
    pub fn output_tokens_per_minute(amount: u64) -> Self {
        Limit::new(Dimension::OutputTokens, amount, MINUTE)
    }

    /// What the limit counts.
    pub fn dimension(&self) -> Dimension {
        self.dimension
    }
    /// How much per window.
    pub fn amount(&self) -> u64 {
        self.amount
    }
    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} per {:?}",
            self.amount, self.dimension, self.window
        )
    }
}
