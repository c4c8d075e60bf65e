//! The Taproot script channel against a real regtest bitcoind: funded by the device's BDK wallet,
//! 10,000 vouchers, a co-signed close with balances exact to the satoshi, the refund path after
//! expiry, the watcher closing before expiry, and malformed input refused without a trace.

use std::sync::Arc;
use std::time::Instant;

use bitcoin::{Amount, FeeRate, Transaction};
use m2m::contracts::btc::{BtcChannelError, BtcVoucher, TaprootChannel};
use m2m::node::btc::channels::PayeePolicy;
use m2m::node::btc::{
    BitcoinRpc, BtcChannelsError, BtcWallet, PayeeChannels, PayerChannels, RpcError,
};
use m2m::node::datadir::DataDir;
use m2m::node::store::ChannelStore;
use m2m::node::tools::{BitcoindHandle, start_bitcoind};
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength};

/// One device: its keys, locked data directory, store and wallet.
pub struct BtcDevice {
    pub keys: Arc<DeviceKeys>,
    pub store: Arc<ChannelStore>,
    pub wallet: Arc<BtcWallet>,
    _data_dir: DataDir,
    _dir: tempfile::TempDir,
}

impl BtcDevice {
    pub fn new(rpc: &BitcoinRpc) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::open(dir.path()).unwrap();
        let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
        let keys = Arc::new(DeviceKeys::derive(&seed, Network::Regtest).unwrap());
        let store = Arc::new(ChannelStore::open(&data_dir).unwrap());
        let wallet = Arc::new(BtcWallet::open(&keys, store.clone(), rpc.clone()).unwrap());
        Self {
            keys,
            store,
            wallet,
            _data_dir: data_dir,
            _dir: dir,
        }
    }

    pub fn payer(&self) -> PayerChannels {
        PayerChannels::load(self.store.clone(), self.wallet.clone(), self.keys.clone()).unwrap()
    }

    pub fn payee(&self, rpc: &BitcoinRpc, policy: PayeePolicy) -> PayeeChannels {
        PayeeChannels::load(self.store.clone(), rpc.clone(), self.keys.clone(), policy).unwrap()
    }
}

const FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(500); // 2 sat/vB

/// A node, a payer with 50 spendable BTC, and a payee.
pub async fn setup() -> (BitcoindHandle, BtcDevice, BtcDevice) {
    let node = start_bitcoind()
        .await
        .expect("bitcoind (run scripts/bitcoind to build it)");
    let rpc = node.rpc().clone();
    let (payer, payee) = (BtcDevice::new(&rpc), BtcDevice::new(&rpc));
    let address = payer.keys.bitcoin_address().to_string();
    rpc.mine_to(1, &address).await.unwrap();
    // Coinbase outputs mature after 100 blocks; mine those elsewhere.
    mine(&rpc, 100).await;
    payer.wallet.sync().await.unwrap();
    assert_eq!(
        payer.wallet.balance().await.confirmed,
        Amount::from_int_btc(50)
    );
    (node, payer, payee)
}

pub async fn mine(rpc: &BitcoinRpc, blocks: u32) {
    // To a throwaway key, so mining changes no device's balance.
    static BURN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let burn = BURN.get_or_init(|| {
        let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
        DeviceKeys::derive(&seed, Network::Regtest)
            .unwrap()
            .bitcoin_address()
            .to_string()
    });
    rpc.mine_to(blocks, burn).await.unwrap();
}

/// Mines a block every `every` until the handle is aborted (so fundings confirm while a buyer
/// waits for them).
pub fn start_miner(rpc: &BitcoinRpc, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    let rpc = rpc.clone();
    tokio::spawn(async move {
        loop {
            mine(&rpc, 1).await;
            tokio::time::sleep(every).await;
        }
    })
}

/// Opens a channel of `capacity_sat` from `payer` to `payee`, expiring `blocks` from now, and
/// confirms its funding.
pub async fn opened(
    rpc: &BitcoinRpc,
    payer: &PayerChannels,
    payee: &PayeeChannels,
    capacity_sat: u64,
    blocks: u32,
) -> TaprootChannel {
    let expiry = rpc.block_count().await.unwrap() + blocks;
    let channel = payer
        .open(
            payee.payee_key(),
            Amount::from_sat(capacity_sat),
            expiry,
            FEE_RATE,
        )
        .await
        .unwrap();
    mine(rpc, 1).await;
    channel
}

pub fn policy(min_blocks_to_expiry: u32) -> PayeePolicy {
    PayeePolicy {
        min_blocks_to_expiry,
        ..PayeePolicy::default()
    }
}

