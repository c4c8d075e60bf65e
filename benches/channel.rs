//! The channel hot paths against the raw primitives, measured in the same run.
//!
//! Pairs (the printed ratio is what counts; absolute times drift ±25 % on shared VMs):
//! - `payee/raw_verify` vs `payee/accept` (core checks + libsecp256k1, cached key) and
//!   `payee/accept_durable` (the same, then persisted through the redb group commit and waited
//!   for before "serving", with a sliding window of 1,024 requests in flight);
//! - `ticks/raw_sha256` vs `ticks/verify` (one tick checked by the payee's stream);
//! - `payer/raw_sign` vs `payer/sign` (prepare + commit of the next voucher with the device key);
//! - `btc_payer/raw_sign` vs `btc_payer/sign` and `btc_payee/raw_verify` vs `btc_payee/accept`:
//!   the Taproot channel's vouchers (commitment transaction, BIP-341 sighash, BIP-340).
//!
//! Run: `cargo bench --bench channel` (ratios printed at the end; `-- --quick` for a fast pass).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use criterion::{Criterion, criterion_group};
use m2m::core::codec::{Frame, TicksFrame, VoucherFrame};
use m2m::core::payee::PayeeChannel;
use m2m::core::payer::PayerChannel;
use m2m::core::ticks::{TickChain, TickCommitment, TickStream, hash_link};
use m2m::core::{
    Amount, Asset, ChannelId, ChannelTerms, EvmAddress, Voucher, VoucherSigner, voucher_digest,
};
use m2m::node::channel_crypto::{Secp256k1Verifier, WalletVoucherSigner};
use m2m::node::datadir::DataDir;
use m2m::node::store::{ChannelStore, RecordWrite};
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, Signer};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};

const USD: Asset = Asset::Erc20 {
    chain_id: 31337,
    token: [0xAA; 20],
};
const PHRASE: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const IN_FLIGHT: usize = 1024;

fn keys() -> DeviceKeys {
    DeviceKeys::derive(&DeviceSeed::from_phrase(PHRASE).unwrap(), Network::Regtest).unwrap()
}

fn terms(keys: &DeviceKeys) -> ChannelTerms {
    ChannelTerms {
        channel_id: ChannelId([7; 32]),
        asset: USD,
        domain_separator: [9; 32],
        payer_authorizer: EvmAddress(keys.evm_address().0.0),
    }
}

/// `count` consecutive vouchers of price 1 starting after `charged`.
fn vouchers(keys: &DeviceKeys, terms: &ChannelTerms, charged: u128, count: u64) -> Vec<Voucher> {
    let signer = WalletVoucherSigner(keys);
    (1..=u128::from(count))
        .map(|step| {
            let ceiling = charged + step;
            let digest = voucher_digest(&terms.domain_separator, &terms.channel_id, ceiling);
            Voucher {
                channel_id: terms.channel_id,
                max_claimable_units: ceiling,
                signature: signer.sign_digest(&digest).unwrap(),
            }
        })
        .collect()
}

fn bench_payee(c: &mut Criterion) {
    let keys = keys();
    let terms = terms(&keys);
    let price = Amount::new(USD, 1);
    let verifier = Secp256k1Verifier::default();
    let mut group = c.benchmark_group("payee");

    let secp = Secp256k1::new();
    let secret = SecretKey::from_slice(&[3; 32]).unwrap();
    let public = PublicKey::from_secret_key(&secp, &secret);
    let message = Message::from_digest([5; 32]);
    let signature = secp.sign_ecdsa(&message, &secret);
    group.bench_function("raw_verify", |b| {
        b.iter(|| {
            secp.verify_ecdsa(black_box(&message), &signature, &public)
                .unwrap()
        })
    });

    group.bench_function("accept", |b| {
        b.iter_custom(|iters| {
            let mut channel =
                PayeeChannel::open(terms, Amount::new(USD, u128::MAX / 2), 0).unwrap();
            let batch = vouchers(&keys, &terms, 0, iters);
            let start = Instant::now();
            for voucher in &batch {
                let accepted = channel.accept(voucher, price, price, &verifier).unwrap();
                channel.commit(accepted);
            }
            start.elapsed()
        })
    });

    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let data_dir = DataDir::open(dir.path()).unwrap();
    let store = ChannelStore::open(&data_dir).unwrap();
    group.bench_function("accept_durable", |b| {
        b.iter_custom(|iters| {
            let mut channel =
                PayeeChannel::open(terms, Amount::new(USD, u128::MAX / 2), 0).unwrap();
            let batch = vouchers(&keys, &terms, 0, iters);
            let start = Instant::now();
            // A sliding window, as a server with IN_FLIGHT concurrent requests sees it: the
            // oldest request is answered once its record is durable.
            let mut tickets = std::collections::VecDeque::with_capacity(IN_FLIGHT + 1);
            for voucher in &batch {
                let accepted = channel.accept(voucher, price, price, &verifier).unwrap();
                tickets
                    .push_back(store.submit(RecordWrite::Payee(terms.channel_id, accepted.record)));
                channel.commit(accepted);
                if tickets.len() > IN_FLIGHT {
                    tickets.pop_front().unwrap().wait().unwrap(); // "serve" only when durable
                }
            }
            tickets.drain(..).try_for_each(|t| t.wait()).unwrap();
            start.elapsed()
        })
    });
    group.finish();
}

