//! Deferred reports against the real telemetry handlers: the same requests reported inline and
//! deferred (drained in the background and by flush) give the same Prometheus exposition and
//! the same access log lines, with Istio-shaped instances (metrics repeating the same
//! dimensions, an access log reading headers by key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mixer_adapters::prometheus::{self, Format};
use mixer_adapters::stdio::{MemorySink, StdioAdapter};
use mixer_attr::{Attributes, StringMap, StringMapRef, Timestamp, Value, well_known as wk};
use mixer_core::config_builder::{handler, instance, rule};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::report_queue::ReportQueueOptions;
use mixer_core::{CompileOptions, Config, Pipeline, PipelineOptions, compile};
use serde_json::json;

fn dimensions() -> serde_json::Value {
    json!({
        "reporter": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
        "source_workload": "source.workload.name | \"unknown\"",
        "source_app": "source.labels[\"app\"] | \"unknown\"",
        "destination_app": "destination.labels[\"app\"] | \"unknown\"",
        "destination_service": "destination.service.host | conditional((destination.service.name | \"unknown\") == \"unknown\", \"unknown\", request.host)",
        "response_code": "response.code | 200",
        "connection_security_policy": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"unknown\", conditional(connection.mtls | false, \"mutual_tls\", \"none\"))",
    })
}

fn labels() -> serde_json::Value {
    json!([
        "reporter",
        "source_workload",
        "source_app",
        "destination_app",
        "destination_service",
        "response_code",
        "connection_security_policy"
    ])
}

fn config() -> Config {
    let prom = json!({"metrics": [
        {"name": "requests_total", "instance_name": "requestcount.instance.istio-system",
         "kind": "COUNTER", "label_names": labels()},
        {"name": "request_duration_seconds", "instance_name": "requestduration.instance.istio-system",
         "kind": "DISTRIBUTION", "label_names": labels(),
         "buckets": {"explicit_buckets": {"bounds": [0.005, 0.01, 0.05, 0.1, 1]}}},
        {"name": "response_bytes", "instance_name": "responsesize.instance.istio-system",
         "kind": "DISTRIBUTION", "label_names": labels(),
         "buckets": {"exponential_buckets": {"num_finite_buckets": 6, "growth_factor": 10, "scale": 1}}},
    ]});
    Config {
        handlers: vec![
            handler("prometheus", "prometheus", prom),
            handler("stdio", "stdio", json!({"outputAsJson": true})),
        ],
        instances: vec![
            instance(
                "requestcount",
                "metric",
                json!({"value": "1", "dimensions": dimensions()}),
            ),
            instance(
                "requestduration",
                "metric",
                json!({"value": "response.duration | \"0ms\"", "dimensions": dimensions()}),
            ),
            instance(
                "responsesize",
                "metric",
                json!({"value": "response.size | 0", "dimensions": dimensions()}),
            ),
            instance(
                "accesslog",
                "logentry",
                json!({
                    "severity": "\"Info\"",
                    "timestamp": "request.time",
                    "variables": {
                        "requestId": "request.headers[\"x-request-id\"] | \"\"",
                        "httpAuthority": "request.headers[\":authority\"] | request.host | \"\"",
                        "sourceApp": "source.labels[\"app\"] | \"\"",
                        "responseCode": "response.code | 0",
                        "latency": "response.duration | \"0ms\"",
                        "reporter": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
                    }
                }),
            ),
        ],
        rules: vec![
            rule(
                "promhttp",
                "(context.protocol == \"http\" || context.protocol == \"grpc\") && (match((request.useragent | \"-\"), \"kube-probe*\") == false)",
                "prometheus",
                &["requestcount", "requestduration", "responsesize"],
            ),
            rule(
                "stdio",
                "context.protocol == \"http\" || context.protocol == \"grpc\"",
                "stdio",
                &["accesslog"],
            ),
        ],
        ..Default::default()
    }
}

struct Telemetry {
    pipeline: Pipeline,
    vt: VirtualPlatform,
    lines: Arc<MemorySink>,
}

