//! Scale from zero on loopback: a stand-in Knative autoscaler (websocket server decoding the
//! stat frames), a stand-in revision that becomes ready some time after the autoscaler "scales"
//! it (it serves the readiness URL), and requests through the Mixer pipeline with the `knative`
//! handler holding them until the revision is ready. Prints a timeline.
//!
//! ```text
//! cargo run -p mixer-knative --example scale_from_zero -- [--ready-after-ms 1500] [--requests 5]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::pal::Dispatcher;
use mixer_core::{CheckStart, Pipeline};
use mixer_host::EventLoop;
use mixer_knative::testing::StubAutoscaler;
use parking_lot::Mutex;

const NAMESPACE: &str = "default";
const REVISION: &str = "hello-00001";

/// The printed timeline: offsets from the start.
#[derive(Clone)]
struct Timeline {
    t0: Instant,
    events: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Timeline {
    fn log(&self, what: impl Into<String>) {
        let at = self.t0.elapsed();
        let what = what.into();
        println!("{:>8.1} ms  {what}", at.as_secs_f64() * 1e3);
        self.events.lock().push((at, what));
    }
}

/// The stand-in revision: 503 on its readiness URL until ready, then 200.
fn revision_server(
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let (status, body) = if ready.load(Ordering::SeqCst) {
                ("200 OK", "ready")
            } else {
                ("503 Service Unavailable", "scaling")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, t)
}

fn outcome(a: &mixer_core::CheckAnswer) -> String {
    if a.status.is_ok() {
        "allowed".to_string()
    } else {
        format!("denied ({:?}: {})", a.status.code, a.status.message)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let ready_after = Duration::from_millis(arg("--ready-after-ms", 1500));
    let requests = usize::try_from(arg("--requests", 5)).unwrap_or(5);
    let timeline = Timeline {
        t0: Instant::now(),
        events: Arc::default(),
    };

    // The stand-in revision (scale 0, not ready).
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (rev_port, rev_thread) = revision_server(ready.clone(), stop.clone());

    // The stand-in autoscaler: a stat with concurrency > 0 for a revision at scale 0 scales it
    // to 1; the pod is ready `ready_after` later.
    let autoscaler = StubAutoscaler::start().unwrap();
    let scaled = Arc::new(AtomicBool::new(false));
    {
        let (tl, scaled, ready) = (timeline.clone(), scaled.clone(), ready.clone());
        autoscaler.on_stat(move |m| {
            let s = m.stat.clone().unwrap_or_default();
            tl.log(format!(
                "autoscaler: stat {}/{} concurrency {:.2} requests {} pod {}",
                m.namespace, m.name, s.average_concurrent_requests, s.request_count, s.pod_name
            ));
            if s.average_concurrent_requests > 0.0 && !scaled.swap(true, Ordering::SeqCst) {
                tl.log(format!(
                    "autoscaler: scaling {}/{} 0 -> 1",
                    m.namespace, m.name
                ));
                let (tl, ready) = (tl.clone(), ready.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(ready_after);
                    ready.store(true, Ordering::SeqCst);
                    tl.log("revision: pod ready (readiness URL answers 200)");
                });
            }
        });
    }

    // The proxy: a std host loop, the pipeline and the knative handler.
    let ev = EventLoop::new();
    let config = format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: knative, namespace: istio-system}}
spec:
  compiledAdapter: knative
  params:
    autoscalerUrl: {url}
    podName: demo-proxy
    reportInterval: 500ms
    hold:
      enabled: true
      timeout: 10s
      readinessUrl: http://127.0.0.1:{rev_port}/ready/{{namespace}}/{{revision}}
      probeInterval: 100ms
  dispatch:
    timeout: 15s
---
{instances}---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: knative, namespace: istio-system}}
spec:
  actions:
  - handler: knative
    instances: [knativerevision, knativecompletion]
