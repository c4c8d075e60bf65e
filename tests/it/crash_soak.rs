//! Crash soak of the real processes: `m2m serve` (EVM, on anvil) or `m2m btc serve` (regtest) and
//! the buying `m2m get` / `m2m btc get`, each a separate process with its own data directory,
//! killed with SIGKILL at random moments of a paid stream and restarted, again and again.
//!
//! After every kill, from the stores of the processes that are down (`m2m channels`, which reads
//! a store without a passphrase):
//! - no acknowledged payment is lost: the seller holds vouchers for at least every reading the
//!   buyer printed (a reading is only served once its voucher is durable);
//! - none is counted twice or invented: the seller never holds more than the buyer ever signed,
//!   and the buyer has at most one voucher per channel in flight beyond it;
//! - readings paid but never seen by the buyer (the response was cut by the kill) number at most
//!   one per kill.
//!
//! At the end the seller stops cleanly and settles on chain, and every unit is accounted for.
//! The buyer must never stop by itself while its seller is up (a refusal after a restart is a
//! failure). Counts come from `M2M_SOAK_SELLER_KILLS`, `M2M_SOAK_BUYER_KILLS` and
//! `M2M_SOAK_MAX_DELAY_MS` (`scripts/crash-soak` runs the long version).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::Device;

/// How long a soak runs: kills of each process, and the longest pause before a kill.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    pub seller_kills: u64,
    pub buyer_kills: u64,
    pub max_delay_ms: u64,
}

impl SoakPlan {
    /// `defaults`, overridden by the `M2M_SOAK_*` variables.
    pub fn from_env(defaults: SoakPlan) -> Self {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            seller_kills: var("M2M_SOAK_SELLER_KILLS", defaults.seller_kills),
            buyer_kills: var("M2M_SOAK_BUYER_KILLS", defaults.buyer_kills),
            max_delay_ms: var("M2M_SOAK_MAX_DELAY_MS", defaults.max_delay_ms),
        }
    }
}

/// One side's process and the command line that starts it.
pub struct Side {
    pub device: Device,
    pub args: Vec<String>,
    pub log: PathBuf,
    running: Option<Running>,
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl Side {
    pub fn new(device: Device, args: Vec<String>, log: PathBuf) -> Self {
        Self {
            device,
            args,
            log,
            running: None,
        }
    }

    fn start(&mut self) {
        assert!(self.running.is_none());
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut child = self.device.spawn(&args, &self.log);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.running = Some(Running {
            child,
            lines,
            reader,
        });
    }

    /// Starts it and waits for its first line (a server's "listening" line).
    pub fn start_ready(&mut self) {
        self.start();
        let ready = self.line(Duration::from_secs(60));
        assert!(ready.is_some(), "it did not start: {}", self.log_text());
    }

    /// The next line it printed, waiting up to `timeout`.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        self.running.as_ref()?.lines.recv_timeout(timeout).ok()
    }

    /// SIGKILL; returns what it printed that was not read yet (up to the end of its output).
    pub fn kill(&mut self) -> Vec<String> {
        let Some(mut running) = self.running.take() else {
            return Vec::new();
        };
        let _ = running.child.kill();
        let _ = running.child.wait();
        let _ = running.reader.join();
        running.lines.try_iter().collect()
    }

