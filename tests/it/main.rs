//! Integration tests of the whole node against real local tools (one test binary, as the
//! architecture prescribes). Tools are provisioned on first use and cached per user.

mod agent;
#[cfg(feature = "lightning")]
mod agent_lightning;
mod agent_mqtt;
#[cfg(feature = "lightning")]
mod agent_mqtt_lightning;
mod anvil;
mod bitcoind;
mod browser;
mod btc_channel;
mod btc_cli;
mod btc_http;
mod btc_watcher;
mod children;
mod cli;
mod crash_soak;
mod crash_soak_legs;
mod dashboard;
mod evm_sender;
mod gateway;
#[cfg(feature = "lightning")]
mod l402;
#[cfg(feature = "lightning")]
mod lightning;
#[cfg(feature = "lightning")]
mod ln_cli;
#[cfg(feature = "lightning")]
mod ln_gateway;
#[cfg(feature = "lightning")]
mod ln_restore;
mod metrics;
mod mqtt;
mod mqtt_hostile;
mod mqtt_late;
#[cfg(feature = "lightning")]
mod mqtt_lightning;
mod mqtt_paid;
mod mqtt_ticks;
mod paid_http;
mod paid_http_hostile;
mod payer_withdraw;
mod process_pairs;
mod restore;
mod seller_downtime;
mod settlement;
mod sim;
mod solc_shim;
mod support;
mod tls;
mod x402_client;
mod x402_http_interop;
mod xmpp;
mod xmpp_registry;
