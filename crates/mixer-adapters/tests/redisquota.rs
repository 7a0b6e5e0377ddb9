//! `redisquota` against a real `redis-server` that each test starts on a free loopback port (and
//! kills when done): fixed and rolling windows over real time, overrides, deduplication, best
//! effort, 4 threads never granting past the limit, a server that goes away (fail open) and comes
//! back (limits enforced again), NOSCRIPT, misbehaving servers, a full queue, and the pipeline's
//! prefetch path through a QuotaSpec binding.
//!
//! `redis-server` comes from `scripts/install-test-deps.sh`; without it these tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mixer_adapters::redisquota::{RedisQuotaAdapter, RedisQuotaStats};
use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::{QuotaArgs, QuotaResult, RequestContext};
use mixer_core::config_builder::{bind_quota, handler, instance, rule};
use mixer_core::instance::InstanceView;
use mixer_core::pal::Dispatcher;
use mixer_core::pending::Poll;
use mixer_core::{CheckStart, Code, CompileOptions, Config, Pipeline, Snapshot, compile};
use mixer_host::EventLoop;
use mixer_proto::v2;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// A real redis-server on a free loopback port.

fn redis_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "redis-server was not found on PATH: the redisquota tests need a real Redis. \
         Install the test dependencies with `bash scripts/install-test-deps.sh` (Debian package redis-server)."
    );
}

struct RedisServer {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> RedisServer {
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let mut server = RedisServer {
            port,
            child: Some(child),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server on port {} exited at start: {status}",
                    self.port
                );
            }
            if raw_command(self.port, &["PING"]).is_some_and(|r| r.starts_with("+PONG")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} is not ready after 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command and returns the raw reply text (whatever arrives within a short wait).
fn raw_command(port: u16, args: &[&str]) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .ok()?;
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                s.set_read_timeout(Some(Duration::from_millis(30))).ok()?;
            }
            Err(_) => break,
        }
    }
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Config and calls.

fn config(params: serde_json::Value) -> Config {
    Config {
        handlers: vec![handler("redishandler", "redisquota", params)],
        instances: vec![instance(
            "requestcountquota",
            "quota",
            json!({"dimensions": {
                "source": "request.headers[\"x-forwarded-for\"] | \"unknown\"",
                "destination": "destination.labels[\"app\"] | destination.service.name | \"unknown\"",
            }}),
        )],
        rules: vec![rule("quota", "", "redishandler", &["requestcountquota"])],
        ..Default::default()
    }
}

/// One quota named for the instance.
fn quota(max: i64, algorithm: &str, valid: &str, bucket: Option<&str>) -> serde_json::Value {
    let mut q = json!({"name": "requestcountquota.instance.istio-system", "maxAmount": max,
                       "validDuration": valid, "rateLimitAlgorithm": algorithm});
    if let Some(b) = bucket {
        q["bucketDuration"] = json!(b);
    }
    q
}

fn params(server: &RedisServer, quotas: serde_json::Value) -> serde_json::Value {
    // A prefix of its own per test keeps tests independent even on a shared server.
    json!({"redisServerUrl": server.url(), "connectionPoolSize": 4, "quotas": quotas,
           "connectTimeout": "500ms", "requestTimeout": "500ms"})
}

struct Fixture {
    el: EventLoop,
    snapshot: Snapshot,
    stats: Arc<RedisQuotaStats>,
}

fn registry_with_stats() -> (mixer_core::AdapterRegistry, Arc<RedisQuotaStats>) {
    let mut registry = mixer_adapters::registry();
    let adapter = RedisQuotaAdapter::new();
    let stats = adapter.stats();
    registry.register(Arc::new(adapter));
    (registry, stats)
}

