//! Calendar arithmetic and the time stamps of log lines.

use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down UTC time.
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub yday: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub millis: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl UtcTime {
    pub fn now() -> UtcTime {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UtcTime::from_unix(d.as_secs() as i64, d.subsec_millis())
    }

    pub fn from_unix(secs: i64, millis: u32) -> UtcTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let yday = (days - days_from_civil(year, 1, 1)) as u32;
        UtcTime {
            year,
            month,
            day,
            yday,
            hour: rem / 3600,
            min: rem / 60 % 60,
            sec: rem % 60,
            millis,
        }
    }

    /// HAProxy's access-log date: `20/Nov/2026:23:09:54.123`.
    pub fn log_date(&self) -> String {
        format!(
            "{:02}/{}/{}:{:02}:{:02}:{:02}.{:03}",
            self.day,
            MONTHS[(self.month - 1) as usize],
            self.year,
            self.hour,
            self.min,
            self.sec,
            self.millis
        )
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1..=12, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds and microseconds since the epoch.
fn unix(t: SystemTime) -> (i64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as i64, d.subsec_micros())
}

/// The RFC 3164 stamp in local time, `Dec  3 10:10:03` (day padded with
/// a space, as syslog writes it).
pub fn rfc3164_stamp(t: SystemTime) -> String {
    let (secs, _) = unix(t);
    crate::sample::conv::strftime(b"%b %e %H:%M:%S", secs, true)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_else(|| "Jan  1 00:00:00".to_string())
}

/// The ISO 8601 stamp in local time with microseconds and the zone as
/// `+hh:mm`: `2026-12-03T10:10:03.181731+00:00` (RFC 5424, `timed`, `iso`).
pub fn iso_stamp(t: SystemTime) -> String {
    let (secs, micros) = unix(t);
    let base = crate::sample::conv::strftime(b"%Y-%m-%dT%H:%M:%S", secs, true);
    let zone = crate::sample::conv::strftime(b"%z", secs, true);
    match (base, zone) {
        (Some(b), Some(z)) if z.len() == 5 => {
            let z = String::from_utf8_lossy(&z);
            format!(
                "{}.{micros:06}{}:{}",
                String::from_utf8_lossy(&b),
                &z[..3],
                &z[3..]
            )
        }
        _ => "1970-01-01T00:00:00.000000+00:00".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-1000, 0, 59, 365, 10_957, 20_412, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let t = UtcTime::from_unix(1_763_680_194, 5); // 2025-11-20 23:09:54 UTC
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.min, t.sec),
            (2025, 11, 20, 23, 9, 54)
        );
        assert_eq!(t.yday, 323);
        assert_eq!(t.log_date(), "20/Nov/2025:23:09:54.005");
    }
}
