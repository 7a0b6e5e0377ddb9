//! Report dispatch controls: per-handler sampling, buffering and aggregation between the
//! transform and a report handler, with every instance that is not delivered accounted for.
//!
//! Each handler of a [`Snapshot`](crate::Snapshot) owns one [`ReportDispatch`], compiled from the
//! handler's `DispatchControls` (`sampling`, `buffering`). [`Worker::report`](crate::Worker::report)
//! asks it whether an action is sampled (before any instance is built), then hands it the built
//! instances.
//!
//! # Sampling
//!
//! - `percentage` (0-100): each report is sent with that probability, decided by a seeded
//!   splitmix64 generator per handler ([`CompileOptions::report_seed`](crate::CompileOptions)):
//!   the same seed and the same sequence of reports give the same decisions. Without a rate
//!   limit, 0 means "not configured" (everything is sent: proto3 cannot tell 0 from unset, and a
//!   handler that receives nothing is better expressed by removing its rule).
//! - `rate_limit {max_unsampled_entries, window}`: Mixer's `RateLimitSampling`: within each
//!   window (fixed, on the PAL's monotonic clock) the first `max_unsampled_entries` reports are
//!   sent *unsampled*; beyond that, sampling is enforced: the `percentage` decides (and with
//!   `percentage` 0 nothing more is sent in that window: a plain cap). Mixer's third knob,
//!   `sampling_rate` (1 in N once over the limit), is expressed as `percentage = 100 / N`.
//!
//! Reports not sent are counted in [`DispatchStats::sampled_out`] (per instance).
//!
//! # Buffering
//!
//! With `buffering` configured, instances are copied into owned values and queued per handler.
//! A batch is handed to the handler (one `report` call) when it holds `max_batch_entries`
//! (default 100) or `max_delay` (default 1 s) after its first entry, whichever comes first. Both
//! deliveries run on the platform's main dispatcher (a `post` for full batches, a timer for the
//! delay): the request path only copies and queues. At most `max_queue_entries` (default 10 x the
//! batch) entries wait, counting the batch being filled and full batches not yet delivered;
//! beyond that, instances are dropped, counted in [`DispatchStats::dropped`], and logged through
//! the [`DispatchLog`] sink (one line when dropping starts, then one summary per delivered batch
//! while it goes on): never silently.
//!
//! # Aggregation
//!
//! A handler whose [`ReportHandler::aggregation`] names a summable field for an instance (a
//! counter's increment) gets buffered instances merged: an instance whose other fields all equal
//! those of one already in the batch adds its value to it instead of taking a slot. Counted in
//! [`DispatchStats::aggregated`].
//!
//! # Swap and shutdown
//!
//! [`Pipeline::swap`](crate::Pipeline::swap) closes every buffer of the old snapshot and delivers
//! what it holds to the old snapshot's handlers; a report that started on the old snapshot and
//! reaches a closed buffer is delivered inline to the same (old) handler, so nothing is lost
//! and nothing is delivered twice. Handlers the new snapshot does not keep are *retired*: after a
//! late inline delivery they are flushed again. [`Pipeline::flush`](crate::Pipeline::flush)
//! delivers every buffer of the live snapshot (shutdown).
//!
//! Without sampling or buffering configured the report is a direct inline call, as before.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mixer_attr::Value;
use mixer_proto::v2;
use parking_lot::Mutex;

use crate::adapter::{Handler, ReportHandler};
use crate::instance::{CompiledInstance, InstanceView};
use crate::pal::{Clock, Dispatcher, Platform, TimerId};

/// Where the dispatch layer writes its log lines (drops under pressure).
pub trait DispatchLog: Send + Sync {
    /// One complete line, without a newline.
    fn log(&self, line: &str);
}

/// Writes log lines to standard error.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrLog;

impl DispatchLog for StderrLog {
    fn log(&self, line: &str) {
        eprintln!("mixer dispatch: {line}");
    }
}

/// Keeps log lines in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryLog {
    lines: Mutex<Vec<String>>,
}

impl MemoryLog {
    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

impl DispatchLog for MemoryLog {
    fn log(&self, line: &str) {
        self.lines.lock().push(line.to_string());
    }
}

/// A shared [`DispatchLog`] (standard error by default).
#[derive(Clone)]
pub struct LogSink(pub Arc<dyn DispatchLog>);

impl Default for LogSink {
    fn default() -> Self {
        LogSink(Arc::new(StderrLog))
    }
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogSink")
    }
}

