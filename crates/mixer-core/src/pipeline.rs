//! The pipeline a proxy embeds: one shared [`Pipeline`] (the live config, swapped atomically)
//! and one [`Worker`] per proxy worker thread (its dispatcher for timers, callouts and
//! completions).
//!
//! `check` answers at once when every matched handler answers in process, and otherwise
//! completes later through a callback posted to the calling worker's dispatcher (Envoy:
//! `StopIteration`, then `continueDecoding()` or `sendLocalReply()`). Dropping or cancelling the
//! [`CheckHandle`] guarantees the callback never runs. A request runs start to finish on the
//! snapshot that was live when it started.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use mixer_attr::{Attributes, Bag, ReferenceRecorder, ReferencedAttributes, Value};
use parking_lot::Mutex;

use crate::adapter::{
    CheckResult, HeaderChange, MutationMessage, QuotaArgs, QuotaResult, RequestContext,
};
use crate::audit::{AuditSink, AuditSubject};
use crate::cache::quota::{PrefetchOutcome, QuotaCache, QuotaCacheConfig};
use crate::cache::{CheckCache, CheckCacheConfig, PreparedKey};
use crate::counter::StripedCounter;
use crate::decision::{Decision, DecisionBuilder};
use crate::instance::{CompiledInstance, EvaluatedInstances, InstanceView};
use crate::pal::{Dispatcher, MonoTime, Platform};
use crate::pending::{Abandoned, Poll};
use crate::report_plan::ReportPlan;
use crate::report_queue::{Pushed, QueueHandle, ReportQueue, ReportQueueOptions};
use crate::snapshot::index::each_candidate;
use crate::snapshot::{CompiledHeaderOp, CompiledRule, FailurePolicy, HeaderOpKind, Snapshot};
use crate::status::{Code, Status};

/// Counters of the pipeline's own activity.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Striped: bumped by every check on every thread.
    pub checks: StripedCounter,
    pub checks_denied: AtomicU64,
    pub checks_pending: AtomicU64,
    /// Striped: bumped by every report on every thread.
    pub reports: StripedCounter,
    pub report_instances: StripedCounter,
    /// Instances that could not be built (an expression failed) and were skipped or failed.
    pub instance_errors: AtomicU64,
    /// Rule predicates that failed to evaluate (the rule is treated as not matching).
    pub match_errors: AtomicU64,
    /// Backend failures (errors, abandoned requests) handled by failure policy.
    pub handler_failures: AtomicU64,
    /// Faults injected by rules' `fault` settings.
    pub faults_injected: AtomicU64,
    pub config_swaps: AtomicU64,
    /// Reports captured and queued for a background drain (deferred mode).
    pub reports_deferred: AtomicU64,
    /// Reports dropped because the deferred queue was full (each also logged).
    pub reports_dropped: AtomicU64,
    /// Batches of deferred reports drained.
    pub report_batches: AtomicU64,
}

impl PipelineStats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

struct Shared {
    current: ArcSwap<Snapshot>,
    audit: arc_swap::ArcSwapOption<Arc<dyn AuditSink>>,
    /// Whether `audit` holds a sink (read on every check without touching `audit`).
    audited: std::sync::atomic::AtomicBool,
    /// SplitMix64 state for sampling decisions (fault injection).
    random: AtomicU64,
    platform: Platform,
    stats: Arc<PipelineStats>,
    check_cache: CheckCache,
    quota_cache: Arc<QuotaCache>,
    /// The report path of the live snapshot (swapped with it).
    report_plan: ArcSwap<ReportPlan>,
    /// Deferred reports, when enabled.
    report_queue: Option<QueueHandle>,
}

/// Pipeline settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineOptions {
    pub check_cache: CheckCacheConfig,
    pub quota_cache: QuotaCacheConfig,
    /// Seed of the pipeline's random choices (fault injection percentages).
    pub seed: u64,
    /// Deferred reports (off by default): see [`crate::report_queue`].
    pub report_queue: ReportQueueOptions,
}

/// The shared pipeline: the live snapshot and the platform. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("rules", &self.snapshot().rules.len())
            .finish()
    }
}

impl Pipeline {
    /// A pipeline serving `snapshot`, with default options.
    pub fn new(snapshot: Snapshot, platform: Platform) -> Pipeline {
        Pipeline::with_options(snapshot, platform, PipelineOptions::default())
    }

    /// A pipeline serving `snapshot`.
    pub fn with_options(
        snapshot: Snapshot,
        platform: Platform,
        options: PipelineOptions,
    ) -> Pipeline {
        let snapshot = Arc::new(snapshot);
        let plan = ReportPlan::new(snapshot.clone());
        let stats = Arc::new(PipelineStats::default());
        let report_queue = options.report_queue.deferred.then(|| {
            ReportQueue::start(
                options.report_queue,
                stats.clone(),
                &platform,
                plan.log.clone(),
            )
        });
        Pipeline {
            shared: Arc::new(Shared {
                current: ArcSwap::new(snapshot),
                audit: arc_swap::ArcSwapOption::empty(),
                audited: std::sync::atomic::AtomicBool::new(false),
                random: AtomicU64::new(options.seed),
                platform,
                stats,
                check_cache: CheckCache::new(options.check_cache),
                quota_cache: Arc::new(QuotaCache::new(options.quota_cache)),
                report_plan: ArcSwap::from_pointee(plan),
                report_queue,
            }),
        }
    }

