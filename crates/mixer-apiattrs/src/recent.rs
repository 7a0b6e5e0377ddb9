//! Each thread's most recent match, reused when the thread's next request has the same method
//! and target for the same handler: one comparison of the request line instead of the template
//! walk and the outputs' allocation. A miss costs a length comparison and a copy of the target
//! into a reused buffer.
//!
//! Handler ids come from one process-wide counter, so a remembered match never answers for
//! another handler (a config swap builds new handlers).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mixer_core::adapter::ApaOutput;

static NEXT_HANDLER: AtomicU64 = AtomicU64::new(1);

/// An id no handler had before.
pub(crate) fn next_handler_id() -> u64 {
    NEXT_HANDLER.fetch_add(1, Ordering::Relaxed)
}

/// Longer targets are not remembered (the buffer would stay that large).
const MAX_REMEMBERED: usize = 2048;

struct Remembered {
    handler: u64,
    method_len: usize,
    /// The method, then the target.
    request: Vec<u8>,
    output: Option<Arc<dyn ApaOutput>>,
}

thread_local! {
    static RECENT: RefCell<Remembered> = const {
        RefCell::new(Remembered { handler: 0, method_len: 0, request: Vec::new(), output: None })
    };
}

/// The thread's last output of `handler` for `method` and `target`, or `produce()`'s,
/// remembered.
#[inline]
pub(crate) fn get_or(
    handler: u64,
    method: &str,
    target: &str,
    produce: impl FnOnce() -> Arc<dyn ApaOutput>,
) -> Arc<dyn ApaOutput> {
    let hit = RECENT.try_with(|r| {
        let r = r.try_borrow().ok()?;
        let same = r.handler == handler
            && r.method_len == method.len()
            && r.request.len() == method.len() + target.len()
            && r.request.split_at_checked(method.len())
                == Some((method.as_bytes(), target.as_bytes()));
        if same { r.output.clone() } else { None }
    });
    if let Ok(Some(output)) = hit {
        return output;
    }
    let output = produce();
    let _ = RECENT.try_with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else {
            return;
        };
        let r = &mut *r;
        r.request.clear();
        if method.len() + target.len() > MAX_REMEMBERED {
            r.handler = 0;
            r.output = None;
            r.request = Vec::new();
            return;
        }
        r.request.extend_from_slice(method.as_bytes());
        r.request.extend_from_slice(target.as_bytes());
        r.handler = handler;
        r.method_len = method.len();
        r.output = Some(output.clone());
    });
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_match_is_reused_only_for_its_handler_method_and_target() {
        let calls = Cell::new(0);
        let out: Arc<dyn ApaOutput> = Arc::new(mixer_core::adapter::ApaValues(Vec::new()));
        let get = |h: u64, m: &str, t: &str| {
            get_or(h, m, t, || {
                calls.set(calls.get() + 1);
                out.clone()
            })
        };
        let (a, b) = (next_handler_id(), next_handler_id());
        get(a, "GET", "/x");
        get(a, "GET", "/x");
        assert_eq!(calls.get(), 1);
        // The method/target boundary is part of the key.
        get(a, "GE", "T/x");
        assert_eq!(calls.get(), 2);
        get(a, "GET", "/x");
        get(b, "GET", "/x");
        get(a, "GET", "/x?q");
        get(a, "POST", "/x?q");
        assert_eq!(calls.get(), 6);
        let long = format!("/{}", "a".repeat(MAX_REMEMBERED));
        get(a, "GET", &long);
        get(a, "GET", &long);
        assert_eq!(calls.get(), 8, "long targets are not remembered");
    }
}
