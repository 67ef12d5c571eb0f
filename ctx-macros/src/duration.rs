//! Go's `time.ParseDuration`, at compile time: `timeout = "1m30s"`.
//!
//! The grammar is Go's: an optional sign, then one or more `<number><unit>` terms, where a
//! number is decimal with an optional fraction (`1.5`, `.5`, `1.`) and a unit is one of `ns`,
//! `us` (or `µs`, `μs`), `ms`, `s`, `m`, `h`; `"0"` alone needs no unit. The total must fit in
//! Go's `int64` nanoseconds (about 292 years). Fractions are computed as Go computes them, so
//! `"1.5h"` here and in Go are the same number of nanoseconds.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected; `Display` is the whole compile-error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    Empty,
    Invalid(String),
    MissingUnit(String),
    UnknownUnit { unit: String, input: String },
    Overflow(String),
    Negative(String),
    Zero(String),
}

const UNITS: &str = "`ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`";

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(
                f,
                "empty `timeout`: write a Go duration such as \"30s\", \"1m30s\" or \"250ms\""
            ),
            DurationError::Invalid(input) => write!(
                f,
                "invalid duration \"{input}\": write numbers with units, such as \"30s\", \"1m30s\" \
                 or \"1.5h\" (units: {UNITS})"
            ),
            DurationError::MissingUnit(input) => write!(
                f,
                "missing unit in duration \"{input}\": every number needs a unit, as in \"30s\" \
                 or \"1m30s\" (units: {UNITS})"
            ),
            DurationError::UnknownUnit { unit, input } => write!(
                f,
                "unknown unit \"{unit}\" in duration \"{input}\": valid units are {UNITS}"
            ),
            DurationError::Overflow(input) => write!(
                f,
                "duration \"{input}\" is out of range: the longest timeout is \
                 2562047h47m16.854775807s (about 292 years)"
            ),
            DurationError::Negative(input) => write!(
                f,
                "`timeout = \"{input}\"` is negative: a timeout must be positive, e.g. \"30s\""
            ),
            DurationError::Zero(input) => write!(
                f,
                "`timeout = \"{input}\"` is zero, so the function would always be cancelled \
                 before it starts: use a positive timeout, or remove `timeout` for no time limit"
            ),
        }
    }
}

/// A `timeout = "..."` value: a Go duration that is strictly positive.
pub(crate) fn parse_timeout(input: &str) -> Result<Duration, DurationError> {
    let (negative, nanos) = parse_go_duration(input)?;
    if nanos == 0 {
        return Err(DurationError::Zero(input.to_owned()));
    }
    if negative {
        return Err(DurationError::Negative(input.to_owned()));
    }
    Ok(Duration::from_nanos(nanos))
}

/// Go's `time.ParseDuration`: the sign and the magnitude in nanoseconds (at most
/// `i64::MAX`, or `2^63` when negative, as in Go).
pub(crate) fn parse_go_duration(input: &str) -> Result<(bool, u64), DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok((negative, 0));
    }
    if s.is_empty() {
        return Err(if input.is_empty() {
            DurationError::Empty
        } else {
            invalid()
        });
    }
    const LIMIT: u64 = 1 << 63;
    let overflow = || DurationError::Overflow(input.to_owned());
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part.
        let (mut value, rest) = leading_int(s).ok_or_else(overflow)?;
        let had_int = rest.len() != s.len();
        s = rest;
        // The fraction.
        let mut fraction = 0u64;
        let mut scale = 1f64;
        let mut had_fraction = false;
        if let Some(rest) = s.strip_prefix('.') {
            let (f, sc, rest2) = leading_fraction(rest);
            had_fraction = rest2.len() != rest.len();
            fraction = f;
            scale = sc;
            s = rest2;
        }
        if !had_int && !had_fraction {
            return Err(invalid()); // "." or ".s"
        }
        // The unit.
        let end = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if end == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let (unit, rest) = s.split_at(end);
        s = rest;
        let unit_nanos = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            input: input.to_owned(),
        })?;
        if value > LIMIT / unit_nanos {
            return Err(overflow());
        }
        value *= unit_nanos;
        if fraction > 0 {
            // float64 is needed to be nanosecond accurate for fractions of hours; as Go.
            value = value
                .checked_add((fraction as f64 * (unit_nanos as f64 / scale)) as u64)
                .ok_or_else(overflow)?;
            if value > LIMIT {
                return Err(overflow());
            }
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > LIMIT {
            return Err(overflow());
        }
    }
    if !negative && total > LIMIT - 1 {
        return Err(overflow());
    }
    Ok((negative, total))
}

