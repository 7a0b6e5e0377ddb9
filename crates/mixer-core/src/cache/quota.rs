//! The quota token cache with prefetch: most quota checks are answered from tokens fetched ahead
//! of need, so they never reach the quota backend.
//!
//! [`QuotaPrefetch`] is the sans-I/O state machine for one (quota, key): [`QuotaPrefetch::check`]
//! answers from local tokens and may ask the caller to send a [`PrefetchRequest`] to the backend;
//! the caller feeds the backend's answer back with [`QuotaPrefetch::on_response`]. Time is always
//! an argument. [`QuotaCache`] is the thread-safe, bounded map of those state machines.
//!
//! # The C++ Mixer client's algorithm (istio/proxy `quota_prefetch.cc`)
//!
//! Granted tokens sit in a FIFO of slots {available, expiry}. Requests are counted over a predict
//! window (1 s, 20 buckets); `desired = max(count, min_prefetch_amount)`. A prefetch of
//! `max(amount, desired)` goes out when `available < desired / 2` and nothing is in flight, or when
//! `available < amount`. In OPEN mode a prefetch made with no tokens left is granted optimistically
//! (a slot is added before the backend answers). A short answer switches to CLOSE mode: no
//! prefetch while one is in flight or within `close_wait_window` (500 ms) of the last one, and no
//! optimistic grants. A full answer switches back to OPEN. Network failure grants in full (fail
//! open).
//!
//! # What we changed, and why
//!
//! The test scenarios of the C++ client (fixed-window and token-bucket servers, 200 ms answers,
//! five traffic levels, one and two clients; `tests/quota_prefetch.rs`) showed where it lost
//! accuracy; each change below removes one cause.
//!
//! 1. **Validity counts from when the request was sent**, not from when the answer arrived. The
//!    backend computed "valid for" somewhere between the two, so this is the conservative anchor;
//!    the C++ client let a fixed window's tokens outlive the window by one round trip.
//! 2. **The end of the server's validity is remembered** (`sent + valid_for` of the last answer).
//!    In CLOSE mode the next attempt is at the earlier of that end (a fixed window's reset: the C++
//!    client retried every 500 ms and so started each window up to 500 ms late, losing tokens) and
//!    `close_wait_window` after the short answer arrived (the C++ client counted from the send;
//!    waiting after the answer makes fewer calls while the server is the bottleneck). No prefetch is
//!    sent within one measured round trip before that end: its answer would be about a window that
//!    is over by the time it arrives.
//! 3. **CLOSE mode ends when the short grant's validity ends**: the server has renewed (a fixed
//!    window reset; a token bucket refilled for a whole validity period). Optimistic grants are
//!    allowed again then, but capped at what the server granted this client during the validity
//!    period that just ended, so a client over its limit cannot over-grant a full prefetch.
//! 4. **At most one optimistic grant is outstanding**, and a check only sends another prefetch
//!    while one is in flight if the tokens already requested cannot cover it
//!    (`available + in-flight < amount`). The C++ client could send a prefetch, and add an
//!    optimistic slot, on every check while waiting.
//! 5. **Prefetches are sized to what can be used before the tokens expire**: at most
//!    `rate * validity` (validity: the longest recent `valid_for`), even below
//!    `min_prefetch_amount`. Tokens that expire unused are lost to every other client of a shared
//!    quota. During the first predict window after start or idleness, the rate is scaled from the
//!    elapsed part of the window instead of read as a low count.
//! 6. **Bad input cannot corrupt the state**: non-positive amounts are denied without side effects,
//!    answers for unknown (or timed-out) ids are ignored, grants are clamped to `[0, requested]`,
//!    durations saturate, and memory is bounded (`max_slots`: the newest slots merge, keeping the
//!    earlier expiry; `max_inflight`; in-flight requests older than `response_timeout` are
//!    forgotten).
//!
//! Our margins against the C++ ones are in `benches/README.md` ("Quota prefetch").

use std::collections::VecDeque;
use std::time::Duration;

use crate::pal::MonoTime;