/// Counters of one handler's report dispatch (all per instance).
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Instances handed to the handler's `report`.
    pub delivered: AtomicU64,
    /// Instances not sent because sampling left their report out.
    pub sampled_out: AtomicU64,
    /// Instances accepted into the buffer (merged ones included).
    pub buffered: AtomicU64,
    /// Buffered instances merged into an equal one (their value added to it).
    pub aggregated: AtomicU64,
    /// Instances dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Batches delivered from the buffer.
    pub batches: AtomicU64,
}

impl DispatchStats {
    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// A counter's value.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Dispatch controls that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DispatchError {
    /// The field under `dispatch` (`buffering.maxQueueEntries`).
    pub field: String,
    pub message: String,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Window {
    max: u64,
    length_ns: u64,
    /// (window start, reports seen in it)
    state: Mutex<(u64, u64)>,
}

struct Sampler {
    /// 0-100.
    percentage: f64,
    rng: AtomicU64,
    window: Option<Window>,
    clock: Arc<dyn Clock>,
}

impl Sampler {
    fn random_pass(&self) -> bool {
        if self.percentage >= 100.0 {
            return true;
        }
        if self.percentage <= 0.0 {
            return false;
        }
        let r = splitmix(
            self.rng
                .fetch_add(GAMMA, Ordering::Relaxed)
                .wrapping_add(GAMMA),
        );
        // 53 random bits as a fraction of 1, scaled to a percentage.
        ((r >> 11) as f64) * (100.0 / (1u64 << 53) as f64) < self.percentage
    }

    fn pass(&self) -> bool {
        if let Some(w) = &self.window {
            let now = self.clock.monotonic().0;
            let mut s = w.state.lock();
            if s.1 == 0 || now.saturating_sub(s.0) >= w.length_ns {
                *s = (now, 0);
            }
            s.1 += 1;
            if s.1 <= w.max {
                return true;
            }
        }
        self.random_pass()
    }
}

/// One buffered instance, owned.
struct Entry {
    instance: Arc<CompiledInstance>,
    values: Vec<Value<'static>>,
}

#[derive(Default)]
struct Queue {
    /// The batch being filled.
    current: Vec<Entry>,
    /// Aggregation index of `current`: hash of an entry's non-summed fields -> positions.
    index: HashMap<u64, Vec<usize>>,
    /// Full batches waiting for delivery.
    ready: VecDeque<Vec<Entry>>,
    /// Entries in `current` and `ready`.
    queued: usize,
    timer: Option<TimerId>,
    drain_posted: bool,
    closed: bool,
    /// Drops not yet reported in a log line.
    unlogged_drops: u64,
    /// Whether the current run of drops has been announced.
    dropping: bool,
}

struct Buffer {
    max_batch: usize,
    max_delay: Duration,
    max_queue: usize,
    queue: Mutex<Queue>,
}

/// One handler's report dispatch: sampling, buffer, counters. Built at config compile time.
pub struct ReportDispatch {
    name: Arc<str>,
    handler: Arc<dyn Handler>,
    sampler: Option<Sampler>,
    buffer: Option<Buffer>,
    /// Aggregation positions the handler gave at build time: (instance identity, field).
    aggregation: Vec<(usize, usize)>,
    /// The instances the handler was built with (buffered entries hold them).
    instances: Vec<Arc<CompiledInstance>>,
    stats: DispatchStats,
    retired: AtomicBool,
    dispatcher: Arc<dyn Dispatcher>,
    log: LogSink,
    me: Weak<ReportDispatch>,
}

impl fmt::Debug for ReportDispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportDispatch")
            .field("handler", &self.name)
            .field("sampling", &self.sampler.is_some())
            .field(
                "buffering",
                &self
                    .buffer
                    .as_ref()
                    .map(|b| (b.max_batch, b.max_delay, b.max_queue)),
            )
            .finish_non_exhaustive()
    }
}

