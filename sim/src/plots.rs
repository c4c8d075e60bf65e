//! The report's plots, drawn with plotters as SVG text (written to files and embedded in
//! `report.html`): paid requests over time and the latency distribution, one series per leg;
//! gas per paid reading; and where every unit ended up.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::events::{Ledger, Timeline};

/// One leg's series: its name, colour and paid requests.
pub(crate) struct LegSeries<'a> {
    pub name: &'static str,
    pub colour: RGBColor,
    pub timeline: &'a Timeline,
}

/// The colour of each leg, the same in every plot.
pub(crate) const EVM: RGBColor = RGBColor(47, 128, 237);
pub(crate) const BITCOIN: RGBColor = RGBColor(242, 153, 74);
pub(crate) const LIGHTNING: RGBColor = RGBColor(155, 81, 224);
pub(crate) const GATEWAY: RGBColor = RGBColor(39, 174, 96);
pub(crate) const MQTT: RGBColor = RGBColor(235, 87, 87);

const SIZE: (u32, u32) = (800, 480);

/// A plot could not be drawn; plotters' errors are generic over the backend, so the message.
#[derive(Debug)]
pub(crate) struct PlotError(pub String);

fn fail(error: impl std::fmt::Display) -> PlotError {
    PlotError(error.to_string())
}

/// Draws with `paint` on a white SVG canvas and returns the SVG text.
fn svg(
    paint: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<String, PlotError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        paint(&root)?;
        root.present().map_err(fail)?;
    }
    Ok(text)
}