    /// The check cache (for its counters).
    pub fn check_cache(&self) -> &CheckCache {
        &self.shared.check_cache
    }

    /// Sends a record of every check decision to `sink` (`None` stops auditing).
    pub fn set_audit(&self, sink: Option<Arc<dyn AuditSink>>) {
        self.shared.audited.store(sink.is_some(), Ordering::Relaxed);
        self.shared.audit.store(sink.map(Arc::new));
    }

    /// A uniformly distributed number in [0, 1) (SplitMix64; lock-free).
    fn random_fraction(&self) -> f64 {
        let mut z = self
            .shared
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The quota token cache (for its counters).
    pub fn quota_cache(&self) -> &QuotaCache {
        &self.shared.quota_cache
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// The platform given at construction.
    pub fn platform(&self) -> &Platform {
        &self.shared.platform
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.shared.stats
    }

    /// Makes `next` live. Requests in flight finish on the snapshot they started with. Handlers
    /// that `next` does not keep are flushed. Returns the previous snapshot.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        let next = Arc::new(next);
        let plan = Arc::new(ReportPlan::new(next.clone()));
        let old = self.shared.current.swap(next.clone());
        self.shared.report_plan.store(plan.clone());
        // Deferred reports captured so far go to the old snapshot's handlers (each record holds
        // the snapshot it was captured under) before their buffers are flushed below.
        if let Some(q) = &self.shared.report_queue {
            q.0.set_log(&plan.log);
            q.0.drain(true);
        }
        // Cached decisions came from the old rules.
        self.shared.check_cache.clear();
        // The old snapshot's report buffers go to the old handlers; reports still running on
        // the old snapshot then deliver inline to them (see `dispatch`). Handlers the new
        // snapshot does not keep are retired and flushed.
        for h in &old.handlers {
            let kept = next
                .handlers
                .iter()
                .any(|n| Arc::ptr_eq(&n.handler, &h.handler));
            h.report_dispatch.flush(true, !kept);
            if !kept {
                h.handler.flush();
            }
        }
        PipelineStats::inc(&self.shared.stats.config_swaps);
        old
    }

    /// Delivers every report buffer of the live snapshot and flushes every handler (call on
    /// shutdown, or before reading a handler's state).
    pub fn flush(&self) {
        self.drain_reports();
        for h in &self.snapshot().handlers {
            h.report_dispatch.flush(false, false);
            h.handler.flush();
        }
    }

    /// Evaluates and dispatches every deferred report now, on the calling thread, in the order
    /// they were made (a no-op without deferred reports). Returns how many ran.
    pub fn drain_reports(&self) -> usize {
        self.shared
            .report_queue
            .as_ref()
            .map_or(0, |q| q.0.drain(true))
    }

    /// Deferred reports waiting for the drainer.
    pub fn queued_reports(&self) -> usize {
        self.shared.report_queue.as_ref().map_or(0, |q| q.0.len())
    }

    /// Sizes of the live snapshot's report path (distinct expressions, fields, captured
    /// attributes).
    pub fn report_plan_shape(&self) -> crate::report_plan::ReportPlanShape {
        self.shared.report_plan.load().shape()
    }

    /// A handle for one worker thread.
    pub fn worker(&self, dispatcher: Arc<dyn Dispatcher>) -> Worker {
        Worker {
            pipeline: self.clone(),
            dispatcher,
        }
    }
}

/// A check's decision, and whether it came from the check cache (the `check.cache_hit`
/// attribute of the report).
#[derive(Clone, Debug)]
pub struct CheckAnswer {
    pub decision: Arc<Decision>,
    pub cache_hit: bool,
}

impl std::ops::Deref for CheckAnswer {
    type Target = Decision;
    fn deref(&self) -> &Decision {
        &self.decision
    }
}

/// The outcome of starting a check.
#[derive(Debug)]
pub enum CheckStart {
    /// Answered in process (or from the cache); the callback will not be called.
    Done(CheckAnswer),
    /// A backend is being asked; the callback runs later on this worker's dispatcher, unless the
    /// handle is cancelled or dropped first.
    Pending(CheckHandle),
}

type CheckCallback = Box<dyn FnOnce(CheckAnswer) + Send>;

struct Join {
    builder: DecisionBuilder,
    referenced: ReferencedAttributes,
    remaining: usize,
    callback: Option<CheckCallback>,
    cancelled: bool,
    cache_key: Option<PreparedKey>,
    /// One slot per backend still to answer; taken by its answer or by its timeout.
    outstanding: Vec<Option<Outstanding>>,
}

/// A backend a check waits for.
struct Outstanding {
    fail_open: bool,
    experimental: bool,
    name: Arc<str>,
    rule: Arc<str>,
    timer: Option<crate::pal::TimerId>,
}

/// What ended the wait for one backend.
enum Outcome {
    Answered(Result<CheckResult, Abandoned>),
    TimedOut,
}

/// Settles backend `k` of a pending check: its answer or its timeout, whichever comes first.
#[derive(Clone)]
struct Settle {
    join: Arc<Mutex<Join>>,
    dispatcher: Arc<dyn Dispatcher>,
    pipeline: Pipeline,
    k: usize,
}

impl Settle {
    fn settle(&self, outcome: Outcome) {
        let stats = &self.pipeline.shared.stats;
        let mut j = self.join.lock();
        let Some(h) = j.outstanding.get_mut(self.k).and_then(Option::take) else {
            return;
        };
        if let (Some(t), Outcome::Answered(_)) = (h.timer, &outcome) {
            self.dispatcher.cancel_timer(t);
        }
        match outcome {
            Outcome::Answered(Ok(r)) if r.backend_failure => {
                PipelineStats::inc(&stats.handler_failures);
                j.builder.add_failure_from(
                    r.status.code,
                    r.status.message,
                    h.fail_open,
                    h.experimental,
                    &h.rule,
                    &h.name,
                );
            }
            Outcome::Answered(Ok(r)) => j.builder.add_from(&r, h.experimental, &h.rule, &h.name),
            Outcome::Answered(Err(Abandoned)) => {
                PipelineStats::inc(&stats.handler_failures);
                let message = format!("handler `{}` did not answer", h.name);
                j.builder.add_failure_from(
                    Code::UNAVAILABLE,
                    message,
                    h.fail_open,
                    h.experimental,
                    &h.rule,
                    &h.name,
                );
            }
            Outcome::TimedOut => {
                PipelineStats::inc(&stats.handler_failures);
                let message = format!("handler `{}` timed out", h.name);
                j.builder.add_failure_from(
                    Code::DEADLINE_EXCEEDED,
                    message,
                    h.fail_open,
                    h.experimental,
                    &h.rule,
                    &h.name,
                );
            }
        }
        j.remaining -= 1;
        if j.remaining > 0 || j.cancelled {
            return;
        }
        let builder = std::mem::take(&mut j.builder);
        let refs = std::mem::take(&mut j.referenced);
        let cache_key = j.cache_key.take();
        drop(j);
        let d = Arc::new(builder.finish(refs));
        let shared = &self.pipeline.shared;
        if let Some(key) = cache_key {
            shared
                .check_cache
                .insert_prepared(key, d.clone(), shared.platform.clock.monotonic());
        }
        let join = self.join.clone();
        let pipeline = self.pipeline.clone();
        self.dispatcher.post(Box::new(move || {
            let callback = {
                let mut j = join.lock();
                if j.cancelled { None } else { j.callback.take() }
            };
            if let Some(cb) = callback {
                if !d.is_allowed() {
                    PipelineStats::inc(&pipeline.shared.stats.checks_denied);
                }
                cb(CheckAnswer {
                    decision: d,
                    cache_hit: false,
                });
            }
        }));
    }
}

/// An outstanding check. Dropping it cancels the check.
pub struct CheckHandle {
    inner: HandleInner,
}

enum HandleInner {
    Precondition(Arc<Mutex<Join>>),
    /// A check that also charges quotas: the precondition (while it is outstanding) and the
    /// shared state of the whole check.
    WithQuota(Arc<Mutex<QuotaStage>>, Option<Box<CheckHandle>>),
}

impl CheckHandle {
    /// Cancels the check: the callback will never run (Envoy: `onDestroy`).
    pub fn cancel(&self) {
        match &self.inner {
            HandleInner::Precondition(join) => {
                let mut j = join.lock();
                j.cancelled = true;
                j.callback = None;
            }
            HandleInner::WithQuota(stage, pre) => {
                let mut s = stage.lock();
                s.cancelled = true;
                s.callback = None;
                drop(s);
                if let Some(pre) = pre {
                    pre.cancel();
                }
            }
        }
    }
}

impl Drop for CheckHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for CheckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckHandle").finish_non_exhaustive()
    }
}

