//! One simulator run: local chain, fleet, paying phase with faults, settlement, checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use m2m_contracts::bindings::TestToken;
use m2m_node::buyer::{BuyerError, BuyerOptions};
use m2m_node::seller::SellerConfig;
use m2m_node::tools::{AnvilHandle, Foundry, start_anvil};
use m2m_node::x402::types::PaymentRequired;
use m2m_wallet::Signer;
use m2m_wallet::topup::{EvmAsset, EvmTopUp};
use rand::{Rng, SeedableRng};

use crate::adversary::{ForgeryOutcome, OverchargingSeller, attempt, voucher_payload};
use crate::events::{Outcome, Recorder, Sample, resident_bytes};
use crate::fleet::{SimBuyer, SimSeller, new_device};
use crate::proxy::FaultProxy;
use crate::roaming::{self, Hotspot};
use crate::scenario::Scenario;
use crate::{SimError, check, report};

/// Where the report goes and whether to show progress.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder (created).
    pub out_dir: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The outcome of a run (also written to `summary.json`).
pub use report::RunReport;

pub(crate) const CHAIN_ID: u64 = 31337;
const ROUTES: [&str; 2] = ["/temperature", "/humidity"];

/// The local chain and the account that plays "the device owner" (tops devices up).
pub(crate) struct Chain {
    pub(crate) anvil: AnvilHandle,
    pub(crate) owner: DynProvider,
    pub(crate) owner_address: Address,
    pub(crate) token: Address,
    pub(crate) settlement: Address,
    pub(crate) first_block: u64,
    /// Who sends for other legs sharing this chain: their transactions are not the EVM leg's.
    pub(crate) other_legs: Arc<std::sync::Mutex<std::collections::HashSet<Address>>>,
}

/// The chain as a leg of its own sees it: anvil's account `index` as the owner who funds the
/// leg's devices, and the settlement contract. A leg that deploys its own token keeps its
/// units apart from every other leg's on the same chain (and one anvil is one process less).
pub(crate) struct SharedChain {
    pub(crate) endpoint: String,
    pub(crate) owner: DynProvider,
    pub(crate) settlement: Address,
    /// The leg adds every device that sends transactions (its owner is in already).
    pub(crate) senders: Arc<std::sync::Mutex<std::collections::HashSet<Address>>>,
}

impl Chain {
    /// The chain with anvil's account `index` (not 0: the EVM leg's owner) as another owner.
    pub(crate) fn shared_with(&self, index: usize) -> Result<SharedChain, SimError> {
        let key = PrivateKeySigner::from(self.anvil.instance().keys()[index].clone());
        let url = self
            .anvil
            .endpoint()
            .parse()
            .map_err(|_| SimError::Setup("anvil endpoint".into()))?;
        self.other_legs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.address());
        Ok(SharedChain {
            endpoint: self.anvil.endpoint(),
            senders: self.other_legs.clone(),
            owner: ProviderBuilder::new()
                .wallet(EthereumWallet::from(key))
                .connect_http(url)
                .erased(),
            settlement: self.settlement,
        })
    }
}

async fn start_chain() -> Result<Chain, SimError> {
    let foundry = Foundry::ensure().map_err(|e| SimError::Setup(format!("tools: {e}")))?;
    let anvil =
        start_anvil(&foundry, CHAIN_ID).map_err(|e| SimError::Setup(format!("anvil: {e}")))?;
    let key = PrivateKeySigner::from(anvil.instance().keys()[0].clone());
    let owner_address = key.address();
    let url = anvil
        .endpoint()
        .parse()
        .map_err(|_| SimError::Setup("anvil endpoint".into()))?;
    let owner = ProviderBuilder::new()
        .wallet(EthereumWallet::from(key))
        .connect_http(url)
        .erased();
    let deployment = m2m_contracts::deploy::install_canonical(&owner)
        .await
        .map_err(|e| SimError::Setup(format!("contracts: {e}")))?;
    let token = m2m_contracts::deploy::deploy_test_token(&owner)
        .await
        .map_err(|e| SimError::Setup(format!("token: {e}")))?;
    let first_block = owner.get_block_number().await.map_err(SimError::rpc)?;
    Ok(Chain {
        anvil,
        owner,
        owner_address,
        token,
        settlement: deployment.settlement,
        first_block,
        other_legs: Arc::default(),
    })
}

