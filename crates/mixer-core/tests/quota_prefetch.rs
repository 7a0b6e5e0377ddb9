//! The quota token cache with prefetch: the C++ Mixer client's scenarios (istio/proxy
//! `quota_prefetch_test.cc`), on virtual time, with the achieved margins printed next to the C++
//! ones (`cargo test -p mixer-core --test quota_prefetch -- --nocapture`), plus edge cases.
//!
//! Each scenario suite runs five traffic levels back to back on the same clients and server:
//! (rate - delta), rate, (rate + delta), rate / 2 and 10 * rate per window, evenly spaced over 10
//! windows; margin = |passed - min(rate * 10, traffic)| / min(rate * 10, traffic). Server answers
//! come back 200 ms after the request through a [`VirtualPlatform`] timer.
//!
//! To show the harness matches the C++ one, a faithful port of the C++ algorithm ([`cpp_port`])
//! also runs in "C++-style delivery" (answers handed over after the check of the first tick at or
//! past their due time, exactly as the C++ test's `Delay::OnTimer` did): it must reproduce the
//! published C++ margins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mixer_core::cache::quota::{
    PrefetchOutcome, PrefetchRequest, QuotaCache, QuotaCacheConfig, QuotaDecision, QuotaPrefetch,
    QuotaPrefetchOptions,
};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{Dispatcher, MonoTime};
use parking_lot::Mutex;

const MS: u64 = 1_000_000;
const RESPONSE_DELAY_MS: i64 = 200;
const TEST_WINDOWS: i64 = 10;

fn ms(t: i64) -> MonoTime {
    MonoTime(u64::try_from(t).expect("non-negative time") * MS)
}

/// A faithful port of the C++ client (`quota_prefetch.cc` + `time_based_counter.cc`), used only
/// to validate the harness against the published margins.
mod cpp_port {
    use std::collections::VecDeque;

    use super::{PrefetchOutcome, PrefetchRequest, QuotaDecision};

    const PREDICT_WINDOW_MS: i64 = 1000;
    const MIN_PREFETCH: i64 = 10;
    const CLOSE_WAIT_MS: i64 = 500;
    const MAX_EXPIRATION_MS: i64 = 60_000;
    const SLOTS: usize = 20;

    struct Counter {
        slots: [i64; SLOTS],
        count: i64,
        tail: usize,
        last: i64,
    }

    impl Counter {
        fn roll(&mut self, t: i64) {
            let d = PREDICT_WINDOW_MS / SLOTS as i64;
            let n = (t - self.last) / d;
            if n >= SLOTS as i64 {
                *self = Counter {
                    slots: [0; SLOTS],
                    count: 0,
                    tail: 0,
                    last: t,
                };
                return;
            }
            for _ in 0..n {
                self.tail = (self.tail + 1) % SLOTS;
                self.count -= self.slots[self.tail];
                self.slots[self.tail] = 0;
                self.last += d;
            }
        }
    }

    struct Slot {
        available: i64,
        expire: i64,
        id: u64,
    }

    pub struct CppQuotaPrefetch {
        queue: VecDeque<Slot>,
        counter: Counter,
        open: bool,
        inflight: Vec<(u64, i64, u64)>, // (request id, requested, optimistic slot id or 0)
        last_prefetch: i64,
        next_id: u64,
    }

    impl CppQuotaPrefetch {
        pub fn new() -> Self {
            CppQuotaPrefetch {
                queue: VecDeque::new(),
                counter: Counter {
                    slots: [0; SLOTS],
                    count: 0,
                    tail: 0,
                    last: 0,
                },
                open: true,
                inflight: Vec::new(),
                last_prefetch: 0,
                next_id: 0,
            }
        }

        fn available(&self, t: i64) -> i64 {
            self.queue
                .iter()
                .filter(|s| t < s.expire)
                .map(|s| s.available)
                .sum()
        }

        fn subtract(&mut self, mut delta: i64, t: i64) -> i64 {
            while let Some(n) = self.queue.front_mut() {
                if delta <= 0 {
                    break;
                }
                if t < n.expire {
                    let d = n.available.min(delta);
                    n.available -= d;
                    delta -= d;
                    if n.available > 0 {
                        return 0;
                    }
                }
                self.queue.pop_front();
            }
            delta
        }

        fn add(&mut self, available: i64, expire: i64) -> u64 {
            self.next_id += 1;
            self.queue.push_back(Slot {
                available,
                expire,
                id: self.next_id,
            });
            self.next_id
        }

