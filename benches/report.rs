//! The telemetry path: the per-request report cost with Istio's default config (4 HTTP metric
//! instances to the prometheus handler + one access log entry to stdio, whose lines go to a sink
//! that discards them), inline dispatch; the same without the access log; and the exposition
//! of 10,000 series.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_adapters::prometheus::{self, Format};
use mixer_adapters::stdio::{LineSink, StdioAdapter};
use mixer_attr::{Attributes, StringMap, Timestamp, Value, well_known as wk};
use mixer_core::{CompileOptions, Pipeline};
use mixer_host::EventLoop;

/// Counts lines and drops them.
#[derive(Default)]
struct Discard(AtomicU64);

impl LineSink for Discard {
    fn write_lines(&self, lines: &[String]) {
        self.0.fetch_add(lines.len() as u64, Ordering::Relaxed);
    }
}

fn pipeline(with_access_log: bool) -> (Pipeline, EventLoop) {
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
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    let snapshot =
        mixer_config::compile_loaded(&loaded, &registry, &event_loop.platform(), None, &options)
            .unwrap();
    (Pipeline::new(snapshot, event_loop.platform()), event_loop)
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
    for (name, access_log) in [
        ("istio_default_4_metrics_and_access_log", true),
        ("istio_default_4_metrics", false),
    ] {
        let (pipeline, event_loop) = pipeline(access_log);
        let worker = pipeline.worker(Arc::new(event_loop.clone()));
        let s = worker.report(&bag);
        assert_eq!(
            (s.instances_sent, s.instance_errors),
            (if access_log { 5 } else { 4 }, 0)
        );
        c.bench_function(&format!("report/{name}"), |b| {
            b.iter(|| black_box(worker.report(black_box(&bag))))
        });
        pipeline.flush();
    }
}

/// The transform alone: evaluating the instances the report builds (no dispatch, no adapter).
fn transform(c: &mut Criterion) {
    let bag = request();
    let (pipeline, _event_loop) = pipeline(true);
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
    let (pipeline, event_loop) = pipeline(false);
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
