//! The check cache: reuse a backend's decision for requests whose referenced attributes hold
//! the same values, within the decision's validity duration and use count.
//!
//! Better than the C++ Mixer client on each point: the full key is stored and compared (a hash
//! collision can never return another request's decision); the use count is decremented under
//! the entry's shard lock, so concurrent hits never serve more uses than granted; the shards are
//! independent (no global lock on the hit path) and the shape list is read lock-free.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use lru::LruCache;
use mixer_attr::{Bag, ReferencedAttributes};
use parking_lot::Mutex;

use super::hashed::{HashedKey, KeyView, PassThroughState, Probe, hash_bytes, shard_index};
use super::key::{KeyShape, ShapeKey};
use crate::decision::Decision;
use crate::pal::MonoTime;

/// Check cache settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckCacheConfig {
    /// Maximum number of cached decisions; 0 disables the cache.
    pub max_entries: usize,
    /// Independent LRU shards (more shards, less contention).
    pub shards: usize,
    /// Maximum number of distinct reference shapes tracked.
    pub max_shapes: usize,
}

impl Default for CheckCacheConfig {
    fn default() -> Self {
        CheckCacheConfig {
            max_entries: 10_000,
            shards: 16,
            max_shapes: 64,
        }
    }
}

/// Cache counters (a snapshot: hits are kept per shard, under the shard lock a hit holds
/// anyway, so the hit path touches no shared counter).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub inserts: AtomicU64,
    /// Entries pushed out by the LRU bound.
    pub evictions: AtomicU64,
    /// Entries dropped because their duration or use count ran out.
    pub expirations: AtomicU64,
    /// Decisions not cached because their shape would exceed `max_shapes`.
    pub shape_overflows: AtomicU64,
}

impl CacheStats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A key computed when a check starts, to store its decision when it completes.
#[derive(Debug)]
pub struct PreparedKey {
    key: ShapeKey,
    shape: Arc<KeyShape>,
    generation: u64,
}

struct Entry {
    /// The shape the key was built with: a lookup whose shape list is older than a `clear`
    /// (a key built by another shape under the same id) never matches.
    shape: Arc<KeyShape>,
    decision: Arc<Decision>,
    expires: MonoTime,
    uses_left: i32,
}

/// One shard: its decisions and its hit count.
struct Shard {
    map: LruCache<HashedKey, Entry, PassThroughState>,
    hits: u64,
}

/// The check cache. Share it between worker threads (`Arc`).
pub struct CheckCache {
    config: CheckCacheConfig,
    shapes: ArcSwap<Shapes>,
    /// Bumped after every change of `shapes`: lookups reuse their thread's copy of the list
    /// while it holds (no reference-count traffic on the hit path).
    shapes_version: AtomicU64,
    /// Tells this cache's copies apart from other caches' in a thread's slot.
    id: u64,
    shards: Vec<Mutex<Shard>>,
    stats: CacheStats,
    generation: AtomicU64,
}

impl std::fmt::Debug for CheckCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckCache")
            .field("config", &self.config)
            .field("len", &self.len())
            .finish()
    }
}

type Shapes = Vec<Arc<KeyShape>>;

/// Per thread: the key buffer, and the shape list last read (cache id, version, list).
struct LookupScratch {
    key: Vec<u8>,
    shapes: Option<(u64, u64, Arc<Shapes>)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<LookupScratch> = const {
        std::cell::RefCell::new(LookupScratch { key: Vec::new(), shapes: None })
    };
}

