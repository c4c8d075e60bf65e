//! Saved budget windows as read back from the store (bytes a damaged or hostile disk may hold):
//! decoding never panics, what decodes re-encodes to the same bytes, and a tracker restored from
//! it keeps its caps: whatever was restored, a payment it authorizes never takes a window past
//! its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_core::budget::{BudgetPolicy, BudgetTracker, SavedWindow};
use m2m_core::{Amount, Asset};

const USD: Asset = Asset::Erc20 { chain_id: 1, token: [1; 20] };

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, window) = data.split_at(10);
    let Ok(saved) = SavedWindow::decode(window) else {
        return;
    };
    assert_eq!(saved.encode(), window, "decode and encode disagree");
    let cap = u128::from(u16::from_be_bytes([head[0], head[1]])) + 1;
    let policy = BudgetPolicy {
        per_request: Amount::new(USD, cap),
        per_peer_per_hour: Amount::new(USD, cap * 4),
        per_day: Amount::new(USD, cap * 16),
    };
    let mut tracker = BudgetTracker::<u8>::new(policy);
    if tracker.restore_peer(head[2], &saved, head[3] & 1 == 1).is_err() {
        return;
    }
    let _ = tracker.restore_day(&saved);
    let now = u64::from_be_bytes([head[2], head[3], head[4], head[5], head[6], head[7], head[8], head[9]]);
    let price = u128::from(head[4]) + 1;
    let (hour_before, day_before) = tracker.spent(&head[2], now);
    if tracker.authorize(&head[2], Amount::new(USD, price), now).is_ok() {
        let (hour, day) = tracker.spent(&head[2], now);
        assert!(hour <= cap * 4 && day <= cap * 16, "a cap was passed: {hour} {day}");
        assert_eq!((hour, day), (hour_before + price, day_before + price));
    }
});
