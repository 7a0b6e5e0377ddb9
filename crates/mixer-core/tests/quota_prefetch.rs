//! HARNESS DRAFT
use std::sync::Arc;
use std::time::Duration;

use mixer_core::cache::quota::{PrefetchOutcome, QuotaDecision, QuotaPrefetch, QuotaPrefetchOptions};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{Dispatcher, MonoTime};
use parking_lot::Mutex;

mod cpp_port {
    include!("/tmp/qp/port_body.rs");
}

const MS: u64 = 1_000_000;
const RESPONSE_DELAY: Duration = Duration::from_millis(200);
const TEST_WINDOWS: i64 = 10;

trait Client: Send {
    fn check(&mut self, amount: i64, now: MonoTime) -> QuotaDecision;
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now: MonoTime);
}

impl Client for QuotaPrefetch {
    fn check(&mut self, amount: i64, now: MonoTime) -> QuotaDecision {
        QuotaPrefetch::check(self, amount, now)
    }
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now: MonoTime) {
        QuotaPrefetch::on_response(self, id, outcome, now)
    }
}

impl Client for cpp_port::QuotaPrefetch {
    fn check(&mut self, amount: i64, now: MonoTime) -> QuotaDecision {
        let d = cpp_port::QuotaPrefetch::check(self, amount, now);
        QuotaDecision {
            granted: d.granted,
            prefetch: d.prefetch.map(|p| mixer_core::cache::quota::PrefetchRequest { id: p.id, amount: p.amount }),
        }
    }
    fn on_response(&mut self, id: u64, outcome: PrefetchOutcome, now: MonoTime) {
        let o = match outcome {
            PrefetchOutcome::Granted { amount, valid_for } => cpp_port::PrefetchOutcome::Granted { amount, valid_for },
            PrefetchOutcome::Failed => cpp_port::PrefetchOutcome::Failed,
        };
        cpp_port::QuotaPrefetch::on_response(self, id, o, now)
    }
}

/// A rate-limit server, as in the C++ test.
trait Server: Send {
    /// Grants up to `amount` at `now_ms`; returns (granted, valid_for in ms).
    fn alloc(&mut self, amount: i64, now_ms: i64) -> (i64, i64);
}

/// "RollingWindow": a fixed window starting at the first allocation after the previous one ended.
struct FixedWindow { rate: i64, window_ms: i64, avail: i64, expire_ms: i64 }
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

