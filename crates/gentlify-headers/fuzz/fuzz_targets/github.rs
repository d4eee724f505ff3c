#![no_main]

use std::time::Duration;

use gentlify_headers::{GitHubHeaders, ParseHeaders};
use gentlify_headers_fuzz::{check, input};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
];

fuzz_target!(|data: &[u8]| {
    let (headers, now) = input(data, NAMES);
    check(
        GitHubHeaders::new().parse(&headers, now),
        Duration::from_secs(3600),
    );
});
