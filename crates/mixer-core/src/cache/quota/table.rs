//! [`QuotaCache`]: the thread-safe, bounded map from (quota name, key) to the
//! [`QuotaPrefetch`] state machine that answers its checks.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use super::{PrefetchOutcome, QuotaDecision, QuotaPrefetch, QuotaPrefetchOptions};
use crate::cache::hashed::{PrefixHashState, PrefixedKey, hash_pair, shard_index};
use crate::pal::MonoTime;

/// Settings of a [`QuotaCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaCacheConfig {
    /// Maximum number of (quota, key) entries (LRU); at least 1.
    pub max_entries: usize,
    /// Options of each entry's [`QuotaPrefetch`].
    pub prefetch: QuotaPrefetchOptions,
}

impl Default for QuotaCacheConfig {
    fn default() -> Self {
        QuotaCacheConfig {
            max_entries: 10_000,
            prefetch: QuotaPrefetchOptions::default(),
        }
    }
}

/// [`QuotaCache`] counters (a snapshot summed over the shards).
#[derive(Debug, Default)]
pub struct QuotaCacheStats {
    /// Checks made.
    pub checks: AtomicU64,
    /// Checks granted from local tokens.
    pub granted: AtomicU64,
    /// Prefetch requests handed to the caller.
    pub prefetches: AtomicU64,
    /// Prefetches answered with [`PrefetchOutcome::Failed`].
    pub failures: AtomicU64,
    /// Entries pushed out by the LRU bound.
    pub evictions: AtomicU64,
}

/// Ids of one entry's requests: `entry sequence << ID_SHIFT | local id`.
const ID_SHIFT: u32 = 40;

/// Independent LRU shards of a large [`QuotaCache`] (less contention between worker threads).
const SHARDS: usize = 16;

/// One shard: its entries and its counters, all under the shard's lock (a check takes one lock
/// and touches no shared atomic).
struct ShardState {
    map: LruCache<PrefixedKey, QuotaPrefetch, PrefixHashState>,
    checks: u64,
    granted: u64,
    prefetches: u64,
    failures: u64,
    evictions: u64,
}

/// Keys up to this many bytes are built on the stack.
const STACK_KEY: usize = 192;
/// Keys up to this many bytes use a smaller stack buffer.
const SMALL_KEY: usize = 64;

/// A map key in its stored form (hash first) and its hash.
struct MapKey<'b> {
    hash: u64,
    key: &'b [u8],
}

