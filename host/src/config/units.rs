//! Numbers with units: HAProxy time values (`100`, `5s`, `2m`), sizes (`16k`)
//! and plain integers, plus the argument error messages built on them.
//!
//! HAProxy only accepts whole numbers here: `1.5s` is rejected rather than
//! rounded, so a configuration means the same thing under both programs.

use std::time::Duration;

/// The largest time value HAProxy accepts: its timers are signed 32-bit
/// millisecond counts (about 24.8 days).
const MAX_TIME_MS: u64 = i32::MAX as u64;

/// The unit a bare number is read in when a time value has no suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeUnit {
    /// Milliseconds, the HAProxy default for every time keyword luahost knows.
    Millis,
}

/// Why a time value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeError {
    /// Empty, or not starting with a digit.
    NotANumber,
    /// A decimal point: HAProxy has no fractional times.
    Fractional,
    /// A suffix other than us, ms, s, m, h, d.
    UnknownUnit(String),
    /// Beyond what a 32-bit millisecond timer holds.
    Overflow,
}

/// Parses an unsigned decimal integer made of ASCII digits only (no sign, no
/// spaces, no `0x`): stricter than `str::parse`, which accepts a leading `+`.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a HAProxy time value: an integer followed by an optional unit
/// (us, ms, s, m, h, d); a bare number is in `default_unit`.
pub(crate) fn parse_time(text: &str, default_unit: TimeUnit) -> Result<Duration, TimeError> {
    let digits_end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(TimeError::NotANumber);
    }
    let (number, unit) = text.split_at(digits_end);
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(TimeError::Fractional);
    }
    // Overflowing u64 is still an overflow, not a syntax error.
    let value: u64 = number.parse().map_err(|_| TimeError::Overflow)?;
    let micros_per_unit: u64 = match unit {
        "" => match default_unit {
            TimeUnit::Millis => 1_000,
        },
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        other => return Err(TimeError::UnknownUnit(other.to_string())),
    };
    let micros = value
        .checked_mul(micros_per_unit)
        .ok_or(TimeError::Overflow)?;
    if micros > MAX_TIME_MS * 1_000 {
        return Err(TimeError::Overflow);
    }
    Ok(Duration::from_micros(micros))
}

/// Parses a HAProxy size: an integer with an optional k, m or g suffix (either
/// case), each a factor of 1024.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let (number, factor) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1u64 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1u64 << 30),
        _ => (text, 1),
    };
    parse_u64(number)?.checked_mul(factor)
}

/// Reads the time argument of keyword `what` (e.g. "timeout client"), or
/// explains what was expected.
pub(crate) fn time_arg(what: &str, word: Option<&str>) -> Result<Duration, String> {
    let Some(word) = word else {
        return Err(format!(
            "'{what}' expects a time value like 5s, 100ms or 30000 (ms)"
        ));
    };
    parse_time(word, TimeUnit::Millis).map_err(|e| {
        let why = match e {
            TimeError::NotANumber => String::new(),
            TimeError::Fractional => {
                " (fractional values are not accepted; use a smaller unit, e.g. 1500ms)".to_string()
            }
            TimeError::UnknownUnit(u) => {
                format!(" (unknown unit '{u}'; units are us, ms, s, m, h, d)")
            }
            TimeError::Overflow => {
                format!(" (too large; the maximum is {MAX_TIME_MS} ms, about 24.8 days)")
            }
        };
        format!("'{what}' expects a time value like 5s, 100ms or 30000 (ms), got '{word}'{why}")
    })
}

/// Reads the size argument of keyword `what`, or explains what was expected.
pub(crate) fn size_arg(what: &str, word: Option<&str>) -> Result<u64, String> {
    let parsed = word.and_then(parse_size);
    match (word, parsed) {
        (Some(_), Some(v)) => Ok(v),
        (Some(w), None) => Err(format!(
            "'{what}' expects a size like 16384, 16k or 1m, got '{w}'"
        )),
        (None, _) => Err(format!("'{what}' expects a size like 16384, 16k or 1m")),
    }
}

