//! `IoTDisco` claim strings (what a QR code or an owner's command line hands the registry):
//! decoding arbitrary text never panics, and a decoded string re-encodes to text that decodes
//! to the same tags.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_core::discovery::{decode_claim, encode_claim};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tags) = decode_claim(text) {
        let again = encode_claim(&tags);
        assert_eq!(decode_claim(&again).expect("re-decode"), tags);
    }
});
