//! `mixer report` end to end on Istio's default config (the built binary): access log lines on
//! standard output, the Prometheus exposition (checked by promtool) with Istio's names, labels
//! and values, OpenMetrics, and per-line errors that do not stop the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn istio_default() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-configs/istio-1.4-default-mixer-config.yaml")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixer-report-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const HTTP: &str = r#""context.protocol": "http", "context.reporter.kind": "inbound", "source.workload.name": "productpage-v1", "source.workload.namespace": "default", "source.labels": {"app": "productpage", "version": "v1"}, "destination.workload.name": "reviews-v1", "destination.workload.namespace": "default", "destination.labels": {"app": "reviews", "version": "v1"}, "destination.service.host": "reviews.default.svc.cluster.local", "destination.service.name": "reviews", "destination.service.namespace": "default", "request.method": "GET", "request.path": "/reviews/0""#;

fn requests(dir: &std::path::Path) -> PathBuf {
    let lines = [
        format!(r#"{{{HTTP}, "request.time": "2020-01-01T00:00:00Z", "response.time": "2020-01-01T00:00:00.012Z", "response.code": 200, "response.duration": "12ms", "request.size": 120, "response.size": 2048}}"#),
        format!(r#"{{{HTTP}, "request.time": "2020-01-01T00:00:01Z", "response.time": "2020-01-01T00:00:01.3Z", "response.code": 200, "response.duration": "300ms", "request.size": 80, "response.size": 20}}"#),
        r#"{"context.protocol": "http", "source.workload.name": "productpage-v1", "destination.service.host": "reviews.default.svc.cluster.local", "request.time": "2020-01-01T00:00:02Z", "response.time": "2020-01-01T00:00:02.1Z", "response.code": 503, "response.duration": "2s"}"#.to_string(),
        "not json".to_string(),
        r#"{"context.protocol": "http", "response.code": "two hundred"}"#.to_string(),
        // A kube-probe is not counted (the promhttp rule's match), but logged.
        r#"{"context.protocol": "http", "request.useragent": "kube-probe/1.15", "request.time": "2020-01-01T00:00:03Z", "response.time": "2020-01-01T00:00:03Z"}"#.to_string(),
        r#"{"context.protocol": "tcp", "connection.event": "open", "source.workload.name": "productpage-v1", "connection.sent.bytes": 100, "connection.received.bytes": 50, "context.time": "2020-01-01T00:00:03Z"}"#.to_string(),
    ];
    let path = dir.join("requests.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn report(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixer"))
        .arg("report")
        .args(args)
        .output()
        .expect("the mixer binary runs")
}

const LABELS_200: &str = r#"connection_security_policy="none",destination_app="reviews",destination_principal="unknown",destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="default",destination_version="v1",destination_workload="reviews-v1",destination_workload_namespace="default",permissive_response_code="none",permissive_response_policyid="none",reporter="destination",request_protocol="http",response_code="200",response_flags="-",source_app="productpage",source_principal="unknown",source_version="v1",source_workload="productpage-v1",source_workload_namespace="default""#;

#[test]
fn report_on_the_istio_default_config_writes_istio_metrics_and_access_logs() {
    let dir = scratch("default");
    let reqs = requests(&dir);
    let out_file = dir.join("metrics.prom");
    let out = report(&[
        "--config",
        istio_default().to_str().unwrap(),
        "--requests",
        reqs.to_str().unwrap(),
        "--prometheus-out",
        out_file.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "line errors make the exit code 1: {stderr}"
    );
    assert!(stderr.contains("requests.jsonl:4: not JSON"), "{stderr}");
    assert!(
        stderr.contains("requests.jsonl:5: bad attributes"),
        "{stderr}"
    );
    assert!(stderr.contains("reported 5 requests"), "{stderr}");
    assert!(
        stderr.contains("adapter `kubernetesenv` is not in this build; handler skipped"),
        "{stderr}"
    );

    // The access log (stdio handler: JSON lines on standard output), the TCP one included.
    let stdout = text(&out.stdout);
    let logs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logs.len(), 5, "{stdout}");
    assert_eq!(logs[0]["instance"], "accesslog.instance.istio-system");
    assert_eq!(logs[0]["level"], "info");
    assert_eq!(logs[0]["responseCode"], 200);
    assert_eq!(logs[0]["destinationWorkload"], "reviews-v1");
    assert_eq!(logs[4]["instance"], "tcpaccesslog.instance.istio-system");
    assert_eq!(logs[4]["sentBytes"], 100);

    let prom = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        prom.contains(&format!("\nistio_requests_total{{{LABELS_200}}} 2\n")),
        "{prom}"
    );
    assert!(prom.contains("response_code=\"503\""), "{prom}");
    assert_eq!(
        prom.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .count(),
        2,
        "{prom}"
    );
    assert!(
        prom.contains(&format!(
            "\nistio_request_duration_seconds_bucket{{{LABELS_200},le=\"0.025\"}} 1\n"
        )),
        "{prom}"
    );
    assert!(
        prom.contains(&format!(
            "\nistio_request_duration_seconds_bucket{{{LABELS_200},le=\"0.5\"}} 2\n"
        )),
        "{prom}"
    );
    assert!(
        prom.contains(&format!(
            "\nistio_request_duration_seconds_sum{{{LABELS_200}}} 0.312\n"
        )),
        "{prom}"
    );
    assert!(
        prom.contains(&format!("\nistio_request_bytes_sum{{{LABELS_200}}} 200\n")),
        "{prom}"
    );
    assert!(
        prom.contains(&format!(
            "\nistio_response_bytes_bucket{{{LABELS_200},le=\"100\"}} 1\n"
        )),
        "{prom}"
    );
    assert!(
        prom.contains("\n# TYPE istio_tcp_connections_opened_total counter\n"),
        "{prom}"
    );
    assert!(prom.contains("istio_tcp_sent_bytes_total{"), "{prom}");
    assert!(!prom.contains("kube-probe"));

    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&out_file).unwrap())
        .output();
    let check = check.unwrap_or_else(|e| {
        panic!("promtool is needed by this test ({e}): run `bash scripts/install-test-deps.sh`")
    });
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    assert_eq!(text(&check.stdout).trim(), "");
}

#[test]
fn report_writes_openmetrics_to_stdout() {
    let dir = scratch("openmetrics");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: { name: prom, namespace: istio-system }
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - name: requests_total
      instance_name: count.instance.istio-system
      kind: COUNTER
      label_names: [code]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: { name: count, namespace: istio-system }
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions: { code: response.code | 0 }
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: { name: count, namespace: istio-system }
spec:
  actions: [ { handler: prom, instances: [ count ] } ]
"#,
    )
    .unwrap();
    let reqs = dir.join("r.jsonl");
    std::fs::write(
        &reqs,
        "{\"response.code\": 200}\n\n{\"response.code\": 200}\n{\"response.code\": 404}\n",
    )
    .unwrap();
    let out = report(&[
        "--config",
        config.to_str().unwrap(),
        "--requests",
        reqs.to_str().unwrap(),
        "--openmetrics",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "# HELP istio_requests requests_total\n# TYPE istio_requests counter\nistio_requests_total{code=\"200\"} 2\nistio_requests_total{code=\"404\"} 1\n# EOF\n"
    );
}
