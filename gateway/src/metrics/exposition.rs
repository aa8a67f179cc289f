//! The two formats `/metrics` is served in, and which one a scraper asked for (`Accept`): OpenMetrics 1.0 for a
//! Prometheus server (which asks for it first and refuses a body labelled so without `# EOF`), the Prometheus text
//! format 0.0.4 for everyone else (curl, promtool, older scrapers).

use http::HeaderValue;

/// A format of the metrics page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0: counters named without `_total` in `# TYPE`, samples with it, `# EOF` at the end.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: `_total` in every counter name, no `# EOF`.
    Text,
}

impl Exposition {
    /// The format the `Accept` header prefers among the two (highest `q`, the first listed on a tie); the text format
    /// when there is no header or it names neither.
    pub fn negotiate(accept: Option<&HeaderValue>) -> Self {
        let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
            return Self::Text;
        };
        let mut best: Option<(f32, Self)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0_f32;
            let mut version = None;
            for param in parts {
                match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("q", value)) => q = value.parse().unwrap_or(0.0),
                    Some(("version", value)) => version = Some(value.trim_matches('"')),
                    _ => {}
                }
            }
            let format = match media.as_str() {
                // 0.0.1 is the draft of 1.0.0, which Prometheus also lists; a later major version is not ours.
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
                {
                    Self::OpenMetrics
                }
                "text/plain" | "text/*" | "*/*" => Self::Text,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, format));
            }
        }
        best.map_or(Self::Text, |(_, format)| format)
    }

    /// The `Content-Type` of a page in this format.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        })
    }
}

/// Rewrites the OpenMetrics the encoder writes into the text format 0.0.4: there a counter family `x` with samples
/// `x_total` is named `x_total` in `# HELP` and `# TYPE`, and there is no `# UNIT` and no `# EOF`.
pub fn openmetrics_to_text(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64 * counters.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &str) -> Exposition {
        Exposition::negotiate(Some(&HeaderValue::from_str(accept).expect("header")))
    }

    #[test]
    fn a_prometheus_server_gets_openmetrics() {
        // What Prometheus 2.x sends, and what 3.x sends.
        assert_eq!(
            negotiate(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Exposition::OpenMetrics
        );
        assert_eq!(
            negotiate(
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                 application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                 text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            ),
            Exposition::OpenMetrics
        );
    }

    #[test]
    fn everyone_else_gets_the_text_format() {
        assert_eq!(Exposition::negotiate(None), Exposition::Text);
        assert_eq!(negotiate("*/*"), Exposition::Text, "curl");
        assert_eq!(negotiate("text/plain;version=0.0.4"), Exposition::Text);
        assert_eq!(
            negotiate("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            Exposition::Text,
            "the higher q wins"
        );
        assert_eq!(
            negotiate("application/openmetrics-text;version=2.0.0"),
            Exposition::Text,
            "a version this page is not"
        );
        assert_eq!(
            negotiate("application/openmetrics-text;q=0"),
            Exposition::Text,
            "q=0 means not acceptable"
        );
        assert_eq!(negotiate("application/json"), Exposition::Text);
    }

    #[test]
    fn the_text_format_names_counters_with_total() {
        let open = "# HELP x Calls.\n# TYPE x counter\nx_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(open),
            "# HELP x_total Calls.\n# TYPE x_total counter\nx_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
