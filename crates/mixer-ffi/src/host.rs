//! The PAL on the C++ side: a [`Dispatcher`] and [`Clock`] that forward to the host's
//! `mixer::HostDispatcher` object, and the boxed closures the host runs for us.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cxx::UniquePtr;
use mixer_attr::Timestamp;
use mixer_core::pal::{
    CalloutError, CalloutHandle, Cancel, Clock, Dispatcher, GrpcCallback, GrpcRequest,
    HttpCallback, HttpRequest, HttpResponse, MonoTime, TimerId,
};

use crate::bridge::ffi;

// SAFETY: `mixer::HostDispatcher`'s contract (include/mixer/host.h) is that `post` may be
// called from any thread and the object may be destroyed on any thread; every other method is
// called only on the dispatcher's own thread, which is where the core calls them (timers,
// callouts and clocks are used by the worker bound to that dispatcher). All its methods are
// `const`, so shared references are all the bridge ever hands out.
unsafe impl Send for ffi::HostDispatcher {}
// SAFETY: see the `Send` impl above.
unsafe impl Sync for ffi::HostDispatcher {}
// SAFETY: `mixer::CheckCallback` is called at most once and deleted by its owner (the pending
// check); its contract allows deletion on any thread. It is only called on the worker thread.
unsafe impl Send for ffi::CheckCallback {}

/// A boxed task the host runs later with `mixer::run_task` (dropping it unrun is fine).
pub struct Task(pub(crate) Option<mixer_core::pal::Task>);

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Task")
    }
}

/// The completion of one HTTP callout (`mixer::http_complete` / `mixer::http_fail`).
pub struct HttpDone(pub(crate) Option<HttpCallback>);

impl fmt::Debug for HttpDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpDone")
    }
}

/// Owns the host's dispatcher object.
struct HostRef(UniquePtr<ffi::HostDispatcher>);

impl HostRef {
    fn get(&self) -> Option<&ffi::HostDispatcher> {
        self.0.as_ref()
    }
}

/// A [`Dispatcher`] and [`Clock`] backed by a C++ `mixer::HostDispatcher`.
#[derive(Clone)]
pub struct CxxDispatcher {
    host: Arc<HostRef>,
}

impl fmt::Debug for CxxDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CxxDispatcher")
            .field("null", &self.host.0.is_null())
            .finish()
    }
}

impl CxxDispatcher {
    /// Wraps the host's object; `None` when the pointer is null.
    pub fn new(host: UniquePtr<ffi::HostDispatcher>) -> Option<CxxDispatcher> {
        if host.is_null() {
            return None;
        }
        Some(CxxDispatcher {
            host: Arc::new(HostRef(host)),
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Clock for CxxDispatcher {
    fn monotonic(&self) -> MonoTime {
        MonoTime(self.host.get().map_or(0, |h| h.monotonic_ns()))
    }
    fn approximate_monotonic(&self) -> MonoTime {
        MonoTime(self.host.get().map_or(0, |h| h.approximate_monotonic_ns()))
    }
    fn wall(&self) -> Timestamp {
        let ns = self.host.get().map_or(0, |h| h.wall_ns());
        Timestamp::new(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    }
}

struct HttpCancel {
    host: Arc<HostRef>,
    id: u64,
}

impl Cancel for HttpCancel {
    fn cancel(&self) {
        if let Some(h) = self.host.get() {
            h.cancel_http(self.id);
        }
    }
}

struct NoCancel;

impl Cancel for NoCancel {
    fn cancel(&self) {}
}

impl Dispatcher for CxxDispatcher {
    fn clock(&self) -> &dyn Clock {
        self
    }

    fn schedule(&self, delay: Duration, task: mixer_core::pal::Task) -> TimerId {
        match self.host.get() {
            Some(h) => TimerId(h.schedule(nanos(delay), Box::new(Task(Some(task))))),
            None => TimerId(0),
        }
    }

    fn cancel_timer(&self, id: TimerId) {
        if let Some(h) = self.host.get() {
            h.cancel_timer(id.0);
        }
    }

    fn post(&self, task: mixer_core::pal::Task) {
        if let Some(h) = self.host.get() {
            h.post(Box::new(Task(Some(task))));
        }
    }

    fn http(&self, request: HttpRequest, done: HttpCallback) -> CalloutHandle {
        let Some(h) = self.host.get() else {
            done(Err(CalloutError::Connection("no host dispatcher".into())));
            return CalloutHandle::new(NoCancel);
        };
        let req = ffi::HttpRequest {
            authority: request.authority,
            method: request.method,
            path: request.path,
            headers: request
                .headers
                .into_iter()
                .map(|(name, value)| ffi::HttpHeader { name, value })
                .collect(),
            body: request.body.to_vec(),
            timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let id = h.http(&req, Box::new(HttpDone(Some(done))));
        CalloutHandle::new(HttpCancel {
            host: self.host.clone(),
            id,
        })
    }

    fn grpc(&self, request: GrpcRequest, done: GrpcCallback) -> CalloutHandle {
        // The C++ API has no gRPC client yet: answer "unsupported" on the worker thread, as
        // a completion must never run inside the call that started it.
        let message = format!("gRPC {}/{}", request.service, request.method);
        self.post(Box::new(move || {
            done(Err(CalloutError::Unsupported(message)))
        }));
        CalloutHandle::new(NoCancel)
    }
}

/// Converts the host's answer into the core's.
pub(crate) fn http_response(
    status: u16,
    headers: &[ffi::HeaderView<'_>],
    body: &[u8],
) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers
            .iter()
            .map(|h| {
                (
                    String::from_utf8_lossy(h.name).into_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Bytes::copy_from_slice(body),
    }
}
