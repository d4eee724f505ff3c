//! Malformed and adversarial headers, family by family: never a panic, never a `Duration`
//! overflow, never a reset beyond the documented bounds; nonsense is ignored.

mod common;

use std::time::{Duration, SystemTime};

use common::{at, block, ms, quota, raw, secs};
use gentlify_core::{Dimension, MAX_SERVER_DELAY};
use gentlify_headers::{
    default_parsers, AnthropicHeaders, GitHubHeaders, IetfHeaders, OpenAiHeaders, ParseHeaders,
    ServerDelay,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Values no count or duration parser should take at face value.
const HOSTILE: &[&[u8]] = &[
    b"",
    b" ",
    b"-1",
    b"-0",
    b"+5",
    b"NaN",
    b"nan",
    b"inf",
    b"-inf",
    b"1e309",
    b"0x10",
    b"1.5.5",
    b"18446744073709551616",
    b"99999999999999999999999999999999999999999",
    b"\xff\xfe",
    b"12\x80",
    b"\"quoted\"",
    b"1s; drop table",
    b"9999-12-31T23:59:59Z",
    b"0000-01-01T00:00:00Z",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
];

const OPENAI_NAMES: &[&str] = &[
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];
const ANTHROPIC_NAMES: &[&str] = &[
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
];
const IETF_NAMES: &[&str] = &[
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];
const GITHUB_NAMES: &[&str] = &[
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
];
const DELAY_NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "grpc-retry-pushback-ms",
    "x-should-retry",
];

/// Runs every parser on `headers` and checks what any reading must satisfy.
fn check_every_parser(headers: &HeaderMap, now: SystemTime) {
    let bounded: [(&dyn ParseHeaders, Duration); 5] = [
        (&OpenAiHeaders::new(), MAX_SERVER_DELAY),
        (&OpenAiHeaders::groq(), MAX_SERVER_DELAY),
        (&AnthropicHeaders::new(), secs(60)),
        (&IetfHeaders::new(), MAX_SERVER_DELAY),
        (&GitHubHeaders::new(), secs(3600)),
    ];
    for (parser, bound) in bounded {
        if let Some(report) = parser.parse(headers, now) {
            assert!(!report.quotas.is_empty(), "{}: empty report", parser.name());
            for q in &report.quotas {
                if let Some(reset) = q.reset_after {
                    assert!(reset <= bound, "{}: {reset:?} > {bound:?}", parser.name());
                }
                if let Some(window) = q.window {
                    assert!(window <= MAX_SERVER_DELAY);
                }
            }
            // The layer adds the reset to an Instant: that must not overflow either.
            let _ = report.exhausted_until();
        }
    }
    if let Some(delay) = ServerDelay::parse(headers, now) {
        assert!(delay.delay.is_none_or(|d| d <= MAX_SERVER_DELAY));
        assert_eq!(delay.delay.is_some(), delay.source.is_some());
    }
}

#[test]
fn hostile_values_in_every_header_of_every_family() {
    let names = [
        OPENAI_NAMES,
        ANTHROPIC_NAMES,
        IETF_NAMES,
        GITHUB_NAMES,
        DELAY_NAMES,
    ]
    .concat();
    for name in names {
        for value in HOSTILE {
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value).unwrap(),
            );
            for now in [
                SystemTime::UNIX_EPOCH,
                SystemTime::now(),
                at(253_402_300_799_000),
            ] {
                check_every_parser(&headers, now);
            }
        }
    }
}

// ---- OpenAI-style --------------------------------------------------------------------------

