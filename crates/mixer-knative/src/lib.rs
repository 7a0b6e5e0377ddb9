//! Knative scale-from-zero for Mixer V2: the `knative` adapter.
//!
//! An idle Knative revision has no pods. When the proxy sees a request for a revision it has not
//! seen recently, this adapter **pokes** the Knative autoscaler at once (a stat with concurrency 1
//! and request count 1, as the Knative activator does), then **reports** the revision's measured
//! concurrency and request count every `reportInterval` while traffic flows. Optionally it
//! **holds** the first requests (the check stays pending) until the revision is ready.
//!
//! ```yaml
//! apiVersion: config.istio.io/v1alpha2
//! kind: handler
//! metadata: {name: knative, namespace: istio-system}
//! spec:
//!   compiledAdapter: knative
//!   params:
//!     autoscalerUrl: ws://autoscaler.knative-serving.svc.cluster.local:8080/
//!     podName: ""              # default: $POD_NAME, else mixer-<hostname>
//!     reportInterval: 1s
//!     idleAfter: 30s           # no request for this long: the next one pokes again
//!     maxRevisions: 10000      # revisions tracked (and stats waiting while disconnected)
//!     reconnectBackoff: {min: 100ms, max: 5s}
//!     hold:
//!       enabled: true
//!       timeout: 4s            # keep below the handler's dispatch timeout (default 5s)
//!       readinessUrl: http://activator.knative-serving:8012/ready/{namespace}/{revision}
//!       probeInterval: 200ms
//!       onTimeout: FAIL        # FAIL: deny with UNAVAILABLE (503); ALLOW: forward anyway
//!       maxHeld: 10000
//! ```
//!
//! Instances: template `knativerevision` (check) and `knativecompletion` (report), fields
//! `namespace`, `revision`, `host`; see [`DEFAULT_INSTANCES_YAML`]. When `namespace` or
//! `revision` is empty the adapter parses `host` as `<revision>.<namespace>.svc.<domain>`. A
//! request that names no revision is allowed and not counted. Concurrency is measured from a
//! request's check to its report (time-weighted over the interval); without a
//! `knativecompletion` instance routed to the handler, a revision with requests in the interval
//! reports concurrency 1.
//!
//! # Threads, timers, memory
//!
//! - Request path (`check`, `report`): a read-locked map lookup (one hash of namespace and
//!   name, borrowed), the PAL's request-path clock (`approximate_monotonic`: one atomic load
//!   on the std host) and relaxed atomics on the revision (one add for a check's in-flight
//!   count and time integral, one compare-and-swap for a completion); no lock of the revision,
//!   no I/O, no allocation for a known revision. The revision's mutex is taken by the report
//!   tick and by requests that are held. Answers are never cacheable (validity 0) so every
//!   request is counted.
//! - Report interval, hold timeouts and readiness probes run on PAL timers and the PAL HTTP
//!   callout (`platform.dispatcher` for reports, the calling worker's dispatcher for holds), so
//!   they run on virtual time in tests and on the host's timer wheel in Envoy.
//! - The websocket lives on one thread from `platform.background` (started on the first stat),
//!   see the `ws` module; it only encodes and writes what the timers produced, and owns the reconnect
//!   backoff (I/O-side waiting, on its own clock).
//! - Bounded: tracked revisions and waiting stats by `maxRevisions`, held requests by
//!   `hold.maxHeld` and `hold.timeout`.
#![forbid(unsafe_code)]

pub mod params;
mod revision;
mod stats;
pub mod testing;
mod ws;

/// Generated types of `proto/knative/stat.proto` (package `metrics`).
#[allow(clippy::all, missing_docs, missing_debug_implementations)]
pub mod proto {
    include!("gen/metrics.rs");
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use mixer_attr::Value;
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, ReportHandler,
    RequestContext,
};
use mixer_core::instance::{CompiledInstance, InstanceView};
use mixer_core::pal::{BackgroundExecutor, Clock, Dispatcher, HttpRequest, MonoTime, TimerId};
use mixer_core::pending::{Poll, pending};
use mixer_core::{AdapterRegistry, Code, Status};
use parking_lot::{Mutex, RwLock};

pub use params::{KnativeParams, OnTimeout};
use revision::{Held, Revision, Revisions, flow};
use stats::Counters;
pub use stats::{HOLD_BUCKETS_MS, HoldHistogram, KnativeStats};
use ws::{ClientConfig, Outbox, Pending};

