//! Per-revision state and the revision map.
//!
//! The warm request path touches only atomics: a check is one add to the revision's packed
//! in-flight/time word ([`flow`]), one to its request count and a store of the time; a
//! completion one compare-and-swap on the packed word. The mutex guards what only the report
//! tick and the hold path use (held requests, the window's bookkeeping). The map finds a
//! revision by one hash of `(namespace, name)`, borrowing the request's strings.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mixer_core::adapter::CheckResult;
use mixer_core::cache::PassThrough;
use mixer_core::pal::MonoTime;
use mixer_core::pending::Completer;
use parking_lot::Mutex;

/// The in-flight count and its time integral in one atomic word, so that a check or a
/// completion is a single atomic operation and the report tick reads both consistently.
///
/// The word is `inflight + 2^24 * S (mod 2^64)`, where `S` sums `-t` over checks and `+t`
/// over completions (`t` in microseconds since the handler started). At time `T` the integral
/// of the in-flight count since the start is `A(T) = S + inflight * T`; a window's area is the
/// difference of two readings, taken mod 2^40 (so up to 2^39 request-microseconds per window,
/// about 550,000 request-seconds). The in-flight count is signed 24-bit (±8 million).
pub(crate) mod flow {
    const COUNT_BITS: u32 = 24;
    const K: u64 = 1 << COUNT_BITS;
    const AREA_BITS: u32 = 64 - COUNT_BITS;
    const AREA_MASK: u64 = (1 << AREA_BITS) - 1;

    /// A request started at `t`.
    pub fn started(t: u64) -> u64 {
        1u64.wrapping_sub(t.wrapping_mul(K))
    }

    /// A request finished at `t`.
    pub fn finished(t: u64) -> u64 {
        t.wrapping_mul(K).wrapping_sub(1)
    }

    /// Drops `n` requests from the in-flight count at `t` without changing the integral.
    pub fn forget(n: i64, t: u64) -> u64 {
        (n as u64)
            .wrapping_mul(t)
            .wrapping_mul(K)
            .wrapping_sub(n as u64)
    }

    /// The in-flight count.
    pub fn inflight(word: u64) -> i64 {
        ((word << AREA_BITS) as i64) >> AREA_BITS
    }

    /// `A(t) mod 2^40`.
    pub fn area_at(word: u64, t: u64) -> u64 {
        let n = inflight(word) as u64;
        let sum = word.wrapping_sub(n) >> COUNT_BITS;
        sum.wrapping_add(n.wrapping_mul(t)) & AREA_MASK
    }

    /// `later - earlier` of two [`area_at`] readings, in request-microseconds.
    pub fn area_between(later: u64, earlier: u64) -> f64 {
        let d = later.wrapping_sub(earlier) & AREA_MASK;
        (((d << COUNT_BITS) as i64) >> COUNT_BITS) as f64
    }
}

/// A held request.
pub(crate) struct Held {
    pub since: MonoTime,
    pub done: Completer<CheckResult>,
}

/// What the hold path and the report tick keep under the revision's mutex.
#[derive(Default)]
pub(crate) struct RevState {
    pub held: VecDeque<Held>,
    pub probing: bool,
    pub sweep_scheduled: bool,
    /// Start of the current report window (microseconds since the handler started).
    pub window_start: u64,
    /// [`flow::area_at`] at `window_start`.
    pub area_start: u64,
}

/// One revision's measurements and hold queue.
pub(crate) struct Revision {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// In-flight requests and their time integral ([`flow`]).
    flow: AtomicU64,
    /// Checks in the current window.
    requests: AtomicU64,
    /// Last check or completion ([`MonoTime`] nanoseconds).
    last_seen: AtomicU64,
    /// Seen recently (a poke was sent); false for an entry created by `mark_ready`.
    pub active: AtomicBool,
    pub ready: AtomicBool,
    pub state: Mutex<RevState>,
}

impl Revision {
    pub fn new(namespace: &str, name: &str, now: MonoTime, t: u64) -> Revision {
        Revision {
            namespace: namespace.into(),
            name: name.into(),
            flow: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            last_seen: AtomicU64::new(now.0),
            active: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            state: Mutex::new(RevState {
                window_start: t,
                ..RevState::default()
            }),
        }
    }

    /// A check at `now` (`t` microseconds since the handler started).
    #[inline]
    pub fn checked(&self, now: MonoTime, t: u64, track_completions: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if track_completions {
            self.flow.fetch_add(flow::started(t), Ordering::Relaxed);
        }
        self.last_seen.store(now.0, Ordering::Relaxed);
    }

    /// A completion at `now`; the in-flight count never goes below zero.
    #[inline]
    pub fn completed(&self, now: MonoTime, t: u64) {
        let _ = self
            .flow
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (flow::inflight(w) > 0).then(|| w.wrapping_add(flow::finished(t)))
            });
        self.last_seen.store(now.0, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> MonoTime {
        MonoTime(self.last_seen.load(Ordering::Relaxed))
    }

    /// The packed in-flight word ([`flow`]).
    pub fn flow(&self) -> u64 {
        self.flow.load(Ordering::Relaxed)
    }

    /// Takes the window's request count.
    pub fn take_requests(&self) -> u64 {
        self.requests.swap(0, Ordering::Relaxed)
    }

    /// Forgets `n` in-flight requests at `t` (completions that never came).
    pub fn forget_inflight(&self, n: i64, t: u64) {
        if n != 0 {
            self.flow.fetch_add(flow::forget(n, t), Ordering::Relaxed);
        }
    }
}

