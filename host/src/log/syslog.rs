//! The header HAProxy puts in front of a log message, per `log ... format`,
//! and the line's length limit (`len`).

use std::time::SystemTime;

/// `log ... format NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// `<PRI>Mmm dd hh:mm:ss [HOST ]TAG[PID]: ` (the default).
    Rfc3164,
    /// As rfc3164, never with a host name (for the local syslog).
    Local,
    /// `<PRI>1 ISO-TIME HOST TAG PID - - `.
    Rfc5424,
    /// `<PRI>` only.
    Priority,
    /// `<LEVEL>` only (no facility).
    Short,
    /// `<LEVEL>ISO-TIME `.
    Timed,
    /// `ISO-TIME `.
    Iso,
    /// The message alone.
    Raw,
}

impl SyslogFormat {
    /// The format named in configuration (the parser has checked the name).
    pub fn from_name(name: Option<&str>) -> SyslogFormat {
        match name {
            Some("local") => SyslogFormat::Local,
            Some("rfc5424") => SyslogFormat::Rfc5424,
            Some("priority") => SyslogFormat::Priority,
            Some("short") => SyslogFormat::Short,
            Some("timed") => SyslogFormat::Timed,
            Some("iso") => SyslogFormat::Iso,
            Some("raw") => SyslogFormat::Raw,
            _ => SyslogFormat::Rfc3164,
        }
    }
}

/// What a header may show besides the priority.
pub struct HeaderFields<'a> {
    /// `log-tag` (or the program name).
    pub tag: &'a str,
    /// `log-send-hostname`: the host name, or none.
    pub hostname: Option<&'a str>,
    /// The process id.
    pub pid: u32,
    /// When the line is sent.
    pub now: SystemTime,
}

/// The syslog facility numbers, in the order of their names.
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The number of a facility name (`local0` is 16); `user` when unknown.
pub fn facility_number(name: &str) -> u8 {
    FACILITIES.iter().position(|f| *f == name).unwrap_or(1) as u8
}

/// Builds the datagram (or output line) for `msg`: header, message cut so
/// that the whole line, final LF included, is at most `max_len` bytes, LF.
pub fn frame(
    format: SyslogFormat,
    facility: u8,
    level: u8,
    fields: &HeaderFields<'_>,
    msg: &[u8],
    max_len: usize,
) -> Vec<u8> {
    use SyslogFormat::*;
    let mut out = Vec::with_capacity(64 + msg.len().min(max_len));
    let pri = u32::from(facility) * 8 + u32::from(level);
    match format {
        Rfc3164 | Local | Rfc5424 | Priority => push(&mut out, &format!("<{pri}>")),
        Short | Timed => push(&mut out, &format!("<{level}>")),
        Iso | Raw => {}
    }
    match format {
        Rfc3164 | Local => {
            push(&mut out, &super::time::rfc3164_stamp(fields.now));
            out.push(b' ');
            if let (Rfc3164, Some(host)) = (format, fields.hostname) {
                push(&mut out, host);
                out.push(b' ');
            }
            push(&mut out, &format!("{}[{}]: ", fields.tag, fields.pid));
        }
        Rfc5424 => push(
            &mut out,
            &format!(
                "1 {} {} {} {} - - ",
                super::time::iso_stamp(fields.now),
                fields.hostname.unwrap_or("-"),
                fields.tag,
                fields.pid
            ),
        ),
        Timed | Iso => {
            push(&mut out, &super::time::iso_stamp(fields.now));
            out.push(b' ');
        }
        Priority | Short | Raw => {}
    }
    // Room for the final LF: the header itself may be cut (HAProxy's
    // order), then the message fills what is left.
    let room = max_len.saturating_sub(1);
    out.truncate(room);
    let msg = trim_trailing_newlines(msg);
    let take = room.saturating_sub(out.len()).min(msg.len());
    out.extend_from_slice(&msg[..take]);
    out.push(b'\n');
    out
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// Messages may come with their own line ends; the frame adds one.
fn trim_trailing_newlines(msg: &[u8]) -> &[u8] {
    let mut end = msg.len();
    while end > 0 && matches!(msg[end - 1], b'\n' | 0) {
        end -= 1;
    }
    &msg[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn fields(host: Option<&'static str>) -> HeaderFields<'static> {
        HeaderFields {
            tag: "mytag",
            hostname: host,
            pid: 4242,
            // 2026-12-03 10:10:03.181731 UTC
            now: UNIX_EPOCH + Duration::from_micros(1_796_292_603_181_731),
        }
    }

    fn line(format: SyslogFormat, host: Option<&'static str>, len: usize) -> String {
        let v = frame(format, 16, 6, &fields(host), b"hello world\n", len);
        String::from_utf8(v).unwrap()
    }

    // The shapes HAProxy 3.0 sends (seen with a UDP receiver). Stamps are
    // in local time: the expected lines use the same stamps, whose own
    // shape is checked apart.
    #[test]
    fn headers_match_haproxy() {
        let f = fields(None);
        let (legacy, iso) = (
            crate::log::time::rfc3164_stamp(f.now),
            crate::log::time::iso_stamp(f.now),
        );
        assert_eq!(legacy.len(), 15, "{legacy}");
        assert_eq!(&legacy[3..4], " ");
        assert_eq!(iso.len(), 32, "{iso}");
        assert_eq!((&iso[10..11], &iso[19..20], &iso[29..30]), ("T", ".", ":"));
        assert_eq!(
            line(SyslogFormat::Rfc3164, None, 1024),
            format!("<134>{legacy} mytag[4242]: hello world\n")
        );
        assert_eq!(
            line(SyslogFormat::Rfc3164, Some("myhost"), 1024),
            format!("<134>{legacy} myhost mytag[4242]: hello world\n")
        );
        assert_eq!(
            line(SyslogFormat::Local, Some("myhost"), 1024),
            format!("<134>{legacy} mytag[4242]: hello world\n")
        );
        assert_eq!(
            line(SyslogFormat::Rfc5424, None, 1024),
            format!("<134>1 {iso} - mytag 4242 - - hello world\n")
        );
        assert_eq!(
            line(SyslogFormat::Priority, None, 1024),
            "<134>hello world\n"
        );
        assert_eq!(line(SyslogFormat::Short, None, 1024), "<6>hello world\n");
        assert_eq!(
            line(SyslogFormat::Timed, None, 1024),
            format!("<6>{iso} hello world\n")
        );
        assert_eq!(
            line(SyslogFormat::Iso, None, 1024),
            format!("{iso} hello world\n")
        );
        assert_eq!(line(SyslogFormat::Raw, None, 1024), "hello world\n");
    }

    #[test]
    fn len_counts_the_whole_line() {
        let l = line(SyslogFormat::Raw, None, 6);
        assert_eq!(l, "hello\n");
        let l = line(SyslogFormat::Rfc3164, None, 10);
        assert_eq!(l.len(), 10);
        assert!(l.starts_with("<134>") && l.ends_with('\n'), "{l}");
    }
}
