//! Payer and payee machines: the happy path, every refusal (state unchanged), resync, claims.

mod common;

use common::{TestKey, TestVerifier, terms, usd};
use m2m_core::payee::{ClaimPolicy, ClaimReason, PayeeChannel};
use m2m_core::payer::PayerChannel;
use m2m_core::{Amount, Asset, ChannelError, ChannelId, Voucher};

fn pair(deposit: u128) -> (TestKey, PayerChannel, PayeeChannel) {
    let key = TestKey::new(7);
    let terms = terms(&key, 1);
    let payer = PayerChannel::open(terms, usd(deposit)).unwrap();
    let payee = PayeeChannel::open(terms, usd(deposit), 0).unwrap();
    (key, payer, payee)
}

/// One paid request end to end; returns the voucher that went over the wire.
fn pay(
    key: &TestKey,
    payer: &mut PayerChannel,
    payee: &mut PayeeChannel,
    price: u128,
    charge: u128,
) -> Voucher {
    let prepared = payer.prepare_payment(usd(price), key).unwrap();
    let voucher = payer.commit(prepared);
    let accepted = payee
        .accept(&voucher, usd(price), usd(charge), &TestVerifier::default())
        .unwrap();
    payee.commit(accepted);
    payer.on_charged(usd(charge), usd(price)).unwrap();
    voucher
}

#[test]
fn a_thousand_payments_keep_both_sides_in_step() {
    let (key, mut payer, mut payee) = pair(1_000_000);
    for i in 0..1000u128 {
        let voucher = pay(&key, &mut payer, &mut payee, 500, 400 + i % 100);
        assert!(voucher.max_claimable_units >= payee.record().charged_units);
    }
    assert_eq!(payer.record().charged_units, payee.record().charged_units);
    assert_eq!(
        payee.record().charged_units,
        (0..1000u128).map(|i| 400 + i % 100).sum::<u128>()
    );
    assert!(payer.record().highest_signed_units <= 1_000_000);
}

#[test]
fn payee_refusals_change_nothing() {
    let (key, mut payer, mut payee) = pair(10_000);
    pay(&key, &mut payer, &mut payee, 100, 100);
    let before = payee.clone();
    let verifier = TestVerifier::default();
    let good = payer.commit(payer.prepare_payment(usd(100), &key).unwrap());

    let wrong_channel = Voucher {
        channel_id: ChannelId([9; 32]),
        ..good
    };
    assert!(matches!(
        payee.accept(&wrong_channel, usd(100), usd(100), &verifier),
        Err(ChannelError::WrongChannel { .. })
    ));
    assert_eq!(
        payee.accept(&good, usd(150), usd(100), &verifier),
        Err(ChannelError::CumulativeMismatch {
            expected_units: 250,
            found_units: 200
        })
    );
    let forged = TestKey::new(8).sign_for(&payee, 200);
    assert_eq!(
        payee.accept(&forged, usd(100), usd(100), &verifier),
        Err(ChannelError::InvalidSignature)
    );
    let mut tampered = good;
    tampered.signature.0[10] ^= 1;
    assert_eq!(
        payee.accept(&tampered, usd(100), usd(100), &verifier),
        Err(ChannelError::InvalidSignature)
    );
    assert!(matches!(
        payee.accept(&good, usd(100), usd(101), &verifier),
        Err(ChannelError::ChargeExceedsPrice { .. })
    ));
    assert_eq!(
        payee.accept(&good, usd(0), usd(0), &verifier),
        Err(ChannelError::ZeroPrice)
    );
    let btc = Amount::new(Asset::Bitcoin, 100);
    assert!(matches!(
        payee.accept(&good, btc, btc, &verifier),
        Err(ChannelError::Amount(_))
    ));
    // Replaying the previous voucher is a cumulative mismatch, not a second payment.
    let first = payee.record().latest.unwrap();
    assert!(matches!(
        payee.accept(&first, usd(100), usd(100), &verifier),
        Err(ChannelError::CumulativeMismatch { .. })
    ));
    assert_eq!(payee, before, "no refusal changed the payee");

    payee.commit(payee.accept(&good, usd(100), usd(100), &verifier).unwrap());
    assert_eq!(payee.record().charged_units, 200);
}

#[test]
fn payer_refuses_beyond_the_deposit_and_bad_charges() {
    let (key, mut payer, mut payee) = pair(1_000);
    pay(&key, &mut payer, &mut payee, 600, 600);
    let before = payer.clone();
    assert_eq!(
        payer.prepare_payment(usd(401), &key),
        Err(ChannelError::ExceedsDeposit {
            requested_units: 1_001,
            deposit_units: 1_000
        })
    );
    assert_eq!(
        payer.prepare_payment(usd(0), &key),
        Err(ChannelError::ZeroPrice)
    );
    assert!(matches!(
        payer.prepare_payment(Amount::new(Asset::Bitcoin, 1), &key),
        Err(ChannelError::Amount(_))
    ));
    assert!(matches!(
        payer.on_charged(usd(11), usd(10)),
        Err(ChannelError::ChargeExceedsPrice { .. })
    ));
    // A payee claiming a charge the payer never signed for is refused.
    assert!(matches!(
        payer.on_charged(usd(100), usd(100)),
        Err(ChannelError::UntrustedPayeeState { .. })
    ));
    assert_eq!(payer, before);
    let voucher = payer.commit(payer.prepare_payment(usd(400), &key).unwrap());
    assert_eq!(voucher.max_claimable_units, 1_000);
    payer.set_deposit(usd(5_000)).unwrap();
    assert!(payer.prepare_payment(usd(4_000), &key).is_ok());
}

