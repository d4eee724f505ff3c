//! OpenAI, Azure OpenAI and Groq: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.

use std::time::{Duration, SystemTime};

use gentlify_core::{seconds_f64, Dimension, Quota, QuotaReport};
use http::{HeaderMap, HeaderName};

use super::{count, latest_delay, parse_seconds, ParseHeaders};

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Groq's request headers count per day, its token headers per minute (Groq's documentation).
const GROQ_REQUESTS_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
const GROQ_TOKENS_WINDOW: Duration = Duration::from_secs(60);

/// The OpenAI-style headers, also sent by Azure OpenAI and Groq:
///
/// ```text
/// x-ratelimit-limit-requests: 60
/// x-ratelimit-limit-tokens: 150000
/// x-ratelimit-remaining-requests: 59
/// x-ratelimit-remaining-tokens: 149984
/// x-ratelimit-reset-requests: 1s
/// x-ratelimit-reset-tokens: 6m0s
/// ```
///
/// One [`Quota`] for [`Dimension::Requests`] and one for [`Dimension::Tokens`], each present when
/// at least one of its three headers parses.
///
/// - Resets are Go durations ([`parse_go_duration`]).
/// - Counts are non-negative integers; a negative one (Azure's `-1`) means unknown and is left
///   out. A header sent twice counts its smallest value (and its latest reset).
/// - Only the exact names above are read: suffixed families that OpenAI sends beside them
///   (`x-ratelimit-limit-tokens_usage_based`, ...) are ignored, and so are GitHub's unsuffixed
///   `x-ratelimit-limit` / `-remaining` / `-reset` (read by
///   [`GitHubHeaders`](crate::GitHubHeaders)).
/// - The windows are not in the headers. [`OpenAiHeaders::groq`] fills them in for Groq, whose
///   request headers count per **day** and token headers per **minute**: the request quota gets
///   [`window`](Quota::window) = 24 h and the token quota 60 s. The automatic selection cannot tell
///   Groq from OpenAI by its headers and leaves `window` empty; select `groq()` yourself when
///   calling Groq.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use gentlify_core::Dimension;
/// use gentlify_headers::{OpenAiHeaders, ParseHeaders};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
/// let report = OpenAiHeaders::new().parse(&headers, SystemTime::now()).unwrap();
/// let tokens = &report.quotas[0];
/// assert_eq!(tokens.dimension, Dimension::Tokens);
/// assert_eq!(tokens.remaining, Some(149984));
/// assert_eq!(tokens.reset_after, Some(Duration::from_secs(360)));
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiHeaders {
    source: &'static str,
    requests_window: Option<Duration>,
    tokens_window: Option<Duration>,
}

impl Default for OpenAiHeaders {
    fn default() -> Self {
        OpenAiHeaders::new()
    }
}

impl OpenAiHeaders {
    /// OpenAI's reading; reports carry the source `"openai"`.
    pub fn new() -> Self {
        OpenAiHeaders {
            source: "openai",
            requests_window: None,
            tokens_window: None,
        }
    }

    /// Azure OpenAI's reading (the same headers); reports carry the source `"azure-openai"`.
    pub fn azure() -> Self {
        OpenAiHeaders {
            source: "azure-openai",
            ..OpenAiHeaders::new()
        }
    }

    /// Groq's reading: requests per day, tokens per minute; source `"groq"`.
    pub fn groq() -> Self {
        OpenAiHeaders {
            source: "groq",
            requests_window: Some(GROQ_REQUESTS_WINDOW),
            tokens_window: Some(GROQ_TOKENS_WINDOW),
        }
    }
}

