#![no_main]

use gentlify_core::MAX_SERVER_DELAY;
use gentlify_headers::parse_go_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(d) = parse_go_duration(text) {
            assert!(d <= MAX_SERVER_DELAY);
        }
    }
});
