//! GitHub and other unsuffixed `x-ratelimit-limit` / `-remaining` / `-reset` / `-used` /
//! `-resource` headers.

use std::time::{Duration, SystemTime};

use gentlify_core::{Dimension, QuotaReport};
use http::HeaderMap;

use super::{
    bound, parse_count, parse_count_bytes, smallest, text, until, Field, Fields, ParseHeaders,
};

/// GitHub's primary limits are per hour (its REST API documentation): a reset further away than
/// that is clock skew or nonsense.
const DEFAULT_MAX_RESET: Duration = Duration::from_secs(60 * 60);

/// An epoch in seconds is at least this (2001-09-09): smaller resets are delta seconds.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;
/// An epoch in milliseconds is at least this (same instant): OpenRouter sends those.
const EPOCH_MILLIS_FROM: u64 = 1_000_000_000_000;

/// GitHub's headers (and those of the many APIs that copied them):
///
/// ```text
/// x-ratelimit-limit: 5000
/// x-ratelimit-remaining: 4990
/// x-ratelimit-used: 10
/// x-ratelimit-reset: 1700000000
/// x-ratelimit-resource: core
/// ```
///
/// One [`Dimension::Requests`] [`Quota`](gentlify_core::Quota), named after `x-ratelimit-resource` when present. When
/// `remaining` is missing but `limit` and `used` are there, remaining = limit − used (saturating).
/// These are the *unsuffixed* names: OpenAI's `x-ratelimit-limit-requests` and its kin are read
/// by [`OpenAiHeaders`](crate::OpenAiHeaders), not here.
///
/// `x-ratelimit-reset` is read by size, because the APIs that send this family disagree on it:
/// at least 10¹² is epoch milliseconds (OpenRouter), at least 10⁹ epoch seconds (GitHub), anything
/// smaller delta seconds. Absolute resets become a delay from the `now` given to
/// [`parse`](ParseHeaders::parse) (zero when in the past); every reset is then bounded by
/// [`max_reset`](GitHubHeaders::max_reset), one hour by default (GitHub's window), which also
/// bounds the effect of clock skew.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use gentlify_headers::{GitHubHeaders, ParseHeaders};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset", "1700000000".parse().unwrap());
/// headers.insert("x-ratelimit-resource", "core".parse().unwrap());
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_999_990);
/// let report = GitHubHeaders::new().parse(&headers, now).unwrap();
/// assert_eq!(report.quotas[0].reset_after, Some(Duration::from_secs(10)));
/// assert_eq!(report.quotas[0].name.as_deref(), Some("core"));
/// ```
#[derive(Debug, Clone)]
pub struct GitHubHeaders {
    max_reset: Duration,
}

impl Default for GitHubHeaders {
    fn default() -> Self {
        GitHubHeaders::new()
    }
}

impl GitHubHeaders {
    /// The reading with a one-hour bound on resets.
    pub fn new() -> Self {
        GitHubHeaders {
            max_reset: DEFAULT_MAX_RESET,
        }
    }

    /// Bounds every reset to `max_reset` (itself at most
    /// [`MAX_SERVER_DELAY`](gentlify_core::MAX_SERVER_DELAY)).
    pub fn max_reset(mut self, max_reset: Duration) -> Self {
        self.max_reset = bound(max_reset);
        self
    }

    fn reset(&self, value: &str, now: SystemTime) -> Option<Duration> {
        let n = parse_count(value)?;
        let at = if n >= EPOCH_MILLIS_FROM {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(n))?
        } else if n >= EPOCH_SECONDS_FROM {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(n))?
        } else {
            return Some(Duration::from_secs(n).min(self.max_reset));
        };
        Some(until(at, now, self.max_reset))
    }
}

impl ParseHeaders for GitHubHeaders {
    fn name(&self) -> &'static str {
        "github"
    }

    fn parse(&self, headers: &HeaderMap, now: SystemTime) -> Option<QuotaReport> {
        let mut fields = Fields::default();
        let mut used = None;
        let mut resource = None;
        // One pass over the headers, reading only the exact, unsuffixed names.
        for (name, value) in headers {
            let Some(field) = name.as_str().strip_prefix("x-ratelimit-") else {
                continue;
            };
            match field {
                "limit" => fields.read(Field::Limit, value, |_| None),
                "remaining" => fields.read(Field::Remaining, value, |_| None),
                "reset" => fields.read(Field::Reset, value, |v| self.reset(v, now)),
                "used" => smallest(&mut used, parse_count_bytes(value.as_bytes())),
                // A resource name is a short token ("core", "search", "graphql"); anything
                // longer is not worth keeping in every report. The first valid one counts.
                "resource" if resource.is_none() => {
                    resource = text(value).filter(|r| !r.is_empty() && r.len() <= 64);
                }
                _ => {}
            }
        }
        if fields.remaining.is_none() {
            fields.remaining = fields
                .limit
                .zip(used)
                .map(|(limit, used)| limit.saturating_sub(used));
        }
        let mut quota = fields.quota(Dimension::Requests)?;
        quota.name = resource.map(Into::into);
        Some(QuotaReport::new(self.name(), vec![quota]))
    }
}
