//! Every header block of shared/reference/rate-limit-signals.md, recorded and documented, read by
//! the parser of its family, and by none of the others.

mod common;

use std::time::SystemTime;

use common::{at, block, ms, quota, secs};
use gentlify_core::{Dimension, QuotaReport};
use gentlify_headers::{
    default_parsers, AnthropicHeaders, DelaySource, GitHubHeaders, IetfHeaders, OpenAiHeaders,
    ParseHeaders, ServerDelay,
};
use http::HeaderMap;

/// The sources of the default parsers that recognise `headers`.
fn recognised_by(headers: &HeaderMap) -> Vec<&'static str> {
    default_parsers()
        .iter()
        .filter_map(|p| p.parse(headers, SystemTime::now()))
        .map(|r| r.source)
        .collect()
}

fn parse(parser: &impl ParseHeaders, headers: &HeaderMap) -> QuotaReport {
    parser
        .parse(headers, SystemTime::now())
        .expect("the parser recognises its family")
}

// ---- OpenAI ------------------------------------------------------------------------------

const OPENAI_DOCS: &str = "
x-ratelimit-limit-requests: 60
x-ratelimit-limit-tokens: 150000
x-ratelimit-remaining-requests: 59
x-ratelimit-remaining-tokens: 149984
x-ratelimit-reset-requests: 1s
x-ratelimit-reset-tokens: 6m0s
";

const OPENAI_RECORDED_2025: &str = "
x-ratelimit-limit-requests: 5000
x-ratelimit-limit-tokens: 160000
x-ratelimit-limit-tokens_usage_based: 160000
x-ratelimit-remaining-requests: 4999
x-ratelimit-remaining-tokens: 159976
x-ratelimit-remaining-tokens_usage_based: 159976
x-ratelimit-reset-requests: 12ms
x-ratelimit-reset-tokens: 9ms
x-ratelimit-reset-tokens_usage_based: 9ms
";

#[test]
fn openai_documented_block() {
    let headers = block(OPENAI_DOCS);
    let report = parse(&OpenAiHeaders::new(), &headers);
    assert_eq!(report.source, "openai");
    assert_eq!(report.quotas.len(), 2);
    let requests = quota(&report, Dimension::Requests);
    assert_eq!(requests.limit, Some(60));
    assert_eq!(requests.remaining, Some(59));
    assert_eq!(requests.reset_after, Some(secs(1)));
    assert_eq!(requests.window, None);
    let tokens = quota(&report, Dimension::Tokens);
    assert_eq!(tokens.limit, Some(150_000));
    assert_eq!(tokens.remaining, Some(149_984));
    assert_eq!(tokens.reset_after, Some(secs(360)));
    assert_eq!(recognised_by(&headers), ["openai"]);
}

#[test]
fn openai_recorded_block_ignores_the_usage_based_family() {
    let headers = block(OPENAI_RECORDED_2025);
    let report = parse(&OpenAiHeaders::new(), &headers);
    assert_eq!(report.quotas.len(), 2, "no third quota from *_usage_based");
    let requests = quota(&report, Dimension::Requests);
    assert_eq!(
        (requests.limit, requests.remaining, requests.reset_after),
        (Some(5000), Some(4999), Some(ms(12)))
    );
    let tokens = quota(&report, Dimension::Tokens);
    assert_eq!(
        (tokens.limit, tokens.remaining, tokens.reset_after),
        (Some(160_000), Some(159_976), Some(ms(9)))
    );
    assert_eq!(recognised_by(&headers), ["openai"]);
}

#[test]
fn usage_based_family_alone_is_not_read_as_the_main_one() {
    let headers = block(
        "
x-ratelimit-limit-tokens_usage_based: 160000
x-ratelimit-remaining-tokens_usage_based: 0
x-ratelimit-reset-tokens_usage_based: 9ms
",
    );
    assert!(recognised_by(&headers).is_empty());
}

// ---- Azure OpenAI --------------------------------------------------------------------------

/// The 429 the reference document describes for Azure OpenAI.
const AZURE_429: &str = "
retry-after: 6
retry-after-ms: 6000
x-ratelimit-remaining-tokens: 0
x-ratelimit-remaining-requests: 12
";

#[test]
fn azure_429_block() {
    let headers = block(AZURE_429);
    let report = parse(&OpenAiHeaders::azure(), &headers);
    assert_eq!(report.source, "azure-openai");
    assert_eq!(quota(&report, Dimension::Tokens).remaining, Some(0));
    assert_eq!(quota(&report, Dimension::Tokens).reset_after, None);
    assert_eq!(quota(&report, Dimension::Requests).remaining, Some(12));
    let delay = ServerDelay::parse(&headers, SystemTime::now()).unwrap();
    assert_eq!(delay.delay, Some(secs(6)));
    assert_eq!(delay.source, Some(DelaySource::RetryAfterMs));
}