/// The adapter's name in config.
pub const ADAPTER: &str = "knative";
/// The check template: which revision a request goes to.
pub const REVISION_TEMPLATE: &str = "knativerevision";
/// The report template: the request to that revision completed.
pub const COMPLETION_TEMPLATE: &str = "knativecompletion";

/// Instances with the default expressions (headers set by the Knative route, else the host).
pub const DEFAULT_INSTANCES_YAML: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: knativerevision, namespace: istio-system}
spec:
  compiledTemplate: knativerevision
  params:
    namespace: request.headers["knative-serving-namespace"] | ""
    revision: request.headers["knative-serving-revision"] | ""
    host: request.host | ""
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: knativecompletion, namespace: istio-system}
spec:
  compiledTemplate: knativecompletion
  params:
    namespace: request.headers["knative-serving-namespace"] | ""
    revision: request.headers["knative-serving-revision"] | ""
    host: request.host | ""
"#;

/// Longest namespace or revision name accepted (Kubernetes names are at most 253 bytes).
const MAX_NAME: usize = 253;

/// Adds the `knative` adapter to `registry` and returns it (for [`KnativeAdapter::mark_ready`]
/// and access to the built handlers).
pub fn register(registry: &mut AdapterRegistry) -> Arc<KnativeAdapter> {
    let adapter = Arc::new(KnativeAdapter::default());
    registry.register(adapter.clone());
    adapter
}

/// The `knative` adapter. Remembers the handlers it built (weakly) so a host can push readiness
/// to all of them.
#[derive(Default)]
pub struct KnativeAdapter {
    handlers: Mutex<Vec<Weak<KnativeHandler>>>,
}

impl std::fmt::Debug for KnativeAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnativeAdapter")
            .field("handlers", &self.handlers.lock().len())
            .finish()
    }
}

impl KnativeAdapter {
    /// The live handlers this adapter built.
    pub fn handlers(&self) -> Vec<Arc<KnativeHandler>> {
        let mut hs = self.handlers.lock();
        hs.retain(|w| w.strong_count() > 0);
        hs.iter().filter_map(Weak::upgrade).collect()
    }

    /// The live handler named `name` (`knative.istio-system`), if any.
    pub fn handler(&self, name: &str) -> Option<Arc<KnativeHandler>> {
        self.handlers().into_iter().find(|h| h.name == name)
    }

    /// Readiness pushed by the host (e.g. from a Kubernetes endpoints watch): releases the
    /// requests every handler holds for `namespace`/`revision`. Returns how many were released.
    pub fn mark_ready(&self, namespace: &str, revision: &str) -> usize {
        self.handlers()
            .iter()
            .map(|h| h.mark_ready(namespace, revision))
            .sum()
    }
}

impl Adapter for KnativeAdapter {
    fn name(&self) -> &'static str {
        ADAPTER
    }
    fn templates(&self) -> &'static [&'static str] {
        &[REVISION_TEMPLATE, COMPLETION_TEMPLATE]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let params = KnativeParams::parse(config.params)?;
        let h = KnativeHandler::new(config.name, params, config.platform, config.instances);
        let mut hs = self.handlers.lock();
        hs.retain(|w| w.strong_count() > 0);
        hs.push(Arc::downgrade(&h));
        Ok(h)
    }
}

/// A configured `knative` handler.
pub struct KnativeHandler {
    name: String,
    params: KnativeParams,
    clock: Arc<dyn Clock>,
    main: Arc<dyn Dispatcher>,
    background: Arc<dyn BackgroundExecutor>,
    created: MonoTime,
    track_completions: bool,
    revisions: RwLock<Revisions>,
    outbox: Arc<Outbox>,
    counters: Arc<Counters>,
    /// The websocket thread's wake-up channel, once started.
    wake: Mutex<Option<SyncSender<()>>>,
    tick_timer: Mutex<Option<TimerId>>,
    held_now: AtomicU64,
    /// This handler, weakly (for timers and probes it arms).
    me: Weak<KnativeHandler>,
    /// Field positions of the instances routed here, resolved at build (the `Arc`s keep the
    /// instances alive, so a pointer match is never a reused address).
    positions: Vec<(Arc<CompiledInstance>, Positions)>,
}

/// Positions of `namespace`, `revision`, `host` in an instance's fields, and whether it is a
/// completion (report) instance.
#[derive(Clone, Copy, Debug)]
struct Positions {
    fields: [Option<usize>; 3],
    completion: bool,
}

