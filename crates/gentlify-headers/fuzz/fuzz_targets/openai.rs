#![no_main]

use gentlify_core::MAX_SERVER_DELAY;
use gentlify_headers::{OpenAiHeaders, ParseHeaders};
use gentlify_headers_fuzz::{check, input};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-reset-tokens_usage_based",
];

fuzz_target!(|data: &[u8]| {
    let (headers, now) = input(data, NAMES);
    check(OpenAiHeaders::new().parse(&headers, now), MAX_SERVER_DELAY);
    check(OpenAiHeaders::groq().parse(&headers, now), MAX_SERVER_DELAY);
});