mod table;
#[cfg(test)]
mod tests;

pub use table::{QuotaCache, QuotaCacheConfig, QuotaCacheStats};

/// Tuning of a [`QuotaPrefetch`]. The first four fields are the C++ client's options and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaPrefetchOptions {
    /// Window over which the request rate is measured (20 buckets). Default 1 s.
    pub predict_window: Duration,
    /// Smallest prefetch, unless fewer tokens could be used before they expire. Default 10.
    pub min_prefetch_amount: i64,
    /// In CLOSE mode, the wait after a short answer before asking again. Default 500 ms.
    pub close_wait_window: Duration,
    /// Validity of optimistic grants before the answer, and of fail-open grants. Default 60 s.
    pub max_optimistic_expiration: Duration,
    /// Maximum number of token slots kept (at least 2). Default 16.
    pub max_slots: usize,
    /// Maximum number of prefetches in flight (at least 1). Default 4.
    pub max_inflight: usize,
    /// A prefetch unanswered for this long is forgotten; its answer will be ignored. Default 60 s.
    pub response_timeout: Duration,
}

impl Default for QuotaPrefetchOptions {
    fn default() -> Self {
        QuotaPrefetchOptions {
            predict_window: Duration::from_secs(1),
            min_prefetch_amount: 10,
            close_wait_window: Duration::from_millis(500),
            max_optimistic_expiration: Duration::from_secs(60),
            max_slots: 16,
            max_inflight: 4,
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// A request the caller must send to the quota backend, then answer with
/// [`QuotaPrefetch::on_response`] (or [`QuotaCache::on_response`]) and the same `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefetchRequest {
    pub id: u64,
    /// Tokens to ask for (always > 0).
    pub amount: i64,
}

/// The answer to a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaDecision {
    /// The requested amount was granted from local tokens.
    pub granted: bool,
    /// A prefetch the caller must send, if any.
    pub prefetch: Option<PrefetchRequest>,
}

impl QuotaDecision {
    const DENIED: QuotaDecision = QuotaDecision {
        granted: false,
        prefetch: None,
    };
}

/// The backend's answer to a [`PrefetchRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchOutcome {
    /// `amount` tokens (clamped to `[0, requested]`) valid for `valid_for` from the request.
    Granted { amount: i64, valid_for: Duration },
    /// The backend could not be reached: the request is granted in full (fail open, as Mixer did),
    /// valid for `max_optimistic_expiration`.
    Failed,
}

const COUNTER_SLOTS: usize = 20;

/// Requests counted over a sliding window of [`COUNTER_SLOTS`] buckets (the C++ TimeBasedCounter).
#[derive(Clone, Debug)]
struct RateCounter {
    buckets: [i64; COUNTER_SLOTS],
    bucket_ns: u64,
    count: i64,
    tail: usize,
    /// Start of the current bucket.
    last: u64,
    /// When counting (re)started: the counter covers less than a window before `since + window`.
    since: u64,
}

impl RateCounter {
    fn new(window: Duration, now: MonoTime) -> Self {
        let w = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        RateCounter {
            buckets: [0; COUNTER_SLOTS],
            bucket_ns: (w / COUNTER_SLOTS as u64).max(1),
            count: 0,
            tail: 0,
            last: now.0,
            since: now.0,
        }
    }

    fn roll(&mut self, now: MonoTime) {
        let since_last = now.0.saturating_sub(self.last);
        if since_last < self.bucket_ns {
            // Still in the current bucket (the common case): no division.
            return;
        }
        let n = since_last / self.bucket_ns;
        if n >= COUNTER_SLOTS as u64 {
            *self = RateCounter {
                bucket_ns: self.bucket_ns,
                ..RateCounter::new(Duration::ZERO, now)
            };
            return;
        }
        for _ in 0..n {
            self.tail = (self.tail + 1) % COUNTER_SLOTS;
            self.count = self.count.saturating_sub(self.buckets[self.tail]);
            self.buckets[self.tail] = 0;
            self.last = self.last.saturating_add(self.bucket_ns);
        }
    }

