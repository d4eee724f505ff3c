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
//! [`MAX_SERVER_DELAY`] (24 h) at most; each parser documents
//! its own, tighter, bound on resets.

use std::fmt;
use std::time::{Duration, SystemTime};

use gentlify_core::{seconds_f64, Dimension, Quota, QuotaReport, MAX_SERVER_DELAY};
use http::{HeaderMap, HeaderName, HeaderValue};

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
    parse_count_bytes(value.as_bytes())
}

/// [`parse_count`] on a header value's bytes, surrounding blanks trimmed: digits only (no sign:
/// a leading '+' is not what any server sends, and a strict reading is safer), fitting in `u64`.
fn parse_count_bytes(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    if digits.len() < 20 {
        // Up to 19 digits cannot overflow a u64: no checked arithmetic needed.
        return digits.iter().try_fold(0u64, |n, &b| {
            let digit = b.wrapping_sub(b'0');
            (digit <= 9).then(|| n * 10 + u64::from(digit))
        });
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A header value as trimmed text, or `None` when it is not visible ASCII.
fn text(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok().map(str::trim)
}

/// One quota's `limit`, `remaining` and reset, gathered from its headers in whatever order and
/// number they come, during a parser's single pass over the response's headers (one pass is
/// cheaper than a hash lookup per name: see `benches/per_response.rs`).
///
/// Duplicates are read conservatively, as everywhere in this crate: the smallest count, the
/// latest reset.
#[derive(Debug, Default, Clone, Copy)]
struct Fields {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_after: Option<Duration>,
}

/// Which of a quota's headers a value comes from.
#[derive(Debug, Clone, Copy)]
enum Field {
    Limit,
    Remaining,
    Reset,
}

impl Fields {
    /// Adds one header value; a reset is read by `parse_reset` from the trimmed text.
    fn read<'v>(
        &mut self,
        field: Field,
        value: &'v HeaderValue,
        parse_reset: impl FnOnce(&'v str) -> Option<Duration>,
    ) {
        match field {
            Field::Limit => smallest(&mut self.limit, parse_count_bytes(value.as_bytes())),
            Field::Remaining => smallest(&mut self.remaining, parse_count_bytes(value.as_bytes())),
            Field::Reset => {
                if let Some(reset) = text(value).and_then(parse_reset) {
                    self.reset_after = Some(self.reset_after.map_or(reset, |r| r.max(reset)));
                }
            }
        }
    }

    /// The quota, when at least one of its fields parsed.
    fn quota(self, dimension: Dimension) -> Option<Quota> {
        if self.limit.is_none() && self.remaining.is_none() && self.reset_after.is_none() {
            return None;
        }
        let mut quota = Quota::new(dimension);
        quota.limit = self.limit;
        quota.remaining = self.remaining;
        quota.reset_after = self.reset_after;
        Some(quota)
    }
}

fn smallest(slot: &mut Option<u64>, value: Option<u64>) {
    if let Some(value) = value {
        *slot = Some(slot.map_or(value, |s| s.min(value)));
    }
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
        assert_eq!(parse_count(" 7\t"), Some(7));
        assert_eq!(parse_count("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_count("18446744073709551616"), None);
        assert_eq!(parse_count("1 2"), None);
        assert_eq!(parse_count_bytes(b"\xff1"), None);
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

    /// The one-pass parsers against the reading they replaced: a hash lookup per header name,
    /// with the same conservative choices (smallest count, latest reset, first valid resource).
    mod same_as_lookups {
        use super::super::*;
        use proptest::prelude::*;

        const NAMES: &[&str] = &[
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            "x-ratelimit-reset-tokens_usage_based",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-used",
            "x-ratelimit-resource",
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-tokens-reset",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-reset",
            "anthropic-ratelimit-tokens",
            "content-type",
        ];

        const VALUES: &[&[u8]] = &[
            b"0",
            b"5",
            b" 17 ",
            b"-1",
            b"+5",
            b"",
            b"18446744073709551616",
            b"1.5s",
            b"6m0s",
            b"2m59.56s",
            b"12ms",
            b"1.2.3s",
            b"2025-08-21T12:40:59Z",
            b"2025-08-21T12:40:30.5+00:00",
            b"1755780059",
            b"1755780059000",
            b"30",
            b"core",
            b"\xff7",
        ];

        fn lookup_quota(
            headers: &HeaderMap,
            dimension: Dimension,
            [limit, remaining, reset]: [&str; 3],
            parse: impl Fn(&str) -> Option<Duration>,
        ) -> Option<Quota> {
            let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).unwrap();
            let limit = count(headers, &name(limit));
            let remaining = count(headers, &name(remaining));
            let reset_after = latest_delay(headers, &name(reset), parse);
            if limit.is_none() && remaining.is_none() && reset_after.is_none() {
                return None;
            }
            let mut quota = Quota::new(dimension);
            quota.limit = limit;
            quota.remaining = remaining;
            quota.reset_after = reset_after;
            Some(quota)
        }

        fn lookup_openai(headers: &HeaderMap) -> Vec<Quota> {
            [
                (Dimension::Requests, "requests"),
                (Dimension::Tokens, "tokens"),
            ]
            .into_iter()
            .filter_map(|(dimension, suffix)| {
                let names =
                    ["limit", "remaining", "reset"].map(|f| format!("x-ratelimit-{f}-{suffix}"));
                lookup_quota(
                    headers,
                    dimension,
                    names.each_ref().map(|n| n.as_str()),
                    parse_go_duration,
                )
            })
            .collect()
        }

        fn lookup_anthropic(headers: &HeaderMap, now: SystemTime) -> Vec<Quota> {
            let max = Duration::from_secs(60);
            [
                (Dimension::Requests, "requests"),
                (Dimension::Tokens, "tokens"),
                (Dimension::InputTokens, "input-tokens"),
                (Dimension::OutputTokens, "output-tokens"),
            ]
            .into_iter()
            .filter_map(|(dimension, prefix)| {
                let names = ["limit", "remaining", "reset"]
                    .map(|f| format!("anthropic-ratelimit-{prefix}-{f}"));
                lookup_quota(
                    headers,
                    dimension,
                    names.each_ref().map(|n| n.as_str()),
                    |v| {
                        let at = time::OffsetDateTime::parse(
                            v,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()?;
                        let at = SystemTime::UNIX_EPOCH
                            .checked_add(Duration::from_secs(
                                u64::try_from(at.unix_timestamp()).ok()?,
                            ))?
                            .checked_add(Duration::from_nanos(at.nanosecond().into()))?;
                        Some(until(at, now, max))
                    },
                )
            })
            .collect()
        }

        fn lookup_github(headers: &HeaderMap, now: SystemTime) -> Vec<Quota> {
            let parser = GitHubHeaders::new();
            let name = HeaderName::from_static;
            let limit = count(headers, &name("x-ratelimit-limit"));
            let used = count(headers, &name("x-ratelimit-used"));
            let remaining = count(headers, &name("x-ratelimit-remaining"))
                .or_else(|| Some(limit?.saturating_sub(used?)));
            let reset_after = latest_delay(headers, &name("x-ratelimit-reset"), |v| {
                // The parser's own reading of a reset value, through its public parse.
                let mut one = HeaderMap::new();
                one.insert("x-ratelimit-reset", v.parse().ok()?);
                parser.parse(&one, now)?.quotas[0].reset_after
            });
            if limit.is_none() && remaining.is_none() && reset_after.is_none() {
                return Vec::new();
            }
            let mut quota = Quota::new(Dimension::Requests);
            quota.limit = limit;
            quota.remaining = remaining;
            quota.reset_after = reset_after;
            quota.name = values(headers, &name("x-ratelimit-resource"))
                .find(|r| !r.is_empty() && r.len() <= 64)
                .map(Into::into);
            vec![quota]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn one_pass_reads_what_lookups_read(
                fields in proptest::collection::vec(
                    (proptest::sample::select(NAMES), proptest::sample::select(VALUES)),
                    0..10,
                ),
            ) {
                let mut headers = HeaderMap::new();
                for (name, value) in fields {
                    headers.append(
                        HeaderName::from_static(name),
                        HeaderValue::from_bytes(value).unwrap(),
                    );
                }
                let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_755_780_000);
                let quotas = |r: Option<QuotaReport>| r.map(|r| r.quotas).unwrap_or_default();
                prop_assert_eq!(quotas(OpenAiHeaders::new().parse(&headers, now)), lookup_openai(&headers));
                prop_assert_eq!(quotas(AnthropicHeaders::new().parse(&headers, now)), lookup_anthropic(&headers, now));
                prop_assert_eq!(quotas(GitHubHeaders::new().parse(&headers, now)), lookup_github(&headers, now));
            }
        }
    }
}
