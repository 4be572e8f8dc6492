//! What live traffic tells about a server (`observe layer4|layer7`): the
//! request path reports each connection and response outcome here, with
//! HAProxy's names (`HANA_STATUS_*`); the check engine, when the server
//! observes traffic, counts the errors and applies `on-error`
//! (`checks/observe.rs`). A server without `observe` has no observer and
//! the report is one atomic load.

use super::server::Server;

/// One outcome of real traffic (HAProxy's `HANA_STATUS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// A connection to the server was established.
    L4Ok,
    /// Connecting to the server failed (refused, timed out...).
    L4Err,
    /// A response with a status below 500, or 501 / 505.
    HttpOk,
    /// A 5xx response other than 501 and 505.
    HttpSts,
    /// A response that could not be parsed.
    HttpHdrRsp,
    /// A response that broke off while being relayed.
    HttpRsp,
    /// Reading the response failed.
    HttpReadError,
    /// No response within `timeout server`.
    HttpReadTimeout,
    /// The server closed the connection without a response.
    HttpBrokenPipe,
}

impl Traffic {
    /// HAProxy's description (`analyze_statuses`), as the "last one was"
    /// part of the "Detected N consecutive errors" message shows it.
    pub fn desc(self) -> &'static str {
        match self {
            Traffic::L4Ok => "L4 successful connection",
            Traffic::L4Err => "L4 unsuccessful connection",
            Traffic::HttpOk => "Correct http response",
            Traffic::HttpSts => "Wrong http response",
            Traffic::HttpHdrRsp => "Invalid http response (headers)",
            Traffic::HttpRsp => "Invalid http response",
            Traffic::HttpReadError => "Read error (http)",
            Traffic::HttpReadTimeout => "Read timeout (http)",
            Traffic::HttpBrokenPipe => "Close from server (http)",
        }
    }

    /// The outcome of a response with HTTP status `code`: 501 and 505 are
    /// the client's doing, not the server's failure.
    pub fn of_status(code: u16) -> Traffic {
        if (100..500).contains(&code) || code == 501 || code == 505 {
            Traffic::HttpOk
        } else {
            Traffic::HttpSts
        }
    }
}

/// Who counts a server's traffic outcomes.
pub trait TrafficObserver: Send + Sync {
    fn observe(&self, t: Traffic);
}

impl Server {
    /// Reports a traffic outcome to the server's observer, if it has one.
    pub fn observe(&self, t: Traffic) {
        if let Some(o) = self.observer.get() {
            o.observe(t);
        }
    }

    /// Installs the observer (once; false if one is already there).
    pub fn set_observer(&self, o: std::sync::Arc<dyn TrafficObserver>) -> bool {
        self.observer.set(o).is_ok()
    }
}
