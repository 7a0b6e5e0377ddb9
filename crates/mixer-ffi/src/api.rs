//! The Rust side of every bridge entry point. Each one runs inside [`guard`]: a panic becomes
//! an INTERNAL status instead of unwinding into C++ (where cxx would abort the process).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cxx::UniquePtr;
use mixer_attr::ingest::{self, Connection, HeaderSource, RequestAttributes, Text};
use mixer_attr::{StringMapRef, StringMapView, Value, ValueType, well_known as wk};
use mixer_core::adapter::HeaderChange;
use mixer_core::pal::{CalloutError, Platform};
use mixer_core::{AdapterRegistry, CheckAnswer, CheckHandle, CompileOptions, Snapshot};
use parking_lot::Mutex;

use crate::bridge::ffi;
use crate::host::{CxxDispatcher, HttpDone, Task, http_response};

const INTERNAL: i32 = 13;
const INVALID_ARGUMENT: i32 = 3;
const FAILED_PRECONDITION: i32 = 9;

pub(crate) fn status(code: i32, message: impl Into<String>) -> ffi::Status {
    ffi::Status {
        code,
        message: message.into(),
    }
}

pub(crate) fn ok() -> ffi::Status {
    ffi::Status::default()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning a panic into `on_panic(INTERNAL status)`. The panic payload is dropped
/// inside a second `catch_unwind` (a payload whose destructor panics must not escape either).
pub(crate) fn guard<T>(f: impl FnOnce() -> T, on_panic: impl FnOnce(ffi::Status) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let message = format!("panic in mixer: {}", panic_message(&*payload));
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            on_panic(status(INTERNAL, message))
        }
    }
}

/// Every adapter this library links: the built-in ones, knative, the attribute producers
/// (kubernetesenv, jwt, apiattributes), the `rewrite` mutation adapter and
/// [`crate::httpauthz`].
pub fn registry() -> AdapterRegistry {
    let mut r = mixer_adapters::registry();
    mixer_knative::register(&mut r);
    r.register(Arc::new(mixer_kubeenv::KubernetesEnv));
    r.register(Arc::new(mixer_jwt::JwtAdapter));
    r.register(Arc::new(mixer_apiattrs::ApiAttributesAdapter));
    r.register(Arc::new(mixer_mutation::Rewrite));
    r.register(Arc::new(crate::httpauthz::HttpAuthzAdapter));
    r
}

/// A pipeline handed to C++ (`rust::Box<mixer::Pipeline>`); empty when creation failed.
pub struct Pipeline {
    inner: Option<mixer_core::Pipeline>,
    registry: Arc<AdapterRegistry>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("valid", &self.inner.is_some())
            .finish()
    }
}

impl Pipeline {
    /// Wraps a pipeline built in Rust (Rust hosts, tests and benches: no C++ dispatcher needed).
    pub fn from_core(pipeline: mixer_core::Pipeline) -> Pipeline {
        Pipeline {
            inner: Some(pipeline),
            registry: Arc::new(registry()),
        }
    }

    /// The core pipeline (None when creation failed).
    pub fn core(&self) -> Option<&mixer_core::Pipeline> {
        self.inner.as_ref()
    }
}

