//! Per-stage output cache of the attribute-producing chain: outputs reused per identical
//! instance values for adapters that return a `cache_for` duration, shared by all threads.
//!
//! Keys are the full instance values (never only a hash): an instance with a single STRING
//! field (a JWT stage's token) is keyed by the string's bytes in place, without a copy; any
//! other instance by its values encoded into a reused per-thread buffer.
//!
//! Each thread's last outputs per stage sit in front of this cache (`apa::reuse`): a
//! request repeating the thread's previous values never gets here.

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lru::LruCache;
use mixer_attr::Value;
use parking_lot::Mutex;

use crate::adapter::ApaOutput;
use crate::cache::hashed::{HashedKey, KeyView, PassThroughState, Probe, hash_bytes, shard_index};
use crate::cache::key::encode_value;
use crate::counter::StripedCounter;
use crate::pal::MonoTime;

const CACHE_SHARDS: usize = 8;
const CACHE_ENTRIES_PER_SHARD: usize = 512;

/// Identifies caches in the per-thread entries (never reused within the process).
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// One shard of an [`ApaCache`]: instance values -> (outputs, expiry).
type CacheShard = Mutex<LruCache<HashedKey, (Arc<dyn ApaOutput>, MonoTime), PassThroughState>>;

/// How a stage's instance values become a cache key (decided once per stage at config time,
/// so the two forms never share a cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyForm {
    /// The instance has a single STRING field: its bytes are the key.
    Raw,
    /// Every value encoded (type tag + payload, strings length-prefixed).
    Encoded,
}

/// Outputs of one stage reused per instance values, for adapters that return a
/// `cache_for` duration. Keys are the full values (never only a hash).
pub struct ApaCache {
    /// Set once the adapter has returned a cacheable answer; until then lookups are skipped.
    used: AtomicBool,
    id: u64,
    form: KeyForm,
    shards: Vec<CacheShard>,
    /// Striped: bumped by every request the cache answers.
    pub hits: StripedCounter,
    pub misses: AtomicU64,
}

impl std::fmt::Debug for ApaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApaCache")
            .field("form", &self.form)
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

impl Default for ApaCache {
    fn default() -> Self {
        Self::new(KeyForm::Encoded)
    }
}

thread_local! {
    /// Encoding buffer, taken while a key is alive (so a nested run gets its own).
    static KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The cache key of one request's instance values (hashed only when the shared cache is
/// consulted).
pub(crate) enum Key<'v> {
    /// Not cacheable (a raw-form stage whose value is not a string).
    None,
    Raw(&'v [u8]),
    Encoded(Vec<u8>),
}

impl Key<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Key::None => None,
            Key::Raw(b) => Some(b),
            Key::Encoded(b) => Some(b),
        }
    }
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        if let Key::Encoded(buf) = self {
            let buf = std::mem::take(buf);
            KEY.with(|k| {
                if let Ok(mut k) = k.try_borrow_mut()
                    && k.capacity() < buf.capacity()
                {
                    *k = buf;
                }
            });
        }
    }
}