impl Chain {
    pub(crate) async fn set_eth(&self, who: Address, wei: u128) -> Result<(), SimError> {
        let _: serde_json::Value = self
            .owner
            .raw_request("anvil_setBalance".into(), (who, U256::from(wei)))
            .await
            .map_err(SimError::rpc)?;
        Ok(())
    }

    /// A new device whose owner topped it up with `amount` test tokens through its EIP-681 request.
    async fn topped_up_device(
        &self,
        amount: u128,
    ) -> Result<Arc<m2m_wallet::DeviceKeys>, SimError> {
        let keys = new_device()?;
        let request = EvmTopUp {
            to: keys.evm_address(),
            chain_id: CHAIN_ID,
            asset: EvmAsset::Erc20 { token: self.token },
            amount: Some(U256::from(amount)),
        };
        self.pay_top_up(&request.to_string()).await?;
        Ok(keys)
    }

    /// The owner pays a device's EIP-681 top-up request, read from its URI like a wallet would.
    async fn pay_top_up(&self, uri: &str) -> Result<(), SimError> {
        let request: EvmTopUp = uri
            .parse()
            .map_err(|e| SimError::Setup(format!("{uri}: {e}")))?;
        let (EvmAsset::Erc20 { token }, Some(amount)) = (request.asset, request.amount) else {
            return Err(SimError::Setup(format!("unexpected top-up request {uri}")));
        };
        crate::confirm(TestToken::new(token, &self.owner).transfer(request.to, amount)).await?;
        Ok(())
    }
}

