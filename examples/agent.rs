//! Embedding the device agent: everything `agent.toml` declares, started through the one front
//! door, its events printed as JSON lines, an orderly stop on Ctrl-C.
//! Run: `M2M_PASSPHRASE=… cargo run --example agent -- DATA_DIR agent.toml`

use m2m::node::agent::{Agent, AgentConfig};
use m2m::wallet::Passphrase;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(data_dir), Some(config)) = (args.next(), args.next()) else {
        return Err("usage: agent DATA_DIR AGENT_TOML (passphrase in M2M_PASSPHRASE)".into());
    };
    let agent = Agent::builder()
        .data_dir(data_dir)
        .passphrase(Passphrase::new(std::env::var("M2M_PASSPHRASE")?)?)
        .config(AgentConfig::load(config.as_ref())?)
        .build()
        .await?;
    println!(
        "EVM seller {:?}, satoshi seller {:?}",
        agent.evm_listen(),
        agent.btc_listen()
    );
    let mut events = agent.events();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Ok(event) = events.recv() => println!("{}", serde_json::to_string(&event)?),
        }
    }
    let report = agent.stop().await;
    println!(
        "stopped: {} EVM channel(s) claimed {:?}",
        report.evm_claimed, report.problems
    );
    Ok(())
}
