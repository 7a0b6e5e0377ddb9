//! A std-only host for the pipeline: the system clock, a single-threaded event loop that
//! implements the PAL's [`Dispatcher`], and HTTP/1.1 callouts made on background threads with
//! their completions posted back to the loop.
//!
//! For the `mixer` CLI and simple Rust hosts. Proxies bring their own: Envoy implements the PAL
//! on the C++ side of the bridge; async Rust proxies use a tokio host. gRPC callouts are not
//! offered here (they answer [`CalloutError::Unsupported`]).
//!
//! Embedding the pipeline in a Rust program:
//!
//! ```
//! use std::sync::Arc;
//! use mixer_attr::{Attributes, Value, well_known as wk};
//! use mixer_core::{CheckStart, Pipeline};
//!
//! let yaml = r#"
//! apiVersion: config.istio.io/v1alpha2
//! kind: handler
//! metadata: { name: deny }
//! spec: { compiledAdapter: denier, params: { status: { code: 7, message: no } } }
//! ---
//! apiVersion: config.istio.io/v1alpha2
//! kind: instance
//! metadata: { name: nothing }
//! spec: { compiledTemplate: checknothing }
//! ---
//! apiVersion: config.istio.io/v1alpha2
//! kind: rule
//! metadata: { name: deny-ratings }
//! spec:
//!   match: destination.service.name == "ratings"
//!   actions: [ { handler: deny, instances: [ nothing ] } ]
//! "#;
//! let event_loop = mixer_host::EventLoop::new();
//! let loaded = mixer_config::load_str("policy.yaml", yaml).expect("valid YAML");
//! let registry = mixer_adapters::registry();
//! let snapshot = mixer_config::compile_loaded(&loaded, &registry, &event_loop.platform(), None, &Default::default())
//!     .expect("valid config");
//! let pipeline = Pipeline::new(snapshot, event_loop.platform());
//! // One worker per proxy worker thread, each with its thread's dispatcher.
//! let worker = pipeline.worker(Arc::new(event_loop.clone()));
//! let request = Attributes::new().with(wk::DESTINATION_SERVICE_NAME, Value::str("ratings"));
//! match worker.check(&request, |later| println!("decided later: {:?}", later.status)) {
//!     CheckStart::Done(answer) => assert_eq!(answer.status.message, "no"),
//!     CheckStart::Pending(_handle) => { /* keep the handle; run the loop until the callback fires */ }
//! }
//! worker.report(&request.with(wk::RESPONSE_CODE, Value::Int64(403)));
//! ```
#![forbid(unsafe_code)]

mod http;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mixer_attr::Timestamp;
use mixer_core::pal::{
    CalloutError, CalloutHandle, Cancel, Clock, Dispatcher, GrpcCallback, GrpcRequest,
    HttpCallback, HttpRequest, MonoTime, Platform, Task, TimerId,
};
use parking_lot::{Condvar, Mutex};

/// The operating system's clocks. Every `SystemClock` in the process shares one time base.
#[derive(Debug, Default)]
pub struct SystemClock {
    _private: (),
}

