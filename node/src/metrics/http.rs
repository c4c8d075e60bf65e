//! The metrics over HTTP: the `GET /metrics` route, OpenMetrics to a
//! scraper that asks for it (Prometheus does), Prometheus text 0.0.4 to anyone else (`curl`,
//! `promtool check metrics`).

use std::sync::Arc;

use super::AgentMetrics;

/// The content type of [`AgentMetrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`AgentMetrics::encode_prometheus`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites prometheus-client's OpenMetrics text as Prometheus text 0.0.4: a counter family's
/// `HELP` and `TYPE` name its samples' `_total` name, and there is no `# EOF`. By hand because
/// prometheus-client encodes OpenMetrics only; these two differences are all our families need
/// (no `_created` samples, units or exemplars are emitted).
pub(super) fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `GET /metrics`, for the agent's `[metrics]` listener (served with the hardened setup).
pub fn router(metrics: Arc<AgentMetrics>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    // OpenMetrics for scrapers that ask for it (Prometheus does), else Prometheus text.
    let scrape = move |headers: axum::http::HeaderMap| {
        let metrics = metrics.clone();
        async move {
            let openmetrics = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("application/openmetrics-text"));
            let encoded = if openmetrics {
                metrics.encode().map(|text| (CONTENT_TYPE, text))
            } else {
                metrics
                    .encode_prometheus()
                    .map(|text| (PROMETHEUS_CONTENT_TYPE, text))
            };
            match encoded {
                Ok((kind, text)) => ([(header::CONTENT_TYPE, kind)], text).into_response(),
                Err(error) => {
                    tracing::warn!(error = %crate::events::error_line(&error), "metrics");
                    (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
                }
            }
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(scrape))
}