#[test]
fn azure_negative_limit_means_unknown() {
    let headers = block(
        "
x-ratelimit-limit-tokens: -1
x-ratelimit-remaining-tokens: 1000
",
    );
    let report = parse(&OpenAiHeaders::azure(), &headers);
    let tokens = quota(&report, Dimension::Tokens);
    assert_eq!(tokens.limit, None);
    assert_eq!(tokens.remaining, Some(1000));
}

// ---- Groq ----------------------------------------------------------------------------------

const GROQ_DOCS: &str = "
x-ratelimit-limit-requests: 14400
x-ratelimit-limit-tokens: 18000
x-ratelimit-remaining-requests: 14370
x-ratelimit-remaining-tokens: 17997
x-ratelimit-reset-requests: 2m59.56s
x-ratelimit-reset-tokens: 7.66s
retry-after: 2
";

#[test]
fn groq_documented_block_requests_per_day_tokens_per_minute() {
    let headers = block(GROQ_DOCS);
    let report = parse(&OpenAiHeaders::groq(), &headers);
    assert_eq!(report.source, "groq");
    let requests = quota(&report, Dimension::Requests);
    assert_eq!(requests.limit, Some(14_400));
    assert_eq!(requests.remaining, Some(14_370));
    assert_eq!(requests.reset_after, Some(ms(179_560)));
    assert_eq!(requests.window, Some(secs(24 * 60 * 60)));
    let tokens = quota(&report, Dimension::Tokens);
    assert_eq!(tokens.limit, Some(18_000));
    assert_eq!(tokens.remaining, Some(17_997));
    assert_eq!(tokens.reset_after, Some(ms(7660)));
    assert_eq!(tokens.window, Some(secs(60)));
    let delay = ServerDelay::parse(&headers, SystemTime::now()).unwrap();
    assert_eq!(delay.delay, Some(secs(2)));
    assert_eq!(delay.source, Some(DelaySource::RetryAfter));
    // Automatically, Groq is read as OpenAI-style, without windows.
    assert_eq!(recognised_by(&headers), ["openai"]);
}

// ---- Anthropic -----------------------------------------------------------------------------

const ANTHROPIC_RECORDED_200: &str = "
anthropic-ratelimit-input-tokens-limit: 80000
anthropic-ratelimit-input-tokens-remaining: 80000
anthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:59Z
anthropic-ratelimit-output-tokens-limit: 16000
anthropic-ratelimit-output-tokens-remaining: 16000
anthropic-ratelimit-output-tokens-reset: 2025-08-21T12:41:00Z
anthropic-ratelimit-requests-limit: 1000
anthropic-ratelimit-requests-remaining: 999
anthropic-ratelimit-requests-reset: 2025-08-21T12:40:59Z
anthropic-ratelimit-tokens-limit: 96000
anthropic-ratelimit-tokens-remaining: 96000
anthropic-ratelimit-tokens-reset: 2025-08-21T12:40:59Z
";

/// 2025-08-21T12:40:30Z.
const ANTHROPIC_NOW_MS: u64 = 1_755_780_030_000;

#[test]
fn anthropic_recorded_block_with_input_and_output_tokens() {
    let headers = block(ANTHROPIC_RECORDED_200);
    let report = AnthropicHeaders::new()
        .parse(&headers, at(ANTHROPIC_NOW_MS))
        .unwrap();
    assert_eq!(report.source, "anthropic");
    assert_eq!(report.quotas.len(), 4);
    let expect = [
        (Dimension::Requests, 1000, 999, 29),
        (Dimension::Tokens, 96_000, 96_000, 29),
        (Dimension::InputTokens, 80_000, 80_000, 29),
        (Dimension::OutputTokens, 16_000, 16_000, 30),
    ];
    for (dimension, limit, remaining, reset) in expect {
        let q = quota(&report, dimension);
        assert_eq!(q.limit, Some(limit), "{dimension}");
        assert_eq!(q.remaining, Some(remaining), "{dimension}");
        assert_eq!(q.reset_after, Some(secs(reset)), "{dimension}");
    }
    assert_eq!(recognised_by(&headers), ["anthropic"]);
}