fn fixture(cfg: &Config) -> Fixture {
    let el = EventLoop::new();
    let (registry, stats) = registry_with_stats();
    let snapshot = compile(
        cfg,
        &registry,
        &el.platform(),
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    Fixture {
        el,
        snapshot,
        stats,
    }
}

fn request(app: &str, xff: Option<&str>) -> Attributes<'static> {
    let labels: StringMap = [("app".to_string(), app.to_string())].into_iter().collect();
    let mut bag = Attributes::new().with(wk::DESTINATION_LABELS, Value::string_map(labels));
    if let Some(ip) = xff {
        let h: StringMap = [("x-forwarded-for".to_string(), ip.to_string())]
            .into_iter()
            .collect();
        bag.set(wk::REQUEST_HEADERS, Value::string_map(h));
    }
    bag
}

impl Fixture {
    /// Calls the handler's `allocate` directly and waits for the answer.
    fn allocate(&self, bag: &Attributes<'_>, args: QuotaArgs) -> QuotaResult {
        let instance = &self.snapshot.instances[0];
        let entry = self
            .snapshot
            .handler("redishandler.istio-system")
            .expect("handler");
        let handler = entry.handler.as_quota().expect("a quota handler");
        assert!(handler.prefetch(), "redisquota is a remote backend");
        let mut values = Vec::new();
        instance.evaluate(bag, &mut (), &mut values).unwrap();
        let view = InstanceView {
            instance,
            values: &values,
        };
        let dispatcher: Arc<dyn Dispatcher> = Arc::new(self.el.clone());
        let ctx = RequestContext {
            dispatcher: &dispatcher,
        };
        match handler.allocate(&view, &args, &ctx) {
            Poll::Ready(r) => r,
            Poll::Pending(p) => {
                let (tx, rx) = std::sync::mpsc::channel();
                p.on_complete(move |r| {
                    let _ = tx.send(r);
                });
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("an answer within 10 s")
                    .expect("not abandoned")
            }
        }
    }

    fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }
}

fn amount(n: i64) -> QuotaArgs {
    QuotaArgs {
        amount: n,
        ..Default::default()
    }
}

fn best_effort(n: i64) -> QuotaArgs {
    QuotaArgs {
        amount: n,
        best_effort: true,
        ..Default::default()
    }
}