fn hash_value(v: &Value<'_>, h: &mut impl Hasher) {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => s.hash(h),
        Value::Int64(i) => i.hash(h),
        Value::Double(d) => d.to_bits().hash(h),
        Value::Bool(b) => b.hash(h),
        Value::Timestamp(t) => t.unix_nanos().hash(h),
        Value::IpAddress(ip) => ip.hash(h),
        Value::Duration(d) => d.as_nanos().hash(h),
        // Equal maps hash alike (only the type is hashed); equality decides.
        Value::StringMap(_) => {}
    }
}

/// Hash of an instance's identity and every field but `skip`.
fn key_hash(instance: usize, values: &[Value<'_>], skip: usize) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x006d_6978_6572).build_hasher();
    instance.hash(&mut h);
    for (i, v) in values.iter().enumerate() {
        if i != skip {
            hash_value(v, &mut h);
        }
    }
    h.finish()
}

/// Adds `add` to `into` when both are numbers of the same type (and the sum does not overflow).
fn sum_into(into: &mut Value<'static>, add: &Value<'_>) -> bool {
    match (into, add) {
        (Value::Int64(a), Value::Int64(b)) => match a.checked_add(*b) {
            Some(s) => {
                *a = s;
                true
            }
            None => false,
        },
        (Value::Double(a), Value::Double(b)) => {
            *a += *b;
            true
        }
        _ => false,
    }
}

fn identity(instance: &CompiledInstance) -> usize {
    std::ptr::from_ref(instance) as usize
}

/// A name's hash, to give every handler its own random sequence from one seed.
fn name_seed(name: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(name)
}

/// What [`ReportDispatch::new`] is built from.
#[derive(Clone, Copy, Debug)]
pub struct DispatchSettings<'a> {
    /// Seed of the sampling generators ([`CompileOptions::report_seed`](crate::CompileOptions)).
    pub seed: u64,
    pub log: &'a LogSink,
}

