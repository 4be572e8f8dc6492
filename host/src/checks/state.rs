//! The rise/fall counter of one server's health check, as HAProxy counts
//! it (`check->health`): 0..rise-1 is DOWN, rise..rise+fall-1 is UP. A
//! failure from UP drops below `rise` at once to 0 only after `fall`
//! failures from full health; a success from DOWN climbs one step and
//! jumps to full health on reaching `rise`. A server starts at `rise`
//! (UP, but one failure from DOWN), as in HAProxy 3.0.

use std::time::Duration;

/// The counter, with its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Health {
    pub cur: u32,
    pub rise: u32,
    pub fall: u32,
}

/// What a result did to the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// The counter moved (HAProxy then reports the check: SERVER_CHECK).
    pub moved: bool,
}

impl Health {
    pub(crate) fn new(rise: u32, fall: u32) -> Health {
        let (rise, fall) = (rise.max(1), fall.max(1));
        Health {
            cur: rise,
            rise,
            fall,
        }
    }

    /// Full health.
    pub(crate) fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// The check says UP.
    pub(crate) fn is_up(&self) -> bool {
        self.cur >= self.rise
    }

    /// Counts a failed check.
    pub(crate) fn fail(&mut self) -> Change {
        if self.cur == 0 {
            return Change { moved: false };
        }
        self.cur -= 1;
        if self.cur < self.rise {
            self.cur = 0;
        }
        Change { moved: true }
    }

    /// Counts a passed check.
    pub(crate) fn pass(&mut self) -> Change {
        if self.cur >= self.top() {
            return Change { moved: false };
        }
        self.cur += 1;
        if self.cur >= self.rise {
            self.cur = self.top();
        }
        Change { moved: true }
    }

    /// Follows a state set outside the checks: a server brought up (by
    /// the CLI, Lua, or leaving maintenance) restarts at `rise`, one
    /// failure from DOWN, as HAProxy does; one brought down starts at 0.
    pub(crate) fn follow(&mut self, up: bool) {
        if up && !self.is_up() {
            self.cur = self.rise;
        } else if !up && self.is_up() {
            self.cur = 0;
        }
    }
}

/// The check intervals of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Intervals {
    pub inter: Duration,
    pub fastinter: Duration,
    pub downinter: Duration,
}

impl Intervals {
    /// HAProxy's `srv_getinter`: `inter` at full health unless `fast`
    /// (observed errors asked for a quicker check), `downinter` when down
    /// for good, `fastinter` otherwise (going up or down).
    pub(crate) fn next(&self, h: &Health, fast: bool) -> Duration {
        if h.cur >= h.top() && !fast {
            return self.inter;
        }
        if h.cur == 0 {
            return self.downinter;
        }
        self.fastinter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_one_failure_from_down() {
        let mut h = Health::new(2, 3);
        assert!(h.is_up());
        assert!(h.fail().moved);
        assert!(!h.is_up());
        assert_eq!(h.cur, 0);
        assert!(!h.fail().moved);
    }

    #[test]
    fn rise_then_fall() {
        let mut h = Health::new(2, 3);
        h.follow(false);
        h.pass();
        assert!(!h.is_up());
        assert_eq!(h.cur, 1);
        h.pass();
        assert!(h.is_up());
        assert_eq!(h.cur, 4);
        assert!(!h.pass().moved);
        h.fail();
        h.fail();
        assert!(h.is_up());
        h.fail();
        assert!(!h.is_up());
    }

    #[test]
    fn intervals() {
        let i = Intervals {
            inter: Duration::from_secs(2),
            fastinter: Duration::from_secs(1),
            downinter: Duration::from_secs(5),
        };
        let mut h = Health::new(2, 2);
        assert_eq!(i.next(&h, false), i.fastinter);
        h.pass();
        assert_eq!(i.next(&h, false), i.inter);
        assert_eq!(i.next(&h, true), i.fastinter);
        h.follow(false);
        assert_eq!(i.next(&h, false), i.downinter);
        h.follow(true);
        assert_eq!(h.cur, 2);
    }
}