        pub fn check(&mut self, amount: i64, t: i64) -> QuotaDecision {
            let prefetch = self.attempt_prefetch(amount, t);
            self.counter.roll(t);
            self.counter.slots[self.counter.tail] += amount;
            self.counter.count += amount;
            let granted = if amount == 1 {
                self.subtract(1, t) == 0
            } else {
                let ok = self.available(t) >= amount;
                if ok {
                    self.subtract(amount, t);
                }
                ok
            };
            QuotaDecision { granted, prefetch }
        }

        fn attempt_prefetch(&mut self, amount: i64, t: i64) -> Option<PrefetchRequest> {
            let inflight = self.inflight.len();
            if !self.open && (inflight > 0 || t - self.last_prefetch < CLOSE_WAIT_MS) {
                return None;
            }
            let avail = self.available(t);
            self.counter.roll(t);
            let desired = self.counter.count.max(MIN_PREFETCH);
            if !((avail < desired / 2 && inflight == 0) || avail < amount) {
                return None;
            }
            let req = amount.max(desired);
            let slot = if avail == 0 && self.open {
                self.add(req, t + MAX_EXPIRATION_MS)
            } else {
                0
            };
            self.last_prefetch = t;
            self.next_id += 1;
            self.inflight.push((self.next_id, req, slot));
            Some(PrefetchRequest {
                id: self.next_id,
                amount: req,
            })
        }

        pub fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, t: i64) {
            let Some(pos) = self.inflight.iter().position(|f| f.0 == id) else {
                return;
            };
            let (_, req, slot_id) = self.inflight.remove(pos);
            let (resp, expiration) = match outcome {
                PrefetchOutcome::Granted { amount, valid_for } => (
                    amount,
                    i64::try_from(valid_for.as_millis()).expect("test durations"),
                ),
                PrefetchOutcome::Failed => (req, MAX_EXPIRATION_MS),
            };
            if slot_id != 0 {
                let mut delta = req - resp;
                let pos = self.queue.iter().position(|s| s.id == slot_id);
                if delta > 0 {
                    if let Some(p) = pos {
                        let d = self.queue[p].available.min(delta);
                        self.queue[p].available -= d;
                        delta -= d;
                    }
                    if delta > 0 {
                        self.subtract(delta, t);
                    }
                }
                let pos = self.queue.iter().position(|s| s.id == slot_id);
                if let Some(p) = pos
                    && self.queue[p].available > 0
                {
                    self.queue[p].expire = t + expiration;
                }
            } else if resp > 0 {
                self.add(resp, t + expiration);
            }
            self.open = resp == req;
        }
    }
}

/// A client under test: one proxy's quota state for one key.
trait Client: Send {
    fn check(&mut self, amount: i64, now_ms: i64) -> QuotaDecision;
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now_ms: i64);
}

impl Client for QuotaPrefetch {
    fn check(&mut self, amount: i64, now_ms: i64) -> QuotaDecision {
        QuotaPrefetch::check(self, amount, ms(now_ms))
    }
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now_ms: i64) {
        QuotaPrefetch::on_response(self, id, outcome, ms(now_ms))
    }
}

impl Client for cpp_port::CppQuotaPrefetch {
    fn check(&mut self, amount: i64, now_ms: i64) -> QuotaDecision {
        cpp_port::CppQuotaPrefetch::check(self, amount, now_ms)
    }
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now_ms: i64) {
        cpp_port::CppQuotaPrefetch::on_response(self, id, outcome, now_ms)
    }
}

/// One key of a shared [`QuotaCache`], as a client.
struct CacheClient {
    cache: Arc<QuotaCache>,
    key: &'static str,
}

impl Client for CacheClient {
    fn check(&mut self, amount: i64, now_ms: i64) -> QuotaDecision {
        self.cache
            .check("requestcount", self.key, amount, ms(now_ms))
    }
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now_ms: i64) {
        self.cache
            .on_response("requestcount", self.key, id, outcome, ms(now_ms))
    }
}

/// A rate-limit server, as in the C++ test (integer milliseconds).
trait Server: Send {
    /// Grants up to `amount` at `now_ms`; returns (granted, valid for in ms).
    fn alloc(&mut self, amount: i64, now_ms: i64) -> (i64, i64);
}

/// The C++ test's "RollingWindow": a fixed window that starts at the first allocation after the
/// previous one ended; answers the time left in the window.
struct FixedWindow {
    rate: i64,
    window_ms: i64,
    avail: i64,
    expire_ms: i64,
}

