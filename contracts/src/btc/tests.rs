//! Pure checks of the channel rules; the same transactions meet real consensus code in the
//! regtest tests (`tests/it/btc_channel.rs`).

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Keypair, Message, Secp256k1, schnorr};
use bitcoin::{Amount, FeeRate, OutPoint, Txid};

use super::*;
use crate::btc::records::{decode_terms, decode_voucher, encode_terms, encode_voucher};

fn keypair(byte: u8) -> Keypair {
    Keypair::from_seckey_slice(&Secp256k1::new(), &[byte; 32]).unwrap()
}

fn sign(keypair: &Keypair, sighash: [u8; 32]) -> schnorr::Signature {
    Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(sighash), keypair)
}

struct Fixture {
    payer: Keypair,
    payee: Keypair,
    channel: TaprootChannel,
}

fn fixture(capacity_sat: u64) -> Fixture {
    let (payer, payee) = (keypair(1), keypair(2));
    let parties = ChannelParties {
        payer: payer.x_only_public_key().0,
        payee: payee.x_only_public_key().0,
        expiry_height: 500,
    };
    let close_fee =
        TaprootChannel::close_fee_at(parties, FeeRate::from_sat_per_vb(2).unwrap()).unwrap();
    let channel = TaprootChannel::new(ChannelTermsBtc {
        parties,
        funding: ChannelFunding {
            outpoint: OutPoint::new(Txid::from_byte_array([7; 32]), 1),
            capacity: Amount::from_sat(capacity_sat),
        },
        close_fee,
    })
    .unwrap();
    Fixture {
        payer,
        payee,
        channel,
    }
}

fn pay(payer: &mut BtcPayer, keys: &Keypair, price: u64) -> BtcVoucher {
    let prepared = payer.prepare(Amount::from_sat(price)).unwrap();
    let signature = sign(keys, prepared.sighash);
    payer.commit(prepared, signature)
}

#[test]
fn close_fee_is_the_signed_commitment_size_times_the_rate() {
    let f = fixture(100_000);
    // Two P2TR outputs and a two-signature script-path input: 204 vB whatever the keys.
    assert_eq!(f.channel.terms().close_fee, Amount::from_sat(2 * 204));
}

#[test]
fn payer_and_payee_agree_and_the_close_pays_exactly() {
    let f = fixture(100_000);
    let mut payer = BtcPayer::new(f.channel.clone(), Amount::ZERO).unwrap();
    let mut payee = BtcPayee::new(f.channel.clone(), None).unwrap();
    for _ in 0..50 {
        let voucher = pay(&mut payer, &f.payer, 100);
        let accepted = payee.accept(&voucher, Amount::from_sat(100)).unwrap();
        payee.commit(accepted);
    }
    assert_eq!(payee.charged(), Amount::from_sat(5_000));
    let latest = *payee.latest().unwrap();
    let sighash = f.channel.commitment_sighash(latest.cumulative).unwrap();
    let close = f
        .channel
        .close_transaction(&latest, sign(&f.payee, sighash))
        .unwrap();
    assert_eq!(close.output[0].value, Amount::from_sat(5_000));
    assert_eq!(
        close.output[1].value,
        Amount::from_sat(100_000 - 5_000) - f.channel.terms().close_fee
    );
    // Witness: two signatures, the leaf script, its control block.
    assert_eq!(close.input[0].witness.len(), 4);
    assert_eq!(close.vsize(), 204);
}

#[test]
fn wrong_amounts_and_forged_signatures_are_refused() {
    let f = fixture(100_000);
    let mut payer = BtcPayer::new(f.channel.clone(), Amount::ZERO).unwrap();
    let payee = BtcPayee::new(f.channel.clone(), None).unwrap();
    let voucher = pay(&mut payer, &f.payer, 100);
    // Charged for a price it did not pay.
    assert!(matches!(
        payee.accept(&voucher, Amount::from_sat(99)),
        Err(BtcChannelError::CumulativeMismatch { .. })
    ));
    // Signed by the payee itself (or anyone but the payer).
    let forged = BtcVoucher {
        signature: sign(
            &f.payee,
            f.channel.commitment_sighash(voucher.cumulative).unwrap(),
        ),
        ..voucher
    };
    assert_eq!(
        payee.accept(&forged, Amount::from_sat(100)),
        Err(BtcChannelError::BadSignature)
    );
    // A valid signature moved to another amount.
    let moved = BtcVoucher {
        cumulative: Amount::from_sat(200),
        ..voucher
    };
    assert_eq!(
        payee.accept(&moved, Amount::from_sat(200)),
        Err(BtcChannelError::BadSignature)
    );
}

#[test]
fn a_restored_payer_adopts_only_its_own_later_vouchers() {
    let f = fixture(100_000);
    let mut payer = BtcPayer::new(f.channel.clone(), Amount::ZERO).unwrap();
    pay(&mut payer, &f.payer, 100);
    let mut restored = payer.clone(); // the old backup
    pay(&mut payer, &f.payer, 100);
    let later = pay(&mut payer, &f.payer, 100);
    // Someone else's signature, or ours moved to another amount, proves nothing.
    let forged = BtcVoucher {
        signature: sign(
            &f.payee,
            f.channel.commitment_sighash(later.cumulative).unwrap(),
        ),
        ..later
    };
    assert_eq!(restored.adopt(&forged), Err(BtcChannelError::BadSignature));
    let moved = BtcVoucher {
        cumulative: Amount::from_sat(900),
        ..later
    };
    assert_eq!(restored.adopt(&moved), Err(BtcChannelError::BadSignature));
    assert_eq!(restored.signed(), Amount::from_sat(100));
    assert_eq!(restored.adopt(&later), Ok(Amount::from_sat(300)));
    // An older voucher of ours lowers nothing.
    let mut older = BtcPayer::new(f.channel.clone(), Amount::ZERO).unwrap();
    let first = pay(&mut older, &f.payer, 100);
    assert_eq!(restored.adopt(&first), Ok(Amount::from_sat(300)));
}