impl ParseHeaders for OpenAiHeaders {
    fn name(&self) -> &'static str {
        self.source
    }

    fn parse(&self, headers: &HeaderMap, _now: SystemTime) -> Option<QuotaReport> {
        let families = [
            (
                Dimension::Requests,
                [&LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS],
                self.requests_window,
            ),
            (
                Dimension::Tokens,
                [&LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS],
                self.tokens_window,
            ),
        ];
        let quotas: Vec<Quota> = families
            .into_iter()
            .filter_map(|(dimension, [limit, remaining, reset], window)| {
                let limit = count(headers, limit);
                let remaining = count(headers, remaining);
                let reset_after = latest_delay(headers, reset, parse_go_duration);
                if limit.is_none() && remaining.is_none() && reset_after.is_none() {
                    return None;
                }
                let mut quota = Quota::new(dimension);
                quota.limit = limit;
                quota.remaining = remaining;
                quota.reset_after = reset_after;
                quota.window = window;
                Some(quota)
            })
            .collect();
        (!quotas.is_empty()).then(|| QuotaReport::new(self.source, quotas))
    }
}

/// Parses a Go duration as OpenAI sends its resets: `1s`, `6m0s`, `12ms`, `1.574s`, `2m59.56s`,
/// `1h2m`. Units `h`, `m`, `s`, `ms`, `us` / `µs`, `ns`, each number possibly fractional; a unit
/// is read whole, so `ms` is never taken for `m`. A bare number is read as seconds (lenient:
/// Go itself accepts only `0`). Negative durations mean unknown: `None`; so do unknown units,
/// empty strings and anything else malformed. Clamped to
/// [`MAX_SERVER_DELAY`](gentlify_core::MAX_SERVER_DELAY).
///
/// ```
/// use std::time::Duration;
/// use gentlify_headers::parse_go_duration;
///
/// assert_eq!(parse_go_duration("2m59.56s"), Some(Duration::from_millis(179_560)));
/// assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
/// assert_eq!(parse_go_duration("-1s"), None);
/// ```
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Some(seconds) = parse_seconds(value) {
        return Some(seconds);
    }
    let is_number = |b: u8| b.is_ascii_digit() || b == b'.';
    let mut rest = value.strip_prefix('+').unwrap_or(value);
    if rest.is_empty() {
        return None;
    }
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        // Both cuts fall on char boundaries: digits and '.' are ASCII, and no byte of a multi-byte
        // character is one of them.
        let digits = rest.bytes().take_while(|&b| is_number(b)).count();
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(|&b| !is_number(b)).count();
        let (unit, tail) = tail.split_at(unit_len);
        if number.is_empty() || number == "." {
            return None;
        }
        let number: f64 = number.parse().ok()?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        seconds += number * scale;
        rest = tail;
    }
    seconds_f64(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_of_the_reference_document() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_go_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_go_duration("12ms"), Some(ms(12)));
        assert_eq!(parse_go_duration("9ms"), Some(ms(9)));
        assert_eq!(parse_go_duration("1.574s"), Some(ms(1574)));
        assert_eq!(parse_go_duration("2m59.56s"), Some(ms(179_560)));
        assert_eq!(parse_go_duration("7.66s"), Some(ms(7660)));
    }

    #[test]
    fn go_durations_other_forms() {
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(
            parse_go_duration("1m500ms"),
            Some(Duration::from_millis(60_500))
        );
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_go_duration("1500us"),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            parse_go_duration("1500µs"),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(parse_go_duration("3"), Some(Duration::from_secs(3)));
    }

    #[test]
    fn go_durations_malformed_are_none() {
        for bad in [
            "", " ", "-1s", "-1", "s", "1x", "1.2.3s", ".s", "1e3s", "NaN", "infs", "1m-2s", "+",
            "1 s", "ms", "m1",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_durations_huge_are_clamped_or_ignored() {
        let max = gentlify_core::MAX_SERVER_DELAY;
        assert_eq!(parse_go_duration("99999999999h"), Some(max));
        let beyond_f64 = format!("{}h", "9".repeat(400));
        assert_eq!(parse_go_duration(&beyond_f64), None);
    }
}