impl ReportDispatch {
    /// The dispatch of handler `name` (built from `instances`) under `controls`.
    pub fn new(
        name: Arc<str>,
        handler: Arc<dyn Handler>,
        instances: &[Arc<CompiledInstance>],
        controls: &v2::DispatchControls,
        platform: &Platform,
        settings: DispatchSettings<'_>,
    ) -> Result<Arc<ReportDispatch>, DispatchError> {
        let err = |field: &str, message: String| DispatchError {
            field: field.to_string(),
            message,
        };
        let mut sampler = None;
        if let Some(s) = &controls.sampling {
            let pct = s.percentage;
            if !(0.0..=100.0).contains(&pct) {
                return Err(err(
                    "sampling.percentage",
                    format!("{pct} is not a percentage between 0 and 100"),
                ));
            }
            let window = match &s.rate_limit {
                None => None,
                Some(rl) => {
                    let length = rl
                        .window
                        .and_then(|d| Duration::try_from(d).ok())
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            err(
                                "sampling.rateLimit.window",
                                "a rate limit needs a positive window".into(),
                            )
                        })?;
                    Some(Window {
                        max: u64::from(rl.max_unsampled_entries),
                        length_ns: u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
                        state: Mutex::new((0, 0)),
                    })
                }
            };
            let needed = window.is_some() || (pct > 0.0 && pct < 100.0);
            if needed {
                sampler = Some(Sampler {
                    percentage: pct,
                    rng: AtomicU64::new(splitmix(settings.seed ^ name_seed(&name))),
                    window,
                    clock: platform.clock.clone(),
                });
            }
        }
        let mut buffer = None;
        if let Some(b) = controls
            .buffering
            .as_ref()
            .filter(|b| **b != v2::Buffering::default())
        {
            let max_batch = if b.max_batch_entries == 0 {
                100
            } else {
                b.max_batch_entries as usize
            };
            let max_delay = b
                .max_delay
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(1));
            let max_queue = if b.max_queue_entries == 0 {
                max_batch.saturating_mul(10)
            } else {
                b.max_queue_entries as usize
            };
            if max_queue < max_batch {
                return Err(err(
                    "buffering.maxQueueEntries",
                    format!(
                        "{max_queue} is less than maxBatchEntries ({max_batch}): no batch could fill"
                    ),
                ));
            }
            buffer = Some(Buffer {
                max_batch,
                max_delay,
                max_queue,
                queue: Mutex::new(Queue::default()),
            });
        }
        let mut aggregation = Vec::new();
        if buffer.is_some()
            && let Some(r) = handler.as_report()
        {
            for i in instances {
                if let Some(pos) = r.aggregation(i).filter(|p| *p < i.fields.len()) {
                    aggregation.push((identity(i), pos));
                }
            }
        }
        Ok(Arc::new_cyclic(|me| ReportDispatch {
            name,
            handler,
            sampler,
            buffer,
            aggregation,
            instances: instances.to_vec(),
            stats: DispatchStats::default(),
            retired: AtomicBool::new(false),
            dispatcher: platform.dispatcher.clone(),
            log: settings.log.clone(),
            me: me.clone(),
        }))
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counters.
    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// The log sink of drop notices.
    pub(crate) fn log(&self) -> &LogSink {
        &self.log
    }

    /// True when reports go straight to the handler (no buffering).
    pub fn is_inline(&self) -> bool {
        self.buffer.is_none()
    }

    /// Entries waiting in the buffer (the batch being filled and undelivered batches).
    pub fn queued(&self) -> usize {
        self.buffer.as_ref().map_or(0, |b| b.queue.lock().queued)
    }

    /// Whether the next report of `instances` instances is sent (counts it when not).
    #[inline]
    pub(crate) fn sample(&self, instances: usize) -> bool {
        match &self.sampler {
            None => true,
            Some(s) => {
                let pass = s.pass();
                if !pass {
                    DispatchStats::add(&self.stats.sampled_out, instances);
                }
                pass
            }
        }
    }

    /// Sends (or queues) the instances of one action.
    #[inline]
    pub(crate) fn dispatch(&self, handler: &dyn ReportHandler, views: &[InstanceView<'_>]) {
        match &self.buffer {
            None => self.inline(handler, views),
            Some(b) => self.push(b, handler, views),
        }
    }

    fn inline(&self, handler: &dyn ReportHandler, views: &[InstanceView<'_>]) {
        handler.report(views);
        DispatchStats::add(&self.stats.delivered, views.len());
        // A report that started before its handler was retired by a swap: the swap's flush may
        // have run already, so flush what this report left in the handler.
        if self.retired.load(Ordering::SeqCst) {
            self.handler.flush();
        }
    }

    fn aggregation_of(&self, instance: &CompiledInstance) -> Option<usize> {
        if self.aggregation.is_empty() {
            return None;
        }
        let id = identity(instance);
        self.aggregation
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| *p)
    }

    fn push(&self, buf: &Buffer, handler: &dyn ReportHandler, views: &[InstanceView<'_>]) {
        let mut guard = buf.queue.lock();
        if guard.closed {
            drop(guard);
            self.inline(handler, views);
            return;
        }
        let q = &mut *guard;
        let (mut dropped, mut merged, mut accepted) = (0u64, 0usize, 0usize);
        'views: for v in views {
            let agg = self
                .aggregation_of(v.instance)
                .map(|pos| (pos, key_hash(identity(v.instance), v.values, pos)));
            if let Some((pos, h)) = agg
                && let Some(list) = q.index.get(&h)
            {
                for &i in list {
                    let Some(e) = q.current.get_mut(i) else {
                        continue;
                    };
                    let same = std::ptr::eq(Arc::as_ptr(&e.instance), v.instance)
                        && e.values.len() == v.values.len()
                        && e.values
                            .iter()
                            .zip(v.values)
                            .enumerate()
                            .all(|(j, (a, b))| j == pos || a == b);
                    if same && sum_into(&mut e.values[pos], &v.values[pos]) {
                        merged += 1;
                        continue 'views;
                    }
                }
            }
            if q.queued >= buf.max_queue {
                dropped += 1;
                continue;
            }
            let Some(instance) = self.instance_arc(v.instance) else {
                dropped += 1;
                continue;
            };
            if let Some((_, h)) = agg {
                q.index.entry(h).or_default().push(q.current.len());
            }
            q.current.push(Entry {
                instance,
                values: v.values.iter().map(|x| x.clone().into_owned()).collect(),
            });
            q.queued += 1;
            accepted += 1;
        }
        DispatchStats::add(&self.stats.buffered, accepted + merged);
        DispatchStats::add(&self.stats.aggregated, merged);
        let mut post = false;
        if q.current.len() >= buf.max_batch {
            let batch = std::mem::take(&mut q.current);
            q.index.clear();
            q.ready.push_back(batch);
            if !q.drain_posted {
                q.drain_posted = true;
                post = true;
            }
        } else if !q.current.is_empty() && q.timer.is_none() {
            let me = self.me.clone();
            q.timer = Some(self.dispatcher.schedule(
                buf.max_delay,
                Box::new(move || {
                    if let Some(d) = me.upgrade() {
                        d.on_timer();
                    }
                }),
            ));
        }
        let mut announce = None;
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            q.unlogged_drops += dropped;
            if !q.dropping {
                q.dropping = true;
                announce = Some(q.queued);
            }
        }
        drop(guard);
        if let Some(queued) = announce {
            self.log.0.log(&format!(
                "handler {}: report queue full ({queued} entries, maxQueueEntries {}): dropping instances until it drains",
                self.name, buf.max_queue
            ));
        }
        if post {
            let me = self.me.clone();
            self.dispatcher.post(Box::new(move || {
                if let Some(d) = me.upgrade() {
                    d.drain();
                }
            }));
        }
    }

    /// The shared instance behind a view (instances of a snapshot are `Arc`s; the handler was
    /// built with them). `None` for an instance foreign to this handler.
    fn instance_arc(&self, instance: &CompiledInstance) -> Option<Arc<CompiledInstance>> {
        self.instances
            .iter()
            .find(|i| std::ptr::eq(Arc::as_ptr(i), instance))
            .cloned()
    }

    fn on_timer(&self) {
        if let Some(buf) = &self.buffer {
            let mut q = buf.queue.lock();
            q.timer = None;
            if !q.current.is_empty() {
                let batch = std::mem::take(&mut q.current);
                q.index.clear();
                q.ready.push_back(batch);
            }
        }
        self.drain();
    }

    /// Delivers the full batches (on the platform's main dispatcher).
    fn drain(&self) {
        let Some(buf) = &self.buffer else { return };
        loop {
            let batch = {
                let mut q = buf.queue.lock();
                match q.ready.pop_front() {
                    Some(b) => {
                        q.queued = q.queued.saturating_sub(b.len());
                        b
                    }
                    None => {
                        q.drain_posted = false;
                        break;
                    }
                }
            };
            self.deliver(batch);
        }
        self.log_drops(buf);
    }

    fn deliver(&self, batch: Vec<Entry>) {
        if batch.is_empty() {
            return;
        }
        let Some(handler) = self.handler.as_report() else {
            return;
        };
        let views: Vec<InstanceView<'_>> = batch
            .iter()
            .map(|e| InstanceView {
                instance: &e.instance,
                values: &e.values,
            })
            .collect();
        handler.report(&views);
        DispatchStats::add(&self.stats.delivered, views.len());
        DispatchStats::add(&self.stats.batches, 1);
    }

    fn log_drops(&self, buf: &Buffer) {
        let n = {
            let mut q = buf.queue.lock();
            if q.queued < buf.max_queue {
                q.dropping = false;
            }
            std::mem::take(&mut q.unlogged_drops)
        };
        if n > 0 {
            self.log.0.log(&format!(
                "handler {}: dropped {n} report instances while its queue was full (maxQueueEntries {}; {} dropped in total)",
                self.name,
                buf.max_queue,
                DispatchStats::get(&self.stats.dropped)
            ));
        }
    }

    /// Delivers everything buffered now. With `close`, later reports bypass the buffer (they go
    /// inline to the handler); with `retire`, such late reports also flush the handler.
    pub(crate) fn flush(&self, close: bool, retire: bool) {
        if retire {
            self.retired.store(true, Ordering::SeqCst);
        }
        let Some(buf) = &self.buffer else { return };
        let (batches, timer) = {
            let mut q = buf.queue.lock();
            q.closed |= close;
            let mut batches: Vec<Vec<Entry>> = q.ready.drain(..).collect();
            if !q.current.is_empty() {
                batches.push(std::mem::take(&mut q.current));
            }
            q.index.clear();
            q.queued = 0;
            (batches, if close { q.timer.take() } else { None })
        };
        if let Some(t) = timer {
            self.dispatcher.cancel_timer(t);
        }
        for b in batches {
            self.deliver(b);
        }
        self.log_drops(buf);
    }
}