impl Positions {
    fn of(instance: &CompiledInstance) -> Positions {
        Positions {
            fields: [
                instance.position("namespace"),
                instance.position("revision"),
                instance.position("host"),
            ],
            completion: instance.template.name == COMPLETION_TEMPLATE,
        }
    }
}

impl std::fmt::Debug for KnativeHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnativeHandler")
            .field("name", &self.name)
            .field("autoscaler", &self.params.autoscaler_url)
            .finish_non_exhaustive()
    }
}

fn allow() -> CheckResult {
    // Never cacheable: every request must reach the adapter to be counted.
    CheckResult::allow(mixer_attr::Duration::ZERO, 0)
}

fn name_of<'a>(v: Option<&'a Value<'a>>) -> &'a str {
    v.and_then(Value::as_str).unwrap_or("")
}

fn valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME
}

/// `<revision>.<namespace>.svc.<domain>[:port]` -> `(namespace, revision)`. One pass over the
/// bytes up to the third label (this runs per request when the route sets no headers).
pub fn revision_from_host(host: &str) -> Option<(&str, &str)> {
    let dot = |from: usize| {
        let rest = host.as_bytes().get(from..)?;
        rest.iter().position(|b| *b == b'.').map(|i| from + i)
    };
    let first = dot(0)?;
    let second = dot(first + 1)?;
    let revision = host.get(..first)?;
    let namespace = host.get(first + 1..second)?;
    let after = host.get(second + 1..)?.strip_prefix("svc")?;
    // Then the domain, a port, or nothing.
    let svc = match after.as_bytes() {
        [] | [b'.', ..] => true,
        [b':', port @ ..] => !port.is_empty() && port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    (svc && valid(namespace) && valid(revision)).then_some((namespace, revision))
}

/// The revision an instance names: its `namespace` and `revision` fields, else its `host`.
fn identity<'a>(view: &InstanceView<'a>, positions: Positions) -> Option<(&'a str, &'a str)> {
    let [ns, rev, host] = positions.fields;
    let field = |p: Option<usize>| name_of(p.and_then(|p| view.at(p)));
    let namespace = field(ns);
    let revision = field(rev);
    if valid(namespace) && valid(revision) {
        return Some((namespace, revision));
    }
    revision_from_host(field(host))
}