#[test]
fn corrective_resync_adopts_only_proven_totals() {
    let (key, mut payer, mut payee) = pair(10_000);
    pay(&key, &mut payer, &mut payee, 100, 100);
    // The payer signs and sends, but the response is lost: it does not know what was charged.
    let voucher = payer.commit(payer.prepare_payment(usd(100), &key).unwrap());
    payee.commit(
        payee
            .accept(&voucher, usd(100), usd(80), &TestVerifier::default())
            .unwrap(),
    );
    assert_eq!(payer.record().charged_units, 100, "payer is behind");
    let stale = payer.prepare_payment(usd(100), &key).unwrap();
    let stale = payer.commit(stale);
    assert!(matches!(
        payee.accept(&stale, usd(100), usd(100), &TestVerifier::default()),
        Err(ChannelError::CumulativeMismatch { .. })
    ));

    let (charged, held) = payee.corrective_state();
    let held = held.unwrap();
    let verifier = TestVerifier::default();
    // A lying payee: same voucher, inflated total.
    assert!(matches!(
        payer.resync(usd(250), &held, &verifier),
        Err(ChannelError::UntrustedPayeeState { .. })
    ));
    // A forged proof.
    let forged = TestKey::new(9).sign_for(&payee, 180);
    assert_eq!(
        payer.resync(usd(180), &forged, &verifier),
        Err(ChannelError::InvalidSignature)
    );
    payer.resync(charged, &held, &verifier).unwrap();
    assert_eq!(payer.record().charged_units, 180);
    pay(&key, &mut payer, &mut payee, 100, 100);
    assert_eq!(payee.record().charged_units, 280);
}

#[test]
fn a_payer_restored_from_an_old_record_adopts_its_own_later_vouchers() {
    let (key, mut payer, mut payee) = pair(10_000);
    pay(&key, &mut payer, &mut payee, 100, 100);
    let backup = payer.clone();
    pay(&key, &mut payer, &mut payee, 100, 100);
    pay(&key, &mut payer, &mut payee, 100, 100);
    let mut restored = backup;
    assert_eq!(restored.record().highest_signed_units, 100);
    // It signs from its old total; the payee holds more and proves it with our voucher.
    let stale = restored.commit(restored.prepare_payment(usd(100), &key).unwrap());
    assert!(matches!(
        payee.accept(&stale, usd(100), usd(100), &TestVerifier::default()),
        Err(ChannelError::CumulativeMismatch { .. })
    ));
    let (charged, held) = payee.corrective_state();
    restored
        .resync(charged, &held.unwrap(), &TestVerifier::default())
        .unwrap();
    assert_eq!(restored.record().charged_units, 300);
    assert_eq!(restored.record().highest_signed_units, 300);
    pay(&key, &mut restored, &mut payee, 100, 100);
    assert_eq!(
        payee.record().charged_units,
        400,
        "the readings after the backup paid once"
    );
}

#[test]
fn claims_follow_the_policy() {
    let (key, mut payer, mut payee) = pair(1_000_000);
    let policy = ClaimPolicy {
        threshold_units: 1_000,
        max_interval_secs: 3600,
    };
    assert_eq!(payee.claim_decision(&policy, 10), None, "nothing to claim");
    pay(&key, &mut payer, &mut payee, 100, 100);
    assert_eq!(
        payee.claim_decision(&policy, 10),
        None,
        "below threshold, interval not elapsed"
    );
    assert_eq!(
        payee.claim_decision(&policy, 3600).unwrap().reason,
        ClaimReason::Periodic
    );
    for _ in 0..9 {
        pay(&key, &mut payer, &mut payee, 100, 100);
    }
    let claim = payee.claim_decision(&policy, 20).unwrap();
    assert_eq!(
        (claim.reason, claim.total_claimed_units),
        (ClaimReason::Threshold, 1_000)
    );
    assert!(claim.voucher.max_claimable_units >= claim.total_claimed_units);
    payee.on_claimed(usd(1_000), 30).unwrap();
    assert_eq!(payee.claim_decision(&policy, 40), None);
    pay(&key, &mut payer, &mut payee, 100, 1);
    payee
        .on_chain_update(usd(1_000_000), usd(1_000), Some(50))
        .unwrap();
    assert_eq!(
        payee.claim_decision(&policy, 60).unwrap().reason,
        ClaimReason::WithdrawPending
    );
}

trait SignFor {
    fn sign_for(&self, payee: &PayeeChannel, ceiling: u128) -> Voucher;
}

impl SignFor for TestKey {
    fn sign_for(&self, payee: &PayeeChannel, ceiling: u128) -> Voucher {
        use m2m_core::VoucherSigner;
        let terms = payee.terms();
        let digest = m2m_core::voucher_digest(&terms.domain_separator, &terms.channel_id, ceiling);
        Voucher {
            channel_id: terms.channel_id,
            max_claimable_units: ceiling,
            signature: self.sign_digest(&digest).unwrap(),
        }
    }
}
