//! The report of a run: progress while it runs, then `summary.md`, `summary.json` and three SVG
//! plots in the output folder.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use serde::Serialize;

use crate::SimError;
use crate::adversary::ForgeryOutcome;
use crate::check::Audit;
use crate::events::{Event, Figures, Outcome, Sample};
use crate::scenario::Scenario;

/// A progress bar on stderr (hidden when not wanted).
pub(crate) struct Progress(indicatif::ProgressBar);

impl Progress {
    pub(crate) fn new(visible: bool, seconds: u64) -> Self {
        let bar = if visible {
            indicatif::ProgressBar::new(seconds)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Self(bar)
    }

    pub(crate) fn tick(&self, seconds: u64, paid: u64, restarts: u32) {
        self.0.set_position(seconds);
        self.0
            .set_message(format!("{paid} paid readings, {restarts} seller restarts"));
    }

    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Everything a report is made of.
pub(crate) struct Inputs<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) devices: usize,
    pub(crate) events: Vec<Event>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) duration: Duration,
    pub(crate) audit: Audit,
    pub(crate) forgeries: ForgeryOutcome,
    pub(crate) lost_responses: u64,
    pub(crate) restarts: u32,
    pub(crate) withdrawals: usize,
    pub(crate) memory_per_device: Option<u64>,
    pub(crate) opening: (u64, Duration),
    pub(crate) roaming: Option<Roaming>,
    pub(crate) bitcoin: Option<crate::bitcoin::BitcoinFigures>,
    pub(crate) lightning: Option<crate::lightning::LightningFigures>,
}

/// Pay-per-minute figures of a run with hotspots.
#[derive(Debug, Clone, Serialize)]
pub struct Roaming {
    /// Hotspots.
    pub hotspots: usize,
    /// Roaming clients.
    pub clients: usize,
    /// Sessions opened.
    pub sessions: u64,
    /// Requests answered through paid tunnels.
    pub requests: u64,
    /// Sessions that failed to open or carry traffic.
    pub failed: u64,
    /// Minutes sold: vouchers × K ticks × tick length.
    pub minutes_sold: f64,
    /// Ticks received in all sessions.
    pub ticks: u64,
    /// Bytes metered.
    pub bytes: u64,
    /// Revenue of all hotspots (atomic units, claimed on chain).
    pub revenue: u128,
    /// Cut-offs measured after payments stopped: count, median and worst (ms).
    pub cutoffs: (usize, u64, u64),
    /// Tunnels still open 5 s after payments stopped (violations).
    pub not_cut: u64,
}