fn valid(r: &QuotaResult) -> Duration {
    r.valid_duration.to_std().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn fixed_window_limits_then_resets_at_the_boundary() {
    let server = RedisServer::start();
    let f = fixture(&config(params(
        &server,
        json!([quota(5, "FIXED_WINDOW", "1s", None)]),
    )));
    let bag = request("a", None);
    // Start early in a window, so the next few calls all fall in it.
    let mut first = f.allocate(&bag, amount(1));
    if valid(&first) < Duration::from_millis(600) {
        std::thread::sleep(valid(&first) + Duration::from_millis(20));
        first = f.allocate(&bag, amount(1));
    }
    assert_eq!((first.status.code, first.granted), (Code::OK, 1));
    assert!(
        valid(&first) <= Duration::from_secs(1),
        "valid until the window ends: {:?}",
        first.valid_duration
    );
    for _ in 0..4 {
        assert_eq!(f.allocate(&bag, amount(1)).granted, 1);
    }
    let denied = f.allocate(&bag, amount(1));
    assert_eq!(
        (denied.status.code, denied.granted),
        (Code::RESOURCE_EXHAUSTED, 0)
    );
    assert!(
        denied.status.message.contains("requestcountquota"),
        "{}",
        denied.status.message
    );
    // Another set of dimensions has its own counter.
    assert_eq!(f.allocate(&request("b", None), amount(5)).granted, 5);
    // The window passes: 5 again.
    std::thread::sleep(valid(&denied) + Duration::from_millis(30));
    let r = f.allocate(&bag, amount(5));
    assert_eq!((r.status.code, r.granted), (Code::OK, 5), "a new window");
    assert_eq!(f.failures(), 0);
}

#[test]
fn rolling_window_releases_bucket_by_bucket() {
    let server = RedisServer::start();
    let f = fixture(&config(params(
        &server,
        json!([quota(4, "ROLLING_WINDOW", "1s", Some("100ms"))]),
    )));
    let bag = request("a", None);
    let t0 = Instant::now();
    let r = f.allocate(&bag, amount(2));
    assert_eq!(
        (r.granted, valid(&r)),
        (2, Duration::from_secs(1)),
        "valid for one window"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(f.allocate(&bag, amount(2)).granted, 2);
    assert_eq!(
        f.allocate(&bag, amount(1)).status.code,
        Code::RESOURCE_EXHAUSTED,
        "4 used in the last second"
    );
    // A fixed window would have reset by now (or not at all); the rolling one releases only the
    // first two units, 1 s (plus at most one bucket) after they were granted.
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(t0.elapsed()));
    let r = f.allocate(&bag, best_effort(4));
    assert_eq!(
        (r.status.code, r.granted),
        (Code::OK, 2),
        "the first grant left the window, the second did not"
    );
    assert_eq!(f.failures(), 0);
}

#[test]
fn overrides_apply_first_match_like_bookinfo() {
    let server = RedisServer::start();
    let mut q = quota(5, "ROLLING_WINDOW", "30s", Some("9s"));
    q["overrides"] = json!([
        {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 2},
        {"dimensions": {"destination": "ratings"}, "maxAmount": 3},
    ]);
    let f = fixture(&config(params(&server, json!([q]))));
    let count = |bag: &Attributes<'_>| {
        (0..10)
            .map(|_| f.allocate(bag, amount(1)).granted)
            .sum::<i64>()
    };
    assert_eq!(
        count(&request("ratings", Some("reviews"))),
        2,
        "the first override"
    );
    assert_eq!(
        count(&request("ratings", Some("productpage"))),
        3,
        "the second override"
    );
    assert_eq!(count(&request("details", None)), 5, "the default");
    assert_eq!(
        count(&request("reviews", None)),
        5,
        "each set of dimensions counts on its own"
    );
    // Keys are namespaced by prefix, quota name and dimension values.
    let keys = raw_command(server.port, &["KEYS", "mixer:redisquota:*"]).unwrap();
    assert!(keys.starts_with("*4\r\n"), "{keys}");
    assert!(
        keys.contains("mixer:redisquota:{requestcountquota.instance.istio-system|R30000/9000|destination=ratings,source=reviews}"),
        "{keys}"
    );
    assert_eq!(f.failures(), 0);
}

/// Waits, if needed, until at least `margin` is left in the current fixed window of `bag`.
fn early_in_window(f: &Fixture, bag: &Attributes<'_>, margin: Duration) {
    let probe = f.allocate(
        bag,
        QuotaArgs {
            amount: 1,
            best_effort: true,
            deduplication_id: "probe".into(),
        },
    );
    if valid(&probe) < margin {
        std::thread::sleep(valid(&probe) + Duration::from_millis(20));
    }
}

#[test]
fn deduplication_returns_the_first_answer_without_charging_again() {
    let server = RedisServer::start();
    let mut p = params(&server, json!([quota(10, "FIXED_WINDOW", "1h", None)]));
    p["minDeduplicationDuration"] = json!("1s");
    let f = fixture(&config(p));
    let bag = request("dedup", None);
    let other = request("dedup-2", None);
    early_in_window(&f, &other, Duration::from_secs(10));
    let with_id = |n: i64, id: &str| QuotaArgs {
        amount: n,
        best_effort: false,
        deduplication_id: id.into(),
    };
    let first = f.allocate(&bag, with_id(8, "req-1"));
    assert_eq!(first.granted, 8);
    let again = f.allocate(&bag, with_id(8, "req-1"));
    assert_eq!(
        (again.status.code, again.granted),
        (Code::OK, 8),
        "a retried request gets its first answer"
    );
    assert!(again.valid_duration <= first.valid_duration);
    assert_eq!(
        f.allocate(&bag, amount(2)).granted,
        2,
        "the retry was not charged: 2 of 10 left"
    );
    assert_eq!(f.allocate(&bag, amount(1)).granted, 0);
    // A denial is remembered too.
    assert_eq!(f.allocate(&bag, with_id(1, "req-2")).granted, 0);
    // After minDeduplicationDuration the id is forgotten: a new request, charged (and denied).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        f.allocate(&bag, with_id(8, "req-1")).status.code,
        Code::RESOURCE_EXHAUSTED
    );
    assert_eq!(f.failures(), 0);
}

