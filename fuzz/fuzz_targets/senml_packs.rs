//! Outside bytes of a priced MQTT topic: SenML packs with an encrypted value (`m2m_core::senml`),
//! the COSE_Sign1 around them (`m2m_node::mqtt::pack`) and wrapped keys (`m2m_core::key_wrap`).
//! Nothing panics; a pack or a wrap that reads opens with a wrong key only to a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_core::{key_wrap, senml};

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = senml::read(data) {
        // No key is right for bytes made up by the fuzzer (and none may panic).
        let _ = sealed.open(&[0; 32]);
    }
    let _ = m2m_node::mqtt::pack::verify(data, Default::default());
    let parties = key_wrap::WrapParties {
        seller: [1; 20],
        buyer: [2; 20],
    };
    assert!(key_wrap::unwrap(&[0; 32], &parties, data).is_err());
});