fn bench_ticks(c: &mut Criterion) {
    let mut group = c.benchmark_group("ticks");
    let link = [0x42u8; 32];
    group.bench_function("raw_sha256", |b| {
        b.iter(|| {
            use sha2::Digest;
            let out: [u8; 32] = sha2::Sha256::digest(black_box(&link)).into();
            out
        })
    });
    group.bench_function("verify", |b| {
        b.iter_custom(|iters| {
            let length = u32::try_from(iters).unwrap_or(u32::MAX);
            let mut chain = TickChain::new([1; 32], length);
            let commitment = TickCommitment {
                channel_id: ChannelId([7; 32]),
                anchor: chain.anchor(),
                tick_price: Amount::new(USD, 1),
                length,
            };
            let ticks: Vec<[u8; 32]> =
                std::iter::from_fn(|| chain.next_tick().map(|t| t.preimage)).collect();
            let mut stream = TickStream::new(commitment, length, u64::MAX);
            let start = Instant::now();
            for preimage in &ticks {
                stream.on_ticks(preimage, 1, 0).unwrap();
            }
            start.elapsed()
        })
    });
    black_box(hash_link(&link));
    group.finish();
}

fn bench_payer(c: &mut Criterion) {
    let keys = keys();
    let terms = terms(&keys);
    let signer = WalletVoucherSigner(&keys);
    let mut group = c.benchmark_group("payer");
    let secp = Secp256k1::new();
    let secret = SecretKey::from_slice(&[3; 32]).unwrap();
    let message = Message::from_digest([5; 32]);
    group.bench_function("raw_sign", |b| {
        b.iter(|| secp.sign_ecdsa_recoverable(black_box(&message), &secret))
    });
    group.bench_function("sign", |b| {
        let mut payer = PayerChannel::open(terms, Amount::new(USD, u128::MAX / 2)).unwrap();
        let price = Amount::new(USD, 1);
        b.iter(|| {
            let prepared = payer.prepare_payment(price, &signer).unwrap();
            let voucher = payer.commit(prepared);
            payer.on_charged(price, price).unwrap();
            voucher
        })
    });
    group.finish();
}

/// A funded Taproot channel between the bench device (payer) and a fixed payee key.
fn btc_channel(keys: &DeviceKeys) -> m2m::contracts::btc::TaprootChannel {
    use m2m::contracts::btc::{ChannelFunding, ChannelParties, ChannelTermsBtc, TaprootChannel};
    let payee = SecretKey::from_slice(&[4; 32]).unwrap();
    let parties = ChannelParties {
        payer: keys.taproot_internal_key(),
        payee: payee.x_only_public_key(&Secp256k1::new()).0,
        expiry_height: 1_000,
    };
    TaprootChannel::new(ChannelTermsBtc {
        parties,
        funding: ChannelFunding {
            outpoint: bitcoin::OutPoint::new(bitcoin::Txid::from_byte_array([6; 32]), 0),
            capacity: bitcoin::Amount::from_int_btc(1),
        },
        close_fee: bitcoin::Amount::from_sat(408),
    })
    .unwrap()
}

