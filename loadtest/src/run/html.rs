//! The `html` report: one self-contained page (inline SVG and CSS, no scripts, nothing fetched — ghz's page loads
//! its charts from CDNs) with ghz's sections under ghz's anchors (summary, histogram, latency distribution, status,
//! errors, data, options), then the cache levels and the mix.

use std::fmt::Write as _;

use super::report::{Report, nano_unit, rfc3339};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 48.0;

/// Renders the page.
pub fn render(report: &Report) -> String {
    let title = escape(report.name.as_deref().unwrap_or("strata-load run"));
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{padding:2px 12px;text-align:right;border-bottom:1px solid #ddd}}th{{text-align:left}}\
         svg{{background:#fafafa;border:1px solid #ddd}}.bar{{fill:#4a7bd0}}.line{{fill:none;stroke:#c0392b;stroke-width:2}}\
         .axis{{stroke:#888}}text{{font-size:11px;fill:#444}}</style></head><body><h1>{title}</h1>"
    );
    // ghz's sections, under its anchors and names, then what Strata adds.
    let _ = write!(
        page,
        "<p>{}</p><p><a href=\"#summary\">Summary</a> · <a href=\"#histogram\">Histogram</a> · \
         <a href=\"#latency\">Latency Distribution</a> · <a href=\"#status\">Status Distribution</a> · \
         <a href=\"#errors\">Errors</a> · <a href=\"#data\">Data</a> · <a href=\"#options\">Options</a> · \
         <a href=\"#cache\">Cache</a></p>",
        rfc3339(report.date)
    );
    let _ = write!(page, "<h2 id=\"summary\">Summary</h2><table>");
    for (label, value) in [
        ("Count", report.tally.count.to_string()),
        ("Total", nano_unit(report.total)),
        ("Slowest", nano_unit(report.slowest())),
        ("Fastest", nano_unit(report.fastest())),
        ("Average", nano_unit(report.average())),
        ("Requests/sec", format!("{:.2}", report.rps())),
        ("End reason", report.end_reason.as_str().to_owned()),
        ("Arrival", report.arrival.to_owned()),
    ] {
        let _ = write!(page, "<tr><th>{label}</th><td>{}</td></tr>", escape(&value));
    }
    let _ = write!(page, "</table>");
    let _ = write!(
        page,
        "<h2 id=\"histogram\">Histogram</h2>{}",
        histogram_svg(report)
    );
    let _ = write!(
        page,
        "<h2 id=\"latency\">Latency Distribution</h2>{}<table>",
        percentile_svg(report)
    );
    for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99] {
        let _ = write!(
            page,
            "<tr><th>{p} %</th><td>{}</td></tr>",
            nano_unit(report.percentile(p))
        );
    }
    let _ = write!(page, "</table>");
    section(
        &mut page,
        "status",
        "Status Distribution",
        report
            .tally
            .by_status
            .iter()
            .map(|(k, v)| (k.to_string(), *v)),
    );
    section(
        &mut page,
        "errors",
        "Errors",
        report.tally.by_error.iter().map(|(k, v)| (k.clone(), *v)),
    );
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = write!(
        page,
        "<h2 id=\"data\">Data</h2><pre>{}</pre><h2 id=\"options\">Options</h2><pre>{}</pre>",
        escape(&report.options.get("data").map(pretty).unwrap_or_default()),
        escape(&pretty(&report.options))
    );
    section(
        &mut page,
        "cache",
        "x-strata-cache",
        report.tally.by_cache.iter().map(|(k, v)| (k.clone(), *v)),
    );
    section(
        &mut page,
        "calls",
        "Calls",
        report
            .tally
            .by_call
            .iter()
            .map(|(k, v)| (k.clone(), v.count)),
    );
    let _ = writeln!(page, "</body></html>");
    page
}

/// A section of counts (left out when there are none), under its anchor.
fn section(page: &mut String, id: &str, heading: &str, rows: impl Iterator<Item = (String, u64)>) {
    let rows: Vec<_> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        page,
        "<h2 id=\"{id}\">{heading}</h2><table><tr><th></th><th>answers</th></tr>"
    );
    for (k, v) in rows {
        let _ = write!(page, "<tr><th>{}</th><td>{v}</td></tr>", escape(&k));
    }
    let _ = write!(page, "</table>");
}

fn histogram_svg(report: &Report) -> String {
    let buckets = report.histogram();
    let mut svg = svg_open();
    let widest = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let slot = (WIDTH - 2.0 * MARGIN) / buckets.len().max(1) as f64;
    for (i, b) in buckets.iter().enumerate() {
        let h = (HEIGHT - 2.0 * MARGIN) * b.count as f64 / widest;
        let x = MARGIN + slot * i as f64;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>≤ {:.3} ms: {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.2}</text>",
            HEIGHT - MARGIN - h,
            slot * 0.8,
            b.mark * 1e3,
            b.count,
            x + slot * 0.4,
            HEIGHT - MARGIN + 14.0,
            b.mark * 1e3,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">latency (ms, bar's upper edge)</text></svg>",
        WIDTH / 2.0,
        HEIGHT - 8.0
    );
    svg
}

/// Latency against percentile on a log scale of 1/(1−p), so the tail gets room (50 %, 90 %, 99 %, 99.9 %, …).
fn percentile_svg(report: &Report) -> String {
    let mut svg = svg_open();
    let nines = 5.0; // up to 99.999 %
    let points: Vec<(f64, f64)> = (0..=100)
        .map(|i| {
            let x = nines * f64::from(i) / 100.0;
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            (x, report.percentile(p).as_secs_f64() * 1e3)
        })
        .collect();
    let top = points.iter().map(|(_, y)| *y).fold(0.0, f64::max).max(1e-3);
    let to_xy = |(x, y): (f64, f64)| {
        (
            MARGIN + (WIDTH - 2.0 * MARGIN) * x / nines,
            HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * y / top,
        )
    };
    let path: Vec<String> = points
        .iter()
        .map(|p| {
            let (x, y) = to_xy(*p);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline class=\"line\" points=\"{}\"/>",
        path.join(" ")
    );
    for (i, label) in ["0 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %"]
        .iter()
        .enumerate()
    {
        let (x, _) = to_xy((i as f64, 0.0));
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            HEIGHT - MARGIN + 14.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{:.1}\">{top:.2} ms</text><text x=\"4\" y=\"{:.1}\">0</text></svg>",
        MARGIN,
        HEIGHT - MARGIN
    );
    svg
}

fn svg_open() -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">\
         <line class=\"axis\" x1=\"{MARGIN}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>\
         <line class=\"axis\" x1=\"{MARGIN}\" y1=\"{MARGIN}\" x2=\"{MARGIN}\" y2=\"{y}\"/>",
        y = HEIGHT - MARGIN,
        x2 = WIDTH - MARGIN
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