#[test]
fn openai_hostile_counts_are_unknown() {
    for value in HOSTILE {
        let headers = raw("x-ratelimit-remaining-tokens", value);
        assert!(
            OpenAiHeaders::new()
                .parse(&headers, SystemTime::now())
                .is_none(),
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    let headers = block("x-ratelimit-remaining-tokens: 18446744073709551615");
    let report = OpenAiHeaders::new()
        .parse(&headers, SystemTime::now())
        .unwrap();
    assert_eq!(quota(&report, Dimension::Tokens).remaining, Some(u64::MAX));
}

#[test]
fn openai_hostile_resets() {
    let reset = |v: &[u8]| {
        OpenAiHeaders::new()
            .parse(&raw("x-ratelimit-reset-tokens", v), SystemTime::now())
            .and_then(|r| r.quotas[0].reset_after)
    };
    assert_eq!(reset(b"-1s"), None, "negative = unknown");
    assert_eq!(reset(b"NaNs"), None);
    assert_eq!(reset(b"infs"), None);
    assert_eq!(reset(b"1\xffs"), None);
    assert_eq!(reset(b"99999999999h"), Some(MAX_SERVER_DELAY));
    assert_eq!(reset(format!("{}h", "9".repeat(500)).as_bytes()), None);
    assert_eq!(reset("1s".repeat(10_000).as_bytes()), Some(secs(10_000)));
    assert_eq!(reset(b"1m"), Some(secs(60)));
    assert_eq!(reset(b"1ms"), Some(ms(1)), "ms is not m");
}

#[test]
fn openai_duplicated_headers_read_conservatively() {
    let headers = block(
        "
x-ratelimit-remaining-requests: 5
x-ratelimit-remaining-requests: 3
x-ratelimit-remaining-requests: -1
x-ratelimit-reset-requests: 1s
x-ratelimit-reset-requests: 2s
x-ratelimit-reset-requests: garbage
",
    );
    let report = OpenAiHeaders::new()
        .parse(&headers, SystemTime::now())
        .unwrap();
    let q = quota(&report, Dimension::Requests);
    assert_eq!(q.remaining, Some(3), "the smallest remaining");
    assert_eq!(q.reset_after, Some(secs(2)), "the latest reset");
}

// ---- Anthropic -----------------------------------------------------------------------------

#[test]
fn anthropic_absurd_dates() {
    let now = at(1_755_780_030_000);
    let reset = |v: &str| {
        AnthropicHeaders::new()
            .parse(
                &block(&format!("anthropic-ratelimit-tokens-reset: {v}")),
                now,
            )
            .map(|r| r.quotas[0].reset_after)
    };
    assert_eq!(
        reset("9999-12-31T23:59:59Z"),
        Some(Some(secs(60))),
        "bounded"
    );
    assert_eq!(
        reset("0000-01-01T00:00:00Z"),
        Some(Some(Duration::ZERO)),
        "past"
    );
    assert_eq!(reset("1969-01-01T00:00:00Z"), Some(Some(Duration::ZERO)));
    assert_eq!(reset("2025-02-30T00:00:00Z"), None);
    assert_eq!(reset("2025-08-21T12:40:59"), None, "no offset");
    // RFC 3339 §5.6 lets a space stand for the T; `time` accepts it.
    assert_eq!(reset("2025-08-21 12:40:59Z"), Some(Some(secs(29))));
    assert_eq!(reset("2025-08-21T12:40:59+99:00"), None);
    assert_eq!(reset("1755780059"), None, "epoch is not RFC 3339");
    let nanos = AnthropicHeaders::new()
        .parse(
            &block("anthropic-ratelimit-tokens-reset: 2025-08-21T12:40:30.000000001Z"),
            now,
        )
        .unwrap();
    assert_eq!(nanos.quotas[0].reset_after, Some(Duration::from_nanos(1)));
}

#[test]
fn anthropic_non_utf8_and_duplicates() {
    let now = at(1_755_780_030_000);
    let headers = raw("anthropic-ratelimit-requests-remaining", b"\xc3\x28");
    assert!(AnthropicHeaders::new().parse(&headers, now).is_none());
    let headers = block(
        "
anthropic-ratelimit-requests-remaining: 10
anthropic-ratelimit-requests-remaining: 0
anthropic-ratelimit-requests-reset: 2025-08-21T12:40:31Z
anthropic-ratelimit-requests-reset: 2025-08-21T12:40:35Z
",
    );
    let report = AnthropicHeaders::new().parse(&headers, now).unwrap();
    let q = quota(&report, Dimension::Requests);
    assert_eq!((q.remaining, q.reset_after), (Some(0), Some(secs(5))));
}

// ---- IETF ----------------------------------------------------------------------------------

#[test]
fn ietf_malformed_fields_are_ignored_whole() {
    let parse = |text: &str| IetfHeaders::new().parse(&block(text), SystemTime::now());
    // Not a structured list: ignored (and not the older dictionary form either).
    assert!(parse(r#"RateLimit: "a";r="#).is_none());
    assert!(parse(r#"RateLimit: "a";r=1,,"#).is_none());
    // Integers of more than 15 digits are not structured-field integers.
    assert!(parse(r#"RateLimit: "a";r=9999999999999999"#).is_none());
    // Required parameters missing, negative, or not integers: the member is ignored.
    assert!(parse(r#"RateLimit: "a";t=5"#).is_none());
    assert!(parse(r#"RateLimit: "a";r=-1"#).is_none());
    assert!(parse(r#"RateLimit: "a";r=1.5"#).is_none());
    assert!(parse(r#"RateLimit: "a";r=?1"#).is_none());
    assert!(parse(r#"RateLimit-Policy: "a";w=60"#).is_none());
    assert!(parse(r#"RateLimit-Policy: "a";q=10;qu="bananas""#).is_none());
    assert!(parse(r#"RateLimit: ("a" "b");r=1"#).is_none(), "inner list");
    // Non-UTF-8 bytes.
    let headers = raw("ratelimit", b"\"a\";r=1\xff");
    assert!(IetfHeaders::new()
        .parse(&headers, SystemTime::now())
        .is_none());
}

#[test]
fn ietf_extremes_are_clamped() {
    let report = IetfHeaders::new()
        .parse(
            &block(r#"RateLimit: "a";r=999999999999999;t=999999999999999"#),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(report.quotas[0].remaining, Some(999_999_999_999_999));
    assert_eq!(report.quotas[0].reset_after, Some(MAX_SERVER_DELAY));
    // A negative `t` is ignored, the rest kept.
    let report = IetfHeaders::new()
        .parse(&block(r#"RateLimit: "a";r=0;t=-5"#), SystemTime::now())
        .unwrap();
    assert_eq!(
        (report.quotas[0].remaining, report.quotas[0].reset_after),
        (Some(0), None)
    );
}

#[test]
fn ietf_field_lines_are_combined() {
    let headers = block(
        r#"
RateLimit-Policy: "burst";q=100;w=60
RateLimit-Policy: "daily";q=1000;w=86400
RateLimit: "burst";r=0;t=12
RateLimit: "daily";r=900;t=3000
"#,
    );
    let report = IetfHeaders::new()
        .parse(&headers, SystemTime::now())
        .unwrap();
    assert_eq!(report.quotas.len(), 2);
    let burst = &report.quotas[0];
    assert_eq!(burst.name.as_deref(), Some("burst"));
    assert_eq!(
        (burst.remaining, burst.reset_after),
        (Some(0), Some(secs(12)))
    );
    let daily = &report.quotas[1];
    assert_eq!((daily.remaining, daily.limit), (Some(900), Some(1000)));
}

#[test]
fn ietf_older_draft_hostile_values() {
    let parse = |text: &str| IetfHeaders::new().parse(&block(text), SystemTime::now());
    assert!(parse("RateLimit-Limit: -10").is_none());
    assert!(parse("RateLimit-Reset: -7").is_none());
    assert!(parse("RateLimit-Reset: NaN").is_none());
    let report = parse("RateLimit-Reset: 99999999999999").unwrap();
    assert_eq!(report.quotas[0].reset_after, Some(MAX_SERVER_DELAY));
}

// ---- GitHub --------------------------------------------------------------------------------

#[test]
fn github_hostile_resets() {
    let now = at(1_700_000_000_000);
    let reset = |v: &str| {
        GitHubHeaders::new()
            .parse(&block(&format!("x-ratelimit-reset: {v}")), now)
            .map(|r| r.quotas[0].reset_after)
    };
    assert_eq!(
        reset("18446744073709551615"),
        Some(Some(secs(3600))),
        "far future: bounded"
    );
    assert_eq!(
        reset("1000000000"),
        Some(Some(Duration::ZERO)),
        "past epoch"
    );
    assert_eq!(
        reset("999999999"),
        Some(Some(secs(3600))),
        "delta seconds, bounded"
    );
    assert_eq!(reset("30"), Some(Some(secs(30))), "delta seconds");
    assert_eq!(reset("-1"), None);
    assert_eq!(reset("1700000000.5"), None);
    let at_epoch = GitHubHeaders::new()
        .parse(
            &block("x-ratelimit-reset: 1700000000"),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(
        at_epoch.quotas[0].reset_after,
        Some(secs(3600)),
        "a clock at 1970"
    );
}

#[test]
fn github_used_beyond_limit_and_odd_resources() {
    let report = GitHubHeaders::new()
        .parse(
            &block("x-ratelimit-limit: 10\nx-ratelimit-used: 99"),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(report.quotas[0].remaining, Some(0), "saturating");
    let long = format!(
        "x-ratelimit-remaining: 1\nx-ratelimit-resource: {}",
        "r".repeat(4096)
    );
    let report = GitHubHeaders::new()
        .parse(&block(&long), SystemTime::now())
        .unwrap();
    assert_eq!(
        report.quotas[0].name, None,
        "an absurd resource name is dropped"
    );
    let mut headers = raw("x-ratelimit-resource", b"\xffcore");
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("2"));
    let report = GitHubHeaders::new()
        .parse(&headers, SystemTime::now())
        .unwrap();
    assert_eq!(report.quotas[0].name, None);
    // A resource alone says nothing about the quota.
    assert!(GitHubHeaders::new()
        .parse(&block("x-ratelimit-resource: core"), SystemTime::now())
        .is_none());
}

// ---- Retry-After and friends ---------------------------------------------------------------

#[test]
fn server_delay_hostile_values() {
    let now = SystemTime::now();
    let delay = |line: &str| ServerDelay::parse(&block(line), now).and_then(|d| d.delay);
    assert_eq!(delay("retry-after: 99999999999"), Some(MAX_SERVER_DELAY));
    assert_eq!(delay("retry-after: 1e400"), None);
    assert_eq!(delay("retry-after: -1"), None);
    assert_eq!(delay("retry-after: NaN"), None);
    assert_eq!(delay("retry-after: soon"), None);
    assert_eq!(
        delay("retry-after: Fri, 31 Dec 9999 23:59:59 GMT"),
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(delay("retry-after: Fri, 32 Dec 1999 23:59:59 GMT"), None);
    assert_eq!(delay("retry-after-ms: inf"), None);
    assert_eq!(delay("retry-after-ms: -5"), None);
    assert_eq!(delay("retry-after-ms: 1e300"), Some(MAX_SERVER_DELAY));
    assert_eq!(
        delay("grpc-retry-pushback-ms: 9223372036854775807"),
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(delay("grpc-retry-pushback-ms: 99999999999999999999"), None);
    // A broken retry-after-ms falls through to the next header.
    assert_eq!(delay("retry-after-ms: NaN\nretry-after: 3"), Some(secs(3)));
    // Duplicates: the longest valid delay.
    assert_eq!(
        delay("retry-after: 1\nretry-after: 4\nretry-after: x"),
        Some(secs(4))
    );
    let headers = raw("retry-after", b"\xff1");
    assert_eq!(ServerDelay::parse(&headers, now), None);
    let odd = ServerDelay::parse(&block("x-should-retry: maybe"), now);
    assert_eq!(odd, None, "neither true nor false");
}

// ---- Property: arbitrary bytes in any header of any family ---------------------------------

fn any_name() -> impl Strategy<Value = &'static str> {
    let names = [
        OPENAI_NAMES,
        ANTHROPIC_NAMES,
        IETF_NAMES,
        GITHUB_NAMES,
        DELAY_NAMES,
    ]
    .concat();
    proptest::sample::select(names)
}

/// Bytes a `HeaderValue` accepts: visible ASCII, space, tab and obs-text.
fn any_value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(b"0123456789.-+:;=,\"hmsTZ ".to_vec()),
            1 => 0x20u8..0x7f,
            1 => 0x80u8..=0xff,
        ],
        0..48,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_header_values_never_panic_nor_exceed_bounds(
        fields in proptest::collection::vec((any_name(), any_value()), 1..6),
        now_secs in 0u64..=253_402_300_799,
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(&value).unwrap(),
            );
        }
        check_every_parser(&headers, SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs));
        for parser in default_parsers() {
            let _ = parser.parse(&headers, SystemTime::now());
        }
    }
}
