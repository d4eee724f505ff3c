//! The server's explicit delay: `retry-after-ms`, `Retry-After`, `grpc-retry-pushback-ms`, and its
//! word on retrying, `x-should-retry`.

use std::fmt;
use std::time::{Duration, SystemTime};

use gentlify_core::{parse_millis, parse_retry_after, should_retry, MAX_SERVER_DELAY};
use http::{HeaderMap, HeaderName};

use super::{latest_delay, until};

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Which header a [`ServerDelay`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DelaySource {
    /// `retry-after-ms`: float milliseconds (OpenAI, Azure OpenAI).
    RetryAfterMs,
    /// `Retry-After`: delay-seconds (also fractional, as sent in practice) or an HTTP-date.
    RetryAfter,
    /// `grpc-retry-pushback-ms`: non-negative milliseconds (gRPC).
    GrpcRetryPushbackMs,
}

impl DelaySource {
    /// The header's name, lower-case.
    pub fn as_str(self) -> &'static str {
        match self {
            DelaySource::RetryAfterMs => "retry-after-ms",
            DelaySource::RetryAfter => "retry-after",
            DelaySource::GrpcRetryPushbackMs => "grpc-retry-pushback-ms",
        }
    }
}

impl fmt::Display for DelaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a response says about when (and whether) to send again, from the first of these that
/// parses:
///
/// 1. `retry-after-ms` (float milliseconds; OpenAI's SDK prefers it to `retry-after`),
/// 2. `Retry-After` in every form: delay-seconds (`120`), fractional seconds (`1.5`) or an
///    HTTP-date (`Fri, 31 Dec 1999 23:59:59 GMT`, and the obsolete RFC 850 and asctime forms),
///    a date being turned into a delay from the `now` given (zero when in the past),
/// 3. `grpc-retry-pushback-ms` (non-negative milliseconds),
///
/// plus the server's word on retrying ([`should_retry`](ServerDelay::should_retry)):
/// `x-should-retry: true|false`, or a negative or unparsable `grpc-retry-pushback-ms` (do not
/// retry).
///
/// Numbers go through gentlify-core's [`parse_millis`] and [`parse_retry_after`], dates through
/// the `httpdate` crate. Every delay is at most
/// [`MAX_SERVER_DELAY`] (24 h); negative, `NaN`, infinite and
/// malformed values are ignored (the next header in the list is tried). A header sent twice
/// counts its longest valid delay.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use gentlify_headers::{DelaySource, ServerDelay};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("retry-after", "2".parse().unwrap());
/// headers.insert("retry-after-ms", "1500.5".parse().unwrap());
/// let delay = ServerDelay::parse(&headers, SystemTime::now()).unwrap();
/// assert_eq!(delay.delay, Some(Duration::from_micros(1_500_500)));
/// assert_eq!(delay.source, Some(DelaySource::RetryAfterMs));
/// assert_eq!(delay.should_retry, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerDelay {
    /// How long the server asked to wait, if it said.
    pub delay: Option<Duration>,
    /// The header the delay came from.
    pub source: Option<DelaySource>,
    /// The server's word on retrying, if it gave one.
    pub should_retry: Option<bool>,
}

impl ServerDelay {
    /// Reads `headers`; `None` when they say nothing about delays or retrying.
    pub fn parse(headers: &HeaderMap, now: SystemTime) -> Option<ServerDelay> {
        let delay = latest_delay(headers, &RETRY_AFTER_MS, parse_millis)
            .map(|d| (d, DelaySource::RetryAfterMs))
            .or_else(|| {
                latest_delay(headers, &http::header::RETRY_AFTER, |v| {
                    parse_retry_after_at(v, now)
                })
                .map(|d| (d, DelaySource::RetryAfter))
            })
            .or_else(|| {
                latest_delay(headers, &GRPC_RETRY_PUSHBACK_MS, parse_pushback)
                    .map(|d| (d, DelaySource::GrpcRetryPushbackMs))
            });
        let should_retry = should_retry(headers);
        if delay.is_none() && should_retry.is_none() {
            return None;
        }
        Some(ServerDelay {
            delay: delay.map(|(d, _)| d),
            source: delay.map(|(_, s)| s),
            should_retry,
        })
    }
}

/// `Retry-After` with the HTTP-date measured from `now` (core's [`parse_retry_after`] reads the
/// system clock, which tests cannot fix).
fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return parse_retry_after(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now, MAX_SERVER_DELAY))
}

fn parse_pushback(value: &str) -> Option<Duration> {
    let ms: i64 = value.parse().ok()?;
    let ms = u64::try_from(ms).ok()?;
    Some(Duration::from_millis(ms).min(MAX_SERVER_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_measured_from_the_given_now() {
        let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:59:00 GMT").unwrap();
        let d = parse_retry_after_at("Fri, 31 Dec 1999 23:59:59 GMT", now);
        assert_eq!(d, Some(Duration::from_secs(59)));
        // RFC 850 and asctime forms, as RFC 9110 requires recipients to accept.
        let d = parse_retry_after_at("Friday, 31-Dec-99 23:59:59 GMT", now);
        assert_eq!(d, Some(Duration::from_secs(59)));
        let d = parse_retry_after_at("Fri Dec 31 23:59:59 1999", now);
        assert_eq!(d, Some(Duration::from_secs(59)));
        let past = parse_retry_after_at("Thu, 01 Jan 1970 00:00:00 GMT", now);
        assert_eq!(past, Some(Duration::ZERO));
    }
}
