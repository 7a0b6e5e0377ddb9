//! Report dispatch controls: sampling (random and rate-limited), buffering by count and by
//! virtual time, aggregation, drop accounting under a saturated queue, flush on swap (with
//! concurrent reporters) and on shutdown, and the inline default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_core::adapter::{Adapter, AdapterError, Handler, HandlerConfig, ReportHandler};
use mixer_core::dispatch::{DispatchStats, LogSink, MemoryLog};
use mixer_core::instance::{CompiledInstance, InstanceView};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{AdapterRegistry, CompileOptions, Config, Pipeline, Snapshot, compile};
use mixer_proto::v2;
use parking_lot::Mutex;
use serde_json::json;

/// Records every instance it receives: (generation param, value, code dimension), and the batch
/// sizes. Aggregates `value` when `params.aggregate` is true.
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(u64, i64, i64)>>>,
    batches: Arc<Mutex<Vec<usize>>>,
    /// Per generation (0, 1) totals of `value`.
    totals: Arc<[AtomicU64; 2]>,
}

struct RecorderHandler {
    generation: u64,
    aggregate: bool,
    record: bool,
    seen: Arc<Mutex<Vec<(u64, i64, i64)>>>,
    batches: Arc<Mutex<Vec<usize>>>,
    totals: Arc<[AtomicU64; 2]>,
}

impl Adapter for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["metric"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(RecorderHandler {
            generation: c.params["generation"].as_u64().unwrap_or(0),
            aggregate: c.params["aggregate"].as_bool().unwrap_or(false),
            record: c.params["record"].as_bool().unwrap_or(true),
            seen: self.seen.clone(),
            batches: self.batches.clone(),
            totals: self.totals.clone(),
        }))
    }
}

impl Handler for RecorderHandler {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
}