#[test]
fn best_effort_grants_what_is_left() {
    let server = RedisServer::start();
    let f = fixture(&config(params(
        &server,
        json!([quota(10, "FIXED_WINDOW", "1h", None)]),
    )));
    let bag = request("be", None);
    early_in_window(&f, &request("be-probe", None), Duration::from_secs(10));
    assert_eq!(f.allocate(&bag, amount(8)).granted, 8);
    let r = f.allocate(&bag, amount(5));
    assert_eq!(
        (r.status.code, r.granted),
        (Code::RESOURCE_EXHAUSTED, 0),
        "all or nothing"
    );
    assert_eq!(
        f.allocate(&bag, best_effort(5)).granted,
        2,
        "best effort: what is left"
    );
    let r = f.allocate(&bag, best_effort(5));
    assert_eq!((r.status.code, r.granted), (Code::RESOURCE_EXHAUSTED, 0));
    assert_eq!(
        f.allocate(&bag, amount(0)).status.code,
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        f.allocate(&bag, amount(-3)).status.code,
        Code::INVALID_ARGUMENT
    );
    // A zero limit denies everything.
    let z = fixture(&config(params(
        &server,
        json!([quota(0, "ROLLING_WINDOW", "1h", Some("1m"))]),
    )));
    assert_eq!(
        z.allocate(&bag, best_effort(1)).status.code,
        Code::RESOURCE_EXHAUSTED
    );
    assert_eq!(f.failures() + z.failures(), 0);
}

