//! The channel store and the voucher capabilities: durable round trips, versioned records,
//! concurrent writers sharing commits, and libsecp256k1 checks (including high-s rejection).

use std::sync::Arc;

use m2m_core::payee::{PAYEE_RECORD_VERSION, PayeeRecord};
use m2m_core::payer::{PAYER_RECORD_VERSION, PayerRecord};
use m2m_core::records::{RecordError, decode_payee, decode_payer, encode_payee, encode_payer};
use m2m_core::{
    ChannelId, EvmAddress, Signature65, Voucher, VoucherSigner, VoucherVerifier, voucher_digest,
};
use m2m_node::channel_crypto::{Secp256k1Verifier, WalletVoucherSigner};
use m2m_node::datadir::DataDir;
use m2m_node::store::{ChannelStore, RecordWrite};
use m2m_wallet::{DeviceKeys, DeviceSeed, Network, SeedLength, Signer};

fn payee_record(charged: u128, with_voucher: bool) -> PayeeRecord {
    PayeeRecord {
        version: PAYEE_RECORD_VERSION,
        deposit_units: 1_000_000,
        charged_units: charged,
        claimed_units: charged / 2,
        latest: with_voucher.then_some(Voucher {
            channel_id: ChannelId([3; 32]),
            max_claimable_units: charged + 5,
            signature: Signature65([0xAB; 65]),
        }),
        withdraw_pending_since: with_voucher.then_some(1_800_000_000),
        last_claim_at: 42,
    }
}

#[test]
fn records_round_trip_and_refuse_what_they_do_not_know() {
    let payer = PayerRecord {
        version: PAYER_RECORD_VERSION,
        deposit_units: 9,
        charged_units: 4,
        highest_signed_units: 7,
    };
    assert_eq!(decode_payer(&encode_payer(&payer)).unwrap(), payer);
    for with_voucher in [false, true] {
        let record = payee_record(100, with_voucher);
        assert_eq!(
            decode_payee(ChannelId([3; 32]), &encode_payee(&record)).unwrap(),
            record
        );
    }
    let mut newer = encode_payer(&payer);
    newer[0] = 9;
    assert!(matches!(
        decode_payer(&newer),
        Err(RecordError::UnsupportedVersion { found: 9, .. })
    ));
    assert!(matches!(
        decode_payer(&newer[..10]),
        Err(RecordError::Corrupt(_))
    ));
    let mut bad_flag = encode_payee(&payee_record(1, true));
    bad_flag[49] = 7;
    assert!(matches!(
        decode_payee(ChannelId([3; 32]), &bad_flag),
        Err(RecordError::Corrupt(_))
    ));
}