fn compile(
    registry: &AdapterRegistry,
    yaml: &[u8],
    platform: &Platform,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, (ffi::Status, Vec<String>)> {
    let Ok(text) = std::str::from_utf8(yaml) else {
        return Err((status(INVALID_ARGUMENT, "config is not UTF-8"), Vec::new()));
    };
    let mut loader =
        mixer_config::Loader::new(mixer_config::Limits::default()).with_adapter_kinds(registry);
    loader.add_str("config", text);
    let loaded = loader.finish().map_err(|e| {
        let errors: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        (
            status(
                INVALID_ARGUMENT,
                format!("config rejected: {} error(s)", errors.len()),
            ),
            errors,
        )
    })?;
    mixer_config::compile_loaded(
        &loaded,
        registry,
        platform,
        previous,
        &CompileOptions::default(),
    )
    .map_err(|e| {
        let errors: Vec<String> = e.iter().map(ToString::to_string).collect();
        (
            status(
                INVALID_ARGUMENT,
                format!("config rejected: {} error(s)", errors.len()),
            ),
            errors,
        )
    })
}

fn failed_pipeline(status: ffi::Status, errors: Vec<String>) -> ffi::CreateResult {
    ffi::CreateResult {
        status,
        errors,
        pipeline: Box::new(Pipeline {
            inner: None,
            registry: Arc::new(AdapterRegistry::new()),
        }),
    }
}

pub fn create_pipeline(
    config_yaml: &[u8],
    main: UniquePtr<ffi::HostDispatcher>,
) -> ffi::CreateResult {
    guard(
        move || {
            let Some(main) = CxxDispatcher::new(main) else {
                return failed_pipeline(
                    status(INVALID_ARGUMENT, "null HostDispatcher"),
                    Vec::new(),
                );
            };
            let registry = Arc::new(registry());
            let platform = Platform::on(Arc::new(main.clone()), Arc::new(main));
            match compile(&registry, config_yaml, &platform, None) {
                Ok(snapshot) => ffi::CreateResult {
                    status: ok(),
                    errors: Vec::new(),
                    pipeline: Box::new(Pipeline {
                        inner: Some(mixer_core::Pipeline::new(snapshot, platform)),
                        registry,
                    }),
                },
                Err((s, errors)) => failed_pipeline(s, errors),
            }
        },
        |s| failed_pipeline(s, Vec::new()),
    )
}

/// Adds the response's attributes (code, headers, sizes, duration, time) to a request's bag.
pub(crate) fn add_response_attributes<'a>(
    bag: &mut RequestAttributes<'a>,
    response: &ffi::ResponseInfo<'_>,
    response_headers: &'a HeaderMap<'a>,
    pipeline: &mixer_core::Pipeline,
) {
    bag.reserve(6);
    bag.set(wk::RESPONSE_CODE, Value::Int64(response.code));
    bag.set(
        wk::RESPONSE_HEADERS,
        Value::StringMap(StringMapRef::Borrowed(response_headers)),
    );
    bag.set(
        wk::REQUEST_TOTAL_SIZE,
        Value::Int64(response.request_total_size),
    );
    bag.set(
        wk::RESPONSE_TOTAL_SIZE,
        Value::Int64(response.response_total_size),
    );
    bag.set(
        wk::RESPONSE_DURATION,
        Value::Duration(mixer_attr::Duration::from_nanos(response.duration_ns)),
    );
    bag.set(
        wk::RESPONSE_TIME,
        Value::Timestamp(pipeline.platform().clock.wall()),
    );
}

pub(crate) fn invalid_pipeline() -> ffi::Status {
    status(FAILED_PRECONDITION, "the pipeline was not created")
}

pub fn swap_config(pipeline: &Pipeline, config_yaml: &[u8]) -> ffi::SwapResult {
    guard(
        || {
            let Some(p) = &pipeline.inner else {
                return ffi::SwapResult {
                    status: invalid_pipeline(),
                    errors: Vec::new(),
                };
            };
            let current = p.snapshot();
            match compile(
                &pipeline.registry,
                config_yaml,
                p.platform(),
                Some(&current),
            ) {
                Ok(next) => {
                    p.swap(next);
                    ffi::SwapResult {
                        status: ok(),
                        errors: Vec::new(),
                    }
                }
                Err((status, errors)) => ffi::SwapResult { status, errors },
            }
        },
        |status| ffi::SwapResult {
            status,
            errors: Vec::new(),
        },
    )
}

pub fn flush(pipeline: &Pipeline) -> ffi::Status {
    guard(
        || match &pipeline.inner {
            Some(p) => {
                p.flush();
                ok()
            }
            None => invalid_pipeline(),
        },
        |s| s,
    )
}

