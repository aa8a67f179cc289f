//! The `grpc-timeout` header: `<1–8 digits><unit>`, unit one of `H M S m u n`.

use std::time::Duration;

/// The header carrying a call's timeout.
pub const HEADER: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// Parses a `grpc-timeout` value; `None` if it is malformed (treated as no deadline, as gRPC servers do).
pub fn parse(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value in the finest unit that fits 8 digits, rounded down so the backend
/// never gets more time than is left (but never zero, which some servers reject).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, size) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
    ] {
        let n = nanos / size;
        if n < 100_000_000 {
            return format!("{}{unit}", n.max(1));
        }
    }
    format!("{}H", (nanos / 3_600_000_000_000).min(99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse(b"9n"), Some(Duration::from_nanos(9)));
        for bad in [&b""[..], b"S", b"123456789S", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_within_eight_digits() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(3),
            Duration::from_secs(86_400 * 400),
        ] {
            let text = format(d);
            let back = parse(text.as_bytes()).expect("parses");
            assert!(back <= d.max(Duration::from_nanos(1)), "{text}");
            assert!(
                back * 1001 / 1000 + Duration::from_nanos(1) >= d,
                "{text} loses too much"
            );
        }
        assert_eq!(format(Duration::ZERO), "1n");
        assert_eq!(format(Duration::from_millis(250)), "250000u");
    }
}