/// State of a check that charges quotas after its precondition allowed.
struct QuotaStage {
    pipeline: Pipeline,
    requests: Vec<QuotaRequest>,
    callback: Option<CheckCallback>,
    cancelled: bool,
    /// An owned copy of the request's attributes, kept only when the precondition went async
    /// (the quota step then runs after the host's bag is gone).
    bag: Option<Attributes<'static>>,
    precondition: Option<CheckAnswer>,
}

/// Adds quota results to a precondition answer: a quota granted less than charged denies with
/// RESOURCE_EXHAUSTED. A quota no handler serves is granted in full (as Mixer did).
fn with_quotas(
    pre: CheckAnswer,
    requests: &[QuotaRequest],
    results: Vec<(String, QuotaResult)>,
) -> CheckAnswer {
    let mut d = Decision::clone(&pre.decision);
    for req in requests {
        let result = results
            .iter()
            .find(|(n, _)| *n == req.name)
            .map(|(_, r)| r.clone())
            .unwrap_or(QuotaResult {
                status: Status::ok(),
                granted: req.args.amount,
                valid_duration: mixer_attr::Duration::ZERO,
            });
        if result.granted < req.args.amount && d.status.is_ok() {
            d.status = Status::new(
                Code::RESOURCE_EXHAUSTED,
                format!("Quota is exhausted for: {}", req.name),
            );
        }
        d.quotas.push((req.name.clone(), result));
    }
    CheckAnswer {
        decision: Arc::new(d),
        cache_hit: pre.cache_hit,
    }
}

/// A quota to charge in [`Worker::quota`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaRequest {
    /// The quota instance's name (`requestcountquota`, or fully qualified).
    pub name: String,
    pub args: QuotaArgs,
}

/// What a report did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportSummary {
    /// Instances handed to dispatch (inline reports only).
    pub instances_sent: usize,
    /// Instances skipped because a field failed to evaluate (inline reports only).
    pub instance_errors: usize,
    /// Captured for a background drain (deferred mode): the counts above are then zero, the
    /// drain counts in [`PipelineStats`].
    pub deferred: bool,
    /// Dropped because the deferred queue was full (counted and logged).
    pub dropped: bool,
}

