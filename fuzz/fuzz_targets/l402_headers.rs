//! Outside bytes of L402: the `Authorization` redemption header, the `WWW-Authenticate`
//! challenge a buyer reads, and raw macaroons (libmacaroons' V2 binary format). Nothing panics;
//! a macaroon that decodes encodes back to bytes that decode to the same macaroon.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_node::l402_wire::{Macaroon, parse_authorization, parse_challenge};

fuzz_target!(|data: &[u8]| {
    if let Ok(macaroon) = Macaroon::decode(data) {
        assert_eq!(Macaroon::decode(&macaroon.encode()).ok(), Some(macaroon.clone()));
        let _ = macaroon.verify(&[0; 32]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((macaroon, _preimage)) = parse_authorization(text) {
            assert_eq!(Macaroon::decode(&macaroon.encode()).ok(), Some(macaroon));
        }
        let _ = parse_challenge(text);
    }
});
