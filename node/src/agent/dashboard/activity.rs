//! What the dashboard shows of the agent's recent activity: payments per minute over the last
//! hour for each leg and direction, totals since the agent started, and the latest events.
//!
//! Fed by the event bus as an observer, so it sees every payment as the counters do (a
//! lagging subscriber could miss some). Memory only, bounded (an hour of minutes, a fixed
//! number of events): a restart starts a new picture, while the money is in the store.
//! Time is an input of [`Activity::record`], so the windows are tested without a clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use crate::events::{AgentEvent, EventObserver, Leg};

/// Minutes the chart covers.
pub const MINUTES: usize = 60;
/// Events kept for the "recent" list.
pub const RECENT: usize = 50;

/// Whether the device was paid or paid someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A payment received (a reading sold, a minute of connectivity).
    Received,
    /// A payment sent (a reading bought).
    Sent,
}

/// A count of payments and their sum, in the leg's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    amount: u128,
}

impl Tally {
    fn add(&mut self, amount: u128) {
        self.count += 1;
        self.amount = self.amount.saturating_add(amount);
    }
}

type Series = (Leg, Direction);

/// One minute's payments (`start` is a multiple of 60, Unix seconds).
#[derive(Debug)]
struct Minute {
    start: u64,
    tallies: BTreeMap<Series, Tally>,
}

#[derive(Debug, Default)]
struct Inner {
    minutes: VecDeque<Minute>,
    totals: BTreeMap<Series, Tally>,
    recent: VecDeque<(u64, AgentEvent)>,
}

/// The recorder; one per agent.
#[derive(Debug)]
pub struct Activity {
    started: u64,
    inner: Mutex<Inner>,
}

