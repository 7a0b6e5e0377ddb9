//! The adapter's own telemetry: counters, gauges and the hold-time (cold-start) histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the hold-time histogram buckets, in milliseconds (a last bucket counts the
/// rest).
pub const HOLD_BUCKETS_MS: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// Live counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub pokes: AtomicU64,
    pub pokes_sent: AtomicU64,
    pub reports: AtomicU64,
    pub stats_sent: AtomicU64,
    pub frames_sent: AtomicU64,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub closed_by_server: AtomicU64,
    pub outbox_dropped: AtomicU64,
    pub revisions_untracked: AtomicU64,
    pub requests_held: AtomicU64,
    pub requests_released: AtomicU64,
    pub requests_timed_out: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub probes: AtomicU64,
    pub held_now: AtomicU64,
    pub revisions: AtomicU64,
    pub outbox_revisions: AtomicU64,
    hold_buckets: [AtomicU64; HOLD_BUCKETS_MS.len() + 1],
    hold_sum_ns: AtomicU64,
    hold_max_ns: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

impl Counters {
    /// Records how long a released request was held.
    pub fn observe_hold(&self, held: Duration) {
        let ms = u64::try_from(held.as_millis()).unwrap_or(u64::MAX);
        let i = HOLD_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(HOLD_BUCKETS_MS.len());
        if let Some(b) = self.hold_buckets.get(i) {
            inc(b);
        }
        let ns = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX);
        add(&self.hold_sum_ns, ns);
        self.hold_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> KnativeStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        KnativeStats {
            pokes: g(&self.pokes),
            pokes_sent: g(&self.pokes_sent),
            reports: g(&self.reports),
            stats_sent: g(&self.stats_sent),
            frames_sent: g(&self.frames_sent),
            connects: g(&self.connects),
            reconnects: g(&self.reconnects),
            connect_failures: g(&self.connect_failures),
            disconnects: g(&self.disconnects),
            closed_by_server: g(&self.closed_by_server),
            outbox_dropped: g(&self.outbox_dropped),
            revisions_untracked: g(&self.revisions_untracked),
            requests_held: g(&self.requests_held),
            requests_released: g(&self.requests_released),
            requests_timed_out: g(&self.requests_timed_out),
            requests_rejected: g(&self.requests_rejected),
            probes: g(&self.probes),
            held_now: g(&self.held_now),
            revisions: g(&self.revisions),
            outbox_revisions: g(&self.outbox_revisions),
            hold_time: HoldHistogram {
                bucket_bounds_ms: HOLD_BUCKETS_MS,
                counts: std::array::from_fn(|i| self.hold_buckets.get(i).map(g).unwrap_or(0)),
                sum: Duration::from_nanos(g(&self.hold_sum_ns)),
                max: Duration::from_nanos(g(&self.hold_max_ns)),
            },
        }
    }
}

/// How long held requests waited before their revision was ready (the cold-start latency this
/// proxy saw). Only released requests are recorded; timed-out ones are counted apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldHistogram {
    /// Inclusive upper bounds of the buckets, in milliseconds.
    pub bucket_bounds_ms: [u64; HOLD_BUCKETS_MS.len()],
    /// Requests per bucket (not cumulative); the last entry counts holds above the last bound.
    pub counts: [u64; HOLD_BUCKETS_MS.len() + 1],
    pub sum: Duration,
    pub max: Duration,
}

impl HoldHistogram {
    /// Number of recorded holds.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A point-in-time copy of a handler's telemetry ([`crate::KnativeHandler::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnativeStats {
    /// Pokes issued: one per revision seen after being idle (coalesced across concurrent
    /// requests).
    pub pokes: u64,
    /// Pokes written to the autoscaler's websocket (a poke merged into a later stat while
    /// disconnected still counts once, when written).
    pub pokes_sent: u64,
    /// Periodic per-revision reports queued for the autoscaler.
    pub reports: u64,
    /// Per-revision stats written (one frame carries several).
    pub stats_sent: u64,
    /// Binary websocket frames written.
    pub frames_sent: u64,
    /// Successful websocket handshakes.
    pub connects: u64,
    /// Handshakes after the first (the connection had dropped or the server closed it).
    pub reconnects: u64,
    pub connect_failures: u64,
    /// Connections lost (read/write error or close from the server).
    pub disconnects: u64,
    /// Close frames received from the server (1012 when the autoscaler restarts).
    pub closed_by_server: u64,
    /// Stats dropped because the outbox already held `maxRevisions` revisions.
    pub outbox_dropped: u64,
    /// Requests not tracked because `maxRevisions` revisions were already tracked.
    pub revisions_untracked: u64,
    pub requests_held: u64,
    /// Held requests allowed because their revision became ready.
    pub requests_released: u64,
    /// Held requests answered at `hold.timeout`.
    pub requests_timed_out: u64,
    /// Requests not held because `hold.maxHeld` requests were held already (answered like a
    /// timeout).
    pub requests_rejected: u64,
    /// Readiness probes sent.
    pub probes: u64,
    /// Requests held now (gauge).
    pub held_now: u64,
    /// Revisions tracked now (gauge).
    pub revisions: u64,
    /// Revisions with stats waiting to be written (gauge; bounded by `maxRevisions`).
    pub outbox_revisions: u64,
    pub hold_time: HoldHistogram,
}