/// The process's monotonic time base.
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn precise_now() -> MonoTime {
    MonoTime(u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// How often the coarse clock's ticker thread refreshes the time.
const COARSE_TICK: Duration = Duration::from_micros(500);

/// A coarse monotonic time: one atomic load, refreshed every [`COARSE_TICK`] by a ticker
/// thread started on first use (like Envoy's per-iteration approximate time). Under heavy load
/// the ticker can be scheduled late; cache validity tolerates that.
fn coarse_now() -> MonoTime {
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
    const STARTING: u8 = 0;
    const TICKING: u8 = 1;
    const UNAVAILABLE: u8 = 2;
    static COARSE: AtomicU64 = AtomicU64::new(0);
    static STATE: AtomicU8 = AtomicU8::new(STARTING);
    static TICKER: std::sync::Once = std::sync::Once::new();
    match STATE.load(Ordering::Acquire) {
        TICKING => return MonoTime(COARSE.load(Ordering::Relaxed)),
        UNAVAILABLE => return precise_now(),
        _ => {}
    }
    TICKER.call_once(|| {
        COARSE.store(precise_now().0, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("mixer-coarse-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    COARSE.fetch_max(precise_now().0, Ordering::Relaxed);
                }
            });
        let state = if spawned.is_ok() {
            TICKING
        } else {
            UNAVAILABLE
        };
        STATE.store(state, Ordering::Release);
    });
    precise_now()
}

impl Clock for SystemClock {
    fn monotonic(&self) -> MonoTime {
        precise_now()
    }
    fn approximate_monotonic(&self) -> MonoTime {
        coarse_now()
    }
    fn wall(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_nanos(d.as_nanos() as i128)
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    timers: BTreeMap<(MonoTime, u64), Task>,
    posted: VecDeque<Task>,
    /// Callouts started and not yet completed or cancelled.
    outstanding: usize,
}

struct Inner {
    clock: SystemClock,
    state: Mutex<State>,
    wake: Condvar,
}

/// A single-threaded event loop on real time. Clones share the loop; run it from one thread.
#[derive(Clone)]
pub struct EventLoop {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.state.lock();
        f.debug_struct("EventLoop")
            .field("timers", &s.timers.len())
            .field("posted", &s.posted.len())
            .finish()
    }
}

impl Default for EventLoop {
    fn default() -> Self {
        EventLoop {
            inner: Arc::new(Inner {
                clock: SystemClock::default(),
                state: Mutex::default(),
                wake: Condvar::new(),
            }),
        }
    }
}

impl EventLoop {
    /// A new loop.
    pub fn new() -> Self {
        Self::default()
    }

    /// A [`Platform`] on this loop's clock with a thread-per-task background executor.
    pub fn platform(&self) -> Platform {
        Platform::on(Arc::new(self.clone()), Arc::new(self.clone()))
    }

    /// Runs posted tasks and due timers until nothing is runnable now. Returns how many ran.
    pub fn run_ready(&self) -> usize {
        let mut n = 0;
        loop {
            let task = {
                let mut s = self.inner.state.lock();
                let now = self.inner.clock.monotonic();
                match s.posted.pop_front() {
                    Some(t) => Some(t),
                    None => match s.timers.keys().next().copied() {
                        Some(key) if key.0 <= now => s.timers.remove(&key),
                        _ => None,
                    },
                }
            };
            match task {
                Some(t) => {
                    t();
                    n += 1;
                }
                None => return n,
            }
        }
    }

    /// Runs the loop until no task, timer or callout is left, or `limit` passes. Returns true
    /// when it went idle.
    pub fn run_until_idle(&self, limit: Duration) -> bool {
        self.run_until(|| false, limit)
    }

    /// Runs the loop until `done()` holds (checked after each batch of work), nothing is left to
    /// run, or `limit` passes. Returns true unless the limit passed.
    pub fn run_until(&self, done: impl Fn() -> bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.run_ready();
            if done() {
                return true;
            }
            let mut s = self.inner.state.lock();
            if !s.posted.is_empty() {
                continue;
            }
            if s.timers.is_empty() && s.outstanding == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let mut wait = deadline - now;
            if let Some(((due, _), _)) = s.timers.iter().next() {
                wait = wait.min(due.since(self.inner.clock.monotonic()));
            }
            if !wait.is_zero() {
                self.inner.wake.wait_for(&mut s, wait);
            }
        }
    }

    fn post_from_anywhere(&self, task: Task) {
        self.inner.state.lock().posted.push_back(task);
        self.inner.wake.notify_all();
    }

    fn callout_done(&self) {
        let mut s = self.inner.state.lock();
        s.outstanding = s.outstanding.saturating_sub(1);
        drop(s);
        self.inner.wake.notify_all();
    }
}

impl Clock for EventLoop {
    fn monotonic(&self) -> MonoTime {
        self.inner.clock.monotonic()
    }
    fn approximate_monotonic(&self) -> MonoTime {
        self.inner.clock.approximate_monotonic()
    }
    fn wall(&self) -> Timestamp {
        self.inner.clock.wall()
    }
}

struct CancelFlag(Arc<AtomicBool>);

impl Cancel for CancelFlag {
    fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Dispatcher for EventLoop {
    fn clock(&self) -> &dyn Clock {
        self
    }
    fn schedule(&self, delay: Duration, task: Task) -> TimerId {
        let mut s = self.inner.state.lock();
        s.next_id += 1;
        let id = s.next_id;
        let due = self.inner.clock.monotonic().plus(delay);
        s.timers.insert((due, id), task);
        drop(s);
        self.inner.wake.notify_all();
        TimerId(id)
    }
    fn cancel_timer(&self, id: TimerId) {
        self.inner
            .state
            .lock()
            .timers
            .retain(|(_, tid), _| *tid != id.0);
    }
    fn post(&self, task: Task) {
        self.post_from_anywhere(task);
    }
    fn http(&self, request: HttpRequest, done: HttpCallback) -> CalloutHandle {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.inner.state.lock().outstanding += 1;
        let me = self.clone();
        let flag = cancelled.clone();
        let spawned = std::thread::Builder::new()
            .name("mixer-http".into())
            .spawn(move || {
                let result = http::call(&request);
                me.post_from_anywhere(Box::new(move || {
                    if !flag.load(Ordering::SeqCst) {
                        done(result);
                    }
                }));
                me.callout_done();
            });
        if spawned.is_err() {
            self.callout_done();
        }
        CalloutHandle::new(CancelFlag(cancelled))
    }
    fn grpc(&self, request: GrpcRequest, done: GrpcCallback) -> CalloutHandle {
        let service = format!("{}/{}", request.service, request.method);
        self.post(Box::new(move || {
            done(Err(CalloutError::Unsupported(format!(
                "gRPC callout {service}: the std host has no gRPC client"
            ))))
        }));
        CalloutHandle::new(CancelFlag(Arc::new(AtomicBool::new(false))))
    }
}
