//! Starting anvil on a free loopback port, stopped when its handle drops.
//!
//! alloy's `Anvil` launcher does the spawning, port discovery and kill-on-drop; we add locating
//! the pinned binary, a typed error, and the reaper (anvil also dies when we are killed).

use alloy::node_bindings::{Anvil, AnvilInstance};

use super::{Foundry, ReapOnExit, ToolError};

/// A running anvil. Dropping it stops the process.
#[derive(Debug)]
pub struct AnvilHandle {
    instance: AnvilInstance,
    // Dropped after `instance` has stopped anvil (fields drop in declaration order).
    _reaper: ReapOnExit,
}

impl AnvilHandle {
    /// The HTTP JSON-RPC endpoint, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        self.instance.endpoint()
    }

    /// The chain id anvil was started with.
    pub fn configured_chain_id(&self) -> u64 {
        self.instance.chain_id()
    }

    /// The loopback port anvil listens on.
    pub fn port(&self) -> u16 {
        self.instance.port()
    }

    /// The alloy instance, for its pre-funded development keys and addresses.
    pub fn instance(&self) -> &AnvilInstance {
        &self.instance
    }
}

/// Starts the pinned anvil on `127.0.0.1` with an OS-chosen free port and the given chain id.
pub fn start_anvil(foundry: &Foundry, chain_id: u64) -> Result<AnvilHandle, ToolError> {
    start_anvil_on(foundry, chain_id, 0)
}

/// Starts the pinned anvil on `127.0.0.1:port` (0 = any free port).
pub fn start_anvil_on(
    foundry: &Foundry,
    chain_id: u64,
    port: u16,
) -> Result<AnvilHandle, ToolError> {
    crate::tls::install_crypto_provider(); // callers talk to anvil through reqwest next
    let instance = Anvil::at(&foundry.anvil)
        .host("127.0.0.1")
        .port(port)
        .chain_id(chain_id)
        .timeout(30_000)
        .try_spawn()
        .map_err(|e| ToolError::Start {
            tool: "anvil",
            detail: e.to_string(),
        })?;
    let reaper = ReapOnExit::register(instance.child().id());
    Ok(AnvilHandle {
        instance,
        _reaper: reaper,
    })
}