/// "TimeBased": a token bucket refilled at rate/window, integer arithmetic as in the C++ test.
struct TokenBucket { rate: i64, window_ms: i64, allowance: i64, last_ms: i64 }
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
struct Data { name: &'static str, rate: i64, window_ms: i64, delta: i64 }
const PER_MINUTE: Data = Data { name: "Big", rate: 1200, window_ms: 60_000, delta: 100 };
const PER_SECOND: Data = Data { name: "Small", rate: 20, window_ms: 1000, delta: 2 };

type SharedClient = Arc<Mutex<dyn Client>>;

struct Sim {
    p: VirtualPlatform,
    server: Arc<Mutex<dyn Server>>,
    cpp_delivery: bool,
    queue: Mutex<std::collections::VecDeque<(i64, Box<dyn FnOnce(MonoTime) + Send>)>>,
}

impl Sim {
    fn check(&self, c: &SharedClient, t_ms: i64) -> bool {
        let now = MonoTime(t_ms as u64 * MS);
        if self.cpp_delivery {
            let d = c.lock().check(1, now);
            if let Some(req) = d.prefetch {
                let (g, v) = self.server.lock().alloc(req.amount, t_ms);
                let c2 = c.clone();
                self.queue.lock().push_back((t_ms + 200, Box::new(move |n| c2.lock().on_response(req.id, PrefetchOutcome::Granted { amount: g, valid_for: Duration::from_millis(v as u64) }, n))));
            }
            loop {
                let f = {
                    let mut q = self.queue.lock();
                    if q.front().is_some_and(|x| x.0 <= t_ms) { q.pop_front() } else { None }
                };
                match f { Some((_, f)) => f(now), None => break }
            }
            return d.granted;
        }
        self.p.advance(now.since(self.p.now()));
        let d = c.lock().check(1, now);
        if let Some(req) = d.prefetch {
            let (g, v) = self.server.lock().alloc(req.amount, t_ms);
            let c2 = c.clone();
            let p2 = self.p.clone();
            self.p.schedule(
                RESPONSE_DELAY,
                Box::new(move || {
                    c2.lock().on_response(
                        req.id,
                        PrefetchOutcome::Granted { amount: g, valid_for: Duration::from_millis(v as u64) },
                        p2.now(),
                    )
                }),
            );
        }
        d.granted
    }
}

fn run_one(sim: &Sim, c: &SharedClient, traffic: i64, window_ms: i64, t0: i64) -> i64 {
    let d = window_ms / traffic;
    (0..traffic).filter(|i| sim.check(c, t0 + i * d)).count() as i64
}

fn run_two(sim: &Sim, c1: &SharedClient, c2: &SharedClient, r1: i64, r2: i64, window_ms: i64, t0: i64) -> i64 {
    let rate = r1 + r2;
    let d = window_ms / rate;
    let (mut n1, mut n2, mut passed) = (0i64, 0i64, 0i64);
    for i in 0..rate {
        let t = t0 + i * d;
        let use1 = (n1 as f32) / (r1 as f32) <= (n2 as f32) / (r2 as f32);
        let ok = if use1 { n1 += 1; sim.check(c1, t) } else { n2 += 1; sim.check(c2, t) };
        passed += ok as i64;
    }
    passed
}

fn run_suite(cppd: bool, fixed: bool, data: Data, clients: usize, mk: &dyn Fn() -> SharedClient) -> [f64; 5] {
    let server: Arc<Mutex<dyn Server>> = if fixed {
        Arc::new(Mutex::new(FixedWindow { rate: data.rate, window_ms: data.window_ms, avail: 0, expire_ms: 0 }))
    } else {
        Arc::new(Mutex::new(TokenBucket { rate: data.rate, window_ms: data.window_ms, allowance: data.rate, last_ms: 0 }))
    };
    let sim = Sim { p: VirtualPlatform::new(), server, cpp_delivery: cppd, queue: Default::default() };
    let c1 = mk();
    let c2 = mk();
    let traffics = [
        (data.rate - data.delta) * TEST_WINDOWS,
        data.rate * TEST_WINDOWS,
        (data.rate + data.delta) * TEST_WINDOWS,
        (data.rate / 2) * TEST_WINDOWS,
        (data.rate * 10) * TEST_WINDOWS,
    ];
    let mut out = [0.0; 5];
    let mut t = 0;
    let span = data.window_ms * TEST_WINDOWS;
    for (k, &traffic) in traffics.iter().enumerate() {
        let expected = (data.rate * TEST_WINDOWS).min(traffic);
        let passed = if clients == 1 {
            run_one(&sim, &c1, traffic, span, t)
        } else {
            run_two(&sim, &c1, &c2, traffic * 3 / 4, traffic / 4, span, t)
        };
        out[k] = ((passed - expected).abs() as f64) / expected as f64;
        t += span;
    }
    out
}

#[test]
fn margins_table() {
    let cases: [(bool, Data, usize, [f64; 5]); 8] = [
        (true, PER_MINUTE, 1, [0.0, 0.006, 0.0015, 0.0, 0.06]),
        (true, PER_SECOND, 1, [0.26, 0.23, 0.25, 0.04, 0.23]),
        (false, PER_MINUTE, 1, [0.0, 0.0, 0.08, 0.0, 0.1]),
        (false, PER_SECOND, 1, [0.0, 0.0, 0.035, 0.03, 0.23]),
        (true, PER_MINUTE, 2, [0.0, 0.006, 0.0015, 0.001, 0.057]),
        (true, PER_SECOND, 2, [0.33, 0.30, 0.30, 0.14, 0.22]),
        (false, PER_MINUTE, 2, [0.0, 0.0, 0.055, 0.0, 0.0005]),
        (false, PER_SECOND, 2, [0.062, 0.14, 0.15, 0.05, 0.17]),
    ];
    for (fixed, data, n, cpp) in cases {
        let portc = run_suite(true, fixed, data, n, &|| Arc::new(Mutex::new(cpp_port::QuotaPrefetch::new(Default::default(), MonoTime(0)))) as SharedClient);
        let port = run_suite(false, fixed, data, n, &|| Arc::new(Mutex::new(cpp_port::QuotaPrefetch::new(Default::default(), MonoTime(0)))) as SharedClient);
        let ours = run_suite(false, fixed, data, n, &|| Arc::new(Mutex::new(QuotaPrefetch::new(QuotaPrefetchOptions::default(), MonoTime(0)))) as SharedClient);
        let name = format!("{}{}{}", if n == 2 { "TwoClient" } else { "" }, data.name, if fixed { "Rolling" } else { "TimeBased" });
        println!("{name:28} cpp {cpp:?}");
        println!("{:28} portc {:?}", "", portc.map(|m| (m * 10000.0).round() / 10000.0));
        println!("{:28} port {:?}", "", port.map(|m| (m * 10000.0).round() / 10000.0));
        println!("{:28} ours {:?}", "", ours.map(|m| (m * 10000.0).round() / 10000.0));
    }
}
