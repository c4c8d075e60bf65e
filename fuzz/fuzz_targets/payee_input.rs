//! Hostile vouchers and ticks at a payee: arbitrary frames, prices and charges never panic, and
//! every refusal leaves the channel and the tick stream exactly as they were.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_core::codec::Frame;
use m2m_core::payee::PayeeChannel;
use m2m_core::ticks::{TickCommitment, TickStream};
use m2m_core::{Amount, Asset, ChannelId, ChannelTerms, EvmAddress, Signature65, VoucherVerifier};

/// Accepts exactly the signatures whose first byte is 0x5a: lets the fuzzer reach past the
/// signature check without real ECDSA (which the unit tests and the crash test cover).
struct FirstByteVerifier;

impl VoucherVerifier for FirstByteVerifier {
    fn is_valid(&self, _: &[u8; 32], signature: &Signature65, _: &EvmAddress) -> bool {
        signature.0[0] == 0x5a
    }
}

const USD: Asset = Asset::Erc20 { chain_id: 1, token: [1; 20] };

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, frames) = data.split_at(4);
    let price = Amount::new(USD, u128::from(head[0]) + 1);
    let charge = Amount::new(USD, u128::from(head[1]));
    let terms = ChannelTerms {
        channel_id: ChannelId([7; 32]),
        asset: USD,
        domain_separator: [9; 32],
        payer_authorizer: EvmAddress([3; 20]),
    };
    let mut channel = PayeeChannel::open(terms, Amount::new(USD, u128::from(head[2]) * 16), 0).unwrap();
    let commitment = TickCommitment { channel_id: terms.channel_id, anchor: [head[3]; 32], tick_price: price, length: 64 };
    let mut stream = TickStream::new(commitment, 8, 60);
    for chunk in frames.chunks(72) {
        match Frame::decode(chunk) {
            Ok(Frame::Voucher(frame)) => {
                let before = channel.clone();
                match channel.accept(&frame.into_voucher(terms.channel_id), price, charge, &FirstByteVerifier) {
                    Ok(accepted) => channel.commit(accepted),
                    Err(_) => assert_eq!(channel, before, "a refused voucher changed the channel"),
                }
                let record = channel.record();
                if let Some(latest) = record.latest {
                    assert!(latest.max_claimable_units >= record.charged_units);
                }
                assert!(record.charged_units <= record.deposit_units);
            }
            Ok(Frame::Ticks(ticks)) => {
                let before = stream.clone();
                if stream.on_ticks(&ticks.preimage, ticks.count, 0).is_err() {
                    assert_eq!(stream, before, "a refused tick changed the stream");
                }
                assert!(stream.uncovered() <= 8, "more than K ticks on credit");
            }
            _ => {}
        }
    }
});
