//! One access log line: when, which route, the gRPC code, the cache result and how long the call took, in the
//! configured log format (the same shape `tracing_subscriber::fmt` gives the other log lines), written straight into
//! the log buffer without an allocation.

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::config::LogFormat;

/// What one call's line says.
#[derive(Debug)]
pub struct AccessLine<'a> {
    /// The route's `match` (`unrouted` when none matched).
    pub route: &'a str,
    /// The gRPC status code name.
    pub code: &'a str,
    /// The cache result, `none` off the cached path.
    pub cache: &'a str,
    /// How long the call took.
    pub elapsed: Duration,
}

impl AccessLine<'_> {
    /// Appends the line, `\n`-terminated, to `out`, stamped with `now`.
    pub fn write(&self, format: LogFormat, now: SystemTime, out: &mut Vec<u8>) {
        let millis = self.elapsed.as_secs_f64() * 1000.0;
        // Writing into a Vec cannot fail.
        let _ = match format {
            LogFormat::Text => {
                write_timestamp(out, now);
                writeln!(
                    out,
                    "  INFO strata::access: call route={} code={} cache={} duration_ms={millis:.3}",
                    self.route, self.code, self.cache
                )
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                write_timestamp(out, now);
                out.extend_from_slice(
                    b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"call\",\"route\":\"",
                );
                json_escaped(out, self.route);
                writeln!(
                    out,
                    "\",\"code\":\"{}\",\"cache\":\"{}\",\"duration_ms\":{millis:.3}}},\"target\":\"strata::access\"}}",
                    self.code, self.cache
                )
            }
        };
    }
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-02T10:40:01.123456Z`).
fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since_epoch.subsec_micros()
    );
}

/// The Gregorian date `days` after 1970-01-01 (the proleptic calendar's day arithmetic on 400-year eras).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `text` as the inside of a JSON string.
fn json_escaped(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LogFormat, route: &str) -> String {
        let mut out = Vec::new();
        AccessLine {
            route,
            code: "OK",
            cache: "l1",
            elapsed: Duration::from_micros(1234),
        }
        .write(
            format,
            SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_207_401_123_456),
            &mut out,
        );
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn text_lines_look_like_the_other_log_lines() {
        assert_eq!(
            line(LogFormat::Text, "/demo.v1.Catalog/GetItem"),
            "2026-12-02T10:30:01.123456Z  INFO strata::access: call route=/demo.v1.Catalog/GetItem code=OK \
             cache=l1 duration_ms=1.234\n"
        );
    }

    #[test]
    fn json_lines_are_json() {
        let text = line(LogFormat::Json, "we\"ird\\route");
        let json: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(json["fields"]["route"], "we\"ird\\route");
        assert_eq!(json["fields"]["duration_ms"], 1.234);
        assert_eq!(json["timestamp"], "2026-12-02T10:30:01.123456Z");
        assert_eq!(json["target"], "strata::access");
    }

    #[test]
    fn dates_across_leap_years_and_centuries() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_417), (2023, 3, 1));
        assert_eq!(civil_date(47_540), (2100, 2, 28));
        assert_eq!(civil_date(47_541), (2100, 3, 1));
    }
}
