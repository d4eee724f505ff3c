//! Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.

use std::time::{Duration, SystemTime};

use gentlify_core::{Dimension, Quota, QuotaReport};
use http::HeaderMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{bound, until, Field, Fields, ParseHeaders};

/// The dimensions in the order the report lists them.
const DIMENSIONS: [Dimension; 4] = [
    Dimension::Requests,
    Dimension::Tokens,
    Dimension::InputTokens,
    Dimension::OutputTokens,
];

/// Anthropic's limits are per minute (requests, input tokens and output tokens per minute, a
/// token bucket refilled continuously), so a reset further away than a minute is the two clocks
/// disagreeing, not the server's intent.
const DEFAULT_MAX_RESET: Duration = Duration::from_secs(60);

/// Anthropic's headers, with input and output tokens counted apart:
///
/// ```text
/// anthropic-ratelimit-requests-limit: 1000
/// anthropic-ratelimit-requests-remaining: 999
/// anthropic-ratelimit-requests-reset: 2025-08-21T12:40:59Z
/// anthropic-ratelimit-input-tokens-limit: 80000
/// anthropic-ratelimit-input-tokens-remaining: 80000
/// anthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:59Z
/// ...
/// ```
///
/// One [`Quota`] per family present: [`Dimension::Requests`], [`Dimension::Tokens`],
/// [`Dimension::InputTokens`], [`Dimension::OutputTokens`].
///
/// Resets are absolute RFC 3339 times, turned into a delay from the `now` given to
/// [`parse`](ParseHeaders::parse): `max(0, reset - now)`, then bounded by
/// [`max_reset`](AnthropicHeaders::max_reset) (60 s by default). The bound is what keeps clock
/// skew in check: a client clock running behind would otherwise see every reset minutes or hours
/// away and wait that long, while Anthropic's limits are per minute; a clock running ahead sees
/// resets in the past, read as "now" (zero). Times that are not RFC 3339, or out of `time`'s range,
/// are ignored.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use gentlify_core::Dimension;
/// use gentlify_headers::{AnthropicHeaders, ParseHeaders};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("anthropic-ratelimit-output-tokens-remaining", "0".parse().unwrap());
/// headers.insert("anthropic-ratelimit-output-tokens-reset", "2025-08-21T12:41:00Z".parse().unwrap());
/// // The response arrived at 12:40:58.5.
/// let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_755_780_058_500);
/// let report = AnthropicHeaders::new().parse(&headers, now).unwrap();
/// assert_eq!(report.quotas[0].dimension, Dimension::OutputTokens);
/// assert_eq!(report.quotas[0].reset_after, Some(Duration::from_millis(1500)));
/// ```
#[derive(Debug, Clone)]
pub struct AnthropicHeaders {
    max_reset: Duration,
}

impl Default for AnthropicHeaders {
    fn default() -> Self {
        AnthropicHeaders::new()
    }
}

impl AnthropicHeaders {
    /// The reading with a 60 s bound on resets.
    pub fn new() -> Self {
        AnthropicHeaders {
            max_reset: DEFAULT_MAX_RESET,
        }
    }

    /// Bounds every reset to `max_reset` (itself at most
    /// [`MAX_SERVER_DELAY`](gentlify_core::MAX_SERVER_DELAY)): the largest clock skew plus window
    /// you are willing to wait for.
    pub fn max_reset(mut self, max_reset: Duration) -> Self {
        self.max_reset = bound(max_reset);
        self
    }
}

impl ParseHeaders for AnthropicHeaders {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn parse(&self, headers: &HeaderMap, now: SystemTime) -> Option<QuotaReport> {
        let mut fields = [Fields::default(); 4];
        let mut resets: [Option<(&str, Option<Duration>)>; 4] = [None; 4];
        // One pass over the headers, in the order of `DIMENSIONS`.
        for (name, value) in headers {
            let Some(rest) = name.as_str().strip_prefix("anthropic-ratelimit-") else {
                continue;
            };
            let (dimension, field) = match rest {
                "requests-limit" => (0, Field::Limit),
                "requests-remaining" => (0, Field::Remaining),
                "requests-reset" => (0, Field::Reset),
                "tokens-limit" => (1, Field::Limit),
                "tokens-remaining" => (1, Field::Remaining),
                "tokens-reset" => (1, Field::Reset),
                "input-tokens-limit" => (2, Field::Limit),
                "input-tokens-remaining" => (2, Field::Remaining),
                "input-tokens-reset" => (2, Field::Reset),
                "output-tokens-limit" => (3, Field::Limit),
                "output-tokens-remaining" => (3, Field::Remaining),
                "output-tokens-reset" => (3, Field::Reset),
                _ => continue,
            };
            // Anthropic sends one reset time for most dimensions: each distinct one is parsed
            // once.
            fields[dimension].read(field, value, |v| {
                if let Some((_, reset)) = resets.iter().flatten().find(|(text, _)| *text == v) {
                    return *reset;
                }
                let reset = parse_rfc3339(v).map(|at| until(at, now, self.max_reset));
                resets[dimension] = Some((v, reset));
                reset
            });
        }
        let quotas: Vec<Quota> = DIMENSIONS
            .into_iter()
            .zip(fields)
            .filter_map(|(dimension, fields)| fields.quota(dimension))
            .collect();
        (!quotas.is_empty()).then(|| QuotaReport::new(self.name(), quotas))
    }
}

/// An RFC 3339 time as a `SystemTime`, or `None` when malformed or not representable.
fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let at = OffsetDateTime::parse(value, &Rfc3339).ok()?;
    // Seconds and nanoseconds apart: the nanoseconds since the epoch of year 9999 overflow u64.
    let secs = at.unix_timestamp();
    let since_epoch = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH
            .checked_add(since_epoch)?
            .checked_add(Duration::from_nanos(at.nanosecond().into()))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(since_epoch)?
            .checked_add(Duration::from_nanos(at.nanosecond().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_rfc3339("2025-08-21T12:40:59Z"),
            Some(epoch + Duration::from_secs(1_755_780_059))
        );
        assert_eq!(
            parse_rfc3339("2025-08-21T14:40:59.250+02:00"),
            Some(epoch + Duration::from_millis(1_755_780_059_250))
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            epoch.checked_sub(Duration::from_secs(1))
        );
        for bad in [
            "",
            "2025-08-21",
            "2025-13-01T00:00:00Z",
            "9999999-01-01T00:00:00Z",
            "now",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
