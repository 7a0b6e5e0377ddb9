//! Platform abstraction layer: everything the core needs from its host.
//!
//! The core does no I/O and reads no clock of its own. A host implements [`Platform`] once
//! (Envoy: on the C++ side of the bridge; Rust hosts: a tokio implementation; tests: the
//! [`virtual_time`] one) and hands each worker thread a [`Dispatcher`]: timers and `post` on that
//! thread, and HTTP/gRPC callouts through the host's clients. Completions always come back through
//! the dispatcher of the thread that started the work, as Envoy's `Dispatcher::post` does.

pub mod virtual_time;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use mixer_attr::Timestamp;

/// A unit of work run on a worker thread.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// A point on the host's monotonic clock, in nanoseconds from an arbitrary origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(pub u64);

impl MonoTime {
    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> MonoTime {
        MonoTime(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: MonoTime) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// The host's clocks.
pub trait Clock: Send + Sync {
    /// Monotonic time, for validity windows, timers and rates.
    fn monotonic(&self) -> MonoTime;
    /// Wall-clock time, for timestamps in telemetry.
    fn wall(&self) -> Timestamp;
    /// Monotonic time that may lag [`Clock::monotonic`] by about a millisecond, on the same
    /// time base, for cache validity on the request path (Envoy's
    /// `approximateMonotonicTime()`). Hosts with a cheaper coarse clock override it.
    fn approximate_monotonic(&self) -> MonoTime {
        self.monotonic()
    }
}

/// Identifies a timer for cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub u64);

/// An HTTP request made through the host's client (Envoy: `Http::AsyncClient`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Host cluster or authority the host routes to (Envoy: a cluster name; others: `host:port`).
    pub authority: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub timeout: std::time::Duration,
}

/// The host's answer to an [`HttpRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A unary gRPC call made through the host's client (Envoy: `Grpc::AsyncClient`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcRequest {
    pub authority: String,
    /// `package.Service`
    pub service: String,
    pub method: String,
    /// The serialized request message.
    pub message: Bytes,
    pub timeout: std::time::Duration,
}

/// Why a callout failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalloutError {
    #[error("callout timed out")]
    Timeout,
    #[error("callout was cancelled")]
    Cancelled,
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("gRPC status {code}: {message}")]
    GrpcStatus { code: i32, message: String },
    #[error("the host has no client for this callout: {0}")]
    Unsupported(String),
}

/// Completion of an HTTP callout; called on the worker thread that made it.
pub type HttpCallback = Box<dyn FnOnce(Result<HttpResponse, CalloutError>) + Send + 'static>;
/// Completion of a gRPC callout (the serialized response message); called on the worker thread.
pub type GrpcCallback = Box<dyn FnOnce(Result<Bytes, CalloutError>) + Send + 'static>;

/// Cancels an outstanding callout. Cancelling after completion does nothing; the callback of a
/// cancelled callout is never called.
pub trait Cancel: Send + Sync {
    fn cancel(&self);
}

/// Handle to an outstanding callout.
pub struct CalloutHandle(Box<dyn Cancel>);

impl CalloutHandle {
    /// Wraps a host's cancel hook.
    pub fn new(c: impl Cancel + 'static) -> Self {
        CalloutHandle(Box::new(c))
    }
    /// Cancels the callout.
    pub fn cancel(&self) {
        self.0.cancel()
    }
}

impl fmt::Debug for CalloutHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CalloutHandle")
    }
}

/// Per-worker-thread services (Envoy: the worker's `Event::Dispatcher` plus its async clients).
pub trait Dispatcher: Send + Sync {
    /// The host's clocks.
    fn clock(&self) -> &dyn Clock;
    /// Runs `task` on this dispatcher's thread after `delay`.
    fn schedule(&self, delay: std::time::Duration, task: Task) -> TimerId;
    /// Cancels a timer; a no-op if it already fired.
    fn cancel_timer(&self, id: TimerId);
    /// Runs `task` on this dispatcher's thread soon. Callable from any thread.
    fn post(&self, task: Task);
    /// Starts an HTTP callout; `done` runs on this dispatcher's thread.
    fn http(&self, request: HttpRequest, done: HttpCallback) -> CalloutHandle;
    /// Starts a unary gRPC callout; `done` runs on this dispatcher's thread.
    fn grpc(&self, request: GrpcRequest, done: GrpcCallback) -> CalloutHandle;
}

/// A background executor owned by the library, for adapters that need their own sockets
/// (Redis, a websocket) where the host offers no client. Tasks may block.
pub trait BackgroundExecutor: Send + Sync {
    /// Runs `task` on a background thread.
    fn spawn(&self, name: &str, task: Task);
}

/// Runs each task on a new named OS thread: the default background executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadExecutor;

impl BackgroundExecutor for ThreadExecutor {
    fn spawn(&self, name: &str, task: Task) {
        // If the OS refuses a thread the task is dropped; adapters treat that like a dead backend.
        let _ = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(task);
    }
}

/// What the host provides to the whole library.
#[derive(Clone)]
pub struct Platform {
    pub clock: Arc<dyn Clock>,
    /// The host's main-thread dispatcher (Envoy: the main dispatcher), for work that belongs
    /// to no request: list refreshes, flush timers, background connections' completions.
    pub dispatcher: Arc<dyn Dispatcher>,
    pub background: Arc<dyn BackgroundExecutor>,
}

impl Platform {
    /// A platform whose clock and main dispatcher are `dispatcher`, with the thread-per-task
    /// background executor.
    pub fn on(dispatcher: Arc<dyn Dispatcher>, clock: Arc<dyn Clock>) -> Platform {
        Platform {
            clock,
            dispatcher,
            background: Arc::new(ThreadExecutor),
        }
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}