/// One worker thread's handle on the pipeline.
#[derive(Clone)]
pub struct Worker {
    pipeline: Pipeline,
    dispatcher: Arc<dyn Dispatcher>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

thread_local! {
    static QUOTA_KEY: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
    static CANDIDATES: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The rules that can match a request (per the rule index), in config order. The bitset is
/// borrowed from a per-thread buffer and handed back on drop.
pub(crate) struct Candidates(Vec<u64>);

impl Candidates {
    pub(crate) fn of(
        snapshot: &Snapshot,
        bag: &dyn Bag,
        refs: &mut impl ReferenceRecorder,
    ) -> Candidates {
        let mut bits = CANDIDATES.with(|c| std::mem::take(&mut *c.borrow_mut()));
        snapshot.rule_index.candidates(bag, refs, &mut bits);
        Candidates(bits)
    }

    pub(crate) fn rules<'a, 's: 'a>(
        &'a self,
        snapshot: &'s Snapshot,
    ) -> impl Iterator<Item = &'s CompiledRule> + 'a {
        each_candidate(&self.0).filter_map(move |i| snapshot.rules.get(i))
    }
}

impl Drop for Candidates {
    fn drop(&mut self) {
        let bits = std::mem::take(&mut self.0);
        CANDIDATES.with(|c| *c.borrow_mut() = bits);
    }
}

/// Whether `rule` applies to the request in `bag`.
pub(crate) fn rule_matches(
    snapshot: &Snapshot,
    rule: &CompiledRule,
    bag: &dyn Bag,
    refs: &mut impl ReferenceRecorder,
    stats: &PipelineStats,
) -> bool {
    if let (Some(scope), Some(id)) = (&rule.namespace_scope, snapshot.destination_namespace) {
        let v = bag.get(id);
        refs.attribute(id, v.is_some());
        if v.as_ref().and_then(Value::as_str) != Some(&**scope) {
            return false;
        }
    }
    match &rule.predicate {
        None => true,
        Some(p) => match p.eval_bool(bag, refs) {
            Ok(b) => b,
            Err(_) => {
                PipelineStats::inc(&stats.match_errors);
                false
            }
        },
    }
}

fn header_ops(
    ops: &[CompiledHeaderOp],
    bag: &dyn Bag,
    refs: &mut impl ReferenceRecorder,
    out: &mut dyn FnMut(HeaderChange),
) {
    for op in ops {
        let name = op.name.to_string();
        match op.kind {
            HeaderOpKind::Remove => out(HeaderChange::Remove(name)),
            HeaderOpKind::Replace | HeaderOpKind::Append => {
                for (i, e) in op.values.iter().enumerate() {
                    let Ok(v) = e.eval(bag, refs) else { continue };
                    let change = if op.kind == HeaderOpKind::Replace && i == 0 {
                        HeaderChange::Set(name.clone(), v.to_string())
                    } else {
                        HeaderChange::Append(name.clone(), v.to_string())
                    };
                    out(change);
                }
            }
        }
    }
}

impl Worker {
    /// The pipeline this worker belongs to.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The worker's dispatcher.
    pub fn dispatcher(&self) -> &Arc<dyn Dispatcher> {
        &self.dispatcher
    }

    /// Runs the precondition check for the request in `bag`, then charges the quotas that the
    /// config's QuotaSpecs bind to it (only when the precondition allowed).
    pub fn check(
        &self,
        bag: &dyn Bag,
        on_complete: impl FnOnce(CheckAnswer) + Send + 'static,
    ) -> CheckStart {
        let snapshot = self.pipeline.shared.current.load();
        // One clock read per check: the chain's caches and the check cache see the same time.
        let now = self.pipeline.shared.platform.clock.approximate_monotonic();
        if snapshot.apa.is_empty() {
            return self.check_enriched(&snapshot, bag, now, on_complete);
        }
        let ctx = self.apa_context(now);
        crate::apa::with_enriched(&snapshot, bag, &ctx, |enriched, report| {
            self.count_apa(&report);
            match report.denial {
                // A fail-close attribute producer failed: deny (never cached).
                Some(status) => {
                    self.pipeline
                        .shared
                        .stats
                        .checks
                        .fetch_add(1, Ordering::Relaxed);
                    PipelineStats::inc(&self.pipeline.shared.stats.checks_denied);
                    let mut builder = DecisionBuilder::new();
                    builder.add(
                        &CheckResult::deny(status, mixer_attr::Duration::ZERO, 0),
                        false,
                    );
                    builder.uncacheable();
                    CheckStart::Done(CheckAnswer {
                        decision: Arc::new(builder.finish(ReferencedAttributes::new())),
                        cache_hit: false,
                    })
                }
                None => self.check_enriched(&snapshot, enriched, now, on_complete),
            }
        })
    }

    fn apa_context(&self, now: MonoTime) -> crate::adapter::ApaContext<'_> {
        let clock = &self.pipeline.shared.platform.clock;
        crate::adapter::ApaContext::new(&self.dispatcher, &**clock, now)
    }

    fn count_apa(&self, report: &crate::apa::ApaRunReport) {
        let stats = &self.pipeline.shared.stats;
        if report.failures > 0 {
            stats
                .handler_failures
                .fetch_add(report.failures, Ordering::Relaxed);
        }
        if report.eval_errors > 0 {
            stats
                .instance_errors
                .fetch_add(report.eval_errors, Ordering::Relaxed);
        }
    }

