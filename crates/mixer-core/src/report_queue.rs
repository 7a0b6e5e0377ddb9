//! Deferred reports: the request thread only captures, a background thread evaluates and
//! dispatches, in batches, with nothing lost silently.
//!
//! With [`ReportQueueOptions::deferred`] set, [`Worker::report`](crate::Worker::report) copies
//! the attributes the live snapshot's report path reads (rules' predicates and report instances'
//! fields, found at config time; see [`ReportPlan`]) into a recycled
//! [`Record`](crate::report_record) and appends it to one bounded FIFO queue. A drainer takes
//! the whole queue at a time and runs each record through the same code as an inline report,
//! against the snapshot it was captured under (the record holds it).
//!
//! # Where the drain runs, and why
//!
//! On one long-lived thread from the platform's [`BackgroundExecutor`], not on the worker's
//! dispatcher through `post`. In Envoy a `post` to the worker's own dispatcher only moves the
//! evaluation to a later turn of the same event loop: the worker thread still pays every
//! microsecond and the next request on that worker waits for it. A background thread takes the
//! work off the workers altogether and batches it: while reports flow, the drainer looks at the
//! queue every `max_delay` and is woken early only when `batch` records wait, so a request
//! thread pays for a wake-up at most once per `batch` reports (or once after a quiet second,
//! when the drainer sleeps until the next report). Report handlers are `Send + Sync` and already
//! serve every worker, so running them on one more thread changes nothing for them. If the
//! executor refuses the task, reports go inline as without the option.
//!
//! # Guarantees
//!
//! - Bounded: at most `capacity` records wait. A report that finds the queue full is dropped,
//!   counted in [`PipelineStats::reports_dropped`], and logged through the snapshot's dispatch
//!   log sink (at most one line a second, each with the count since the last; the last count is
//!   logged after the queue drains). Capture never blocks on the drainer.
//! - Order: one FIFO and one drain at a time, so a worker's reports reach handlers in the order
//!   it made them.
//! - [`Pipeline::flush`](crate::Pipeline::flush) and [`Pipeline::swap`](crate::Pipeline::swap)
//!   drain first, on the calling thread (records captured under the old snapshot are evaluated
//!   against it and reach its handlers before their buffers are flushed); dropping the pipeline
//!   lets the drainer finish the queue before it exits.
//! - Sampling runs at drain time (rate-limit windows see drain time, not request time).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mixer_attr::Bag;
use parking_lot::{Condvar, Mutex};

use crate::dispatch::LogSink;
use crate::pal::{Clock, Platform};
use crate::pipeline::PipelineStats;
use crate::report_plan::ReportPlan;
use crate::report_record::Record;

/// Settings of deferred reports ([`PipelineOptions::report_queue`](crate::PipelineOptions)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportQueueOptions {
    /// Capture on the request thread and evaluate in the background. Off by default: reports
    /// are evaluated and dispatched inline.
    pub deferred: bool,
    /// Most reports waiting for the drainer; beyond, reports are dropped and counted.
    pub capacity: usize,
    /// The drainer starts as soon as this many reports wait.
    pub batch: usize,
    /// Longest the drainer lets a batch gather after the first report arrives.
    pub max_delay: Duration,
}

impl Default for ReportQueueOptions {
    fn default() -> Self {
        ReportQueueOptions {
            deferred: false,
            capacity: 8192,
            batch: 256,
            max_delay: Duration::from_millis(5),
        }
    }
}

/// What happened to one deferred report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    Dropped,
    /// The queue is shut down or has no drainer: report inline.
    Inline,
}

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const UNAVAILABLE: u8 = 2;
const NEVER: u64 = u64::MAX;
const LOG_INTERVAL_NS: u64 = 1_000_000_000;
/// How long the drainer polls an empty queue before it sleeps until woken.
const IDLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    queue: VecDeque<Record>,
    /// Emptied records for reuse.
    free: Vec<Record>,
    /// The drainer waits for the first record.
    idle: bool,
    /// The drainer waits for a batch to gather.
    lingering: bool,
    shutdown: bool,
}

