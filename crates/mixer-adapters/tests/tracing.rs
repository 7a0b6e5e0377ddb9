//! The `tracing` adapter: `tracespan` instances through the pipeline, batched and sent as
//! Zipkin v2 JSON or OTLP protobuf; on virtual time (batching, timers, drops, retries) and
//! against a loopback HTTP server with the std host's event loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mixer_adapters::tracing::{Tracing, TracingStats};
use mixer_attr::{Attributes, StringMap, Timestamp, Value, well_known as wk};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{CalloutError, HttpRequest, HttpResponse, Platform};
use mixer_core::snapshot::json_to_struct;
use mixer_core::{CompileOptions, Config, Pipeline, compile};
use mixer_proto::v2;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use parking_lot::Mutex;
use prost::Message;
use serde_json::{Value as Json, json};

const TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
const PARENT: &str = "0020000000000001";

fn config(params: Json) -> Config {
    Config {
        handlers: vec![v2::Handler {
            name: "tracer".into(),
            namespace: "istio-system".into(),
            adapter: "tracing".into(),
            params: Some(json_to_struct(&params)),
            ..Default::default()
        }],
        instances: vec![v2::Instance {
            name: "span".into(),
            namespace: "istio-system".into(),
            template: "tracespan".into(),
            params: Some(json_to_struct(&json!({
                "trace_id": "request.headers[\"x-b3-traceid\"] | \"\"",
                "span_id": "request.headers[\"x-b3-spanid\"] | \"\"",
                "parent_span_id": "request.headers[\"x-b3-parentspanid\"] | \"\"",
                "span_name": "request.path | \"/\"",
                "start_time": "request.time",
                "end_time": "response.time",
                "client_span": "(context.reporter.kind | \"inbound\") == \"outbound\"",
                "rewrite_client_span_id": "(request.headers[\"x-rewrite\"] | \"\") == \"1\"",
                "source_name": "source.workload.name | \"\"",
                "source_ip": "source.ip",
                "destination_name": "destination.workload.name | \"\"",
                "destination_ip": "destination.ip",
                "http_status_code": "response.code | 0",
                "request_size": "request.size | 0",
                "response_size": "response.size | 0",
                "span_tags": {
                    "http.method": "request.method | \"\"",
                    "node_id": "\"sidecar~10.1.1.2\"",
                },
            }))),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "tracing".into(),
            namespace: "istio-system".into(),
            r#match: String::new(),
            actions: vec![v2::Action {
                handler: "tracer".into(),
                instances: vec!["span".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn pipeline(params: Json, platform: &Platform) -> Pipeline {
    let snapshot = compile(
        &config(params),
        &mixer_adapters::registry(),
        platform,
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    Pipeline::new(snapshot, platform.clone())
}

fn stats(p: &Pipeline) -> TracingStats {
    let snap = p.snapshot();
    let h = snap
        .handlers
        .iter()
        .find(|h| h.adapter == "tracing")
        .expect("tracing handler");
    h.handler
        .as_any()
        .unwrap()
        .downcast_ref::<Tracing>()
        .unwrap()
        .stats()
}

fn ts(s: &str) -> Value<'static> {
    Value::Timestamp(Timestamp::parse_rfc3339(s).unwrap())
}

/// A server-side (inbound) request of `span`, 1.5 ms long, answered `code`.
fn attrs(trace: &str, span: &str, parent: &str, code: i64) -> Attributes<'static> {
    let mut headers = StringMap::new();
    headers.insert("x-b3-traceid".into(), trace.into());
    headers.insert("x-b3-spanid".into(), span.into());
    if !parent.is_empty() {
        headers.insert("x-b3-parentspanid".into(), parent.into());
    }
    Attributes::new()
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
        .with(wk::REQUEST_PATH, Value::str("/reviews/1"))
        .with(wk::REQUEST_METHOD, Value::str("GET"))
        .with(wk::REQUEST_TIME, ts("2020-01-01T00:00:01Z"))
        .with(wk::RESPONSE_TIME, ts("2020-01-01T00:00:01.0015Z"))
        .with(wk::SOURCE_WORKLOAD_NAME, Value::str("productpage-v1"))
        .with(wk::SOURCE_IP, Value::IpAddress("10.1.1.2".parse().unwrap()))
        .with(wk::DESTINATION_WORKLOAD_NAME, Value::str("reviews-v2"))
        .with(
            wk::DESTINATION_IP,
            Value::IpAddress("fd00::7".parse().unwrap()),
        )
        .with(wk::RESPONSE_CODE, Value::Int64(code))
        .with(wk::REQUEST_SIZE, Value::Int64(120))
        .with(wk::RESPONSE_SIZE, Value::Int64(4096))
}

fn span_id(i: usize) -> String {
    format!("{:016x}", 0x100 + i)
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn accepted() -> Result<HttpResponse, CalloutError> {
    Ok(HttpResponse {
        status: 202,
        headers: vec![],
        body: Bytes::new(),
    })
}

fn zipkin_body(r: &HttpRequest) -> Vec<Json> {
    serde_json::from_slice::<Vec<Json>>(&r.body).expect("a JSON array")
}

fn ids(r: &HttpRequest) -> Vec<String> {
    zipkin_body(r)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The Zipkin span of `attrs(TRACE, span_id(0), PARENT, 200)`.
fn assert_zipkin_span(s: &Json) {
    assert_eq!(
        *s,
        json!({
            "traceId": TRACE,
            "id": span_id(0),
            "parentId": PARENT,
            "name": "/reviews/1",
            "kind": "SERVER",
            "timestamp": 1_577_836_801_000_000u64,
            "duration": 1500,
            "localEndpoint": {"serviceName": "reviews-v2", "ipv6": "fd00::7"},
            "remoteEndpoint": {"serviceName": "productpage-v1", "ipv4": "10.1.1.2"},
            "tags": {
                "http.method": "GET",
                "node_id": "sidecar~10.1.1.2",
                "http.status_code": "200",
                "http.request.body.size": "120",
                "http.response.body.size": "4096",
            }
        })
    );
}

/// The OTLP request holding `attrs(TRACE, span_id(0), PARENT, 503)` (and maybe more spans).
fn assert_otlp_first_span(req: &ExportTraceServiceRequest) {
    assert_eq!(req.resource_spans.len(), 1);
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap();
    assert_eq!(
        attr(&resource.attributes, "service.name"),
        Some(&any_value::Value::StringValue("reviews-v2".into()))
    );
    let scope = &rs.scope_spans[0];
    assert_eq!(scope.scope.as_ref().unwrap().name, "mixer.tracing");
    let s = &scope.spans[0];
    assert_eq!(s.trace_id, hex(TRACE));
    assert_eq!(s.span_id, hex(&span_id(0)));
    assert_eq!(s.parent_span_id, hex(PARENT));
    assert_eq!(s.name, "/reviews/1");
    assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(s.start_time_unix_nano, 1_577_836_801_000_000_000);
    assert_eq!(s.end_time_unix_nano, 1_577_836_801_001_500_000);
    use any_value::Value as V;
    assert_eq!(
        attr(&s.attributes, "http.method"),
        Some(&V::StringValue("GET".into()))
    );
    assert_eq!(
        attr(&s.attributes, "http.response.status_code"),
        Some(&V::IntValue(503))
    );
    assert_eq!(
        attr(&s.attributes, "http.request.body.size"),
        Some(&V::IntValue(120))
    );
    assert_eq!(
        attr(&s.attributes, "http.response.body.size"),
        Some(&V::IntValue(4096))
    );
    assert_eq!(
        attr(&s.attributes, "peer.service"),
        Some(&V::StringValue("productpage-v1".into()))
    );
    assert_eq!(
        attr(&s.attributes, "network.peer.address"),
        Some(&V::StringValue("10.1.1.2".into()))
    );
    assert_eq!(
        attr(&s.attributes, "network.local.address"),
        Some(&V::StringValue("fd00::7".into()))
    );
    let status = s.status.as_ref().expect("5xx marks the span as an error");
    assert_eq!(status.code, 2);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn zipkin_batches_by_count_then_by_timer() {
    let vt = VirtualPlatform::new();
    let p = pipeline(
        json!({"endpoint": "http://zipkin.istio-system:9411/api/v2/spans", "maxBatchSpans": 3, "flushInterval": "10s"}),
        &vt.platform(),
    );
    let w = p.worker(Arc::new(vt.clone()));
    for i in 0..7 {
        w.report(&attrs(TRACE, &span_id(i), PARENT, 200));
    }
    assert!(
        vt.http_requests().is_empty(),
        "the report path only enqueues"
    );
    vt.run_posted();
    let reqs = vt.http_requests();
    assert_eq!(reqs.len(), 2, "two full batches");
    let r = &reqs[0].1;
    assert_eq!(
        (r.method.as_str(), r.authority.as_str(), r.path.as_str()),
        ("POST", "zipkin.istio-system:9411", "/api/v2/spans")
    );
    assert_eq!(header(r, "content-type"), Some("application/json"));
    let spans = zipkin_body(r);
    assert_eq!(spans.len(), 3);
    assert_zipkin_span(&spans[0]);
    assert_eq!(ids(&reqs[1].1), [span_id(3), span_id(4), span_id(5)]);
    for (id, _) in &reqs {
        assert!(vt.respond_http(*id, accepted()));
    }
    let s = stats(&p);
    assert_eq!((s.received, s.sent, s.batches_sent, s.queued), (7, 6, 2, 1));

    vt.advance(Duration::from_millis(9_999));
    assert!(
        vt.http_requests().is_empty(),
        "the last span waits for the timer"
    );
    vt.advance(Duration::from_millis(1));
    let reqs = vt.http_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(ids(&reqs[0].1), [span_id(6)]);
    vt.respond_http(reqs[0].0, accepted());
    let s = stats(&p);
    assert_eq!(
        (s.sent, s.batches_sent, s.queued, s.send_failures),
        (7, 3, 0, 0)
    );
}

#[test]
fn otlp_batches_on_the_flush_interval() {
    let vt = VirtualPlatform::new();
    let p = pipeline(
        json!({"format": "OTLP_PROTOBUF", "endpoint": "http://otel-collector:4318/v1/traces",
               "flushInterval": "1s", "headers": {"x-tenant": "mesh"}}),
        &vt.platform(),
    );
    let w = p.worker(Arc::new(vt.clone()));
    w.report(&attrs(TRACE, &span_id(0), PARENT, 503));
    // A client (outbound) span from another service: a second resource.
    w.report(
        &attrs("00000000000000ab", &span_id(1), "", 404)
            .with(wk::CONTEXT_REPORTER_KIND, Value::str("outbound")),
    );
    vt.run_posted();
    assert!(vt.http_requests().is_empty());
    vt.advance(Duration::from_millis(999));
    assert!(vt.http_requests().is_empty());
    vt.advance(Duration::from_millis(1));
    let reqs = vt.http_requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0].1;
    assert_eq!(
        (r.authority.as_str(), r.path.as_str()),
        ("otel-collector:4318", "/v1/traces")
    );
    assert_eq!(header(r, "content-type"), Some("application/x-protobuf"));
    assert_eq!(header(r, "x-tenant"), Some("mesh"));
    let mut req = ExportTraceServiceRequest::decode(&r.body[..]).expect("protobuf");
    // Resources come sorted by service name: productpage-v1 (the client span), reviews-v2.
    assert_eq!(req.resource_spans.len(), 2);
    let client = req.resource_spans.remove(0);
    assert_otlp_first_span(&req);
    let c = &client.scope_spans[0].spans[0];
    assert_eq!(c.kind, 3, "SPAN_KIND_CLIENT");
    let mut padded = vec![0u8; 15];
    padded.push(0xab);
    assert_eq!(c.trace_id, padded, "64-bit trace ids are left-padded");
    assert!(c.parent_span_id.is_empty(), "root span");
    assert_eq!(
        c.status.as_ref().map(|s| s.code),
        Some(2),
        "4xx is an error on client spans"
    );
    assert_eq!(
        attr(
            &client.resource.as_ref().unwrap().attributes,
            "service.name"
        ),
        Some(&any_value::Value::StringValue("productpage-v1".into()))
    );
    vt.respond_http(reqs[0].0, accepted());
    assert_eq!(stats(&p).sent, 2);
}

#[test]
fn handler_flush_sends_everything_queued() {
    let vt = VirtualPlatform::new();
    let p = pipeline(
        json!({"maxBatchSpans": 2, "flushInterval": "1h", "maxConcurrentExports": 1}),
        &vt.platform(),
    );
    let w = p.worker(Arc::new(vt.clone()));
    for i in 0..5 {
        w.report(&attrs(TRACE, &span_id(i), PARENT, 200));
    }
    vt.run_posted();
    assert_eq!(vt.http_requests().len(), 1, "one batch at a time");
    p.flush();
    let reqs = vt.http_requests();
    let sizes: Vec<usize> = reqs.iter().map(|(_, r)| zipkin_body(r).len()).collect();
    assert_eq!(sizes, [2, 2, 1], "flush sends the rest at once, in batches");
    assert_eq!(
        reqs[0].1.authority, "localhost:9411",
        "the default Zipkin endpoint"
    );
    for (id, _) in reqs {
        vt.respond_http(id, accepted());
    }
    let s = stats(&p);
    assert_eq!(
        (s.sent, s.batches_sent, s.queued, s.in_flight),
        (5, 3, 0, 0)
    );
    vt.advance(Duration::from_secs(7200));
    assert!(vt.http_requests().is_empty(), "nothing left for the timer");
}

#[test]
fn a_saturated_queue_drops_and_counts() {
    for (policy, kept) in [("DROP_NEWEST", [0, 1, 2, 3]), ("DROP_OLDEST", [6, 7, 8, 9])] {
        let vt = VirtualPlatform::new();
        let p = pipeline(
            json!({"maxBatchSpans": 2, "maxQueueSpans": 4, "maxConcurrentExports": 1, "dropPolicy": policy}),
            &vt.platform(),
        );
        let w = p.worker(Arc::new(vt.clone()));
        for i in 0..10 {
            w.report(&attrs(TRACE, &span_id(i), PARENT, 200));
        }
        let s = stats(&p);
        assert_eq!(
            (s.received, s.queued, s.dropped_queue_full),
            (10, 4, 6),
            "{policy}"
        );
        vt.run_posted();
        let reqs = vt.http_requests();
        assert_eq!(reqs.len(), 1, "maxConcurrentExports");
        let mut sent = ids(&reqs[0].1);
        vt.respond_http(reqs[0].0, accepted());
        let reqs = vt.http_requests();
        assert_eq!(
            reqs.len(),
            1,
            "the held-back batch goes when the first completes"
        );
        sent.extend(ids(&reqs[0].1));
        vt.respond_http(reqs[0].0, accepted());
        assert_eq!(sent, kept.map(span_id), "{policy}");
        let s = stats(&p);
        assert_eq!((s.sent, s.dropped_queue_full, s.queued), (4, 6, 0));
    }
}

#[test]
fn invalid_ids_are_dropped_and_counted() {
    let vt = VirtualPlatform::new();
    let p = pipeline(json!({"format": "ZIPKIN_V2_JSON"}), &vt.platform());
    let w = p.worker(Arc::new(vt.clone()));
    w.report(&attrs(
        "463ac35c9f6413ad48485a3953bb612",
        &span_id(0),
        "",
        200,
    )); // 31 digits
    w.report(&attrs(TRACE, "zz00000000000001", "", 200)); // not hex
    w.report(&attrs(TRACE, "0000000000000000", "", 200)); // all zeros
    w.report(&attrs(TRACE, "00000000000001", "", 200)); // 14 digits
    w.report(&attrs(TRACE, &span_id(1), "123", 200)); // bad parent
    w.report(&attrs("", &span_id(2), "", 200)); // no trace id
    w.report(&attrs(
        &TRACE.to_uppercase(),
        &span_id(3).to_uppercase(),
        "0000000000000000",
        200,
    ));
    let s = stats(&p);
    assert_eq!((s.received, s.dropped_invalid, s.queued), (7, 6, 1));
    p.flush();
    let reqs = vt.http_requests();
    let spans = zipkin_body(&reqs[0].1);
    assert_eq!(spans[0]["traceId"], TRACE, "lowercased");
    assert_eq!(spans[0]["id"], span_id(3));
    assert!(
        spans[0].get("parentId").is_none(),
        "an all-zero parent is a root"
    );
}

#[test]
fn rewrite_client_span_id_splits_shared_ids() {
    let vt = VirtualPlatform::new();
    let p = pipeline(json!({}), &vt.platform());
    let w = p.worker(Arc::new(vt.clone()));
    let rewrite = |a: Attributes<'static>| {
        let mut h = StringMap::new();
        h.insert("x-b3-traceid".into(), TRACE.into());
        h.insert("x-b3-spanid".into(), "a2fb4a1d1a96d312".into());
        h.insert("x-b3-parentspanid".into(), PARENT.into());
        h.insert("x-rewrite".into(), "1".into());
        a.with(wk::REQUEST_HEADERS, Value::string_map(h))
    };
    let base = attrs(TRACE, "a2fb4a1d1a96d312", PARENT, 200);
    w.report(&rewrite(
        base.clone()
            .with(wk::CONTEXT_REPORTER_KIND, Value::str("outbound")),
    ));
    w.report(&rewrite(base));
    p.flush();
    let spans = zipkin_body(&vt.http_requests()[0].1);
    assert_eq!(
        (&spans[0]["kind"], &spans[0]["id"], &spans[0]["parentId"]),
        (&json!("CLIENT"), &json!("9d9164ded28611b9"), &json!(PARENT))
    );
    assert_eq!(
        (&spans[1]["kind"], &spans[1]["id"], &spans[1]["parentId"]),
        (
            &json!("SERVER"),
            &json!("a2fb4a1d1a96d312"),
            &json!("9d9164ded28611b9")
        )
    );
}

#[test]
fn failed_sends_are_retried_once_then_dropped() {
    let vt = VirtualPlatform::new();
    let p = pipeline(json!({"timeout": "2s"}), &vt.platform());
    let w = p.worker(Arc::new(vt.clone()));
    w.report(&attrs(TRACE, &span_id(0), PARENT, 200));
    w.report(&attrs(TRACE, &span_id(1), PARENT, 200));
    p.flush();
    let (id, first) = vt.http_requests().remove(0);
    assert_eq!(first.timeout, Duration::from_secs(2));
    vt.respond_http(
        id,
        Ok(HttpResponse {
            status: 503,
            headers: vec![],
            body: Bytes::new(),
        }),
    );
    let reqs = vt.http_requests();
    assert_eq!(reqs.len(), 1, "retried");
    assert_eq!(reqs[0].1.body, first.body);
    vt.advance(Duration::from_secs(2)); // the retry times out
    assert!(vt.http_requests().is_empty(), "no second retry");
    let s = stats(&p);
    assert_eq!(
        (
            s.send_failures,
            s.retries,
            s.dropped_send_failed,
            s.sent,
            s.in_flight
        ),
        (2, 1, 2, 0, 0)
    );

    // A 4xx other than 408/429 is not retried; a retry that succeeds counts as sent.
    w.report(&attrs(TRACE, &span_id(2), PARENT, 200));
    p.flush();
    let (id, _) = vt.http_requests().remove(0);
    vt.respond_http(
        id,
        Ok(HttpResponse {
            status: 400,
            headers: vec![],
            body: Bytes::new(),
        }),
    );
    assert!(vt.http_requests().is_empty());
    w.report(&attrs(TRACE, &span_id(3), PARENT, 200));
    p.flush();
    let (id, _) = vt.http_requests().remove(0);
    vt.respond_http(id, Err(CalloutError::Connection("refused".into())));
    let (id, _) = vt.http_requests().remove(0);
    vt.respond_http(id, accepted());
    let s = stats(&p);
    assert_eq!(
        (
            s.send_failures,
            s.retries,
            s.dropped_send_failed,
            s.sent,
            s.batches_sent
        ),
        (4, 2, 3, 1, 1)
    );
}

#[test]
fn bad_params_are_config_errors() {
    let platform = VirtualPlatform::new().platform();
    for (params, field) in [
        (json!({"format": "JAEGER"}), "params.format"),
        (
            json!({"endpoint": "https://zipkin/api/v2/spans"}),
            "params.endpoint",
        ),
        (json!({"maxBatchSpans": 0}), "params.maxBatchSpans"),
        (
            json!({"maxBatchSpans": 100, "maxQueueSpans": 10}),
            "params.maxQueueSpans",
        ),
        (json!({"flushInterval": "0s"}), "params.flushInterval"),
        (json!({"dropPolicy": "SOMETIMES"}), "params.dropPolicy"),
        (
            json!({"headers": {"content-type": "text/plain"}}),
            "params.headers",
        ),
        (json!({"bogus": 1}), "params"),
    ] {
        let err = compile(
            &config(params),
            &mixer_adapters::registry(),
            &platform,
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, field, "{}", err.0[0]);
    }
}

/// A recorded request: path, headers (lowercase names), body.
type Recorded = (String, Vec<(String, String)>, Vec<u8>);

/// A loopback HTTP/1.1 server: records each request's path, headers and body; answers 202.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn
                    && let Some(req) = serve(c)
                {
                    r.lock().push(req);
                }
            }
        });
        Server {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .iter()
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(mut c: TcpStream) -> Option<Recorded> {
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split_whitespace().nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")?
        .1
        .parse()
        .ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    c.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some((path, headers, body))
}

#[test]
fn zipkin_spans_arrive_at_a_loopback_server() {
    let server = Server::start();
    let ev = mixer_host::EventLoop::new();
    let p = pipeline(
        json!({"endpoint": format!("http://127.0.0.1:{}/api/v2/spans", server.port),
               "maxBatchSpans": 2, "flushInterval": "100ms"}),
        &ev.platform(),
    );
    let w = p.worker(Arc::new(ev.clone()));
    for i in 0..3 {
        w.report(&attrs(TRACE, &span_id(i), PARENT, 200));
    }
    assert!(
        ev.run_until(|| stats(&p).sent == 3, Duration::from_secs(10)),
        "{:?}",
        stats(&p)
    );
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2, "a full batch, then the timer's");
    let first: Vec<Json> = serde_json::from_slice(&bodies[0]).unwrap();
    assert_zipkin_span(&first[0]);
    let all: Vec<Json> = bodies
        .iter()
        .flat_map(|b| serde_json::from_slice::<Vec<Json>>(b).unwrap())
        .collect();
    let got: Vec<&str> = all.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(got, [span_id(0), span_id(1), span_id(2)]);
    let reqs = server.requests.lock();
    assert_eq!(reqs[0].0, "/api/v2/spans");
    assert!(
        reqs[0]
            .1
            .contains(&("content-type".into(), "application/json".into()))
    );
    drop(reqs);
    let s = stats(&p);
    assert_eq!(
        (s.batches_sent, s.send_failures, s.dropped_invalid),
        (2, 0, 0)
    );
}

#[test]
fn otlp_spans_arrive_at_a_loopback_server() {
    let server = Server::start();
    let ev = mixer_host::EventLoop::new();
    let p = pipeline(
        json!({"format": "OTLP_PROTOBUF", "endpoint": format!("http://127.0.0.1:{}/v1/traces", server.port),
               "flushInterval": "1h"}),
        &ev.platform(),
    );
    let w = p.worker(Arc::new(ev.clone()));
    w.report(&attrs(TRACE, &span_id(0), PARENT, 503));
    w.report(&attrs(TRACE, &span_id(1), &span_id(0), 200));
    ev.run_ready();
    p.flush(); // shutdown: send what is queued without waiting for the timer
    assert!(
        ev.run_until(|| stats(&p).sent == 2, Duration::from_secs(10)),
        "{:?}",
        stats(&p)
    );
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    let req = ExportTraceServiceRequest::decode(&bodies[0][..]).unwrap();
    assert_otlp_first_span(&req);
    let second = &req.resource_spans[0].scope_spans[0].spans[1];
    assert_eq!(second.parent_span_id, hex(&span_id(0)));
    assert!(second.status.is_none());
    let reqs = server.requests.lock();
    assert_eq!(reqs[0].0, "/v1/traces");
    assert!(
        reqs[0]
            .1
            .contains(&("content-type".into(), "application/x-protobuf".into()))
    );
}
