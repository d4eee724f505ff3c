#![no_main]

use gentlify_core::MAX_SERVER_DELAY;
use gentlify_headers::{IetfHeaders, ParseHeaders};
use gentlify_headers_fuzz::{check, input};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

fuzz_target!(|data: &[u8]| {
    let (headers, now) = input(data, NAMES);
    check(IetfHeaders::new().parse(&headers, now), MAX_SERVER_DELAY);
});
