//! Running a Lua action (`http-request lua.NAME`, `tcp-request content
//! lua.NAME`, ...) on a transaction, and what its result means.

use crate::lua::exec::{self, ExecCtx, ExecError};
use crate::lua::handles::{Native, Registration};
use crate::lua::state::HostState;
use crate::lua::txn_access::TxnCell;
use crate::lua::txn_class::ReplyData;
use crate::txn::Txn;
use mlua::{MultiValue, Value};
use std::rc::Rc;
use std::time::Duration;

/// What the rule processing does after a Lua action (HAProxy's `act` codes).
#[derive(Debug)]
pub enum Outcome {
    /// CONTINUE (or nil, or an error, which is logged): next rule.
    Continue,
    /// STOP or DONE: no further rules of this rule set.
    Stop,
    /// DENY: 403 for a request, 502 for a response.
    Deny,
    /// ERROR: 500.
    Error,
    /// INVALID: 400.
    Invalid,
    /// ABORT: close silently.
    Abort,
    /// txn:done(): end the transaction, with the reply if one was given.
    Done(Option<ReplyData>),
}

/// Longest `act:wake_time()` honoured, so a bad value can't park a request
/// forever (the session budget does not count waiting).
const MAX_WAKE: Duration = Duration::from_secs(60);

/// Runs action `name`, as registered for rule-set kind `kind` ("http-req",
/// "http-res", ...), on `txn`; returns the transaction and the outcome.
/// The transaction
/// comes back in every case (`None` only if the host lost it, which the
/// caller treats as an abort).
pub async fn run(
    state: Rc<HostState>,
    name: Rc<str>,
    kind: &'static str,
    txn: Box<Txn>,
    args: Vec<String>,
) -> (Option<Box<Txn>>, Outcome) {
    let func = state
        .info
        .regs
        .borrow()
        .actions
        .get(&*name)
        .and_then(|regs| regs.iter().find(|a| a.kind == kind))
        .map(|a| a.func.clone());
    let Some(func) = func else {
        crate::log::log(
            crate::log::ERR,
            &format!("Lua function '{name}': no such action."),
        );
        return (Some(txn), Outcome::Continue);
    };
    let cell = TxnCell::owned(txn);
    let outcome = run_in(&state, &name, &func, &cell, &args).await;
    (cell.take(), outcome)
}

async fn run_in(
    state: &Rc<HostState>,
    name: &str,
    func: &mlua::Function,
    cell: &Rc<TxnCell>,
    args: &[String],
) -> Outcome {
    let lua = &state.lua;
    // One budget for the whole action, across YIELD re-runs.
    let ctx = ExecCtx::new(state.info.settings.session_budget(), true);
    // The transaction is reachable from Lua objects until the action ends.
    let registration = match Registration::new(Native::Txn(cell.clone())) {
        Ok(r) => r,
        Err(e) => {
            crate::log::log(
                crate::log::ERR,
                &format!(
                    "Lua function '{name}': {}.",
                    crate::lua::errors::message(&e)
                ),
            );
            return Outcome::Continue;
        }
    };
    loop {
        let txn_obj = match crate::lua::txn_class::new_txn(lua, &state.info, registration.handle())
        {
            Ok(t) => t,
            Err(e) => {
                crate::log::log(
                    crate::log::ERR,
                    &format!(
                        "Lua function '{name}': {}.",
                        crate::lua::errors::message(&e)
                    ),
                );
                return Outcome::Continue;
            }
        };
        let mut call_args = vec![Value::Table(txn_obj)];
        for a in args {
            match lua.create_string(a) {
                Ok(s) => call_args.push(Value::String(s)),
                Err(_) => return Outcome::Error,
            }
        }
        state.info.wake_time.set(None);
        let result = exec::run_coroutine::<Value>(
            lua,
            ctx.clone(),
            func.clone(),
            MultiValue::from_vec(call_args),
        )
        .await;
        let code = match result {
            Ok(Value::Integer(c)) => c,
            Ok(Value::Number(c)) => c as i64,
            Ok(_) => 0,
            Err(ExecError::Done) => return Outcome::Done(cell.reply.borrow_mut().take()),
            Err(e) => {
                // As HAProxy: the error is logged and rule processing goes on.
                crate::log::log(
                    crate::log::ERR,
                    &format!("Lua function '{name}': {}.", e.message()),
                );
                return Outcome::Continue;
            }
        };
        return match code {
            1 => Outcome::Stop,
            2 => {
                // YIELD: run the action again after act:wake_time(ms) (or at
                // once, after giving other work a turn).
                let wait = state
                    .info
                    .wake_time
                    .take()
                    .map(Duration::from_millis)
                    .unwrap_or(Duration::ZERO);
                if wait.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(wait.min(MAX_WAKE)).await;
                }
                continue;
            }
            3 => Outcome::Error,
            // act.DONE ends the rule processing; the transaction goes on
            // (unlike txn:done(), which ends it).
            4 => Outcome::Stop,
            5 => Outcome::Deny,
            6 => Outcome::Abort,
            7 => Outcome::Invalid,
            _ => Outcome::Continue,
        };
    }
}