impl Server for FixedWindow {
    fn alloc(&mut self, amount: i64, now_ms: i64) -> (i64, i64) {
        if now_ms >= self.expire_ms {
            self.avail = self.rate;
            self.expire_ms = now_ms + self.window_ms;
        }
        let g = amount.min(self.avail);
        self.avail -= g;
        (g, self.expire_ms - now_ms)
    }
}

/// The C++ test's "TimeBased": a token bucket of `rate` tokens refilled at rate/window with the
/// same integer arithmetic; always answers "valid for one window".
struct TokenBucket {
    rate: i64,
    window_ms: i64,
    allowance: i64,
    last_ms: i64,
}

impl Server for TokenBucket {
    fn alloc(&mut self, amount: i64, now_ms: i64) -> (i64, i64) {
        let d = now_ms - self.last_ms;
        self.allowance = (self.allowance + d * self.rate / self.window_ms).min(self.rate);
        self.last_ms = now_ms;
        let g = amount.min(self.allowance);
        self.allowance -= g;
        (g, self.window_ms)
    }
}

#[derive(Clone, Copy)]
struct Data {
    name: &'static str,
    rate: i64,
    window_ms: i64,
    delta: i64,
}

const PER_MINUTE: Data = Data {
    name: "Big",
    rate: 1200,
    window_ms: 60_000,
    delta: 100,
};
const PER_SECOND: Data = Data {
    name: "Small",
    rate: 20,
    window_ms: 1000,
    delta: 2,
};

type SharedClient = Arc<Mutex<dyn Client>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Answers arrive exactly 200 ms after the request, through `VirtualPlatform` timers.
    Exact,
    /// As the C++ test: answers are handed over after the check of the first traffic tick at or
    /// past their due time, with that tick's time.
    CppStyle,
}

type Deferred = (i64, Box<dyn FnOnce(i64) + Send>);

struct Sim {
    platform: VirtualPlatform,
    server: Arc<Mutex<dyn Server>>,
    delivery: Delivery,
    queue: Mutex<std::collections::VecDeque<Deferred>>,
}

impl Sim {
    fn new(server: Arc<Mutex<dyn Server>>, delivery: Delivery) -> Self {
        Sim {
            platform: VirtualPlatform::new(),
            server,
            delivery,
            queue: Default::default(),
        }
    }

    /// One check of 1 token by `c` at `t_ms`; returns whether it passed.
    fn check(&self, c: &SharedClient, t_ms: i64) -> bool {
        if self.delivery == Delivery::Exact {
            self.platform.advance(ms(t_ms).since(self.platform.now()));
        }
        let d = c.lock().check(1, t_ms);
        if let Some(req) = d.prefetch {
            let (granted, valid_ms) = self.server.lock().alloc(req.amount, t_ms);
            let outcome = PrefetchOutcome::Granted {
                amount: granted,
                valid_for: Duration::from_millis(u64::try_from(valid_ms).expect("server validity")),
            };
            let c2 = c.clone();
            match self.delivery {
                Delivery::Exact => {
                    let p = self.platform.clone();
                    self.platform.schedule(
                        Duration::from_millis(RESPONSE_DELAY_MS as u64),
                        Box::new(move || {
                            let now = i64::try_from(p.now().0 / MS).expect("test times");
                            c2.lock().on_response(req.id, outcome, now)
                        }),
                    );
                }
                Delivery::CppStyle => self.queue.lock().push_back((
                    t_ms + RESPONSE_DELAY_MS,
                    Box::new(move |now| c2.lock().on_response(req.id, outcome, now)),
                )),
            }
        }
        if self.delivery == Delivery::CppStyle {
            loop {
                let due = {
                    let mut q = self.queue.lock();
                    if q.front().is_some_and(|(at, _)| *at <= t_ms) {
                        q.pop_front()
                    } else {
                        None
                    }
                };
                match due {
                    Some((_, f)) => f(t_ms),
                    None => break,
                }
            }
        }
        d.granted
    }
}

/// The C++ test's RunSingleClient.
fn run_one(sim: &Sim, c: &SharedClient, traffic: i64, span_ms: i64, t0: i64) -> i64 {
    let d = span_ms / traffic;
    (0..traffic)
        .map(|i| i64::from(sim.check(c, t0 + i * d)))
        .sum()
}

