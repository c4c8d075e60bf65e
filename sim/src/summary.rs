//! The run's summary as titled tables (label, value) with notes: what `summary.md` and
//! `report.html` both show, built once here.

use crate::report::RunReport;

/// One titled table of the summary, with notes under it (violations start with `VIOLATION`).
#[derive(Debug, Clone)]
pub struct Section {
    /// The heading.
    pub title: String,
    /// Label and value.
    pub rows: Vec<(String, String)>,
    /// Sentences under the table.
    pub notes: Vec<String>,
}

impl RunReport {
    /// The summary as titled tables, in order: what both `summary.md` and `report.html` show.
    pub fn sections(&self) -> Vec<Section> {
        let f = &self.figures;
        let row = |label: &str, value: String| (label.to_owned(), value);
        let mut main = vec![
            row("devices", self.devices.to_string()),
            row(
                "channels opened before the paying phase",
                format!("{} in {:.1} s", self.channels_opened, self.opening_secs),
            ),
            row("paying phase", format!("{} s", self.duration_secs)),
            row(
                "paid readings",
                format!(
                    "{} ({} by voucher, {} by `exact`)",
                    f.vouchers + f.exact,
                    f.vouchers,
                    f.exact
                ),
            ),
            row("paid readings per second", format!("{:.1}", f.paid_per_sec)),
            row(
                "latency of paid readings",
                format!(
                    "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
                    f.p50_ms, f.p90_ms, f.p99_ms
                ),
            ),
            row("payments refused by sellers", f.refused.to_string()),
            row(
                "payments refused by buyers (budget, blocked)",
                f.buyer_refused.to_string(),
            ),
            row(
                "overcharging caught by buyers",
                f.sellers_caught.to_string(),
            ),
            row("requests failed in transit", f.failed.to_string()),
            row(
                "forged or stale vouchers refused / served",
                format!("{} / {}", self.forgeries_refused, self.forgeries_served),
            ),
            row(
                "responses dropped by the fault proxy",
                self.lost_responses.to_string(),
            ),
            row("seller restarts", self.restarts.to_string()),
            row("timed withdrawals", self.withdrawals.to_string()),
            row("on-chain transactions", self.transactions.to_string()),
            row(
                "gas",
                format!(
                    "{} ({:.0} per paid reading)",
                    self.gas, self.gas_per_payment
                ),
            ),
        ];
        if let Some(bytes) = self.memory_per_device {
            main.push(row(
                "memory per device",
                format!("{:.1} KiB", bytes as f64 / 1024.0),
            ));
        }
        let mut sections = vec![Section {
            title: format!("EVM leg ({} devices on anvil)", self.devices),
            rows: main,
            notes: Vec::new(),
        }];
        if let Some(r) = &self.roaming {
            sections.push(Section {
                title: format!(
                    "Pay per minute ({} hotspots, {} roaming clients)",
                    r.hotspots, r.clients
                ),
                rows: vec![
                    row("sessions", format!("{} ({} failed)", r.sessions, r.failed)),
                    row("requests through paid tunnels", r.requests.to_string()),
                    row(
                        "minutes sold",
                        format!("{:.2} ({} ticks received)", r.minutes_sold, r.ticks),
                    ),
                    row("bytes metered", r.bytes.to_string()),
                    row("revenue (claimed)", r.revenue.to_string()),
                    row(
                        "cut-offs after payments stopped",
                        format!(
                            "{} (median {} ms, worst {} ms; {} tunnels not cut)",
                            r.cutoffs.0, r.cutoffs.1, r.cutoffs.2, r.not_cut
                        ),
                    ),
                ],
                notes: Vec::new(),
            });
        }
        if let Some(b) = &self.bitcoin {
            let mut notes: Vec<String> = b
                .violations
                .iter()
                .map(|v| format!("VIOLATION (bitcoin): {v}"))
                .collect();
            if notes.is_empty() {
                notes.push(
                    "Every satoshi accounted for (sellers = charged; buyers = top-up − paid − fees)."
                        .into(),
                );
            }
            sections.push(Section {
                title: format!(
                    "Bitcoin leg (regtest, Taproot channels; {} devices)",
                    b.devices
                ),
                rows: vec![
                    row(
                        "paid readings",
                        format!("{} ({:.1}/s; {} failed)", b.paid, b.paid_per_sec, b.failed),
                    ),
                    row(
                        "latency p50 / p99",
                        format!("{:.1} ms / {:.1} ms", b.latency_ms.0, b.latency_ms.1),
                    ),
                    row("channels opened and closed", b.channels.to_string()),
                    row(
                        "vbytes per channel",
                        format!(
                            "funding {:.0} + cooperative close {:.0} = {:.0}",
                            b.funding_vbytes,
                            b.close_vbytes,
                            b.funding_vbytes + b.close_vbytes
                        ),
                    ),
                    row(
                        "closes by the seller alone",
                        format!(
                            "{} ({:.0} vB each)",
                            b.unilateral_closes.0, b.unilateral_closes.1
                        ),
                    ),
                    row("sellers received", format!("{} sat", b.sellers_received)),
                    row(
                        "fees (top-ups, fundings, closes)",
                        format!("{} sat", b.fees),
                    ),
                ],
                notes,
            });
        }
        if let Some(l) = &self.lightning {
            let mut notes: Vec<String> = l
                .first_failure
                .iter()
                .map(|failure| format!("First failed request: {failure}"))
                .collect();
            notes.extend(
                l.violations
                    .iter()
                    .map(|v| format!("VIOLATION (lightning): {v}")),
            );
            if l.violations.is_empty() {
                notes.push("Every millisatoshi accounted for (sellers = served × price = buyers sent; buyers = top-up − sent − fees).".into());
            }
            sections.push(Section {
                title: format!(
                    "Lightning leg (regtest, ldk-node; a hub and {} devices)",
                    l.nodes - 1
                ),
                rows: vec![
                    row("top-ups over Lightning", l.top_ups.to_string()),
                    row(
                        "readings paid over L402",
                        format!("{} ({:.1}/s; {} failed)", l.paid, l.paid_per_sec, l.failed),
                    ),
                    row(
                        "latency p50 / p99 (402, payment, paid request)",
                        format!("{:.1} ms / {:.1} ms", l.latency_ms.0, l.latency_ms.1),
                    ),
                    row(
                        "sellers received",
                        format!("{} msat", l.sellers_received_msat),
                    ),
                    row(
                        "routing fees to the hub",
                        format!("{} msat", l.routing_fees_msat),
                    ),
                ],
                notes,
            });
        }
        if let Some(m) = &self.mqtt {
            let mut notes: Vec<String> = m
                .violations
                .iter()
                .map(|v| format!("VIOLATION (mqtt): {v}"))
                .collect();
            if notes.is_empty() {
                notes.push("Every unit accounted for (sellers = what their vouchers added; subscribers + sellers + escrow = top-ups; at most K readings on credit per stream); the unpaid subscriber opened nothing.".into());
            }
            sections.push(Section {
                title: format!("MQTT leg (mosquitto, priced topics; {} devices)", m.devices),
                rows: vec![
                    row("readings published", m.published.to_string()),
                    row(
                        "keys bought",
                        format!("{} ({:.1}/s; {} failed)", m.paid, m.paid_per_sec, m.failed),
                    ),
                    row(
                        "keys sold for vouchers / for ticks (redeliveries answered free)",
                        format!("{} / {} ({})", m.sold.0, m.sold.1, m.sold.2),
                    ),
                    row(
                        "readings on credit at the end (ticks)",
                        m.on_credit.to_string(),
                    ),
                    row(
                        "reading → key p50 / p99",
                        format!("{:.1} ms / {:.1} ms", m.latency_ms.0, m.latency_ms.1),
                    ),
                    row("broker restarts", m.broker_restarts.to_string()),
                    row(
                        "unpaid subscriber: readings seen / opened",
                        format!("{} / {}", m.unpaid_seen.0, m.unpaid_seen.1),
                    ),
                ],
                notes,
            });
        }
        let a = &self.audit;
        let mut notes: Vec<String> = a
            .violations
            .iter()
            .map(|v| format!("VIOLATION: {v}"))
            .collect();
        if notes.is_empty() {
            notes.push("No violations.".into());
        }
        sections.push(Section {
            title: "Conservation (test token, atomic units)".into(),
            rows: vec![
                row("topped up", a.topped_up.clone()),
                row("buyers", a.buyers.clone()),
                row("sellers", a.sellers.clone()),
                row("overcharging sellers", a.cheats.clone()),
                row("escrow", a.escrow.clone()),
                row("channels", a.channels.to_string()),
                row("charged = claimed on chain", a.charged.clone()),
            ],
            notes,
        });
        sections
    }
}