    /// [`Worker::check`] after the attribute-producing chain.
    fn check_enriched(
        &self,
        snapshot: &Snapshot,
        bag: &dyn Bag,
        now: MonoTime,
        on_complete: impl FnOnce(CheckAnswer) + Send + 'static,
    ) -> CheckStart {
        // Denials are counted where answers are delivered: here for inline answers, and by the
        // completion paths (`Settle`, `finish_quota`) for the others.
        let started = self.check_audited(snapshot, bag, now, on_complete);
        if let CheckStart::Done(a) = &started
            && !a.is_allowed()
        {
            PipelineStats::inc(&self.pipeline.shared.stats.checks_denied);
        }
        started
    }

    fn check_audited(
        &self,
        snapshot: &Snapshot,
        bag: &dyn Bag,
        now: MonoTime,
        on_complete: impl FnOnce(CheckAnswer) + Send + 'static,
    ) -> CheckStart {
        // A plain load (no reference count traffic) on the common, unaudited path.
        if !self.pipeline.shared.audited.load(Ordering::Relaxed) {
            return self.check_unaudited(snapshot, bag, now, on_complete);
        }
        let Some(sink) = self.pipeline.shared.audit.load_full() else {
            return self.check_unaudited(snapshot, bag, now, on_complete);
        };
        let sink: Arc<dyn AuditSink> = Arc::clone(&sink);
        let subject = AuditSubject::of(
            bag,
            &snapshot.vocabulary,
            self.pipeline.shared.platform.clock.wall(),
        );
        let later = (subject.clone(), sink.clone());
        let started = self.check_unaudited(snapshot, bag, now, move |a: CheckAnswer| {
            later.0.emit(&later.1, &a.decision, a.cache_hit);
            on_complete(a)
        });
        if let CheckStart::Done(a) = &started {
            subject.emit(&sink, &a.decision, a.cache_hit);
        }
        started
    }

    fn check_unaudited(
        &self,
        snapshot: &Snapshot,
        bag: &dyn Bag,
        now: MonoTime,
        on_complete: impl FnOnce(CheckAnswer) + Send + 'static,
    ) -> CheckStart {
        let requests = snapshot.quota_specs.requests(bag);
        if requests.is_empty() {
            return self.precondition(snapshot, bag, now, Box::new(on_complete));
        }
        let stage = Arc::new(Mutex::new(QuotaStage {
            pipeline: self.pipeline.clone(),
            requests,
            callback: Some(Box::new(on_complete)),
            cancelled: false,
            bag: None,
            precondition: None,
        }));
        let worker = self.clone();
        let later = stage.clone();
        let started = self.precondition(
            snapshot,
            bag,
            now,
            Box::new(move |pre: CheckAnswer| {
                let owned = later.lock().bag.take();
                let Some(owned) = owned else { return };
                worker.quota_stage(&later, pre, &owned);
            }),
        );
        match started {
            CheckStart::Done(pre) => {
                if !pre.is_allowed() {
                    return CheckStart::Done(pre);
                }
                let requests = stage.lock().requests.clone();
                let stage2 = stage.clone();
                match self.quota(bag, &requests, move |r| Self::finish_quota(&stage2, r)) {
                    Some(results) => CheckStart::Done(with_quotas(pre, &requests, results)),
                    None => {
                        stage.lock().precondition = Some(pre);
                        CheckStart::Pending(CheckHandle {
                            inner: HandleInner::WithQuota(stage, None),
                        })
                    }
                }
            }
            CheckStart::Pending(h) => {
                stage.lock().bag = Some(Attributes::copy_of(bag));
                CheckStart::Pending(CheckHandle {
                    inner: HandleInner::WithQuota(stage, Some(Box::new(h))),
                })
            }
        }
    }

    /// The quota step after an asynchronous precondition (on the worker thread).
    fn quota_stage(
        &self,
        stage: &Arc<Mutex<QuotaStage>>,
        pre: CheckAnswer,
        bag: &Attributes<'static>,
    ) {
        let requests = {
            let mut s = stage.lock();
            if s.cancelled {
                return;
            }
            if !pre.is_allowed() {
                let cb = s.callback.take();
                drop(s);
                if let Some(cb) = cb {
                    cb(pre);
                }
                return;
            }
            s.precondition = Some(pre);
            s.requests.clone()
        };
        let stage2 = stage.clone();
        if let Some(results) = self.quota(bag, &requests, move |r| Self::finish_quota(&stage2, r)) {
            Self::finish_quota(stage, results);
        }
    }

    fn finish_quota(stage: &Arc<Mutex<QuotaStage>>, results: Vec<(String, QuotaResult)>) {
        let mut s = stage.lock();
        if s.cancelled {
            return;
        }
        let (Some(cb), Some(pre)) = (s.callback.take(), s.precondition.take()) else {
            return;
        };
        let requests = std::mem::take(&mut s.requests);
        let pipeline = s.pipeline.clone();
        drop(s);
        let answer = with_quotas(pre, &requests, results);
        if !answer.is_allowed() {
            PipelineStats::inc(&pipeline.shared.stats.checks_denied);
        }
        cb(answer);
    }

