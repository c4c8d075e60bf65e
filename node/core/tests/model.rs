//! Property test of payer and payee together: random prices and charges, lost responses,
//! corrective resyncs, top-ups, and crashes of either side (restored from what it persisted,
//! including a payee crash between persisting a voucher and serving). Invariants after every
//! step: the payee never counts more than the payer signed, never holds a voucher below what it
//! charged, never exceeds the deposit, and every charge is either served or one crash's loss.

mod common;

use common::{TestKey, TestVerifier, terms, usd};
use m2m_core::ChannelError;
use m2m_core::payee::{PayeeChannel, PayeeRecord};
use m2m_core::payer::{PayerChannel, PayerRecord};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Pay {
        price: u128,
        charge_percent: u8,
        lose_response: bool,
    },
    PayeeCrashBeforeServing {
        price: u128,
    },
    CrashPayer,
    CrashPayee,
    TopUp {
        amount: u128,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u128..5_000, 0u8..=100, proptest::bool::weighted(0.2))
            .prop_map(|(price, charge_percent, lose_response)| Op::Pay { price, charge_percent, lose_response }),
        1 => (1u128..5_000).prop_map(|price| Op::PayeeCrashBeforeServing { price }),
        1 => Just(Op::CrashPayer),
        1 => Just(Op::CrashPayee),
        1 => (1u128..50_000).prop_map(|amount| Op::TopUp { amount }),
    ]
}

struct World {
    key: TestKey,
    verifier: TestVerifier,
    payer: PayerChannel,
    payee: PayeeChannel,
    payer_disk: PayerRecord,
    payee_disk: PayeeRecord,
    deposit: u128,
    served: u128,
    lost_to_crashes: u128,
}

impl World {
    fn new(deposit: u128) -> Self {
        let key = TestKey::new(3);
        let terms = terms(&key, 1);
        let payer = PayerChannel::open(terms, usd(deposit)).unwrap();
        let payee = PayeeChannel::open(terms, usd(deposit), 0).unwrap();
        let (payer_disk, payee_disk) = (*payer.record(), *payee.record());
        Self {
            key,
            verifier: TestVerifier::default(),
            payer,
            payee,
            payer_disk,
            payee_disk,
            deposit,
            served: 0,
            lost_to_crashes: 0,
        }
    }

    /// The payer's half up to sending: persist, then release the voucher.
    fn send(&mut self, price: u128) -> Option<m2m_core::Voucher> {
        let prepared = match self.payer.prepare_payment(usd(price), &self.key) {
            Ok(prepared) => prepared,
            Err(ChannelError::ExceedsDeposit { .. }) => return None,
            Err(other) => panic!("payer refused: {other}"),
        };
        self.payer_disk = prepared.record;
        Some(self.payer.commit(prepared))
    }

    /// The payee checks; on a cumulative mismatch the payer resyncs from the corrective 402.
    fn deliver(&mut self, price: u128, charge: u128) -> Option<m2m_core::payee::AcceptedPayment> {
        let voucher = self.send(price)?;
        match self
            .payee
            .accept(&voucher, usd(price), usd(charge), &self.verifier)
        {
            Ok(accepted) => Some(accepted),
            Err(ChannelError::CumulativeMismatch { .. }) => {
                let (charged, held) = self.payee.corrective_state();
                let held = held.expect("a mismatch implies the payee holds a voucher");
                self.payer_disk = self
                    .payer
                    .resync(charged, &held, &self.verifier)
                    .expect("honest payee state");
                let voucher = self.send(price)?;
                Some(
                    self.payee
                        .accept(&voucher, usd(price), usd(charge), &self.verifier)
                        .expect("in step after resync"),
                )
            }
            Err(ChannelError::ExceedsDeposit { .. }) => None,
            Err(other) => panic!("payee refused an honest voucher: {other}"),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Pay {
                price,
                charge_percent,
                lose_response,
            } => {
                let charge = price * u128::from(charge_percent) / 100;
                if let Some(accepted) = self.deliver(price, charge) {
                    self.payee_disk = accepted.record;
                    self.payee.commit(accepted);
                    self.served += charge;
                    if !lose_response {
                        self.payer_disk = self.payer.on_charged(usd(charge), usd(price)).unwrap();
                    }
                }
            }
            Op::PayeeCrashBeforeServing { price } => {
                if let Some(accepted) = self.deliver(price, price) {
                    self.payee_disk = accepted.record; // persisted, then the process died
                    self.lost_to_crashes += price;
                    self.payee =
                        PayeeChannel::restore(*self.payee.terms(), self.payee_disk).unwrap();
                }
            }
            Op::CrashPayer => {
                self.payer = PayerChannel::restore(*self.payer.terms(), self.payer_disk).unwrap()
            }
            Op::CrashPayee => {
                self.payee = PayeeChannel::restore(*self.payee.terms(), self.payee_disk).unwrap()
            }
            Op::TopUp { amount } => {
                self.deposit += amount;
                self.payer_disk = self.payer.set_deposit(usd(self.deposit)).unwrap();
                let claimed = usd(self.payee.record().claimed_units);
                self.payee_disk = self
                    .payee
                    .on_chain_update(usd(self.deposit), claimed, None)
                    .unwrap();
            }
        }
    }

    fn check(&self) {
        let payer = self.payer.record();
        let payee = self.payee.record();
        assert!(
            payee.charged_units <= payer.highest_signed_units,
            "payee counts more than was signed"
        );
        assert!(
            payer.highest_signed_units <= self.deposit,
            "signed beyond the deposit"
        );
        assert!(
            payer.charged_units <= payee.charged_units,
            "payer believes more was charged than was"
        );
        if let Some(voucher) = payee.latest {
            assert!(
                voucher.max_claimable_units >= payee.charged_units,
                "held voucher below the charged total"
            );
        }
        assert_eq!(
            payee.charged_units,
            self.served + self.lost_to_crashes,
            "a charge neither served nor lost to a crash"
        );
        assert_eq!(self.payee_disk, *payee, "payee state not durable");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn payer_and_payee_stay_consistent_through_crashes(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World::new(20_000);
        for op in &ops {
            world.apply(op);
            world.check();
        }
    }
}
