//! `report.html`: the run's report as one page that opens offline — the verdict, the summary
//! tables, the plots (inline SVG), the conservation picture and the per-device table. No
//! script and nothing fetched: styles and plots are in the file itself.

use crate::report::{DeviceSummary, RunReport};

/// The plots, as SVG text.
pub(crate) struct Plots {
    pub payments: String,
    pub latency: String,
    pub gas: String,
    pub conservation: String,
}

const STYLE: &str = "\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;background:#f2f4f8}\
header{padding:.9rem 1.2rem;background:#1d2330;color:#fff;display:flex;gap:1rem;align-items:baseline}\
header h1{margin:0;font-size:1.25rem}.verdict{padding:.1rem .6rem;border-radius:999px;font-weight:700}\
.pass{background:#27ae60}.fail{background:#d64541}\
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:1rem;padding:1rem 1.2rem}\
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:.8rem 1rem;min-width:0}\
.wide{grid-column:1/-1}h2{margin:0 0 .6rem;font-size:1rem}\
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #dde2ea}\
th{color:#6b7385;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.violation{color:#d64541;font-weight:600}.note{color:#6b7385}\
figure{margin:0}figure svg{width:100%;height:auto;display:block}\
.devices{max-height:480px;overflow:auto}.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12px}";

/// The page.
pub(crate) fn page(report: &RunReport, plots: &Plots, devices: &[DeviceSummary]) -> String {
    let (verdict, class) = if report.passed {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    };
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Simulation {name}: {verdict}</title><style>{STYLE}</style></head><body>\
         <header><h1>Simulation <code>{name}</code></h1>\
         <span id=\"verdict\" class=\"verdict {class}\">{verdict}</span>\
         <span>{devices} EVM devices, {secs} s paying phase</span></header><main>",
        name = escape(&report.scenario),
        devices = report.devices,
        secs = report.duration_secs,
    );
    for (id, title, svg) in [
        ("plot-payments", "Paid requests over time", &plots.payments),
        ("plot-latency", "Latency", &plots.latency),
        ("plot-conservation", "Conservation", &plots.conservation),
        ("plot-gas", "Gas", &plots.gas),
    ] {
        // The SVG comes from plotters, which escapes the text it draws.
        html.push_str(&format!(
            "<section id=\"{id}\"><h2>{title}</h2><figure>{svg}</figure></section>"
        ));
    }
    for (index, section) in report.sections().iter().enumerate() {
        html.push_str(&format!(
            "<section class=\"summary\" id=\"summary-{index}\"><h2>{}</h2><table>",
            escape(&section.title)
        ));
        for (label, value) in &section.rows {
            html.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(label),
                escape(value)
            ));
        }
        html.push_str("</table>");
        for note in &section.notes {
            let class = if note.starts_with("VIOLATION") {
                "violation"
            } else {
                "note"
            };
            html.push_str(&format!("<p class=\"{class}\">{}</p>", escape(note)));
        }
        html.push_str("</section>");
    }
    html.push_str(
        "<section class=\"wide\"><h2>Devices</h2><div class=\"devices\"><table id=\"devices\">\
         <thead><tr><th>kind</th><th>address</th><th>paid readings</th><th>refused</th>\
         <th>failed</th><th>channels</th><th>charged</th><th>tokens at the end</th></tr></thead><tbody>",
    );
    for d in devices {
        html.push_str(&format!(
            "<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            d.kind,
            escape(&d.address),
            d.paid,
            d.refused,
            d.failed,
            d.channels,
            crate::plots::grouped(d.charged),
            escape(&d.tokens),
        ));
    }
    html.push_str("</tbody></table></div></section></main></body></html>\n");
    html
}

/// Text for HTML: the scenario's name and violation messages come from files and chains. By
/// hand: five characters, not worth a dependency.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