impl ApaCache {
    pub fn new(form: KeyForm) -> Self {
        let cap = NonZeroUsize::new(CACHE_ENTRIES_PER_SHARD).unwrap_or(NonZeroUsize::MIN);
        ApaCache {
            used: AtomicBool::new(false),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            form,
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(LruCache::with_hasher(cap, PassThroughState::default())))
                .collect(),
            hits: StripedCounter::new(),
            misses: AtomicU64::new(0),
        }
    }

    /// Unique to this cache, hence to its stage of one snapshot.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the adapter ever returned a cacheable answer (before that, no key is built).
    #[inline]
    pub(crate) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// The key of `values`.
    pub(crate) fn key<'v>(&self, values: &'v [Value<'v>]) -> Key<'v> {
        match (self.form, values) {
            (KeyForm::Raw, [Value::String(s)]) => Key::Raw(s.as_bytes()),
            (KeyForm::Raw, _) => Key::None,
            (KeyForm::Encoded, _) => {
                let mut buf = KEY
                    .with(|k| k.try_borrow_mut().map(|mut k| std::mem::take(&mut *k)))
                    .unwrap_or_default();
                buf.clear();
                for v in values {
                    encode_value(&mut buf, v);
                }
                Key::Encoded(buf)
            }
        }
    }

    /// The unexpired outputs stored under `key`, and when they expire.
    pub(crate) fn get(
        &self,
        key: &Key<'_>,
        now: MonoTime,
    ) -> Option<(Arc<dyn ApaOutput>, MonoTime)> {
        let bytes = key.bytes()?;
        let hash = hash_bytes(bytes);
        let probe = Probe { hash, bytes };
        let probe = &probe as &dyn KeyView;
        let mut shard = self.shards[shard_index(hash, self.shards.len())].lock();
        match shard.get(probe) {
            Some((out, expires)) if *expires > now => {
                let found = (out.clone(), *expires);
                drop(shard);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(found)
            }
            Some(_) => {
                shard.pop(probe);
                drop(shard);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                drop(shard);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `out` under `key` until `expires`.
    pub(crate) fn put(&self, key: &Key<'_>, out: Arc<dyn ApaOutput>, expires: MonoTime) {
        let Some(bytes) = key.bytes() else {
            return;
        };
        self.used.store(true, Ordering::Relaxed);
        let hash = hash_bytes(bytes);
        let i = shard_index(hash, self.shards.len());
        self.shards[i]
            .lock()
            .put(HashedKey::new(hash, bytes), (out, expires));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::ApaValues;
    use std::borrow::Cow;

    fn out() -> Arc<dyn ApaOutput> {
        Arc::new(ApaValues(vec![Some(Value::Int64(1))]))
    }

    #[test]
    fn raw_keys_compare_the_whole_string() {
        let cache = ApaCache::new(KeyForm::Raw);
        assert!(!cache.used());
        let a = [Value::String(Cow::Borrowed("Bearer aaaa"))];
        let b = [Value::String(Cow::Borrowed("Bearer aaab"))];
        cache.put(&cache.key(&a), out(), MonoTime(10));
        assert!(cache.used());
        assert!(cache.get(&cache.key(&a), MonoTime(5)).is_some());
        assert!(cache.get(&cache.key(&b), MonoTime(5)).is_none());
        assert!(cache.get(&cache.key(&a), MonoTime(10)).is_none(), "expired");
        assert!(
            cache.get(&cache.key(&a), MonoTime(5)).is_none(),
            "expired entries go"
        );
        // A raw-form stage whose value is not a string is never cached.
        let n = [Value::Int64(3)];
        cache.put(&cache.key(&n), out(), MonoTime(10));
        assert!(cache.get(&cache.key(&n), MonoTime(5)).is_none());
        assert_eq!(cache.hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn caches_keep_their_own_entries() {
        let (one, two) = (ApaCache::new(KeyForm::Raw), ApaCache::new(KeyForm::Raw));
        let a = [Value::String(Cow::Borrowed("token"))];
        one.put(&one.key(&a), out(), MonoTime(10));
        assert_eq!(
            one.get(&one.key(&a), MonoTime(1)).map(|(_, e)| e),
            Some(MonoTime(10))
        );
        assert!(
            two.get(&two.key(&a), MonoTime(1)).is_none(),
            "another cache's entry"
        );
        assert_eq!(one.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn encoded_keys_tell_values_apart() {
        let cache = ApaCache::new(KeyForm::Encoded);
        let a = [Value::str("x"), Value::Int64(1)];
        let b = [Value::str("x"), Value::Int64(2)];
        let c = [Value::str("x1"), Value::Int64(1)];
        cache.put(&cache.key(&a), out(), MonoTime(10));
        assert!(cache.get(&cache.key(&a), MonoTime(1)).is_some());
        assert!(cache.get(&cache.key(&b), MonoTime(1)).is_none());
        assert!(cache.get(&cache.key(&c), MonoTime(1)).is_none());
        // Two keys alive at once (a nested run) do not share a buffer.
        let (ka, kb) = (cache.key(&a), cache.key(&b));
        assert!(cache.get(&ka, MonoTime(1)).is_some());
        assert!(cache.get(&kb, MonoTime(1)).is_none());
    }
}
