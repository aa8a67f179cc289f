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

/// The `grpc-timeout` value for `d`, in the finest unit that fits 8 digits, rounded down so the backend never gets
/// more time than is left (but never zero, which some servers reject).
///
/// Marked sensitive, which HPACK encodes as a literal never added to the connection's table: the time left differs
/// on every call, so indexing it would insert an entry per call, evict the headers that do repeat, and make the
/// encoder compare each new value with the old ones: a forwarded call with a deadline cost 83 700 instructions
/// indexed, 80 700 unindexed (docs/BENCHMARKS.md, "Round eight").
pub fn header_value(d: Duration) -> http::HeaderValue {
    let nanos = d.as_nanos();
    let (count, unit) = [
        (1u128, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
    ]
    .into_iter()
    .map(|(size, unit)| (nanos / size, unit))
    .find(|(count, _)| *count < 100_000_000)
    .unwrap_or(((nanos / 3_600_000_000_000).min(99_999_999), b'H'));
    // At most eight digits and the unit, written from the end.
    let mut text = [0u8; 9];
    let mut start = text.len() - 1;
    text[start] = unit;
    let mut rest = count.max(1);
    while rest > 0 {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut value = http::HeaderValue::from_bytes(&text[start..])
        .unwrap_or_else(|_| unreachable!("digits and an ASCII unit are a valid header value"));
    value.set_sensitive(true);
    value
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
        let format = |d| header_value(d).to_str().expect("ASCII").to_owned();
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(3),
            Duration::from_secs(100_000),
            Duration::from_secs(86_400 * 400),
            Duration::from_secs(u64::MAX),
        ] {
            let text = format(d);
            let back = parse(text.as_bytes()).expect("parses");
            assert!(back <= d.max(Duration::from_nanos(1)), "{text}");
            if d < Duration::from_secs(99_999_999 * 3600) {
                assert!(
                    back * 1001 / 1000 + Duration::from_nanos(1) >= d,
                    "{text} loses too much"
                );
            }
        }
        assert_eq!(format(Duration::ZERO), "1n");
        assert_eq!(format(Duration::from_millis(250)), "250000u");
        assert_eq!(format(Duration::from_secs(100_000)), "100000S");
        assert_eq!(format(Duration::from_secs(u64::MAX)), "99999999H");
    }

    #[test]
    fn the_time_left_is_never_indexed_by_hpack() {
        assert!(header_value(Duration::from_millis(250)).is_sensitive());
    }
}
