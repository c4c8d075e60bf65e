//! Stored channel records: decoding arbitrary bytes never panics, and a decoded record
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_core::ChannelId;
use m2m_core::records::{decode_payee, decode_payer, encode_payee, encode_payer};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode_payer(data) {
        assert_eq!(encode_payer(&record).as_slice(), data);
    }
    if let Ok(record) = decode_payee(ChannelId([1; 32]), data) {
        // Flags are 0/1 and unused fields zero in canonical form; compare what decoding kept.
        let again = decode_payee(ChannelId([1; 32]), &encode_payee(&record)).expect("re-decode");
        assert_eq!(again, record);
    }
});
