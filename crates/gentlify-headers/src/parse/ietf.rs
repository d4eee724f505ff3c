//! The IETF `RateLimit` / `RateLimit-Policy` structured fields, and the older
//! `RateLimit-Limit` / `-Remaining` / `-Reset`.

use std::time::{Duration, SystemTime};

use gentlify_core::{Dimension, Quota, QuotaReport, MAX_SERVER_DELAY};
use http::{HeaderMap, HeaderName};
use sfv::{BareItem, Dictionary, List, ListEntry, Parameters, Parser};

use super::{count, latest_delay, parse_seconds, values, ParseHeaders};

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The headers of draft-ietf-httpapi-ratelimit-headers, parsed with the `sfv` crate (RFC 9651
/// structured fields):
///
/// ```text
/// RateLimit-Policy: "burst";q=100;w=60,"daily";q=1000;w=86400
/// RateLimit: "default";r=50;t=30
/// ```
///
/// One [`Quota`] per policy, named after it ([`Quota::name`]): `q` is its
/// [`limit`](Quota::limit), `w` its [`window`](Quota::window), `qu` its dimension
/// (`"requests"`, the default, → [`Dimension::Requests`]; `"content-bytes"` →
/// [`Dimension::ContentBytes`]; `"concurrent-requests"` → [`Dimension::ConcurrentRequests`]); the
/// `RateLimit` item of the same name gives `r` ([`remaining`](Quota::remaining)) and `t`
/// ([`reset_after`](Quota::reset_after), in seconds). A `RateLimit` item without a policy is a
/// request quota of its own.
///
/// As the draft says: unknown parameters are ignored, a policy without `q` or a limit without `r`
/// is ignored, a field that does not parse is ignored whole, and so is a policy of an unknown unit
/// (rather than counting it as requests). Negative or non-integer values are ignored. A field
/// sent on several lines is read as one list, as RFC 9110 combines them. `Retry-After` winning
/// over `t` is the layer's business: see
/// [`HeaderFeedbackLayer`](crate::HeaderFeedbackLayer).
///
/// Also read, when the structured fields are absent: the older drafts' `RateLimit-Limit: 10`
/// (its first member, if it lists policies as in `10, 10;w=1`), `RateLimit-Remaining: 1`,
/// `RateLimit-Reset: 7` (delta seconds), and the dictionary form
/// `RateLimit: limit=10, remaining=1, reset=7`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use gentlify_headers::{IetfHeaders, ParseHeaders};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("ratelimit-policy", r#""burst";q=100;w=60"#.parse().unwrap());
/// headers.insert("ratelimit", r#""burst";r=0;t=30"#.parse().unwrap());
/// let report = IetfHeaders::new().parse(&headers, SystemTime::now()).unwrap();
/// let burst = &report.quotas[0];
/// assert_eq!(burst.name.as_deref(), Some("burst"));
/// assert_eq!((burst.limit, burst.remaining), (Some(100), Some(0)));
/// assert_eq!(burst.reset_after, Some(Duration::from_secs(30)));
/// assert_eq!(burst.window, Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct IetfHeaders {
    _private: (),
}

impl IetfHeaders {
    /// The reading described above.
    pub fn new() -> Self {
        IetfHeaders::default()
    }
}

impl ParseHeaders for IetfHeaders {
    fn name(&self) -> &'static str {
        "ietf"
    }

    fn parse(&self, headers: &HeaderMap, _now: SystemTime) -> Option<QuotaReport> {
        let mut quotas = structured(headers);
        if quotas.is_empty() {
            quotas.extend(older_draft(headers));
        }
        (!quotas.is_empty()).then(|| QuotaReport::new(self.name(), quotas))
    }
}

struct Policy {
    name: Option<String>,
    quota: u64,
    dimension: Dimension,
    window: Option<Duration>,
}

struct Limit {
    name: Option<String>,
    remaining: u64,
    reset_after: Option<Duration>,
}

