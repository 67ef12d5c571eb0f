//! Go's spelling of durations and times, for `Display` of deadline contexts.

use std::fmt::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Formats a signed duration in nanoseconds as Go's `time.Duration.String` does:
/// `"1h0m0s"`, `"1m30s"`, `"1.5s"`, `"250ms"`, `"1.5µs"`, `"12ns"`, `"0s"`, `"-2s"`.
pub(in crate::context) fn go_duration(nanos: i128) -> String {
    let mut out = String::new();
    if nanos < 0 {
        out.push('-');
    }
    let u = nanos.unsigned_abs();
    const SEC: u128 = 1_000_000_000;
    if u == 0 {
        return "0s".into();
    }
    if u < SEC {
        let (unit, scale, digits) = match u {
            0..1_000 => ("ns", 1, 0),
            1_000..1_000_000 => ("µs", 1_000, 3),
            _ => ("ms", 1_000_000, 6),
        };
        push_fraction(&mut out, u / scale, u % scale, digits);
        out.push_str(unit);
        return out;
    }
    let (hours, rest) = (u / (3600 * SEC), u % (3600 * SEC));
    let (minutes, rest) = (rest / (60 * SEC), rest % (60 * SEC));
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    push_fraction(&mut out, rest / SEC, rest % SEC, 9);
    out.push('s');
    out
}

fn push_fraction(out: &mut String, whole: u128, frac: u128, digits: usize) {
    let _ = write!(out, "{whole}");
    if frac != 0 {
        let text = format!("{frac:0digits$}");
        let _ = write!(out, ".{}", text.trim_end_matches('0'));
    }
}

/// Formats an `Instant` as the wall-clock time it corresponds to, in Go's layout
/// `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub(in crate::context) fn go_time(at: Instant) -> String {
    let now_wall = SystemTime::now();
    let now = Instant::now();
    let wall = if at >= now {
        now_wall + (at - now)
    } else {
        now_wall - (now - at)
    };
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    );
    if since.subsec_nanos() != 0 {
        let frac = format!("{:09}", since.subsec_nanos());
        let _ = write!(out, ".{}", frac.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        let s = 1_000_000_000i128;
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (250_000_000, "250ms"),
            (s, "1s"),
            (s * 3 / 2, "1.5s"),
            (90 * s, "1m30s"),
            (3600 * s, "1h0m0s"),
            (3600 * s + 1, "1h0m0.000000001s"),
            (-2 * s, "-2s"),
            (-1_500, "-1.5µs"),
        ] {
            assert_eq!(go_duration(nanos), text, "{nanos}ns");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
    }

    #[test]
    fn time_layout() {
        let text = go_time(Instant::now());
        assert!(text.ends_with(" +0000 UTC"), "{text}");
        assert_eq!(&text[4..5], "-");
        assert_eq!(&text[10..11], " ");
    }
}