type PendingMap = Mutex<HashMap<u64, CheckHandle>>;

/// One worker thread's handle (`rust::Box<mixer::Worker>`), holding its pending checks.
pub struct Worker {
    inner: Option<mixer_core::Worker>,
    pending: Arc<PendingMap>,
    next_id: AtomicU64,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("valid", &self.inner.is_some())
            .field("pending", &self.pending.lock().len())
            .finish()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Cancel every pending check (their callbacks are deleted uncalled), outside the lock.
        let all = std::mem::take(&mut *self.pending.lock());
        let _ = catch_unwind(AssertUnwindSafe(move || drop(all)));
    }
}

impl Worker {
    /// Wraps a worker built in Rust (its dispatcher may be any [`mixer_core::pal::Dispatcher`]).
    pub fn from_core(worker: mixer_core::Worker) -> Worker {
        Worker {
            inner: Some(worker),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The core worker (None when the pipeline or dispatcher was invalid).
    pub fn core(&self) -> Option<&mixer_core::Worker> {
        self.inner.as_ref()
    }
}

pub fn create_worker(
    pipeline: &Pipeline,
    dispatcher: UniquePtr<ffi::HostDispatcher>,
) -> Box<Worker> {
    let make = move || {
        let inner = match (&pipeline.inner, CxxDispatcher::new(dispatcher)) {
            (Some(p), Some(d)) => Some(p.worker(Arc::new(d))),
            _ => None,
        };
        Box::new(Worker {
            inner,
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    };
    guard(make, |_| {
        Box::new(Worker {
            inner: None,
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    })
}

/// The request headers as the `request.headers` map, borrowed from the host's list. Names are
/// compared as bytes (Envoy keeps them lowercase); values that are not UTF-8 read as absent.
#[derive(Clone, Copy, Debug)]
pub struct HeaderMap<'a>(pub &'a [ffi::HeaderView<'a>]);

impl StringMapView for HeaderMap<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let key = key.as_bytes();
        self.0
            .iter()
            .find(|h| h.name == key)
            .and_then(|h| std::str::from_utf8(h.value).ok())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for h in self.0 {
            if let (Ok(k), Ok(v)) = (std::str::from_utf8(h.name), std::str::from_utf8(h.value)) {
                f(k, v)
            }
        }
    }
}

/// The header list for the shared mapping: values stay bytes until the pipeline reads them.
impl HeaderSource for HeaderMap<'_> {
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Text<'s>)) {
        for h in self.0 {
            f(h.name, Text::Bytes(h.value))
        }
    }
}

/// A byte string the host may leave empty (unknown).
fn text(b: &[u8]) -> Option<Text<'_>> {
    (!b.is_empty()).then_some(Text::Bytes(b))
}

/// An address as 4 or 16 raw octets (network order: what Envoy's `Ip::ipv4()->address()` /
/// `ipv6()->address()` hold), or as text (`10.0.0.7`, `::1`).
#[inline]
fn ip(b: &[u8]) -> Option<IpAddr> {
    match *b {
        [] => None,
        [a, b, c, d] => Some(IpAddr::from([a, b, c, d])),
        _ => match <[u8; 16]>::try_from(b) {
            Ok(octets) => Some(IpAddr::from(octets)),
            Err(_) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        },
    }
}

/// The connection facts of a [`ffi::RequestInfo`] (empty slices and ports <= 0 are unknown).
#[inline]
pub fn connection<'a>(request: &ffi::RequestInfo<'a>) -> Connection<'a> {
    Connection {
        source_ip: ip(request.source_ip),
        source_port: (request.source_port > 0).then_some(request.source_port),
        destination_ip: ip(request.destination_ip),
        destination_port: (request.destination_port > 0).then_some(request.destination_port),
        source_principal: text(request.source_principal),
        destination_principal: text(request.destination_principal),
        requested_server_name: text(request.requested_server_name),
        mtls: request.mtls,
    }
}