/// Runs `scenario` to the end and writes the report.
pub async fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunReport, SimError> {
    std::fs::create_dir_all(&options.out_dir)
        .map_err(|e| SimError::Output(options.out_dir.clone(), e))?;
    let devices_dir =
        tempfile::tempdir().map_err(|e| SimError::Output(options.out_dir.clone(), e))?;
    let rss_before = resident_bytes();
    let chain = start_chain().await?;
    // The Bitcoin leg runs beside the EVM one, on its own regtest node.
    let bitcoin_leg = tokio::spawn(crate::bitcoin::run_leg(
        scenario.bitcoin.clone(),
        Duration::from_secs(scenario.duration_secs),
        scenario.seed,
        devices_dir.path().to_path_buf(),
    ));
    // So does the Lightning leg, on another.
    let lightning_leg = tokio::spawn(crate::lightning::run_leg(
        scenario.lightning.clone(),
        Duration::from_secs(scenario.duration_secs),
        scenario.seed,
        devices_dir.path().to_path_buf(),
    ));
    // And the MQTT leg, on its own broker, on this chain with a token of its own.
    let mqtt_leg = tokio::spawn(crate::mqtt_leg::run_leg(
        scenario.mqtt.clone(),
        chain.shared_with(1)?,
        Duration::from_secs(scenario.duration_secs),
        devices_dir.path().to_path_buf(),
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(scenario.seed);

    // Sellers (honest ones behind fault proxies), then the overcharging ones.
    let honest = scenario.sellers.count - scenario.faults.overcharging_sellers;
    let mut sellers = Vec::with_capacity(honest);
    let mut proxies = Vec::with_capacity(honest);
    for index in 0..honest {
        let keys = new_device()?;
        chain.set_eth(keys.evm_address(), 10u128.pow(21)).await?;
        let config = seller_config(scenario, &chain)?;
        let seller = SimSeller::start(
            keys,
            devices_dir.path().join(format!("seller-{index}")),
            config,
        )
        .await?;
        let delay = Duration::from_millis(scenario.faults.delay_ms);
        let proxy = FaultProxy::start(
            seller.addr,
            scenario.faults.lost_response_rate,
            delay,
            rng.random(),
        )
        .await
        .map_err(|e| SimError::Setup(format!("proxy: {e}")))?;
        proxies.push(proxy);
        sellers.push(seller);
    }
    let mut urls: Vec<String> = proxies
        .iter()
        .map(|p| format!("http://{}", p.addr))
        .collect();
    let honest_terms = probe_terms(&format!("{}{}", urls[0], ROUTES[0])).await?;
    let mut cheats = Vec::new();
    for _ in 0..scenario.faults.overcharging_sellers {
        let cheat = new_device()?;
        let mut terms = honest_terms.clone();
        for offer in &mut terms.accepts {
            offer.pay_to = cheat.evm_address().to_checksum(None);
            if let Some(extra) = offer.extra.as_mut().and_then(|e| e.as_object_mut()) {
                extra.insert("receiverAuthorizer".into(), offer.pay_to.clone().into());
            }
        }
        let server = OverchargingSeller::start(terms)
            .await
            .map_err(|e| SimError::Setup(e.to_string()))?;
        urls.push(format!("http://{}", server.addr));
        cheats.push((cheat, server));
    }

    // Buyers, topped up by their owner through EIP-681 requests.
    let price = scenario.sellers.price;
    let payers = scenario.buyers.count + scenario.gateways.clients;
    let buyers_total = U256::from(scenario.buyers.top_up) * U256::from(payers);
    crate::confirm(
        TestToken::new(chain.token, &chain.owner).mint(chain.owner_address, buyers_total),
    )
    .await?;
    let mut buyers = Vec::with_capacity(scenario.buyers.count);
    for index in 0..scenario.buyers.count {
        let keys = chain.topped_up_device(scenario.buyers.top_up).await?;
        let options = BuyerOptions {
            deposit_readings: scenario.buyers.deposit_readings,
            max_price: Some(price * 10),
            ..BuyerOptions::default()
        };
        let caps = m2m_node::budget::BudgetCaps {
            per_request: price * 10,
            per_payee_per_hour: scenario.buyers.budget_per_peer_per_hour,
            per_day: scenario.buyers.top_up,
        };
        buyers.push(Arc::new(SimBuyer::new(
            keys,
            &devices_dir.path().join(format!("buyer-{index}")),
            options,
            Some(caps),
        )?));
    }
    // Hotspots and the devices roaming between them (topped up the same way).
    let mut hotspots = Vec::with_capacity(scenario.gateways.count);
    let mut hotspot_keys = Vec::with_capacity(scenario.gateways.count);
    for index in 0..scenario.gateways.count {
        let keys = new_device()?;
        chain.set_eth(keys.evm_address(), 10u128.pow(21)).await?;
        let config = gateway_config(scenario, &chain)?;
        hotspots.push(
            Hotspot::start(
                config,
                keys.clone(),
                &devices_dir.path().join(format!("gateway-{index}")),
            )
            .await?,
        );
        hotspot_keys.push(keys);
    }
    let mut roamers = Vec::with_capacity(scenario.gateways.clients);
    for index in 0..scenario.gateways.clients {
        let keys = chain.topped_up_device(scenario.buyers.top_up).await?;
        roamers.push(Arc::new(SimBuyer::new(
            keys,
            &devices_dir.path().join(format!("roamer-{index}")),
            BuyerOptions::default(),
            None,
        )?));
    }
    let devices = sellers.len() + cheats.len() + buyers.len() + hotspots.len() + roamers.len();
    let rss_after = resident_bytes();

    // Who plays which part, and which sellers each buyer deals with.
    let plans: Vec<(Role, Vec<usize>)> = (0..buyers.len())
        .map(|index| {
            let role = if index < scenario.faults.forging_buyers {
                Role::Forger
            } else if index < scenario.faults.forging_buyers + scenario.faults.withdrawing_buyers {
                Role::Withdrawer
            } else {
                Role::Honest
            };
            (
                role,
                suppliers(
                    &mut rng,
                    urls.len(),
                    scenario.buyers.sellers_per_buyer,
                    role,
                ),
            )
        })
        .collect();

    // Opening channels: every buyer's first reading from each honest supplier (a deposit the
    // seller relays on chain), before the clock of the paying phase starts.
    let opening = Instant::now();
    let mut openers = tokio::task::JoinSet::new();
    for (buyer, (_, suppliers)) in buyers.iter().zip(&plans) {
        let targets: Vec<String> = suppliers
            .iter()
            .filter(|s| **s < honest)
            .map(|s| format!("{}{}", urls[*s], ROUTES[0]))
            .collect();
        let buyer = buyer.clone();
        openers.spawn(async move {
            let mut opened = 0u64;
            for url in targets {
                opened += u64::from(buyer.buyer.get(&url).await.is_ok());
            }
            opened
        });
    }
    let mut channels_opened = 0;
    while let Some(opened) = openers.join_next().await {
        channels_opened += opened.unwrap_or(0);
    }
    let opening = (channels_opened, opening.elapsed());

    // The paying phase.
    let recorder = Arc::new(Recorder::new());
    let duration = Duration::from_secs(scenario.duration_secs);
    let deadline = Instant::now() + duration;
    let forged = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for (index, (buyer, (role, suppliers))) in buyers.iter().zip(plans).enumerate() {
        tasks.push(tokio::spawn(buyer_loop(BuyerTask {
            index: index as u32,
            buyer: buyer.clone(),
            suppliers,
            urls: urls.clone(),
            honest_sellers: honest,
            exact_share: scenario.buyers.exact_share,
            rate: scenario.buyers.readings_per_sec,
            seed: rng.random(),
            deadline,
            recorder: recorder.clone(),
            role,
            others: buyers.iter().map(|b| b.keys.evm_address()).collect(),
            terms: honest_terms.clone(),
            forged: forged.clone(),
            chain: ChainRef {
                rpc: chain.anvil.endpoint(),
                settlement: chain.settlement,
            },
            halfway: Instant::now() + duration / 2,
        })));
    }
    let internet = roaming::upstream()
        .await
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let hotspot_urls: Vec<String> = hotspots.iter().map(|h| h.url.clone()).collect();
    let roaming_tasks: Vec<_> = roamers
        .iter()
        .map(|roamer| {
            tokio::spawn(roaming::roam(
                roamer.buyer.clone(),
                hotspot_urls.clone(),
                internet,
                Duration::from_secs(scenario.gateways.session_secs),
                (recorder.started(), deadline),
                rng.random(),
            ))
        })
        .collect();
    let progress = report::Progress::new(options.progress, scenario.duration_secs);
    let mut samples = Vec::new();
    let mut last_block = chain.first_block;
    let (mut gas, mut transactions) = (0u64, 0u64);
    let mut next_restart = Instant::now() + restart_period(scenario);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        (gas, transactions) = chain_totals(&chain, &mut last_block, gas, transactions).await?;
        let paid = recorder.paid();
        samples.push(Sample {
            at_secs: recorder.elapsed().as_secs_f64(),
            paid,
            gas,
            transactions,
        });
        progress.tick(
            recorder.elapsed().as_secs(),
            paid,
            sellers.iter().map(|s| s.restarts).sum(),
        );
        if scenario.faults.seller_restart_every_secs > 0
            && Instant::now() >= next_restart
            && Instant::now() < deadline
        {
            let victim = rng.random_range(0..sellers.len());
            sellers[victim]
                .restart(Duration::from_millis(scenario.faults.seller_down_ms))
                .await?;
            next_restart = Instant::now() + restart_period(scenario);
        }
    }
    let mut withdrawals = Vec::new();
    for task in tasks {
        if let Some(withdrawal) = task.await.map_err(|e| SimError::Setup(e.to_string()))?? {
            withdrawals.push(withdrawal);
        }
    }
    progress.finish();
    let mut roamed = Vec::with_capacity(roaming_tasks.len());
    for task in roaming_tasks {
        roamed.push(task.await.map_err(|e| SimError::Setup(e.to_string()))?);
    }
    for hotspot in &hotspots {
        hotspot
            .gateway
            .seller()
            .claim_all()
            .await
            .map_err(|e| SimError::Setup(format!("final gateway claim: {e}")))?;
    }

    // Settle: every honest seller claims what it holds; withdrawals complete after the delay.
    for seller in &sellers {
        if let Some(live) = seller.seller() {
            live.claim_all()
                .await
                .map_err(|e| SimError::Setup(format!("final claim: {e}")))?;
        }
    }
    check::finalize_withdrawals(&chain, &withdrawals).await?;
    (gas, transactions) = chain_totals(&chain, &mut last_block, gas, transactions).await?;
    samples.push(Sample {
        at_secs: recorder.elapsed().as_secs_f64(),
        paid: recorder.paid(),
        gas,
        transactions,
    });

    let mut earners: Vec<check::Earner> = sellers
        .iter()
        .map(|seller| check::Earner {
            kind: "seller",
            address: seller.keys.evm_address(),
            seller: seller.seller().cloned(),
        })
        .collect();
    for (hotspot, keys) in hotspots.iter().zip(&hotspot_keys) {
        earners.push(check::Earner {
            kind: "gateway",
            address: keys.evm_address(),
            seller: Some(hotspot.gateway.seller().clone()),
        });
    }
    let payers: Vec<Arc<SimBuyer>> = buyers.iter().chain(&roamers).cloned().collect();
    let audit = check::conservation(&chain, &earners, &payers, &cheats, buyers_total).await?;
    drop(earners); // they hold the sellers, which are stopped below
    let roaming = report::Roaming::of(scenario, &hotspots, &audit, &roamed);
    for hotspot in hotspots {
        hotspot.stop().await;
    }
    let forgeries = ForgeryOutcome {
        refused: forged.0.load(Ordering::Relaxed),
        served: forged.1.load(Ordering::Relaxed),
    };
    let lost_responses = proxies
        .iter()
        .map(|p| p.dropped.load(Ordering::Relaxed))
        .sum();
    let restarts = sellers.iter().map(|s| s.restarts).sum();
    for seller in &mut sellers {
        seller.stop().await?;
    }
    let bitcoin = bitcoin_leg
        .await
        .map_err(|e| SimError::Setup(format!("bitcoin leg: {e}")))??;
    let lightning = lightning_leg
        .await
        .map_err(|e| SimError::Setup(format!("lightning leg: {e}")))??;
    let mqtt = mqtt_leg
        .await
        .map_err(|e| SimError::Setup(format!("mqtt leg: {e}")))??;
    let memory_per_device = match (rss_before, rss_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) / devices.max(1) as u64),
        _ => None,
    };
    let report = RunReport::new(report::Inputs {
        scenario,
        devices,
        events: recorder.events(),
        samples,
        duration,
        audit,
        forgeries,
        lost_responses,
        restarts,
        withdrawals: withdrawals.len(),
        memory_per_device,
        opening,
        roaming,
        bitcoin,
        lightning,
        mqtt,
    });
    report.write(&options.out_dir)?;
    Ok(report)
}

