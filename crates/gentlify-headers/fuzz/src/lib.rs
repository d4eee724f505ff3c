//! Turns fuzzer bytes into the input of a header parser, and checks what every reading must
//! satisfy.

use std::time::{Duration, SystemTime};

use gentlify_core::{QuotaReport, MAX_SERVER_DELAY};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The wall clock from the first 8 bytes (seconds since the epoch, up to year 9999), and a header
/// map from the rest: lines separated by `\n`, each line's first byte choosing one of `names`
/// (so the fuzzer reaches the family's headers), the rest of the line its value (any bytes a
/// `HeaderValue` accepts, non-UTF-8 included). Names repeat freely: duplicated headers too.
pub fn input(data: &[u8], names: &[&'static str]) -> (HeaderMap, SystemTime) {
    let (clock, rest) = data.split_at(data.len().min(8));
    let mut secs = [0u8; 8];
    secs[..clock.len()].copy_from_slice(clock);
    let secs = u64::from_le_bytes(secs) % 253_402_300_800;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);

    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some((&which, value)) = line.split_first() else {
            continue;
        };
        let name = names[usize::from(which) % names.len()];
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    (headers, now)
}

/// What any quota report must satisfy: resets within `bound`, windows within core's bound, and
/// `observed_at + reset` computable.
pub fn check(report: Option<QuotaReport>, bound: Duration) {
    let Some(report) = report else { return };
    assert!(!report.quotas.is_empty(), "an empty report");
    for quota in &report.quotas {
        if let Some(reset) = quota.reset_after {
            assert!(reset <= bound, "reset {reset:?} beyond {bound:?}");
        }
        if let Some(window) = quota.window {
            assert!(window <= MAX_SERVER_DELAY);
        }
    }
    let _ = report.exhausted_until();
}
