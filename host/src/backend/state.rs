//! A server's states as HAProxy names and numbers them: the administrative
//! flags (maintenance, drain, and why) and the operational state (what the
//! checks, or the lack of them, say).
//!
//! The numeric values are HAProxy's (`SRV_ADMF_*`, `SRV_ST_*`): they appear
//! in `show servers state` (`srv_admin_state`, `srv_op_state`) and in the
//! Lua event data, so they must not be renumbered.

use std::fmt;

/// Administrative flags (`SRV_ADMF_*`), a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminFlags(pub u8);

impl AdminFlags {
    /// Forced into maintenance (CLI `set server ... state maint`, Lua
    /// `set_maint`, `disable server`, the `disabled` keyword).
    pub const FMAINT: u8 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub const IMAINT: u8 = 0x02;
    /// Maintenance because of the configuration (`disabled`).
    pub const CMAINT: u8 = 0x04;
    /// Forced into drain (CLI `state drain`, Lua `set_drain`).
    pub const FDRAIN: u8 = 0x08;
    /// Drain inherited from a tracked server.
    pub const IDRAIN: u8 = 0x10;
    /// Maintenance because the address could not be resolved.
    pub const RMAINT: u8 = 0x20;
    /// The FQDN was set at run time (no effect on traffic).
    pub const HMAINT: u8 = 0x40;
    /// Any maintenance flag (HAProxy's `SRV_ADMF_MAINT`; CMAINT always
    /// comes with FMAINT).
    pub const MAINT: u8 = 0x23;
    /// Any drain flag.
    pub const DRAIN: u8 = 0x18;

    pub fn in_maint(self) -> bool {
        self.0 & Self::MAINT != 0
    }

    pub fn draining(self) -> bool {
        self.0 & Self::DRAIN != 0
    }

    /// The names HAProxy's Lua event data lists (`ServerEventAdmin.new_admin`):
    /// "MAINT"/"DRAIN" first when any of their flags is set, then each flag.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.in_maint() {
            v.push("MAINT");
        }
        for (bit, name) in [
            (Self::FMAINT, "FMAINT"),
            (Self::IMAINT, "IMAINT"),
            (Self::RMAINT, "RMAINT"),
            (Self::CMAINT, "CMAINT"),
        ] {
            if self.0 & bit != 0 {
                v.push(name);
            }
        }
        if self.draining() {
            v.push("DRAIN");
        }
        for (bit, name) in [(Self::FDRAIN, "FDRAIN"), (Self::IDRAIN, "IDRAIN")] {
            if self.0 & bit != 0 {
                v.push(name);
            }
        }
        v
    }
}

impl fmt::Debug for AdminFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminFlags({:#04x} {:?})", self.0, self.names())
    }
}

/// Operational state (`SRV_ST_*`). Only `Stopped` is "down".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OperState {
    /// Down (checks failed, forced down, or in maintenance).
    Stopped = 0,
    /// Up but warming up (slowstart); takes traffic.
    Starting = 1,
    /// Fully up.
    Running = 2,
    /// Up but soft-stopping (NOLB): no new load-balanced traffic.
    Stopping = 3,
}

impl OperState {
    pub fn from_u8(v: u8) -> OperState {
        match v {
            1 => OperState::Starting,
            2 => OperState::Running,
            3 => OperState::Stopping,
            _ => OperState::Stopped,
        }
    }

    /// The name HAProxy's Lua event data uses (`ServerEventState.new_state`).
    pub fn name(self) -> &'static str {
        match self {
            OperState::Stopped => "STOPPED",
            OperState::Starting => "STARTING",
            OperState::Running => "RUNNING",
            OperState::Stopping => "STOPPING",
        }
    }

    /// Whether load balancing may pick a server in this state.
    pub fn takes_new_traffic(self) -> bool {
        matches!(self, OperState::Running | OperState::Starting)
    }
}

/// The administrative states the CLI (`set server B/S state ...`) and Lua
/// (`set_ready`/`set_drain`/`set_maint`) ask for. Each one sets or clears
/// the *forced* flags only (FMAINT, FDRAIN), as HAProxy does: inherited or
/// configuration flags are left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminState {
    /// Neither forced maintenance nor forced drain.
    Ready,
    /// Forced drain (and out of forced maintenance).
    Drain,
    /// Forced maintenance.
    Maint,
}