/// The sellers one buyer deals with: `count` distinct ones at random (all if 0). A withdrawer
/// always has the first seller, whose channel it withdraws from.
fn suppliers(rng: &mut rand::rngs::StdRng, sellers: usize, count: usize, role: Role) -> Vec<usize> {
    if count == 0 || count >= sellers {
        return (0..sellers).collect();
    }
    let mut chosen = rand::seq::index::sample(rng, sellers, count).into_vec();
    if role == Role::Withdrawer && !chosen.contains(&0) {
        chosen[0] = 0;
    }
    chosen
}

fn gateway_config(
    scenario: &Scenario,
    chain: &Chain,
) -> Result<m2m_node::gateway::GatewayConfig, SimError> {
    m2m_node::gateway::GatewayConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:{CHAIN_ID}\"\nasset = \"{}\"\n\
         price_per_minute = {}\nticks_per_voucher = {}\nupstreams = [\"127.0.0.1:*\"]\n[claim]\ncheck_secs = 1\non_shutdown = false\n",
        chain.anvil.endpoint(),
        chain.token,
        scenario.gateways.price_per_minute,
        scenario.gateways.ticks_per_voucher,
    ))
    .map_err(SimError::Setup)
}

fn restart_period(scenario: &Scenario) -> Duration {
    Duration::from_secs(scenario.faults.seller_restart_every_secs.max(1))
}

