#![no_main]

use std::time::Duration;

use gentlify_headers::{AnthropicHeaders, ParseHeaders};
use gentlify_headers_fuzz::{check, input};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-reset",
];

fuzz_target!(|data: &[u8]| {
    let (headers, now) = input(data, NAMES);
    check(
        AnthropicHeaders::new().parse(&headers, now),
        Duration::from_secs(60),
    );
});
