//! The `knative` adapter against a loopback websocket autoscaler (`testing::StubAutoscaler`,
//! 127.0.0.1, free port, stopped at the end): pokes coalesced under a concurrent burst, reports
//! every interval with time-weighted concurrency, reconnects after a 1012 close and after a
//! restart on the same port, bounded memory while the server is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{by_headers, by_host, config_yaml, pipeline};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{Dispatcher, Platform};
use mixer_core::{CheckStart, Code, Pipeline};
use mixer_host::EventLoop;
use mixer_knative::testing::StubAutoscaler;
use serde_json::json;

/// A real-time host loop run on its own thread until dropped.
struct Host {
    ev: EventLoop,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start() -> Host {
        let ev = EventLoop::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (ev.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                e.run_until(|| s.load(Ordering::SeqCst), Duration::from_millis(50));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Host {
            ev,
            stop,
            thread: Some(thread),
        }
    }
    fn platform(&self) -> Platform {
        self.ev.platform()
    }
    fn dispatcher(&self) -> Arc<dyn Dispatcher> {
        Arc::new(self.ev.clone())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn allow(p: &Pipeline, d: &Arc<dyn Dispatcher>, bag: &mixer_attr::Attributes<'_>) {
    match p.worker(d.clone()).check(bag, |_| {}) {
        CheckStart::Done(a) => assert_eq!(a.status.code, Code::OK, "{}", a.status.message),
        CheckStart::Pending(_) => panic!("no hold configured: answers at once"),
    }
}

#[test]
fn burst_to_idle_revisions_sends_one_poke_each() {
    let server = StubAutoscaler::start().unwrap();
    let host = Host::start();
    let params =
        json!({"autoscalerUrl": server.url(), "podName": "test-pod", "reportInterval": "30s"});
    let (p, handler, _) = pipeline(&config_yaml(&params, "5s"), host.platform());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (p, d) = (p.clone(), host.dispatcher());
            std::thread::spawn(move || {
                let a = by_headers("default", "hello-00001");
                let b = by_host("world-00002.prod.svc.cluster.local:8080");
                for i in 0..2_500 {
                    allow(&p, &d, if i % 2 == 0 { &a } else { &b });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(server.wait_for(Duration::from_secs(5), |s| s.stats().len() >= 2));
    // Nothing more comes before the (long) report interval.
    std::thread::sleep(Duration::from_millis(300));
    let stats = server.stats();
    assert_eq!(stats.len(), 2, "one poke per idle revision: {stats:?}");
    let mut seen: Vec<(String, String)> = stats
        .iter()
        .map(|(_, m)| (m.namespace.clone(), m.name.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("default".to_string(), "hello-00001".to_string()),
            ("prod".to_string(), "world-00002".to_string())
        ]
    );
    for (_, m) in &stats {
        let s = m.stat.as_ref().unwrap();
        assert_eq!(s.pod_name, "test-pod");
        assert_eq!((s.average_concurrent_requests, s.request_count), (1.0, 1.0));
    }
    let st = handler.stats();
    assert_eq!(
        (st.pokes, st.pokes_sent, st.connects, st.revisions),
        (2, 2, 1, 2)
    );
    assert_eq!(p.stats().checks.load(Ordering::Relaxed), 10_000);
    assert_eq!(server.decode_errors(), 0);
    drop((p, handler));
    server.stop();
}

#[test]
fn reports_every_interval_with_time_weighted_concurrency() {
    let server = StubAutoscaler::start().unwrap();
    let host = Host::start();
    let params = json!({"autoscalerUrl": server.url(), "podName": "p", "reportInterval": "200ms", "idleAfter": "10s"});
    let (p, _handler, _) = pipeline(&config_yaml(&params, "5s"), host.platform());
    let d = host.dispatcher();
    let bag = by_headers("default", "steady-00001");
    // Two long requests in flight for 1.4 s ...
    allow(&p, &d, &bag);
    allow(&p, &d, &bag);
    let started = Instant::now();
    // ... plus a short request (check then report at once) every 20 ms.
    let mut short = 0;
    while started.elapsed() < Duration::from_millis(1_400) {
        allow(&p, &d, &bag);
        p.worker(d.clone()).report(&bag);
        short += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    p.worker(d.clone()).report(&bag);
    p.worker(d.clone()).report(&bag);
    let ended = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    let stats = server.stats();
    // The first stat is the poke.
    let (_, poke) = &stats[0];
    assert_eq!(poke.stat.as_ref().unwrap().average_concurrent_requests, 1.0);
    let reports: Vec<_> = stats[1..]
        .iter()
        .filter(|(at, _)| *at <= ended + Duration::from_millis(250))
        .collect();
    assert!(
        (5..=9).contains(&reports.len()),
        "about 7 reports in 1.4 s: {}",
        reports.len()
    );
    // Full windows inside the traffic: concurrency about 2 (two long requests; the short ones
    // add a little), about 10 requests per 200 ms.
    for (_, m) in &reports[1..reports.len() - 1] {
        let s = m.stat.as_ref().unwrap();
        assert!((1.8..2.6).contains(&s.average_concurrent_requests), "{s:?}");
        assert!((4.0..=16.0).contains(&s.request_count), "{s:?}");
        assert!(s.process_uptime > 0.0);
    }
    let total: f64 = stats
        .iter()
        .map(|(_, m)| m.stat.as_ref().unwrap().request_count)
        .sum();
    // Every check counted once in reports, plus the poke's 1.
    assert!(
        (total - (short as f64 + 2.0 + 1.0)).abs() < 0.5,
        "total {total}, short {short}"
    );
    // Intervals between report frames: about 200 ms.
    let gaps: Vec<_> = reports.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for g in &gaps[..gaps.len().saturating_sub(1)] {
        assert!(
            *g > Duration::from_millis(120) && *g < Duration::from_millis(400),
            "{gaps:?}"
        );
    }
    // No traffic: no more reports.
    let n = server.stats().len();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(server.stats().len(), n, "reports stop when traffic stops");
    drop(p);
    server.stop();
}

#[test]
fn exact_averages_on_virtual_time() {
    let server = StubAutoscaler::start().unwrap();
    let vt = VirtualPlatform::new();
    let d: Arc<dyn Dispatcher> = Arc::new(vt.clone());
    let params = json!({"autoscalerUrl": server.url(), "podName": "vpod", "reportInterval": "1s", "idleAfter": "3s"});
    let (p, handler, _) = pipeline(&config_yaml(&params, "5s"), vt.platform());
    let bag = by_headers("ns", "rev-1");
    let w = p.worker(d.clone());
    allow(&p, &d, &bag); // t=0: 1 in flight (and a poke)
    assert!(server.wait_for(Duration::from_secs(5), |s| s.stats().len() == 1));
    vt.advance(Duration::from_millis(500));
    allow(&p, &d, &bag); // t=0.5: 2 in flight
    vt.advance(Duration::from_millis(250));
    w.report(&bag); // t=0.75: 1 in flight
    vt.advance(Duration::from_millis(250)); // t=1: report
    assert!(server.wait_for(Duration::from_secs(5), |s| s.stats().len() == 2));
    let s = server.stats()[1].1.stat.clone().unwrap();
    // (1 x 0.5 + 2 x 0.25 + 1 x 0.25) / 1 s = 1.25
    assert!((s.average_concurrent_requests - 1.25).abs() < 1e-9, "{s:?}");
    assert_eq!(s.request_count, 2.0);
    assert!((s.process_uptime - 1.0).abs() < 1e-9);
    w.report(&bag); // t=1: 0 in flight
    vt.advance(Duration::from_secs(1)); // nothing to report in (1, 2]
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.stats().len(), 2);
    // Idle for idleAfter: forgotten; the next request pokes again.
    vt.advance(Duration::from_secs(3));
    assert_eq!(handler.stats().revisions, 0);
    allow(&p, &d, &bag);
    assert!(server.wait_for(Duration::from_secs(5), |s| s.stats().len() == 3));
    let s = server.stats()[2].1.stat.clone().unwrap();
    assert_eq!((s.average_concurrent_requests, s.request_count), (1.0, 1.0));
    assert_eq!(handler.stats().pokes, 2);
    drop(p);
    server.stop();
}

/// Keeps traffic flowing to `revisions` revisions until stopped.
fn traffic(
    p: &Pipeline,
    d: &Arc<dyn Dispatcher>,
    revisions: usize,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let (p, d, stop) = (p.clone(), d.clone(), stop.clone());
    std::thread::spawn(move || {
        let bags: Vec<_> = (0..revisions)
            .map(|i| by_headers("default", &format!("rev-{i:03}")))
            .collect();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            for b in &bags {
                allow(&p, &d, b);
                p.worker(d.clone()).report(b);
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    })
}

#[test]
fn reconnects_after_close_1012() {
    let server = StubAutoscaler::start().unwrap();
    let host = Host::start();
    let params = json!({
        "autoscalerUrl": server.url(), "podName": "p", "reportInterval": "100ms",
        "reconnectBackoff": {"min": "20ms", "max": "200ms"},
    });
    let (p, handler, _) = pipeline(&config_yaml(&params, "5s"), host.platform());
    let stop = Arc::new(AtomicBool::new(false));
    let t = traffic(&p, &host.dispatcher(), 1, &stop);
    assert!(server.wait_for(Duration::from_secs(5), |s| s.frames().len() >= 3));
    server.close_all_with_restart();
    assert!(server.wait_for(Duration::from_secs(5), |s| s.connections() == 2));
    assert!(server.wait_for(Duration::from_secs(5), |s| {
        s.frames().iter().filter(|f| f.connection == 2).count() >= 3
    }));
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    let st = handler.stats();
    assert_eq!((st.connects, st.reconnects), (2, 1), "{st:?}");
    assert_eq!(st.closed_by_server, 1);
    assert_eq!(server.decode_errors(), 0);
    drop((p, handler));
    server.stop();
}

#[test]
fn reconnects_after_restart_on_same_port_with_bounded_memory() {
    const REVISIONS: usize = 20;
    let server = StubAutoscaler::start().unwrap();
    let port = server.addr().port();
    let host = Host::start();
    let params = json!({
        "autoscalerUrl": server.url(), "podName": "p", "reportInterval": "100ms",
        "reconnectBackoff": {"min": "20ms", "max": "100ms"}, "maxRevisions": 1000,
    });
    let (p, handler, _) = pipeline(&config_yaml(&params, "5s"), host.platform());
    let stop = Arc::new(AtomicBool::new(false));
    let t = traffic(&p, &host.dispatcher(), REVISIONS, &stop);
    assert!(server.wait_for(Duration::from_secs(5), |s| s.frames().len() >= 3));
    server.stop();
    // Down for 1 s (about 10 report intervals): the outbox holds one merged entry per revision.
    let down = Instant::now();
    let mut most = 0;
    while down.elapsed() < Duration::from_secs(1) {
        most = most.max(handler.stats().outbox_revisions);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        most as usize <= REVISIONS,
        "outbox bounded by revisions: {most}"
    );
    assert!(most > 0, "stats waited while down");
    assert!(handler.stats().connect_failures >= 1);
    let server = StubAutoscaler::start_on(port).unwrap();
    assert!(server.wait_for(Duration::from_secs(5), |s| s.frames().len() >= 2));
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    // The first frame after the restart carries the merged backlog: one entry per revision,
    // with the request counts of about 10 intervals.
    let first = &server.frames()[0].messages.messages;
    let mut per_rev: HashMap<&str, u32> = HashMap::new();
    for m in first {
        *per_rev.entry(m.name.as_str()).or_default() += 1;
    }
    assert!(
        per_rev.values().all(|n| *n == 1),
        "merged per revision: {per_rev:?}"
    );
    assert_eq!(per_rev.len(), REVISIONS);
    let counts: Vec<f64> = first
        .iter()
        .map(|m| m.stat.as_ref().unwrap().request_count)
        .collect();
    assert!(
        counts.iter().all(|c| *c >= 20.0),
        "about 1 s of requests merged: {counts:?}"
    );
    let st = handler.stats();
    assert!(st.reconnects >= 1, "{st:?}");
    assert_eq!(st.outbox_dropped, 0);
    assert_eq!(server.decode_errors(), 0);
    drop((p, handler));
    server.stop();
}

#[test]
fn outbox_is_capped_by_max_revisions() {
    // Nothing listens on this loopback port (bound then released): every connect fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vt = VirtualPlatform::new();
    let d: Arc<dyn Dispatcher> = Arc::new(vt.clone());
    let params = json!({"autoscalerUrl": format!("ws://127.0.0.1:{port}/"), "maxRevisions": 5, "reportInterval": "1s"});
    let (p, handler, _) = pipeline(&config_yaml(&params, "5s"), vt.platform());
    for round in 0..20 {
        for i in 0..10 {
            allow(&p, &d, &by_headers("default", &format!("r{i}")));
        }
        vt.advance(Duration::from_secs(1));
        let st = handler.stats();
        assert!(
            st.revisions <= 5 && st.outbox_revisions <= 5,
            "round {round}: {st:?}"
        );
    }
    let st = handler.stats();
    assert_eq!(st.revisions_untracked, 20 * 5);
    assert_eq!(st.pokes, 5);
    drop(p);
}
