//! `tracing`: `tracespan` instances as spans, batched and sent to a trace backend over the
//! host's HTTP client, as Zipkin v2 JSON or OTLP/HTTP protobuf.
//!
//! ```yaml
//! params:
//!   format: ZIPKIN_V2_JSON        # or OTLP_PROTOBUF
//!   endpoint: http://zipkin.istio-system:9411/api/v2/spans   # OTLP: http://collector:4318/v1/traces
//!   maxBatchSpans: 512            # a batch is sent as soon as this many spans are queued
//!   flushInterval: 1s             # queued spans wait at most this long before being sent
//!   maxQueueSpans: 8192           # spans waiting to be sent; past this, spans are dropped
//!   dropPolicy: DROP_NEWEST       # or DROP_OLDEST: which spans a full queue drops
//!   maxConcurrentExports: 4       # batches in flight at once (more wait in the queue)
//!   serviceName: istio-proxy      # local service name for spans whose own is empty
//!   timeout: 5s                   # per HTTP attempt
//!   headers: { authorization: "Bearer ..." }   # extra request headers
//! ```
//!
//! `endpoint` defaults to `http://localhost:9411/api/v2/spans` (Zipkin) or
//! `http://localhost:4318/v1/traces` (OTLP). Only `http://` URLs are accepted: the authority
//! (`host:port`, or an Envoy cluster name) and path go to the PAL's
//! [`Dispatcher::http`].
//!
//! # Spans
//!
//! Each `tracespan` instance becomes one span. `trace_id` must be 16 or 32 hex digits,
//! `span_id` 16, `parent_span_id` 16 or empty (a root span); all-zero ids, a missing
//! `start_time` or a start before the epoch make the span invalid: it is dropped and counted
//! (`dropped_invalid`). Ids are sent lowercased. `end_time` before `start_time` (or missing)
//! gives a zero duration. `client_span` picks the kind (CLIENT, else SERVER) and which side is
//! local: a server span's local endpoint is the destination (`destination_name`,
//! `destination_ip`) and its remote endpoint the source; a client span's the other way round. A
//! local endpoint without a name takes `serviceName`. With `rewrite_client_span_id` (for proxies whose
//! client and server spans share one span id), a client span's id becomes the id XOR a fixed
//! pad and a server span's parent becomes that same derived id, so the server span hangs under
//! the client span (the derivation of Istio's Stackdriver adapter). See [`zipkin`] and [`otlp`] for each format's fields.
//!
//! # Batching and drops
//!
//! [`ReportHandler::report`] only converts and enqueues (under a short lock) and, when a batch
//! is ready or no flush timer is armed, posts one task to the main dispatcher
//! ([`Platform::dispatcher`](mixer_core::pal::Platform)); HTTP callouts and timers are started
//! from there, never on the report path. A batch of `maxBatchSpans` goes out as soon as it
//! fills; anything left is sent when the `flushInterval` timer (armed when the queue becomes
//! non-empty) fires, and on [`Handler::flush`] (config swap, shutdown), which sends everything
//! queued at once, regardless of `maxConcurrentExports`. `flush` starts its callouts on the
//! calling thread, which must be the main dispatcher's (hosts call it there).
//!
//! A full queue drops the incoming span (`DROP_NEWEST`, as OpenTelemetry's batch processor
//! does) or the oldest queued one (`DROP_OLDEST`); either way it is counted in
//! `dropped_queue_full`. A failed attempt (connection error, timeout, HTTP 408, 429 or 5xx) is
//! retried once, immediately; other answers outside 2xx are not retried. A batch that fails
//! for good is dropped and its spans counted in `dropped_send_failed`. Every failed attempt
//! counts in `send_failures`, every retry in `retries`. See [`TracingStats`].

pub mod otlp;
pub mod zipkin;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use mixer_attr::{Duration, Value};
use mixer_core::adapter::{Adapter, AdapterError, Handler, HandlerConfig, ReportHandler};
use mixer_core::instance::{CompiledInstance, InstanceView};
use mixer_core::pal::{CalloutError, Dispatcher, HttpRequest, HttpResponse, TimerId};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::duration_param;

