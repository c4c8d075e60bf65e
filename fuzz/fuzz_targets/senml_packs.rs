//! Outside bytes of a priced MQTT topic: SenML packs with an encrypted value (`m2m_core::senml`),
//! the COSE_Sign1 around them (`m2m_node::mqtt::pack`), wrapped keys (`m2m_core::key_wrap`) and
//! payment messages (key id + MQTT 5 user properties, `m2m_node::mqtt::wire::read_payment`).
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
    // A payment message: the first byte sizes the key id, the rest are NUL-separated user
    // property names and values.
    if let Some((&size, rest)) = data.split_first() {
        let (key_id, rest) = rest.split_at(usize::from(size).min(rest.len()));
        let texts: Vec<String> = rest
            .split(|b| *b == 0)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        let properties: Vec<(String, String)> = texts
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
            .collect();
        if let Ok(message) = m2m_node::mqtt::wire::read_payment(key_id, &properties) {
            assert_eq!(message.key_id, key_id);
            assert!(!key_id.is_empty() && key_id.len() <= m2m_node::mqtt::wire::MAX_KEY_ID);
        }
    }
});
