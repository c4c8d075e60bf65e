//! Outside bytes at the gateway: the body of `POST /sessions`, the body of a tick, the session
//! credential of a `CONNECT`, and the `upstreams` rules of its configuration. Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_node::gateway::egress::Egress;
use m2m_node::gateway::wire::{OpenSession, TickBody, session_of_authorization};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<OpenSession>(data);
    let _ = serde_json::from_slice::<TickBody>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = session_of_authorization(text);
        let _ = text.parse::<Egress>();
    }
});
