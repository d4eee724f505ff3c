//! Turning responses and errors into outcome [`Class`]es.
//!
//! Every gentlify layer reads responses through [`ResponseParts`] (status and headers), so the
//! same classifier serves `http::Response<B>`, `http::response::Parts` and, behind the `reqwest`
//! feature, `reqwest::Response`. The classifier lives in the [`Feedback`](crate::Feedback) handle,
//! so every layer built on one handle classifies alike.

use std::error::Error;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, StatusCode};

use crate::outcome::Class;

/// The longest server-directed delay this crate will represent. Longer values (or absurd ones such
/// as `Retry-After: 99999999999`) are clamped to it, so no arithmetic on a delay can overflow.
/// Layers apply their own, much smaller, bounds on top (the retry layer gives up beyond 120 s by
/// default).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Status 529, Anthropic's "overloaded".
pub const STATUS_SITE_OVERLOADED: u16 = 529;

/// Read access to a response's head: what every classifier and layer needs to see.
pub trait ResponseParts {
    /// The response's status.
    fn status(&self) -> StatusCode;
    /// The response's headers.
    fn headers(&self) -> &HeaderMap;
}

impl<B> ResponseParts for http::Response<B> {
    fn status(&self) -> StatusCode {
        http::Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        http::Response::headers(self)
    }
}

impl ResponseParts for http::response::Parts {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

#[cfg(feature = "reqwest")]
impl ResponseParts for reqwest::Response {
    fn status(&self) -> StatusCode {
        reqwest::Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        reqwest::Response::headers(self)
    }
}

/// What a classifier can tell from a response's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// The class is known from the head.
    Ready(Class),
    /// The class is only known at the end of the body, from its trailers (gRPC): call
    /// [`Classify::classify_trailers`] then.
    AtEndOfStream,
}

/// Decides the [`Class`] of an attempt.
///
/// Implement it to replace gentlify's defaults, then give it to the handle with
/// [`FeedbackBuilder::classifier`](crate::FeedbackBuilder::classifier).
///
/// ```
/// use gentlify_core::{Class, Classified, Classify, Feedback, ResponseParts};
///
/// /// An upstream that says "busy" with a 409.
/// struct BusyIsOverload;
///
/// impl Classify for BusyIsOverload {
///     fn classify_response(&self, response: &dyn ResponseParts) -> Classified {
///         match response.status().as_u16() {
///             409 => Classified::Ready(Class::Overloaded { retry_after: None }),
///             _ => gentlify_core::DefaultClassifier.classify_response(response),
///         }
///     }
/// }
///
/// let feedback = Feedback::builder().classifier(BusyIsOverload).build();
/// let conflict = http::Response::builder().status(409).body(()).unwrap();
/// assert_eq!(
///     feedback.classifier().classify_response(&conflict),
///     Classified::Ready(Class::Overloaded { retry_after: None }),
/// );
/// ```
pub trait Classify: Send + Sync + 'static {
    /// Classifies a response from its head.
    fn classify_response(&self, response: &dyn ResponseParts) -> Classified;

    /// Classifies a response whose head said [`Classified::AtEndOfStream`], from its trailers
    /// (`None` when the body ended without any).
    fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Class {
        let _ = trailers;
        Class::Success
    }

    /// Classifies an error returned by the inner service instead of a response.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Class {
        let _ = error;
        Class::Failure
    }

    /// Whether a bounded prefix of this response's body could change its class (a 429 whose body
    /// says the quota is gone for good). Layers that can afford to read it (the retry layer) call
    /// [`classify_body`](Classify::classify_body) then.
    fn wants_body(&self, response: &dyn ResponseParts) -> bool {
        let _ = response;
        false
    }

    /// Refines a response's class from a prefix of its body; `None` keeps the class from the head.
    fn classify_body(&self, response: &dyn ResponseParts, body_prefix: &[u8]) -> Option<Class> {
        let _ = (response, body_prefix);
        None
    }
}

impl fmt::Debug for dyn Classify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Classify")
    }
}

/// gentlify's default classifier: [`GrpcClassifier`] for gRPC responses (`content-type:
/// application/grpc...`), [`HttpClassifier`] for everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify_response(&self, response: &dyn ResponseParts) -> Classified {
        if is_grpc(response.headers()) {
            GrpcClassifier.classify_response(response)
        } else {
            HttpClassifier.classify_response(response)
        }
    }

    fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Class {
        GrpcClassifier.classify_trailers(trailers)
    }

    fn wants_body(&self, response: &dyn ResponseParts) -> bool {
        // The status first: it is read without a header lookup, and rarely a 429.
        HttpClassifier.wants_body(response) && !is_grpc(response.headers())
    }

    fn classify_body(&self, response: &dyn ResponseParts, body_prefix: &[u8]) -> Option<Class> {
        HttpClassifier.classify_body(response, body_prefix)
    }
}

