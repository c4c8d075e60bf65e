//! The compact wire form: sizes, round trips, and a typed error for every malformed input.

use m2m_core::Signature65;
use m2m_core::codec::{CommitmentFrame, DecodeError, Frame, TicksFrame, VoucherFrame};
use proptest::prelude::*;

fn signature(byte: u8, v: u8) -> Signature65 {
    let mut bytes = [byte; 65];
    bytes[32] &= 0x7f; // low-s signatures never use the top bit of s
    bytes[64] = v;
    Signature65(bytes)
}

fn voucher(max: u128) -> Frame {
    Frame::Voucher(VoucherFrame {
        channel_ref: 3,
        max_claimable_units: max,
        signature: signature(0x5a, 28),
    })
}

#[test]
fn frames_fit_the_wire_budget() {
    let typical_voucher = voucher(12_345_678).to_bytes();
    assert!(
        typical_voucher.len() <= 100,
        "voucher frame is {} bytes",
        typical_voucher.len()
    );
    let worst_voucher = Frame::Voucher(VoucherFrame {
        channel_ref: u32::MAX,
        max_claimable_units: u128::MAX,
        signature: signature(1, 27),
    });
    assert!(worst_voucher.to_bytes().len() <= 100);
    let tick = Frame::Ticks(TicksFrame {
        channel_ref: 3,
        count: 1,
        preimage: [9; 32],
    })
    .to_bytes();
    assert!(tick.len() <= 40, "tick frame is {} bytes", tick.len());
    println!("voucher {} B, tick {} B", typical_voucher.len(), tick.len());
}

#[test]
fn every_truncation_of_a_valid_frame_is_an_error() {
    let frames = [
        voucher(1 << 70),
        Frame::Ticks(TicksFrame {
            channel_ref: 300,
            count: 5,
            preimage: [1; 32],
        }),
        Frame::Commitment(CommitmentFrame {
            channel_ref: 1,
            length: 100_000,
            tick_price_units: 7,
            anchor: [2; 32],
        }),
    ];
    for frame in frames {
        let bytes = frame.to_bytes();
        assert_eq!(Frame::decode(&bytes), Ok(frame));
        for cut in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Frame::decode(&longer), Err(DecodeError::TrailingBytes(1)));
    }
}

#[test]
fn malformed_fields_are_typed_errors() {
    assert_eq!(Frame::decode(&[0x7f]), Err(DecodeError::UnknownTag(0x7f)));
    // channel_ref 1 written as two groups (0x81 0x00): not minimal.
    assert_eq!(
        Frame::decode(&[0x02, 0x81, 0x00]),
        Err(DecodeError::NonMinimalVarint)
    );
    // A channel_ref above u32::MAX.
    assert_eq!(
        Frame::decode(&[0x02, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        Err(DecodeError::VarintOverflow)
    );
    // A varint longer than 128 bits.
    let mut long = vec![0x01, 0x01];
    long.extend([0xff; 19]);
    long.push(0x01);
    assert_eq!(Frame::decode(&long), Err(DecodeError::VarintOverflow));
    let mut zero_count = vec![0x02, 0x01, 0x00];
    zero_count.extend([0; 32]);
    assert_eq!(Frame::decode(&zero_count), Err(DecodeError::ZeroTickCount));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn vouchers_round_trip(channel_ref: u32, max: u128, byte: u8, odd: bool) {
        let frame = Frame::Voucher(VoucherFrame {
            channel_ref,
            max_claimable_units: max,
            signature: signature(byte, if odd { 28 } else { 27 }),
        });
        prop_assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
    }

    #[test]
    fn ticks_round_trip(channel_ref: u32, count in 1u32.., preimage: [u8; 32]) {
        let frame = Frame::Ticks(TicksFrame { channel_ref, count, preimage });
        prop_assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
    }
}