/// Most spans a batch may hold (`maxBatchSpans`).
const MAX_BATCH_LIMIT: u32 = 100_000;
/// Most spans the queue may hold (`maxQueueSpans`).
const MAX_QUEUE_LIMIT: u32 = 10_000_000;

/// The wire format of the export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Zipkin's v2 JSON: a JSON array of spans, `POST /api/v2/spans`.
    ZipkinV2Json,
    /// OTLP/HTTP: an `ExportTraceServiceRequest` in binary protobuf, `POST /v1/traces`.
    OtlpProtobuf,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::ZipkinV2Json => "application/json",
            Format::OtlpProtobuf => "application/x-protobuf",
        }
    }
}

/// What a full queue drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropPolicy {
    /// The span being reported.
    DropNewest,
    /// The oldest queued span.
    DropOldest,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    max_batch_spans: Option<u32>,
    #[serde(default)]
    flush_interval: Option<String>,
    #[serde(default)]
    max_queue_spans: Option<u32>,
    #[serde(default)]
    drop_policy: Option<String>,
    #[serde(default)]
    max_concurrent_exports: Option<u32>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A tag (Zipkin) or attribute (OTLP) value.
#[derive(Clone, Debug, PartialEq)]
pub enum TagValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl TagValue {
    /// The value as Zipkin's string tags carry it.
    pub fn to_tag_string(&self) -> String {
        match self {
            TagValue::Str(s) => s.clone(),
            TagValue::Int(i) => i.to_string(),
            TagValue::Bool(b) => b.to_string(),
            TagValue::Double(d) => d.to_string(),
        }
    }

    fn from_value(v: &Value<'_>) -> TagValue {
        match v {
            Value::Int64(i) => TagValue::Int(*i),
            Value::Bool(b) => TagValue::Bool(*b),
            Value::Double(d) => TagValue::Double(*d),
            other => match other.as_str() {
                Some(s) => TagValue::Str(s.to_string()),
                None => TagValue::Str(other.to_string()),
            },
        }
    }
}

/// One side of a span: a service name and address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub service_name: Option<String>,
    pub ip: Option<IpAddr>,
}

/// A validated span, owned, waiting in the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// 16 or 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// Nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Nanoseconds since the Unix epoch, at least `start_unix_nanos`.
    pub end_unix_nanos: u64,
    /// CLIENT (else SERVER).
    pub client: bool,
    /// The response code, when known (non-zero).
    pub http_status_code: Option<i64>,
    /// `span_tags`, sorted by key.
    pub tags: BTreeMap<String, TagValue>,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub request_size: Option<i64>,
    pub request_total_size: Option<i64>,
    pub response_size: Option<i64>,
    pub response_total_size: Option<i64>,
    pub api_protocol: Option<String>,
}

impl SpanRecord {
    /// Whether the HTTP status marks the span as failed (OpenTelemetry's rule: 5xx for server
    /// spans; 4xx and 5xx for client spans).
    pub fn is_error(&self) -> bool {
        match self.http_status_code {
            Some(c) if c >= 500 => true,
            Some(c) if c >= 400 => self.client,
            _ => false,
        }
    }
}

/// Lowercase hex of one of the allowed lengths, not all zeros.
fn hex_id(s: &str, lens: &[usize]) -> Option<String> {
    (lens.contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b != b'0'))
    .then(|| s.to_ascii_lowercase())
}

/// XOR pad of `rewrite_client_span_id` (the one Istio's Stackdriver adapter uses, so rewritten
/// ids agree across adapters).
const REWRITE_PAD: [u8; 8] = [0x3f, 0x6a, 0x2e, 0xc3, 0xc8, 0x10, 0xc2, 0xab];

/// The client span's id derived from a shared span id (a validated 16-digit lowercase hex id):
/// each byte XOR [`REWRITE_PAD`]. An id that would become all zeros is kept.
fn rewrite_span_id(id: &str) -> String {
    let mut out = String::with_capacity(16);
    for (i, pad) in REWRITE_PAD.iter().enumerate() {
        let byte = id
            .get(2 * i..2 * i + 2)
            .and_then(|b| u8::from_str_radix(b, 16).ok())
            .unwrap_or(0);
        out.push_str(&format!("{:02x}", byte ^ pad));
    }
    if out.bytes().all(|b| b == b'0') {
        id.to_string()
    } else {
        out
    }
}

