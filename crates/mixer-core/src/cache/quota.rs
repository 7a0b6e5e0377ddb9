//! The quota token cache with prefetch (draft: faithful port first).

use std::collections::VecDeque;
use std::time::Duration;

use crate::pal::MonoTime;

/// Tuning of [`QuotaPrefetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaPrefetchOptions {
    pub predict_window: Duration,
    pub min_prefetch_amount: i64,
    pub close_wait_window: Duration,
    pub max_optimistic_expiration: Duration,
    pub max_slots: usize,
    pub max_inflight: usize,
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
            response_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefetchRequest {
    pub id: u64,
    pub amount: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaDecision {
    pub granted: bool,
    pub prefetch: Option<PrefetchRequest>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchOutcome {
    Granted { amount: i64, valid_for: Duration },
    Failed,
}

const COUNTER_SLOTS: usize = 20;

#[derive(Clone, Debug)]
struct RateCounter {
    slots: [i64; COUNTER_SLOTS],
    slot_ns: u64,
    count: i64,
    tail: usize,
    last: u64,
}

impl RateCounter {
    fn new(window: Duration, now: MonoTime) -> Self {
        let w = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        RateCounter {
            slots: [0; COUNTER_SLOTS],
            slot_ns: (w / COUNTER_SLOTS as u64).max(1),
            count: 0,
            tail: 0,
            last: now.0,
        }
    }
    fn roll(&mut self, now: MonoTime) {
        let n = now.0.saturating_sub(self.last) / self.slot_ns;
        if n >= COUNTER_SLOTS as u64 {
            self.slots = [0; COUNTER_SLOTS];
            self.count = 0;
            self.tail = 0;
            self.last = now.0;
            return;
        }
        for _ in 0..n {
            self.tail = (self.tail + 1) % COUNTER_SLOTS;
            self.count = self.count.saturating_sub(self.slots[self.tail]);
            self.slots[self.tail] = 0;
            self.last += self.slot_ns;
        }
    }
    fn inc(&mut self, n: i64, now: MonoTime) {
        self.roll(now);
        self.slots[self.tail] = self.slots[self.tail].saturating_add(n);
        self.count = self.count.saturating_add(n);
    }
    fn count(&mut self, now: MonoTime) -> i64 {
        self.roll(now);
        self.count
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
    amount: i64,
    slot: Option<u64>,
    sent: MonoTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Open,
    Close,
}

#[derive(Clone, Debug)]
pub struct QuotaPrefetch {
    opts: QuotaPrefetchOptions,
    slots: VecDeque<Slot>,
    counter: RateCounter,
    mode: Mode,
    inflight: Vec<Inflight>,
    last_prefetch: Option<MonoTime>,
    next_id: u64,
}

impl QuotaPrefetch {
    pub fn new(opts: QuotaPrefetchOptions, now: MonoTime) -> Self {
        QuotaPrefetch {
            opts,
            slots: VecDeque::new(),
            counter: RateCounter::new(opts.predict_window, now),
            mode: Mode::Open,
            inflight: Vec::new(),
            last_prefetch: None,
            next_id: 0,
        }
    }

    fn count_available(&self, now: MonoTime) -> i64 {
        self.slots
            .iter()
            .filter(|s| now < s.expire)
            .fold(0i64, |a, s| a.saturating_add(s.available))
    }

    fn subtract(&mut self, mut delta: i64, now: MonoTime) -> i64 {
        while delta > 0 {
            let Some(head) = self.slots.front_mut() else { break };
            if now < head.expire {
                let d = head.available.min(delta).max(0);
                head.available -= d;
                delta -= d;
                if head.available > 0 {
                    return 0;
                }
            }
            self.slots.pop_front();
        }
        delta
    }

    fn add_slot(&mut self, amount: i64, expire: MonoTime) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.slots.push_back(Slot { available: amount, expire, id });
        id
    }

    pub fn check(&mut self, amount: i64, now: MonoTime) -> QuotaDecision {
        if amount <= 0 {
            return QuotaDecision { granted: false, prefetch: None };
        }
        let prefetch = self.attempt_prefetch(amount, now);
        self.counter.inc(amount, now);
        let granted = if self.count_available(now) >= amount {
            self.subtract(amount, now);
            true
        } else {
            false
        };
        QuotaDecision { granted, prefetch }
    }

    fn attempt_prefetch(&mut self, amount: i64, now: MonoTime) -> Option<PrefetchRequest> {
        let inflight = self.inflight.len();
        if self.mode == Mode::Close
            && (inflight > 0
                || self.last_prefetch.is_some_and(|l| now.since(l) < self.opts.close_wait_window))
        {
            return None;
        }
        let avail = self.count_available(now);
        let desired = self.counter.count(now).max(self.opts.min_prefetch_amount);
        if (avail < desired / 2 && inflight == 0) || avail < amount {
            let use_not_granted = avail == 0 && self.mode == Mode::Open;
            let req = amount.max(desired);
            let slot = use_not_granted
                .then(|| self.add_slot(req, now.plus(self.opts.max_optimistic_expiration)));
            self.next_id += 1;
            let id = self.next_id;
            self.last_prefetch = Some(now);
            self.inflight.push(Inflight { id, amount: req, slot, sent: now });
            return Some(PrefetchRequest { id, amount: req });
        }
        None
    }

    pub fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now: MonoTime) {
        let Some(pos) = self.inflight.iter().position(|f| f.id == id) else { return };
        let f = self.inflight.remove(pos);
        let (resp, valid_for) = match outcome {
            PrefetchOutcome::Failed => (f.amount, self.opts.max_optimistic_expiration),
            PrefetchOutcome::Granted { amount, valid_for } => (amount.clamp(0, f.amount), valid_for),
        };
        if let Some(slot_id) = f.slot {
            let mut delta = f.amount - resp;
            let mut found = false;
            if let Some(s) = self.slots.iter_mut().find(|s| s.id == slot_id) {
                found = true;
                let d = s.available.min(delta).max(0);
                s.available -= d;
                delta -= d;
                if s.available > 0 {
                    s.expire = now.plus(valid_for);
                }
            }
            let _ = found;
            if delta > 0 {
                self.subtract(delta, now);
            }
        } else if resp > 0 {
            self.add_slot(resp, now.plus(valid_for));
        }
        self.mode = if resp == f.amount { Mode::Open } else { Mode::Close };
    }
}
