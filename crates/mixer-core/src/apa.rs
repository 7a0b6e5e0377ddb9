//! Running the attribute-producing (APA) chain on a request.
//!
//! Each stage evaluates its instance over the ingested attributes plus what earlier stages
//! bound, asks its handler for outputs (or reuses cached ones), and evaluates its bindings into
//! a layer of its own. The transform then reads the layers over the ingested bag: nothing is
//! copied, and bound values may borrow from the adapter's outputs.

use std::cell::OnceCell;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lru::LruCache;
use mixer_attr::{AttrId, Bag, LayeredBag, Value};
use parking_lot::Mutex;

use crate::adapter::{ApaContext, ApaOutput};
use crate::cache::hashed::{HashedKey, KeyView, PassThroughState, Probe, hash_bytes, shard_index};
use crate::cache::key::encode_value;
use crate::instance::InstanceView;
use crate::pal::MonoTime;
use crate::snapshot::{ApaStage, FailurePolicy, Snapshot};
use crate::status::Status;

const CACHE_SHARDS: usize = 8;
const CACHE_ENTRIES_PER_SHARD: usize = 512;

/// One shard of an [`ApaCache`]: encoded instance values -> (outputs, expiry).
type CacheShard = Mutex<LruCache<HashedKey, (Arc<dyn ApaOutput>, MonoTime), PassThroughState>>;

/// Outputs of one stage reused per instance values, for adapters that return a
/// `cache_for` duration. Keys are the full encoded values (never only a hash).
pub struct ApaCache {
    /// Set once the adapter has returned a cacheable answer; until then lookups are skipped.
    used: AtomicBool,
    shards: Vec<CacheShard>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl std::fmt::Debug for ApaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApaCache")
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

impl Default for ApaCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ApaCache {
    pub fn new() -> Self {
        let cap = NonZeroUsize::new(CACHE_ENTRIES_PER_SHARD).unwrap_or(NonZeroUsize::MIN);
        ApaCache {
            used: AtomicBool::new(false),
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(LruCache::with_hasher(cap, PassThroughState::default())))
                .collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn get(&self, key: &[u8], now: MonoTime) -> Option<Arc<dyn ApaOutput>> {
        let hash = hash_bytes(key);
        let probe = Probe { hash, bytes: key };
        let key = &probe as &dyn KeyView;
        let mut shard = self.shards[shard_index(hash, self.shards.len())].lock();
        match shard.get(key) {
            Some((out, expires)) if *expires > now => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(out.clone())
            }
            Some(_) => {
                shard.pop(key);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn put(&self, key: &[u8], out: Arc<dyn ApaOutput>, expires: MonoTime) {
        self.used.store(true, Ordering::Relaxed);
        let hash = hash_bytes(key);
        let i = shard_index(hash, self.shards.len());
        self.shards[i]
            .lock()
            .put(HashedKey::new(hash, key), (out, expires));
    }
}

thread_local! {
    static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What one stage left for the request: its outputs (`None` while not run, `Some(None)` when
/// skipped or failed) and the bags its bindings evaluate over, all living as long as the run.
struct StageCell<'r> {
    output: OnceCell<Option<Arc<dyn ApaOutput>>>,
    /// The request as this stage sees it (earlier stages' bindings over the input).
    view: OnceCell<ChainView<'r>>,
    out: OnceCell<OutBag<'r>>,
    /// `$out.*` over `view`: what this stage's bindings read.
    over: OnceCell<LayeredBag<'r, 'r>>,
}

impl StageCell<'_> {
    fn new() -> Self {
        StageCell {
            output: OnceCell::new(),
            view: OnceCell::new(),
            out: OnceCell::new(),
            over: OnceCell::new(),
        }
    }
}

/// One request's run of the chain.
struct Run<'r> {
    snapshot: &'r Snapshot,
    input: &'r dyn Bag,
    cells: &'r [StageCell<'r>],
    /// Bound values by flat binding number, evaluated when first read.
    memo: &'r [OnceCell<Option<Value<'r>>>],
}

/// The request's attributes as stage `upto` sees them: bindings of stages before it over the
/// input. A binding is evaluated the first time the transform (or a later stage) reads its
/// attribute, so a check that reads 2 of 21 bound attributes evaluates 2 bindings.
#[derive(Clone, Copy)]
struct ChainView<'r> {
    run: &'r Run<'r>,
    upto: usize,
}

impl<'r> ChainView<'r> {
    /// The bound value of `id` visible here, if a stage before `upto` binds it and ran.
    #[inline]
    fn bound(&self, id: AttrId) -> Option<&'r Value<'r>> {
        let run = self.run;
        let chain = &run.snapshot.apa;
        let flat = chain.binding_of(id)?;
        let (stage, index) = chain.bindings[flat];
        let stage = stage as usize;
        if stage >= self.upto {
            return None;
        }
        let cell = &run.cells[stage];
        let over = cell.over.get()?;
        run.memo[flat]
            .get_or_init(|| {
                let binding = &chain.stages[stage].bindings[index as usize];
                binding.expr.eval(over, &mut ()).ok()
            })
            .as_ref()
    }
}