/// Field positions of one compiled `tracespan` instance.
#[derive(Debug, Default)]
struct Fields {
    trace_id: Option<usize>,
    span_id: Option<usize>,
    parent_span_id: Option<usize>,
    span_name: Option<usize>,
    start_time: Option<usize>,
    end_time: Option<usize>,
    span_tags: Option<usize>,
    http_status_code: Option<usize>,
    client_span: Option<usize>,
    rewrite_client_span_id: Option<usize>,
    source_name: Option<usize>,
    source_ip: Option<usize>,
    destination_name: Option<usize>,
    destination_ip: Option<usize>,
    request_size: Option<usize>,
    request_total_size: Option<usize>,
    response_size: Option<usize>,
    response_total_size: Option<usize>,
    api_protocol: Option<usize>,
}

impl Fields {
    fn of(i: &CompiledInstance) -> Fields {
        Fields {
            trace_id: i.position("trace_id"),
            span_id: i.position("span_id"),
            parent_span_id: i.position("parent_span_id"),
            span_name: i.position("span_name"),
            start_time: i.position("start_time"),
            end_time: i.position("end_time"),
            span_tags: i.position("span_tags"),
            http_status_code: i.position("http_status_code"),
            client_span: i.position("client_span"),
            rewrite_client_span_id: i.position("rewrite_client_span_id"),
            source_name: i.position("source_name"),
            source_ip: i.position("source_ip"),
            destination_name: i.position("destination_name"),
            destination_ip: i.position("destination_ip"),
            request_size: i.position("request_size"),
            request_total_size: i.position("request_total_size"),
            response_size: i.position("response_size"),
            response_total_size: i.position("response_total_size"),
            api_protocol: i.position("api_protocol"),
        }
    }
}

/// Converts one instance to a span; `None` when it is invalid.
fn to_record(view: &InstanceView<'_>, f: &Fields) -> Option<SpanRecord> {
    let at = |p: Option<usize>| p.and_then(|p| view.at(p));
    let text = |p: Option<usize>| at(p).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let int = |p: Option<usize>| match at(p) {
        Some(Value::Int64(i)) => Some(*i),
        _ => None,
    };
    let time = |p: Option<usize>| match at(p) {
        Some(Value::Timestamp(t)) => Some(t.unix_nanos()),
        _ => None,
    };
    let ip = |p: Option<usize>| match at(p) {
        Some(Value::IpAddress(ip)) => Some(ip.to_canonical()),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical()),
        None => None,
    };

    let trace_id = hex_id(text(f.trace_id)?, &[16, 32])?;
    let span_id = hex_id(text(f.span_id)?, &[16])?;
    let parent_span_id = match text(f.parent_span_id) {
        None => None,
        Some(p) if p.bytes().all(|b| b == b'0') && p.len() == 16 => None,
        Some(p) => Some(hex_id(p, &[16])?),
    };
    let start = u64::try_from(time(f.start_time)?).ok()?;
    let end = time(f.end_time)
        .and_then(|e| u64::try_from(e).ok())
        .filter(|e| *e >= start)
        .unwrap_or(start);
    let client = matches!(at(f.client_span), Some(Value::Bool(true)));
    let (span_id, parent_span_id) = match at(f.rewrite_client_span_id) {
        Some(Value::Bool(true)) if client => (rewrite_span_id(&span_id), parent_span_id),
        Some(Value::Bool(true)) => {
            let parent = rewrite_span_id(&span_id);
            (span_id, Some(parent))
        }
        _ => (span_id, parent_span_id),
    };

    let mut tags = BTreeMap::new();
    for (k, v) in view.map("span_tags") {
        tags.insert(k.to_string(), TagValue::from_value(v));
    }
    if let Some(Value::StringMap(m)) = at(f.span_tags) {
        m.view().for_each_entry(&mut |k, v| {
            tags.insert(k.to_string(), TagValue::Str(v.to_string()));
        });
    }

    let source = Endpoint {
        service_name: text(f.source_name).map(str::to_string),
        ip: ip(f.source_ip),
    };
    let destination = Endpoint {
        service_name: text(f.destination_name).map(str::to_string),
        ip: ip(f.destination_ip),
    };
    let (local, remote) = if client {
        (source, destination)
    } else {
        (destination, source)
    };

    Some(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        name: text(f.span_name).unwrap_or_default().to_string(),
        start_unix_nanos: start,
        end_unix_nanos: end,
        client,
        http_status_code: int(f.http_status_code).filter(|c| *c != 0),
        tags,
        local,
        remote,
        request_size: int(f.request_size),
        request_total_size: int(f.request_total_size),
        response_size: int(f.response_size),
        response_total_size: int(f.response_total_size),
        api_protocol: text(f.api_protocol).map(str::to_string),
    })
}