thread_local! {
    /// A record ready for the next capture on this thread.
    static SPARE: std::cell::Cell<Option<Record>> = const { std::cell::Cell::new(None) };
}

/// The queue of deferred reports of one pipeline.
pub(crate) struct ReportQueue {
    options: ReportQueueOptions,
    state: Mutex<State>,
    wake: Condvar,
    /// Held while a batch is evaluated: one drain at a time, in queue order.
    processing: Mutex<VecDeque<Record>>,
    /// `state.queue.len()`, readable without the lock (the full check).
    queued: AtomicUsize,
    drainer: AtomicU8,
    stats: Arc<PipelineStats>,
    clock: Arc<dyn Clock>,
    log: Mutex<LogSink>,
    unlogged: AtomicU64,
    last_log: AtomicU64,
}

/// The pipeline's handle: dropping it shuts the queue down (the drainer empties it, then exits).
pub(crate) struct QueueHandle(pub(crate) Arc<ReportQueue>);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.0.state.lock().shutdown = true;
        self.0.wake.notify_all();
    }
}

/// Marks the queue as having no drainer when the executor drops the task unrun.
struct StartGuard(Option<Arc<ReportQueue>>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(q) = self.0.take() {
            q.drainer.store(UNAVAILABLE, Ordering::SeqCst);
            q.log.lock().0.log(
                "deferred reports: the background executor did not start the drainer; reporting inline",
            );
        }
    }
}

/// Sends later reports inline if a handler panics on the drainer's thread (and says so).
struct Unwinding<'q>(&'q ReportQueue);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.drainer.store(UNAVAILABLE, Ordering::SeqCst);
            self.0
                .log
                .lock()
                .0
                .log("deferred reports: the drainer panicked; reporting inline");
        }
    }
}

impl ReportQueue {
    /// A queue whose drainer runs on `platform.background`.
    pub(crate) fn start(
        options: ReportQueueOptions,
        stats: Arc<PipelineStats>,
        platform: &Platform,
        log: LogSink,
    ) -> QueueHandle {
        let options = ReportQueueOptions {
            capacity: options.capacity.max(1),
            batch: options.batch.max(1),
            ..options
        };
        let q = Arc::new(ReportQueue {
            options,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            processing: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            drainer: AtomicU8::new(STARTING),
            stats,
            clock: platform.clock.clone(),
            log: Mutex::new(log),
            unlogged: AtomicU64::new(0),
            last_log: AtomicU64::new(NEVER),
        });
        let mut guard = StartGuard(Some(q.clone()));
        platform.background.spawn(
            "mixer-report-drain",
            Box::new(move || {
                if let Some(q) = guard.0.take() {
                    q.run();
                }
            }),
        );
        QueueHandle(q)
    }

    /// Sets the sink of drop notices (the live snapshot's dispatch log).
    pub(crate) fn set_log(&self, log: &LogSink) {
        *self.log.lock() = log.clone();
    }

    /// Reports waiting for the drainer.
    pub(crate) fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Captures the report of `bag` under `plan` and queues it.
    pub(crate) fn push(&self, plan: &Arc<ReportPlan>, bag: &dyn Bag) -> Pushed {
        if self.drainer.load(Ordering::Relaxed) == UNAVAILABLE {
            return Pushed::Inline;
        }
        if self.queued.load(Ordering::Relaxed) >= self.options.capacity {
            self.dropped();
            return Pushed::Dropped;
        }
        let mut record = SPARE.take().unwrap_or_default();
        record.capture(plan, bag);
        let mut s = self.state.lock();
        if s.shutdown || s.queue.len() >= self.options.capacity {
            let shutdown = s.shutdown;
            drop(s);
            record.clear();
            SPARE.set(Some(record));
            if shutdown {
                return Pushed::Inline;
            }
            self.dropped();
            return Pushed::Dropped;
        }
        s.queue.push_back(record);
        let n = s.queue.len();
        self.queued.store(n, Ordering::Relaxed);
        let notify = if s.idle {
            s.idle = false;
            true
        } else if s.lingering && n >= self.options.batch {
            s.lingering = false;
            true
        } else {
            false
        };
        let spare = s.free.pop();
        drop(s);
        if notify {
            self.wake.notify_one();
        }
        SPARE.set(spare);
        PipelineStats::add(&self.stats.reports_deferred, 1);
        Pushed::Queued
    }