impl DefaultClassifier {
    /// What [`classify_response`](Classify::classify_response) and
    /// [`wants_body`](Classify::wants_body) say of a response together: its class when its head
    /// settles it and its body could not change it, `None` otherwise (a gRPC class in the
    /// trailers, a 429 whose body may say the quota is gone). Written out for the handle's fast
    /// path ([`Feedback::classify_head`](crate::Feedback::classify_head)): the status first, one
    /// header lookup at most on a success.
    #[inline]
    pub(crate) fn head_class(response: &dyn ResponseParts) -> Option<Class> {
        let headers = response.headers();
        if is_grpc(headers) {
            return match GrpcClassifier.classify_response(response) {
                Classified::Ready(class) => Some(class),
                Classified::AtEndOfStream => None,
            };
        }
        match response.status() {
            status if status.is_success() => Some(Class::Success),
            StatusCode::TOO_MANY_REQUESTS => None,
            status => Some(classify_status(status, headers)),
        }
    }
}

#[inline]
fn is_grpc(headers: &HeaderMap) -> bool {
    // No header, no lookup: `HeaderMap::get` is not inlined.
    !headers.is_empty()
        && headers
            .get(&http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The HTTP table of DESIGN.md: 429 / 503 / 529 are overloaded (with the server's delay),
/// 408 and 5xx failures, every other status a success; a 429 whose body says the quota is gone for
/// good is fatal.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl Classify for HttpClassifier {
    fn classify_response(&self, response: &dyn ResponseParts) -> Classified {
        Classified::Ready(classify_status(response.status(), response.headers()))
    }

    fn wants_body(&self, response: &dyn ResponseParts) -> bool {
        response.status() == StatusCode::TOO_MANY_REQUESTS
    }

    fn classify_body(&self, response: &dyn ResponseParts, body_prefix: &[u8]) -> Option<Class> {
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        fatal_reason(body_prefix).map(|_| Class::Fatal)
    }
}

fn classify_status(status: StatusCode, headers: &HeaderMap) -> Class {
    match status.as_u16() {
        429 | 503 | STATUS_SITE_OVERLOADED => Class::Overloaded {
            retry_after: retry_after(headers),
        },
        408 | 500..=599 => Class::Failure,
        _ => Class::Success,
    }
}

/// gRPC classes: `RESOURCE_EXHAUSTED` is overloaded (with `grpc-retry-pushback-ms`),
/// `UNAVAILABLE` and `DEADLINE_EXCEEDED` are failures, every other code is the caller's business
/// and counts as a success for the controllers. The status is read from the headers of a
/// Trailers-Only response, else from the trailers at the end of the stream; a stream that ends
/// without `grpc-status` is a failure. A non-200 HTTP status follows [`HttpClassifier`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

/// gRPC status code `DEADLINE_EXCEEDED`.
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
/// gRPC status code `RESOURCE_EXHAUSTED`.
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
/// gRPC status code `UNAVAILABLE`.
const GRPC_UNAVAILABLE: i32 = 14;

impl Classify for GrpcClassifier {
    fn classify_response(&self, response: &dyn ResponseParts) -> Classified {
        if response.status() != StatusCode::OK {
            return HttpClassifier.classify_response(response);
        }
        match grpc_class(response.headers()) {
            Some(class) => Classified::Ready(class),
            None => Classified::AtEndOfStream,
        }
    }

    fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Class {
        trailers.and_then(grpc_class).unwrap_or(Class::Failure)
    }
}

fn grpc_class(headers: &HeaderMap) -> Option<Class> {
    let code: i32 = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(match code {
        GRPC_RESOURCE_EXHAUSTED => Class::Overloaded {
            retry_after: retry_after(headers),
        },
        GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED => Class::Failure,
        _ => Class::Success,
    })
}

/// Why a response can never succeed on retry, read from its error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FatalReason {
    /// OpenAI `insufficient_quota`: the account is out of credit or over its hard limit.
    InsufficientQuota,
    /// `credit_balance_exhausted`.
    CreditBalanceExhausted,
    /// Anthropic `enforced_spend_limit_reached`.
    SpendLimitReached,
    /// The request alone is larger than the limit ("Request too large ... TPM").
    RequestTooLarge,
    /// A per-day quota is exhausted (Gemini `quotaId` containing `PerDay`): not worth retrying
    /// today.
    DailyQuotaExhausted,
}

impl fmt::Display for FatalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatalReason::InsufficientQuota => "insufficient quota",
            FatalReason::CreditBalanceExhausted => "credit balance exhausted",
            FatalReason::SpendLimitReached => "spend limit reached",
            FatalReason::RequestTooLarge => "request larger than the limit",
            FatalReason::DailyQuotaExhausted => "daily quota exhausted",
        })
    }
}