/// The C++ test's RunTwoClients: client 1 gets `r1` of the checks, client 2 `r2`, interleaved.
fn run_two(sim: &Sim, c: [&SharedClient; 2], r1: i64, r2: i64, span_ms: i64, t0: i64) -> i64 {
    let rate = r1 + r2;
    let d = span_ms / rate;
    let (mut n1, mut n2, mut passed) = (0i64, 0i64, 0i64);
    for i in 0..rate {
        let first = (n1 as f32) / (r1 as f32) <= (n2 as f32) / (r2 as f32);
        let client = if first {
            n1 += 1;
            c[0]
        } else {
            n2 += 1;
            c[1]
        };
        passed += i64::from(sim.check(client, t0 + i * d));
    }
    passed
}

#[derive(Clone, Copy)]
struct Suite {
    fixed_window: bool,
    data: Data,
    clients: usize,
    cpp: [f64; 5],
}

impl Suite {
    fn name(&self) -> String {
        format!(
            "{}{}{}",
            if self.clients == 2 { "TwoClient" } else { "" },
            self.data.name,
            if self.fixed_window {
                "RollingWindow"
            } else {
                "TimeBased"
            }
        )
    }

    /// Runs the five traffic levels back to back; returns the margins.
    fn run(&self, delivery: Delivery, mk: &dyn Fn(usize) -> SharedClient) -> [f64; 5] {
        let data = self.data;
        let server: Arc<Mutex<dyn Server>> = if self.fixed_window {
            Arc::new(Mutex::new(FixedWindow {
                rate: data.rate,
                window_ms: data.window_ms,
                avail: 0,
                expire_ms: 0,
            }))
        } else {
            Arc::new(Mutex::new(TokenBucket {
                rate: data.rate,
                window_ms: data.window_ms,
                allowance: data.rate,
                last_ms: 0,
            }))
        };
        let sim = Sim::new(server, delivery);
        let (c1, c2) = (mk(0), mk(1));
        let traffics = [
            (data.rate - data.delta) * TEST_WINDOWS,
            data.rate * TEST_WINDOWS,
            (data.rate + data.delta) * TEST_WINDOWS,
            (data.rate / 2) * TEST_WINDOWS,
            (data.rate * 10) * TEST_WINDOWS,
        ];
        let span = data.window_ms * TEST_WINDOWS;
        let mut margins = [0.0; 5];
        for (k, &traffic) in traffics.iter().enumerate() {
            let t0 = span * k as i64;
            let expected = (data.rate * TEST_WINDOWS).min(traffic);
            let passed = if self.clients == 1 {
                run_one(&sim, &c1, traffic, span, t0)
            } else {
                run_two(&sim, [&c1, &c2], traffic * 3 / 4, traffic / 4, span, t0)
            };
            margins[k] = (passed - expected).abs() as f64 / expected as f64;
        }
        margins
    }
}

/// The C++ test's suites and its published margins (the bounds of its `EXPECT_LE`).
const SUITES: [Suite; 8] = [
    Suite {
        fixed_window: true,
        data: PER_MINUTE,
        clients: 1,
        cpp: [0.0, 0.006, 0.0015, 0.0, 0.06],
    },
    Suite {
        fixed_window: true,
        data: PER_SECOND,
        clients: 1,
        cpp: [0.26, 0.23, 0.25, 0.04, 0.23],
    },
    Suite {
        fixed_window: false,
        data: PER_MINUTE,
        clients: 1,
        cpp: [0.0, 0.0, 0.08, 0.0, 0.1],
    },
    Suite {
        fixed_window: false,
        data: PER_SECOND,
        clients: 1,
        cpp: [0.0, 0.0, 0.035, 0.03, 0.23],
    },
    Suite {
        fixed_window: true,
        data: PER_MINUTE,
        clients: 2,
        cpp: [0.0, 0.006, 0.0015, 0.001, 0.057],
    },
    Suite {
        fixed_window: true,
        data: PER_SECOND,
        clients: 2,
        cpp: [0.33, 0.30, 0.30, 0.14, 0.22],
    },
    Suite {
        fixed_window: false,
        data: PER_MINUTE,
        clients: 2,
        cpp: [0.0, 0.0, 0.055, 0.0, 0.0005],
    },
    Suite {
        fixed_window: false,
        data: PER_SECOND,
        clients: 2,
        cpp: [0.062, 0.14, 0.15, 0.05, 0.17],
    },
];

