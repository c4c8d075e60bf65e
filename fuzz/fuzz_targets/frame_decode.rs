//! Compact frames: decoding never panics, and whatever decodes re-encodes to the same bytes
//! (one encoding per value, so no two byte strings mean the same voucher).
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_core::codec::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.to_bytes(), data, "non-canonical encoding accepted");
    }
});
