//! What the `Signer` abstraction costs over raw libsecp256k1, measured in the same run.
//!
//! Pairs (report the ratio of each pair, not the absolute times — shared VMs drift ±25 %):
//! - `evm_sign/raw` vs `evm_sign/signer`: recoverable ECDSA over a 32-byte digest;
//! - `schnorr_sign/raw` vs `schnorr_sign/signer`: BIP-340 with aux randomness (the signer also
//!   reads its aux randomness from the OS, which the raw case gets for free).
//!
//! Run: `cargo bench --bench signer`.

use std::hint::black_box;
use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::secp256k1::{Keypair, Message, Secp256k1};
use criterion::{Criterion, criterion_group, criterion_main};
use m2m::wallet::{B256, DeviceKeys, DeviceSeed, Network, SchnorrKey, Signer};

const PHRASE: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

fn bench_signing(c: &mut Criterion) {
    let seed = DeviceSeed::from_phrase(PHRASE).unwrap();
    let keys = DeviceKeys::derive(&seed, Network::Regtest).unwrap();
    let signer: &dyn Signer = &keys;

    // The same keys, derived here without the wallet, for the raw baseline.
    let secp = Secp256k1::new();
    let bip39_seed = bip39::Mnemonic::parse(PHRASE).unwrap().to_seed("");
    let master = Xpriv::new_master(Network::Regtest, &bip39_seed).unwrap();
    let derive = |path: &str| {
        master
            .derive_priv(&secp, &DerivationPath::from_str(path).unwrap())
            .unwrap()
            .private_key
    };
    let evm_secret = derive("m/44'/60'/0'/0/0");
    let taproot = Keypair::from_secret_key(&secp, &derive("m/86'/1'/0'/0/0"));

    let digest = B256::repeat_byte(0x5a);
    let mut group = c.benchmark_group("evm_sign");
    group.bench_function("raw", |b| {
        b.iter(|| {
            secp.sign_ecdsa_recoverable(&Message::from_digest(black_box(digest.0)), &evm_secret)
        })
    });
    group.bench_function("signer", |b| {
        b.iter(|| signer.sign_evm_digest(black_box(&digest)).unwrap())
    });
    group.finish();

    let message = [0x33u8; 32];
    let aux = [0x11u8; 32];
    let mut group = c.benchmark_group("schnorr_sign");
    group.bench_function("raw", |b| {
        b.iter(|| {
            secp.sign_schnorr_with_aux_rand(
                &Message::from_digest(black_box(message)),
                &taproot,
                &aux,
            )
        })
    });
    group.bench_function("signer", |b| {
        b.iter(|| {
            signer
                .sign_schnorr(black_box(&message), SchnorrKey::ScriptPath)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_signing);
criterion_main!(benches);