#[test]
fn anthropic_clock_skew_is_bounded() {
    let headers = block(ANTHROPIC_RECORDED_200);
    // A client clock an hour behind would see every reset an hour away: bounded to 60 s.
    let behind = AnthropicHeaders::new()
        .parse(&headers, at(ANTHROPIC_NOW_MS - 3_600_000))
        .unwrap();
    assert!(behind
        .quotas
        .iter()
        .all(|q| q.reset_after == Some(secs(60))));
    // A client clock ahead sees the resets in the past: now.
    let ahead = AnthropicHeaders::new()
        .parse(&headers, at(ANTHROPIC_NOW_MS + 3_600_000))
        .unwrap();
    assert!(ahead.quotas.iter().all(|q| q.reset_after == Some(secs(0))));
    // The bound is configurable.
    let wide = AnthropicHeaders::new()
        .max_reset(secs(10))
        .parse(&headers, at(ANTHROPIC_NOW_MS))
        .unwrap();
    assert!(wide.quotas.iter().all(|q| q.reset_after == Some(secs(10))));
}

#[test]
fn anthropic_429_retry_after_in_whole_seconds() {
    let headers = block(
        "
retry-after: 17
anthropic-ratelimit-requests-remaining: 0
anthropic-ratelimit-requests-reset: 2025-08-21T12:40:47Z
",
    );
    let delay = ServerDelay::parse(&headers, at(ANTHROPIC_NOW_MS)).unwrap();
    assert_eq!(delay.delay, Some(secs(17)));
    let report = AnthropicHeaders::new()
        .parse(&headers, at(ANTHROPIC_NOW_MS))
        .unwrap();
    assert_eq!(quota(&report, Dimension::Requests).remaining, Some(0));
    assert_eq!(
        quota(&report, Dimension::Requests).reset_after,
        Some(secs(17))
    );
}

// ---- GitHub --------------------------------------------------------------------------------

const GITHUB_DOCS: &str = "
x-ratelimit-limit: 5000
x-ratelimit-remaining: 4990
x-ratelimit-used: 10
x-ratelimit-reset: 1700000000
x-ratelimit-resource: core
";

#[test]
fn github_documented_block_with_epoch_reset() {
    let headers = block(GITHUB_DOCS);
    let now = at(1_700_000_000_000 - 1_234_000);
    let report = GitHubHeaders::new().parse(&headers, now).unwrap();
    assert_eq!(report.source, "github");
    let q = quota(&report, Dimension::Requests);
    assert_eq!(q.limit, Some(5000));
    assert_eq!(q.remaining, Some(4990));
    assert_eq!(q.reset_after, Some(ms(1_234_000)));
    assert_eq!(q.name.as_deref(), Some("core"));
    assert_eq!(recognised_by(&headers), ["github"]);
}

#[test]
fn github_remaining_from_limit_and_used() {
    let headers = block(
        "
x-ratelimit-limit: 5000
x-ratelimit-used: 5000
",
    );
    let report = parse(&GitHubHeaders::new(), &headers);
    assert_eq!(quota(&report, Dimension::Requests).remaining, Some(0));
}

#[test]
fn github_secondary_limit_retry_after() {
    let headers = block(
        "
retry-after: 60
x-ratelimit-remaining: 4000
",
    );
    let delay = ServerDelay::parse(&headers, SystemTime::now()).unwrap();
    assert_eq!(delay.delay, Some(secs(60)));
}

// ---- OpenRouter ----------------------------------------------------------------------------

/// OpenRouter sends these inside its error body (`error.metadata.headers`), not as headers; a
/// caller (or a proxy) that lifts them into headers gets them read with the reset in epoch ms.
#[test]
fn openrouter_metadata_headers_with_epoch_millisecond_reset() {
    let headers = block(
        "
X-RateLimit-Limit: 50
X-RateLimit-Remaining: 0
X-RateLimit-Reset: 1791331200000
",
    );
    let now = at(1_791_331_200_000 - 42_000);
    let report = GitHubHeaders::new().parse(&headers, now).unwrap();
    let q = quota(&report, Dimension::Requests);
    assert_eq!((q.limit, q.remaining), (Some(50), Some(0)));
    assert_eq!(q.reset_after, Some(secs(42)));
}

// ---- IETF ----------------------------------------------------------------------------------

const IETF_CURRENT: &str = r#"
RateLimit-Policy: "burst";q=100;w=60,"daily";q=1000;w=86400
RateLimit: "default";r=50;t=30
"#;

#[test]
fn ietf_current_block() {
    let headers = block(IETF_CURRENT);
    let report = parse(&IetfHeaders::new(), &headers);
    assert_eq!(report.source, "ietf");
    assert_eq!(report.quotas.len(), 3);
    let named = |n: &str| {
        report
            .quotas
            .iter()
            .find(|q| q.name.as_deref() == Some(n))
            .unwrap()
    };
    let burst = named("burst");
    assert_eq!(burst.dimension, Dimension::Requests);
    assert_eq!((burst.limit, burst.window), (Some(100), Some(secs(60))));
    assert_eq!(burst.remaining, None, "no RateLimit item named burst");
    let daily = named("daily");
    assert_eq!(
        (daily.limit, daily.window),
        (Some(1000), Some(secs(86_400)))
    );
    let default = named("default");
    assert_eq!(default.remaining, Some(50));
    assert_eq!(default.reset_after, Some(secs(30)));
    assert_eq!(default.limit, None);
    assert_eq!(recognised_by(&headers), ["ietf"]);
}