fn seller_config(scenario: &Scenario, chain: &Chain) -> Result<SellerConfig, SimError> {
    let routes: String = ROUTES
        .iter()
        .zip(["temperature", "humidity"])
        .map(|(path, sensor)| {
            format!(
                "[[route]]\npath = \"{path}\"\nprice = \"{}\"\nasset = \"{}\"\nsensor = \"{sensor}\"\n",
                scenario.sellers.price, chain.token
            )
        })
        .collect();
    SellerConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nrpc_url = \"{}\"\nnetwork = \"eip155:{CHAIN_ID}\"\nmin_deposit_readings = {}\n\
         [claim]\nthreshold = \"{}\"\ncheck_secs = 1\non_shutdown = false\n\
         [limits]\nrate_per_client = 1000000\nburst_per_client = 1000000\n{routes}",
        chain.anvil.endpoint(),
        scenario.buyers.deposit_readings,
        scenario.sellers.claim_threshold,
    ))
    .map_err(|e| SimError::Setup(format!("seller config: {e}")))
}

/// An honest seller's 402 terms (what the overcharging seller imitates and forgers target).
async fn probe_terms(url: &str) -> Result<PaymentRequired, SimError> {
    let response = reqwest::get(url)
        .await
        .map_err(|e| SimError::Setup(format!("probe {url}: {e}")))?;
    let header = response
        .headers()
        .get("PAYMENT-REQUIRED")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SimError::Setup("seller sent no PAYMENT-REQUIRED".into()))?;
    m2m_node::x402::headers::decode(header).map_err(|e| SimError::Setup(e.to_string()))
}