/// The Bitcoin channel: a voucher is a BIP-340 signature over a commitment transaction's
/// sighash, so each one also builds that transaction and hashes it (BIP-341).
fn bench_btc(c: &mut Criterion) {
    use m2m::contracts::btc::{BtcPayee, BtcPayer};
    use m2m::wallet::SchnorrKey;
    let keys = keys();
    let channel = btc_channel(&keys);
    let secp = Secp256k1::new();
    let keypair = secp256k1::Keypair::from_seckey_slice(&secp, &[3; 32]).unwrap();
    let message = Message::from_digest([5; 32]);
    let raw_signature = secp.sign_schnorr_no_aux_rand(&message, &keypair);
    let price = bitcoin::Amount::from_sat(1);

    let mut group = c.benchmark_group("btc_payer");
    group.bench_function("raw_sign", |b| {
        b.iter(|| secp.sign_schnorr_no_aux_rand(black_box(&message), &keypair))
    });
    group.bench_function("sign", |b| {
        let mut payer = BtcPayer::new(channel.clone(), bitcoin::Amount::ZERO).unwrap();
        b.iter(|| {
            let prepared = payer.prepare(price).unwrap();
            let signature = keys
                .sign_schnorr(&prepared.sighash, SchnorrKey::ScriptPath)
                .unwrap();
            payer.commit(prepared, signature)
        })
    });
    group.finish();

    // Vouchers signed ahead, accepted in order.
    let mut payer = BtcPayer::new(channel.clone(), bitcoin::Amount::ZERO).unwrap();
    let vouchers: Vec<_> = (0..200_000)
        .map(|_| {
            let prepared = payer.prepare(price).unwrap();
            let signature = keys
                .sign_schnorr(&prepared.sighash, SchnorrKey::ScriptPath)
                .unwrap();
            payer.commit(prepared, signature)
        })
        .collect();
    let mut group = c.benchmark_group("btc_payee");
    let (x_only, _) = keypair.x_only_public_key();
    group.bench_function("raw_verify", |b| {
        b.iter(|| secp.verify_schnorr(black_box(&raw_signature), &message, &x_only))
    });
    group.bench_function("accept", |b| {
        b.iter_custom(|iterations| {
            let mut payee = BtcPayee::new(channel.clone(), None).unwrap();
            let started = Instant::now();
            for voucher in vouchers.iter().cycle().take(iterations as usize) {
                if payee.charged() == vouchers.last().unwrap().cumulative {
                    payee = BtcPayee::new(channel.clone(), None).unwrap();
                }
                let accepted = payee.accept(voucher, price).unwrap();
                payee.commit(accepted);
            }
            started.elapsed()
        })
    });
    group.finish();
}

fn bench_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-store");
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or(dir, |t| Path::new(&t).join("bench-store"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads criterion's point estimate (mean, ns) for `group/name` from this run's output.
fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        Into::into,
    );
    let path = target
        .join("criterion")
        .join(group)
        .join(name)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn report() {
    println!("\n== ratios (same run) ==");
    for (group, raw, ours, what) in [
        (
            "payee",
            "raw_verify",
            "accept",
            "voucher acceptance in memory vs raw ECDSA verify",
        ),
        (
            "payee",
            "raw_verify",
            "accept_durable",
            "durable voucher acceptance vs raw ECDSA verify",
        ),
        (
            "ticks",
            "raw_sha256",
            "verify",
            "tick verification vs raw SHA-256",
        ),
        (
            "payer",
            "raw_sign",
            "sign",
            "payer voucher signing vs raw ECDSA sign",
        ),
        (
            "btc_payer",
            "raw_sign",
            "sign",
            "Bitcoin voucher signing (commitment + BIP-341 sighash + BIP-340) vs raw Schnorr sign",
        ),
        (
            "btc_payee",
            "raw_verify",
            "accept",
            "Bitcoin voucher acceptance (commitment + sighash + verify) vs raw Schnorr verify",
        ),
    ] {
        if let (Some(raw_ns), Some(ours_ns)) = (mean_ns(group, raw), mean_ns(group, ours)) {
            println!(
                "{what}: {:.0}/s vs {:.0}/s per core = {:.1} % of raw",
                1e9 / ours_ns,
                1e9 / raw_ns,
                100.0 * raw_ns / ours_ns
            );
        }
    }
    let voucher = Frame::Voucher(VoucherFrame {
        channel_ref: 3,
        max_claimable_units: 1_000_000,
        signature: m2m::core::Signature65([1; 65]),
    });
    let tick = Frame::Ticks(TicksFrame {
        channel_ref: 3,
        count: 1,
        preimage: [2; 32],
    });
    println!(
        "wire: {} B per voucher, {} B per tick (compact form)",
        voucher.to_bytes().len(),
        tick.to_bytes().len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench_payee, bench_ticks, bench_payer, bench_btc
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
