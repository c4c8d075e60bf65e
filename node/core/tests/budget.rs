//! The budget policy: per request, per peer per rolling hour, per rolling day, blocked peers.

mod common;

use common::usd;
use m2m_core::budget::{BudgetError, BudgetPolicy, BudgetTracker};
use m2m_core::{Amount, Asset};

fn tracker() -> BudgetTracker<&'static str> {
    BudgetTracker::new(BudgetPolicy {
        per_request: usd(100),
        per_peer_per_hour: usd(1_000),
        per_day: usd(3_000),
    })
}

#[test]
fn caps_are_enforced_and_refusals_record_nothing() {
    let mut budget = tracker();
    assert_eq!(
        budget.authorize(&"sensor", usd(101), 0),
        Err(BudgetError::PerRequest {
            price_units: 101,
            cap_units: 100
        })
    );
    assert!(matches!(
        budget.authorize(&"sensor", Amount::new(Asset::Bitcoin, 1), 0),
        Err(BudgetError::WrongAsset(_))
    ));
    for _ in 0..10 {
        budget.authorize(&"sensor", usd(100), 0).unwrap();
    }
    assert_eq!(
        budget.authorize(&"sensor", usd(1), 30),
        Err(BudgetError::PeerHourly {
            spent_units: 1_000,
            cap_units: 1_000
        })
    );
    budget.authorize(&"hotspot", usd(100), 30).unwrap(); // another peer has its own hour
}

#[test]
fn the_hour_rolls_and_the_day_caps_everyone() {
    let mut budget = tracker();
    for _ in 0..10 {
        budget.authorize(&"sensor", usd(100), 0).unwrap();
    }
    assert!(
        budget.authorize(&"sensor", usd(100), 3_599).is_err(),
        "still inside the hour"
    );
    budget.authorize(&"sensor", usd(100), 3_600).unwrap();
    for peer in ["a", "b"] {
        for _ in 0..9 {
            budget.authorize(&peer, usd(100), 4_000).unwrap();
        }
    }
    budget.authorize(&"c", usd(100), 4_000).unwrap(); // 1,000 + 100 + 1,800 + 100 = the daily cap
    assert_eq!(
        budget.authorize(&"c", usd(1), 4_000),
        Err(BudgetError::Daily {
            spent_units: 3_000,
            cap_units: 3_000
        })
    );
    // A day later the first hour (1,000) has rolled out; hour one's 2,000 still counts.
    budget.authorize(&"c", usd(100), 86_400 + 60).unwrap();
    for _ in 0..9 {
        budget.authorize(&"d", usd(100), 86_400 + 60).unwrap();
    }
    assert_eq!(
        budget.authorize(&"d", usd(1), 86_400 + 60),
        Err(BudgetError::Daily {
            spent_units: 3_000,
            cap_units: 3_000
        })
    );
}

#[test]
fn a_blocked_peer_gets_nothing() {
    let mut budget = tracker();
    budget.block("cheater");
    assert!(budget.is_blocked(&"cheater"));
    assert_eq!(
        budget.authorize(&"cheater", usd(1), 0),
        Err(BudgetError::PeerBlocked)
    );
}

#[test]
fn a_saved_and_restored_tracker_continues_the_same_hour_and_day() {
    use m2m_core::budget::SavedWindow;
    let mut budget = tracker();
    for _ in 0..6 {
        budget.authorize(&"sensor", usd(100), 120).unwrap();
    }
    budget.authorize(&"hotspot", usd(100), 200).unwrap();
    budget.block("cheat");
    let mut restored = tracker();
    for peer in ["sensor", "hotspot", "cheat"] {
        let (window, blocked) = budget.saved_peer(&peer);
        let bytes = window.encode();
        let decoded = SavedWindow::decode(&bytes).unwrap();
        assert_eq!(decoded, window);
        restored.restore_peer(peer, &decoded, blocked).unwrap();
    }
    let day = SavedWindow::decode(&budget.saved_day().encode()).unwrap();
    restored.restore_day(&day).unwrap();
    assert_eq!(restored.spent(&"sensor", 300), (600, 700));
    assert!(restored.is_blocked(&"cheat"));
    for _ in 0..4 {
        restored.authorize(&"sensor", usd(100), 300).unwrap();
    }
    assert!(matches!(
        restored.authorize(&"sensor", usd(100), 300),
        Err(BudgetError::PeerHourly {
            spent_units: 1_000,
            ..
        })
    ));
    // The hour rolls on as if the tracker had never stopped.
    assert_eq!(restored.spent(&"sensor", 120 + 3_600).0, 400);
    assert!(SavedWindow::decode(&[1, 0]).is_err());
    assert!(SavedWindow::decode(&[9; 10]).is_err());
}