/// Adds the gas and transactions of blocks mined since `last_block`, leaving out the blocks of
/// other legs on the chain (anvil mines one transaction per block).
async fn chain_totals(
    chain: &Chain,
    last_block: &mut u64,
    mut gas: u64,
    mut transactions: u64,
) -> Result<(u64, u64), SimError> {
    let latest = chain
        .owner
        .get_block_number()
        .await
        .map_err(SimError::rpc)?;
    while *last_block < latest {
        *last_block += 1;
        if let Some(block) = chain
            .owner
            .get_block_by_number((*last_block).into())
            .full()
            .await
            .map_err(SimError::rpc)?
        {
            use alloy::network::TransactionResponse;
            let others = chain
                .other_legs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let ours = block
                .transactions
                .txns()
                .filter(|tx| !others.contains(&tx.from()))
                .count() as u64;
            if ours > 0 {
                gas += block.header.gas_used;
                transactions += ours;
            }
        }
    }
    Ok((gas, transactions))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Honest,
    Forger,
    Withdrawer,
}

#[derive(Clone)]
pub(crate) struct ChainRef {
    pub(crate) rpc: String,
    pub(crate) settlement: Address,
}

struct BuyerTask {
    index: u32,
    buyer: Arc<SimBuyer>,
    /// Indices into `urls` of the sellers this buyer deals with.
    suppliers: Vec<usize>,
    urls: Vec<String>,
    honest_sellers: usize,
    exact_share: f64,
    rate: f64,
    seed: u64,
    deadline: Instant,
    recorder: Arc<Recorder>,
    role: Role,
    others: Vec<Address>,
    terms: PaymentRequired,
    forged: Arc<(AtomicU64, AtomicU64)>,
    chain: ChainRef,
    halfway: Instant,
}