    /// The precondition part of [`Worker::check`].
    fn precondition(
        &self,
        snapshot: &Snapshot,
        bag: &dyn Bag,
        now: MonoTime,
        on_complete: CheckCallback,
    ) -> CheckStart {
        let shared = &self.pipeline.shared;
        let stats = &shared.stats;
        stats.checks.fetch_add(1, Ordering::Relaxed);
        if let Some(decision) = shared.check_cache.lookup(bag, now) {
            return CheckStart::Done(CheckAnswer {
                decision,
                cache_hit: true,
            });
        }
        let ctx = RequestContext {
            dispatcher: &self.dispatcher,
        };
        let mut refs = ReferencedAttributes::new();
        let mut builder = DecisionBuilder::new();
        let mut pending = Vec::new();
        let mut evaluated = EvaluatedInstances::new();
        let candidates = Candidates::of(snapshot, bag, &mut refs);
        for rule in candidates.rules(snapshot) {
            if rule.check_actions.is_empty()
                && rule.request_header_ops.is_empty()
                && rule.response_header_ops.is_empty()
                && rule.fault.is_none()
            {
                continue;
            }
            if !rule_matches(snapshot, rule, bag, &mut refs, stats) {
                continue;
            }
            if rule.fault.is_some() {
                // Every request draws anew: the decision must not be reused.
                builder.uncacheable();
            }
            if let Some(fault) = &rule.fault
                && self.pipeline.random_fraction() < fault.fraction
            {
                PipelineStats::inc(&stats.faults_injected);
                let injector: Arc<str> = Arc::from("fault-injection");
                if let Some(status) = &fault.status {
                    let r = CheckResult::deny(status.clone(), mixer_attr::Duration::ZERO, 0);
                    builder.add_from(&r, rule.experimental, &rule.name, &injector);
                }
                if let Some(delay) = fault.delay {
                    let (done, p) = crate::pending::pending();
                    self.dispatcher.schedule(
                        delay,
                        Box::new(move || {
                            done.complete(CheckResult::allow(mixer_attr::Duration::ZERO, 0))
                        }),
                    );
                    let timeout = delay + std::time::Duration::from_secs(1);
                    pending.push((
                        p,
                        false,
                        rule.experimental,
                        injector,
                        timeout,
                        rule.name.clone(),
                    ));
                }
            }
            for action in &rule.check_actions {
                let entry = &snapshot.handlers[action.handler];
                let fail_open = entry.failure_policy == FailurePolicy::FailOpen;
                let Some(handler) = entry.handler.as_check() else {
                    continue;
                };
                for &i in &action.instances {
                    let instance: &CompiledInstance = &snapshot.instances[i];
                    let values = match evaluated.get(i, instance, bag, &mut refs) {
                        Ok(values) => values,
                        Err(e) => {
                            PipelineStats::inc(&stats.instance_errors);
                            builder.add_failure_from(
                                Code::INTERNAL,
                                e.to_string(),
                                fail_open,
                                rule.experimental,
                                &rule.name,
                                &entry.name,
                            );
                            continue;
                        }
                    };
                    let view = InstanceView { instance, values };
                    let mut poll = handler.check(&view, &ctx);
                    if let Some(policy) = entry.retry {
                        let retry = match &poll {
                            Poll::Ready(r) => r.backend_failure,
                            Poll::Pending(_) => true,
                        };
                        if retry {
                            let pipeline = self.pipeline.clone();
                            let driver = crate::retry::RetryingCheck {
                                handler: entry.handler.clone(),
                                instance: snapshot.instances[i].clone(),
                                values: values.iter().map(|v| v.clone().into_owned()).collect(),
                                policy,
                                dispatcher: self.dispatcher.clone(),
                                random: Arc::new(move || pipeline.random_fraction()),
                            };
                            poll = Poll::Pending(driver.after(1, poll));
                        }
                    }
                    match poll {
                        Poll::Ready(r) if r.backend_failure => {
                            PipelineStats::inc(&stats.handler_failures);
                            builder.add_failure_from(
                                r.status.code,
                                r.status.message,
                                fail_open,
                                rule.experimental,
                                &rule.name,
                                &entry.name,
                            );
                        }
                        Poll::Ready(r) => {
                            builder.add_from(&r, rule.experimental, &rule.name, &entry.name)
                        }
                        Poll::Pending(p) => pending.push((
                            p,
                            fail_open,
                            rule.experimental,
                            entry.name.clone(),
                            entry.timeout,
                            rule.name.clone(),
                        )),
                    }
                }
            }
            header_ops(&rule.request_header_ops, bag, &mut refs, &mut |c| {
                builder.request_op(c)
            });
            header_ops(&rule.response_header_ops, bag, &mut refs, &mut |c| {
                builder.response_op(c)
            });
        }
        if pending.is_empty() {
            let d = Arc::new(builder.finish(refs));
            shared.check_cache.insert(d.clone(), bag, now);
            return CheckStart::Done(CheckAnswer {
                decision: d,
                cache_hit: false,
            });
        }
        PipelineStats::inc(&stats.checks_pending);
        let cache_key = shared.check_cache.prepare(&refs, bag);
        let outstanding = pending
            .iter()
            .map(|(_, fail_open, experimental, name, _, rule)| {
                Some(Outstanding {
                    fail_open: *fail_open,
                    experimental: *experimental,
                    name: name.clone(),
                    rule: rule.clone(),
                    timer: None,
                })
            })
            .collect();
        let join = Arc::new(Mutex::new(Join {
            builder,
            referenced: refs,
            remaining: pending.len(),
            callback: Some(on_complete),
            cancelled: false,
            cache_key,
            outstanding,
        }));
        for (k, (p, _, _, _, timeout, _)) in pending.into_iter().enumerate() {
            let settle = Settle {
                join: join.clone(),
                dispatcher: self.dispatcher.clone(),
                pipeline: self.pipeline.clone(),
                k,
            };
            let on_timeout = settle.clone();
            let timer = self.dispatcher.schedule(
                timeout,
                Box::new(move || on_timeout.settle(Outcome::TimedOut)),
            );
            if let Some(Some(o)) = join.lock().outstanding.get_mut(k) {
                o.timer = Some(timer);
            }
            p.on_complete(move |r| settle.settle(Outcome::Answered(r)));
        }
        CheckStart::Pending(CheckHandle {
            inner: HandleInner::Precondition(join),
        })
    }

