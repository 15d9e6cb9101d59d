//! Durations on the command line, one syntax for every command: a number with a unit, `500ms`,
//! `10s`, `5m` or `1h`, or a plain number of seconds (`10`, `2.5`). Where a limit can be
//! switched off, `0` or `never` means none. This module owns the parsing only; the commands
//! decide which form each option takes.

use std::time::Duration;

/// The longest duration accepted: a year. Anything longer is surely a typo, and a deadline that
/// far out could overflow a clock reading.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Nanoseconds per unit.
const UNITS: [(&str, u128); 5] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits kept: nanoseconds for a number of seconds.
const MAX_FRACTION_DIGITS: usize = 9;

/// Parses a duration: `DIGITS[.DIGITS][UNIT]` with UNIT `ms`, `s`, `m` or `h` (none: seconds),
/// at most [`MAX`]. Zero is accepted; see [`parse_positive_duration`] and
/// [`parse_optional_duration`] for options where it has no meaning or means "never".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 500ms, 10s, 5m, 1h, or seconds)");
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let per_unit = UNITS
        .iter()
        .find(|(name, _)| *name == unit.trim())
        .map(|(_, nanos)| *nanos)
        .ok_or_else(bad)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(bad());
    }
    let too_long = || format!("{s:?} is longer than a year");
    // More than 20 digits cannot fit a u64, let alone a year: too long, not malformed.
    let whole: u128 = whole.parse::<u64>().map_err(|_| too_long())?.into();
    let fraction = fraction.get(..MAX_FRACTION_DIGITS).unwrap_or(fraction);
    let scale = 10u128.pow(u32::try_from(fraction.len()).expect("at most 9 digits"));
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| bad())?
    };
    let nanos = whole * per_unit + fraction * per_unit / scale;
    if nanos > MAX.as_nanos() {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(
        u64::try_from(nanos).expect("at most a year of nanoseconds fits a u64"),
    ))
}

/// A duration that must be more than zero: a deadline.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("{s:?}: the duration must be more than 0")),
        d => Ok(d),
    }
}

/// A limit that can be switched off: `0` or `never` is `None`.
pub fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    parse_duration(s)
        .map(|d| (!d.is_zero()).then_some(d))
        .map_err(|e| format!("{e}, or never"))
}

/// [`parse_optional_duration`] for an option whose "no limit" is stored as zero.
pub fn parse_duration_or_never(s: &str) -> Result<Duration, String> {
    parse_optional_duration(s).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_seconds() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("10", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("2.5", Duration::from_millis(2500)),
            ("0.25s", Duration::from_millis(250)),
            ("1.5m", Duration::from_secs(90)),
            ("1.5ms", Duration::from_micros(1500)),
            (" 7 s ", Duration::from_secs(7)),
            ("0.1234567891", Duration::from_nanos(123_456_789)),
            ("8760h", MAX),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn malformed_and_too_long_durations_are_refused() {
        for text in [
            "",
            "s",
            "ms",
            "-1",
            "+1",
            "1.",
            ".5",
            "1..2",
            "1.2.3",
            "5x",
            "5 minutes",
            "1e3",
            "1h30m",
            "never",
            "inf",
            "NaN",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(
                err.contains("is not a duration (e.g. 500ms"),
                "{text:?}: {err}"
            );
        }
        for text in ["8761h", "366d0", "99999999999999999999999s", "31536001"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        assert_eq!(
            parse_duration("8761h"),
            Err("\"8761h\" is longer than a year".to_owned())
        );
    }

    #[test]
    fn zero_is_refused_for_deadlines_and_means_never_for_limits() {
        assert_eq!(parse_positive_duration("5s"), Ok(Duration::from_secs(5)));
        for zero in ["0", "0s", "0ms", "0.0"] {
            assert!(parse_positive_duration(zero).is_err(), "{zero:?}");
            assert_eq!(parse_optional_duration(zero), Ok(None), "{zero:?}");
        }
        assert_eq!(parse_optional_duration("never"), Ok(None));
        assert_eq!(parse_optional_duration("Never"), Ok(None));
        assert_eq!(
            parse_optional_duration("5m"),
            Ok(Some(Duration::from_secs(300)))
        );
        let err = parse_optional_duration("soon").expect_err("malformed");
        assert!(err.ends_with(", or never"), "{err}");
    }
}
