//! The outcome of one check, with HAProxy's status names and texts
//! (`L4CON` / "Layer4 connection problem", ...), as logs, the stats and
//! the SERVER_CHECK event show them.

use std::time::Duration;

/// A check status (HAProxy's `HCHK_STATUS_*` that luahost produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Connected (plain connect check).
    L4Ok,
    /// Connecting timed out.
    L4Tout,
    /// Connecting failed (refused, unreachable...).
    L4Con,
    /// Every rule of an HTTP check or tcp-check passed.
    L7Ok,
    /// No (complete) answer in time.
    L7Tout,
    /// The answer did not match, or was not valid.
    L7Rsp,
    /// An HTTP answer with an unexpected status.
    L7Sts,
    /// The socket failed after connecting.
    SockErr,
    /// Errors of real traffic reached `error-limit` (`observe`).
    Hana,
}

/// A check's result class, as the SERVER_CHECK event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckResult {
    Failed,
    Passed,
}

impl Status {
    /// HAProxy's short name.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Status::L4Ok => "L4OK",
            Status::L4Tout => "L4TOUT",
            Status::L4Con => "L4CON",
            Status::L7Ok => "L7OK",
            Status::L7Tout => "L7TOUT",
            Status::L7Rsp => "L7RSP",
            Status::L7Sts => "L7STS",
            Status::SockErr => "SOCKERR",
            Status::Hana => "HANA",
        }
    }

    /// HAProxy's description.
    pub(crate) fn desc(self) -> &'static str {
        match self {
            Status::L4Ok => "Layer4 check passed",
            Status::L4Tout => "Layer4 timeout",
            Status::L4Con => "Layer4 connection problem",
            Status::L7Ok => "Layer7 check passed",
            Status::L7Tout => "Layer7 timeout",
            Status::L7Rsp => "Layer7 invalid response",
            Status::L7Sts => "Layer7 wrong status",
            Status::SockErr => "Socket error",
            Status::Hana => "Health analyze",
        }
    }

    pub(crate) fn result(self) -> CheckResult {
        match self {
            Status::L4Ok | Status::L7Ok => CheckResult::Passed,
            _ => CheckResult::Failed,
        }
    }

    /// HAProxy's number for the status (`enum healthcheck_status`), as
    /// `show servers state` prints it (`srv_check_status`).
    pub(crate) fn code(self) -> u8 {
        match self {
            Status::Hana => 4,
            Status::SockErr => 5,
            Status::L4Ok => 6,
            Status::L4Tout => 7,
            Status::L4Con => 8,
            Status::L7Tout => 12,
            Status::L7Rsp => 13,
            Status::L7Ok => 15,
            Status::L7Sts => 17,
        }
    }

    /// Whether the status comes from looking at the answer (layer 5 and
    /// up): only those carry an HTTP code in logs and events.
    pub(crate) fn is_layer7(self) -> bool {
        matches!(self, Status::L7Ok | Status::L7Rsp | Status::L7Sts)
    }
}

/// What one check run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub status: Status,
    /// The detail HAProxy logs as `info: "..."` (an OS error text, an HTTP
    /// reason, a tcp-check step...).
    pub info: Option<String>,
    /// The HTTP status of an HTTP check's answer.
    pub code: Option<u16>,
    pub duration: Duration,
}

impl Outcome {
    pub(crate) fn new(status: Status, info: Option<String>) -> Outcome {
        Outcome {
            status,
            info,
            code: None,
            duration: Duration::ZERO,
        }
    }

    pub(crate) fn passed(&self) -> bool {
        self.status.result() == CheckResult::Passed
    }

    /// HAProxy's `check_append_info`: ", reason: D[, code: C][, info: "I"],
    /// check duration: Nms".
    pub(crate) fn reason_text(&self) -> String {
        let mut s = format!(", reason: {}", self.status.desc());
        if let Some(code) = self.code.filter(|_| self.status.is_layer7()) {
            s.push_str(&format!(", code: {code}"));
        }
        if let Some(info) = self.info.as_deref().filter(|i| !i.is_empty()) {
            s.push_str(&format!(", info: \"{info}\""));
        }
        // A health analysis has no duration (HAProxy's -1, not printed).
        if self.status != Status::Hana {
            s.push_str(&format!(
                ", check duration: {}ms",
                self.duration.as_millis()
            ));
        }
        s
    }
}

/// The text HAProxy gives an OS error of a connect (`strerror`).
pub(crate) fn os_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Connection refused".to_string(),
        std::io::ErrorKind::ConnectionReset => "Connection reset by peer".to_string(),
        _ => {
            // `Display` of an OS error appends " (os error N)".
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_text_as_haproxy_logs_it() {
        let o = Outcome::new(Status::L4Con, Some("Connection refused".into()));
        assert_eq!(
            o.reason_text(),
            ", reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms"
        );
        let mut o = Outcome::new(Status::L7Sts, Some("Service Unavailable".into()));
        o.code = Some(503);
        o.duration = Duration::from_millis(3);
        assert_eq!(
            o.reason_text(),
            ", reason: Layer7 wrong status, code: 503, info: \"Service Unavailable\", check duration: 3ms"
        );
    }
}
