//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime};

use gentlify_core::{Dimension, Quota, QuotaReport};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A header block as printed in the reference document (`name: value` per line) as a `HeaderMap`;
/// a name given twice is appended, as on the wire.
pub fn block(text: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("name: value");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    headers
}

/// Raw bytes as a header value (non-UTF-8 included).
pub fn raw(name: &'static str, value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_bytes(value).unwrap());
    headers
}

/// An instant of the wall clock given as seconds since the epoch.
pub fn at(epoch_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(epoch_ms)
}

/// The report's quota of `dimension` (the first, if several).
pub fn quota(report: &QuotaReport, dimension: Dimension) -> &Quota {
    report
        .quotas
        .iter()
        .find(|q| q.dimension == dimension)
        .unwrap_or_else(|| panic!("no {dimension} quota in {report:?}"))
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