/// Cells where no client that follows the server can reach the C++ figure; the bound used
/// instead, and why. (suite index, traffic level, bound, reason)
const EXEMPT: [(usize, usize, f64, &str); 3] = [
    (
        0,
        3,
        0.002,
        "rate/2 starts inside a window the previous (over-limit) level exhausted: the server denies \
         until it resets (8 checks); the C++ client started each window up to \
         500 ms late, so its windows happened to fall elsewhere",
    ),
    (
        4,
        3,
        0.002,
        "same as BigRollingWindow rate/2 (the faithful port also gets 0.0028 here)",
    ),
    (
        6,
        4,
        0.1,
        "the token bucket is full (1200) when 10x starts and the server grants it; C++'s 0.0005 is \
         that burst cancelled by tokens its two clients lost to the test server's integer refill \
         (its single-client figure for the same burst is 0.1; the faithful port gets 0.0008)",
    ),
];

fn ours(_: usize) -> SharedClient {
    Arc::new(Mutex::new(QuotaPrefetch::new(
        QuotaPrefetchOptions::default(),
        MonoTime(0),
    )))
}

fn port(_: usize) -> SharedClient {
    Arc::new(Mutex::new(cpp_port::CppQuotaPrefetch::new()))
}

fn fmt_row(label: &str, m: &[f64; 5]) -> String {
    let cells: Vec<String> = m.iter().map(|x| format!("{x:>7.4}")).collect();
    format!("  {label:<34}{}", cells.join(" "))
}

