//! The `prometheus` adapter through the pipeline: counters, gauges and histograms (explicit,
//! linear, exponential buckets) with exact values, the exposition checked by `promtool check
//! metrics`, OpenMetrics, expiry on virtual time, aggregation of buffered counters, config swaps
//! (kept metrics keep their values, dropped ones disappear) and bad params.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mixer_adapters::prometheus::{self, Format, Prometheus};
use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{AdapterRegistry, CompileOptions, Config, Pipeline, Snapshot, compile};
use mixer_proto::v2;
use serde_json::json;

fn instance(name: &str, value: &str) -> v2::Instance {
    v2::Instance {
        name: name.into(),
        namespace: "istio-system".into(),
        template: "metric".into(),
        params: Some(json_to_struct(&json!({
            "value": value,
            "dimensions": {
                "source": "source.workload.name | \"unknown\"",
                "code": "response.code | 200",
                "path": "request.path | \"/\"",
            }
        }))),
        ..Default::default()
    }
}

fn metric(
    name: &str,
    inst: &str,
    kind: &str,
    buckets: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut m = json!({"name": name, "instance_name": format!("{inst}.instance.istio-system"), "kind": kind,
        "label_names": ["source", "code"]});
    if let Some(b) = buckets {
        m["buckets"] = b;
    }
    m
}

