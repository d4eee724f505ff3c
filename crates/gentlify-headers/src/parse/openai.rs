//! OpenAI, Azure OpenAI and Groq: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.

use std::time::{Duration, SystemTime};

use gentlify_core::{seconds_f64, Dimension, QuotaReport, MAX_SERVER_DELAY};
use http::HeaderMap;

use super::{parse_seconds, Field, Fields, ParseHeaders};

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
/// One [`Quota`](gentlify_core::Quota) for [`Dimension::Requests`] and one for [`Dimension::Tokens`], each present when
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
///   [`window`](gentlify_core::Quota::window) = 24 h and the token quota 60 s. The automatic selection cannot tell
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
        let mut requests = Fields::default();
        let mut tokens = Fields::default();
        // One pass over the headers, reading only the exact names: `x-ratelimit-limit` (GitHub)
        // has no dimension, `x-ratelimit-limit-tokens_usage_based` a dimension of its own.
        for (name, value) in headers {
            let Some(rest) = name.as_str().strip_prefix("x-ratelimit-") else {
                continue;
            };
            let (fields, field) = match rest {
                "limit-requests" => (&mut requests, Field::Limit),
                "remaining-requests" => (&mut requests, Field::Remaining),
                "reset-requests" => (&mut requests, Field::Reset),
                "limit-tokens" => (&mut tokens, Field::Limit),
                "remaining-tokens" => (&mut tokens, Field::Remaining),
                "reset-tokens" => (&mut tokens, Field::Reset),
                _ => continue,
            };
            fields.read(field, value, parse_go_duration);
        }
        let requests = requests.quota(Dimension::Requests).map(|mut quota| {
            quota.window = self.requests_window;
            quota
        });
        let tokens = tokens.quota(Dimension::Tokens).map(|mut quota| {
            quota.window = self.tokens_window;
            quota
        });
        if requests.is_none() && tokens.is_none() {
            return None;
        }
        let quotas = requests.into_iter().chain(tokens).collect();
        Some(QuotaReport::new(self.source, quotas))
    }
}

/// Parses a Go duration as OpenAI sends its resets: `1s`, `6m0s`, `12ms`, `1.574s`, `2m59.56s`,
/// `1h2m`. Units `h`, `m`, `s`, `ms`, `us` / `µs`, `ns`, each number possibly fractional; a unit
/// is read whole, so `ms` is never taken for `m`. A bare number is read as seconds (lenient:
/// Go itself accepts only `0`). Negative durations mean unknown: `None`; so do unknown units,
/// empty strings and anything else malformed. Clamped to
/// [`MAX_SERVER_DELAY`].
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
    go_duration(value, true)
}

/// [`parse_go_duration`], with the exact path or (`exact: false`, for tests) the float path only.
fn go_duration(value: &str, exact: bool) -> Option<Duration> {
    let value = value.trim();
    if let Some(seconds) = parse_seconds(value) {
        return Some(seconds);
    }
    let rest = value.strip_prefix('+').unwrap_or(value);
    if rest.is_empty() {
        return None;
    }
    if !exact {
        return go_duration_f64(rest);
    }
    // Integers first: exact, and several times cheaper than parsing floats (what every reset
    // OpenAI sends takes). Numbers too long for it take the float path, which clamps what fits
    // in an `f64` and refuses the rest.
    match go_duration_nanos(rest) {
        Exact::Nanos(nanos) => Some(Duration::from_nanos(nanos)),
        Exact::Malformed => None,
        Exact::TooLong => go_duration_f64(rest),
    }
}

enum Exact {
    /// The duration, clamped to `MAX_SERVER_DELAY`.
    Nanos(u64),
    Malformed,
    /// A number with more integer digits than the exact path takes.
    TooLong,
}

/// What each unit is worth in nanoseconds, and how many decimal digits of a fraction of it are
/// at least a nanosecond (the power of ten in that worth); `None` for an unknown unit.
fn unit_nanos(unit: &str) -> Option<(u64, u32)> {
    Some(match unit {
        "h" => (3_600_000_000_000, 11),
        "m" => (60_000_000_000, 10),
        "s" => (1_000_000_000, 9),
        "ms" => (1_000_000, 6),
        "us" | "µs" | "μs" => (1_000, 3),
        "ns" => (1, 0),
        _ => return None,
    })
}

