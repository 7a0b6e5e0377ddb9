//! The telemetry path with Istio's default config (4 HTTP metric instances to the prometheus
//! handler + one access log entry to stdio, whose lines go to a sink that discards them):
//!
//! - `report/inline_*`: `Worker::report` evaluating and dispatching on the request thread (each
//!   distinct instance-field expression once per request);
//! - `report/deferred_capture_*`: what the request thread pays with deferred reports (capture
//!   into a record and enqueue); the queue is drained between timed chunks, untimed;
//! - `report/deferred_total_*`: capture plus the drain (evaluation and dispatch of the captured
//!   records, in batches of 256), per request;
//!
//! then the transform alone, and the exposition of 10,000 series.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_adapters::prometheus::{self, Format};
use mixer_adapters::stdio::{LineSink, StdioAdapter};
use mixer_attr::{Attributes, StringMap, Timestamp, Value, well_known as wk};
use mixer_core::report_queue::ReportQueueOptions;
use mixer_core::{CompileOptions, Pipeline, PipelineOptions};
use mixer_host::EventLoop;

/// Counts lines and drops them.
#[derive(Default)]
struct Discard(AtomicU64);

impl LineSink for Discard {
    fn write_lines(&self, lines: &[String]) {
        self.0.fetch_add(lines.len() as u64, Ordering::Relaxed);
    }
}

/// Reports captured between drains in the deferred benches.
const CHUNK: u64 = 256;

/// Deferred reports whose background drainer never starts a drain during a run (a batch larger
/// than any chunk, an hour's delay): the bench drains explicitly, on its own thread, so that
/// every drain is either timed (total) or kept out of the timing (capture).
fn deferred() -> PipelineOptions {
    PipelineOptions {
        report_queue: ReportQueueOptions {
            deferred: true,
            capacity: 4 * CHUNK as usize,
            batch: usize::MAX,
            max_delay: Duration::from_secs(3600),
        },
        ..Default::default()
    }
}

fn build(with_access_log: bool, options: PipelineOptions) -> (Pipeline, EventLoop) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/istio-configs/istio-1.4-default-mixer-config.yaml");
    let mut loaded = mixer_config::load_paths(&[path]).unwrap();
    if !with_access_log {
        loaded.config.rules.retain(|r| !r.name.starts_with("stdio"));
    }
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(StdioAdapter::with_sink(Arc::new(
        Discard::default(),
    ))));
    let event_loop = EventLoop::new();
    let compile = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    let snapshot =
        mixer_config::compile_loaded(&loaded, &registry, &event_loop.platform(), None, &compile)
            .unwrap();
    (
        Pipeline::with_options(snapshot, event_loop.platform(), options),
        event_loop,
    )
}

fn labels(app: &str, version: &str) -> Value<'static> {
    let m: StringMap = [
        ("app".to_string(), app.to_string()),
        ("version".to_string(), version.to_string()),
    ]
    .into_iter()
    .collect();
    Value::string_map(m)
}

/// A completed inbound HTTP request as the Envoy telemetry adapter would ingest it.
fn request() -> Attributes<'static> {
    let headers: StringMap = [
        (
            "x-request-id".to_string(),
            "1b8a1e5e-2f0c-4d43-9a3e-8f4b1f0b7c11".to_string(),
        ),
        (":authority".to_string(), "reviews:9080".to_string()),
    ]
    .into_iter()
    .collect();
    Attributes::new()
        .with(wk::CONTEXT_PROTOCOL, Value::str("http"))
        .with(wk::SOURCE_WORKLOAD_NAME, Value::str("productpage-v1"))
        .with(wk::SOURCE_LABELS, labels("productpage", "v1"))
        .with(wk::DESTINATION_WORKLOAD_NAME, Value::str("reviews-v2"))
        .with(wk::DESTINATION_LABELS, labels("reviews", "v2"))
        .with(
            wk::DESTINATION_SERVICE_HOST,
            Value::str("reviews.default.svc.cluster.local"),
        )
        .with(wk::DESTINATION_SERVICE_NAME, Value::str("reviews"))
        .with(wk::DESTINATION_SERVICE_NAMESPACE, Value::str("default"))
        .with(wk::DESTINATION_NAMESPACE, Value::str("default"))
        .with(wk::REQUEST_METHOD, Value::str("GET"))
        .with(wk::REQUEST_PATH, Value::str("/reviews/0"))
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
        .with(wk::REQUEST_USERAGENT, Value::str("Mozilla/5.0"))
        .with(wk::REQUEST_SIZE, Value::Int64(312))
        .with(wk::RESPONSE_SIZE, Value::Int64(4120))
        .with(wk::RESPONSE_CODE, Value::Int64(200))
        .with(
            wk::RESPONSE_DURATION,
            Value::Duration(mixer_attr::Duration::from_millis(12)),
        )
        .with(
            wk::REQUEST_TIME,
            Value::Timestamp(Timestamp::new(1_577_836_800, 0)),
        )
        .with(
            wk::RESPONSE_TIME,
            Value::Timestamp(Timestamp::new(1_577_836_800, 12_000_000)),
        )
}