/// Source of [`CheckCache`] ids.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl CheckCache {
    /// A cache with `config`.
    pub fn new(config: CheckCacheConfig) -> CheckCache {
        let shards = config.shards.max(1);
        let per_shard = config.max_entries.div_ceil(shards).max(1);
        let cap = NonZeroUsize::new(per_shard).unwrap_or(NonZeroUsize::MIN);
        CheckCache {
            config,
            shapes: ArcSwap::from_pointee(Vec::new()),
            shapes_version: AtomicU64::new(0),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: LruCache::with_hasher(cap, PassThroughState::default()),
                        hits: 0,
                    })
                })
                .collect(),
            stats: CacheStats::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let load = |c: &AtomicU64| AtomicU64::new(c.load(Ordering::Relaxed));
        let hits: u64 = self.shards.iter().map(|s| s.lock().hits).sum();
        CacheStats {
            hits: AtomicU64::new(hits),
            misses: load(&self.stats.misses),
            inserts: load(&self.stats.inserts),
            evictions: load(&self.stats.evictions),
            expirations: load(&self.stats.expirations),
            shape_overflows: load(&self.stats.shape_overflows),
        }
    }

    /// Number of cached decisions.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every decision and shape (on config swap: decisions depend on the rules).
    /// Decisions of checks that started before the clear are not stored when they complete.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for s in &self.shards {
            s.lock().map.clear();
        }
        self.shapes.store(Arc::new(Vec::new()));
        self.shapes_version.fetch_add(1, Ordering::Release);
    }

    /// A cached decision for the request in `bag`, consuming one use.
    pub fn lookup(&self, bag: &dyn Bag, now: MonoTime) -> Option<Arc<Decision>> {
        if self.config.max_entries == 0 {
            return None;
        }
        let version = self.shapes_version.load(Ordering::Acquire);
        let found = SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return None;
            };
            let LookupScratch { key: buf, shapes } = &mut *scratch;
            let shapes = match shapes {
                Some((id, v, list)) if *id == self.id && *v == version => list,
                _ => &mut shapes.insert((self.id, version, self.shapes.load_full())).2,
            };
            for (id, shape) in shapes.iter().enumerate() {
                if !shape.encode(id as u32, bag, buf) {
                    continue;
                }
                let hash = hash_bytes(buf);
                let probe = Probe { hash, bytes: buf };
                let key = &probe as &dyn KeyView;
                let mut guard = self.shards[shard_index(hash, self.shards.len())].lock();
                let shard = &mut *guard;
                let Some(entry) = shard.map.get_mut(key) else {
                    continue;
                };
                if !Arc::ptr_eq(&entry.shape, shape) {
                    continue;
                }
                if entry.expires <= now || entry.uses_left <= 0 {
                    shard.map.pop(key);
                    CacheStats::inc(&self.stats.expirations);
                    continue;
                }
                entry.uses_left -= 1;
                let decision = entry.decision.clone();
                if entry.uses_left == 0 {
                    shard.map.pop(key);
                    CacheStats::inc(&self.stats.expirations);
                }
                shard.hits += 1;
                return Some(decision);
            }
            None
        });
        if found.is_none() {
            CacheStats::inc(&self.stats.misses);
        }
        found
    }

    /// Caches `decision` for requests that match `bag` on its referenced attributes, for its
    /// valid use count further requests (the request that produced it does not count, as in the
    /// C++ client). Decisions with no use count or no duration are not cached, nor are decisions
    /// whose references do not fit `bag` (a backend that claims an attribute absent which the
    /// request carries).
    pub fn insert(&self, decision: Arc<Decision>, bag: &dyn Bag, now: MonoTime) {
        if let Some(key) = self.prepare(&decision.referenced, bag) {
            self.insert_prepared(key, decision, now);
        }
    }

    /// Computes the key of `bag` for a decision that will reference `referenced`.
    pub fn prepare(&self, referenced: &ReferencedAttributes, bag: &dyn Bag) -> Option<PreparedKey> {
        if self.config.max_entries == 0 {
            return None;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(id) = self.shape_id(KeyShape::new(referenced)) else {
            CacheStats::inc(&self.stats.shape_overflows);
            return None;
        };
        let shapes = self.shapes.load();
        let shape = shapes.get(id)?.clone();
        let mut buf = Vec::new();
        let key = shape.key(id as u32, bag, &mut buf)?;
        Some(PreparedKey {
            key,
            shape,
            generation,
        })
    }

    /// Stores `decision` under a key from [`CheckCache::prepare`].
    pub fn insert_prepared(&self, prepared: PreparedKey, decision: Arc<Decision>, now: MonoTime) {
        if decision.valid_use_count <= 0
            || prepared.generation != self.generation.load(Ordering::SeqCst)
        {
            return;
        }
        let Some(ttl) = decision.valid_duration.to_std().filter(|d| !d.is_zero()) else {
            return;
        };
        let key = prepared.key;
        let entry = Entry {
            shape: prepared.shape,
            expires: now.plus(ttl),
            uses_left: decision.valid_use_count,
            decision,
        };
        let hash = hash_bytes(&key.0);
        let key = HashedKey::new(hash, &key.0);
        let mut shard = self.shards[shard_index(hash, self.shards.len())].lock();
        if let Some((old_key, _)) = shard.map.push(key.clone(), entry)
            && old_key != key
        {
            CacheStats::inc(&self.stats.evictions);
        }
        CacheStats::inc(&self.stats.inserts);
    }

    fn shape_id(&self, shape: KeyShape) -> Option<usize> {
        if let Some(i) = self.shapes.load().iter().position(|s| **s == shape) {
            return Some(i);
        }
        let shape = Arc::new(shape);
        let mut result = None;
        let mut grew = false;
        self.shapes.rcu(|current| {
            grew = false;
            if let Some(i) = current.iter().position(|s| **s == *shape) {
                result = Some(i);
                return current.clone();
            }
            if current.len() >= self.config.max_shapes {
                result = None;
                return current.clone();
            }
            let mut next = Vec::clone(current);
            next.push(shape.clone());
            result = Some(next.len() - 1);
            grew = true;
            Arc::new(next)
        });
        if grew {
            self.shapes_version.fetch_add(1, Ordering::Release);
        }
        result
    }
}
