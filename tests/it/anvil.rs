//! anvil started through our helper: free loopback port, real chain id over JSON-RPC, stopped on drop.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use alloy::providers::{Provider, ProviderBuilder};
use m2m::node::tools::{Foundry, start_anvil};

#[tokio::test]
async fn anvil_starts_on_a_free_loopback_port_and_answers_its_chain_id() {
    let foundry = Foundry::ensure().expect("provision local tools");
    let first = start_anvil(&foundry, 31337).unwrap();
    let second = start_anvil(&foundry, 4242).unwrap();
    assert_ne!(
        first.port(),
        second.port(),
        "each instance gets its own free port"
    );
    assert!(
        first.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        first.endpoint()
    );

    for (anvil, expected) in [(&first, 31337u64), (&second, 4242)] {
        let provider = ProviderBuilder::new().connect_http(anvil.endpoint().parse().unwrap());
        assert_eq!(provider.get_chain_id().await.unwrap(), expected);
        assert_eq!(anvil.configured_chain_id(), expected);
        assert_eq!(provider.get_block_number().await.unwrap(), 0);
    }

    let port = first.port();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "anvil still listening on {port} after its handle dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