fn report(c: &mut Criterion) {
    let bag = request();
    for (name, access_log) in [("4_metrics_and_access_log", true), ("4_metrics", false)] {
        let sent = if access_log { 5 } else { 4 };
        let (pipeline, event_loop) = build(access_log, PipelineOptions::default());
        let shape = pipeline.report_plan_shape();
        eprintln!(
            "{name}: {} instance fields, {} distinct expressions, {} attributes captured when deferred",
            shape.fields, shape.expressions, shape.captured_attributes
        );
        let worker = pipeline.worker(Arc::new(event_loop.clone()));
        let s = worker.report(&bag);
        assert_eq!((s.instances_sent, s.instance_errors), (sent, 0));
        c.bench_function(&format!("report/inline_{name}"), |b| {
            b.iter(|| black_box(worker.report(black_box(&bag))))
        });
        pipeline.flush();

        let (pipeline, event_loop) = build(access_log, deferred());
        let worker = pipeline.worker(Arc::new(event_loop.clone()));
        assert!(worker.report(&bag).deferred);
        assert_eq!(pipeline.drain_reports(), 1);
        let stats = pipeline.stats();
        assert_eq!(stats.report_instances.load(Ordering::Relaxed), sent as u64);
        // What the request thread pays: capture and enqueue. Drains run between chunks, untimed.
        c.bench_function(&format!("report/deferred_capture_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(worker.report(black_box(&bag)));
                    }
                    timed += start.elapsed();
                    pipeline.drain_reports();
                    left -= n;
                }
                timed
            })
        });
        // Everything per request: capture, then the drain's evaluation and dispatch.
        c.bench_function(&format!("report/deferred_total_{name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    for _ in 0..n {
                        black_box(worker.report(black_box(&bag)));
                    }
                    pipeline.drain_reports();
                    left -= n;
                }
                start.elapsed()
            })
        });
        pipeline.flush();
        assert_eq!(stats.reports_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(
            stats.report_instances.load(Ordering::Relaxed),
            sent as u64 * stats.reports.load(Ordering::Relaxed)
        );
    }
}

/// The transform alone: evaluating the instances the report builds (no dispatch, no adapter).
fn transform(c: &mut Criterion) {
    let bag = request();
    let (pipeline, _event_loop) = build(true, PipelineOptions::default());
    let snapshot = pipeline.snapshot();
    let names = [
        "requestcount",
        "requestduration",
        "requestsize",
        "responsesize",
        "accesslog",
    ];
    let instances: Vec<_> = snapshot
        .instances
        .iter()
        .filter(|i| names.contains(&&*i.short_name))
        .cloned()
        .collect();
    assert_eq!(instances.len(), 5);
    let mut values = Vec::new();
    for (name, range) in [("4_metric_instances", 0..4), ("access_log_instance", 4..5)] {
        c.bench_function(&format!("report/evaluate_{name}"), |b| {
            b.iter(|| {
                for i in &instances[range.clone()] {
                    i.evaluate(&bag, &mut (), &mut values).unwrap();
                    black_box(&values);
                }
            })
        });
    }
}

fn exposition(c: &mut Criterion) {
    let (pipeline, event_loop) = build(false, PipelineOptions::default());
    let worker = pipeline.worker(Arc::new(event_loop.clone()));
    // 2,500 distinct label sets x (1 counter + 3 histograms) = 10,000 series.
    for i in 0..2500 {
        let mut bag = request();
        bag.set(
            wk::SOURCE_WORKLOAD_NAME,
            Value::String(format!("workload-{i}").into()),
        );
        worker.report(&bag);
    }
    let snapshot = pipeline.snapshot();
    let handlers = prometheus::handlers(&snapshot);
    let series: usize = handlers[0]
        .metric_names()
        .iter()
        .map(|m| handlers[0].series_count(m))
        .sum();
    assert_eq!(series, 10_000);
    let text = prometheus::render(&snapshot, Format::Text);
    eprintln!(
        "exposition of {series} series: {} lines, {} bytes",
        text.lines().count(),
        text.len()
    );
    c.bench_function("exposition/10000_series_text", |b| {
        b.iter(|| black_box(prometheus::render(&snapshot, Format::Text)))
    });
    c.bench_function("exposition/10000_series_openmetrics", |b| {
        b.iter(|| black_box(prometheus::render(&snapshot, Format::OpenMetrics)))
    });
}

criterion_group!(benches, report, transform, exposition);
criterion_main!(benches);