    /// Whether it exited by itself (then its log is returned).
    fn exited(&mut self) -> Option<String> {
        let running = self.running.as_mut()?;
        let status = running.child.try_wait().unwrap()?;
        Some(format!("{status}: {}", self.log_text()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and its exit within `timeout`.
    pub fn stop(&mut self, timeout: Duration) {
        let mut running = self.running.take().expect("running");
        let pid = running.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = running.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {}", self.log_text());
                break;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its channels as its store holds them (the process must be down).
    pub fn channels(&self) -> Vec<Value> {
        channels_of(&self.device)
    }
}

impl Drop for Side {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        self.kill();
    }
}

/// A device's channels as its store holds them (`m2m channels`; no process may hold it).
pub fn channels_of(device: &Device) -> Vec<Value> {
    let output = device.run(&["--json", "channels"]);
    assert!(
        output.status.success(),
        "m2m channels: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    crate::cli::stdout_json(&output)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The totals of one role's channels: `field` summed, and how many channels.
pub fn total(rows: &[Value], role: &str, field: &str) -> (u128, usize) {
    let rows: Vec<&Value> = rows.iter().filter(|r| r["role"] == role).collect();
    let sum = rows
        .iter()
        .map(|r| r[field].as_str().unwrap_or("0").parse::<u128>().unwrap())
        .sum();
    (sum, rows.len())
}

/// A loopback port nobody listens on now (the seller takes the same one at every restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// xorshift64*: reproducible kill points without a randomness dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

/// What a soak saw.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub seller_kills: u64,
    pub buyer_kills: u64,
    /// Readings the buyer printed (acknowledged payments).
    pub acknowledged: u128,
    /// Readings paid (held by the seller) whose response a kill cut off.
    pub paid_unseen: u128,
    /// The seller's total at the end, in the leg's unit.
    pub seller_total: u128,
    pub elapsed: Duration,
}

/// Runs the soak: `is_reading` tells an acknowledged reading in the buyer's output.
pub fn soak(
    seller: &mut Side,
    buyer: &mut Side,
    price: u128,
    plan: SoakPlan,
    is_reading: impl Fn(&str) -> bool,
) -> SoakReport {
    let started = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ plan.seller_kills ^ (plan.buyer_kills << 32));
    let mut report = SoakReport::default();
    let count = |lines: Vec<String>, report: &mut SoakReport| {
        report.acknowledged += lines.iter().filter(|l| is_reading(l)).count() as u128;
    };
    seller.start_ready();
    buyer.start();
    let mut progress = Instant::now();
    while report.seller_kills < plan.seller_kills || report.buyer_kills < plan.buyer_kills {
        // A pause anywhere from 0 to the maximum: kills land in start-up, deposits and opens,
        // signing, persisting and serving alike.
        let pause = Duration::from_millis(rng.below(plan.max_delay_ms + 1));
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if let Some(log) = buyer.exited() {
                panic!("the buyer stopped by itself while its seller was up: {log}");
            }
            std::thread::sleep(Duration::from_millis(5).min(pause));
        }
        let seller_left = plan.seller_kills - report.seller_kills.min(plan.seller_kills);
        let buyer_left = plan.buyer_kills - report.buyer_kills.min(plan.buyer_kills);
        let kill_seller = rng.below(seller_left + buyer_left) < seller_left;
        if kill_seller {
            seller.kill();
            report.seller_kills += 1;
            // Its buyer fails on the broken connection and stops; it is killed if it lingers.
            let deadline = Instant::now() + Duration::from_secs(10);
            while buyer.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            report.buyer_kills += 1;
        }
        count(buyer.kill(), &mut report);
        check(seller, buyer, price, kill_seller, &mut report);
        if kill_seller {
            seller.start_ready();
        }
        buyer.start();
        if progress.elapsed() > Duration::from_secs(30) {
            progress = Instant::now();
            eprintln!(
                "soak: {} seller and {} buyer kills, {} readings, {:.0} s",
                report.seller_kills,
                report.buyer_kills,
                report.acknowledged,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // A last stretch without kills shows the pair still pays after everything.
    let before = report.acknowledged;
    let deadline = Instant::now() + Duration::from_secs(60);
    while report.acknowledged < before + 5 {
        if let Some(line) = buyer.line(Duration::from_secs(1)) {
            count(vec![line], &mut report);
        }
        if let Some(log) = buyer.exited() {
            panic!("the buyer stopped after the soak: {log}");
        }
        assert!(Instant::now() < deadline, "no readings after the soak");
    }
    count(buyer.kill(), &mut report);
    seller.stop(Duration::from_secs(60));
    check(seller, buyer, price, true, &mut report);
    report.elapsed = started.elapsed();
    report
}

/// The invariants, on the stores of the processes that are down (the buyer always is here).
fn check(seller: &Side, buyer: &Side, price: u128, seller_down: bool, report: &mut SoakReport) {
    let buyer_rows = buyer.channels();
    let (signed, channels) = total(&buyer_rows, "payer", "exposure");
    let acknowledged = report.acknowledged * price;
    assert!(
        signed >= acknowledged,
        "the buyer printed readings worth {acknowledged} but its store signed only {signed}"
    );
    if !seller_down {
        return;
    }
    let (held, _) = total(&seller.channels(), "payee", "paid");
    assert!(
        held >= acknowledged,
        "acknowledged payments lost: the seller holds {held}, the buyer saw readings worth {acknowledged}"
    );
    assert!(
        held <= signed,
        "the seller holds {held}, more than the buyer ever signed ({signed})"
    );
    assert!(
        signed - held <= price * channels as u128,
        "the buyer signed {signed}, the seller holds {held}: more than one voucher in flight per channel"
    );
    assert_eq!(held % price, 0, "whole readings only");
    let unseen = held / price - report.acknowledged;
    let kills = u128::from(report.seller_kills + report.buyer_kills);
    assert!(
        unseen <= kills,
        "{unseen} readings paid but not seen after only {kills} kills"
    );
    report.paid_unseen = unseen;
    report.seller_total = held;
}

/// A file next to a device's data directory (its configuration, its logs).
pub fn beside(device: &Device, name: &str) -> PathBuf {
    device
        .data_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(name)
}
