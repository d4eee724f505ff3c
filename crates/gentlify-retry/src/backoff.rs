//! How long to wait before a retry when the server did not say.

use std::time::Duration;

/// How the wait before a retry is spread around the exponential curve.
///
/// The formulas are those of Marc Brooker's "Exponential Backoff And Jitter" (AWS Architecture
/// Blog, 2015), with `exp = min(max, base × multiplierⁿ)` for the n-th retry (n from 0). The cap is
/// applied **before** the jitter, so clients that all reached the cap still spread out over
/// `[0, max]` instead of retrying in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, exp]`: the least total work for the server (the default).
    #[default]
    Full,
    /// `exp / 2` plus uniform in `[0, exp / 2]`: never retries at once.
    Equal,
    /// Uniform in `[base, 3 × previous]`, capped at `max` (AWS's "decorrelated jitter"); the
    /// multiplier is not used.
    Decorrelated,
    /// Exactly `exp`: no spreading. For tests and single clients only.
    None,
}

/// The backoff curve: a base delay grown by a multiplier per retry, capped, then jittered.
///
/// The default (500 ms base, ×2, 8 s cap, full jitter) is the curve of the official OpenAI and
/// Anthropic SDKs (`INITIAL_RETRY_DELAY = 0.5`, `MAX_RETRY_DELAY = 8.0`), with full jitter in place
/// of their ±25 %.
///
/// ```
/// use std::time::Duration;
/// use gentlify_retry::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
///     .jitter(Jitter::None);
/// assert_eq!(backoff.delay(0, Duration::ZERO), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3, Duration::ZERO), Duration::from_millis(800));
/// assert_eq!(backoff.delay(30, Duration::ZERO), Duration::from_secs(2), "capped");
///
/// let full = backoff.jitter(Jitter::Full);
/// assert!(full.delay(30, Duration::ZERO) <= Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(500), Duration::from_secs(8))
    }
}

impl Backoff {
    /// Exponential backoff from `base`, doubling per retry, capped at `max`, with full jitter.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }

    /// The same delay before every retry, without jitter.
    pub fn constant(delay: Duration) -> Self {
        Backoff {
            base: delay,
            max: delay,
            multiplier: 1.0,
            jitter: Jitter::None,
        }
    }

    /// The curve with another jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The curve with another growth factor per retry (2 by default; at least 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `retry` (0 for the first retry); `previous` is the delay
    /// slept before the previous retry (used by [`Jitter::Decorrelated`], `ZERO` at first).
    pub fn delay(&self, retry: u32, previous: Duration) -> Duration {
        let capped = self.capped(retry);
        match self.jitter {
            Jitter::Full => capped.mul_f64(fastrand::f64()),
            Jitter::Equal => capped / 2 + (capped / 2).mul_f64(fastrand::f64()),
            Jitter::Decorrelated => {
                let low = self.base.as_secs_f64();
                let high = (previous.max(self.base).as_secs_f64() * 3.0).max(low);
                let secs = low + (high - low) * fastrand::f64();
                Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
            }
            Jitter::None => capped,
        }
    }

    /// `min(max, base × multiplier^retry)`, without overflow.
    fn capped(&self, retry: u32) -> Duration {
        let exp = i32::try_from(retry).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}