async fn raw(rpc: &BitcoinRpc, txid: &bitcoin::Txid) -> Transaction {
    rpc.transaction(txid).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_vouchers_then_an_exact_close() {
    let (node, payer_device, payee_device) = setup().await;
    let rpc = node.rpc();
    let payer = payer_device.payer();
    let payee = payee_device.payee(rpc, policy(144));
    let capacity = Amount::from_sat(1_000_000);
    let tip = rpc.block_count().await.unwrap();
    let channel = payer
        .open(payee.payee_key(), capacity, tip + 1_000, FEE_RATE)
        .await
        .unwrap();
    let id = channel.id();
    let funding_tx = raw(rpc, &channel.terms().funding.outpoint.txid).await;
    let funding_fee = payer_device.wallet.fee_of(&funding_tx).await.unwrap();

    // Unconfirmed funding is not enough for this payee.
    assert!(matches!(
        payee.register(*channel.terms()).await,
        Err(BtcChannelsError::Funding { .. })
    ));
    mine(rpc, 1).await;
    assert_eq!(payee.register(*channel.terms()).await.unwrap(), id);

    let price = Amount::from_sat(50);
    let started = Instant::now();
    for _ in 0..10_000 {
        let voucher = payer.pay(&id, price).await.unwrap();
        payee.accept(&id, &voucher, price).await.unwrap();
    }
    let elapsed = started.elapsed();
    let paid = Amount::from_sat(500_000);
    assert_eq!(payee.state(&id).await.unwrap().0, paid);
    eprintln!(
        "btc channel: 10,000 payments in {:.2} s = {:.0} payments/s (payer sign + persist, payee verify + persist)",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );

    // The payee's state survives a reload from its store.
    let reloaded = payee_device.payee(rpc, policy(144));
    assert_eq!(reloaded.state(&id).await.unwrap().0, paid);

    let close_txid = reloaded.close(&id).await.unwrap();
    mine(rpc, 1).await;
    let close = raw(rpc, &close_txid).await;
    let close_fee = channel.terms().close_fee;
    assert_eq!(close.output[0].value, paid);
    assert_eq!(close.output[1].value, capacity - paid - close_fee);

    // Wallet balances, exact to the satoshi.
    payee_device.wallet.sync().await.unwrap();
    payer_device.wallet.sync().await.unwrap();
    let payee_balance = payee_device.wallet.balance().await;
    assert_eq!(payee_balance.confirmed, paid, "{payee_balance:?}");
    let payer_balance = payer_device.wallet.balance().await;
    assert_eq!(
        payer_balance.confirmed,
        Amount::from_int_btc(50) - funding_fee - paid - close_fee,
        "{payer_balance:?}"
    );

    let (funding_vb, close_vb) = (funding_tx.vsize(), close.vsize());
    eprintln!(
        "btc channel lifecycle: funding {funding_vb} vB + close {close_vb} vB = {} vB",
        funding_vb + close_vb
    );
    assert_eq!(
        close_vb, 204,
        "a script-path close: two signatures, two P2TR outputs"
    );
    assert!(
        funding_vb <= 160,
        "one key-path input, channel + change: {funding_vb} vB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_after_expiry_and_not_before() {
    let (node, payer_device, payee_device) = setup().await;
    let rpc = node.rpc();
    let payer = payer_device.payer();
    let payee_key = payee_device.payee(rpc, policy(10)).payee_key();
    let capacity = Amount::from_sat(200_000);
    let expiry = rpc.block_count().await.unwrap() + 20;
    let channel = payer
        .open(payee_key, capacity, expiry, FEE_RATE)
        .await
        .unwrap();
    let id = channel.id();
    mine(rpc, 1).await;
    let refund_fee = Amount::from_sat(400);

    // Before expiry: our code says when, and bitcoind refuses the signed refund anyway.
    assert!(matches!(
        payer.refund(&id, refund_fee).await,
        Err(BtcChannelsError::NotExpired { .. })
    ));
    let early = payer.signed_refund(&id, refund_fee).await.unwrap();
    match rpc.broadcast(&early).await {
        Err(RpcError::Node { message, .. }) => assert!(message.contains("non-final"), "{message}"),
        other => panic!("an early refund must be refused: {other:?}"),
    }

    let height = rpc.block_count().await.unwrap();
    mine(rpc, expiry - height).await;
    let refund_txid = payer.refund(&id, refund_fee).await.unwrap();
    mine(rpc, 1).await;
    let refund = raw(rpc, &refund_txid).await;
    assert_eq!(refund.output[0].value, capacity - refund_fee);
    assert_eq!(
        refund.input[0].witness.len(),
        3,
        "the refund leaf: one signature"
    );
    eprintln!("btc channel refund: {} vB", refund.vsize());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_closes_before_expiry_and_stale_spends_are_rejected() {
    let (node, payer_device, payee_device) = setup().await;
    let rpc = node.rpc();
    let payer = payer_device.payer();
    let payee = payee_device.payee(rpc, policy(10));
    let channel = opened(rpc, &payer, &payee, 300_000, 31).await;
    let expiry = channel.terms().parties.expiry_height;
    let id = channel.id();
    payee.register(*channel.terms()).await.unwrap();
    let price = Amount::from_sat(1_000);
    let mut vouchers = Vec::new();
    for _ in 0..5 {
        let voucher = payer.pay(&id, price).await.unwrap();
        payee.accept(&id, &voucher, price).await.unwrap();
        vouchers.push(voucher);
    }

    // Far from expiry the watcher does nothing; within the margin it closes.
    assert!(payee.watch().await.unwrap().closed.is_empty());
    let height = rpc.block_count().await.unwrap();
    mine(
        rpc,
        expiry - PayeePolicy::default().close_margin_blocks - height,
    )
    .await;
    let closed = payee.watch().await.unwrap().closed;
    assert_eq!(closed.len(), 1);
    // An old commitment, co-signed, competes with the newest in the mempool: refused.
    let stale = cosigned(&payee_device, &channel, &vouchers[1]);
    let refused = rpc.broadcast(&stale).await;
    assert!(matches!(refused, Err(RpcError::Node { .. })), "{refused:?}");
    mine(rpc, 1).await;
    let close = raw(rpc, &closed[0]).await;
    assert_eq!(
        close.output[0].value,
        Amount::from_sat(5_000),
        "the newest voucher"
    );
    // Once closed, neither a stale commitment nor the payer's refund can spend it.
    assert!(rpc.broadcast(&stale).await.is_err());
    let height = rpc.block_count().await.unwrap();
    mine(rpc, expiry - height).await;
    assert!(payer.refund(&id, Amount::from_sat(400)).await.is_err());
    assert!(
        payee.watch().await.unwrap().closed.is_empty(),
        "nothing left to close"
    );
}

/// What a payee could build from an old voucher (the node itself only ever closes the newest).
pub fn cosigned(payee: &BtcDevice, channel: &TaprootChannel, voucher: &BtcVoucher) -> Transaction {
    use m2m::wallet::{SchnorrKey, Signer};
    let sighash = channel.commitment_sighash(voucher.cumulative).unwrap();
    let signature = payee
        .keys
        .sign_schnorr(&sighash, SchnorrKey::ScriptPath)
        .unwrap();
    channel.close_transaction(voucher, signature).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_vouchers_and_terms_change_nothing() {
    let (node, payer_device, payee_device) = setup().await;
    let rpc = node.rpc();
    let payer = payer_device.payer();
    let payee = payee_device.payee(rpc, policy(10));
    let channel = opened(rpc, &payer, &payee, 100_000, 100).await;
    let id = channel.id();

    // Terms that do not match the chain.
    let mut inflated = *channel.terms();
    inflated.funding.capacity = Amount::from_sat(200_000);
    assert!(matches!(
        payee.register(inflated).await,
        Err(BtcChannelsError::Funding { .. })
    ));
    let mut cheap = *channel.terms();
    cheap.close_fee = Amount::from_sat(10);
    assert!(matches!(
        payee.register(cheap).await,
        Err(BtcChannelsError::Terms(_))
    ));
    payee.register(*channel.terms()).await.unwrap();

    let price = Amount::from_sat(700);
    let good = payer.pay(&id, price).await.unwrap();
    payee.accept(&id, &good, price).await.unwrap();
    let next = payer.pay(&id, price).await.unwrap();
    let mut forged = next;
    let mut bytes = forged.signature.serialize();
    bytes[10] ^= 1;
    forged.signature = bitcoin::secp256k1::schnorr::Signature::from_slice(&bytes).unwrap();
    let refusals = [
        (forged, price),
        (good, price), // replayed
        (
            BtcVoucher {
                cumulative: Amount::from_sat(1_401),
                ..next
            },
            price,
        ), // moved amount
        (next, Amount::from_sat(699)), // wrong price
        (
            BtcVoucher {
                cumulative: Amount::from_sat(10_000_000),
                ..next
            },
            Amount::from_sat(10_000_000 - 700),
        ),
    ];
    for (voucher, price) in refusals {
        let refused = payee.accept(&id, &voucher, price).await;
        assert!(
            matches!(
                refused,
                Err(BtcChannelsError::Channel(
                    BtcChannelError::BadSignature
                        | BtcChannelError::CumulativeMismatch { .. }
                        | BtcChannelError::ExceedsCapacity { .. }
                ))
            ),
            "{refused:?}"
        );
        let (charged, latest) = payee.state(&id).await.unwrap();
        assert_eq!((charged, latest), (price_of(&good), Some(good)));
        assert_eq!(
            payee_device
                .store
                .load_btc_voucher(&m2m::core::ChannelId(id))
                .unwrap(),
            Some(good)
        );
    }
    assert!(matches!(
        payee.accept(&[9; 32], &next, price).await,
        Err(BtcChannelsError::Unknown(_))
    ));
    // The genuine next voucher still counts.
    payee.accept(&id, &next, price).await.unwrap();
}

fn price_of(voucher: &BtcVoucher) -> Amount {
    voucher.cumulative
}