fn config(
    metrics: Vec<serde_json::Value>,
    instances: &[(&str, &str)],
    extra: serde_json::Value,
) -> Config {
    let mut params = json!({"metrics": metrics});
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            params[k] = v;
        }
    }
    Config {
        handlers: vec![v2::Handler {
            name: "prom".into(),
            namespace: "istio-system".into(),
            adapter: "prometheus".into(),
            params: Some(json_to_struct(&params)),
            ..Default::default()
        }],
        instances: instances.iter().map(|(n, v)| instance(n, v)).collect(),
        rules: vec![v2::Rule {
            name: "prom".into(),
            namespace: "istio-system".into(),
            actions: vec![v2::Action {
                handler: "prom".into(),
                instances: instances.iter().map(|(n, _)| n.to_string()).collect(),
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Five metrics over four instances: a counter, a gauge and three histograms.
fn five_metrics() -> Config {
    config(
        vec![
            metric("requests_total", "count", "COUNTER", None),
            metric("in_flight", "size", "GAUGE", None),
            metric(
                "request_duration_seconds",
                "duration",
                "DISTRIBUTION",
                Some(json!({"explicit_buckets": {"bounds": [0.01, 0.1, 1]}})),
            ),
            metric(
                "request_bytes",
                "size",
                "DISTRIBUTION",
                Some(json!({"linearBuckets": {"numFiniteBuckets": 3, "width": 100, "offset": 0}})),
            ),
            metric(
                "response_bytes",
                "rsize",
                "DISTRIBUTION",
                Some(
                    json!({"exponential_buckets": {"num_finite_buckets": 2, "growth_factor": 10, "scale": 1}}),
                ),
            ),
        ],
        &[
            ("count", "1"),
            ("size", "request.size | 0"),
            ("duration", "response.duration | \"0ms\""),
            ("rsize", "response.size | 0"),
        ],
        json!({}),
    )
}

fn request(source: &str, code: i64, size: i64, ms: i64, rsize: i64) -> Attributes<'static> {
    Attributes::new()
        .with(
            wk::SOURCE_WORKLOAD_NAME,
            Value::String(source.to_string().into()),
        )
        .with(wk::RESPONSE_CODE, Value::Int64(code))
        .with(wk::REQUEST_SIZE, Value::Int64(size))
        .with(
            wk::RESPONSE_DURATION,
            Value::Duration(mixer_attr::Duration::from_millis(ms)),
        )
        .with(wk::RESPONSE_SIZE, Value::Int64(rsize))
}

struct Setup {
    vt: VirtualPlatform,
    registry: AdapterRegistry,
    pipeline: Pipeline,
}

fn setup(cfg: &Config) -> Setup {
    let vt = VirtualPlatform::new();
    let registry = mixer_adapters::registry();
    let snapshot = compile(
        cfg,
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let pipeline = Pipeline::new(snapshot, vt.platform());
    Setup {
        vt,
        registry,
        pipeline,
    }
}

fn prom(s: &Snapshot) -> &Prometheus {
    let hs = prometheus::handlers(s);
    assert_eq!(hs.len(), 1);
    hs[0]
}

fn run_five(s: &Setup) {
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    w.report(&request("productpage", 200, 50, 5, 1));
    w.report(&request("productpage", 200, 150, 50, 20));
    w.report(&request("productpage", 200, 250, 500, 500));
    w.report(&request("reviews", 503, 400, 2000, 0));
}

/// Runs `promtool check metrics` on `text`; fails the test when promtool is missing.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed by this test and could not be run ({e}): run `bash scripts/install-test-deps.sh` (Debian package `prometheus`)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n--- exposition:\n{text}"
    );
}

#[test]
fn a_multi_metric_run_renders_exact_values_that_promtool_accepts() {
    let s = setup(&five_metrics());
    run_five(&s);
    let snap = s.pipeline.snapshot();
    let text = prometheus::render(&snap, Format::Text);
    let expected = r#"# HELP istio_requests_total requests_total
# TYPE istio_requests_total counter
istio_requests_total{code="200",source="productpage"} 3
istio_requests_total{code="503",source="reviews"} 1
# HELP istio_in_flight in_flight
# TYPE istio_in_flight gauge
istio_in_flight{code="200",source="productpage"} 250
istio_in_flight{code="503",source="reviews"} 400
# HELP istio_request_duration_seconds request_duration_seconds
# TYPE istio_request_duration_seconds histogram
istio_request_duration_seconds_bucket{code="200",source="productpage",le="0.01"} 1
istio_request_duration_seconds_bucket{code="200",source="productpage",le="0.1"} 2
istio_request_duration_seconds_bucket{code="200",source="productpage",le="1"} 3
istio_request_duration_seconds_bucket{code="200",source="productpage",le="+Inf"} 3
istio_request_duration_seconds_sum{code="200",source="productpage"} 0.555
istio_request_duration_seconds_count{code="200",source="productpage"} 3
istio_request_duration_seconds_bucket{code="503",source="reviews",le="0.01"} 0
istio_request_duration_seconds_bucket{code="503",source="reviews",le="0.1"} 0
istio_request_duration_seconds_bucket{code="503",source="reviews",le="1"} 0
istio_request_duration_seconds_bucket{code="503",source="reviews",le="+Inf"} 1
istio_request_duration_seconds_sum{code="503",source="reviews"} 2
istio_request_duration_seconds_count{code="503",source="reviews"} 1
# HELP istio_request_bytes request_bytes
# TYPE istio_request_bytes histogram
istio_request_bytes_bucket{code="200",source="productpage",le="0"} 0
istio_request_bytes_bucket{code="200",source="productpage",le="100"} 1
istio_request_bytes_bucket{code="200",source="productpage",le="200"} 2
istio_request_bytes_bucket{code="200",source="productpage",le="300"} 3
istio_request_bytes_bucket{code="200",source="productpage",le="+Inf"} 3
istio_request_bytes_sum{code="200",source="productpage"} 450
istio_request_bytes_count{code="200",source="productpage"} 3
istio_request_bytes_bucket{code="503",source="reviews",le="0"} 0
istio_request_bytes_bucket{code="503",source="reviews",le="100"} 0
istio_request_bytes_bucket{code="503",source="reviews",le="200"} 0
istio_request_bytes_bucket{code="503",source="reviews",le="300"} 0
istio_request_bytes_bucket{code="503",source="reviews",le="+Inf"} 1
istio_request_bytes_sum{code="503",source="reviews"} 400
istio_request_bytes_count{code="503",source="reviews"} 1
# HELP istio_response_bytes response_bytes
# TYPE istio_response_bytes histogram
istio_response_bytes_bucket{code="200",source="productpage",le="1"} 1
istio_response_bytes_bucket{code="200",source="productpage",le="10"} 1
istio_response_bytes_bucket{code="200",source="productpage",le="100"} 2
istio_response_bytes_bucket{code="200",source="productpage",le="+Inf"} 3
istio_response_bytes_sum{code="200",source="productpage"} 521
istio_response_bytes_count{code="200",source="productpage"} 3
istio_response_bytes_bucket{code="503",source="reviews",le="1"} 1
istio_response_bytes_bucket{code="503",source="reviews",le="10"} 1
istio_response_bytes_bucket{code="503",source="reviews",le="100"} 1
istio_response_bytes_bucket{code="503",source="reviews",le="+Inf"} 1
istio_response_bytes_sum{code="503",source="reviews"} 0
istio_response_bytes_count{code="503",source="reviews"} 1
"#;
    assert_eq!(text, expected);
    promtool_check(&text);
    let p = prom(&snap);
    assert_eq!(p.series_count("istio_requests_total"), 2);
    assert_eq!(p.errors(), 0);
}

#[test]
fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
    let s = setup(&five_metrics());
    run_five(&s);
    let om = prometheus::render(&s.pipeline.snapshot(), Format::OpenMetrics);
    assert!(
        om.starts_with("# HELP istio_requests requests_total\n# TYPE istio_requests counter\n"),
        "{om}"
    );
    assert!(
        om.contains("\nistio_requests_total{code=\"200\",source=\"productpage\"} 3\n"),
        "{om}"
    );
    assert!(om.contains("istio_request_duration_seconds_bucket{code=\"200\",source=\"productpage\",le=\"1.0\"} 3\n"), "{om}");
    assert!(
        om.contains(
            "istio_request_bytes_bucket{code=\"200\",source=\"productpage\",le=\"100.0\"} 1\n"
        ),
        "{om}"
    );
    assert!(om.ends_with("\n# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1);
    // Every line is a comment or a sample of a declared family.
    let families: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for line in om.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(families.iter().any(|f| name.starts_with(f)), "{line}");
    }
    assert_eq!(
        Format::OpenMetrics.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}

#[test]
fn label_values_are_escaped_and_values_converted() {
    let cfg = config(
        vec![
            json!({"name": "odd_total", "instance_name": "odd", "kind": "COUNTER", "label_names": ["path"]}),
        ],
        &[("odd", "\"2.5\"")],
        json!({}),
    );
    let s = setup(&cfg);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    w.report(&Attributes::new().with(wk::REQUEST_PATH, Value::str("/a\"b\\c\nd")));
    let text = prometheus::render(&s.pipeline.snapshot(), Format::Text);
    assert!(
        text.contains("istio_odd_total{path=\"/a\\\"b\\\\c\\nd\"} 2.5\n"),
        "{text}"
    );
    promtool_check(&text);
}

#[test]
fn series_expire_after_metrics_expiry_duration_on_virtual_time() {
    let mut cfg = five_metrics();
    cfg.handlers[0].params = Some(json_to_struct(&json!({
        "metricsExpirationPolicy": {"metricsExpiryDuration": "10s", "expiryCheckIntervalDuration": "1s"},
        "metrics": [metric("requests_total", "count", "COUNTER", None)],
    })));
    cfg.instances.truncate(1);
    cfg.rules[0].actions[0].instances.truncate(1);
    let s = setup(&cfg);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    w.report(&request("old", 200, 0, 0, 0));
    s.vt.advance(Duration::from_secs(6));
    w.report(&request("new", 200, 0, 0, 0));
    let snap = s.pipeline.snapshot();
    assert_eq!(prom(&snap).series_count("istio_requests_total"), 2);
    s.vt.advance(Duration::from_secs(5));
    // The expiry timer ran on the platform's dispatcher: "old" was last updated 11 s ago.
    assert_eq!(prom(&snap).series_count("istio_requests_total"), 1);
    let text = prometheus::render(&snap, Format::Text);
    assert!(
        text.contains("source=\"new\"") && !text.contains("source=\"old\""),
        "{text}"
    );
    // An update keeps a series alive; a new report recreates an expired one from zero.
    w.report(&request("old", 200, 0, 0, 0));
    s.vt.advance(Duration::from_secs(9));
    let text = prometheus::render(&snap, Format::Text);
    assert!(
        text.contains("istio_requests_total{code=\"200\",source=\"old\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("source=\"new\""), "{text}");
}

#[test]
fn swaps_keep_unchanged_metrics_and_drop_removed_ones() {
    let s = setup(&five_metrics());
    run_five(&s);
    // Unchanged config: the handler is kept with its state.
    let same = compile(
        &five_metrics(),
        &s.registry,
        &s.vt.platform(),
        Some(&s.pipeline.snapshot()),
        &CompileOptions::default(),
    )
    .unwrap();
    s.pipeline.swap(same);
    assert_eq!(
        prom(&s.pipeline.snapshot()).series_count("istio_requests_total"),
        2
    );
    // A config without the gauge: the handler is rebuilt; the counter carries on, the gauge is gone.
    let mut fewer = five_metrics();
    let mut params =
        mixer_core::snapshot::struct_to_json(fewer.handlers[0].params.as_ref().unwrap());
    params["metrics"].as_array_mut().unwrap().remove(1);
    fewer.handlers[0].params = Some(json_to_struct(&params));
    let next = compile(
        &fewer,
        &s.registry,
        &s.vt.platform(),
        Some(&s.pipeline.snapshot()),
        &CompileOptions::default(),
    )
    .unwrap();
    let old = s.pipeline.swap(next);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    w.report(&request("productpage", 200, 50, 5, 1));
    let text = prometheus::render(&s.pipeline.snapshot(), Format::Text);
    assert!(!text.contains("istio_in_flight"), "{text}");
    assert!(
        text.contains("istio_requests_total{code=\"200\",source=\"productpage\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "istio_request_duration_seconds_count{code=\"200\",source=\"productpage\"} 4\n"
        ),
        "{text}"
    );
    drop(old);
    // A changed definition (other labels) starts afresh.
    let mut relabelled = fewer.clone();
    let mut params =
        mixer_core::snapshot::struct_to_json(relabelled.handlers[0].params.as_ref().unwrap());
    params["metrics"][0]["label_names"] = json!(["code"]);
    relabelled.handlers[0].params = Some(json_to_struct(&params));
    let next = compile(
        &relabelled,
        &s.registry,
        &s.vt.platform(),
        Some(&s.pipeline.snapshot()),
        &CompileOptions::default(),
    )
    .unwrap();
    s.pipeline.swap(next);
    w.report(&request("productpage", 200, 50, 5, 1));
    let text = prometheus::render(&s.pipeline.snapshot(), Format::Text);
    assert!(
        text.contains("istio_requests_total{code=\"200\"} 1\n"),
        "{text}"
    );
}

#[test]
fn buffered_counters_are_aggregated_before_export() {
    let mut cfg = five_metrics();
    cfg.handlers[0].dispatch = Some(v2::DispatchControls {
        buffering: Some(v2::Buffering {
            max_batch_entries: 10_000,
            max_delay: Some(mixer_proto::prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            max_queue_entries: 0,
        }),
        ..Default::default()
    });
    let s = setup(&cfg);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for i in 0..500 {
        w.report(&request(if i % 5 == 0 { "a" } else { "b" }, 200, 10, 5, 1));
    }
    let snap = s.pipeline.snapshot();
    assert_eq!(
        prom(&snap).series_count("istio_requests_total"),
        0,
        "still buffered"
    );
    s.vt.advance(Duration::from_secs(1));
    let text = prometheus::render(&snap, Format::Text);
    assert!(
        text.contains("istio_requests_total{code=\"200\",source=\"a\"} 100\n"),
        "{text}"
    );
    assert!(
        text.contains("istio_requests_total{code=\"200\",source=\"b\"} 400\n"),
        "{text}"
    );
    assert!(
        text.contains("istio_request_duration_seconds_count{code=\"200\",source=\"b\"} 400\n"),
        "{text}"
    );
    let stats = snap.handlers[0].report_dispatch.stats();
    // The counter's instances merge (498 of 500); the other three instances feed a gauge or
    // histograms and are delivered one by one.
    assert_eq!(
        mixer_core::dispatch::DispatchStats::get(&stats.aggregated),
        498
    );
    promtool_check(&text);
}

#[test]
fn bad_params_name_the_field() {
    let vt = VirtualPlatform::new();
    let registry = mixer_adapters::registry();
    let cases = [
        (
            json!([{"name": "x_total", "instance_name": "count", "kind": "COUNTER", "label_names": ["nope"]}]),
            "params.metrics[0].label_names[0]",
        ),
        (
            json!([{"name": "x_total", "instance_name": "count", "kind": "SUMMARY"}]),
            "params.metrics[0].kind",
        ),
        (
            json!([{"name": "x", "instance_name": "count", "kind": "DISTRIBUTION", "buckets": {"explicit_buckets": {"bounds": [2, 1]}}}]),
            "params.metrics[0].buckets",
        ),
        (
            json!([{"name": "x", "instance_name": "count", "kind": "DISTRIBUTION", "buckets": {"exponentialBuckets": {"numFiniteBuckets": 3, "growthFactor": 1, "scale": 1}}}]),
            "params.metrics[0].buckets.exponential_buckets",
        ),
        (
            json!([{"name": "x-y", "instance_name": "count", "kind": "GAUGE"}]),
            "params.metrics[0].name",
        ),
        (
            json!([{"name": "x", "instance_name": "other", "kind": "GAUGE"}]),
            "params.metrics",
        ),
        (
            json!([{"name": "x", "instance_name": "count", "kind": "GAUGE", "bogus": 1}]),
            "params",
        ),
    ];
    for (metrics, field) in cases {
        let mut cfg = config(vec![], &[("count", "\"1\"")], json!({}));
        cfg.handlers[0].params = Some(json_to_struct(&json!({"metrics": metrics})));
        let err = compile(
            &cfg,
            &registry,
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, field, "{}", err.0[0]);
    }
}

#[test]
fn values_that_are_not_numbers_are_counted_not_recorded() {
    let cfg = config(
        vec![metric("requests_total", "count", "COUNTER", None)],
        &[("count", "request.path | \"x\"")],
        json!({}),
    );
    let s = setup(&cfg);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    w.report(&Attributes::new().with(wk::REQUEST_PATH, Value::str("not a number")));
    w.report(&Attributes::new().with(wk::REQUEST_PATH, Value::str("-1")));
    w.report(&Attributes::new().with(wk::REQUEST_PATH, Value::str("3")));
    let snap = s.pipeline.snapshot();
    assert_eq!(prom(&snap).errors(), 2);
    assert!(prometheus::render(&snap, Format::Text).contains("} 3\n"));
}