#[test]
fn four_threads_never_exceed_the_limit() {
    let server = RedisServer::start();
    for (algorithm, bucket) in [("FIXED_WINDOW", None), ("ROLLING_WINDOW", Some("1m"))] {
        let f = Arc::new(fixture(&config(params(
            &server,
            json!([quota(1000, algorithm, "1h", bucket)]),
        ))));
        let app = format!("threads-{algorithm}");
        early_in_window(
            &f,
            &request(&format!("{app}-probe"), None),
            Duration::from_secs(30),
        );
        let granted = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (f, granted, app) = (f.clone(), granted.clone(), app.clone());
                std::thread::spawn(move || {
                    let bag = request(&app, None);
                    for i in 0..600 {
                        let args = QuotaArgs {
                            amount: 1 + (i + t) % 3,
                            best_effort: i % 2 == 0,
                            ..Default::default()
                        };
                        granted.fetch_add(f.allocate(&bag, args).granted, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            granted.load(Ordering::Relaxed),
            1000,
            "{algorithm}: exactly the limit, never more"
        );
        assert_eq!(f.failures(), 0, "{algorithm}");
    }
}

#[test]
fn server_going_away_fails_open_and_recovery_enforces_limits_again() {
    let mut server = RedisServer::start();
    let port = server.port;
    let mut p = params(&server, json!([quota(3, "FIXED_WINDOW", "1h", None)]));
    p["requestTimeout"] = json!("300ms");
    p["connectTimeout"] = json!("300ms");
    let f = fixture(&config(p));
    let bag = request("outage", None);
    assert_eq!(
        (0..5)
            .map(|_| f.allocate(&bag, amount(1)).granted)
            .sum::<i64>(),
        3
    );
    assert_eq!(f.failures(), 0);

    server.stop();
    for i in 0..5 {
        let r = f.allocate(&bag, amount(2));
        assert_eq!(
            (r.status.code, r.granted),
            (Code::OK, 2),
            "fail open while Redis is away"
        );
        assert!(
            r.valid_duration <= mixer_attr::Duration::from_secs(1),
            "fail-open grants are short-lived"
        );
        assert_eq!(f.failures(), i + 1, "every fail-open grant is counted");
    }
    assert!(f.stats.connect_failures.load(Ordering::Relaxed) >= 1);

    // The server comes back on the same port (empty: counters start over).
    let _server = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = f.failures();
        let r = f.allocate(&bag, amount(1));
        if f.failures() == before {
            assert_eq!(r.granted, 1, "the first answer from the new server");
            break;
        }
        assert!(Instant::now() < deadline, "no reconnection within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let more: Vec<i64> = (0..4)
        .map(|_| f.allocate(&bag, amount(1)).granted)
        .collect();
    assert_eq!(more, [1, 1, 0, 0], "limits enforced again");
    assert!(f.stats.connects.load(Ordering::Relaxed) >= 2, "reconnected");
}

#[test]
fn noscript_reloads_the_scripts() {
    let server = RedisServer::start();
    let f = fixture(&config(params(
        &server,
        json!([quota(10, "FIXED_WINDOW", "1h", None)]),
    )));
    let bag = request("noscript", None);
    early_in_window(
        &f,
        &request("noscript-probe", None),
        Duration::from_secs(10),
    );
    assert_eq!(f.allocate(&bag, amount(4)).granted, 4);
    let loads = f.stats.script_loads.load(Ordering::Relaxed);
    assert_eq!(
        raw_command(server.port, &["SCRIPT", "FLUSH"]).as_deref(),
        Some("+OK\r\n")
    );
    assert_eq!(
        f.allocate(&bag, amount(4)).granted,
        4,
        "answered by Redis after reloading"
    );
    assert_eq!(f.allocate(&bag, amount(4)).granted, 0);
    assert_eq!(f.failures(), 0);
    assert_eq!(f.stats.script_loads.load(Ordering::Relaxed), loads + 2);
}

#[test]
fn misbehaving_servers_fail_open() {
    // Nothing listening.
    let closed = free_port();
    // A server that answers garbage.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_port = garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in garbage.incoming().flatten() {
            let _ = s.write_all(b"?not resp at all\r\n");
        }
    });
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for port in [closed, garbage_port, silent_port] {
        let p = json!({"redisServerUrl": format!("127.0.0.1:{port}"), "quotas": [quota(1, "FIXED_WINDOW", "1h", None)],
                       "connectTimeout": "200ms", "requestTimeout": "200ms"});
        let f = fixture(&config(p));
        let started = Instant::now();
        for _ in 0..3 {
            let r = f.allocate(&request("x", None), amount(5));
            assert_eq!(
                (r.status.code, r.granted),
                (Code::OK, 5),
                "port {port}: fail open"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "timeouts bound the wait"
        );
        assert_eq!(f.failures(), 3, "port {port}");
        assert!(f.stats.connect_failures.load(Ordering::Relaxed) >= 1);
    }
    drop(silent);
}

#[test]
fn a_full_queue_fails_open_at_once() {
    // The only connection is stuck in its handshake with a silent server, so jobs queue up.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let p = json!({"redisServerUrl": format!("127.0.0.1:{port}"), "connectionPoolSize": 1, "queueSize": 1,
                   "quotas": [quota(1, "FIXED_WINDOW", "1h", None)], "requestTimeout": "1s"});
    let el = EventLoop::new();
    let (registry, stats) = registry_with_stats();
    let snapshot = compile(
        &config(p),
        &registry,
        &el.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let instance = &snapshot.instances[0];
    let handler = snapshot
        .handler("redishandler.istio-system")
        .unwrap()
        .handler
        .as_quota()
        .unwrap();
    let bag = request("q", None);
    let mut values = Vec::new();
    instance.evaluate(&bag, &mut (), &mut values).unwrap();
    let view = InstanceView {
        instance,
        values: &values,
    };
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(el.clone());
    let ctx = RequestContext {
        dispatcher: &dispatcher,
    };
    let first = handler.allocate(&view, &amount(1), &ctx);
    assert!(matches!(first, Poll::Pending(_)));
    std::thread::sleep(Duration::from_millis(200)); // the connection task took it
    let second = handler.allocate(&view, &amount(1), &ctx);
    assert!(matches!(second, Poll::Pending(_)), "queued");
    match handler.allocate(&view, &amount(7), &ctx) {
        Poll::Ready(r) => assert_eq!((r.status.code, r.granted), (Code::OK, 7), "fail open"),
        Poll::Pending(_) => panic!("a full queue must answer at once"),
    }
    assert_eq!(stats.queue_full.load(Ordering::Relaxed), 1);
    // The stuck ones time out and fail open too.
    for p in [first, second] {
        let Poll::Pending(p) = p else { unreachable!() };
        let (tx, rx) = std::sync::mpsc::channel();
        p.on_complete(move |r| {
            let _ = tx.send(r);
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5))
                .unwrap()
                .unwrap()
                .granted,
            1
        );
    }
    drop(silent);
}