thread_local! {
    static MAP_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A thread-safe, bounded (LRU) map from (quota name, key) to a [`QuotaPrefetch`], in shards.
/// A check hashes its key once (the hash picks the shard and is reused by the shard's map),
/// builds the key in a per-thread buffer (a warm check allocates nothing) and runs the entry's
/// state machine under the shard lock.
pub struct QuotaCache {
    cfg: QuotaCacheConfig,
    entries: Vec<Mutex<ShardState>>,
    next_entry: AtomicU64,
}

impl std::fmt::Debug for QuotaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaCache")
            .field("cfg", &self.cfg)
            .field("entries", &self.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl QuotaCache {
    /// An empty cache.
    pub fn new(cfg: QuotaCacheConfig) -> Self {
        // Small caches keep one exact LRU; large ones split it.
        let shards = if cfg.max_entries >= 1024 { SHARDS } else { 1 };
        let cap = NonZeroUsize::new(cfg.max_entries.div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        QuotaCache {
            cfg,
            entries: (0..shards)
                .map(|_| {
                    Mutex::new(ShardState {
                        map: LruCache::with_hasher(cap, PrefixHashState::default()),
                        checks: 0,
                        granted: 0,
                        prefetches: 0,
                        failures: 0,
                        evictions: 0,
                    })
                })
                .collect(),
            next_entry: AtomicU64::new(1),
        }
    }

    /// Asks for `amount` tokens of `quota` for `key` at `now`; see [`QuotaPrefetch::check`].
    pub fn check(&self, quota: &str, key: &str, amount: i64, now: MonoTime) -> QuotaDecision {
        Self::with_map_key(quota, key, |probe| {
            let mut shard = self.shard(probe.hash).lock();
            shard.checks += 1;
            let d = match shard.map.get_mut(probe.key) {
                Some(entry) => entry.check(amount, now),
                None => {
                    let seq = self.next_entry.fetch_add(1, Ordering::Relaxed);
                    let mut entry =
                        QuotaPrefetch::with_id_base(self.cfg.prefetch, now, seq << ID_SHIFT);
                    let d = entry.check(amount, now);
                    if shard.map.push(PrefixedKey::new(probe.key), entry).is_some() {
                        shard.evictions += 1;
                    }
                    d
                }
            };
            shard.granted += u64::from(d.granted);
            shard.prefetches += u64::from(d.prefetch.is_some());
            d
        })
    }

    /// Feeds the backend's answer to prefetch `id` of (`quota`, `key`); ignored if the entry was
    /// evicted meanwhile or the id is unknown.
    pub fn on_response(
        &self,
        quota: &str,
        key: &str,
        id: u64,
        outcome: PrefetchOutcome,
        now: MonoTime,
    ) {
        Self::with_map_key(quota, key, |probe| {
            let mut shard = self.shard(probe.hash).lock();
            if outcome == PrefetchOutcome::Failed {
                shard.failures += 1;
            }
            if let Some(e) = shard.map.peek_mut(probe.key) {
                e.on_response(id, outcome, now);
            }
        })
    }

    /// Number of (quota, key) entries.
    pub fn len(&self) -> usize {
        self.entries.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters, summed over the shards.
    pub fn stats(&self) -> QuotaCacheStats {
        let s = QuotaCacheStats::default();
        for shard in &self.entries {
            let g = shard.lock();
            s.checks.fetch_add(g.checks, Ordering::Relaxed);
            s.granted.fetch_add(g.granted, Ordering::Relaxed);
            s.prefetches.fetch_add(g.prefetches, Ordering::Relaxed);
            s.failures.fetch_add(g.failures, Ordering::Relaxed);
            s.evictions.fetch_add(g.evictions, Ordering::Relaxed);
        }
        s
    }

    /// Calls `f` with the map key of (`quota`, `key`): their hash, then the quota name's
    /// length, the name and the key (an unambiguous join), built on the stack (or, for long keys,
    /// in a per-thread buffer).
    #[inline]
    fn with_map_key<T>(quota: &str, key: &str, f: impl FnOnce(MapKey<'_>) -> T) -> T {
        let len = 16 + quota.len() + key.len();
        // The hash is taken from the caller's strings, not from the buffer just written.
        let hash = hash_pair(quota.as_bytes(), key.as_bytes());
        let fill = |b: &mut [u8]| {
            let (head, rest) = b.split_at_mut(16);
            head[..8].copy_from_slice(&hash.to_le_bytes());
            head[8..].copy_from_slice(&(quota.len() as u64).to_le_bytes());
            let (q, k) = rest.split_at_mut(quota.len());
            q.copy_from_slice(quota.as_bytes());
            k.copy_from_slice(key.as_bytes());
            hash
        };
        // Two stack sizes: most keys fit the small one, which costs less to clear.
        let mut small = [0u8; SMALL_KEY];
        let mut large: [u8; STACK_KEY];
        let on_stack: Option<&mut [u8]> = if len <= SMALL_KEY {
            small.get_mut(..len)
        } else if len <= STACK_KEY {
            large = [0u8; STACK_KEY];
            large.get_mut(..len)
        } else {
            None
        };
        if let Some(b) = on_stack {
            let hash = fill(b);
            return f(MapKey { hash, key: b });
        }
        let run = |b: &mut Vec<u8>| {
            b.clear();
            b.resize(len, 0);
            let hash = fill(b);
            f(MapKey { hash, key: b })
        };
        MAP_KEY.with(|buf| match buf.try_borrow_mut() {
            Ok(mut b) => run(&mut b),
            // Re-entered from inside `f` (never in practice): a buffer of its own.
            Err(_) => run(&mut Vec::new()),
        })
    }

    fn shard(&self, hash: u64) -> &Mutex<ShardState> {
        &self.entries[shard_index(hash, self.entries.len())]
    }
}