/// Who changed a server's operational state (HAProxy's
/// `srv_op_st_chg_cause`); the text is HAProxy's, used in the events'
/// `cause` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperCause {
    None,
    /// A health check (the event carries the check result).
    Health,
    /// An agent check.
    Agent,
    Cli,
    Lua,
}

impl OperCause {
    pub fn text(self) -> &'static str {
        match self {
            OperCause::None | OperCause::Health | OperCause::Agent => "",
            OperCause::Cli => "changed from CLI",
            OperCause::Lua => "changed from Lua script",
        }
    }
}

/// The operational state a server takes after an administrative change,
/// given its state before (HAProxy's `_srv_update_status_adm`): entering
/// maintenance stops it; leaving maintenance brings it up (checks restart
/// from "just passed", so a checked server also starts up and is checked at
/// once); anything else leaves it as it was.
pub fn oper_after_admin(before: AdminFlags, after: AdminFlags, oper: OperState) -> OperState {
    match (before.in_maint(), after.in_maint()) {
        (false, true) => OperState::Stopped,
        (true, false) => OperState::Running,
        _ => oper,
    }
}

/// One step of an administrative change: set or clear one flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminStep {
    Set(u8),
    Clear(u8),
}

impl AdminStep {
    pub fn apply(self, flags: AdminFlags) -> AdminFlags {
        match self {
            AdminStep::Set(bit) => AdminFlags(flags.0 | bit),
            AdminStep::Clear(bit) => AdminFlags(flags.0 & !bit),
        }
    }
}

/// The steps HAProxy takes for each requested state (`srv_adm_set_maint`,
/// `_drain`, `_ready`): two flag changes, each applied (and published as
/// its own SERVER_ADMIN event) on its own when it changes anything.
/// Clearing FMAINT leaves CMAINT, which is outside the maintenance mask.
pub fn admin_steps(state: AdminState) -> [AdminStep; 2] {
    match state {
        AdminState::Maint => [
            AdminStep::Set(AdminFlags::FMAINT),
            AdminStep::Clear(AdminFlags::FDRAIN),
        ],
        AdminState::Drain => [
            AdminStep::Set(AdminFlags::FDRAIN),
            AdminStep::Clear(AdminFlags::FMAINT),
        ],
        AdminState::Ready => [
            AdminStep::Clear(AdminFlags::FDRAIN),
            AdminStep::Clear(AdminFlags::FMAINT),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_names_follow_haproxy() {
        let f = AdminFlags(AdminFlags::FMAINT | AdminFlags::CMAINT);
        assert_eq!(f.names(), vec!["MAINT", "FMAINT", "CMAINT"]);
        assert_eq!(
            AdminFlags(AdminFlags::FDRAIN).names(),
            vec!["DRAIN", "FDRAIN"]
        );
        assert!(AdminFlags(AdminFlags::RMAINT).in_maint());
        assert!(!AdminFlags(AdminFlags::HMAINT).in_maint());
    }

    #[test]
    fn admin_transitions() {
        let apply =
            |f: AdminFlags, st: AdminState| admin_steps(st).iter().fold(f, |f, step| step.apply(f));
        let ready = AdminFlags::default();
        let maint = apply(ready, AdminState::Maint);
        assert_eq!(maint.0, AdminFlags::FMAINT);
        assert_eq!(
            oper_after_admin(ready, maint, OperState::Running),
            OperState::Stopped
        );
        assert_eq!(
            oper_after_admin(maint, ready, OperState::Stopped),
            OperState::Running
        );
        let drain = apply(maint, AdminState::Drain);
        assert_eq!(drain.0, AdminFlags::FDRAIN);
        // Config maintenance (CMAINT) stays; ready clears the forced flag.
        let cfg = AdminFlags(AdminFlags::FMAINT | AdminFlags::CMAINT);
        assert_eq!(apply(cfg, AdminState::Ready).0, AdminFlags::CMAINT);
        // Maintenance clears a forced drain.
        assert_eq!(apply(drain, AdminState::Maint).0, AdminFlags::FMAINT);
    }
}