#[test]
fn the_payer_cannot_sign_past_the_capacity() {
    let f = fixture(2_000);
    let mut payer = BtcPayer::new(f.channel.clone(), Amount::ZERO).unwrap();
    let max = f.channel.max_payable().to_sat();
    pay(&mut payer, &f.payer, max);
    assert_eq!(payer.remaining(), Amount::ZERO);
    assert!(matches!(
        payer.prepare(Amount::from_sat(1)),
        Err(BtcChannelError::ExceedsCapacity { .. })
    ));
    // Everything to the payee: the payer's output is gone, not dust.
    let tx = f.channel.commitment(f.channel.max_payable()).unwrap();
    assert_eq!(tx.output.len(), 1);
}

#[test]
fn refund_waits_for_expiry_and_uses_the_refund_leaf() {
    let f = fixture(100_000);
    let refund = f.channel.refund(Amount::from_sat(300)).unwrap();
    assert_eq!(refund.lock_time.to_consensus_u32(), 500);
    let sighash = f.channel.refund_sighash(&refund);
    let signed = f
        .channel
        .finalize_refund(refund, sign(&f.payer, sighash))
        .unwrap();
    let witness = &signed.input[0].witness;
    assert_eq!(witness.len(), 3, "one signature, script, control block");
    assert_eq!(
        witness.nth(1).unwrap(),
        f.channel.script().refund_leaf().script.as_bytes()
    );
}

#[test]
fn records_round_trip_and_refuse_damage() {
    let f = fixture(100_000);
    let terms = *f.channel.terms();
    assert_eq!(decode_terms(&encode_terms(&terms)).unwrap(), terms);
    let mut payer = BtcPayer::new(f.channel.clone(), Amount::ZERO).unwrap();
    let voucher = pay(&mut payer, &f.payer, 123);
    assert_eq!(decode_voucher(&encode_voucher(&voucher)).unwrap(), voucher);
    let mut bad = encode_voucher(&voucher);
    bad[0] = 9;
    assert!(decode_voucher(&bad).is_err());
    assert!(decode_terms(&encode_terms(&terms)[..50]).is_err());
}

/// What the wallet's `sign_musig2_partial` does, with a bare key.
fn partial(
    keys: &Keypair,
    ctx: &musig2::KeyAggContext,
    secnonce: musig2::SecNonce,
    aggnonce: &musig2::AggNonce,
    message: [u8; 32],
) -> musig2::PartialSignature {
    let mut secret = keys.secret_key();
    if keys.x_only_public_key().1 == bitcoin::secp256k1::Parity::Odd {
        secret = secret.negate();
    }
    let scalar = musig2::secp::Scalar::from_slice(&secret.secret_bytes()).unwrap();
    musig2::sign_partial(ctx, scalar, secnonce, aggnonce, message).unwrap()
}

#[test]
fn cooperative_close_is_one_key_path_signature_of_154_vbytes() {
    use super::musig::{PayeeCloseSignature, new_nonce};
    // Keys of both parities, so the even-y lifting is exercised.
    for (payer_byte, payee_byte) in [(1, 2), (3, 4), (5, 6), (7, 8)] {
        let (payer, payee) = (keypair(payer_byte), keypair(payee_byte));
        let parties = ChannelParties {
            payer: payer.x_only_public_key().0,
            payee: payee.x_only_public_key().0,
            expiry_height: 500,
        };
        let channel = TaprootChannel::new(ChannelTermsBtc {
            parties,
            funding: ChannelFunding {
                outpoint: OutPoint::new(Txid::from_byte_array([9; 32]), 0),
                capacity: Amount::from_sat(100_000),
            },
            close_fee: TaprootChannel::close_fee_at(parties, FeeRate::from_sat_per_vb(2).unwrap())
                .unwrap(),
        })
        .unwrap();
        let cumulative = Amount::from_sat(12_345);
        let close = channel.cooperative_close(cumulative).unwrap();
        let message = channel.cooperative_sighash(&close);
        let ctx = channel.signing_context().unwrap();

        let payer_secnonce = new_nonce([11; 32], &parties.payer, None);
        let payer_nonce = payer_secnonce.public_nonce();
        let payee_secnonce = new_nonce([12; 32], &parties.payee, Some(&message));
        let payee_nonce = payee_secnonce.public_nonce();
        let aggnonce = musig2::AggNonce::sum([&payer_nonce, &payee_nonce]);
        let answer = PayeeCloseSignature {
            cumulative,
            nonce: payee_nonce,
            partial: partial(&payee, &ctx, payee_secnonce, &aggnonce, message),
        };
        channel.verify_payee_partial(&answer, &payer_nonce).unwrap();
        let payer_partial = partial(&payer, &ctx, payer_secnonce, &aggnonce, message);
        let signed = channel
            .finalize_cooperative(cumulative, &aggnonce, [payer_partial, answer.partial])
            .unwrap();
        assert_eq!(signed.input[0].witness.len(), 1, "key path: one signature");
        assert_eq!(signed.vsize(), 154);
        assert_eq!(signed.output[0].value, cumulative);
        assert_eq!(
            signed.output[1].value,
            Amount::from_sat(100_000) - cumulative - channel.cooperative_fee()
        );
        // A partial signature for another amount does not pass.
        let wrong = PayeeCloseSignature {
            cumulative: Amount::from_sat(12_346),
            ..answer
        };
        assert!(channel.verify_payee_partial(&wrong, &payer_nonce).is_err());
    }
}
