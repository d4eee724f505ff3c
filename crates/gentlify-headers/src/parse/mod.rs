//! Parsers for the rate-limit headers of each provider family, and the [`ParseHeaders`] trait
//! to write one of your own.
//!
//! Every parser recognises its own family by the exact header names it reads, so running all of
//! them on every response (what [`HeaderFeedbackLayer`](crate::HeaderFeedbackLayer) does by
//! default) never mistakes one family for another: a response without any of a parser's headers
//! yields `None` from it.
//!
//! Every parser is total: any header value (empty, negative, `NaN`, 40 digits, non-UTF-8 bytes,
//! a date in the year 9999, the header sent twice) gives either a sensible reading or nothing,
//! never a panic and never a `Duration` overflow. Durations are clamped to
//! [`MAX_SERVER_DELAY`](gentlify_core::MAX_SERVER_DELAY) (24 h) at most; each parser documents
//! its own, tighter, bound on resets.

use std::fmt;
use std::time::{Duration, SystemTime};

use gentlify_core::{seconds_f64, QuotaReport, MAX_SERVER_DELAY};
use http::{HeaderMap, HeaderName};

mod anthropic;
mod delay;
mod github;
mod ietf;
mod openai;

pub use anthropic::AnthropicHeaders;
pub use delay::{DelaySource, ServerDelay};
pub use github::GitHubHeaders;
pub use ietf::IetfHeaders;
pub use openai::{parse_go_duration, OpenAiHeaders};

/// Reads one family of rate-limit headers into a [`QuotaReport`].
///
/// `now` is the wall-clock time the response was received: parsers turn absolute resets
/// (Anthropic's RFC 3339 times, GitHub's epoch seconds) into delays from it, so tests can fix it.
/// Return `None` when the headers hold nothing of your family; a report's
/// [`observed_at`](QuotaReport::observed_at) is overwritten by the layer with the instant the
/// response arrived.
///
/// The trait is object safe: the layer keeps its parsers as `Arc<dyn ParseHeaders>`.
///
/// ```
/// use std::time::SystemTime;
/// use gentlify_core::{Dimension, Quota, QuotaReport};
/// use gentlify_headers::ParseHeaders;
///
/// /// A home-made API that sends `x-credits-left: 17`.
/// #[derive(Debug)]
/// struct Credits;
///
/// impl ParseHeaders for Credits {
///     fn name(&self) -> &'static str {
///         "credits"
///     }
///     fn parse(&self, headers: &http::HeaderMap, _now: SystemTime) -> Option<QuotaReport> {
///         let left = headers.get("x-credits-left")?.to_str().ok()?.trim().parse().ok()?;
///         let quota = Quota::new(Dimension::Requests).with_remaining(left);
///         Some(QuotaReport::new(self.name(), vec![quota]))
///     }
/// }
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-credits-left", "17".parse().unwrap());
/// let report = Credits.parse(&headers, SystemTime::now()).unwrap();
/// assert_eq!(report.quotas[0].remaining, Some(17));
/// assert!(Credits.parse(&http::HeaderMap::new(), SystemTime::now()).is_none());
/// ```
pub trait ParseHeaders: Send + Sync + 'static {
    /// The family's name, used as the report's [`source`](QuotaReport::source) and in the
    /// snapshot (`"openai"`, `"anthropic"`, ...).
    fn name(&self) -> &'static str;

    /// Reads `headers`; `None` when none of this family's headers is there (or none parses).
    fn parse(&self, headers: &HeaderMap, now: SystemTime) -> Option<QuotaReport>;
}

impl fmt::Debug for dyn ParseHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParseHeaders({})", self.name())
    }
}

/// Every built-in quota parser, each with its defaults: OpenAI-style `x-ratelimit-*-requests`
/// (also Azure OpenAI and Groq), Anthropic, IETF `RateLimit`, GitHub-style `x-ratelimit-*`.
/// What [`HeaderFeedbackLayer::new`](crate::HeaderFeedbackLayer::new) runs.
pub fn default_parsers() -> Vec<std::sync::Arc<dyn ParseHeaders>> {
    vec![
        std::sync::Arc::new(OpenAiHeaders::new()),
        std::sync::Arc::new(AnthropicHeaders::new()),
        std::sync::Arc::new(IetfHeaders::new()),
        std::sync::Arc::new(GitHubHeaders::new()),
    ]
}

/// The UTF-8 values of header `name`, in order; values that are not visible ASCII are skipped.
fn values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
}

/// A count (`limit`, `remaining`, `used`): a non-negative integer that fits in `u64`. Negative
/// values mean "unknown" (Azure OpenAI sends `-1`), anything else unparsable is ignored. When the
/// header is sent more than once, the smallest valid value wins: the conservative reading of a
/// remaining quota.
fn count(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    values(headers, name).filter_map(parse_count).min()
}

fn parse_count(value: &str) -> Option<u64> {
    // Reject a leading '+' too: it is not what any server sends, and a strict reading is safer.
    if !value.bytes().next()?.is_ascii_digit() {
        return None;
    }
    value.parse().ok()
}

/// The latest of a header's valid delays (the conservative reading of duplicates).
fn latest_delay(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: impl Fn(&str) -> Option<Duration>,
) -> Option<Duration> {
    values(headers, name).filter_map(parse).max()
}

/// Delay from `now` until the absolute time `at`: zero for a time in the past, at most `max`.
fn until(at: SystemTime, now: SystemTime, max: Duration) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO).min(max)
}

/// Whole or fractional seconds (`7`, `1.5`) as a delay, through core's clamping
/// [`seconds_f64`]; signs, exponents, `inf` and `NaN` are refused by the character check.
fn parse_seconds(value: &str) -> Option<Duration> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    seconds_f64(value.parse().ok()?)
}

/// A bound on resets, clamped itself to core's [`MAX_SERVER_DELAY`].
fn bound(max: Duration) -> Duration {
    max.min(MAX_SERVER_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_non_negative_integers_only() {
        assert_eq!(parse_count("59"), Some(59));
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count("+5"), None);
        assert_eq!(parse_count("1.5"), None);
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("99999999999999999999999"), None);
        assert_eq!(parse_count("NaN"), None);
    }

    #[test]
    fn seconds_refuse_signs_and_specials() {
        assert_eq!(parse_seconds("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("inf"), None);
        assert_eq!(parse_seconds("1e3"), None);
        assert_eq!(parse_seconds("."), None);
        assert_eq!(parse_seconds("99999999999"), Some(MAX_SERVER_DELAY));
        assert_eq!(
            parse_seconds("1".repeat(400).as_str()),
            None,
            "beyond f64: absurd"
        );
    }
}