impl Activity {
    /// An empty picture, started at `now` (Unix seconds).
    pub fn new(now: u64) -> Self {
        Self {
            started: now,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes `event` in at `now`.
    pub fn record(&self, event: &AgentEvent, now: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let payment = match event {
            AgentEvent::PaymentReceived(payment) => Some((payment, Direction::Received)),
            AgentEvent::PaymentSent(payment) => Some((payment, Direction::Sent)),
            _ => None,
        };
        if let Some((payment, direction)) = payment {
            let series = (payment.leg, direction);
            inner.totals.entry(series).or_default().add(payment.amount);
            let start = now - now % 60;
            if inner.minutes.back().is_none_or(|m| m.start < start) {
                inner.minutes.push_back(Minute {
                    start,
                    tallies: BTreeMap::new(),
                });
            }
            // An event stamped in an earlier minute than the newest (clocks step back) counts
            // in the newest: the totals stay exact, the chart is off by a minute at most.
            if let Some(minute) = inner.minutes.back_mut() {
                minute
                    .tallies
                    .entry(series)
                    .or_default()
                    .add(payment.amount);
            }
            let oldest = start.saturating_sub(60 * (MINUTES as u64 - 1));
            while inner.minutes.front().is_some_and(|m| m.start < oldest) {
                inner.minutes.pop_front();
            }
        }
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back((now, event.clone()));
    }

    /// The picture at `now`, as the dashboard's API sends it: `minutes` (the start of each of
    /// the last [`MINUTES`] minutes, oldest first), one entry in `series` per leg and direction
    /// seen (counts and amounts per minute, aligned with `minutes`), `totals` since start, and
    /// `recent` events, newest first. Amounts are decimal strings (they are 128-bit).
    pub fn snapshot(&self, now: u64) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let last = now - now % 60;
        let first = last.saturating_sub(60 * (MINUTES as u64 - 1));
        let minutes: Vec<u64> = (0..MINUTES as u64)
            .map(|i| first + 60 * i)
            .filter(|start| *start <= last)
            .collect();
        let series: Vec<Value> = inner
            .totals
            .iter()
            .map(|(series, total)| {
                let per_minute: Vec<Tally> = minutes
                    .iter()
                    .map(|start| {
                        inner
                            .minutes
                            .iter()
                            .find(|m| m.start == *start)
                            .and_then(|m| m.tallies.get(series).copied())
                            .unwrap_or_default()
                    })
                    .collect();
                let (leg, direction) = *series;
                json!({
                    "leg": leg,
                    "direction": direction,
                    "counts": per_minute.iter().map(|t| t.count).collect::<Vec<_>>(),
                    "amounts": per_minute.iter().map(|t| t.amount.to_string()).collect::<Vec<_>>(),
                    "totalCount": total.count,
                    "totalAmount": total.amount.to_string(),
                })
            })
            .collect();
        let recent: Vec<Value> = inner
            .recent
            .iter()
            .rev()
            .map(|(at, event)| {
                let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
                value["at"] = json!(at);
                value
            })
            .collect();
        json!({
            "since": self.started,
            "now": now,
            "minutes": minutes,
            "series": series,
            "recent": recent,
        })
    }
}

impl EventObserver for Activity {
    fn observe(&self, event: &AgentEvent) {
        self.record(event, crate::now_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Payment;

    fn received(leg: Leg, amount: u128) -> AgentEvent {
        AgentEvent::PaymentReceived(Payment {
            leg,
            scheme: "batch-settlement".into(),
            amount,
            resource: "/temperature".into(),
        })
    }

    #[test]
    fn payments_fall_into_their_minute_and_old_minutes_drop_off() {
        let t0 = 1_800_000_000; // the start of a minute
        let activity = Activity::new(t0);
        activity.record(&received(Leg::Evm, 1_000), t0 + 1);
        activity.record(&received(Leg::Evm, 1_000), t0 + 59);
        activity.record(&received(Leg::Btc, 10), t0 + 61);
        let sent = AgentEvent::PaymentSent(Payment {
            leg: Leg::Evm,
            scheme: "batch-settlement".into(),
            amount: 5,
            resource: "http://x/t".into(),
        });
        activity.record(&sent, t0 + 62);
        let now = t0 + 90;
        let picture = activity.snapshot(now);
        let minutes = picture["minutes"].as_array().unwrap();
        assert_eq!(minutes.len(), MINUTES);
        assert_eq!(minutes.last().unwrap(), &json!(t0 + 60));
        let series = picture["series"].as_array().unwrap();
        let find = |leg: &str, direction: &str| {
            series
                .iter()
                .find(|s| s["leg"] == leg && s["direction"] == direction)
                .unwrap()
                .clone()
        };
        let evm = find("evm", "received");
        assert_eq!(evm["totalCount"], 2);
        assert_eq!(evm["totalAmount"], "2000");
        let counts = evm["counts"].as_array().unwrap();
        assert_eq!(counts[MINUTES - 2], 2, "both in the minute starting at t0");
        assert_eq!(counts[MINUTES - 1], 0);
        assert_eq!(find("btc", "received")["counts"][MINUTES - 1], 1);
        assert_eq!(find("evm", "sent")["amounts"][MINUTES - 1], "5");
        assert_eq!(
            picture["recent"][0]["event"], "payment_sent",
            "newest first"
        );
        assert_eq!(picture["recent"][0]["at"], t0 + 62);

        // An hour later the chart is empty again; the totals are not.
        let later = now + 3_600;
        activity.record(&AgentEvent::Stopping, later);
        let picture = activity.snapshot(later);
        let evm = &picture["series"][0];
        assert!(evm["counts"].as_array().unwrap().iter().all(|c| c == 0));
        assert_eq!(evm["totalCount"], 2);
    }

    #[test]
    fn the_recent_list_and_the_minutes_stay_bounded() {
        let activity = Activity::new(0);
        for i in 0..10_000u64 {
            activity.record(&received(Leg::Lightning, 1), i * 7);
        }
        let inner = activity.inner.lock().unwrap();
        assert_eq!(inner.recent.len(), RECENT);
        assert!(inner.minutes.len() <= MINUTES);
        assert_eq!(inner.totals.values().next().unwrap().count, 10_000);
    }
}