    /// Whether at `now` the current bucket is still open (rolling is a no-op) and a whole
    /// window has been counted (`per_window` is `count`).
    #[inline]
    fn settled(&self, now: MonoTime) -> bool {
        let window = self.bucket_ns.saturating_mul(COUNTER_SLOTS as u64);
        now.0.saturating_sub(self.last) < self.bucket_ns
            && now.0.saturating_sub(self.since) >= window
    }

    #[inline]
    fn inc(&mut self, n: i64, now: MonoTime) {
        self.roll(now);
        self.add_current(n);
    }

    /// Counts `n` in the current bucket.
    #[inline]
    fn add_current(&mut self, n: i64) {
        let bucket = &mut self.buckets[self.tail % COUNTER_SLOTS];
        *bucket = bucket.saturating_add(n);
        self.count = self.count.saturating_add(n);
    }

    /// Requests per window: the count, scaled up while less than a window has been counted.
    fn per_window(&mut self, now: MonoTime) -> i64 {
        self.roll(now);
        let window = self.bucket_ns.saturating_mul(COUNTER_SLOTS as u64);
        let elapsed = now.0.saturating_sub(self.since).max(self.bucket_ns);
        if elapsed >= window {
            return self.count;
        }
        // A rate estimate: f64 is exact enough and much cheaper than 128-bit division.
        let scaled = self.count as f64 * (window as f64 / elapsed as f64);
        if scaled >= i64::MAX as f64 {
            i64::MAX
        } else {
            scaled as i64
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    available: i64,
    expire: MonoTime,
    id: u64,
}

#[derive(Clone, Copy, Debug)]
struct Inflight {
    id: u64,
    /// Tokens requested.
    amount: i64,
    /// Tokens granted optimistically before the answer, in slot `slot`.
    optimistic: i64,
    slot: Option<u64>,
    sent: MonoTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The server granted what we asked for: optimistic grants allowed.
    Open,
    /// The server granted less: wait before asking again, no optimistic grants.
    Close,
}

/// How many recent `valid_for` values are kept to estimate the server's validity period.
const VALIDITY_HISTORY: usize = 8;

/// The quota prefetch state machine for one (quota, key). See the module docs.
#[derive(Clone, Debug)]
pub struct QuotaPrefetch {
    opts: QuotaPrefetchOptions,
    /// FIFO of granted tokens.
    slots: VecDeque<Slot>,
    /// Sum of the slots' non-negative `available` (expired slots included until removed).
    tokens: i64,
    /// Earliest expiry among the slots (`MonoTime(u64::MAX)` with none): before it,
    /// [`QuotaPrefetch::available`] is `tokens` without a walk over the slots.
    first_expire: MonoTime,
    counter: RateCounter,
    mode: Mode,
    inflight: Vec<Inflight>,
    next_id: u64,
    /// CLOSE mode: no prefetch before this.
    retry_at: MonoTime,
    /// CLOSE mode: the validity of the last short grant ends here; the server has renewed.
    refresh_at: MonoTime,
    /// Cap on optimistic grants (after a CLOSE period); `None`: no cap.
    optimistic_cap: Option<i64>,
    /// End of the server's validity reported by the last answer (`sent + valid_for`).
    server_end: Option<MonoTime>,
    /// Tokens the server granted for the validity period ending at `server_end`.
    period_granted: i64,
    /// Recent `valid_for` values of non-empty grants (ring).
    validity: [Duration; VALIDITY_HISTORY],
    validity_pos: usize,
    /// The longest of `validity`.
    validity_max: Duration,
    /// Round trip of the last answer.
    rtt: Duration,
}

impl QuotaPrefetch {
    /// A state machine with no tokens, in OPEN mode.
    pub fn new(opts: QuotaPrefetchOptions, now: MonoTime) -> Self {
        Self::with_id_base(opts, now, 0)
    }

    /// As [`QuotaPrefetch::new`], with request ids starting after `base` (keeps ids unique across
    /// the state machines of a [`QuotaCache`], so a late answer never matches a new request).
    pub(crate) fn with_id_base(opts: QuotaPrefetchOptions, now: MonoTime, base: u64) -> Self {
        let opts = QuotaPrefetchOptions {
            max_slots: opts.max_slots.max(2),
            max_inflight: opts.max_inflight.max(1),
            min_prefetch_amount: opts.min_prefetch_amount.max(1),
            ..opts
        };
        QuotaPrefetch {
            opts,
            slots: VecDeque::new(),
            tokens: 0,
            first_expire: MonoTime(u64::MAX),
            counter: RateCounter::new(opts.predict_window, now),
            mode: Mode::Open,
            inflight: Vec::new(),
            next_id: base,
            retry_at: MonoTime(0),
            refresh_at: MonoTime(u64::MAX),
            optimistic_cap: None,
            server_end: None,
            period_granted: 0,
            validity: [Duration::ZERO; VALIDITY_HISTORY],
            validity_pos: 0,
            validity_max: Duration::ZERO,
            rtt: Duration::ZERO,
        }
    }

    /// Asks for `amount` tokens at `now`. Non-positive amounts are denied and change nothing.
    #[inline]
    pub fn check(&mut self, amount: i64, now: MonoTime) -> QuotaDecision {
        if self.grant_locally(amount, now) {
            return QuotaDecision {
                granted: true,
                prefetch: None,
            };
        }
        self.check_full(amount, now)
    }

    /// The common case of [`QuotaPrefetch::check`], decided without the prefetch logic: OPEN
    /// mode, nothing in flight, a whole predict window counted, and the oldest live slot holds
    /// more than `amount` and the tokens are at least half the predicted need, so no prefetch is
    /// due. Leaves exactly the state the full path would; `false` (nothing changed) otherwise.
    #[inline]
    fn grant_locally(&mut self, amount: i64, now: MonoTime) -> bool {
        if amount <= 0
            || self.mode != Mode::Open
            || !self.inflight.is_empty()
            || now >= self.first_expire
            || !self.counter.settled(now)
        {
            return false;
        }
        let need = self.counter.count.max(self.opts.min_prefetch_amount);
        if self.tokens < need / 2 {
            return false;
        }
        let Some(head) = self.slots.front_mut() else {
            return false;
        };
        if head.available <= amount {
            return false;
        }
        head.available -= amount;
        self.tokens -= amount;
        // `settled`: the current bucket is the one to count in (no roll).
        self.counter.add_current(amount);
        true
    }

    fn check_full(&mut self, amount: i64, now: MonoTime) -> QuotaDecision {
        if amount <= 0 {
            return QuotaDecision::DENIED;
        }
        let prefetch = self.attempt_prefetch(amount, now);
        self.counter.inc(amount, now);
        let granted = self.available(now) >= amount;
        if granted {
            self.subtract(amount, now);
        }
        QuotaDecision { granted, prefetch }
    }

    /// Feeds the backend's answer to prefetch `id`. Unknown ids (answered already, timed out, or
    /// never issued) are ignored.
    pub fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now: MonoTime) {
        let Some(pos) = self.inflight.iter().position(|f| f.id == id) else {
            return;
        };
        let f = self.inflight.swap_remove(pos);
        let (granted, expire) = match outcome {
            PrefetchOutcome::Failed => (f.amount, now.plus(self.opts.max_optimistic_expiration)),
            PrefetchOutcome::Granted { amount, valid_for } => {
                let granted = amount.clamp(0, f.amount);
                self.learn(&f, granted, valid_for, now);
                (granted, f.sent.plus(valid_for))
            }
        };

        match f.slot {
            Some(slot_id) => {
                // Settle the optimistic grant: take back what the server did not grant (from its
                // own slot first, then from the oldest tokens), or add what it granted beyond it.
                let mut shortfall = f.optimistic.saturating_sub(granted);
                if let Some(s) = self.slots.iter_mut().find(|s| s.id == slot_id) {
                    if shortfall < 0 {
                        s.available = s.available.saturating_sub(shortfall);
                        shortfall = 0;
                    }
                    let d = s.available.min(shortfall).max(0);
                    s.available -= d;
                    shortfall -= d;
                    s.expire = s.expire.min(expire);
                } else if shortfall < 0 {
                    self.add_slot(shortfall.saturating_neg(), expire);
                    shortfall = 0;
                }
                if shortfall > 0 {
                    self.subtract(shortfall, now);
                }
            }
            None if granted > 0 => {
                self.add_slot(granted, expire);
            }
            None => {}
        }
        self.recount();

        if granted == f.amount {
            self.mode = Mode::Open;
            self.optimistic_cap = None;
        } else {
            self.mode = Mode::Close;
            self.retry_at = now.plus(self.opts.close_wait_window);
            self.refresh_at = match outcome {
                PrefetchOutcome::Granted { valid_for, .. } if valid_for > Duration::ZERO => expire,
                _ => self.retry_at,
            };
            self.retry_at = self.retry_at.min(self.refresh_at);
        }
    }

    /// Tokens available at `now`.
    pub fn available(&self, now: MonoTime) -> i64 {
        if now < self.first_expire {
            debug_assert_eq!(self.tokens, self.count_available(now));
            return self.tokens;
        }
        self.count_available(now)
    }

    /// Tokens available at `now`, by a walk over the slots.
    fn count_available(&self, now: MonoTime) -> i64 {
        self.slots
            .iter()
            .filter(|s| now < s.expire)
            .fold(0i64, |a, s| a.saturating_add(s.available.max(0)))
    }

    /// Prefetches sent and not yet answered (nor timed out).
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Number of token slots held (bounded by `max_slots`).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Records what a (non-failed) answer says about the server.
    fn learn(&mut self, f: &Inflight, granted: i64, valid_for: Duration, now: MonoTime) {
        self.rtt = now.since(f.sent);
        if granted > 0 {
            self.validity[self.validity_pos % VALIDITY_HISTORY] = valid_for;
            self.validity_pos = self.validity_pos.wrapping_add(1);
            self.validity_max = self
                .validity
                .iter()
                .max()
                .copied()
                .unwrap_or(Duration::ZERO);
        }
        if valid_for > Duration::ZERO {
            let end = f.sent.plus(valid_for);
            // The same end (within the round trip, where the server computed it) is the same
            // validity period, e.g. the same fixed window.
            let same_period = self
                .server_end
                .is_some_and(|old| old.since(end).max(end.since(old)) <= self.rtt);
            if !same_period {
                self.period_granted = 0;
            }
            self.server_end = Some(end);
        }
        self.period_granted = self.period_granted.saturating_add(granted);
    }

    fn attempt_prefetch(&mut self, amount: i64, now: MonoTime) -> Option<PrefetchRequest> {
        let timeout = self.opts.response_timeout;
        self.inflight.retain(|f| now.since(f.sent) < timeout);
        let inflight = self.inflight.len();

        if self.mode == Mode::Close && inflight == 0 && now >= self.refresh_at {
            // The short grant's validity is over: the server has renewed.
            self.mode = Mode::Open;
            self.optimistic_cap = Some(self.period_granted);
        }
        if self.mode == Mode::Close && (inflight > 0 || now < self.retry_at) {
            return None;
        }
        if inflight >= self.opts.max_inflight {
            return None;
        }
        if self
            .server_end
            .is_some_and(|end| now < end && end < now.plus(self.rtt))
        {
            // The answer would arrive after the server's current validity period ends.
            return None;
        }

        let avail = self.available(now);
        // Tokens requested and not yet in hand (optimistic grants are already available).
        let pending = self.inflight.iter().fold(0i64, |a, f| {
            a.saturating_add(f.amount.saturating_sub(f.optimistic))
        });
        let enough = avail.saturating_add(pending) >= amount;
        let rate = self.counter.per_window(now);
        let uncapped = rate.max(self.opts.min_prefetch_amount);
        // `desired` below is at most `uncapped`: with this many tokens it cannot be low, so the
        // common case skips the validity cap's arithmetic.
        if enough && (inflight > 0 || avail >= uncapped / 2) {
            return None;
        }
        let desired = self.usable_cap(uncapped, rate);
        let low = avail < desired / 2 && inflight == 0;
        if !low && enough {
            return None;
        }

        let req = amount.max(desired);
        let optimistic = if avail == 0
            && self.mode == Mode::Open
            && self.inflight.iter().all(|f| f.slot.is_none())
        {
            self.optimistic_cap.map_or(req, |cap| cap.min(req))
        } else {
            0
        };
        let slot = (optimistic > 0)
            .then(|| self.add_slot(optimistic, now.plus(self.opts.max_optimistic_expiration)));
        let id = self.new_id();
        self.inflight.push(Inflight {
            id,
            amount: req,
            optimistic,
            slot,
            sent: now,
        });
        if self.mode == Mode::Close {
            self.retry_at = now.plus(self.opts.close_wait_window);
        }
        Some(PrefetchRequest { id, amount: req })
    }

    /// `desired` capped at what `rate` can use before tokens expire (the longest recent
    /// validity); at least 1.
    fn usable_cap(&self, desired: i64, rate: i64) -> i64 {
        let validity = self.validity_max;
        if validity.is_zero() {
            return desired;
        }
        let window = u64::try_from(self.opts.predict_window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let validity_ns = u64::try_from(validity.as_nanos()).unwrap_or(u64::MAX);
        let usable = u64::try_from(rate)
            .unwrap_or(0)
            .checked_mul(validity_ns)
            .map_or(u64::MAX, |n| n.div_ceil(window));
        desired.min(i64::try_from(usable).unwrap_or(i64::MAX).max(1))
    }

    /// Recomputes `tokens` and `first_expire` after the slots changed shape.
    fn recount(&mut self) {
        let mut tokens = 0i64;
        let mut first = MonoTime(u64::MAX);
        for s in &self.slots {
            tokens = tokens.saturating_add(s.available.max(0));
            first = first.min(s.expire);
        }
        self.tokens = tokens;
        self.first_expire = first;
    }

    fn new_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Takes `delta` tokens from the oldest unexpired slots; returns what could not be taken.
    #[inline]
    fn subtract(&mut self, delta: i64, now: MonoTime) -> i64 {
        // The common case: the oldest slot is live and covers the request.
        if let Some(head) = self.slots.front_mut()
            && delta > 0
            && now < head.expire
            && head.available > delta
        {
            head.available -= delta;
            self.tokens -= delta;
            return 0;
        }
        self.subtract_slow(delta, now)
    }

    fn subtract_slow(&mut self, mut delta: i64, now: MonoTime) -> i64 {
        let mut popped = false;
        while delta > 0 {
            let Some(head) = self.slots.front_mut() else {
                break;
            };
            if now < head.expire {
                let d = head.available.min(delta).max(0);
                head.available -= d;
                self.tokens -= d;
                delta -= d;
                if head.available > 0 {
                    break;
                }
            }
            self.slots.pop_front();
            popped = true;
        }
        if popped {
            self.recount();
        }
        delta
    }

    /// Appends a slot; when `max_slots` are held (after dropping empty ones), merges into the
    /// newest slot, keeping the earlier expiry (never extends a grant). Returns the slot's id.
    fn add_slot(&mut self, amount: i64, expire: MonoTime) -> u64 {
        if self.slots.len() >= self.opts.max_slots {
            let ids: Vec<u64> = self.inflight.iter().filter_map(|f| f.slot).collect();
            self.slots
                .retain(|s| s.available > 0 || ids.contains(&s.id));
        }
        if self.slots.len() >= self.opts.max_slots
            && let Some(last) = self.slots.back_mut()
        {
            last.available = last.available.saturating_add(amount);
            last.expire = last.expire.min(expire);
            let id = last.id;
            self.recount();
            return id;
        }
        let id = self.new_id();
        self.slots.push_back(Slot {
            available: amount,
            expire,
            id,
        });
        self.recount();
        id
    }
}