"#,
        url = autoscaler.url(),
        instances = mixer_knative::DEFAULT_INSTANCES_YAML,
    );
    let loaded = mixer_config::load_str("knative-demo.yaml", &config).expect("config loads");
    let mut registry = mixer_core::AdapterRegistry::new();
    let adapter = mixer_knative::register(&mut registry);
    let platform = ev.platform();
    let snapshot =
        mixer_config::compile_loaded(&loaded, &registry, &platform, None, &Default::default())
            .unwrap_or_else(|e| panic!("config compiles: {e:?}"));
    let pipeline = Pipeline::new(snapshot, platform);
    let handler = adapter.handler("knative.istio-system").expect("handler");
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(ev.clone());
    let worker = pipeline.worker(dispatcher);

    let headers: StringMap = [
        (
            "knative-serving-namespace".to_string(),
            NAMESPACE.to_string(),
        ),
        ("knative-serving-revision".to_string(), REVISION.to_string()),
    ]
    .into_iter()
    .collect();
    let bag = Attributes::new().with(wk::REQUEST_HEADERS, Value::string_map(headers));

    // Cold: `requests` requests to the idle revision, 50 ms apart.
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..requests {
        let started = Instant::now();
        if i == 0 {
            timeline.log(format!(
                "proxy: first request for {NAMESPACE}/{REVISION} (idle revision)"
            ));
        }
        let (tl, d, w, b) = (timeline.clone(), done.clone(), worker.clone(), bag.clone());
        let on_done = move |a: mixer_core::CheckAnswer| {
            tl.log(format!(
                "proxy: request {i} answered: {} after {:.1} ms",
                outcome(&a),
                started.elapsed().as_secs_f64() * 1e3
            ));
            w.report(&b);
            d.fetch_add(1, Ordering::SeqCst);
        };
        match worker.check(&bag, on_done) {
            CheckStart::Done(a) => {
                timeline.log(format!(
                    "proxy: request {i} answered at once: {}",
                    outcome(&a)
                ));
                worker.report(&bag);
                done.fetch_add(1, Ordering::SeqCst);
            }
            CheckStart::Pending(h) => {
                timeline.log(format!("proxy: request {i} held"));
                handles.push(h);
            }
        }
        ev.run_until(|| false, Duration::from_millis(50));
    }
    ev.run_until(
        || done.load(Ordering::SeqCst) == requests,
        ready_after + Duration::from_secs(15),
    );

    // Warm: the same revision now answers at once.
    for i in 0..3 {
        let started = Instant::now();
        match worker.check(&bag, |_| {}) {
            CheckStart::Done(a) => timeline.log(format!(
                "proxy: warm request {i}: {} in {:.3} ms",
                outcome(&a),
                started.elapsed().as_secs_f64() * 1e3
            )),
            CheckStart::Pending(_) => {
                timeline.log(format!("proxy: warm request {i} held (unexpected)"))
            }
        }
        worker.report(&bag);
    }
    // Let one report interval pass so the autoscaler sees the measured traffic.
    ev.run_until(|| false, Duration::from_millis(600));

    let st = handler.stats();
    println!();
    println!(
        "pokes {} (sent {}), reports {}, frames {}, connects {}, held {}, released {}, timed out {}",
        st.pokes,
        st.pokes_sent,
        st.reports,
        st.frames_sent,
        st.connects,
        st.requests_held,
        st.requests_released,
        st.requests_timed_out
    );
    if st.hold_time.count() > 0 {
        println!(
            "cold-start hold: max {:.1} ms, mean {:.1} ms over {} requests",
            st.hold_time.max.as_secs_f64() * 1e3,
            st.hold_time.sum.as_secs_f64() * 1e3 / st.hold_time.count() as f64,
            st.hold_time.count()
        );
    }
    drop(handles);
    drop((worker, pipeline, handler));
    stop.store(true, Ordering::SeqCst);
    let _ = rev_thread.join();
    autoscaler.stop();
}
