//! How Lua objects reach the transaction they belong to.
//!
//! A TXN (and its HTTP, Channel, Fetches and Converters objects) holds a
//! shared [`TxnCell`]. The cell either owns the transaction for the length of
//! a Lua action (the transaction moved to the Lua state's worker and goes
//! back when the action ends) or borrows it for the length of a synchronous
//! call (a Lua sample fetch or converter). When that window closes the cell
//! is emptied, so a script that keeps a TXN in a global gets an error on
//! later use, never a dangling reference.

use crate::txn::Txn;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

enum Slot {
    Owned(Box<Txn>),
    /// Valid until [`TxnCell::close`]; see [`TxnCell::borrowed`].
    Borrowed(*const Txn),
    Gone,
}

/// The transaction seen from Lua.
pub struct TxnCell {
    slot: RefCell<Slot>,
    /// The request's header block may be changed (action contexts).
    writable: bool,
    /// Set by `txn:done()`.
    pub done: Cell<bool>,
    /// The transaction is served by a Lua service (AppletHTTP/TCP), which
    /// has consumed the HTTP message: HTTP sample fetches are refused.
    pub applet: bool,
    /// The reply given to `txn:done(reply)`, as (status, reason, headers, body).
    pub reply: RefCell<Option<crate::lua::txn_class::ReplyData>>,
}

fn gone() -> mlua::Error {
    mlua::Error::runtime("the transaction this object belongs to is over")
}

impl TxnCell {
    /// A cell owning `txn` (Lua actions).
    pub fn owned(txn: Box<Txn>) -> Rc<TxnCell> {
        Rc::new(TxnCell {
            slot: RefCell::new(Slot::Owned(txn)),
            writable: true,
            done: Cell::new(false),
            applet: false,
            reply: RefCell::new(None),
        })
    }

    /// A cell owning the transaction of a Lua service.
    pub fn applet(txn: Box<Txn>) -> Rc<TxnCell> {
        Rc::new(TxnCell {
            slot: RefCell::new(Slot::Owned(txn)),
            writable: true,
            done: Cell::new(false),
            applet: true,
            reply: RefCell::new(None),
        })
    }

    /// A cell borrowing `txn` (sample fetches and converters, which may only
    /// read it).
    ///
    /// # Safety
    /// `txn` must stay valid and unmodified until [`TxnCell::close`] is
    /// called on the returned cell, and `close` must be called before the
    /// borrow ends (use [`BorrowGuard`]).
    pub unsafe fn borrowed(txn: &Txn) -> Rc<TxnCell> {
        Rc::new(TxnCell {
            slot: RefCell::new(Slot::Borrowed(txn as *const Txn)),
            writable: false,
            done: Cell::new(false),
            applet: false,
            reply: RefCell::new(None),
        })
    }

    /// Reads the transaction.
    pub fn with<R>(&self, f: impl FnOnce(&Txn) -> R) -> mlua::Result<R> {
        let slot = self
            .slot
            .try_borrow()
            .map_err(|_| mlua::Error::runtime("transaction busy"))?;
        match &*slot {
            Slot::Owned(t) => Ok(f(t)),
            // SAFETY: the creator of a Borrowed slot keeps the Txn alive and
            // unchanged until close() replaces the slot (BorrowGuard).
            Slot::Borrowed(p) => Ok(f(unsafe { &**p })),
            Slot::Gone => Err(gone()),
        }
    }

    /// Changes the transaction (actions only).
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut Txn) -> R) -> mlua::Result<R> {
        if !self.writable {
            return Err(mlua::Error::runtime(
                "the transaction can't be modified from a sample fetch or converter",
            ));
        }
        let mut slot = self
            .slot
            .try_borrow_mut()
            .map_err(|_| mlua::Error::runtime("transaction busy"))?;
        match &mut *slot {
            Slot::Owned(t) => Ok(f(t)),
            _ => Err(gone()),
        }
    }

    /// Takes the owned transaction back, leaving the cell empty.
    pub fn take(&self) -> Option<Box<Txn>> {
        match std::mem::replace(&mut *self.slot.borrow_mut(), Slot::Gone) {
            Slot::Owned(t) => Some(t),
            _ => None,
        }
    }

    /// Ends a borrow.
    pub fn close(&self) {
        *self.slot.borrow_mut() = Slot::Gone;
    }
}

/// Closes a borrowed cell when dropped (also on early return and unwinding).
pub struct BorrowGuard(pub Rc<TxnCell>);

impl Drop for BorrowGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}
