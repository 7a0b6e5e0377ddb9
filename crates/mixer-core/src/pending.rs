//! One-shot results that complete later, possibly on another thread: how an adapter answers a
//! check or quota request that needs a backend round trip.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

/// The adapter went away without completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the adapter dropped the request without answering")]
pub struct Abandoned;

type Waiter<T> = Box<dyn FnOnce(Result<T, Abandoned>) + Send>;

enum Slot<T> {
    Empty,
    Value(Result<T, Abandoned>),
    Waiting(Waiter<T>),
    Done,
}

/// The receiving side: the pipeline registers what to do when the result arrives.
pub struct PendingResult<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// The sending side, kept by the adapter. Dropping it without completing yields [`Abandoned`].
pub struct Completer<T> {
    slot: Option<Arc<Mutex<Slot<T>>>>,
}

/// A connected pair.
pub fn pending<T: Send + 'static>() -> (Completer<T>, PendingResult<T>) {
    let slot = Arc::new(Mutex::new(Slot::Empty));
    (
        Completer {
            slot: Some(slot.clone()),
        },
        PendingResult { slot },
    )
}

fn deliver<T>(slot: &Mutex<Slot<T>>, value: Result<T, Abandoned>) {
    let mut guard = slot.lock();
    match std::mem::replace(&mut *guard, Slot::Done) {
        Slot::Empty => *guard = Slot::Value(value),
        Slot::Waiting(w) => {
            drop(guard);
            w(value)
        }
        // Already delivered: a second completion is ignored.
        other @ (Slot::Value(_) | Slot::Done) => *guard = other,
    }
}

impl<T> Completer<T> {
    /// Delivers the result (from any thread).
    pub fn complete(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            deliver(&slot, Ok(value));
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            deliver(&slot, Err(Abandoned));
        }
    }
}

impl<T: Send + 'static> PendingResult<T> {
    /// Runs `f` with the result: at once if it is already there, else on the completing thread.
    pub fn on_complete(self, f: impl FnOnce(Result<T, Abandoned>) + Send + 'static) {
        let mut guard = self.slot.lock();
        match std::mem::replace(&mut *guard, Slot::Done) {
            Slot::Value(v) => {
                drop(guard);
                f(v)
            }
            Slot::Empty => *guard = Slot::Waiting(Box::new(f)),
            other => *guard = other,
        }
    }
}

impl<T> fmt::Debug for PendingResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingResult")
    }
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Completer")
    }
}

/// An adapter's answer: now, or later through a [`PendingResult`].
#[derive(Debug)]
pub enum Poll<T> {
    Ready(T),
    Pending(PendingResult<T>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_before_or_after_registration() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (c, p) = pending::<u32>();
        c.complete(1);
        let g = got.clone();
        p.on_complete(move |v| g.lock().push(v));
        let (c, p) = pending::<u32>();
        let g = got.clone();
        p.on_complete(move |v| g.lock().push(v));
        std::thread::spawn(move || c.complete(2)).join().unwrap();
        let (c, p) = pending::<u32>();
        let g = got.clone();
        p.on_complete(move |v| g.lock().push(v));
        drop(c);
        assert_eq!(*got.lock(), [Ok(1), Ok(2), Err(Abandoned)]);
    }
}
