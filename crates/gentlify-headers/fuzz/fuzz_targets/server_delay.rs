#![no_main]

use gentlify_core::MAX_SERVER_DELAY;
use gentlify_headers::ServerDelay;
use gentlify_headers_fuzz::input;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "grpc-retry-pushback-ms",
    "x-should-retry",
];

fuzz_target!(|data: &[u8]| {
    let (headers, now) = input(data, NAMES);
    if let Some(delay) = ServerDelay::parse(&headers, now) {
        assert!(delay.delay.is_none_or(|d| d <= MAX_SERVER_DELAY));
        assert_eq!(delay.delay.is_some(), delay.source.is_some());
    }
});