fn structured(headers: &HeaderMap) -> Vec<Quota> {
    let policies: Vec<Policy> = list(headers, &RATELIMIT_POLICY)
        .iter()
        .filter_map(policy)
        .collect();
    let mut limits: Vec<Option<Limit>> = list(headers, &RATELIMIT)
        .iter()
        .map(limit)
        .filter(Option::is_some)
        .collect();

    let mut quotas = Vec::with_capacity(policies.len() + limits.len());
    for policy in policies {
        let mut quota = Quota::new(policy.dimension).with_limit(policy.quota);
        quota.window = policy.window;
        if let Some(limit) = limits
            .iter_mut()
            .find(|l| l.as_ref().is_some_and(|l| l.name == policy.name))
            .and_then(Option::take)
        {
            quota.remaining = Some(limit.remaining);
            quota.reset_after = limit.reset_after;
        }
        quota.name = policy.name.map(Into::into);
        quotas.push(quota);
    }
    for limit in limits.into_iter().flatten() {
        let mut quota = Quota::new(Dimension::Requests).with_remaining(limit.remaining);
        quota.reset_after = limit.reset_after;
        quota.name = limit.name.map(Into::into);
        quotas.push(quota);
    }
    quotas
}

/// The field's lines joined into one list (RFC 9110 §5.3), or nothing if it does not parse.
fn list(headers: &HeaderMap, name: &HeaderName) -> List {
    let mut joined = Vec::new();
    for value in headers.get_all(name) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if joined.is_empty() {
        return List::new();
    }
    Parser::new(&joined).parse().unwrap_or_default()
}

fn item(entry: &ListEntry) -> Option<(Option<String>, &Parameters)> {
    let ListEntry::Item(item) = entry else {
        return None;
    };
    let name = match &item.bare_item {
        BareItem::String(s) => Some(s.as_str().to_owned()),
        // Earlier drafts named policies with tokens.
        BareItem::Token(t) => Some(t.as_str().to_owned()),
        _ => None,
    };
    Some((name, &item.params))
}

fn policy(entry: &ListEntry) -> Option<Policy> {
    let (name, params) = item(entry)?;
    let quota = non_negative(params.get("q")?)?;
    let dimension = match params.get("qu") {
        None => Dimension::Requests,
        Some(unit) => match text(unit)? {
            "requests" => Dimension::Requests,
            "content-bytes" => Dimension::ContentBytes,
            "concurrent-requests" => Dimension::ConcurrentRequests,
            _ => return None,
        },
    };
    let window = params.get("w").and_then(non_negative).map(seconds);
    Some(Policy {
        name,
        quota,
        dimension,
        window,
    })
}

fn limit(entry: &ListEntry) -> Option<Limit> {
    let (name, params) = item(entry)?;
    let remaining = non_negative(params.get("r")?)?;
    let reset_after = params.get("t").and_then(non_negative).map(seconds);
    Some(Limit {
        name,
        remaining,
        reset_after,
    })
}

fn non_negative(value: &BareItem) -> Option<u64> {
    u64::try_from(i64::from(value.as_integer()?)).ok()
}

fn text(value: &BareItem) -> Option<&str> {
    match value {
        BareItem::String(s) => Some(s.as_str()),
        BareItem::Token(t) => Some(t.as_str()),
        _ => None,
    }
}

fn seconds(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_SERVER_DELAY)
}

fn older_draft(headers: &HeaderMap) -> Option<Quota> {
    let mut limit = values(headers, &RATELIMIT_LIMIT)
        .filter_map(|v| {
            let first = v.split([',', ';']).next()?.trim();
            super::parse_count(first)
        })
        .min();
    let mut remaining = count(headers, &RATELIMIT_REMAINING);
    let mut reset_after = latest_delay(headers, &RATELIMIT_RESET, parse_seconds);

    if limit.is_none() && remaining.is_none() && reset_after.is_none() {
        // draft-ietf-httpapi-ratelimit-headers-03..06: `RateLimit: limit=10, remaining=1, reset=7`.
        let dictionary = dictionary(headers, &RATELIMIT)?;
        let field = |key: &str| match dictionary.get(key)? {
            ListEntry::Item(item) => non_negative(&item.bare_item),
            ListEntry::InnerList(_) => None,
        };
        limit = field("limit");
        remaining = field("remaining");
        reset_after = field("reset").map(seconds);
    }

    if limit.is_none() && remaining.is_none() && reset_after.is_none() {
        return None;
    }
    let mut quota = Quota::new(Dimension::Requests);
    quota.limit = limit;
    quota.remaining = remaining;
    quota.reset_after = reset_after;
    Some(quota)
}

fn dictionary(headers: &HeaderMap, name: &HeaderName) -> Option<Dictionary> {
    let value = headers.get(name)?;
    Parser::new(value.as_bytes()).parse().ok()
}