/// The handler's counters, as read by [`Tracing::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracingStats {
    /// Instances reported to the handler.
    pub received: u64,
    /// Spans the backend accepted (2xx).
    pub sent: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because their ids or times were invalid.
    pub dropped_invalid: u64,
    /// Spans dropped because their batch could not be sent (after its retry).
    pub dropped_send_failed: u64,
    /// Batches the backend accepted.
    pub batches_sent: u64,
    /// Failed HTTP attempts (a retried batch that then succeeds counts one).
    pub send_failures: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Spans waiting in the queue now.
    pub queued: u64,
    /// Batches being sent now.
    pub in_flight: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_send_failed: AtomicU64,
    batches_sent: AtomicU64,
    send_failures: AtomicU64,
    retries: AtomicU64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

#[derive(Default)]
struct Queue {
    spans: VecDeque<SpanRecord>,
    /// A timer is armed (or being armed) to send what is queued.
    timer_armed: bool,
    timer: Option<TimerId>,
    /// A kick task is posted and has not run yet.
    kick_posted: bool,
    in_flight: usize,
    /// The timer fired while `maxConcurrentExports` held batches back: send the rest as
    /// callouts complete.
    flush_due: bool,
}

struct Settings {
    format: Format,
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
    max_batch: usize,
    max_queue: usize,
    max_in_flight: usize,
    drop_policy: DropPolicy,
    flush_interval: StdDuration,
    timeout: StdDuration,
    service_name: String,
}

struct Shared {
    settings: Settings,
    dispatcher: Arc<dyn Dispatcher>,
    queue: Mutex<Queue>,
    counters: Counters,
}

/// A built `tracing` handler.
pub struct Tracing {
    name: String,
    shared: Arc<Shared>,
    fields: Vec<(Arc<CompiledInstance>, Fields)>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("name", &self.name)
            .field("format", &self.shared.settings.format)
            .field("authority", &self.shared.settings.authority)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// The counters now.
    pub fn stats(&self) -> TracingStats {
        let c = &self.shared.counters;
        let q = self.shared.queue.lock();
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TracingStats {
            received: r(&c.received),
            sent: r(&c.sent),
            dropped_queue_full: r(&c.dropped_queue_full),
            dropped_invalid: r(&c.dropped_invalid),
            dropped_send_failed: r(&c.dropped_send_failed),
            batches_sent: r(&c.batches_sent),
            send_failures: r(&c.send_failures),
            retries: r(&c.retries),
            queued: u64::try_from(q.spans.len()).unwrap_or(u64::MAX),
            in_flight: u64::try_from(q.in_flight).unwrap_or(u64::MAX),
        }
    }

    /// The export format.
    pub fn format(&self) -> Format {
        self.shared.settings.format
    }
}

/// The `tracing` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAdapter;

fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty() && !authority.contains(char::is_whitespace))
        .then(|| (authority.to_string(), path.to_string()))
}

fn positive(field: &str, d: Duration) -> Result<StdDuration, AdapterError> {
    d.to_std()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| AdapterError::field(field, "must be positive"))
}