/// Paid requests so far against seconds into the paying phase, a line per leg.
pub(crate) fn payments(legs: &[LegSeries<'_>]) -> Result<String, PlotError> {
    let lines = legs
        .iter()
        .map(|leg| {
            let points = leg.timeline.cumulative();
            (
                Some(format!("{} ({})", leg.name, points.len())),
                leg.colour,
                points,
            )
        })
        .collect();
    line_plot(
        "Paid requests over time, per leg",
        ("seconds into the paying phase", "paid so far"),
        lines,
    )
}

/// One line of a plot: its legend label (if listed), colour and points.
type Line = (Option<String>, RGBColor, Vec<(f64, f64)>);

/// Lines on linear axes from 0, labelled ones listed in a legend.
fn line_plot(
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: Vec<Line>,
) -> Result<String, PlotError> {
    let all = || lines.iter().flat_map(|(_, _, points)| points.iter());
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all().map(|p| p.1).fold(1.0, f64::max);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(fail)?;
        let labelled = lines.iter().any(|line| line.0.is_some());
        for (label, colour, points) in lines {
            let drawn = chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(fail)?;
            if let Some(label) = label {
                drawn.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        if labelled {
            legend(&mut chart)?;
        }
        Ok(())
    })
}

/// The latency distribution (share of paid requests at or under a latency) on a logarithmic
/// latency axis, so that the tail shows; p50 and p99 marked on each leg's curve.
pub(crate) fn latency(legs: &[LegSeries<'_>]) -> Result<String, PlotError> {
    let curves: Vec<(&LegSeries<'_>, Vec<f64>)> = legs
        .iter()
        .map(|leg| (leg, leg.timeline.latencies()))
        .filter(|(_, latencies)| !latencies.is_empty())
        .collect();
    let all = || curves.iter().flat_map(|(_, l)| l.iter().copied());
    let low = all().fold(f64::INFINITY, f64::min).clamp(0.01, 1e6);
    let high = all().fold(0.0, f64::max).max(low * 10.0);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Latency of paid requests (distribution, log scale)",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((low * 0.8..high * 1.25).log_scale(), 0.0..100.0)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds (log)")
            .y_desc("% of paid requests at or under")
            .draw()
            .map_err(fail)?;
        for (leg, latencies) in &curves {
            let colour = leg.colour;
            let count = latencies.len() as f64;
            let points = latencies
                .iter()
                .enumerate()
                .map(|(i, ms)| (*ms, (i + 1) as f64 / count * 100.0));
            let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(fail)?
                .label(format!(
                    "{}: p50 {} ms, p99 {} ms",
                    leg.name,
                    short(p50),
                    short(p99)
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    [(p50, 50.0, "p50"), (p99, 99.0, "p99")].map(|(x, y, name)| {
                        EmptyElement::at((x, y))
                            + Circle::new((0, 0), 4, colour.filled())
                            + Text::new(
                                format!("{name} {}", short(x)),
                                (6, -14),
                                ("sans-serif", 13).into_font().color(&colour),
                            )
                    }),
                )
                .map_err(fail)?;
        }
        legend(&mut chart)
    })
}

/// Gas per paid reading as the run went on (the on-chain cost shared by ever more payments).
pub(crate) fn gas(points: &[(f64, f64)]) -> Result<String, PlotError> {
    line_plot(
        "Gas per paid reading (EVM)",
        ("paid readings", "gas per reading"),
        vec![(None, EVM, points.to_vec())],
    )
}

/// Where every unit ended up: a bar per asset, split by holder in proportion, each bar the
/// whole of what was topped up (a gap or an overflow would show a unit unaccounted for).
pub(crate) fn conservation(ledgers: &[Ledger]) -> Result<String, PlotError> {
    const SHADES: [RGBColor; 5] = [
        RGBColor(47, 128, 237),
        RGBColor(39, 174, 96),
        RGBColor(242, 153, 74),
        RGBColor(155, 81, 224),
        RGBColor(120, 120, 120),
    ];
    let rows = ledgers.len().max(1) as f64;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Where every unit ended up (share of what was topped up)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(36)
            .build_cartesian_2d(0.0..100.0, 0.0..rows)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("% of the total")
            .draw()
            .map_err(fail)?;
        for (row, ledger) in ledgers.iter().enumerate() {
            let top = rows - row as f64 - 0.25;
            let total = ledger.total.max(1) as f64;
            let counted: u128 = ledger.parts.iter().map(|p| p.1).sum();
            let title = format!(
                "{}: {} in, {} accounted for",
                ledger.asset,
                grouped(ledger.total),
                grouped(counted)
            );
            chart
                .draw_series([Text::new(
                    title,
                    (0.5, top + 0.12),
                    ("sans-serif", 15).into_font(),
                )])
                .map_err(fail)?;
            // The bar, then a key under it in the same colours: labels placed one after
            // the other (a label inside a segment of 0.2 % would not fit).
            let (mut start, mut key_at) = (0.0, 0.0);
            for (index, (holder, amount)) in ledger.parts.iter().enumerate() {
                let width = *amount as f64 / total * 100.0;
                let colour = SHADES[index % SHADES.len()];
                chart
                    .draw_series([Rectangle::new(
                        [(start, top - 0.45), (start + width, top)],
                        colour.filled(),
                    )])
                    .map_err(fail)?;
                let label = format!("■ {holder} {} ({width:.1} %)", grouped(*amount));
                // About 0.9 % of the width per character at this size.
                let advance = label.chars().count() as f64 * 0.9 + 2.0;
                chart
                    .draw_series([Text::new(
                        label,
                        (key_at, top - 0.5),
                        ("sans-serif", 12).into_font().color(&colour),
                    )])
                    .map_err(fail)?;
                start += width;
                key_at += advance;
            }
        }
        Ok(())
    })
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(fail)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// A latency with three significant digits at most.
fn short(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// Digits in groups of three, with thin spaces.
pub(crate) fn grouped(value: u128) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plot_draws_and_names_its_legs() {
        let mut evm = Timeline::default();
        let mut btc = Timeline::default();
        for i in 0..200 {
            evm.push(i as f64 * 0.05, 2.0 + (i % 17) as f64);
            btc.push(i as f64 * 0.1, 40.0 + (i % 5) as f64 * 30.0);
        }
        let legs = [
            LegSeries {
                name: "EVM",
                colour: EVM,
                timeline: &evm,
            },
            LegSeries {
                name: "Bitcoin",
                colour: BITCOIN,
                timeline: &btc,
            },
        ];
        let payments = payments(&legs).unwrap();
        assert!(payments.contains("EVM (200)") && payments.contains("Bitcoin (200)"));
        let latency = latency(&legs).unwrap();
        assert!(latency.contains("p99") && latency.contains("log"));
        let ledger = Ledger {
            asset: "test token",
            total: 1_000,
            parts: vec![("buyers", 600), ("sellers", 400)],
        };
        let picture = conservation(&[ledger]).unwrap();
        assert!(
            picture.contains("1\u{2009}000 in, 1\u{2009}000 accounted for"),
            "{picture}"
        );
        assert!(
            gas(&[(1.0, 50_000.0), (100.0, 900.0)])
                .unwrap()
                .starts_with("<svg")
        );
        assert_eq!(grouped(1_234_567), "1\u{2009}234\u{2009}567");
    }
}