    fn dropped(&self) {
        PipelineStats::add(&self.stats.reports_dropped, 1);
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        self.log_drops(false);
    }

    /// Logs the drops not yet logged, at most once per interval unless `force`.
    fn log_drops(&self, force: bool) {
        if self.unlogged.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = self.clock.approximate_monotonic().0;
        let last = self.last_log.load(Ordering::Relaxed);
        if !force && last != NEVER && now.saturating_sub(last) < LOG_INTERVAL_NS {
            return;
        }
        if self
            .last_log
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let n = self.unlogged.swap(0, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let total = self.stats.reports_dropped.load(Ordering::Relaxed);
        let sink = self.log.lock().clone();
        sink.0.log(&format!(
            "deferred reports: queue full (capacity {}): dropped {n} reports ({total} in total)",
            self.options.capacity
        ));
    }

    /// The drainer: waits for a batch, drains, until shut down (then drains what is left).
    fn run(&self) {
        self.drainer.store(RUNNING, Ordering::SeqCst);
        let _unwinding = Unwinding(self);
        loop {
            let stop = self.next_batch();
            self.drain(false);
            if stop {
                return;
            }
        }
    }

    /// Waits until a batch is due: `batch` records, or records that waited `max_delay`.
    /// While traffic flows the drainer polls every `max_delay`, so a report never pays for a
    /// wake-up; after a quiet second it sleeps until the next report wakes it. Returns whether
    /// the queue was shut down.
    fn next_batch(&self) -> bool {
        let idle_after = (IDLE_AFTER.as_nanos() / self.options.max_delay.as_nanos().max(1))
            .clamp(1, u128::from(u32::MAX)) as u32;
        let mut quiet = 0u32;
        let mut s = self.state.lock();
        loop {
            if s.shutdown {
                return true;
            }
            let n = s.queue.len();
            if n >= self.options.batch {
                return false;
            }
            if n == 0 && quiet >= idle_after {
                s.idle = true;
                if self.unlogged.load(Ordering::Relaxed) > 0 {
                    // Wake once more to log the last drops of a burst.
                    let interval = Duration::from_nanos(LOG_INTERVAL_NS);
                    let _ = self.wake.wait_for(&mut s, interval);
                    s.idle = false;
                    drop(s);
                    self.log_drops(false);
                    s = self.state.lock();
                } else {
                    self.wake.wait(&mut s);
                    s.idle = false;
                    quiet = 0;
                }
                continue;
            }
            s.lingering = true;
            let timed_out = self
                .wake
                .wait_for(&mut s, self.options.max_delay)
                .timed_out();
            s.lingering = false;
            if s.queue.is_empty() {
                quiet = quiet.saturating_add(1);
            } else if timed_out {
                return false;
            }
        }
    }

    /// Evaluates and dispatches every queued report now, on the calling thread, in queue order
    /// (waits for a drain in progress). Returns how many it ran. With `force_log`, drops not
    /// yet logged are logged now, whatever the rate limit.
    pub(crate) fn drain(&self, force_log: bool) -> usize {
        let mut batch = self.processing.lock();
        let mut ran = 0;
        let mut recycled = Vec::new();
        loop {
            {
                let mut s = self.state.lock();
                std::mem::swap(&mut s.queue, &mut *batch);
                self.queued.store(0, Ordering::Relaxed);
                let room = self.options.capacity.saturating_sub(s.free.len());
                s.free.extend(recycled.drain(..).take(room));
            }
            if batch.is_empty() {
                break;
            }
            ran += batch.len();
            for mut record in batch.drain(..) {
                if let Some(plan) = record.plan.take() {
                    record.with_bag(|bag| plan.run(bag, &self.stats));
                }
                record.clear();
                if record.reusable() {
                    recycled.push(record);
                }
            }
            PipelineStats::add(&self.stats.report_batches, 1);
        }
        drop(batch);
        self.log_drops(force_log);
        ran
    }
}