impl Roaming {
    pub(crate) fn of(
        scenario: &Scenario,
        hotspots: &[crate::roaming::Hotspot],
        audit: &Audit,
        roamed: &[crate::roaming::RoamingFigures],
    ) -> Option<Self> {
        if hotspots.is_empty() {
            return None;
        }
        let (covers, ticks, bytes, _) = hotspots
            .iter()
            .map(|h| h.gateway.totals())
            .fold((0, 0, 0, 0), |a, b| {
                (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)
            });
        let mut cutoffs: Vec<u64> = roamed
            .iter()
            .flat_map(|r| r.cutoffs_ms.iter().copied())
            .collect();
        cutoffs.sort_unstable();
        let tick_secs = hotspots[0].gateway.config().tick_secs;
        Some(Self {
            hotspots: hotspots.len(),
            clients: roamed.len(),
            sessions: roamed.iter().map(|r| r.sessions).sum(),
            requests: roamed.iter().map(|r| r.requests).sum(),
            failed: roamed.iter().map(|r| r.failed).sum(),
            minutes_sold: (covers * u64::from(scenario.gateways.ticks_per_voucher) * tick_secs)
                as f64
                / 60.0,
            ticks,
            bytes,
            revenue: audit
                .devices
                .iter()
                .filter(|d| d.kind == "gateway")
                .map(|d| d.tokens.to::<u128>())
                .sum(),
            cutoffs: (
                cutoffs.len(),
                cutoffs.get(cutoffs.len() / 2).copied().unwrap_or(0),
                cutoffs.last().copied().unwrap_or(0),
            ),
            not_cut: roamed.iter().map(|r| r.not_cut).sum(),
        })
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Devices in the fleet.
    pub devices: usize,
    /// Paying phase (seconds).
    pub duration_secs: u64,
    /// Counts and latencies.
    pub figures: Figures,
    /// Transactions on chain during the run.
    pub transactions: u64,
    /// Gas of all of them.
    pub gas: u64,
    /// Gas per paid reading.
    pub gas_per_payment: f64,
    /// Forged and stale vouchers refused / served.
    pub forgeries_refused: u64,
    /// Forged or stale vouchers served (violations).
    pub forgeries_served: u64,
    /// Responses the fault proxy dropped.
    pub lost_responses: u64,
    /// Seller restarts.
    pub restarts: u32,
    /// Timed withdrawals started and finalized.
    pub withdrawals: usize,
    /// Resident memory added per device (bytes).
    pub memory_per_device: Option<u64>,
    /// Channels opened (relayed deposits) before the paying phase.
    pub channels_opened: u64,
    /// How long opening them took (seconds).
    pub opening_secs: f64,
    /// Pay per minute, if the scenario has hotspots.
    pub roaming: Option<Roaming>,
    /// The Bitcoin-priced leg, if the scenario has one.
    pub bitcoin: Option<crate::bitcoin::BitcoinFigures>,
    /// The Lightning leg, if the scenario has one.
    pub lightning: Option<crate::lightning::LightningFigures>,
    /// The conservation check.
    pub audit: Audit,
    /// Whether every check passed.
    pub passed: bool,
    #[serde(skip)]
    events: Vec<Event>,
    #[serde(skip)]
    samples: Vec<Sample>,
}

impl RunReport {
    pub(crate) fn new(inputs: Inputs<'_>) -> Self {
        let figures = Figures::of(&inputs.events, inputs.duration);
        let last = inputs.samples.last().copied();
        let (gas, transactions) = last.map_or((0, 0), |s| (s.gas, s.transactions));
        let paid = figures.vouchers + figures.exact;
        let passed = inputs.audit.violations.is_empty()
            && inputs.forgeries.served == 0
            && inputs.roaming.as_ref().is_none_or(|r| r.not_cut == 0)
            && inputs
                .bitcoin
                .as_ref()
                .is_none_or(|b| b.violations.is_empty())
            && inputs
                .lightning
                .as_ref()
                .is_none_or(|l| l.violations.is_empty());
        Self {
            scenario: inputs.scenario.name.clone(),
            devices: inputs.devices,
            duration_secs: inputs.duration.as_secs(),
            gas_per_payment: gas as f64 / paid.max(1) as f64,
            figures,
            transactions,
            gas,
            forgeries_refused: inputs.forgeries.refused,
            forgeries_served: inputs.forgeries.served,
            lost_responses: inputs.lost_responses,
            restarts: inputs.restarts,
            withdrawals: inputs.withdrawals,
            memory_per_device: inputs.memory_per_device,
            channels_opened: inputs.opening.0,
            opening_secs: inputs.opening.1.as_secs_f64(),
            roaming: inputs.roaming,
            bitcoin: inputs.bitcoin,
            lightning: inputs.lightning,
            audit: inputs.audit,
            passed,
            events: inputs.events,
            samples: inputs.samples,
        }
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let f = &self.figures;
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let mut text = format!(
            "# Simulation `{}`: {verdict}\n\n\
             | | |\n|---|---|\n\
             | devices | {} |\n| channels opened before the paying phase | {} in {:.1} s |\n\
             | paying phase | {} s |\n\
             | paid readings | {} ({} by voucher, {} by `exact`) |\n\
             | paid readings per second | {:.1} |\n\
             | latency of paid readings | p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms |\n\
             | payments refused by sellers | {} |\n| payments refused by buyers (budget, blocked) | {} |\n\
             | overcharging caught by buyers | {} |\n| requests failed in transit | {} |\n\
             | forged or stale vouchers refused / served | {} / {} |\n\
             | responses dropped by the fault proxy | {} |\n| seller restarts | {} |\n\
             | timed withdrawals | {} |\n\
             | on-chain transactions | {} |\n| gas | {} ({:.0} per paid reading) |\n",
            self.scenario,
            self.devices,
            self.channels_opened,
            self.opening_secs,
            self.duration_secs,
            f.vouchers + f.exact,
            f.vouchers,
            f.exact,
            f.paid_per_sec,
            f.p50_ms,
            f.p90_ms,
            f.p99_ms,
            f.refused,
            f.buyer_refused,
            f.sellers_caught,
            f.failed,
            self.forgeries_refused,
            self.forgeries_served,
            self.lost_responses,
            self.restarts,
            self.withdrawals,
            self.transactions,
            self.gas,
            self.gas_per_payment,
        );
        if let Some(bytes) = self.memory_per_device {
            text.push_str(&format!(
                "| memory per device | {:.1} KiB |\n",
                bytes as f64 / 1024.0
            ));
        }
        if let Some(r) = &self.roaming {
            text.push_str(&format!(
                "\n## Pay per minute ({} hotspots, {} roaming clients)\n\n\
                 | | |\n|---|---|\n| sessions | {} ({} failed) |\n| requests through paid tunnels | {} |\n\
                 | minutes sold | {:.2} ({} ticks received) |\n| bytes metered | {} |\n| revenue (claimed) | {} |\n\
                 | cut-offs after payments stopped | {} (median {} ms, worst {} ms; {} tunnels not cut) |\n",
                r.hotspots, r.clients, r.sessions, r.failed, r.requests, r.minutes_sold, r.ticks, r.bytes,
                r.revenue, r.cutoffs.0, r.cutoffs.1, r.cutoffs.2, r.not_cut
            ));
        }
        if let Some(b) = &self.bitcoin {
            text.push_str(&format!(
                "\n## Bitcoin leg (regtest, Taproot channels; {} devices)\n\n\
                 | | |\n|---|---|\n| paid readings | {} ({:.1}/s; {} failed) |\n\
                 | latency p50 / p99 | {:.1} ms / {:.1} ms |\n| channels opened and closed | {} |\n\
                 | vbytes per channel | funding {:.0} + cooperative close {:.0} = {:.0} |\n\
                 | closes by the seller alone | {} ({:.0} vB each) |\n\
                 | sellers received | {} sat |\n| fees (top-ups, fundings, closes) | {} sat |\n",
                b.devices,
                b.paid,
                b.paid_per_sec,
                b.failed,
                b.latency_ms.0,
                b.latency_ms.1,
                b.channels,
                b.funding_vbytes,
                b.close_vbytes,
                b.funding_vbytes + b.close_vbytes,
                b.unilateral_closes.0,
                b.unilateral_closes.1,
                b.sellers_received,
                b.fees
            ));
            if b.violations.is_empty() {
                text.push_str("\nEvery satoshi accounted for (sellers = charged; buyers = top-up − paid − fees).\n");
            }
            for violation in &b.violations {
                text.push_str(&format!("- VIOLATION (bitcoin): {violation}\n"));
            }
        }
        if let Some(l) = &self.lightning {
            text.push_str(&format!(
                "\n## Lightning leg (regtest, ldk-node; a hub and {} devices)\n\n\
                 | | |\n|---|---|\n| top-ups over Lightning | {} |\n\
                 | readings paid over L402 | {} ({:.1}/s; {} failed) |\n\
                 | latency p50 / p99 (402, payment, paid request) | {:.1} ms / {:.1} ms |\n\
                 | sellers received | {} msat |\n| routing fees to the hub | {} msat |\n",
                l.nodes - 1,
                l.top_ups,
                l.paid,
                l.paid_per_sec,
                l.failed,
                l.latency_ms.0,
                l.latency_ms.1,
                l.sellers_received_msat,
                l.routing_fees_msat
            ));
            if let Some(failure) = &l.first_failure {
                text.push_str(&format!("\nFirst failed request: {failure}\n"));
            }
            if l.violations.is_empty() {
                text.push_str("\nEvery millisatoshi accounted for (sellers = served × price = buyers sent; buyers = top-up − sent − fees).\n");
            }
            for violation in &l.violations {
                text.push_str(&format!("- VIOLATION (lightning): {violation}\n"));
            }
        }
        let a = &self.audit;
        text.push_str(&format!(
            "\n## Conservation (test token, atomic units)\n\n\
             buyers {} + sellers {} + overcharging sellers {} + escrow {} = topped up {} \
             ({} channels; {} charged = claimed on chain)\n\n",
            a.buyers, a.sellers, a.cheats, a.escrow, a.topped_up, a.channels, a.charged
        ));
        if a.violations.is_empty() {
            text.push_str("No violations.\n");
        } else {
            for violation in &a.violations {
                text.push_str(&format!("- VIOLATION: {violation}\n"));
            }
        }
        text.push_str(
            "\nPer device: `devices.csv`. Plots: `payments.svg`, `latency.svg`, `gas_per_payment.svg`.\n",
        );
        text
    }

