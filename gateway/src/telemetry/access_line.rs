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
    ///
    /// Numbers are written digit by digit rather than through `core::fmt`, which cost about 2 500 instructions per
    /// line (scripts/cost-per-call): this line is written for every call by default.
    pub fn write(&self, format: LogFormat, now: SystemTime, out: &mut Vec<u8>) {
        match format {
            LogFormat::Text => {
                write_timestamp(out, now);
                out.extend_from_slice(b"  INFO strata::access: call route=");
                out.extend_from_slice(self.route.as_bytes());
                out.extend_from_slice(b" code=");
                out.extend_from_slice(self.code.as_bytes());
                out.extend_from_slice(b" cache=");
                out.extend_from_slice(self.cache.as_bytes());
                out.extend_from_slice(b" duration_ms=");
                write_millis(out, self.elapsed);
                out.push(b'\n');
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                write_timestamp(out, now);
                out.extend_from_slice(
                    b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"call\",\"route\":\"",
                );
                json_escaped(out, self.route);
                out.extend_from_slice(b"\",\"code\":\"");
                out.extend_from_slice(self.code.as_bytes());
                out.extend_from_slice(b"\",\"cache\":\"");
                out.extend_from_slice(self.cache.as_bytes());
                out.extend_from_slice(b"\",\"duration_ms\":");
                write_millis(out, self.elapsed);
                out.extend_from_slice(b"},\"target\":\"strata::access\"}\n");
            }
        }
    }
}

/// `elapsed` in milliseconds with three decimals (`1.234`), rounded to the nearest microsecond.
fn write_millis(out: &mut Vec<u8>, elapsed: Duration) {
    let micros = (elapsed.as_nanos() + 500) / 1000;
    let micros = u64::try_from(micros).unwrap_or(u64::MAX);
    write_number(out, micros / 1000);
    out.push(b'.');
    write_digits(out, micros % 1000, 3);
}

/// `value` in decimal, as many digits as it needs.
fn write_number(out: &mut Vec<u8>, value: u64) {
    let width = value.checked_ilog10().unwrap_or(0) + 1;
    write_digits(out, value, width as usize);
}

/// The last `width` decimal digits of `value`, zero-padded.
fn write_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for digit in out[start..].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-02T10:40:01.123456Z`).
fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    out.extend_from_slice(&to_the_second(since_epoch.as_secs()));
    out.push(b'.');
    write_digits(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

/// `2026-12-02T10:40:01` for `secs` since the epoch; the last one worked out is kept per thread, since a busy
/// gateway writes many lines within one second.
fn to_the_second(secs: u64) -> [u8; 19] {
    thread_local! {
        static LAST: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    LAST.with(|last| {
        let (cached_secs, cached) = last.get();
        if cached_secs == secs {
            return cached;
        }
        let (days, day_secs) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_date(days);
        let mut text = Vec::with_capacity(19);
        for (value, width, then) in [
            (year, 4, Some(b'-')),
            (month, 2, Some(b'-')),
            (day, 2, Some(b'T')),
            (day_secs / 3600, 2, Some(b':')),
            (day_secs / 60 % 60, 2, Some(b':')),
            (day_secs % 60, 2, None),
        ] {
            write_digits(&mut text, value, width);
            text.extend(then);
        }
        let mut fixed = [0; 19];
        fixed.copy_from_slice(&text[..19]);
        last.set((secs, fixed));
        fixed
    })
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
    fn durations_are_milliseconds_with_three_decimals_rounded_to_the_microsecond() {
        let millis = |elapsed| {
            let mut out = Vec::new();
            write_millis(&mut out, elapsed);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(millis(Duration::ZERO), "0.000");
        assert_eq!(millis(Duration::from_nanos(999_499)), "0.999");
        assert_eq!(millis(Duration::from_nanos(999_500)), "1.000");
        assert_eq!(millis(Duration::from_micros(10_000_007)), "10000.007");
        assert_eq!(
            millis(Duration::MAX),
            format!("{}.{:03}", u64::MAX / 1000, u64::MAX % 1000)
        );
    }

    #[test]
    fn each_second_is_written_afresh() {
        let stamp = |micros: u64| {
            let mut out = Vec::new();
            write_timestamp(
                &mut out,
                SystemTime::UNIX_EPOCH + Duration::from_micros(micros),
            );
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(stamp(1_796_207_401_123_456), "2026-12-02T10:30:01.123456Z");
        assert_eq!(stamp(1_796_207_401_999_999), "2026-12-02T10:30:01.999999Z");
        assert_eq!(stamp(1_796_207_402_000_000), "2026-12-02T10:30:02.000000Z");
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(1_796_207_401_000_001), "2026-12-02T10:30:01.000001Z");
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