/// One buyer's life: readings at random sellers at exponential intervals; forgers also attack,
/// withdrawers start a timed withdrawal halfway.
async fn buyer_loop(task: BuyerTask) -> Result<Option<check::Withdrawal>, SimError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(task.seed);
    let http = reqwest::Client::new();
    let mut withdrawal = None;
    // Sellers this buyer caught misreporting: a real device stops asking them.
    let mut avoided = std::collections::HashSet::new();
    while Instant::now() < task.deadline {
        let gap = -rng.random::<f64>().max(1e-9).ln() / task.rate;
        tokio::time::sleep(Duration::from_secs_f64(gap.min(5.0))).await;
        if Instant::now() >= task.deadline {
            break;
        }
        // A withdrawer keeps to the first seller, whose channel it later withdraws from.
        let seller = match task.role {
            Role::Withdrawer => 0,
            _ => task.suppliers[rng.random_range(0..task.suppliers.len())],
        };
        if avoided.contains(&seller) {
            continue;
        }
        let url = format!(
            "{}{}",
            task.urls[seller],
            ROUTES[rng.random_range(0..ROUTES.len())]
        );
        let exact = seller < task.honest_sellers && rng.random::<f64>() < task.exact_share;
        let begun = Instant::now();
        let result = if exact {
            task.buyer.exact.get(&url).await
        } else {
            task.buyer.buyer.get(&url).await
        };
        let outcome = match result {
            Ok(fetched) if fetched.paid.as_ref().is_some_and(|(s, _)| s == "exact") => {
                Outcome::Exact
            }
            Ok(_) => Outcome::Voucher,
            Err(BuyerError::Refused { .. }) => Outcome::Refused,
            Err(BuyerError::SellerMisbehaved(_)) => Outcome::SellerCaught,
            Err(
                BuyerError::Budget(_)
                | BuyerError::PriceAboveLimit(_)
                | BuyerError::NoAcceptableOffer(_),
            ) => Outcome::BuyerRefused,
            Err(_) => Outcome::Failed,
        };
        task.recorder.record(task.index, begun, outcome);
        if outcome == Outcome::SellerCaught {
            avoided.insert(seller);
        }
        // Right after a voucher was accepted here, a voucher for one price is stale for sure.
        if task.role == Role::Forger && outcome == Outcome::Voucher && seller < task.honest_sellers
        {
            forge(&task, &http, &url, &mut rng).await;
        }
        if task.role == Role::Withdrawer && withdrawal.is_none() && Instant::now() >= task.halfway {
            withdrawal =
                check::start_withdrawal(&task.chain, &task.buyer.keys, &task.terms).await?;
        }
    }
    Ok(withdrawal)
}

/// A stale voucher on its own channel and a voucher for another buyer's channel signed with its
/// own key: both must be refused.
async fn forge(task: &BuyerTask, http: &reqwest::Client, url: &str, rng: &mut rand::rngs::StdRng) {
    let Ok(terms) = probe_terms(url).await else {
        return;
    };
    let me = task.buyer.keys.evm_address();
    let victim = task.others[rng.random_range(0..task.others.len())];
    let price: u128 = terms.accepts[0].amount.parse().unwrap_or(1);
    let attacks = [
        voucher_payload(CHAIN_ID, me, &terms, &*task.buyer.keys, price), // stale: the first reading again
        voucher_payload(CHAIN_ID, victim, &terms, &*task.buyer.keys, price * 3), // someone else's channel
    ];
    for (index, payload) in attacks.into_iter().enumerate() {
        let Some(payload) = payload else { continue };
        if index == 1 && victim == me {
            continue;
        }
        let counter = if attempt(http, url, &terms, payload).await {
            &task.forged.0
        } else {
            &task.forged.1
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