    /// Charges the quotas in `requests` against every matching rule's quota handler whose
    /// instance name matches. Results are keyed by quota name. Network failures grant (fail
    /// open), as Mixer did. Answers that need a backend complete through `on_complete`.
    pub fn quota(
        &self,
        bag: &dyn Bag,
        requests: &[QuotaRequest],
        on_complete: impl FnOnce(Vec<(String, QuotaResult)>) + Send + 'static,
    ) -> Option<Vec<(String, QuotaResult)>> {
        let snapshot = self.pipeline.shared.current.load();
        let stats = &self.pipeline.shared.stats;
        let ctx = RequestContext {
            dispatcher: &self.dispatcher,
        };
        let mut values = Vec::new();
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        let candidates = Candidates::of(&snapshot, bag, &mut ());
        for rule in candidates.rules(&snapshot) {
            if rule.quota_actions.is_empty() || !rule_matches(&snapshot, rule, bag, &mut (), stats)
            {
                continue;
            }
            for action in &rule.quota_actions {
                let Some(handler) = snapshot.handlers[action.handler].handler.as_quota() else {
                    continue;
                };
                for &i in &action.instances {
                    let instance: &CompiledInstance = &snapshot.instances[i];
                    let Some(req) = requests.iter().find(|r| instance.is_named(&r.name)) else {
                        continue;
                    };
                    if instance.evaluate(bag, &mut (), &mut values).is_err() {
                        PipelineStats::inc(&stats.instance_errors);
                        continue;
                    }
                    let view = InstanceView {
                        instance,
                        values: &values,
                    };
                    if handler.prefetch() {
                        ready.push((
                            req.name.clone(),
                            self.quota_from_cache(&view, handler, &req.args, &ctx),
                        ));
                        continue;
                    }
                    match handler.allocate(&view, &req.args, &ctx) {
                        Poll::Ready(r) => ready.push((req.name.clone(), r)),
                        Poll::Pending(p) => pending.push((req.name.clone(), req.args.amount, p)),
                    }
                }
            }
        }
        if pending.is_empty() {
            return Some(ready);
        }
        let state = Arc::new(Mutex::new((ready, pending.len(), Some(on_complete))));
        for (name, amount, p) in pending {
            let state = state.clone();
            let dispatcher = self.dispatcher.clone();
            p.on_complete(move |r| {
                // Fail open: a backend that does not answer grants the request.
                let r = r.unwrap_or(QuotaResult {
                    status: Status::ok(),
                    granted: amount,
                    valid_duration: mixer_attr::Duration::ZERO,
                });
                let mut s = state.lock();
                s.0.push((name, r));
                s.1 -= 1;
                if s.1 == 0 {
                    let results = std::mem::take(&mut s.0);
                    if let Some(cb) = s.2.take() {
                        dispatcher.post(Box::new(move || cb(results)));
                    }
                }
            });
        }
        None
    }

    /// Answers a quota check from the token cache, sending the prefetch it asks for (if any) to
    /// the handler; the answer feeds the cache when it arrives.
    fn quota_from_cache(
        &self,
        view: &InstanceView<'_>,
        handler: &dyn crate::adapter::QuotaHandler,
        args: &QuotaArgs,
        ctx: &RequestContext<'_>,
    ) -> QuotaResult {
        let shared = &self.pipeline.shared;
        let now = shared.platform.clock.approximate_monotonic();
        let quota: &str = &view.instance.name;
        let decision = QUOTA_KEY.with(|buf| {
            let mut key = buf.take();
            key.clear();
            for v in view.values {
                use std::fmt::Write as _;
                let _ = write!(key, "{v}\u{1f}");
            }
            let d = shared.quota_cache.check(quota, &key, args.amount, now);
            buf.replace(key);
            d
        });
        if let Some(pf) = decision.prefetch {
            let mut key = String::new();
            for v in view.values {
                use std::fmt::Write as _;
                let _ = write!(key, "{v}\u{1f}");
            }
            let prefetch_args = QuotaArgs {
                amount: pf.amount,
                best_effort: true,
                deduplication_id: String::new(),
            };
            let outcome = |r: Result<QuotaResult, Abandoned>| match r {
                Ok(r) if r.status.is_ok() || r.status.code == Code::RESOURCE_EXHAUSTED => {
                    PrefetchOutcome::Granted {
                        amount: r.granted,
                        valid_for: r.valid_duration.to_std().unwrap_or_default(),
                    }
                }
                _ => PrefetchOutcome::Failed,
            };
            match handler.allocate(view, &prefetch_args, ctx) {
                Poll::Ready(r) => {
                    shared
                        .quota_cache
                        .on_response(quota, &key, pf.id, outcome(Ok(r)), now)
                }
                Poll::Pending(p) => {
                    let (cache, clock, quota) = (
                        shared.quota_cache.clone(),
                        shared.platform.clock.clone(),
                        quota.to_string(),
                    );
                    p.on_complete(move |r| {
                        cache.on_response(&quota, &key, pf.id, outcome(r), clock.monotonic())
                    });
                }
            }
        }
        if decision.granted {
            QuotaResult {
                status: Status::ok(),
                granted: args.amount,
                valid_duration: mixer_attr::Duration::ZERO,
            }
        } else {
            QuotaResult {
                status: Status::new(
                    Code::RESOURCE_EXHAUSTED,
                    format!("quota is exhausted for {quota}"),
                ),
                granted: 0,
                valid_duration: mixer_attr::Duration::ZERO,
            }
        }
    }