#[test]
fn ietf_policy_and_limit_of_one_name_make_one_quota() {
    let headers = block(
        r#"
RateLimit-Policy: "bytes";q=65536;qu="content-bytes";w=10;pk=:AQID:, "conc";q=4;qu="concurrent-requests"
RateLimit: "bytes";r=0;t=7;unknown=1, "conc";r=3
"#,
    );
    let report = parse(&IetfHeaders::new(), &headers);
    assert_eq!(report.quotas.len(), 2);
    let bytes = quota(&report, Dimension::ContentBytes);
    assert_eq!((bytes.limit, bytes.remaining), (Some(65_536), Some(0)));
    assert_eq!(
        (bytes.reset_after, bytes.window),
        (Some(secs(7)), Some(secs(10)))
    );
    let conc = quota(&report, Dimension::ConcurrentRequests);
    assert_eq!((conc.limit, conc.remaining), (Some(4), Some(3)));
}

#[test]
fn ietf_older_draft_block() {
    let headers = block(
        "
RateLimit-Limit: 10
RateLimit-Remaining: 1
RateLimit-Reset: 7
",
    );
    let report = parse(&IetfHeaders::new(), &headers);
    let q = quota(&report, Dimension::Requests);
    assert_eq!(
        (q.limit, q.remaining, q.reset_after),
        (Some(10), Some(1), Some(secs(7)))
    );
    assert_eq!(recognised_by(&headers), ["ietf"]);
}

#[test]
fn ietf_older_draft_limit_with_policies_and_dictionary_form() {
    let headers = block("RateLimit-Limit: 10, 10;w=1, 1000;w=3600");
    let report = parse(&IetfHeaders::new(), &headers);
    assert_eq!(quota(&report, Dimension::Requests).limit, Some(10));

    let headers = block("RateLimit: limit=10, remaining=0, reset=7");
    let report = parse(&IetfHeaders::new(), &headers);
    let q = quota(&report, Dimension::Requests);
    assert_eq!(
        (q.limit, q.remaining, q.reset_after),
        (Some(10), Some(0), Some(secs(7)))
    );
}

// ---- Retry-After and friends ---------------------------------------------------------------

#[test]
fn retry_after_in_every_form() {
    let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:57:59 GMT").unwrap();
    let cases = [
        ("retry-after: 120", secs(120), DelaySource::RetryAfter),
        (
            "retry-after: Fri, 31 Dec 1999 23:59:59 GMT",
            secs(120),
            DelaySource::RetryAfter,
        ),
        ("retry-after: 1.5", ms(1500), DelaySource::RetryAfter),
        (
            "retry-after-ms: 1500.5",
            std::time::Duration::from_micros(1_500_500),
            DelaySource::RetryAfterMs,
        ),
        (
            "grpc-retry-pushback-ms: 250",
            ms(250),
            DelaySource::GrpcRetryPushbackMs,
        ),
    ];
    for (line, delay, source) in cases {
        let parsed = ServerDelay::parse(&block(line), now).unwrap();
        assert_eq!(parsed.delay, Some(delay), "{line}");
        assert_eq!(parsed.source, Some(source), "{line}");
    }
}

#[test]
fn retry_after_ms_is_preferred_over_retry_after() {
    let headers = block("retry-after: 6\nretry-after-ms: 5500");
    let parsed = ServerDelay::parse(&headers, SystemTime::now()).unwrap();
    assert_eq!(parsed.delay, Some(ms(5500)));
}

#[test]
fn x_should_retry_and_negative_pushback() {
    let parsed = ServerDelay::parse(&block("x-should-retry: false"), SystemTime::now()).unwrap();
    assert_eq!((parsed.delay, parsed.should_retry), (None, Some(false)));
    let parsed = ServerDelay::parse(&block("x-should-retry: true"), SystemTime::now()).unwrap();
    assert_eq!(parsed.should_retry, Some(true));
    let parsed =
        ServerDelay::parse(&block("grpc-retry-pushback-ms: -1"), SystemTime::now()).unwrap();
    assert_eq!((parsed.delay, parsed.should_retry), (None, Some(false)));
    assert_eq!(
        ServerDelay::parse(&HeaderMap::new(), SystemTime::now()),
        None
    );
}

#[test]
fn no_parser_recognises_a_response_without_rate_limit_headers() {
    let headers = block("content-type: application/json\nx-request-id: req_123");
    assert!(recognised_by(&headers).is_empty());
}