/// Maps the host's request onto Istio attributes with the mapping every host shares
/// ([`mixer_attr::ingest::request_attributes`]: headers, pseudo-headers and connection facts,
/// `request.time` from the pipeline's clock), plus the extra string attributes in
/// `request.attributes` (names the running config declares with type STRING).
#[inline]
pub fn request_attributes<'a>(
    request: &ffi::RequestInfo<'a>,
    headers: &'a HeaderMap<'a>,
    pipeline: &mixer_core::Pipeline,
) -> RequestAttributes<'a> {
    let now = pipeline.platform().clock.wall();
    let mut bag = ingest::request_attributes(headers, &connection(request), now);
    if !request.attributes.is_empty() {
        let snapshot = pipeline.snapshot();
        for a in request.attributes {
            let (Some(name), Ok(v)) = (
                text(a.name).and_then(Text::to_str),
                std::str::from_utf8(a.value),
            ) else {
                continue;
            };
            if let Some((id, ValueType::String)) = snapshot.vocabulary.lookup_typed(name) {
                bag.set(id, Value::str(v));
            }
        }
    }
    bag
}

pub(crate) fn header_ops(ops: &[HeaderChange]) -> Vec<ffi::HeaderOp> {
    if ops.is_empty() {
        return Vec::new();
    }
    ops.iter()
        .map(|op| match op {
            HeaderChange::Set(n, v) => ffi::HeaderOp {
                kind: ffi::HeaderOpKind::Set,
                name: n.clone(),
                value: v.clone(),
            },
            HeaderChange::Append(n, v) => ffi::HeaderOp {
                kind: ffi::HeaderOpKind::Append,
                name: n.clone(),
                value: v.clone(),
            },
            HeaderChange::Remove(n) => ffi::HeaderOp {
                kind: ffi::HeaderOpKind::Remove,
                name: n.clone(),
                value: String::new(),
            },
        })
        .collect()
}

/// A copy for C++ (none for the empty string: the common OK case allocates nothing).
fn copy(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        s.to_owned()
    }
}

/// Flattens a decision for C++. An allow without header operations or direct response (the
/// common case) copies no string and allocates nothing.
pub fn check_result(answer: &CheckAnswer) -> ffi::CheckResult {
    let d = &answer.decision;
    let allowed = d.is_allowed();
    let (http_code, body) = match &d.direct_response {
        Some(r) => (r.code, copy(&r.body)),
        None if allowed => (200, String::new()),
        None => (d.status.code.http_status(), copy(&d.status.message)),
    };
    ffi::CheckResult {
        status: ffi::Status {
            code: d.status.code.0,
            message: copy(&d.status.message),
        },
        allowed,
        http_code,
        body,
        request_header_ops: header_ops(&d.request_header_operations),
        response_header_ops: header_ops(&d.response_header_operations),
        cache_hit: answer.cache_hit,
    }
}

fn check_error(status: ffi::Status) -> ffi::CheckStart {
    ffi::CheckStart {
        state: ffi::CheckState::Error,
        result: ffi::CheckResult {
            status,
            ..Default::default()
        },
        id: 0,
    }
}

pub fn check(
    worker: &Worker,
    request: &ffi::RequestInfo<'_>,
    callback: UniquePtr<ffi::CheckCallback>,
) -> ffi::CheckStart {
    guard(|| check_inner(worker, request, callback), check_error)
}

