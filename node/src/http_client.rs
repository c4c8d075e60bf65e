//! The HTTP clients every outgoing call goes through: a connect timeout and a whole-response
//! timeout on each, so a peer that accepts and then never answers (a hung seller, a wedged
//! chain node) costs one call its deadline instead of freezing the channel or task behind it.

use std::time::Duration;

use crate::tls::Trust;

/// Time to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a paid request or a chain RPC to answer in full.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client with [`CONNECT_TIMEOUT`] and `response_timeout`, keeping up to `idle_per_host`
/// idle connections per host (a buyer paying many requests reuses them).
pub fn client_with(response_timeout: Duration, idle_per_host: usize) -> reqwest::Client {
    client_trusting(response_timeout, idle_per_host, &Trust::default())
}

/// [`client_with`], checking the hosts `trust` pins against their pins (and the rest against
/// the system's roots).
pub fn client_trusting(
    response_timeout: Duration,
    idle_per_host: usize,
    trust: &Trust,
) -> reqwest::Client {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(response_timeout)
        .pool_max_idle_per_host(idle_per_host)
        .tcp_nodelay(true)
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&trust.client_config()))
        .build()
        // Building fails only when the TLS backend cannot start, and a preconfigured rustls
        // backend has nothing left to start.
        .unwrap_or_default()
}

/// The default client: [`CONNECT_TIMEOUT`], [`RESPONSE_TIMEOUT`].
pub fn client() -> reqwest::Client {
    client_with(RESPONSE_TIMEOUT, 32)
}

/// What a failed answer's body says, in one short line: the `message` (else `error`) of a JSON
/// body such as a seller's 503, or the start of a text body.
pub fn failure_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(text) = value["message"].as_str().or(value["error"].as_str())
    {
        return text.to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    text[..end].to_owned()
}