#[test]
fn writes_survive_reopening_and_concurrent_writers_all_land() {
    let dir = tempfile::tempdir().unwrap();
    {
        let data_dir = DataDir::open(dir.path()).unwrap();
        let store = Arc::new(ChannelStore::open(&data_dir).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50u128 {
                        let id = ChannelId([t; 32]);
                        store
                            .persist(RecordWrite::Payee(id, payee_record(i, i % 2 == 0)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let payer = PayerRecord {
            version: PAYER_RECORD_VERSION,
            deposit_units: 1,
            charged_units: 1,
            highest_signed_units: 1,
        };
        store
            .persist(RecordWrite::Payer(ChannelId([99; 32]), payer))
            .unwrap();
    }
    let data_dir = DataDir::open(dir.path()).unwrap();
    let store = ChannelStore::open(&data_dir).unwrap();
    for t in 0..8u8 {
        let record = store.load_payee(&ChannelId([t; 32])).unwrap().unwrap();
        assert_eq!(
            record.charged_units, 49,
            "the last write of each writer is the stored one"
        );
    }
    assert!(store.load_payee(&ChannelId([200; 32])).unwrap().is_none());
    assert_eq!(
        store
            .load_payer(&ChannelId([99; 32]))
            .unwrap()
            .unwrap()
            .highest_signed_units,
        1
    );
}

#[test]
fn libsecp256k1_verifier_accepts_the_wallet_and_rejects_forgeries() {
    let keys = DeviceKeys::derive(
        &DeviceSeed::generate(SeedLength::Words12).unwrap(),
        Network::Regtest,
    )
    .unwrap();
    let other = DeviceKeys::derive(
        &DeviceSeed::generate(SeedLength::Words12).unwrap(),
        Network::Regtest,
    )
    .unwrap();
    let payer = EvmAddress(keys.evm_address().0.0);
    let digest = voucher_digest(&[1; 32], &ChannelId([2; 32]), 500);
    let signature = WalletVoucherSigner(&keys).sign_digest(&digest).unwrap();
    let verifier = Secp256k1Verifier::default();
    for _ in 0..2 {
        // The second round runs on the cached public key.
        assert!(verifier.is_valid(&digest, &signature, &payer));
        assert!(!verifier.is_valid(
            &voucher_digest(&[1; 32], &ChannelId([2; 32]), 501),
            &signature,
            &payer
        ));
        let forged = WalletVoucherSigner(&other).sign_digest(&digest).unwrap();
        assert!(!verifier.is_valid(&digest, &forged, &payer));
        assert!(
            !verifier.is_valid(&digest, &high_s_twin(&signature), &payer),
            "high-s twin"
        );
    }
}

/// s' = n - s with the other recovery id: the same point, the malleable twin.
fn high_s_twin(signature: &Signature65) -> Signature65 {
    const N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFE, 0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36,
        0x41, 0x41,
    ];
    let mut twin = *signature;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let value = i16::from(N[i]) - i16::from(signature.0[32 + i]) - borrow;
        borrow = i16::from(value < 0);
        twin.0[32 + i] = value.rem_euclid(256) as u8;
    }
    twin.0[64] = if signature.0[64] == 27 { 28 } else { 27 };
    twin
}

/// Sessions: a payer and a payee on separate data directories pay 200 times, restart from their
/// stores, and carry on exactly where they were.
#[test]
fn sessions_persist_before_releasing_and_resume_after_restart() {
    use m2m_core::{Amount, Asset, ChannelTerms};
    use m2m_node::sessions::{PayeeSession, PayerSession};

    const USD: Asset = Asset::Erc20 {
        chain_id: 31337,
        token: [1; 20],
    };
    let keys = DeviceKeys::derive(
        &DeviceSeed::generate(SeedLength::Words12).unwrap(),
        Network::Regtest,
    )
    .unwrap();
    let terms = ChannelTerms {
        channel_id: ChannelId([5; 32]),
        asset: USD,
        domain_separator: [6; 32],
        payer_authorizer: EvmAddress(keys.evm_address().0.0),
    };
    let (payer_dir, payee_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let signer = WalletVoucherSigner(&keys);
    let verifier = Secp256k1Verifier::default();
    let price = Amount::new(USD, 10);
    for round in 0..2 {
        let payer_data = DataDir::open(payer_dir.path()).unwrap();
        let payee_data = DataDir::open(payee_dir.path()).unwrap();
        let payer_store = ChannelStore::open(&payer_data).unwrap();
        let payee_store = ChannelStore::open(&payee_data).unwrap();
        let payer =
            PayerSession::load_or_open(&payer_store, terms, Amount::new(USD, 10_000)).unwrap();
        let payee =
            PayeeSession::load_or_open(&payee_store, terms, Amount::new(USD, 10_000), 0).unwrap();
        assert_eq!(
            payer.snapshot().record().charged_units,
            round * 1_000,
            "payer resumed"
        );
        assert_eq!(
            payee.snapshot().record().charged_units,
            round * 1_000,
            "payee resumed"
        );
        for _ in 0..100 {
            let voucher = payer.pay(price, &signer).unwrap();
            payee.accept(&voucher, price, price, &verifier).unwrap();
            payer.charged(price, price).unwrap();
        }
    }
    let data = DataDir::open(payer_dir.path()).unwrap();
    let record = ChannelStore::open(&data)
        .unwrap()
        .load_payer(&terms.channel_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.charged_units, record.highest_signed_units),
        (2_000, 2_000)
    );
}