/// Reads an integer argument of keyword `what` that must lie in `min..=max`
/// and fit `T`; `noun` says what the number counts (for the message).
pub(crate) fn int_arg<T: TryFrom<u64>>(
    what: &str,
    noun: &str,
    word: Option<&str>,
    min: u64,
    max: u64,
) -> Result<T, String> {
    let range = if max == u64::MAX {
        format!("an integer >= {min}")
    } else {
        format!("an integer between {min} and {max}")
    };
    let Some(word) = word else {
        return Err(format!("'{what}' expects {noun} ({range})"));
    };
    parse_u64(word)
        .filter(|v| (min..=max).contains(v))
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| format!("'{what}' expects {noun} ({range}), got '{word}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn time_units() {
        let t = |s| parse_time(s, TimeUnit::Millis);
        assert_eq!(t("100"), Ok(ms(100)));
        assert_eq!(t("0"), Ok(ms(0)));
        assert_eq!(t("100ms"), Ok(ms(100)));
        assert_eq!(t("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(t("5s"), Ok(ms(5_000)));
        assert_eq!(t("2m"), Ok(ms(120_000)));
        assert_eq!(t("1h"), Ok(ms(3_600_000)));
        assert_eq!(t("1d"), Ok(ms(86_400_000)));
        assert_eq!(t("007s"), Ok(ms(7_000)));
    }

    #[test]
    fn time_rejections() {
        let t = |s| parse_time(s, TimeUnit::Millis);
        assert_eq!(t(""), Err(TimeError::NotANumber));
        assert_eq!(t("abc"), Err(TimeError::NotANumber));
        assert_eq!(t("-5s"), Err(TimeError::NotANumber));
        assert_eq!(t("s"), Err(TimeError::NotANumber));
        assert_eq!(t("1.5s"), Err(TimeError::Fractional));
        assert_eq!(t("5S"), Err(TimeError::UnknownUnit("S".into())));
        assert_eq!(t("5 s"), Err(TimeError::UnknownUnit(" s".into())));
        assert_eq!(t("5sec"), Err(TimeError::UnknownUnit("sec".into())));
        assert_eq!(t("24d"), Ok(ms(24 * 86_400_000)));
        assert_eq!(t("25d"), Err(TimeError::Overflow));
        assert_eq!(t("2147483647"), Ok(ms(2_147_483_647)));
        assert_eq!(t("2147483648"), Err(TimeError::Overflow));
        assert_eq!(t("99999999999999999999999d"), Err(TimeError::Overflow));
        assert_eq!(t("18446744073709551615d"), Err(TimeError::Overflow));
    }

    #[test]
    fn time_messages() {
        assert_eq!(
            time_arg("timeout client", Some("abc")).unwrap_err(),
            "'timeout client' expects a time value like 5s, 100ms or 30000 (ms), got 'abc'"
        );
        assert!(time_arg("timeout client", Some("1.5s"))
            .unwrap_err()
            .contains("fractional values are not accepted"));
        assert!(time_arg("x", Some("3w"))
            .unwrap_err()
            .contains("unknown unit 'w'"));
        assert!(time_arg("x", Some("30d"))
            .unwrap_err()
            .contains("too large"));
        assert_eq!(
            time_arg("timeout client", None).unwrap_err(),
            "'timeout client' expects a time value like 5s, 100ms or 30000 (ms)"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16384"), Some(16384));
        assert_eq!(parse_size("16k"), Some(16 * 1024));
        assert_eq!(parse_size("16K"), Some(16 * 1024));
        assert_eq!(parse_size("2m"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("k"), None);
        assert_eq!(parse_size("1.5k"), None);
        assert_eq!(parse_size("16kb"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999999999g"), None);
        assert_eq!(parse_size("17179869184g"), None);
        assert!(size_arg("tune.bufsize", Some("x"))
            .unwrap_err()
            .contains("got 'x'"));
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("+42"), None);
        assert_eq!(parse_u64(" 42"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(int_arg::<u32>("rise", "a count", Some("3"), 1, 100), Ok(3));
        assert_eq!(
            int_arg::<u32>("rise", "a count", Some("0"), 1, 100).unwrap_err(),
            "'rise' expects a count (an integer between 1 and 100), got '0'"
        );
        assert_eq!(
            int_arg::<u8>("x", "a count", Some("300"), 0, u64::MAX).unwrap_err(),
            "'x' expects a count (an integer >= 0), got '300'"
        );
        assert_eq!(
            int_arg::<u8>("x", "a count", None, 0, u64::MAX).unwrap_err(),
            "'x' expects a count (an integer >= 0)"
        );
    }
}
