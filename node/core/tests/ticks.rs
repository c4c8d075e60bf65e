//! Hash-chain ticks: every revealed link verifies, forgeries and over-credit are refused.

mod common;

use common::usd;
use m2m_core::ChannelId;
use m2m_core::ticks::{
    CHECKPOINT_SPACING, TickChain, TickCommitment, TickError, TickStream, hash_link,
};

fn stream_for(chain: &TickChain, length: u32, credit: u32, interval: u64) -> TickStream {
    let commitment = TickCommitment {
        channel_id: ChannelId([1; 32]),
        anchor: chain.anchor(),
        tick_price: usd(3),
        length,
    };
    TickStream::new(commitment, credit, interval)
}

#[test]
fn every_tick_of_a_long_chain_verifies_across_checkpoints() {
    let length = 3 * CHECKPOINT_SPACING + 17;
    let mut chain = TickChain::new([5; 32], length);
    let mut stream = stream_for(&chain, length, length, u64::MAX);
    let mut count = 0;
    while let Some(tick) = chain.next_tick() {
        count += 1;
        assert_eq!(tick.index, count);
        assert_eq!(stream.on_ticks(&tick.preimage, 1, 0), Ok(count));
    }
    assert_eq!(count, length);
    assert_eq!(chain.remaining(), 0);
    assert_eq!(
        stream.uncovered_value().unwrap(),
        usd(3 * u128::from(length))
    );
}

#[test]
fn one_preimage_can_prove_several_ticks() {
    let mut chain = TickChain::new([6; 32], 100);
    let mut stream = stream_for(&chain, 100, 100, u64::MAX);
    let mut fifth = None;
    for _ in 0..5 {
        fifth = chain.next_tick();
    }
    assert_eq!(stream.on_ticks(&fifth.unwrap().preimage, 5, 0), Ok(5));
    let sixth = chain.next_tick().unwrap();
    assert_eq!(hash_link(&sixth.preimage), fifth.unwrap().preimage);
    assert_eq!(stream.on_ticks(&sixth.preimage, 1, 0), Ok(6));
}

#[test]
fn forged_replayed_and_excess_ticks_are_refused_without_change() {
    let mut chain = TickChain::new([7; 32], 10);
    let mut stream = stream_for(&chain, 10, 3, 60);
    let first = chain.next_tick().unwrap();
    stream.on_ticks(&first.preimage, 1, 0).unwrap();
    let before = stream.clone();
    assert_eq!(
        stream.on_ticks(&first.preimage, 1, 0),
        Err(TickError::BadPreimage),
        "replay"
    );
    assert_eq!(
        stream.on_ticks(&[0; 32], 1, 0),
        Err(TickError::BadPreimage),
        "forgery"
    );
    assert_eq!(stream.on_ticks(&[0; 32], 0, 0), Err(TickError::ZeroCount));
    assert_eq!(
        stream.on_ticks(&[0; 32], 20, 0),
        Err(TickError::ChainExhausted)
    );
    assert_eq!(stream, before);

    let second = chain.next_tick().unwrap();
    let third = chain.next_tick().unwrap();
    stream.on_ticks(&second.preimage, 1, 1).unwrap();
    stream.on_ticks(&third.preimage, 1, 2).unwrap();
    assert!(stream.voucher_due(2), "K ticks on credit");
    assert!(
        !stream.service_allowed(2, 2),
        "service stops at the credit limit"
    );
    let fourth = chain.next_tick().unwrap();
    assert_eq!(
        stream.on_ticks(&fourth.preimage, 1, 3),
        Err(TickError::VoucherDue),
        "never more than K on credit"
    );

    stream.on_covered();
    assert!(stream.service_allowed(3, 2));
    assert_eq!(stream.on_ticks(&fourth.preimage, 1, 3), Ok(4));
}

#[test]
fn a_voucher_falls_due_after_the_interval_and_service_stops_after_grace() {
    let mut chain = TickChain::new([8; 32], 10);
    let mut stream = stream_for(&chain, 10, 10, 60);
    stream
        .on_ticks(&chain.next_tick().unwrap().preimage, 1, 100)
        .unwrap();
    assert!(!stream.voucher_due(159));
    assert!(stream.voucher_due(160));
    assert!(stream.service_allowed(161, 2));
    assert!(!stream.service_allowed(162, 2), "cut within the 2 s grace");
}

/// The whole picopayment loop: ticks on credit, then a voucher worth exactly the uncovered
/// ticks, accepted by the payee channel, which clears the credit.
#[test]
fn a_voucher_covers_the_ticks_on_credit() {
    use common::{TestKey, TestVerifier, terms};
    use m2m_core::payee::PayeeChannel;
    use m2m_core::payer::PayerChannel;

    let key = TestKey::new(11);
    let terms = terms(&key, 1);
    let mut payer = PayerChannel::open(terms, usd(1_000_000)).unwrap();
    let mut payee = PayeeChannel::open(terms, usd(1_000_000), 0).unwrap();
    let mut chain = TickChain::new([12; 32], 1_000);
    let commitment = TickCommitment {
        channel_id: terms.channel_id,
        anchor: chain.anchor(),
        tick_price: usd(3),
        length: 1_000,
    };
    let mut stream = TickStream::new(commitment, 50, 10);

    for round in 0..20u64 {
        while !stream.voucher_due(round) {
            let tick = chain.next_tick().unwrap();
            stream.on_ticks(&tick.preimage, 1, round).unwrap();
        }
        let owed = stream.uncovered_value().unwrap();
        assert_eq!(owed, usd(150), "K ticks at 3 each");
        let voucher = payer.commit(payer.prepare_payment(owed, &key).unwrap());
        let accepted = payee
            .accept(&voucher, owed, owed, &TestVerifier::default())
            .unwrap();
        payee.commit(accepted);
        payer.on_charged(owed, owed).unwrap();
        stream.on_covered();
        assert!(stream.service_allowed(round, 2));
    }
    assert_eq!(payee.record().charged_units, 20 * 150);
    assert_eq!(chain.remaining(), 0);
}