    /// Sends the completed request in `bag` to every matching rule's report handlers: inline
    /// (each distinct instance-field expression evaluated once, see [`crate::report_plan`]), or,
    /// with [`PipelineOptions::report_queue`] deferred, captured and queued for a background
    /// drain ([`crate::report_queue`]). The attribute-producing chain runs first, here.
    pub fn report(&self, bag: &dyn Bag) -> ReportSummary {
        let plan = self.pipeline.shared.report_plan.load();
        if plan.snapshot.apa.is_empty() {
            return self.report_enriched(&plan, bag);
        }
        let ctx = self.apa_context(self.pipeline.shared.platform.clock.approximate_monotonic());
        crate::apa::with_enriched(&plan.snapshot, bag, &ctx, |enriched, report| {
            self.count_apa(&report);
            self.report_enriched(&plan, enriched)
        })
    }

    fn report_enriched(&self, plan: &Arc<ReportPlan>, bag: &dyn Bag) -> ReportSummary {
        let stats = &self.pipeline.shared.stats;
        if let Some(q) = &self.pipeline.shared.report_queue
            && plan.has_reports()
        {
            match q.0.push(plan, bag) {
                Pushed::Queued => {
                    return ReportSummary {
                        deferred: true,
                        ..ReportSummary::default()
                    };
                }
                Pushed::Dropped => {
                    return ReportSummary {
                        dropped: true,
                        ..ReportSummary::default()
                    };
                }
                Pushed::Inline => {}
            }
        }
        plan.run(bag, stats)
    }

    /// Runs the mutation handlers of every matching rule over one whole request body
    /// ([`Worker::mutate_message`] for the request, its error as a status).
    pub fn mutate(&self, bag: &dyn Bag, body: &[u8]) -> Result<MutationMessage, Status> {
        self.mutate_message(bag, crate::mutation::Direction::Request, body)
            .map_err(|e| e.to_status())
    }

    /// Mutates one whole message: a [`Worker::mutation_stream`] given `body` as one chunk.
    pub fn mutate_message(
        &self,
        bag: &dyn Bag,
        direction: crate::mutation::Direction,
        body: &[u8],
    ) -> Result<MutationMessage, crate::mutation::MutationError> {
        self.mutation_stream(bag, direction)?.finish_with(body)
    }

    /// Starts mutating the `direction` message of the request in `bag` (for a response, a bag
    /// with the response attributes too): matches the rules and evaluates their mutation
    /// instances now, on the snapshot live now; the body then goes through
    /// [`MutationStream::push`](crate::mutation::MutationStream::push) chunk by chunk and
    /// [`MutationStream::finish`](crate::mutation::MutationStream::finish).
    pub fn mutation_stream(
        &self,
        bag: &dyn Bag,
        direction: crate::mutation::Direction,
    ) -> Result<crate::mutation::MutationStream, crate::mutation::MutationError> {
        let snapshot = self.pipeline.shared.current.load();
        if snapshot.apa.is_empty() {
            return self.mutation_stream_enriched(&snapshot, bag, direction);
        }
        let ctx = self.apa_context(self.pipeline.shared.platform.clock.approximate_monotonic());
        crate::apa::with_enriched(&snapshot, bag, &ctx, |enriched, report| {
            self.count_apa(&report);
            self.mutation_stream_enriched(&snapshot, enriched, direction)
        })
    }

    fn mutation_stream_enriched(
        &self,
        snapshot: &Snapshot,
        bag: &dyn Bag,
        direction: crate::mutation::Direction,
    ) -> Result<crate::mutation::MutationStream, crate::mutation::MutationError> {
        let stats = &self.pipeline.shared.stats;
        let mut plan = crate::mutation::StreamPlan::new(direction);
        let candidates = Candidates::of(snapshot, bag, &mut ());
        for rule in candidates.rules(snapshot) {
            if rule.mutation_actions.is_empty()
                || !rule_matches(snapshot, rule, bag, &mut (), stats)
            {
                continue;
            }
            for action in &rule.mutation_actions {
                let entry = &snapshot.handlers[action.handler];
                let fail_open = entry.failure_policy == FailurePolicy::FailOpen;
                for &i in &action.instances {
                    plan.add(
                        &entry.name,
                        &entry.handler,
                        &snapshot.instances[i],
                        fail_open,
                    );
                }
            }
        }
        plan.start(bag, &self.pipeline.shared.stats)
    }
}