#[test]
fn cpp_scenarios_margins_no_looser_than_cpp() {
    let mut failures = Vec::new();
    println!();
    println!(
        "  {:<34}{:>7} {:>7} {:>7} {:>7} {:>7}",
        "margin |passed-expected|/expected", "rate-d", "rate", "rate+d", "rate/2", "10*rate"
    );
    for (i, suite) in SUITES.iter().enumerate() {
        let ours_exact = suite.run(Delivery::Exact, &ours);
        let ours_cpp_style = suite.run(Delivery::CppStyle, &ours);
        let port_exact = suite.run(Delivery::Exact, &port);
        let port_cpp_style = suite.run(Delivery::CppStyle, &port);
        println!("{}", suite.name());
        println!("{}", fmt_row("C++ published", &suite.cpp));
        println!(
            "{}",
            fmt_row("C++ port, C++-style delivery", &port_cpp_style)
        );
        println!("{}", fmt_row("C++ port, exact 200 ms", &port_exact));
        println!("{}", fmt_row("ours, C++-style delivery", &ours_cpp_style));
        println!("{}", fmt_row("ours, exact 200 ms", &ours_exact));
        for k in 0..5 {
            // The port in the C++ harness reproduces the published margins.
            if port_cpp_style[k] > suite.cpp[k] + 1e-9 {
                failures.push(format!(
                    "{} level {k}: port {} > C++ {}",
                    suite.name(),
                    port_cpp_style[k],
                    suite.cpp[k]
                ));
            }
            let exempt = EXEMPT.iter().find(|e| e.0 == i && e.1 == k);
            let bound = exempt.map_or(suite.cpp[k], |e| e.2);
            if let Some(e) = exempt {
                println!(
                    "  (level {k}: bound {} instead of C++ {}: {})",
                    e.2, suite.cpp[k], e.3
                );
            }
            if ours_exact[k] > bound + 1e-9 {
                failures.push(format!(
                    "{} level {k}: ours {} > bound {bound}",
                    suite.name(),
                    ours_exact[k]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn cache_behaves_as_independent_clients() {
    // Two clients as two keys of one cache give the same margins as two state machines.
    let suite = SUITES[5];
    let direct = suite.run(Delivery::Exact, &ours);
    let cache = Arc::new(QuotaCache::new(QuotaCacheConfig::default()));
    let keys = ["proxy-1", "proxy-2"];
    let via_cache = suite.run(Delivery::Exact, &|i| {
        Arc::new(Mutex::new(CacheClient {
            cache: cache.clone(),
            key: keys[i],
        })) as SharedClient
    });
    assert_eq!(direct, via_cache);
    let s = cache.stats();
    let checks = s.checks.load(std::sync::atomic::Ordering::Relaxed);
    let prefetches = s.prefetches.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(checks, 180 + 200 + 220 + 100 + 2000);
    assert!(
        prefetches * 10 < checks,
        "most checks stay local: {prefetches} of {checks}"
    );
    assert_eq!(cache.len(), 2);
}

#[test]
fn not_enough_amount() {
    // The C++ TestNotEnoughAmount: fixed window of 5/s, answers delivered without delay.
    let mut server = FixedWindow {
        rate: 5,
        window_ms: 1000,
        avail: 0,
        expire_ms: 0,
    };
    let mut c = QuotaPrefetch::new(QuotaPrefetchOptions::default(), MonoTime(0));
    let mut step = |c: &mut QuotaPrefetch, amount: i64, t: i64| {
        let d = c.check(amount, ms(t));
        if let Some(req) = d.prefetch {
            let (granted, valid) = server.alloc(req.amount, t);
            let valid_for = Duration::from_millis(u64::try_from(valid).unwrap());
            c.on_response(
                req.id,
                PrefetchOutcome::Granted {
                    amount: granted,
                    valid_for,
                },
                ms(t),
            );
        }
        d.granted
    };
    assert!(
        step(&mut c, 1, 0),
        "the first check is granted optimistically and prefetches"
    );
    assert!(!step(&mut c, 5, 1), "only 4 tokens are left");
    assert!(step(&mut c, 4, 2), "the failed check took nothing");
}

fn opts() -> QuotaPrefetchOptions {
    QuotaPrefetchOptions::default()
}

#[test]
fn failure_fails_open() {
    let mut c = QuotaPrefetch::new(opts(), MonoTime(0));
    let d = c.check(1, ms(0));
    let req = d.prefetch.expect("first check prefetches");
    assert!(d.granted);
    c.on_response(req.id, PrefetchOutcome::Failed, ms(200));
    // The whole request is granted, valid for max_optimistic_expiration.
    assert_eq!(c.available(ms(200)), req.amount - 1);
    assert_eq!(c.available(ms(59_000)), req.amount - 1);
    assert_eq!(c.available(ms(60_300)), 0);
    // Still OPEN: the next prefetch with nothing left is optimistic again.
    let d = c.check(1, ms(60_300));
    assert!(d.granted && d.prefetch.is_some());
}

#[test]
fn unknown_and_repeated_ids_are_ignored() {
    let mut c = QuotaPrefetch::new(opts(), MonoTime(0));
    let req = c.check(1, ms(0)).prefetch.unwrap();
    let before = c.available(ms(1));
    let grant = PrefetchOutcome::Granted {
        amount: 1000,
        valid_for: Duration::from_secs(1),
    };
    c.on_response(req.id + 12345, grant, ms(1));
    c.on_response(0, PrefetchOutcome::Failed, ms(1));
    assert_eq!(c.available(ms(1)), before);
    assert_eq!(c.inflight(), 1);
    c.on_response(req.id, grant, ms(2));
    let after = c.available(ms(2));
    c.on_response(req.id, grant, ms(3));
    assert_eq!(
        c.available(ms(3)),
        after,
        "a second answer to the same id is ignored"
    );
    assert_eq!(c.inflight(), 0);
}

#[test]
fn grants_are_clamped_to_the_request() {
    let mut c = QuotaPrefetch::new(opts(), MonoTime(0));
    let req = c.check(1, ms(0)).prefetch.unwrap();
    let huge = PrefetchOutcome::Granted {
        amount: i64::MAX,
        valid_for: Duration::from_secs(1),
    };
    c.on_response(req.id, huge, ms(200));
    assert_eq!(
        c.available(ms(200)),
        req.amount - 1,
        "never more than requested"
    );

    let mut c = QuotaPrefetch::new(opts(), MonoTime(0));
    let req = c.check(1, ms(0)).prefetch.unwrap();
    let negative = PrefetchOutcome::Granted {
        amount: -7,
        valid_for: Duration::from_secs(1),
    };
    c.on_response(req.id, negative, ms(200));
    assert_eq!(c.available(ms(200)), 0, "a negative grant is a denial");
}

#[test]
fn non_positive_amounts_are_denied_without_effect() {
    let mut c = QuotaPrefetch::new(opts(), MonoTime(0));
    for amount in [0, -1, i64::MIN] {
        assert_eq!(
            c.check(amount, ms(0)),
            QuotaDecision {
                granted: false,
                prefetch: None
            }
        );
    }
    assert_eq!(c.inflight(), 0);
    let cache = QuotaCache::new(QuotaCacheConfig::default());
    assert!(!cache.check("q", "k", 0, ms(0)).granted);
}

#[test]
fn extreme_values_do_not_panic() {
    let mut c = QuotaPrefetch::new(opts(), MonoTime(u64::MAX - 5));
    let d = c.check(i64::MAX, MonoTime(u64::MAX - 5));
    let req = d.prefetch.unwrap();
    assert_eq!(req.amount, i64::MAX);
    let forever = PrefetchOutcome::Granted {
        amount: i64::MAX,
        valid_for: Duration::MAX,
    };
    c.on_response(req.id, forever, MonoTime(u64::MAX));
    assert!(c.check(i64::MAX, MonoTime(u64::MAX)).granted || c.available(MonoTime(u64::MAX)) >= 0);
    // Zero predict window and zero validity.
    let zero = QuotaPrefetchOptions {
        predict_window: Duration::ZERO,
        close_wait_window: Duration::ZERO,
        max_optimistic_expiration: Duration::ZERO,
        min_prefetch_amount: -5,
        max_slots: 0,
        max_inflight: 0,
        response_timeout: Duration::ZERO,
    };
    let mut c = QuotaPrefetch::new(zero, MonoTime(0));
    for t in 0..100 {
        let d = c.check(1 + t % 3, MonoTime(t as u64));
        if let Some(r) = d.prefetch {
            let g = PrefetchOutcome::Granted {
                amount: r.amount,
                valid_for: Duration::ZERO,
            };
            c.on_response(r.id, g, MonoTime(t as u64));
        }
    }
}

#[test]
fn pseudo_random_sequences_keep_invariants() {
    // A small LCG drives arbitrary checks and answers (including stale, duplicate, failed and
    // oversized ones); the state stays bounded and never holds more than was granted.
    let o = QuotaPrefetchOptions {
        max_slots: 4,
        max_inflight: 2,
        ..opts()
    };
    let mut c = QuotaPrefetch::new(o, MonoTime(0));
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let mut outstanding: Vec<PrefetchRequest> = Vec::new();
    let mut t = 0u64;
    let mut granted_total: i64 = 0;
    let mut passed_total: i64 = 0;
    for _ in 0..20_000 {
        t += next() % 50 * MS;
        let amount = (next() % 5) as i64 - 1;
        let d = c.check(amount, MonoTime(t));
        if d.granted {
            passed_total += amount;
        }
        if let Some(r) = d.prefetch {
            assert!(r.amount > 0);
            outstanding.push(r);
        }
        if !outstanding.is_empty() && next() % 3 == 0 {
            let r = outstanding.swap_remove((next() as usize) % outstanding.len());
            let outcome = match next() % 4 {
                0 => PrefetchOutcome::Failed,
                1 => PrefetchOutcome::Granted {
                    amount: r.amount * 2,
                    valid_for: Duration::from_millis(next() % 2000),
                },
                _ => PrefetchOutcome::Granted {
                    amount: (next() % 30) as i64,
                    valid_for: Duration::from_millis(next() % 2000),
                },
            };
            granted_total += match outcome {
                PrefetchOutcome::Failed => r.amount,
                PrefetchOutcome::Granted { amount, .. } => amount.min(r.amount),
            };
            c.on_response(r.id, outcome, MonoTime(t));
            if next() % 5 == 0 {
                c.on_response(r.id, outcome, MonoTime(t)); // duplicate: ignored
            }
        }
        assert!(c.slots() <= 4, "slots bounded");
        assert!(c.inflight() <= 2, "in-flight bounded");
    }
    // Optimistic grants can run ahead of answers, but never by more than the requests themselves;
    // what is settled never exceeds what was granted plus what is still outstanding.
    let outstanding_amount: i64 = outstanding.iter().map(|r| r.amount).sum();
    assert!(
        passed_total <= granted_total + outstanding_amount,
        "{passed_total} > {granted_total} + {outstanding_amount}"
    );
}

#[test]
fn slots_are_bounded_by_merging() {
    let o = QuotaPrefetchOptions {
        max_slots: 3,
        max_inflight: 64,
        ..opts()
    };
    let mut c = QuotaPrefetch::new(o, MonoTime(0));
    // Many big checks, each needing its own prefetch, all answered in full.
    let mut reqs = Vec::new();
    for i in 0..50 {
        if let Some(r) = c.check(1000, ms(i)).prefetch {
            reqs.push(r);
        }
    }
    assert!(c.inflight() <= 64);
    let total: i64 = reqs.iter().map(|r| r.amount).sum();
    for r in &reqs {
        let g = PrefetchOutcome::Granted {
            amount: r.amount,
            valid_for: Duration::from_secs(10),
        };
        c.on_response(r.id, g, ms(100));
    }
    assert!(c.slots() <= 3);
    assert!(c.available(ms(100)) <= total);
    assert!(c.available(ms(100)) > 0, "merged tokens are kept");
}

#[test]
fn inflight_is_bounded_and_forgotten_after_timeout() {
    let o = QuotaPrefetchOptions {
        max_inflight: 2,
        response_timeout: Duration::from_secs(5),
        ..opts()
    };
    let mut c = QuotaPrefetch::new(o, MonoTime(0));
    let mut ids = Vec::new();
    for i in 0..10 {
        if let Some(r) = c.check(100, ms(i)).prefetch {
            ids.push(r.id);
        }
    }
    assert_eq!(ids.len(), 2, "at most max_inflight prefetches at once");
    // Unanswered for longer than the timeout: forgotten, and a new prefetch may go.
    let d = c.check(100, ms(6000));
    assert!(d.prefetch.is_some());
    assert_eq!(c.inflight(), 1);
    let before = c.available(ms(6001));
    c.on_response(
        ids[0],
        PrefetchOutcome::Granted {
            amount: 100,
            valid_for: Duration::from_secs(9),
        },
        ms(6001),
    );
    assert_eq!(
        c.available(ms(6001)),
        before,
        "the late answer of a forgotten request is ignored"
    );
}

#[test]
fn short_grant_closes_until_window_end() {
    // A fixed window: the short answer says the window resets in 300 ms; no prefetch before, one
    // right at the reset, and the client's next optimistic grant is capped at the last window's.
    let mut c = QuotaPrefetch::new(opts(), MonoTime(0));
    let r = c.check(1, ms(0)).prefetch.unwrap();
    c.on_response(
        r.id,
        PrefetchOutcome::Granted {
            amount: 3,
            valid_for: Duration::from_millis(500),
        },
        ms(200),
    );
    assert_eq!(
        c.available(ms(200)),
        2,
        "optimistic grant settled to the 3 granted"
    );
    for t in [210, 300, 400, 450] {
        let d = c.check(1, ms(t));
        assert!(d.prefetch.is_none(), "CLOSE: no prefetch at {t}");
    }
    let d = c.check(1, ms(500));
    let r = d.prefetch.expect("prefetch at the window reset");
    assert!(d.granted, "optimistic again after the reset");
    assert!(
        c.available(ms(500)) <= 2,
        "optimistic grant capped at the last window's 3"
    );
    c.on_response(
        r.id,
        PrefetchOutcome::Granted {
            amount: r.amount,
            valid_for: Duration::from_secs(1),
        },
        ms(700),
    );
    assert!(c.available(ms(700)) > 2);
}

#[test]
fn cache_bounds_entries_and_ignores_answers_for_evicted_ones() {
    let cache = QuotaCache::new(QuotaCacheConfig {
        max_entries: 2,
        ..Default::default()
    });
    let a = cache.check("q", "a", 1, ms(0)).prefetch.unwrap();
    let b = cache.check("q", "b", 1, ms(0)).prefetch.unwrap();
    assert_ne!(a.id, b.id, "request ids are unique across entries");
    let _ = cache.check("q", "c", 1, ms(0)); // evicts "a"
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache
            .stats()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // "a" comes back as a new entry; the old entry's answer must not be taken for the new one's.
    let a2 = cache.check("q", "a", 1, ms(1)).prefetch.unwrap();
    assert_ne!(a.id, a2.id);
    cache.on_response("q", "a", a.id, PrefetchOutcome::Failed, ms(2));
    cache.on_response("q", "zzz", 1, PrefetchOutcome::Failed, ms(2));
    assert_eq!(
        cache
            .stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // Quota and key are joined unambiguously.
    let c2 = QuotaCache::new(QuotaCacheConfig::default());
    let _ = c2.check("ab", "c", 1, ms(0));
    let _ = c2.check("a", "bc", 1, ms(0));
    assert_eq!(c2.len(), 2);
}

#[test]
fn cache_is_thread_safe() {
    let cache = Arc::new(QuotaCache::new(QuotaCacheConfig::default()));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let mut granted = 0u64;
                for i in 0..2000u64 {
                    let now = MonoTime(i * MS);
                    let d = cache.check("q", if n % 2 == 0 { "even" } else { "odd" }, 1, now);
                    granted += u64::from(d.granted);
                    if let Some(r) = d.prefetch {
                        let g = PrefetchOutcome::Granted {
                            amount: r.amount,
                            valid_for: Duration::from_secs(1),
                        };
                        cache.on_response(
                            "q",
                            if n % 2 == 0 { "even" } else { "odd" },
                            r.id,
                            g,
                            now,
                        );
                    }
                }
                granted
            })
        })
        .collect();
    let granted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let s = cache.stats();
    assert_eq!(s.checks.load(std::sync::atomic::Ordering::Relaxed), 8000);
    assert_eq!(
        s.granted.load(std::sync::atomic::Ordering::Relaxed),
        granted
    );
    assert_eq!(cache.len(), 2);
}