/// Reads an error body's prefix for the markers of a 429 that can never succeed, as
/// ../shared/reference/rate-limit-signals.md lists them (OpenAI, Anthropic, Gemini).
///
/// ```
/// use gentlify_core::{fatal_reason, FatalReason};
///
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota"}}"#;
/// assert_eq!(fatal_reason(body), Some(FatalReason::InsufficientQuota));
/// let transient = br#"{"error":{"code":"rate_limit_exceeded","message":"Rate limit reached"}}"#;
/// assert_eq!(fatal_reason(transient), None);
/// ```
pub fn fatal_reason(body_prefix: &[u8]) -> Option<FatalReason> {
    const MARKERS: &[(&[u8], FatalReason)] = &[
        (b"insufficient_quota", FatalReason::InsufficientQuota),
        (
            b"credit_balance_exhausted",
            FatalReason::CreditBalanceExhausted,
        ),
        (
            b"enforced_spend_limit_reached",
            FatalReason::SpendLimitReached,
        ),
        (b"spend_limit_reached", FatalReason::SpendLimitReached),
        (b"Request too large", FatalReason::RequestTooLarge),
        (b"request too large", FatalReason::RequestTooLarge),
        (b"PerDay", FatalReason::DailyQuotaExhausted),
    ];
    MARKERS
        .iter()
        .find(|(marker, _)| contains(body_prefix, marker))
        .map(|&(_, reason)| reason)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");
static X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// The delay a server asked for, from the first of these that parses: `retry-after-ms` (float
/// milliseconds, OpenAI and Azure), `Retry-After` (delay-seconds, fractional seconds, or an
/// HTTP-date), `grpc-retry-pushback-ms` (non-negative milliseconds). Clamped to
/// [`MAX_SERVER_DELAY`]; negative, non-finite and malformed values are ignored.
///
/// ```
/// use std::time::Duration;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("retry-after", "1.5".parse().unwrap());
/// assert_eq!(gentlify_core::retry_after(&headers), Some(Duration::from_millis(1500)));
/// headers.insert("retry-after-ms", "250".parse().unwrap());
/// assert_eq!(gentlify_core::retry_after(&headers), Some(Duration::from_millis(250)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(d) = header_str(headers, &RETRY_AFTER_MS).and_then(parse_millis) {
        return Some(d);
    }
    if let Some(d) = header_str(headers, &http::header::RETRY_AFTER).and_then(parse_retry_after) {
        return Some(d);
    }
    header_str(headers, &GRPC_RETRY_PUSHBACK_MS)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&ms| ms >= 0)
        .map(|ms| clamp(Duration::from_millis(ms.unsigned_abs())))
}

/// The server's own word on whether to retry: `x-should-retry: true|false` (OpenAI), or a negative
/// or unparsable `grpc-retry-pushback-ms` (gRPC: do not retry). `None` when it said nothing.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    if let Some(v) = header_str(headers, &X_SHOULD_RETRY) {
        match v.trim() {
            "true" => return Some(true),
            "false" => return Some(false),
            _ => {}
        }
    }
    let pushback = header_str(headers, &GRPC_RETRY_PUSHBACK_MS)?;
    match pushback.trim().parse::<i64>() {
        Ok(ms) if ms >= 0 => None,
        _ => Some(false),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// Parses float milliseconds (`retry-after-ms: 1500.5`).
pub fn parse_millis(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    seconds_f64(ms / 1000.0)
}

/// Parses a `Retry-After` value: delay-seconds (`120`), fractional seconds (`1.5`, sent in
/// practice though RFC 9110 allows only integers) or an HTTP-date, turned into a delay from the
/// system clock (a date in the past is a zero delay).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] with the wall-clock time given, for HTTP-dates (and for tests that fix
/// the time).
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return value.parse::<f64>().ok().and_then(seconds_f64);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(clamp(at.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// Seconds as a `Duration`, or `None` for negative or non-finite values; clamped to
/// [`MAX_SERVER_DELAY`].
pub fn seconds_f64(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(clamp(Duration::from_secs_f64(
        secs.min(MAX_SERVER_DELAY.as_secs_f64()),
    )))
}

fn clamp(d: Duration) -> Duration {
    d.min(MAX_SERVER_DELAY)
}