fn with_quota_spec(mut cfg: Config, services: Vec<v2::IstioService>) -> Config {
    bind_quota(&mut cfg, "request-count", "requestcountquota", 1, services);
    cfg
}

#[test]
fn checks_through_the_pipeline_are_answered_from_prefetched_tokens() {
    let server = RedisServer::start();
    let cfg = with_quota_spec(
        config(params(
            &server,
            json!([quota(100, "FIXED_WINDOW", "1h", None)]),
        )),
        vec![v2::IstioService {
            name: "productpage".into(),
            namespace: "default".into(),
            ..Default::default()
        }],
    );
    let el = EventLoop::new();
    let (registry, stats) = registry_with_stats();
    let build = || {
        compile(
            &cfg,
            &registry,
            &el.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap()
    };
    let f = Fixture {
        el: el.clone(),
        snapshot: build(),
        stats,
    };
    early_in_window(
        &f,
        &request("pipeline-probe", None),
        Duration::from_secs(30),
    );
    let p = Pipeline::new(build(), el.platform());
    let calls_before = f.stats.requests.load(Ordering::Relaxed);
    let worker = p.worker(Arc::new(f.el.clone()));
    let to = |svc: &str| {
        request(svc, None)
            .with(
                wk::DESTINATION_SERVICE_NAME,
                Value::String(svc.to_string().into()),
            )
            .with(wk::DESTINATION_SERVICE_NAMESPACE, Value::str("default"))
    };
    let bag = to("productpage");
    let (mut allowed, mut denied, checks) = (0, 0, 1000);
    for _ in 0..checks {
        match worker.check(&bag, |_| panic!("answered inline")) {
            CheckStart::Done(a) => {
                if a.is_allowed() {
                    allowed += 1;
                } else {
                    assert_eq!(a.status.code, Code::RESOURCE_EXHAUSTED);
                    assert_eq!(
                        a.status.message,
                        "Quota is exhausted for: requestcountquota"
                    );
                    denied += 1;
                }
            }
            CheckStart::Pending(_) => {
                panic!("quota checks on a prefetching handler are answered inline")
            }
        }
        f.el.run_ready();
        std::thread::sleep(Duration::from_millis(1));
    }
    let calls = f.stats.requests.load(Ordering::Relaxed) - calls_before;
    eprintln!("{checks} checks: {allowed} allowed, {denied} denied, {calls} calls to Redis");
    assert_eq!(allowed + denied, checks);
    assert!(
        calls <= 50,
        "few calls to Redis: {calls} for {checks} checks"
    );
    assert!(
        (90..=110).contains(&allowed),
        "about the limit of 100: {allowed}"
    );
    assert_eq!(f.failures(), 0);
    // An unbound service charges nothing.
    let before = f.stats.requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        let CheckStart::Done(d) = worker.check(&to("details"), |_| {}) else {
            panic!("inline")
        };
        assert!(d.is_allowed() && d.quotas.is_empty());
    }
    assert_eq!(f.stats.requests.load(Ordering::Relaxed), before);
}