/// The exact reading, in one scan of the bytes, in `u64` nanoseconds: integer and fraction apart,
/// a fraction's digits below the nanosecond dropped, sums saturating (the result is clamped to
/// 24 h anyway).
fn go_duration_nanos(rest: &str) -> Exact {
    /// Digits a `u64` always holds.
    const MAX_DIGITS: u32 = 18;
    let bytes = rest.as_bytes();
    let digit = |i: usize| {
        bytes
            .get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| b - b'0')
    };
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut whole: u64 = 0;
        while let Some(d) = digit(i) {
            if i - start == MAX_DIGITS as usize {
                return Exact::TooLong;
            }
            whole = whole * 10 + u64::from(d);
            i += 1;
        }
        let integer_digits = i - start;
        // The fraction's first (up to 18) digits, as an integer, and how many they are.
        let (mut part, mut kept, mut fraction_digits) = (0u64, 0u32, 0usize);
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            while let Some(d) = digit(i) {
                if kept < MAX_DIGITS {
                    part = part * 10 + u64::from(d);
                    kept += 1;
                }
                fraction_digits += 1;
                i += 1;
            }
        }
        // No digit at all ("s", "."), or a second '.' ("1.2.3s"): no number.
        if integer_digits + fraction_digits == 0 || bytes.get(i) == Some(&b'.') {
            return Exact::Malformed;
        }
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        // Cuts on ASCII bytes fall on char boundaries.
        let Some((scale, zeros)) = unit_nanos(&rest[unit_start..i]) else {
            return Exact::Malformed;
        };
        let fraction = if kept == 0 {
            0
        } else {
            // Keep the digits worth at least a nanosecond: then `scale / 10^digits` is exact and
            // `part * (scale / 10^digits) < scale` fits.
            let digits = kept.min(zeros);
            let part = part / 10u64.pow(kept - digits);
            part * (scale / 10u64.pow(digits))
        };
        total = total
            .saturating_add(whole.saturating_mul(scale))
            .saturating_add(fraction);
    }
    // Nanoseconds of MAX_SERVER_DELAY (24 h) fit in a u64.
    let max = u64::try_from(MAX_SERVER_DELAY.as_nanos()).unwrap_or(u64::MAX);
    Exact::Nanos(total.min(max))
}

/// The float reading, for numbers too long for [`go_duration_nanos`].
fn go_duration_f64(mut rest: &str) -> Option<Duration> {
    let is_number = |b: &u8| b.is_ascii_digit() || *b == b'.';
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        // Both cuts fall on char boundaries: digits and '.' are ASCII, and no byte of a
        // multi-byte character is one of them.
        let digits = rest.bytes().take_while(is_number).count();
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(|b| !is_number(b)).count();
        let (unit, tail) = tail.split_at(unit_len);
        if number.is_empty() || number == "." {
            return None;
        }
        let number: f64 = number.parse().ok()?;
        let scale = unit_nanos(unit)?.0 as f64 * 1e-9;
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
        // Past the exact path's 18 integer digits, the float path still clamps.
        assert_eq!(
            parse_go_duration(&format!("{}ms", "9".repeat(25))),
            Some(max)
        );
        assert_eq!(parse_go_duration("1m99999999999999999h"), Some(max));
    }

    #[test]
    fn go_durations_are_exact_to_the_nanosecond() {
        assert_eq!(parse_go_duration("1.000000001s"), Some(Duration::new(1, 1)));
        assert_eq!(parse_go_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("5.s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("0.1h"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_go_duration("1.1234567891234ms"),
            Some(Duration::from_nanos(1_123_456))
        );
        assert_eq!(parse_go_duration("+1s"), Some(Duration::from_secs(1)));
    }

    proptest::proptest! {
        /// The exact path agrees with the float reading (to float precision) on every
        /// well-formed duration.
        #[test]
        fn exact_and_float_readings_agree(
            parts in proptest::collection::vec((0u64..100_000, 0u32..1000, 0usize..6), 1..4)
        ) {
            let units = ["h", "m", "s", "ms", "us", "ns"];
            let text: String = parts
                .iter()
                .map(|(whole, milli, unit)| format!("{whole}.{milli:03}{}", units[*unit]))
                .collect();
            let exact = parse_go_duration(&text).unwrap();
            let float = go_duration_f64(&text).unwrap();
            let diff = exact.abs_diff(float);
            proptest::prop_assert!(diff <= Duration::from_micros(1), "{text}: {exact:?} vs {float:?}");
        }

        /// On any string of duration characters, the reading is what the float-only reading
        /// (the one before the exact path) gave: the same refusals, the same values to float
        /// precision.
        #[test]
        fn exact_path_refuses_what_the_float_path_refused(text in "[0-9.hmsun+µ ]{0,14}") {
            let (now, before) = (parse_go_duration(&text), go_duration(&text, false));
            proptest::prop_assert_eq!(now.is_some(), before.is_some(), "{:?}", text);
            if let (Some(now), Some(before)) = (now, before) {
                proptest::prop_assert!(now.abs_diff(before) <= Duration::from_micros(1), "{:?}", text);
            }
        }
    }
}
