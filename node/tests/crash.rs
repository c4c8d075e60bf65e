//! Crash test: a payee process (`m2m-payee-harness`, real store and checks) is killed with
//! SIGKILL at random points of a payment stream and restarted, again and again. After every
//! restart: every payment it acknowledged is still there, and nothing was counted twice or
//! invented. Defaults: 100,000 payments and 200 kills; `M2M_CRASH_PAYMENTS` / `M2M_CRASH_KILLS`
//! change them (the figures are printed with `--nocapture`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;

use alloy::primitives::hex;
use m2m_core::codec::{Frame, VoucherFrame};
use m2m_core::{ChannelId, VoucherSigner, voucher_digest};
use m2m_node::channel_crypto::WalletVoucherSigner;
use m2m_wallet::{DeviceKeys, DeviceSeed, Network, Signer};

const CHANNEL: [u8; 32] = [7; 32];
const DOMAIN: [u8; 32] = [9; 32];

fn env_or(name: &str, default: u128) -> u128 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: deterministic kill points without a randomness dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

struct Payee {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Payee {
    fn start(data_dir: &std::path::Path, authorizer: &str, deposit: u128) -> (Self, u128) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_m2m-payee-harness"))
            .arg(data_dir)
            .args([
                hex::encode(CHANNEL),
                hex::encode(DOMAIN),
                authorizer.to_string(),
                deposit.to_string(),
                "1".into(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the payee harness");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let state = lines.next().expect("state line").unwrap();
        let fields: Vec<&str> = state.split(' ').collect();
        assert_eq!(fields[0], "state", "{state}");
        let charged: u128 = fields[1].parse().unwrap();
        let held: u128 = fields[2].parse().unwrap();
        assert_eq!(
            held, charged,
            "the held voucher covers exactly what was charged"
        );
        (Self { child, lines }, charged)
    }

    fn next_ack(&mut self) -> u128 {
        let line = self.lines.next().expect("payee output").unwrap();
        line.strip_prefix("ack ")
            .unwrap_or_else(|| panic!("payee said {line}"))
            .parse()
            .unwrap()
    }
}

#[test]
fn sigkilled_payee_never_loses_an_acknowledged_payment() {
    let payments = env_or("M2M_CRASH_PAYMENTS", 100_000);
    let kills = env_or("M2M_CRASH_KILLS", 200) as u64;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("payee");
    let keys = DeviceKeys::derive(&DeviceSeed::from_phrase(
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    )
    .unwrap(), Network::Regtest)
    .unwrap();
    let authorizer = hex::encode(keys.evm_address());
    let signer = WalletVoucherSigner(&keys);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut acked, mut sent, mut killed, mut unacked_survivors) = (0u128, 0u128, 0u64, 0u128);
    let started = std::time::Instant::now();

    loop {
        let (mut payee, charged) = Payee::start(&data_dir, &authorizer, payments + 10);
        assert!(
            charged >= acked,
            "acknowledged payments lost: payee has {charged}, acknowledged {acked}"
        );
        assert!(
            charged <= sent,
            "payee counts {charged} but only {sent} were ever sent"
        );
        unacked_survivors += charged - acked; // persisted, killed before the ack went out
        acked = charged; // the payer resynchronises on the payee's proven total
        if charged == payments {
            payee.child.kill().unwrap();
            let _ = payee.child.wait();
            break;
        }
        let last_run = killed >= kills;
        let segment = if last_run {
            payments - charged
        } else {
            1 + u128::from(rng.below(2 * (payments as u64 / kills.max(1))))
        };
        let target = (charged + segment).min(payments);

        // The writer streams vouchers charged+1 ..= target without waiting for acks (pipelined).
        let mut stdin = payee.child.stdin.take().unwrap();
        let frames: Vec<String> = (charged + 1..=target)
            .map(|cumulative| {
                let digest = voucher_digest(&DOMAIN, &ChannelId(CHANNEL), cumulative);
                let signature = signer.sign_digest(&digest).unwrap();
                let frame = Frame::Voucher(VoucherFrame {
                    channel_ref: 0,
                    max_claimable_units: cumulative,
                    signature,
                });
                hex::encode(frame.to_bytes())
            })
            .collect();
        sent = sent.max(target);
        let (done_tx, done_rx) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            for line in frames {
                if writeln!(stdin, "{line}").is_err() {
                    break;
                }
            }
            let _ = done_tx.send(());
            stdin // kept open: closing it would let the payee exit cleanly
        });
        let acks_before_kill = if last_run {
            target - charged
        } else {
            u128::from(rng.below((target - charged) as u64 + 1))
        };
        for expected in charged + 1..=charged + acks_before_kill {
            assert_eq!(payee.next_ack(), expected, "acks arrive in order");
            acked = expected;
        }
        if !last_run {
            payee.child.kill().unwrap(); // SIGKILL, mid-stream
            killed += 1;
        }
        let _ = done_rx.recv();
        drop(writer.join());
        let _ = payee.child.kill();
        let _ = payee.child.wait();
    }
    println!(
        "crash test: {payments} payments, {killed} SIGKILLs, 0 acknowledged payments lost, 0 counted twice, \
         {unacked_survivors} persisted-but-unacknowledged payments recovered, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(killed >= kills);
}
