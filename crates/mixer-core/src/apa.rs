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
use mixer_attr::{AttrId, Attributes, Bag, LayeredBag, Value};
use parking_lot::Mutex;

use crate::adapter::{ApaContext, ApaOutput};
use crate::cache::key::{encode_value, shard_of};
use crate::instance::InstanceView;
use crate::pal::MonoTime;
use crate::snapshot::{ApaStage, FailurePolicy, Snapshot};
use crate::status::Status;

const CACHE_SHARDS: usize = 8;
const CACHE_ENTRIES_PER_SHARD: usize = 512;

/// Outputs of one stage reused per instance values, for adapters that return a
/// `cache_for` duration. Keys are the full encoded values (never only a hash).
pub struct ApaCache {
    /// Set once the adapter has returned a cacheable answer; until then lookups are skipped.
    used: AtomicBool,
    shards: Vec<Mutex<LruCache<Vec<u8>, (Arc<dyn ApaOutput>, MonoTime)>>>,
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
                .map(|_| Mutex::new(LruCache::new(cap)))
                .collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn get(&self, key: &[u8], now: MonoTime) -> Option<Arc<dyn ApaOutput>> {
        let mut shard = self.shards[shard_of(key, self.shards.len())].lock();
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

    fn put(&self, key: Vec<u8>, out: Arc<dyn ApaOutput>, expires: MonoTime) {
        self.used.store(true, Ordering::Relaxed);
        let i = shard_of(&key, self.shards.len());
        self.shards[i].lock().put(key, (out, expires));
    }
}

thread_local! {
    static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The request's attributes seen through the layers bound so far (latest first).
struct ChainBag<'r> {
    layers: &'r [OnceCell<Attributes<'r>>],
    input: &'r dyn Bag,
}

impl Bag for ChainBag<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.get().and_then(|l| l.get(id)) {
                return Some(v);
            }
        }
        self.input.get(id)
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        for layer in self.layers.iter().rev() {
            if let Some(Some(Some(v))) = layer.get().map(|l| l.get_stored(id)) {
                return Some(Some(v));
            }
        }
        self.input.get_stored(id)
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        let mut seen: Vec<AttrId> = Vec::new();
        for layer in self.layers.iter().rev() {
            if let Some(l) = layer.get() {
                for (id, v) in l.iter() {
                    if !seen.contains(&id) {
                        seen.push(id);
                        f(id, v.reborrow());
                    }
                }
            }
        }
        self.input.for_each(&mut |id, v| {
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
    /// Instances or bindings that failed to evaluate.
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
    // Per-stage cells, all filled once: bound values may borrow from any earlier cell.
    let outputs: Vec<OnceCell<Arc<dyn ApaOutput>>> = (0..n).map(|_| OnceCell::new()).collect();
    let layers: Vec<OnceCell<Attributes<'_>>> = (0..n).map(|_| OnceCell::new()).collect();
    let seen_bags: Vec<OnceCell<ChainBag<'_>>> = (0..n).map(|_| OnceCell::new()).collect();
    let out_bags: Vec<OnceCell<OutBag<'_>>> = (0..n).map(|_| OnceCell::new()).collect();
    let over_bags: Vec<OnceCell<LayeredBag<'_, '_>>> = (0..n).map(|_| OnceCell::new()).collect();
    let mut report = ApaRunReport::default();
    let mut values = Vec::new();
    for (i, stage) in chain.stages.iter().enumerate() {
        let seen = seen_bags[i].get_or_init(|| ChainBag {
            layers: &layers[..i],
            input,
        });
        if !applies(stage, seen, &mut report) {
            continue;
        }
        let output = produce(snapshot, stage, seen, ctx, &mut values, &mut report);
        values.clear();
        let Some(output) = output else { continue };
        let output = outputs[i].get_or_init(|| output);
        let out = out_bags[i].get_or_init(|| OutBag {
            output: &**output,
            base: chain.out_base,
        });
        let over = over_bags[i].get_or_init(|| LayeredBag::new(out, seen));
        let mut layer = Attributes::with_capacity(stage.bindings.len());
        for b in &stage.bindings {
            match b.expr.eval(over, &mut ()) {
                Ok(v) => layer.set(b.target, v),
                Err(_) => report.eval_errors += 1,
            }
        }
        let _ = layers[i].set(layer);
    }
    let enriched = ChainBag {
        layers: &layers,
        input,
    };
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
                cache.put(key, p.output.clone(), now.plus(d));
            }
            Some(p.output)
        }
        Err(status) => {
            fail(report, status);
            None
        }
    }
}
