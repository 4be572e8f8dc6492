//! `observe layer4|layer7` with `error-limit` and `on-error`: errors of
//! real traffic count against a checked server as HAProxy's health
//! analysis (`__health_adjust`) counts them. A success of the observed
//! kind clears the count; `error-limit` errors in a row apply `on-error`,
//! report a "Health analyze" check result, and make the next check come
//! at `fastinter`.

use super::state::Health;
use super::status::{Outcome, Status};
use super::{Checked, Shared};
use crate::backend::observe::{Traffic, TrafficObserver};
use crate::config::{Observe, OnError, ServerCheck, DEFAULT_ERROR_LIMIT};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A server's observation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// `observe layer7` (else layer4).
    pub layer7: bool,
    pub error_limit: u32,
    pub on_error: OnError,
}

impl Settings {
    /// None without `observe` (or with `observe none`).
    pub(crate) fn of(h: &ServerCheck) -> Option<Settings> {
        let layer7 = match h.observe {
            Observe::None => return None,
            Observe::Layer4 => false,
            Observe::Layer7 => true,
        };
        Some(Settings {
            layer7,
            error_limit: h.error_limit.unwrap_or(DEFAULT_ERROR_LIMIT),
            on_error: h.on_error,
        })
    }

    /// HAProxy's `analyze_statuses` table: Some(true) for an error,
    /// Some(false) for a success, None when this mode ignores it.
    fn verdict(&self, t: Traffic) -> Option<bool> {
        match (t, self.layer7) {
            (Traffic::L4Err, _) => Some(true),
            (Traffic::L4Ok, false) => Some(false),
            (Traffic::L4Ok, true) => None,
            (Traffic::HttpOk, true) => Some(false),
            (_, true) => Some(true),
            (_, false) => None,
        }
    }
}

/// The observer of one checked server: it shares the counter with the
/// server's check task.
pub(crate) struct Observer {
    pub settings: Settings,
    pub shared: Arc<Shared>,
    pub server: Arc<dyn Checked>,
}

impl TrafficObserver for Observer {
    fn observe(&self, t: Traffic) {
        let Some(failed) = self.settings.verdict(t) else {
            return;
        };
        if !failed {
            self.shared.errors.store(0, Ordering::Relaxed);
            return;
        }
        let n = self.shared.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.settings.error_limit {
            return;
        }
        self.shared.errors.store(0, Ordering::Relaxed);
        // Every action makes the next check come at `fastinter`.
        self.shared.fast.store(true, Ordering::Relaxed);
        if self.server.gone() || self.server.suspended() {
            return;
        }
        let up = self.server.is_up();
        let on_error = self.settings.on_error;
        let Some((health, moved)) = self.shared.with_health(|h| act(h, on_error, up)) else {
            return;
        };
        let outcome = Outcome::new(
            Status::Hana,
            Some(format!(
                "Detected {n} consecutive errors, last one was: {}",
                t.desc()
            )),
        );
        self.server.report(&outcome, health, moved);
    }
}

/// Applies `on-error` to the counter (the server is `up` or not); None
/// for `fastinter`, which only hurries the next check. Else the counter
/// after the simulated failure, and whether it moved.
fn act(h: &mut Health, on_error: OnError, up: bool) -> Option<(Health, bool)> {
    h.follow(up);
    match on_error {
        OnError::Fastinter => return None,
        // One failure from DOWN, then a failure.
        OnError::SuddenDeath => {
            if h.cur > h.rise {
                h.cur = h.rise + 1;
            }
        }
        OnError::FailCheck => {}
        // At `rise`, one failure takes it DOWN.
        OnError::MarkDown => h.cur = h.rise,
    }
    let change = h.fail();
    Some((*h, change.moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_error_actions_as_haproxy() {
        // rise 2, fall 3: full health is 4.
        let full = || {
            let mut h = Health::new(2, 3);
            h.pass();
            h
        };
        let mut h = full();
        assert_eq!(act(&mut h, OnError::Fastinter, true), None);
        assert_eq!(h.cur, 4);
        let (h1, moved) = act(&mut full(), OnError::FailCheck, true).unwrap();
        assert!(moved && h1.cur == 3 && h1.is_up());
        let (h2, _) = act(&mut full(), OnError::SuddenDeath, true).unwrap();
        assert!(h2.cur == 2 && h2.is_up());
        let mut h3 = h2;
        h3.fail();
        assert!(!h3.is_up(), "one more failure after sudden-death is fatal");
        let (h4, _) = act(&mut full(), OnError::MarkDown, true).unwrap();
        assert!(!h4.is_up());
    }

    #[test]
    fn layer4_and_layer7_verdicts() {
        let l4 = Settings {
            layer7: false,
            error_limit: 1,
            on_error: OnError::Fastinter,
        };
        let l7 = Settings { layer7: true, ..l4 };
        assert_eq!(l4.verdict(Traffic::L4Err), Some(true));
        assert_eq!(l4.verdict(Traffic::L4Ok), Some(false));
        assert_eq!(l4.verdict(Traffic::HttpSts), None);
        assert_eq!(l7.verdict(Traffic::L4Ok), None);
        assert_eq!(l7.verdict(Traffic::HttpOk), Some(false));
        assert_eq!(l7.verdict(Traffic::HttpSts), Some(true));
        assert_eq!(l7.verdict(Traffic::L4Err), Some(true));
        assert_eq!(Traffic::of_status(503), Traffic::HttpSts);
        assert_eq!(Traffic::of_status(501), Traffic::HttpOk);
        assert_eq!(Traffic::of_status(505), Traffic::HttpOk);
        assert_eq!(Traffic::of_status(404), Traffic::HttpOk);
    }
}
