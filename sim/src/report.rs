//! The report of a run: progress while it runs, then `summary.md`, `summary.json`,
//! `devices.csv`, four SVG plots (`plots`) and `report.html` (`report_html`) in the output folder.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::SimError;
use crate::adversary::ForgeryOutcome;
use crate::check::Audit;
use crate::events::{Event, Figures, Ledger, Outcome, Sample, Timeline};
use crate::plots::LegSeries;
use crate::scenario::Scenario;
pub use crate::summary::Section;

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
    pub(crate) mqtt: Option<crate::mqtt_leg::MqttFigures>,
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
    /// Each request answered through a paid tunnel, from every client.
    #[serde(skip)]
    pub timeline: Timeline,
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
            timeline: roamed.iter().fold(Timeline::default(), |mut all, r| {
                all.extend(r.timeline.clone());
                all
            }),
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
    /// The MQTT leg, if the scenario has one.
    pub mqtt: Option<crate::mqtt_leg::MqttFigures>,
    /// The conservation check.
    pub audit: Audit,
    /// Whether every check passed.
    pub passed: bool,
    #[serde(skip)]
    events: Vec<Event>,
    #[serde(skip)]
    samples: Vec<Sample>,
    #[serde(skip)]
    evm_timeline: Timeline,
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
                .is_none_or(|l| l.violations.is_empty())
            && inputs.mqtt.as_ref().is_none_or(|m| m.violations.is_empty());
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
            mqtt: inputs.mqtt,
            audit: inputs.audit,
            passed,
            evm_timeline: Timeline::of_events(&inputs.events),
            events: inputs.events,
            samples: inputs.samples,
        }
    }

    /// Where every unit ended, per asset: the EVM token, and the Bitcoin and Lightning legs'.
    pub fn ledgers(&self) -> Vec<Ledger> {
        let a = &self.audit;
        let units = |text: &str| text.parse::<u128>().unwrap_or_default();
        let mut ledgers = vec![Ledger {
            asset: "test token (EVM leg)",
            total: units(&a.topped_up),
            parts: vec![
                ("buyers", units(&a.buyers)),
                ("sellers", units(&a.sellers)),
                ("escrow", units(&a.escrow)),
                ("overcharging sellers", units(&a.cheats)),
            ],
        }];
        ledgers.extend(self.bitcoin.as_ref().map(|b| b.ledger.clone()));
        ledgers.extend(self.lightning.as_ref().map(|l| l.ledger.clone()));
        ledgers.extend(self.mqtt.as_ref().map(|m| m.ledger.clone()));
        ledgers
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let mut text = format!("# Simulation `{}`: {verdict}\n", self.scenario);
        for section in self.sections() {
            text.push_str(&format!("\n## {}\n\n| | |\n|---|---|\n", section.title));
            for (label, value) in &section.rows {
                text.push_str(&format!("| {label} | {value} |\n"));
            }
            for note in &section.notes {
                let bullet = if note.starts_with("VIOLATION") {
                    "- "
                } else {
                    "\n"
                };
                text.push_str(&format!("{bullet}{note}\n"));
            }
        }
        text.push_str(
            "\nPer device: `devices.csv`. Page: `report.html`. Plots: `payments.svg`, `latency.svg`, \
             `gas_per_payment.svg`, `conservation.svg`.\n",
        );
        text
    }

    /// Writes `summary.md`, `summary.json`, `devices.csv`, the plots and `report.html` (the
    /// same, as one page that opens offline) into `dir`.
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
        let plot = |name: &str, drawn: Result<String, crate::plots::PlotError>| {
            let svg = drawn.map_err(|e| SimError::Plot(dir.join(name), e.0))?;
            write(name, svg.as_bytes())?;
            Ok::<_, SimError>(svg)
        };
        let legs = self.leg_series();
        let plots = crate::report_html::Plots {
            payments: plot("payments.svg", crate::plots::payments(&legs))?,
            latency: plot("latency.svg", crate::plots::latency(&legs))?,
            gas: plot("gas_per_payment.svg", crate::plots::gas(&self.gas_points()))?,
            conservation: plot(
                "conservation.svg",
                crate::plots::conservation(&self.ledgers()),
            )?,
        };
        write(
            "report.html",
            crate::report_html::page(self, &plots, &self.device_rows()).as_bytes(),
        )
    }

    /// Each device at the end: what it paid for or earned, and what it holds.
    pub fn device_rows(&self) -> Vec<DeviceSummary> {
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
        let mut buyer_index = 0u32;
        self.audit
            .devices
            .iter()
            .map(|device| {
                let (paid, refused, failed) = if device.kind == "buyer" {
                    buyer_index += 1;
                    per_buyer
                        .get(&(buyer_index - 1))
                        .copied()
                        .unwrap_or_default()
                } else {
                    (0, 0, 0)
                };
                DeviceSummary {
                    kind: device.kind,
                    address: format!("{:#x}", device.address),
                    paid,
                    refused,
                    failed,
                    channels: device.channels,
                    charged: device.charged,
                    tokens: device.tokens.to_string(),
                }
            })
            .collect()
    }

    fn devices_csv(&self) -> String {
        let mut csv = String::from(
            "kind,address,paid_readings,refused,failed,channels,charged,tokens_at_end\n",
        );
        for d in self.device_rows() {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                d.kind, d.address, d.paid, d.refused, d.failed, d.channels, d.charged, d.tokens
            ));
        }
        csv
    }

    /// One series per leg that ran: EVM readings, Bitcoin readings, Lightning readings (L402),
    /// and requests through the gateway's paid tunnels.
    fn leg_series(&self) -> Vec<LegSeries<'_>> {
        let mut legs = vec![LegSeries {
            name: "EVM",
            colour: crate::plots::EVM,
            timeline: &self.evm_timeline,
        }];
        if let Some(b) = &self.bitcoin {
            legs.push(LegSeries {
                name: "Bitcoin",
                colour: crate::plots::BITCOIN,
                timeline: &b.timeline,
            });
        }
        if let Some(l) = &self.lightning {
            legs.push(LegSeries {
                name: "Lightning",
                colour: crate::plots::LIGHTNING,
                timeline: &l.timeline,
            });
        }
        if let Some(m) = &self.mqtt {
            legs.push(LegSeries {
                name: "MQTT",
                colour: crate::plots::MQTT,
                timeline: &m.timeline,
            });
        }
        if let Some(r) = &self.roaming {
            legs.push(LegSeries {
                name: "gateway",
                colour: crate::plots::GATEWAY,
                timeline: &r.timeline,
            });
        }
        legs.retain(|leg| !leg.timeline.is_empty());
        legs
    }

    fn gas_points(&self) -> Vec<(f64, f64)> {
        self.samples
            .iter()
            .filter(|s| s.paid > 0)
            .map(|s| (s.paid as f64, s.gas as f64 / s.paid as f64))
            .collect()
    }
}

/// One device at the end of a run, as `devices.csv` and the page list it.
#[derive(Debug, Clone)]
pub struct DeviceSummary {
    /// `buyer`, `seller`, `gateway` or `overcharging-seller`.
    pub kind: &'static str,
    /// Its EVM address.
    pub address: String,
    /// Readings it paid for (buyers).
    pub paid: u64,
    /// Its payments refused (buyers).
    pub refused: u64,
    /// Its requests that failed (buyers).
    pub failed: u64,
    /// Channels it is paid on (sellers).
    pub channels: usize,
    /// What it charged (sellers).
    pub charged: u128,
    /// Test tokens it holds at the end.
    pub tokens: String,
}