/// The revisions of one hash (almost always one).
enum Bucket {
    One(Arc<Revision>),
    Many(Vec<Arc<Revision>>),
}

impl Bucket {
    fn as_slice(&self) -> &[Arc<Revision>] {
        match self {
            Bucket::One(r) => std::slice::from_ref(r),
            Bucket::Many(v) => v,
        }
    }
}

/// The tracked revisions, by one hash of `(namespace, name)`.
#[derive(Default)]
pub(crate) struct Revisions {
    by_key: HashMap<u64, Bucket, BuildHasherDefault<PassThrough>>,
    hasher: foldhash::fast::RandomState,
    len: usize,
}

impl Revisions {
    fn key(&self, namespace: &str, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    #[inline]
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<Revision>> {
        let bucket = self.by_key.get(&self.key(namespace, name))?;
        bucket
            .as_slice()
            .iter()
            .find(|r| *r.name == *name && *r.namespace == *namespace)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds `r` (the caller checked it is not present).
    pub fn insert(&mut self, r: Arc<Revision>) {
        let key = self.key(&r.namespace, &r.name);
        self.len += 1;
        match self.by_key.remove(&key) {
            None => self.by_key.insert(key, Bucket::One(r)),
            Some(Bucket::One(first)) => self.by_key.insert(key, Bucket::Many(vec![first, r])),
            Some(Bucket::Many(mut v)) => {
                v.push(r);
                self.by_key.insert(key, Bucket::Many(v))
            }
        };
    }

    /// Removes `r` itself (not a later revision of the same name).
    pub fn remove(&mut self, r: &Arc<Revision>) {
        let key = self.key(&r.namespace, &r.name);
        let Some(bucket) = self.by_key.remove(&key) else {
            return;
        };
        let mut rest: Vec<Arc<Revision>> = match bucket {
            Bucket::One(x) => vec![x],
            Bucket::Many(v) => v,
        };
        let before = rest.len();
        rest.retain(|x| !Arc::ptr_eq(x, r));
        self.len -= before - rest.len();
        match rest.len() {
            0 => {}
            1 => {
                self.by_key
                    .extend(rest.pop().map(|x| (key, Bucket::One(x))));
            }
            _ => {
                self.by_key.insert(key, Bucket::Many(rest));
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Revision>> {
        self.by_key.values().flat_map(Bucket::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::flow::*;
    use super::*;

    #[test]
    fn flow_integrates_the_in_flight_count() {
        let mut w = 0u64;
        let t0 = 5_000_000_000; // any origin: only differences count
        let a0 = area_at(w, t0);
        w = w.wrapping_add(started(t0)); // 1 in flight
        w = w.wrapping_add(started(t0 + 500_000)); // 2
        w = w.wrapping_add(finished(t0 + 750_000)); // 1
        assert_eq!(inflight(w), 1);
        let a1 = area_at(w, t0 + 1_000_000);
        assert_eq!(area_between(a1, a0), 1_250_000.0);
        // Forgetting the last one keeps the integral; later windows see nothing in flight.
        w = w.wrapping_add(forget(inflight(w), t0 + 1_000_000));
        assert_eq!(inflight(w), 0);
        assert_eq!(area_at(w, t0 + 1_000_000), a1);
        assert_eq!(area_between(area_at(w, t0 + 9_000_000), a1), 0.0);
        // Negative counts decode too (a completion of a forgotten request).
        w = w.wrapping_add(finished(t0 + 2_000_000));
        assert_eq!(inflight(w), -1);
    }

    #[test]
    fn map_keeps_colliding_revisions_apart() {
        let mut m = Revisions::default();
        let a = Arc::new(Revision::new("ns", "a", MonoTime(0), 0));
        let b = Arc::new(Revision::new("ns", "b", MonoTime(0), 0));
        m.insert(a.clone());
        m.insert(b.clone());
        assert_eq!(m.len(), 2);
        assert!(Arc::ptr_eq(m.get("ns", "a").unwrap(), &a));
        assert!(m.get("ns", "c").is_none() && m.get("nsa", "").is_none());
        // Force a shared bucket: both under one key.
        let key = m.key("ns", "a");
        let (x, y) = (
            Arc::new(Revision::new("x", "1", MonoTime(0), 0)),
            Arc::new(Revision::new("y", "2", MonoTime(0), 0)),
        );
        m.by_key
            .insert(key, Bucket::Many(vec![x.clone(), a.clone(), y.clone()]));
        m.len = 4;
        assert!(Arc::ptr_eq(m.get("ns", "a").unwrap(), &a));
        m.remove(&a);
        assert_eq!(m.len(), 3);
        assert!(m.get("ns", "a").is_none());
        assert!(matches!(m.by_key.get(&key), Some(Bucket::Many(v)) if v.len() == 2));
        m.remove(&b);
        assert!(m.get("ns", "b").is_none());
        assert_eq!(m.iter().count(), 2);
    }
}