impl Bag for ChainView<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        match self.bound(id) {
            Some(v) => Some(v.reborrow()),
            None => self.run.input.get(id),
        }
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        match self.bound(id) {
            Some(v) => Some(Some(v)),
            None => self.run.input.get_stored(id),
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        let chain = &self.run.snapshot.apa;
        let mut seen: Vec<AttrId> = Vec::new();
        for &(stage, index) in &chain.bindings {
            let target = chain.stages[stage as usize].bindings[index as usize].target;
            if let Some(v) = self.bound(target) {
                seen.push(target);
                f(target, v.reborrow());
            }
        }
        self.run.input.for_each(&mut |id, v| {
            if !seen.contains(&id) {
                f(id, v)
            }
        });
    }
}

/// One stage's outputs as `$out.*` attributes.
struct OutBag<'r> {
    output: &'r dyn ApaOutput,
    base: u32,
}

impl Bag for OutBag<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        let pos = id.0.checked_sub(self.base)?;
        self.output.get(pos as usize)
    }
    fn for_each(&self, _f: &mut dyn FnMut(AttrId, Value<'_>)) {}
}

/// What running the chain did besides binding attributes.
#[derive(Debug, Default)]
pub(crate) struct ApaRunReport {
    /// The first failure of a fail-close handler: a check is denied with it.
    pub denial: Option<Status>,
    /// Handler failures (either policy).
    pub failures: u64,
    /// Instances or predicates that failed to evaluate.
    pub eval_errors: u64,
}

/// Runs the chain of `snapshot` over `input` and calls `then` with the enriched bag.
pub(crate) fn with_enriched<R>(
    snapshot: &Snapshot,
    input: &dyn Bag,
    ctx: &ApaContext<'_>,
    then: impl FnOnce(&dyn Bag, ApaRunReport) -> R,
) -> R {
    let chain = &snapshot.apa;
    let n = chain.stages.len();
    let cells: Vec<StageCell<'_>> = (0..n).map(|_| StageCell::new()).collect();
    let memo: Vec<OnceCell<Option<Value<'_>>>> =
        (0..chain.bindings.len()).map(|_| OnceCell::new()).collect();
    let run = Run {
        snapshot,
        input,
        cells: &cells,
        memo: &memo,
    };
    let mut report = ApaRunReport::default();
    let mut values = Vec::new();
    for (i, stage) in chain.stages.iter().enumerate() {
        let cell = &cells[i];
        let view = cell.view.get_or_init(|| ChainView { run: &run, upto: i });
        if !applies(stage, view, &mut report) {
            let _ = cell.output.set(None);
            continue;
        }
        let output = produce(snapshot, stage, view, ctx, &mut values, &mut report);
        values.clear();
        let Some(output) = cell.output.get_or_init(|| output) else {
            continue;
        };
        let out = cell.out.get_or_init(|| OutBag {
            output: &**output,
            base: chain.out_base,
        });
        let _ = cell.over.get_or_init(|| LayeredBag::new(out, view));
    }
    let enriched = ChainView { run: &run, upto: n };
    then(&enriched, report)
}

fn applies(stage: &ApaStage, bag: &dyn Bag, report: &mut ApaRunReport) -> bool {
    let Some(predicates) = &stage.predicates else {
        return true;
    };
    predicates.iter().any(|p| match p.eval_bool(bag, &mut ()) {
        Ok(b) => b,
        Err(_) => {
            report.eval_errors += 1;
            false
        }
    })
}

/// The stage's outputs: from its cache or its handler. `None` when the handler failed (its
/// failure is recorded in `report`).
fn produce<'b>(
    snapshot: &'b Snapshot,
    stage: &ApaStage,
    bag: &'b dyn Bag,
    ctx: &ApaContext<'_>,
    values: &mut Vec<Value<'b>>,
    report: &mut ApaRunReport,
) -> Option<Arc<dyn ApaOutput>> {
    let instance = &snapshot.instances[stage.instance];
    let entry = &snapshot.handlers[stage.handler];
    let producer = entry.handler.as_attribute_producer()?;
    let fail_close = entry.failure_policy == FailurePolicy::FailClose;
    let fail = |report: &mut ApaRunReport, status: Status| {
        report.failures += 1;
        if fail_close && report.denial.is_none() {
            report.denial = Some(status);
        }
    };
    if let Err(e) = instance.evaluate(bag, &mut (), values) {
        report.eval_errors += 1;
        fail(
            report,
            Status::new(crate::status::Code::INTERNAL, e.to_string()),
        );
        return None;
    }
    let cache = &stage.cache;
    let now = ctx.monotonic;
    let cached = cache.used.load(Ordering::Relaxed);
    if cached {
        let hit = KEY.with(|k| {
            let mut key = k.borrow_mut();
            key.clear();
            for v in values.iter() {
                encode_value(&mut key, v);
            }
            cache.get(&key, now)
        });
        if let Some(out) = hit {
            return Some(out);
        }
    }
    let view = InstanceView { instance, values };
    match producer.produce(&view, ctx) {
        Ok(p) => {
            if let Some(d) = p.cache_for.filter(|d| !d.is_zero()) {
                let mut key = Vec::new();
                for v in values.iter() {
                    encode_value(&mut key, v);
                }
                cache.put(&key, p.output.clone(), now.plus(d));
            }
            Some(p.output)
        }
        Err(status) => {
            fail(report, status);
            None
        }
    }
}