    /// Writes `summary.md`, `summary.json` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), SimError> {
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes).map_err(|e| SimError::Output(dir.join(name), e))
        };
        write("summary.md", self.markdown().as_bytes())?;
        write("devices.csv", self.devices_csv().as_bytes())?;
        write(
            "summary.json",
            &serde_json::to_vec_pretty(self).unwrap_or_default(),
        )?;
        self.plot_payments(&dir.join("payments.svg"))?;
        self.plot_latency(&dir.join("latency.svg"))?;
        self.plot_gas(&dir.join("gas_per_payment.svg"))
    }

    /// One line per device: what it paid for or earned, and what it holds at the end.
    fn devices_csv(&self) -> String {
        let mut per_buyer: std::collections::HashMap<u32, (u64, u64, u64)> =
            std::collections::HashMap::new();
        for event in &self.events {
            let row = per_buyer.entry(event.buyer).or_default();
            match event.outcome {
                Outcome::Voucher | Outcome::Exact => row.0 += 1,
                Outcome::Failed => row.2 += 1,
                _ => row.1 += 1,
            }
        }
        let mut csv = String::from(
            "kind,address,paid_readings,refused,failed,channels,charged,tokens_at_end\n",
        );
        let mut buyer_index = 0u32;
        for device in &self.audit.devices {
            let (paid, refused, failed) = if device.kind == "buyer" {
                buyer_index += 1;
                per_buyer
                    .get(&(buyer_index - 1))
                    .copied()
                    .unwrap_or_default()
            } else {
                (0, 0, 0)
            };
            csv.push_str(&format!(
                "{},{:#x},{paid},{refused},{failed},{},{},{}\n",
                device.kind, device.address, device.channels, device.charged, device.tokens
            ));
        }
        csv
    }

    fn plot_payments(&self, path: &Path) -> Result<(), SimError> {
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.at_secs, s.paid as f64))
            .collect();
        line_chart(
            path,
            "Paid readings over time",
            "seconds",
            "paid readings",
            &points,
        )
    }

    fn plot_gas(&self, path: &Path) -> Result<(), SimError> {
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.paid > 0)
            .map(|s| (s.paid as f64, s.gas as f64 / s.paid as f64))
            .collect();
        line_chart(
            path,
            "Gas per paid reading",
            "paid readings",
            "gas per reading",
            &points,
        )
    }

    fn plot_latency(&self, path: &Path) -> Result<(), SimError> {
        let mut latencies: Vec<f64> = self
            .events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Voucher | Outcome::Exact))
            .map(|e| e.latency_us as f64 / 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        // The distribution as a CDF: robust to the long on-chain tail of `exact`.
        let count = latencies.len().max(1) as f64;
        let points: Vec<(f64, f64)> = latencies
            .iter()
            .enumerate()
            .map(|(i, ms)| (*ms, (i + 1) as f64 / count * 100.0))
            .collect();
        line_chart(
            path,
            "Latency of paid readings (CDF)",
            "milliseconds",
            "% of readings",
            &points,
        )
    }
}

fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
) -> Result<(), SimError> {
    let fail = |e: &dyn std::fmt::Display| SimError::Plot(path.to_owned(), e.to_string());
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
