//! Arbitrary bytes as a decrypted message: the header reader and the typed event parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wecom_sdk::{parse_event, parse_header};

fuzz_target!(|data: &[u8]| {
    let header = parse_header(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // Both read the same elements: when the event parses, its header is what parse_header read.
        if let (Ok(parsed), Ok(header)) = (parse_event(text), header) {
            assert_eq!(parsed.header, header);
        }
    }
});