fn check_inner(
    worker: &Worker,
    request: &ffi::RequestInfo<'_>,
    mut callback: UniquePtr<ffi::CheckCallback>,
) -> ffi::CheckStart {
    let Some(w) = &worker.inner else {
        return check_error(invalid_pipeline());
    };
    let headers = HeaderMap(request.headers);
    let bag = request_attributes(request, &headers, w.pipeline());
    if callback.is_null() {
        // Nobody to tell: a pending check is cancelled at once (and no closure is allocated).
        return match w.check(&bag, |_| {}) {
            mixer_core::CheckStart::Done(answer) => done(&answer),
            mixer_core::CheckStart::Pending(handle) => {
                drop(handle);
                check_error(status(
                    INVALID_ARGUMENT,
                    "the check went asynchronous and there is no callback",
                ))
            }
        };
    }
    let id = worker.next_id.fetch_add(1, Ordering::Relaxed);
    let pending = Arc::downgrade(&worker.pending);
    let started = w.check(&bag, move |answer: CheckAnswer| {
        let result = check_result(&answer);
        if let Some(cb) = callback.as_mut() {
            cb.on_check_complete(&result);
        }
        // Forget the handle (outside the lock: dropping it takes the check's own lock).
        let handle = pending.upgrade().and_then(|p| p.lock().remove(&id));
        drop(handle);
    });
    match started {
        mixer_core::CheckStart::Done(answer) => done(&answer),
        mixer_core::CheckStart::Pending(handle) => {
            worker.pending.lock().insert(id, handle);
            ffi::CheckStart {
                state: ffi::CheckState::Pending,
                result: ffi::CheckResult::default(),
                id,
            }
        }
    }
}

fn done(answer: &CheckAnswer) -> ffi::CheckStart {
    ffi::CheckStart {
        state: ffi::CheckState::Done,
        result: check_result(answer),
        id: 0,
    }
}

pub fn cancel_check(worker: &Worker, id: u64) {
    guard(
        || {
            let handle = worker.pending.lock().remove(&id);
            drop(handle);
        },
        |_| (),
    )
}

pub fn pending_checks(worker: &Worker) -> u64 {
    guard(|| worker.pending.lock().len() as u64, |_| 0)
}

pub fn report(
    worker: &Worker,
    request: &ffi::RequestInfo<'_>,
    response: &ffi::ResponseInfo<'_>,
) -> ffi::ReportResult {
    guard(
        || {
            let Some(w) = &worker.inner else {
                return ffi::ReportResult {
                    status: invalid_pipeline(),
                    instances_sent: 0,
                };
            };
            let headers = HeaderMap(request.headers);
            let response_headers = HeaderMap(response.headers);
            let mut bag = request_attributes(request, &headers, w.pipeline());
            add_response_attributes(&mut bag, response, &response_headers, w.pipeline());
            let summary = w.report(&bag);
            ffi::ReportResult {
                status: ok(),
                instances_sent: summary.instances_sent as u64,
            }
        },
        |status| ffi::ReportResult {
            status,
            instances_sent: 0,
        },
    )
}

pub fn run_task(mut task: Box<Task>) -> ffi::Status {
    guard(
        move || {
            if let Some(t) = task.0.take() {
                t();
            }
            ok()
        },
        |s| s,
    )
}

pub fn http_complete(
    mut done: Box<HttpDone>,
    status_code: u16,
    headers: &[ffi::HeaderView<'_>],
    body: &[u8],
) -> ffi::Status {
    guard(
        move || {
            if let Some(d) = done.0.take() {
                d(Ok(http_response(status_code, headers, body)));
            }
            ok()
        },
        |s| s,
    )
}

pub fn http_fail(
    mut done: Box<HttpDone>,
    failure: ffi::CalloutFailure,
    message: &[u8],
) -> ffi::Status {
    guard(
        move || {
            let message = String::from_utf8_lossy(message).into_owned();
            let error = match failure {
                ffi::CalloutFailure::Timeout => CalloutError::Timeout,
                ffi::CalloutFailure::Cancelled => CalloutError::Cancelled,
                _ => CalloutError::Connection(message),
            };
            if let Some(d) = done.0.take() {
                d(Err(error));
            }
            ok()
        },
        |s| s,
    )
}

pub fn debug_panic_for_tests(message: &[u8]) -> ffi::Status {
    let message = String::from_utf8_lossy(message).into_owned();
    guard(move || -> ffi::Status { panic!("{message}") }, |s| s)
}