/// Nanoseconds in one `unit`, if it is one of Go's.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// The leading decimal integer of `s` and the rest; `None` on overflow.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut value: u64 = 0;
    for digit in s[..end].bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        if value > 1 << 63 {
            return None;
        }
    }
    Some((value, &s[end..]))
}

/// The leading fraction digits of `s` as (digits, 10^count, rest); digits past what fits are
/// dropped, as Go does.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut value: u64 = 0;
    let mut scale = 1f64;
    let mut overflowed = false;
    for digit in s[..end].bytes() {
        if overflowed {
            continue;
        }
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
        {
            Some(v) if v <= 1 << 63 => {
                value = v;
                scale *= 10.0;
            }
            _ => overflowed = true,
        }
    }
    (value, scale, &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Duration {
        parse_timeout(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn units() {
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("1ns"), Duration::from_nanos(1));
        assert_eq!(ok("2us"), Duration::from_micros(2));
        assert_eq!(ok("2µs"), Duration::from_micros(2));
        assert_eq!(ok("2μs"), Duration::from_micros(2));
        assert_eq!(ok("7s"), Duration::from_secs(7));
        assert_eq!(ok("3m"), Duration::from_secs(180));
        assert_eq!(ok("2h"), Duration::from_secs(7_200));
        assert_eq!(ok("+5s"), Duration::from_secs(5));
    }

    #[test]
    fn sums_and_fractions() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5_400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("1.004s"), Duration::from_millis(1_004));
        assert_eq!(ok("1h2m3s4ms5us6ns"), Duration::new(3_723, 4_005_006));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        // Go: fractions of hours are nanosecond-accurate.
        assert_eq!(
            ok("0.3333333333333333333h"),
            Duration::from_nanos(1_200_000_000_000)
        );
    }

    #[test]
    fn largest() {
        assert_eq!(
            ok("9223372036854775807ns"),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert_eq!(
            ok("2562047h47m16.854775807s"),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn overflow() {
        for input in [
            "9223372036854775808ns",
            "2562048h",
            "2562047h47m16.854775808s",
            "99999999999999999999999s",
            "9223372036854775807ns1ns",
        ] {
            assert_eq!(
                parse_timeout(input),
                Err(DurationError::Overflow(input.into())),
                "{input}"
            );
        }
        // Go accepts exactly -2^63ns; a timeout must still be positive.
        assert_eq!(
            parse_go_duration("-9223372036854775808ns"),
            Ok((true, 1 << 63))
        );
    }

    #[test]
    fn negative_and_zero() {
        assert_eq!(
            parse_timeout("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        assert_eq!(parse_timeout("0"), Err(DurationError::Zero("0".into())));
        assert_eq!(parse_timeout("0s"), Err(DurationError::Zero("0s".into())));
        assert_eq!(
            parse_timeout("-0ms"),
            Err(DurationError::Zero("-0ms".into()))
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(parse_timeout(""), Err(DurationError::Empty));
        assert_eq!(
            parse_timeout("1x"),
            Err(DurationError::UnknownUnit {
                unit: "x".into(),
                input: "1x".into()
            })
        );
        assert_eq!(
            parse_timeout("1sec"),
            Err(DurationError::UnknownUnit {
                unit: "sec".into(),
                input: "1sec".into()
            })
        );
        assert_eq!(
            parse_timeout("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_timeout("1h30"),
            Err(DurationError::MissingUnit("1h30".into()))
        );
        assert_eq!(
            parse_timeout("1.2.3s"),
            Err(DurationError::MissingUnit("1.2.3s".into()))
        );
        for input in ["-", "+", ".", ".s", "s", " 1s", "--1s"] {
            assert_eq!(
                parse_timeout(input),
                Err(DurationError::Invalid(input.into())),
                "{input}"
            );
        }
    }

    #[test]
    fn messages_name_the_fix() {
        assert_eq!(
            parse_timeout("10").unwrap_err().to_string(),
            "missing unit in duration \"10\": every number needs a unit, as in \"30s\" or \
             \"1m30s\" (units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`)"
        );
    }
}