impl ReportHandler for RecorderHandler {
    fn report(&self, instances: &[InstanceView<'_>]) {
        self.batches.lock().push(instances.len());
        for v in instances {
            let value = match v.get("value") {
                Some(Value::Int64(i)) => *i,
                _ => -1,
            };
            let code = match v.get("dimensions.code") {
                Some(Value::Int64(i)) => *i,
                _ => -1,
            };
            // The instance's generation dimension says which snapshot built it.
            let built_by = match v.get("dimensions.generation") {
                Some(Value::Int64(g)) => *g as u64,
                _ => 99,
            };
            assert_eq!(
                built_by, self.generation,
                "an instance reached a handler of another snapshot"
            );
            self.totals[(self.generation % 2) as usize].fetch_add(value as u64, Ordering::Relaxed);
            if self.record {
                self.seen.lock().push((self.generation, value, code));
            }
        }
    }
    fn aggregation(&self, instance: &CompiledInstance) -> Option<usize> {
        if self.aggregate {
            instance.position("value")
        } else {
            None
        }
    }
}

fn config(
    generation: u64,
    handler_params: serde_json::Value,
    dispatch: serde_json::Value,
) -> Config {
    let mut params = handler_params;
    params["generation"] = json!(generation);
    Config {
        handlers: vec![v2::Handler {
            name: "rec".into(),
            namespace: "istio-system".into(),
            adapter: "recorder".into(),
            params: Some(json_to_struct(&params)),
            dispatch: Some(dispatch_controls(&dispatch)),
            ..Default::default()
        }],
        instances: vec![v2::Instance {
            name: "requests".into(),
            namespace: "istio-system".into(),
            template: "metric".into(),
            params: Some(json_to_struct(&json!({
                "value": "request.size | 1",
                "dimensions": {"code": "response.code | 0", "generation": generation.to_string()}
            }))),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "rec".into(),
            namespace: "istio-system".into(),
            actions: vec![v2::Action {
                handler: "rec".into(),
                instances: vec!["requests".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn duration(ms: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// `{"percentage", "rate_limit": [max, window_ms], "batch", "delay_ms", "queue"}`
fn dispatch_controls(d: &serde_json::Value) -> v2::DispatchControls {
    let mut c = v2::DispatchControls::default();
    if d.get("percentage").is_some() || d.get("rate_limit").is_some() {
        c.sampling = Some(v2::Sampling {
            percentage: d["percentage"].as_f64().unwrap_or(0.0),
            rate_limit: d.get("rate_limit").map(|r| v2::RateLimit {
                max_unsampled_entries: r[0].as_u64().unwrap() as u32,
                window: duration(r[1].as_u64().unwrap()),
            }),
        });
    }
    if d.get("batch").is_some() || d.get("delay_ms").is_some() || d.get("queue").is_some() {
        c.buffering = Some(v2::Buffering {
            max_batch_entries: d["batch"].as_u64().unwrap_or(0) as u32,
            max_delay: d
                .get("delay_ms")
                .and_then(|x| duration(x.as_u64().unwrap())),
            max_queue_entries: d["queue"].as_u64().unwrap_or(0) as u32,
        });
    }
    c
}

struct Setup {
    vt: VirtualPlatform,
    pipeline: Pipeline,
    recorder: Recorder,
    registry: AdapterRegistry,
    log: Arc<MemoryLog>,
}

fn options(log: &Arc<MemoryLog>, seed: u64) -> CompileOptions {
    CompileOptions {
        report_seed: seed,
        dispatch_log: LogSink(log.clone()),
        ..Default::default()
    }
}

fn setup_seeded(params: serde_json::Value, dispatch: serde_json::Value, seed: u64) -> Setup {
    let vt = VirtualPlatform::new();
    let recorder = Recorder::default();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Recorder {
        seen: recorder.seen.clone(),
        batches: recorder.batches.clone(),
        totals: recorder.totals.clone(),
    }));
    let log = Arc::new(MemoryLog::default());
    let snapshot = compile(
        &config(0, params, dispatch),
        &registry,
        &vt.platform(),
        None,
        &options(&log, seed),
    )
    .unwrap();
    let pipeline = Pipeline::new(snapshot, vt.platform());
    Setup {
        vt,
        pipeline,
        recorder,
        registry,
        log,
    }
}

fn setup(params: serde_json::Value, dispatch: serde_json::Value) -> Setup {
    setup_seeded(params, dispatch, 7)
}

fn bag(code: i64, size: i64) -> Attributes<'static> {
    Attributes::new()
        .with(wk::RESPONSE_CODE, Value::Int64(code))
        .with(wk::REQUEST_SIZE, Value::Int64(size))
}

fn stats(p: &Pipeline) -> Arc<Snapshot> {
    p.snapshot()
}

fn get(s: &Snapshot, f: impl Fn(&DispatchStats) -> &AtomicU64) -> u64 {
    DispatchStats::get(f(s.handlers[0].report_dispatch.stats()))
}

#[test]
fn without_controls_reports_are_inline() {
    let s = setup(json!({}), json!({}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    assert!(
        s.pipeline.snapshot().handlers[0]
            .report_dispatch
            .is_inline()
    );
    w.report(&bag(200, 1));
    assert_eq!(*s.recorder.seen.lock(), [(0, 1, 200)]);
    assert_eq!(s.vt.pending_timers(), 0);
}

fn sampled(seed: u64, dispatch: serde_json::Value, n: usize) -> (usize, Vec<i64>) {
    let s = setup_seeded(json!({}), dispatch, seed);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..n {
        w.report(&bag(i as i64, 1));
    }
    let seen = s.recorder.seen.lock();
    let snap = stats(&s.pipeline);
    assert_eq!(
        get(&snap, |d| &d.sampled_out) as usize + seen.len(),
        n,
        "every report is sent or counted"
    );
    (seen.len(), seen.iter().map(|x| x.2).collect())
}

#[test]
fn random_sampling_is_within_a_statistical_bound_and_reproducible() {
    let n = 20_000;
    for pct in [1.0, 10.0, 25.0, 50.0, 90.0] {
        let (got, _) = sampled(1, json!({"percentage": pct}), n);
        let p = pct / 100.0;
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        // 5 standard deviations: a false failure has probability below 1e-6.
        assert!(
            (got as f64 - mean).abs() < 5.0 * sd,
            "{pct}%: {got} of {n}, expected {mean} +- {}",
            5.0 * sd
        );
    }
    // Same seed, same decisions; another seed, other decisions.
    let a = sampled(42, json!({"percentage": 30.0}), 2000).1;
    let b = sampled(42, json!({"percentage": 30.0}), 2000).1;
    let c = sampled(43, json!({"percentage": 30.0}), 2000).1;
    assert_eq!(a, b);
    assert_ne!(a, c);
    // 0 without a rate limit means "not configured"; 100 sends everything.
    assert_eq!(sampled(1, json!({"percentage": 0.0}), 100).0, 100);
    assert_eq!(sampled(1, json!({"percentage": 100.0}), 100).0, 100);
}

#[test]
fn rate_limited_sampling_lets_a_burst_through_per_window() {
    // A plain cap: 10 per second.
    let s = setup(json!({}), json!({"rate_limit": [10, 1000]}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for _ in 0..50 {
        w.report(&bag(200, 1));
    }
    assert_eq!(s.recorder.seen.lock().len(), 10);
    s.vt.advance(Duration::from_millis(999));
    w.report(&bag(200, 1));
    assert_eq!(s.recorder.seen.lock().len(), 10, "still the first window");
    s.vt.advance(Duration::from_millis(1));
    for _ in 0..50 {
        w.report(&bag(200, 1));
    }
    assert_eq!(
        s.recorder.seen.lock().len(),
        20,
        "a new window lets 10 more through"
    );
    assert_eq!(get(&stats(&s.pipeline), |d| &d.sampled_out), 81);

    // Beyond the burst, the percentage samples: 100 unsampled + 50% of 10,000.
    let s = setup(
        json!({}),
        json!({"rate_limit": [100, 60_000], "percentage": 50.0}),
    );
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for _ in 0..10_100 {
        w.report(&bag(200, 1));
    }
    let got = s.recorder.seen.lock().len() as f64;
    assert!((got - 5100.0).abs() < 5.0 * 50.0, "{got}");
}

#[test]
fn buffering_flushes_by_count_on_the_platform_dispatcher() {
    let s = setup(json!({}), json!({"batch": 5, "delay_ms": 60_000}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..4 {
        w.report(&bag(i, 1));
    }
    assert!(s.recorder.seen.lock().is_empty(), "buffered");
    assert_eq!(
        s.pipeline.snapshot().handlers[0].report_dispatch.queued(),
        4
    );
    w.report(&bag(4, 1));
    assert!(
        s.recorder.seen.lock().is_empty(),
        "a full batch is delivered by the dispatcher, not inline"
    );
    assert_eq!(s.vt.run_posted(), 1);
    assert_eq!(*s.recorder.batches.lock(), [5]);
    let codes: Vec<i64> = s.recorder.seen.lock().iter().map(|x| x.2).collect();
    assert_eq!(codes, [0, 1, 2, 3, 4]);
    assert_eq!(get(&stats(&s.pipeline), |d| &d.batches), 1);
}

#[test]
fn buffering_flushes_after_max_delay_in_virtual_time() {
    let s = setup(json!({}), json!({"batch": 100, "delay_ms": 100}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..3 {
        w.report(&bag(i, 1));
    }
    s.vt.advance(Duration::from_millis(99));
    assert!(s.recorder.seen.lock().is_empty());
    s.vt.advance(Duration::from_millis(1));
    assert_eq!(s.recorder.seen.lock().len(), 3);
    assert_eq!(*s.recorder.batches.lock(), [3]);
    // The next batch gets its own deadline, counted from its first entry.
    s.vt.advance(Duration::from_millis(50));
    w.report(&bag(9, 1));
    s.vt.advance(Duration::from_millis(99));
    assert_eq!(s.recorder.seen.lock().len(), 3);
    s.vt.advance(Duration::from_millis(1));
    assert_eq!(s.recorder.seen.lock().len(), 4);
}

#[test]
fn aggregation_sums_increments_of_the_same_series() {
    let s = setup(
        json!({"aggregate": true}),
        json!({"batch": 1000, "delay_ms": 1000}),
    );
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..300 {
        w.report(&bag(if i % 3 == 0 { 500 } else { 200 }, 2));
    }
    s.vt.advance(Duration::from_secs(1));
    let mut seen = s.recorder.seen.lock().clone();
    seen.sort();
    assert_eq!(
        seen,
        [(0, 200, 500), (0, 400, 200)],
        "two series, increments summed"
    );
    let snap = stats(&s.pipeline);
    assert_eq!(get(&snap, |d| &d.aggregated), 298);
    assert_eq!(get(&snap, |d| &d.buffered), 300);
    assert_eq!(get(&snap, |d| &d.delivered), 2);

    // Without the handler's consent nothing is merged.
    let s = setup(json!({}), json!({"batch": 1000, "delay_ms": 1000}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for _ in 0..10 {
        w.report(&bag(200, 2));
    }
    s.pipeline.flush();
    assert_eq!(s.recorder.seen.lock().len(), 10);
}

#[test]
fn a_saturated_queue_drops_with_a_count_and_a_log_line() {
    let s = setup(
        json!({}),
        json!({"batch": 10, "queue": 20, "delay_ms": 60_000}),
    );
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    // The dispatcher does not run: full batches wait, the queue saturates.
    for i in 0..100 {
        w.report(&bag(i, 1));
    }
    let snap = stats(&s.pipeline);
    assert_eq!(get(&snap, |d| &d.dropped), 80);
    assert_eq!(snap.handlers[0].report_dispatch.queued(), 20);
    let lines = s.log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("handler rec.istio-system: report queue full"),
        "{lines:?}"
    );
    // The dispatcher catches up: the two waiting batches are delivered and the drops summed up.
    s.vt.run_posted();
    assert_eq!(*s.recorder.batches.lock(), [10, 10]);
    let codes: Vec<i64> = s.recorder.seen.lock().iter().map(|x| x.2).collect();
    assert_eq!(
        codes,
        (0..20).collect::<Vec<_>>(),
        "the oldest entries are kept"
    );
    let lines = s.log.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains("dropped 80 report instances"),
        "{lines:?}"
    );
    // Space again: nothing more is dropped.
    for i in 0..5 {
        w.report(&bag(i, 1));
    }
    s.pipeline.flush();
    assert_eq!(get(&snap, |d| &d.dropped), 80);
    assert_eq!(s.recorder.seen.lock().len(), 25);
    assert_eq!(
        get(&snap, |d| &d.delivered) + get(&snap, |d| &d.dropped),
        105
    );
}

#[test]
fn shutdown_flush_delivers_everything_buffered() {
    let s = setup(json!({}), json!({"batch": 50, "delay_ms": 60_000}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..120 {
        w.report(&bag(i, 1));
    }
    // Two full batches wait for the dispatcher, 20 entries fill the third.
    s.pipeline.flush();
    assert_eq!(s.recorder.seen.lock().len(), 120);
    assert_eq!(
        s.pipeline.snapshot().handlers[0].report_dispatch.queued(),
        0
    );
    // The posted drains and the timer find nothing left.
    s.vt.advance(Duration::from_secs(120));
    assert_eq!(s.recorder.seen.lock().len(), 120);
}

#[test]
fn a_swap_flushes_the_old_buffers_into_the_old_handler() {
    let s = setup(json!({}), json!({"batch": 1000, "delay_ms": 60_000}));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..7 {
        w.report(&bag(i, 1));
    }
    let next = compile(
        &config(1, json!({}), json!({"batch": 1000, "delay_ms": 60_000})),
        &s.registry,
        &s.vt.platform(),
        Some(&s.pipeline.snapshot()),
        &options(&s.log, 7),
    )
    .unwrap();
    let old = s.pipeline.swap(next);
    assert_eq!(s.recorder.seen.lock().len(), 7, "delivered at the swap");
    assert!(s.recorder.seen.lock().iter().all(|x| x.0 == 0));
    // A report that started on the old snapshot and ends after the swap goes to the old handler,
    // inline (its buffer is closed).
    let late = old.handlers[0].report_dispatch.clone();
    assert_eq!(late.queued(), 0);
    w.report(&bag(100, 1));
    assert_eq!(s.recorder.seen.lock().len(), 7, "the new snapshot buffers");
    s.pipeline.flush();
    assert_eq!(s.recorder.seen.lock().last(), Some(&(1, 1, 100)));
    // The same config with other dispatch controls keeps the handler; its buffer still flushes.
    let same_handler = compile(
        &config(1, json!({}), json!({"batch": 10})),
        &s.registry,
        &s.vt.platform(),
        Some(&s.pipeline.snapshot()),
        &options(&s.log, 7),
    )
    .unwrap();
    w.report(&bag(101, 1));
    s.pipeline.swap(same_handler);
    assert_eq!(s.recorder.seen.lock().last(), Some(&(1, 1, 101)));
}

#[test]
fn concurrent_reporters_and_swaps_lose_and_duplicate_nothing() {
    let dispatch = json!({"batch": 16, "delay_ms": 5, "queue": 1_000_000});
    let s = setup(json!({"record": false}), dispatch.clone());
    let configs = [
        config(0, json!({"record": false}), dispatch.clone()),
        config(1, json!({"record": false}), dispatch),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4 {
        let worker = s.pipeline.worker(Arc::new(s.vt.clone()));
        let (stop, sent) = (stop.clone(), sent.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) || i < 2000 {
                let size = 1 + (i + t) % 3;
                worker.report(&bag(200, size));
                sent.fetch_add(size as u64, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for n in 0..300 {
        let next = compile(
            &configs[(n + 1) % 2],
            &s.registry,
            &s.vt.platform(),
            Some(&s.pipeline.snapshot()),
            &options(&s.log, 7),
        )
        .unwrap();
        s.pipeline.swap(next);
        // The platform's loop delivers full batches and timers now and then.
        if n % 7 == 0 {
            s.vt.advance(Duration::from_millis(3));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    s.pipeline.flush();
    s.vt.advance(Duration::from_secs(1));
    let totals = &s.recorder.totals;
    let delivered = totals[0].load(Ordering::Relaxed) + totals[1].load(Ordering::Relaxed);
    assert_eq!(
        delivered,
        sent.load(Ordering::Relaxed),
        "every increment delivered exactly once"
    );
    assert!(totals[0].load(Ordering::Relaxed) > 0 && totals[1].load(Ordering::Relaxed) > 0);
    assert!(s.log.lines().is_empty(), "{:?}", s.log.lines());
}

#[test]
fn unusable_dispatch_controls_are_config_errors() {
    let vt = VirtualPlatform::new();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Recorder::default()));
    for (dispatch, field) in [
        (
            json!({"batch": 100, "queue": 10}),
            "dispatch.buffering.maxQueueEntries",
        ),
        (json!({"percentage": 150.0}), "dispatch.sampling.percentage"),
        (
            json!({"rate_limit": [5, 0]}),
            "dispatch.sampling.rateLimit.window",
        ),
    ] {
        let err = compile(
            &config(0, json!({}), dispatch),
            &registry,
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].object, "handler/istio-system/rec");
        assert_eq!(err.0[0].field, field, "{}", err.0[0]);
    }
}
