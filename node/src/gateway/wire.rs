//! What clients send the gateway, decoded: the body of `POST /sessions`, the body of a tick,
//! and the session credential of a `CONNECT`. Kept apart from the handlers so the fuzzer can
//! reach every decoder of outside bytes.

use serde::Deserialize;

/// `POST /sessions`: a tick chain, or `{"lightning": true}` for keysend payments.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OpenSession {
    /// A session paid by hash-chain ticks.
    #[serde(rename_all = "camelCase")]
    Ticks {
        /// `c_n`, hex.
        anchor: alloy::primitives::B256,
        /// Ticks in the chain.
        length: u32,
    },
    /// A session paid over Lightning (`lightning: false` is refused).
    Lightning {
        /// Must be true.
        lightning: bool,
    },
}

/// `POST /sessions/{id}/ticks`.
#[derive(Debug, Deserialize)]
pub struct TickBody {
    /// The tick's preimage, hex.
    pub preimage: alloy::primitives::B256,
    /// Ticks this preimage proves (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The session id of `Proxy-Authorization: M2M <id>`.
pub fn session_of_authorization(value: &str) -> Option<u64> {
    value.strip_prefix("M2M ")?.trim().parse().ok()
}