impl Adapter for TracingAdapter {
    fn name(&self) -> &'static str {
        "tracing"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["tracespan"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let p: Params = if config.params.is_null() {
            Params::default()
        } else {
            serde_json::from_value(config.params.clone())
                .map_err(|e| AdapterError::new(e.to_string()))?
        };
        let format = match p.format.as_deref().unwrap_or("ZIPKIN_V2_JSON") {
            "ZIPKIN_V2_JSON" => Format::ZipkinV2Json,
            "OTLP_PROTOBUF" => Format::OtlpProtobuf,
            other => {
                return Err(AdapterError::field(
                    "format",
                    format!("`{other}` is not one of ZIPKIN_V2_JSON, OTLP_PROTOBUF"),
                ));
            }
        };
        let drop_policy = match p.drop_policy.as_deref().unwrap_or("DROP_NEWEST") {
            "DROP_NEWEST" => DropPolicy::DropNewest,
            "DROP_OLDEST" => DropPolicy::DropOldest,
            other => {
                return Err(AdapterError::field(
                    "dropPolicy",
                    format!("`{other}` is not one of DROP_NEWEST, DROP_OLDEST"),
                ));
            }
        };
        let default_endpoint = match format {
            Format::ZipkinV2Json => "http://localhost:9411/api/v2/spans",
            Format::OtlpProtobuf => "http://localhost:4318/v1/traces",
        };
        let endpoint = p
            .endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or(default_endpoint);
        let (authority, path) = split_url(endpoint).ok_or_else(|| {
            AdapterError::field("endpoint", format!("`{endpoint}` is not an http:// URL"))
        })?;
        let max_batch = p.max_batch_spans.unwrap_or(512);
        if !(1..=MAX_BATCH_LIMIT).contains(&max_batch) {
            return Err(AdapterError::field(
                "maxBatchSpans",
                format!("must be between 1 and {MAX_BATCH_LIMIT}"),
            ));
        }
        let max_queue = p.max_queue_spans.unwrap_or(8192);
        if !(max_batch..=MAX_QUEUE_LIMIT).contains(&max_queue) {
            return Err(AdapterError::field(
                "maxQueueSpans",
                format!("must be between maxBatchSpans ({max_batch}) and {MAX_QUEUE_LIMIT}"),
            ));
        }
        let max_in_flight = p.max_concurrent_exports.unwrap_or(4);
        if !(1..=1024).contains(&max_in_flight) {
            return Err(AdapterError::field(
                "maxConcurrentExports",
                "must be between 1 and 1024",
            ));
        }
        let flush_interval = positive(
            "flushInterval",
            duration_param::parse(
                "flushInterval",
                p.flush_interval.as_deref(),
                Duration::from_secs(1),
            )?,
        )?;
        let timeout = positive(
            "timeout",
            duration_param::parse("timeout", p.timeout.as_deref(), Duration::from_secs(5))?,
        )?;
        let mut headers = vec![(
            "content-type".to_string(),
            format.content_type().to_string(),
        )];
        for (k, v) in p.headers {
            let bad = |s: &str| s.contains(['\r', '\n']);
            if k.is_empty() || bad(&k) || bad(&v) || k.contains([':', ' ']) {
                return Err(AdapterError::field(
                    "headers",
                    format!("`{k}` is not a valid header"),
                ));
            }
            if k.eq_ignore_ascii_case("content-type") || k.eq_ignore_ascii_case("content-length") {
                return Err(AdapterError::field(
                    "headers",
                    format!("`{k}` is set by the adapter"),
                ));
            }
            headers.push((k, v));
        }
        let service_name = p
            .service_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "istio-proxy".into());
        let fields = config
            .instances
            .iter()
            .filter(|i| i.template.name == "tracespan")
            .map(|i| (i.clone(), Fields::of(i)))
            .collect();
        Ok(Arc::new(Tracing {
            name: config.name.to_string(),
            shared: Arc::new(Shared {
                settings: Settings {
                    format,
                    authority,
                    path,
                    headers,
                    max_batch: max_batch as usize,
                    max_queue: max_queue as usize,
                    max_in_flight: max_in_flight as usize,
                    drop_policy,
                    flush_interval,
                    timeout,
                    service_name,
                },
                dispatcher: config.platform.dispatcher.clone(),
                queue: Mutex::new(Queue::default()),
                counters: Counters::default(),
            }),
            fields,
        }))
    }
}