#[test]
fn registered_and_bookinfo_samples_compile() {
    assert!(mixer_adapters::registry().names().contains(&"redisquota"));
    let server = RedisServer::start();
    // The params of Istio's bookinfo-mixer-rule-*-redis-quota-{rolling,fixed}-window.yaml.
    for q in [
        json!({"name": "requestcountquota.instance.istio-system", "maxAmount": 5000, "validDuration": "30s",
               "bucketDuration": "9s", "rateLimitAlgorithm": "ROLLING_WINDOW", "overrides": [
                   {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 50},
                   {"dimensions": {"destination": "ratings"}, "maxAmount": 100}]}),
        json!({"name": "requestcountquota.instance.istio-system", "maxAmount": 1, "validDuration": "30s",
               "rateLimitAlgorithm": "FIXED_WINDOW", "overrides": [
                   {"dimensions": {"destination": "productpage", "source": "istio-ingressgateway"}, "maxAmount": 50}]}),
    ] {
        let p = json!({"redisServerUrl": server.url(), "connectionPoolSize": 10, "quotas": [q]});
        let f = fixture(&config(p));
        assert_eq!(
            f.allocate(
                &request("productpage", Some("istio-ingressgateway")),
                amount(1)
            )
            .granted,
            1
        );
    }
}

#[test]
fn bad_params_are_config_errors_naming_the_field() {
    let el = EventLoop::new();
    let q = |extra: serde_json::Value| {
        let mut q = json!({"name": "requestcountquota", "maxAmount": 1, "validDuration": "1s"});
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        q
    };
    let url = "127.0.0.1:6379";
    for (params, field) in [
        (json!({"quotas": [q(json!({}))]}), "params.redisServerUrl"),
        (
            json!({"redisServerUrl": "", "quotas": [q(json!({}))]}),
            "params.redisServerUrl",
        ),
        (
            json!({"redisServerUrl": "no-port", "quotas": [q(json!({}))]}),
            "params.redisServerUrl",
        ),
        (
            json!({"redisServerUrl": "https://h:1", "quotas": [q(json!({}))]}),
            "params.redisServerUrl",
        ),
        (
            json!({"redisServerUrl": url, "connectionPoolSize": -1, "quotas": [q(json!({}))]}),
            "params.connectionPoolSize",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"maxAmount": -1}))]}),
            "params.quotas[0].maxAmount",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"validDuration": "x"}))]}),
            "params.quotas[0].validDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [{"name": "requestcountquota", "maxAmount": 1}]}),
            "params.quotas[0].validDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"rateLimitAlgorithm": "LEAKY_BUCKET"}))]}),
            "params.quotas[0].rateLimitAlgorithm",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"rateLimitAlgorithm": "ROLLING_WINDOW"}))]}),
            "params.quotas[0].bucketDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"rateLimitAlgorithm": "ROLLING_WINDOW", "bucketDuration": "1s"}))]}),
            "params.quotas[0].bucketDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"rateLimitAlgorithm": "ROLLING_WINDOW", "bucketDuration": "2s"}))]}),
            "params.quotas[0].bucketDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"rateLimitAlgorithm": "ROLLING_WINDOW", "bucketDuration": "1ms", "validDuration": "1h"}))]}),
            "params.quotas[0].bucketDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"overrides": [{"dimensions": {"a": "b"}, "maxAmount": -5}]}))]}),
            "params.quotas[0].overrides[0].maxAmount",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({"overrides": [{"maxAmount": 5}]}))]}),
            "params.quotas[0].overrides[0].dimensions",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [{"name": "other", "maxAmount": 1, "validDuration": "1s"}]}),
            "params.quotas",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({}))], "minDeduplicationDuration": "-1s"}),
            "params.minDeduplicationDuration",
        ),
        (
            json!({"redisServerUrl": url, "quotas": [q(json!({}))], "requestTimeout": "0s"}),
            "params.requestTimeout",
        ),
    ] {
        let err = compile(
            &config(params.clone()),
            &mixer_adapters::registry(),
            &el.platform(),
            None,
            &CompileOptions::default(),
        )
        .expect_err(&params.to_string());
        assert_eq!(err.0[0].field, field, "{params}: {err}");
    }
    // Unknown fields are rejected too (the message names them).
    let err = compile(
        &config(json!({"redisServerUrl": url, "quotas": [q(json!({"validDurationn": "1s"}))]})),
        &mixer_adapters::registry(),
        &el.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("validDurationn"), "{err}");
}