fn telemetry(queue: ReportQueueOptions) -> Telemetry {
    let vt = VirtualPlatform::new();
    let lines = Arc::new(MemorySink::default());
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(StdioAdapter::with_sink(lines.clone())));
    let snapshot = compile(
        &config(),
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let options = PipelineOptions {
        report_queue: queue,
        ..Default::default()
    };
    Telemetry {
        pipeline: Pipeline::with_options(snapshot, vt.platform(), options),
        vt,
        lines,
    }
}

fn request(i: u64, headers: &Vec<(String, String)>) -> Attributes<'_> {
    let app: StringMap = [("app".to_string(), format!("app-{}", i % 5))]
        .into_iter()
        .collect();
    let mut b = Attributes::new()
        .with(
            wk::CONTEXT_PROTOCOL,
            Value::str(["http", "grpc", "tcp"][(i % 3) as usize]),
        )
        .with(
            wk::REQUEST_HEADERS,
            Value::StringMap(StringMapRef::Borrowed(headers)),
        )
        .with(wk::SOURCE_LABELS, Value::string_map(app))
        .with(
            wk::SOURCE_WORKLOAD_NAME,
            Value::String(format!("wl-{}", i % 4).into()),
        )
        .with(
            wk::RESPONSE_CODE,
            Value::Int64([200, 404, 503][(i % 3) as usize]),
        )
        .with(wk::RESPONSE_SIZE, Value::Int64((i * 37 % 5000) as i64))
        .with(
            wk::RESPONSE_DURATION,
            Value::Duration(mixer_attr::Duration::from_millis((i % 40) as i64)),
        )
        .with(
            wk::REQUEST_TIME,
            Value::Timestamp(Timestamp::new(1_600_000_000 + i as i64, 0)),
        );
    if i.is_multiple_of(2) {
        b.set(wk::REQUEST_HOST, Value::str("reviews:9080"));
        b.set(wk::DESTINATION_SERVICE_NAME, Value::str("reviews"));
    }
    if i % 6 == 1 {
        b.set(wk::REQUEST_USERAGENT, Value::str("kube-probe/1.15"));
    }
    if i.is_multiple_of(5) {
        b.set(wk::CONTEXT_REPORTER_KIND, Value::str("outbound"));
        b.set(wk::CONNECTION_MTLS, Value::Bool(true));
    }
    b
}

fn headers(i: u64) -> Vec<(String, String)> {
    vec![
        ("x-request-id".to_string(), format!("req-{i}")),
        (":authority".to_string(), format!("host-{}", i % 2)),
        ("cookie".to_string(), "c=1".to_string()),
    ]
}

fn run(t: &Telemetry, n: u64) {
    let worker = t.pipeline.worker(Arc::new(t.vt.clone()));
    for i in 0..n {
        let h = headers(i);
        worker.report(&request(i, &h));
    }
    t.pipeline.flush();
}

#[test]
fn prometheus_and_stdio_see_the_same_reports_inline_and_deferred() {
    let inline = telemetry(ReportQueueOptions::default());
    // Drained by a real background thread in batches, the rest by flush.
    let deferred = telemetry(ReportQueueOptions {
        deferred: true,
        capacity: 10_000,
        batch: 32,
        max_delay: Duration::from_micros(100),
    });
    run(&inline, 600);
    run(&deferred, 600);
    let stats = deferred.pipeline.stats();
    assert_eq!(
        stats
            .reports_deferred
            .load(std::sync::atomic::Ordering::Relaxed),
        600
    );
    assert_eq!(
        stats
            .reports_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let text = |t: &Telemetry| prometheus::render(&t.pipeline.snapshot(), Format::Text);
    let a = text(&inline);
    assert!(a.contains("requests_total{"), "{a}");
    assert!(a.contains("source_app=\"app-3\""));
    assert!(a.contains("connection_security_policy=\"unknown\""));
    assert_eq!(a, text(&deferred));
    let lines = inline.lines.lines();
    // http and grpc requests are logged (400 of 600), in the same order both ways.
    assert_eq!(lines.len(), 400);
    assert!(lines.iter().any(|l| l.contains("req-598")));
    assert_eq!(lines, deferred.lines.lines());
}