impl Handler for Tracing {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
    fn flush(&self) {
        let (batches, timer) = {
            let mut q = self.shared.queue.lock();
            let mut batches = Vec::new();
            while !q.spans.is_empty() {
                batches.push(take_batch(&mut q, self.shared.settings.max_batch));
            }
            q.flush_due = false;
            q.timer_armed = false;
            (batches, q.timer.take())
        };
        if let Some(t) = timer {
            self.shared.dispatcher.cancel_timer(t);
        }
        for b in batches {
            send(&self.shared, b);
        }
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl ReportHandler for Tracing {
    fn report(&self, instances: &[InstanceView<'_>]) {
        let s = &self.shared;
        add(&s.counters.received, instances.len());
        let mut records = Vec::with_capacity(instances.len());
        for view in instances {
            let found = self
                .fields
                .iter()
                .find(|(i, _)| std::ptr::eq(Arc::as_ptr(i), view.instance));
            let record = match found {
                Some((_, f)) => to_record(view, f),
                None => to_record(view, &Fields::of(view.instance)),
            };
            match record {
                Some(r) => records.push(r),
                None => add(&s.counters.dropped_invalid, 1),
            }
        }
        if records.is_empty() {
            return;
        }
        let mut dropped = 0;
        let post = {
            let mut q = s.queue.lock();
            for r in records {
                if q.spans.len() >= s.settings.max_queue {
                    dropped += 1;
                    match s.settings.drop_policy {
                        DropPolicy::DropNewest => continue,
                        DropPolicy::DropOldest => {
                            q.spans.pop_front();
                        }
                    }
                }
                q.spans.push_back(r);
            }
            let batch_ready =
                q.spans.len() >= s.settings.max_batch && q.in_flight < s.settings.max_in_flight;
            let post = !q.kick_posted && (batch_ready || !q.timer_armed);
            if post {
                q.kick_posted = true;
            }
            post
        };
        add(&s.counters.dropped_queue_full, dropped);
        if post {
            let weak = Arc::downgrade(s);
            s.dispatcher.post(Box::new(move || kick(&weak)));
        }
    }
}

/// Takes up to `max` spans off the front of the queue, counting the batch in flight.
fn take_batch(q: &mut Queue, max: usize) -> Vec<SpanRecord> {
    let n = q.spans.len().min(max);
    q.in_flight += 1;
    q.spans.drain(..n).collect()
}

/// On the main dispatcher: sends full batches and arms the flush timer for the rest.
fn kick(weak: &Weak<Shared>) {
    let Some(s) = weak.upgrade() else { return };
    let (batches, arm) = {
        let mut q = s.queue.lock();
        q.kick_posted = false;
        let mut batches = Vec::new();
        while q.spans.len() >= s.settings.max_batch && q.in_flight < s.settings.max_in_flight {
            batches.push(take_batch(&mut q, s.settings.max_batch));
        }
        let arm = !q.spans.is_empty() && !q.timer_armed;
        if arm {
            q.timer_armed = true;
        }
        (batches, arm)
    };
    for b in batches {
        send(&s, b);
    }
    if arm {
        let w = weak.clone();
        let id = s
            .dispatcher
            .schedule(s.settings.flush_interval, Box::new(move || on_timer(&w)));
        let mut q = s.queue.lock();
        if q.timer_armed {
            q.timer = Some(id);
        }
    }
}

/// The flush timer: sends everything queued (as far as `maxConcurrentExports` allows).
fn on_timer(weak: &Weak<Shared>) {
    let Some(s) = weak.upgrade() else { return };
    let batches = {
        let mut q = s.queue.lock();
        q.timer_armed = false;
        q.timer = None;
        drain_allowed(&s, &mut q, true)
    };
    for b in batches {
        send(&s, b);
    }
}

/// Batches that may go now: full ones, and partial ones when a flush is due.
fn drain_allowed(s: &Shared, q: &mut Queue, flush: bool) -> Vec<Vec<SpanRecord>> {
    if flush {
        q.flush_due = true;
    }
    let mut batches = Vec::new();
    while q.in_flight < s.settings.max_in_flight
        && (q.spans.len() >= s.settings.max_batch || (q.flush_due && !q.spans.is_empty()))
    {
        batches.push(take_batch(q, s.settings.max_batch));
    }
    if q.spans.is_empty() {
        q.flush_due = false;
    }
    batches
}

/// Encodes and POSTs one batch.
fn send(s: &Arc<Shared>, batch: Vec<SpanRecord>) {
    let st = &s.settings;
    let body = match st.format {
        Format::ZipkinV2Json => zipkin::encode(&batch, &st.service_name),
        Format::OtlpProtobuf => Ok(otlp::encode(&batch, &st.service_name)),
    };
    let body = match body {
        Ok(b) => b,
        Err(_) => {
            add(&s.counters.send_failures, 1);
            add(&s.counters.dropped_send_failed, batch.len());
            complete(s);
            return;
        }
    };
    let request = HttpRequest {
        authority: st.authority.clone(),
        method: "POST".into(),
        path: st.path.clone(),
        headers: st.headers.clone(),
        body: Bytes::from(body),
        timeout: st.timeout,
    };
    attempt(s.clone(), request, batch.len(), 0);
}

fn attempt(s: Arc<Shared>, request: HttpRequest, spans: usize, tries: u32) {
    let dispatcher = s.dispatcher.clone();
    let retry_with = request.clone();
    let _ = dispatcher.http(
        request,
        Box::new(move |result: Result<HttpResponse, CalloutError>| {
            let retryable = match &result {
                Ok(r) if (200..300).contains(&r.status) => {
                    add(&s.counters.sent, spans);
                    add(&s.counters.batches_sent, 1);
                    complete(&s);
                    return;
                }
                Ok(r) => r.status >= 500 || r.status == 429 || r.status == 408,
                Err(CalloutError::Unsupported(_)) | Err(CalloutError::Cancelled) => false,
                Err(_) => true,
            };
            add(&s.counters.send_failures, 1);
            if retryable && tries == 0 {
                add(&s.counters.retries, 1);
                attempt(s, retry_with, spans, 1);
            } else {
                add(&s.counters.dropped_send_failed, spans);
                complete(&s);
            }
        }),
    );
}

/// A batch finished (sent or dropped): starts the batches it held back.
fn complete(s: &Arc<Shared>) {
    let batches = {
        let mut q = s.queue.lock();
        q.in_flight = q.in_flight.saturating_sub(1);
        drain_allowed(s, &mut q, false)
    };
    for b in batches {
        send(s, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids() {
        assert_eq!(
            hex_id("00000000000000AB", &[16]),
            Some("00000000000000ab".into())
        );
        assert_eq!(hex_id("0000000000000000", &[16]), None, "all zeros");
        assert_eq!(hex_id("abc", &[16, 32]), None);
        assert_eq!(hex_id("zz000000000000ab", &[16]), None);
        assert!(hex_id("463ac35c9f6413ad48485a3953bb6124", &[16, 32]).is_some());
        assert_eq!(hex_id("463ac35c9f6413ad48485a3953bb6124", &[16]), None);
    }

    #[test]
    fn rewritten_ids_match_istio() {
        assert_eq!(rewrite_span_id("a2fb4a1d1a96d312"), "9d9164ded28611b9");
        assert_eq!(
            rewrite_span_id("3f6a2ec3c810c2ab"),
            "3f6a2ec3c810c2ab",
            "never all zeros"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://z:9411/api/v2/spans"),
            Some(("z:9411".into(), "/api/v2/spans".into()))
        );
        assert_eq!(split_url("http://z"), Some(("z".into(), "/".into())));
        assert_eq!(split_url("https://z/x"), None);
        assert_eq!(split_url("http:///x"), None);
    }
}
