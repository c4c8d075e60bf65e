//! Configuration files as an operator (or a tampered disk) may write them: `agent.toml`,
//! `seller.toml`, `gateway.toml`, and the pins inside them. Nothing panics: every input is a
//! configuration or an error naming what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_node::agent::AgentConfig;
use m2m_node::gateway::GatewayConfig;
use m2m_node::seller::SellerConfig;
use m2m_node::tls::Pin;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = AgentConfig::parse(text) {
        assert!(config.trust().is_ok(), "a valid config has consistent pins");
    }
    let _ = SellerConfig::parse(text);
    let _ = GatewayConfig::parse(text);
    let _ = text.parse::<Pin>();
});