impl KnativeHandler {
    fn new(
        name: &str,
        params: KnativeParams,
        platform: &mixer_core::pal::Platform,
        instances: &[Arc<CompiledInstance>],
    ) -> Arc<KnativeHandler> {
        let track_completions = instances
            .iter()
            .any(|i| i.template.name == COMPLETION_TEMPLATE);
        let positions = instances
            .iter()
            .map(|i| (i.clone(), Positions::of(i)))
            .collect();
        let counters = Arc::new(Counters::default());
        let h = Arc::new_cyclic(|me| KnativeHandler {
            name: name.to_string(),
            outbox: Arc::new(Outbox::new(params.max_revisions, counters.clone())),
            params,
            clock: platform.clock.clone(),
            main: platform.dispatcher.clone(),
            background: platform.background.clone(),
            created: platform.clock.monotonic(),
            track_completions,
            revisions: RwLock::new(Revisions::default()),
            counters,
            wake: Mutex::new(None),
            tick_timer: Mutex::new(None),
            held_now: AtomicU64::new(0),
            me: me.clone(),
            positions,
        });
        schedule_tick(Arc::downgrade(&h), &h.main, h.params.report_interval);
        h
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The validated params.
    pub fn params(&self) -> &KnativeParams {
        &self.params
    }

    /// A copy of the handler's telemetry.
    pub fn stats(&self) -> KnativeStats {
        let mut s = self.counters.snapshot();
        s.held_now = self.held_now.load(Ordering::Relaxed);
        s
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        usize::try_from(self.held_now.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// The positions resolved at build for `instance` (computed now for one not routed here).
    fn positions(&self, instance: &CompiledInstance) -> Positions {
        self.positions
            .iter()
            .find(|(i, _)| std::ptr::eq(Arc::as_ptr(i), instance))
            .map_or_else(|| Positions::of(instance), |(_, p)| *p)
    }

    fn uptime(&self, now: MonoTime) -> f64 {
        now.since(self.created).as_secs_f64()
    }

    /// Microseconds since the handler started (the time base of the in-flight integral).
    fn micros(&self, now: MonoTime) -> u64 {
        now.0.saturating_sub(self.created.0) / 1_000
    }

    /// Wakes the websocket thread, starting it on first use.
    fn wake(&self) {
        let mut w = self.wake.lock();
        if w.is_none() {
            let (tx, rx) = sync_channel(1);
            let config = ClientConfig {
                url: self.params.autoscaler_url.clone(),
                authority: self.params.autoscaler_authority.clone(),
                pod_name: self.params.pod_name.clone(),
                min_backoff: self.params.min_backoff,
                max_backoff: self.params.max_backoff,
                connect_timeout: Duration::from_secs(2),
            };
            let (outbox, counters) = (self.outbox.clone(), self.counters.clone());
            self.background.spawn(
                "mixer-knative-ws",
                Box::new(move || ws::run(config, outbox, rx, counters)),
            );
            *w = Some(tx);
        }
        if let Some(tx) = &*w {
            // Full: a wake-up is pending already. Disconnected: the executor dropped the task
            // (stats then stay merged in the outbox, bounded).
            let _ = tx.try_send(());
        }
    }

    fn timeout_result(&self, r: &Revision, why: &str) -> CheckResult {
        match self.params.hold.on_timeout {
            OnTimeout::Allow => allow(),
            OnTimeout::Fail => CheckResult::deny(
                Status::new(
                    Code::UNAVAILABLE,
                    format!("knative revision {}/{} {why}", r.namespace, r.name),
                ),
                mixer_attr::Duration::ZERO,
                0,
            ),
        }
    }

    /// The revision `namespace`/`name`, created if new (None: `maxRevisions` reached).
    fn revision(&self, namespace: &str, name: &str, now: MonoTime) -> Option<Arc<Revision>> {
        if let Some(r) = self.revisions.read().get(namespace, name) {
            return Some(r.clone());
        }
        let mut map = self.revisions.write();
        if let Some(r) = map.get(namespace, name) {
            return Some(r.clone());
        }
        if map.len() >= self.params.max_revisions {
            stats::inc(&self.counters.revisions_untracked);
            return None;
        }
        let r = Arc::new(Revision::new(namespace, name, now, self.micros(now)));
        map.insert(r.clone());
        stats::set(&self.counters.revisions, map.len() as u64);
        Some(r)
    }

    /// A check for revision `r` at `now`. The warm path (poked already, not holding) is a few
    /// relaxed atomic operations on `r`; its mutex is taken only to hold the request.
    #[inline]
    fn on_check(
        &self,
        r: &Arc<Revision>,
        now: MonoTime,
        dispatcher: &Arc<dyn Dispatcher>,
    ) -> Poll<CheckResult> {
        r.checked(now, self.micros(now), self.track_completions);
        if !r.active.load(Ordering::Relaxed) {
            self.poke(r, now);
        }
        if self.params.hold.enabled && !r.ready.load(Ordering::Acquire) {
            return self.hold(r, now, dispatcher);
        }
        Poll::Ready(allow())
    }

    /// The first request for an idle revision: tells the autoscaler at once.
    #[cold]
    fn poke(&self, r: &Arc<Revision>, now: MonoTime) {
        if r.active.swap(true, Ordering::AcqRel) {
            return;
        }
        stats::inc(&self.counters.pokes);
        let p = Pending {
            concurrency: 1.0,
            requests: 1.0,
            uptime: self.uptime(now),
            poke: true,
        };
        self.outbox.push(&r.namespace, &r.name, p);
        self.wake();
    }

    /// Holds a request for a revision that is not ready (or rejects it when too many are held).
    #[cold]
    fn hold(
        &self,
        r: &Arc<Revision>,
        now: MonoTime,
        dispatcher: &Arc<dyn Dispatcher>,
    ) -> Poll<CheckResult> {
        let hold = &self.params.hold;
        let mut s = r.state.lock();
        if r.ready.load(Ordering::Acquire) {
            return Poll::Ready(allow());
        }
        if self.held_now.load(Ordering::Relaxed) >= hold.max_held as u64 {
            drop(s);
            stats::inc(&self.counters.requests_rejected);
            return Poll::Ready(self.timeout_result(
                r,
                &format!(
                    "is not ready and {} requests are held already",
                    hold.max_held
                ),
            ));
        }
        let (done, result) = pending();
        s.held.push_back(Held { since: now, done });
        self.held_now.fetch_add(1, Ordering::Relaxed);
        stats::inc(&self.counters.requests_held);
        let start_sweep = !std::mem::replace(&mut s.sweep_scheduled, true);
        let start_probe = hold.readiness.is_some() && !std::mem::replace(&mut s.probing, true);
        drop(s);
        if start_sweep {
            let (h, rev, d) = (self.me.clone(), Arc::downgrade(r), dispatcher.clone());
            dispatcher.schedule(hold.timeout, Box::new(move || sweep(h, rev, d)));
        }
        if start_probe {
            probe(self.me.clone(), Arc::downgrade(r), dispatcher.clone());
        }
        Poll::Pending(result)
    }

    fn set_ready(&self, r: &Revision, now: MonoTime) -> usize {
        let released: Vec<Held> = {
            let mut s = r.state.lock();
            r.ready.store(true, Ordering::Release);
            s.probing = false;
            s.held.drain(..).collect()
        };
        let n = released.len();
        self.held_now.fetch_sub(n as u64, Ordering::Relaxed);
        stats::add(&self.counters.requests_released, n as u64);
        for h in released {
            self.counters.observe_hold(now.since(h.since));
            h.done.complete(allow());
        }
        n
    }

    /// Readiness pushed by the host: releases the requests held for `namespace`/`revision` (and
    /// lets later requests through without holding until the revision goes idle). Returns how
    /// many were released.
    pub fn mark_ready(&self, namespace: &str, revision: &str) -> usize {
        if !valid(namespace) || !valid(revision) {
            return 0;
        }
        let now = self.clock.monotonic();
        match self.revision(namespace, revision, now) {
            Some(r) => self.set_ready(&r, now),
            None => 0,
        }
    }

    /// One report interval: a stat per revision with traffic, idle revisions forgotten.
    fn report_interval(&self, now: MonoTime) {
        let idle_after = self.params.idle_after;
        let uptime = self.uptime(now);
        let t = self.micros(now);
        let mut queued = false;
        let mut idle = Vec::new();
        {
            let map = self.revisions.read();
            for r in map.iter() {
                let mut s = r.state.lock();
                let word = r.flow();
                let inflight = flow::inflight(word);
                let area_now = flow::area_at(word, t);
                let area = flow::area_between(area_now, s.area_start);
                let requests = r.take_requests();
                if requests > 0 || inflight > 0 {
                    let window = t.saturating_sub(s.window_start) as f64;
                    let concurrency = if !self.track_completions {
                        1.0
                    } else if window > 0.0 {
                        area / window
                    } else {
                        inflight as f64
                    };
                    let p = Pending {
                        concurrency,
                        requests: requests as f64,
                        uptime,
                        poke: false,
                    };
                    self.outbox.push(&r.namespace, &r.name, p);
                    stats::inc(&self.counters.reports);
                    queued = true;
                }
                s.area_start = area_now;
                s.window_start = t;
                let quiet = now.since(r.last_seen()) >= idle_after && s.held.is_empty();
                if quiet || inflight < 0 {
                    // Completions that never came (a report rule missing for some requests)
                    // must not keep a quiet revision "busy" forever; the integral is kept.
                    r.forget_inflight(inflight, t);
                }
                if quiet {
                    idle.push(r.clone());
                }
            }
        }
        if !idle.is_empty() {
            let mut map = self.revisions.write();
            for r in idle {
                let still_idle =
                    now.since(r.last_seen()) >= idle_after && r.state.lock().held.is_empty();
                if still_idle {
                    map.remove(&r);
                }
            }
            stats::set(&self.counters.revisions, map.len() as u64);
        }
        if queued {
            self.wake();
        }
    }
}

impl Drop for KnativeHandler {
    fn drop(&mut self) {
        if let Some(id) = self.tick_timer.lock().take() {
            self.main.cancel_timer(id);
        }
    }
}

fn schedule_tick(h: Weak<KnativeHandler>, dispatcher: &Arc<dyn Dispatcher>, every: Duration) {
    let Some(me) = h.upgrade() else { return };
    let d = dispatcher.clone();
    let id = dispatcher.schedule(
        every,
        Box::new(move || {
            let Some(me) = h.upgrade() else { return };
            me.report_interval(d.clock().monotonic());
            schedule_tick(h, &d, every);
        }),
    );
    *me.tick_timer.lock() = Some(id);
}

/// Answers the held requests of `rev` whose `hold.timeout` passed; re-arms for the next one.
fn sweep(h: Weak<KnativeHandler>, rev: Weak<Revision>, dispatcher: Arc<dyn Dispatcher>) {
    let (Some(me), Some(r)) = (h.upgrade(), rev.upgrade()) else {
        return;
    };
    let now = dispatcher.clock().monotonic();
    let timeout = me.params.hold.timeout;
    let mut expired = Vec::new();
    let next = {
        let mut s = r.state.lock();
        while s
            .held
            .front()
            .is_some_and(|f| now.since(f.since) >= timeout)
        {
            expired.extend(s.held.pop_front());
        }
        let next = s
            .held
            .front()
            .map(|f| timeout.saturating_sub(now.since(f.since)));
        if next.is_none() {
            s.sweep_scheduled = false;
        }
        next
    };
    me.held_now
        .fetch_sub(expired.len() as u64, Ordering::Relaxed);
    stats::add(&me.counters.requests_timed_out, expired.len() as u64);
    if !expired.is_empty() {
        let result = me.timeout_result(&r, &format!("did not become ready within {timeout:?}"));
        for e in expired {
            e.done.complete(result.clone());
        }
    }
    if let Some(delay) = next {
        let d = dispatcher.clone();
        dispatcher.schedule(delay, Box::new(move || sweep(h, rev, d)));
    }
}

/// Asks the readiness URL whether `rev` is ready, again every `probeInterval` while requests
/// are held and it is not.
fn probe(h: Weak<KnativeHandler>, rev: Weak<Revision>, dispatcher: Arc<dyn Dispatcher>) {
    let (Some(me), Some(r)) = (h.upgrade(), rev.upgrade()) else {
        return;
    };
    {
        let mut s = r.state.lock();
        if r.ready.load(Ordering::Acquire) || s.held.is_empty() {
            s.probing = false;
            return;
        }
    }
    let Some(url) = &me.params.hold.readiness else {
        return;
    };
    let request = HttpRequest {
        authority: url.authority.clone(),
        method: "GET".into(),
        path: url
            .path
            .replace("{namespace}", &r.namespace)
            .replace("{revision}", &r.name),
        headers: vec![
            ("knative-serving-namespace".into(), r.namespace.to_string()),
            ("knative-serving-revision".into(), r.name.to_string()),
        ],
        body: Bytes::new(),
        timeout: me.params.hold.timeout.min(Duration::from_secs(1)),
    };
    stats::inc(&me.counters.probes);
    let interval = me.params.hold.probe_interval;
    drop((me, r));
    let d = dispatcher.clone();
    let _ = dispatcher.http(
        request,
        Box::new(move |result| {
            let (Some(me), Some(r)) = (h.upgrade(), rev.upgrade()) else {
                return;
            };
            match result {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    me.set_ready(&r, d.clock().monotonic());
                }
                _ => {
                    drop((me, r));
                    let d2 = d.clone();
                    d.schedule(interval, Box::new(move || probe(h, rev, d2)));
                }
            }
        }),
    );
}

impl Handler for KnativeHandler {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl CheckHandler for KnativeHandler {
    fn check(&self, view: &InstanceView<'_>, ctx: &RequestContext<'_>) -> Poll<CheckResult> {
        let Some((namespace, revision)) = identity(view, self.positions(view.instance)) else {
            return Poll::Ready(allow());
        };
        // The request path's clock: one atomic load on hosts with a coarse clock.
        let now = ctx.dispatcher.clock().approximate_monotonic();
        {
            let map = self.revisions.read();
            if let Some(r) = map.get(namespace, revision) {
                return self.on_check(r, now, ctx.dispatcher);
            }
        }
        match self.revision(namespace, revision, now) {
            Some(r) => self.on_check(&r, now, ctx.dispatcher),
            None => Poll::Ready(allow()),
        }
    }
}

impl ReportHandler for KnativeHandler {
    fn report(&self, instances: &[InstanceView<'_>]) {
        if !self.track_completions {
            return;
        }
        let now = self.clock.approximate_monotonic();
        let t = self.micros(now);
        let map = self.revisions.read();
        for view in instances {
            let positions = self.positions(view.instance);
            if !positions.completion {
                continue;
            }
            if let Some(r) = identity(view, positions).and_then(|(ns, rev)| map.get(ns, rev)) {
                r.completed(now, t);
            }
        }
    }
}
