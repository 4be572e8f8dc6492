//! A future that is polled only when its own wake-up came.
//!
//! An idle client connection waits on two things at once: its socket, ready
//! for every request, and the worker's stop signal, which fires once in
//! the process's life. `select!` polls both at each wake-up of the task,
//! and polling a watch channel's wait costs about as much as a small
//! request's header parsing. [`WakeGated`] skips polling the stop signal
//! unless that signal woke the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps `inner` so that it is polled on the first poll and afterwards only
/// after it has woken the task itself.
pub struct WakeGated<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Gate>,
}

/// The waker handed to the inner future: it notes the wake-up, then wakes
/// the task that last polled.
struct Gate {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // A poisoned lock only means a panic elsewhere; the waker inside is
        // still valid.
        let task = match self.task.lock() {
            Ok(mut t) => t.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(w) = task {
            w.wake();
        }
    }
}

impl<F: Future> WakeGated<F> {
    pub fn new(inner: F) -> WakeGated<F> {
        WakeGated {
            inner: Box::pin(inner),
            gate: Arc::new(Gate {
                // Open for the first poll, which registers the inner waker.
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
        }
    }
}

impl<F: Future> Future for WakeGated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        // Record the task before polling, so that a wake-up during the poll
        // is not lost.
        match self.gate.task.lock() {
            Ok(mut t) => *t = Some(cx.waker().clone()),
            Err(p) => *p.into_inner() = Some(cx.waker().clone()),
        }
        let waker = Waker::from(self.gate.clone());
        let mut inner_cx = Context::from_waker(&waker);
        self.inner.as_mut().poll(&mut inner_cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Counts its polls; ready once `ready` is set, waking through the
    /// waker it was last given.
    struct Probe {
        polls: Arc<std::sync::atomic::AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("lock") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polled_first_then_only_after_its_own_wake_up() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None::<Waker>));
        let mut gated = WakeGated::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // Other wake-ups of the task (a busy timer here) don't poll it.
            for _ in 0..5 {
                tokio::select! {
                    biased;
                    _ = &mut gated => panic!("not ready yet"),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            assert_eq!(polls.load(Ordering::SeqCst), 1);
            // Its own wake-up gets it polled, and it completes.
            ready.store(true, Ordering::SeqCst);
            let w = waker.lock().expect("lock").take().expect("registered");
            w.wake();
            tokio::time::timeout(Duration::from_secs(5), &mut gated)
                .await
                .expect("completes after its wake-up");
            assert_eq!(polls.load(Ordering::SeqCst), 2);
        });
    }
}
