//! The report path's expression table and deferred reports: inline values equal per-instance
//! evaluation; deferred reports give handlers exactly what inline ones give (every value type,
//! shared and lent maps, constant-key and whole-map reads, failed fields, namespace-scoped
//! rules); a full queue drops and counts exactly, logging at a bounded rate; swaps and flushes
//! lose nothing and send old records to old handlers; a worker's order is kept; no drainer means
//! inline reports; dropping the pipeline drains; a map read only at constant keys is captured
//! through the host's map at those keys alone; attributes bound by attribute producers are
//! captured like ingested ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mixer_attr::{Attributes, StringMap, StringMapRef, Timestamp, Value, well_known as wk};
use mixer_core::adapter::{Adapter, AdapterError, Handler, HandlerConfig, ReportHandler};
use mixer_core::dispatch::{LogSink, MemoryLog};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{BackgroundExecutor, Platform, Task};
use mixer_core::pipeline::PipelineStats;
use mixer_core::report_queue::ReportQueueOptions;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{AdapterRegistry, CompileOptions, Config, Pipeline, PipelineOptions, compile};
use mixer_proto::v2;
use parking_lot::Mutex;
use serde_json::json;

/// One delivered instance: handler generation, instance name, `path=value` of every field.
type Seen = (u64, String, Vec<String>);

#[derive(Default, Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct RecorderHandler {
    generation: u64,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Adapter for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["metric", "logentry"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(RecorderHandler {
            generation: c.params["generation"].as_u64().unwrap_or(0),
            seen: self.seen.clone(),
        }))
    }
}

impl Handler for RecorderHandler {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
}

fn fields(v: &InstanceView<'_>) -> Vec<String> {
    v.instance
        .fields
        .iter()
        .zip(v.values)
        .map(|(f, x)| format!("{}={x:?}", f.path))
        .collect()
}

impl ReportHandler for RecorderHandler {
    fn report(&self, instances: &[InstanceView<'_>]) {
        let mut seen = self.seen.lock();
        for v in instances {
            if let Some(Value::Int64(g)) = v.get("dimensions.generation") {
                assert_eq!(*g as u64, self.generation, "instance of another snapshot");
            }
            seen.push((self.generation, v.name().to_string(), fields(v)));
        }
    }
}

/// Holds the drainer task without running it: only flushes and swaps drain.
#[derive(Default)]
struct Parked(Mutex<Vec<Task>>);

impl BackgroundExecutor for Parked {
    fn spawn(&self, _name: &str, task: Task) {
        self.0.lock().push(task);
    }
}

/// Refuses every task.
struct Refuse;

impl BackgroundExecutor for Refuse {
    fn spawn(&self, _name: &str, _task: Task) {}
}

/// Runs each task on a thread the test can join.
#[derive(Default)]
struct Joinable(Mutex<Vec<std::thread::JoinHandle<()>>>);

impl BackgroundExecutor for Joinable {
    fn spawn(&self, _name: &str, task: Task) {
        self.0.lock().push(std::thread::spawn(task));
    }
}

fn obj(json: serde_json::Value) -> Option<prost_types::Struct> {
    Some(json_to_struct(&json))
}

fn instance(name: &str, template: &str, params: serde_json::Value) -> v2::Instance {
    v2::Instance {
        name: name.into(),
        namespace: "istio-system".into(),
        template: template.into(),
        params: obj(params),
        ..Default::default()
    }
}

fn rule(name: &str, namespace: &str, predicate: &str, instances: &[&str]) -> v2::Rule {
    v2::Rule {
        name: name.into(),
        namespace: namespace.into(),
        r#match: predicate.into(),
        actions: vec![v2::Action {
            handler: "rec.istio-system".into(),
            instances: instances
                .iter()
                .map(|i| format!("{i}.istio-system"))
                .collect(),
            name: String::new(),
        }],
        ..Default::default()
    }
}

/// Metrics that share most dimensions, a typed instance whose fields fail when absent, a log
/// entry reading maps whole and by key, a guarded rule and a namespace-scoped one.
fn rich_config(generation: u64) -> Config {
    let g = generation.to_string();
    let dims = json!({
        "code": "response.code | 200",
        "app": "source.labels[\"app\"] | \"unknown\"",
        "version": "source.labels[\"version\"] | \"unknown\"",
        "host": "request.headers[\":authority\"] | \"none\"",
        "dest": "destination.service.host | \"x\"",
        "generation": g,
    });
    let mut manifest = v2::AttributeManifest {
        name: "test".into(),
        namespace: "istio-system".into(),
        ..Default::default()
    };
    for (name, ty) in [
        ("test.email", v2::ValueType::EmailAddress),
        ("test.uri", v2::ValueType::Uri),
        ("test.dns", v2::ValueType::DnsName),
        ("test.ratio", v2::ValueType::Double),
        ("test.flag", v2::ValueType::Bool),
    ] {
        manifest.attributes.insert(
            name.into(),
            v2::AttributeInfo {
                description: String::new(),
                value_type: ty as i32,
            },
        );
    }
    Config {
        manifests: vec![manifest],
        handlers: vec![v2::Handler {
            name: "rec".into(),
            namespace: "istio-system".into(),
            adapter: "recorder".into(),
            params: obj(json!({ "generation": generation })),
            ..Default::default()
        }],
        instances: vec![
            instance(
                "requests",
                "metric",
                json!({"value": "1", "dimensions": dims}),
            ),
            instance(
                "sizes",
                "metric",
                json!({"value": "response.size", "dimensions": dims}),
            ),
            instance(
                "typed",
                "metric",
                json!({"value": "test.ratio", "dimensions": {
                    "email": "test.email", "uri": "test.uri", "dns": "test.dns",
                    "flag": "test.flag", "generation": g,
                }}),
            ),
            instance(
                "log",
                "logentry",
                json!({
                    "severity": "\"Info\"",
                    "timestamp": "request.time",
                    "variables": {
                        "ip": "source.ip | ip(\"0.0.0.0\")",
                        "latency": "response.duration | \"0ms\"",
                        "labels": "destination.labels | emptyStringMap()",
                        "source": "source.labels | emptyStringMap()",
                        "id": "request.headers[\"x-request-id\"] | \"\"",
                        "ua": "request.useragent | \"-\"",
                        "code": "response.code | 200",
                        "generation": g,
                    }
                }),
            ),
        ],
        rules: vec![
            rule(
                "metrics",
                "istio-system",
                "(request.headers[\"x-skip\"] | \"no\") != \"yes\"",
                &["requests", "sizes", "typed"],
            ),
            rule(
                "logs",
                "istio-system",
                "context.protocol == \"http\"",
                &["log"],
            ),
            rule("scoped", "bookinfo", "", &["requests"]),
        ],
        ..Default::default()
    }
}

/// The maps a request lends (`request.headers`, `destination.labels`).
struct Lent {
    headers: Vec<(String, String)>,
    labels: Vec<(String, String)>,
}

fn lent(i: u64) -> Lent {
    let mut headers = vec![
        (":authority".to_string(), format!("svc-{}", i % 3)),
        ("x-request-id".to_string(), format!("id-{i}")),
        ("cookie".to_string(), "not read".to_string()),
    ];
    if i.is_multiple_of(7) {
        headers.push(("x-skip".into(), "yes".into()));
    }
    let labels = vec![("app".to_string(), "reviews".to_string())];
    Lent { headers, labels }
}

/// Request `i`: attributes present or absent by `i`, every value type, shared and lent maps.
fn request(i: u64, lent: &Lent) -> Attributes<'_> {
    let mut b = Attributes::new()
        .with(
            wk::REQUEST_HEADERS,
            Value::StringMap(StringMapRef::Borrowed(&lent.headers)),
        )
        .with(
            wk::CONTEXT_PROTOCOL,
            Value::str(if i.is_multiple_of(5) { "tcp" } else { "http" }),
        )
        .with(
            wk::REQUEST_USERAGENT,
            Value::String(format!("agent/{}", i % 4).into()),
        )
        .with(
            wk::REQUEST_TIME,
            Value::Timestamp(Timestamp::new(1_600_000_000 + i as i64, 5)),
        )
        .with(
            wk::DESTINATION_NAMESPACE,
            Value::str(if i.is_multiple_of(2) {
                "bookinfo"
            } else {
                "default"
            }),
        );
    if !i.is_multiple_of(3) {
        b.set(wk::RESPONSE_CODE, Value::Int64(200 + (i % 4) as i64));
        b.set(wk::RESPONSE_SIZE, Value::Int64(i as i64 * 10));
        b.set(
            wk::DESTINATION_LABELS,
            Value::StringMap(StringMapRef::Borrowed(&lent.labels)),
        );
    }
    if !i.is_multiple_of(4) {
        let m: StringMap = [("app".to_string(), format!("app-{}", i % 3))]
            .into_iter()
            .collect();
        b.set(wk::SOURCE_LABELS, Value::string_map(m));
        b.set(
            wk::SOURCE_IP,
            Value::IpAddress([10, 0, 0, (i % 250) as u8].into()),
        );
        b.set(
            wk::RESPONSE_DURATION,
            Value::Duration(mixer_attr::Duration::from_millis(i as i64)),
        );
    }
    b
}

/// Sets the custom (manifest) attributes of `rich_config` on request `i`, for some requests.
fn typed(b: &mut Attributes<'_>, p: &Pipeline, i: u64) {
    if i.is_multiple_of(2) {
        return;
    }
    let snapshot = p.snapshot();
    let v = &snapshot.vocabulary;
    let id = |n: &str| v.lookup(n).unwrap();
    b.set(
        id("test.email"),
        Value::EmailAddress(format!("u{i}@example.com").into()),
    );
    b.set(id("test.uri"), Value::Uri("https://example.com/x".into()));
    b.set(id("test.dns"), Value::DnsName("example.com".into()));
    b.set(id("test.ratio"), Value::Double(i as f64 / 4.0));
    b.set(id("test.flag"), Value::Bool(i.is_multiple_of(3)));
}

struct Setup {
    vt: VirtualPlatform,
    pipeline: Pipeline,
    recorder: Recorder,
    log: Arc<MemoryLog>,
}

fn setup(
    config: &Config,
    background: Arc<dyn BackgroundExecutor>,
    queue: Option<ReportQueueOptions>,
) -> Setup {
    let vt = VirtualPlatform::new();
    let mut platform: Platform = vt.platform();
    platform.background = background;
    let recorder = Recorder::default();
    let log = Arc::new(MemoryLog::default());
    let snapshot = compile(config, &registry(&recorder), &platform, None, &opts(&log)).unwrap();
    let options = PipelineOptions {
        report_queue: queue.unwrap_or_default(),
        ..Default::default()
    };
    let pipeline = Pipeline::with_options(snapshot, platform, options);
    Setup {
        vt,
        pipeline,
        recorder,
        log,
    }
}

fn registry(recorder: &Recorder) -> AdapterRegistry {
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(recorder.clone()));
    registry
}

fn opts(log: &Arc<MemoryLog>) -> CompileOptions {
    CompileOptions {
        dispatch_log: LogSink(log.clone()),
        ..Default::default()
    }
}

fn deferred(capacity: usize) -> Option<ReportQueueOptions> {
    Some(ReportQueueOptions {
        deferred: true,
        capacity,
        ..Default::default()
    })
}

fn stat(p: &Pipeline, f: impl Fn(&PipelineStats) -> u64) -> u64 {
    f(p.stats())
}

#[test]
fn the_expression_table_gives_what_per_instance_evaluation_gives() {
    let s = setup(&rich_config(0), Arc::new(Parked::default()), None);
    let shape = s.pipeline.report_plan_shape();
    // requests 7 + sizes 7 + typed 6 + log 10 fields; the metrics' shared dimensions, the
    // generation constant and `response.code | 200` count once: 7 + 1 + 5 + 8.
    assert_eq!((shape.fields, shape.expressions), (30, 21), "{shape:?}");
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    let snapshot = s.pipeline.snapshot();
    for i in 0..60 {
        let l = lent(i);
        let mut bag = request(i, &l);
        typed(&mut bag, &s.pipeline, i);
        let before = s.recorder.seen.lock().len();
        let summary = w.report(&bag);
        let seen = s.recorder.seen.lock();
        assert_eq!(seen.len() - before, summary.instances_sent);
        for (_, name, got) in &seen[before..] {
            let inst = snapshot
                .instances
                .iter()
                .find(|x| &*x.name == name)
                .unwrap();
            let mut values = Vec::new();
            inst.evaluate(&bag, &mut (), &mut values).unwrap();
            let view = InstanceView {
                instance: inst,
                values: &values,
            };
            assert_eq!(got, &fields(&view), "request {i}, instance {name}");
        }
    }
}

#[test]
fn deferred_reports_give_handlers_exactly_what_inline_ones_give() {
    let config = rich_config(0);
    let inline = setup(&config, Arc::new(Parked::default()), None);
    let later = setup(&config, Arc::new(Parked::default()), deferred(1000));
    let wi = inline.pipeline.worker(Arc::new(inline.vt.clone()));
    let wd = later.pipeline.worker(Arc::new(later.vt.clone()));
    let mut sent = 0;
    let mut errors = 0;
    for i in 0..300 {
        let l = lent(i);
        let mut bag = request(i, &l);
        typed(&mut bag, &inline.pipeline, i);
        let a = wi.report(&bag);
        sent += a.instances_sent;
        errors += a.instance_errors;
        let b = wd.report(&bag);
        assert!(b.deferred && !b.dropped);
    }
    // Nothing reaches a handler before the drain.
    assert!(later.recorder.seen.lock().is_empty());
    assert_eq!(later.pipeline.queued_reports(), 300);
    later.pipeline.flush();
    assert_eq!(later.pipeline.queued_reports(), 0);
    let (a, b) = (inline.recorder.seen.lock(), later.recorder.seen.lock());
    assert_eq!(a.len(), sent);
    assert_eq!(*a, *b);
    // The run covered what it claims: errors, the scoped rule, every value type, lent maps.
    assert!(errors > 0 && sent > 600);
    let text: String = a
        .iter()
        .flat_map(|x| x.2.iter().map(String::as_str))
        .collect();
    for needle in [
        "EmailAddress(\"u1@example.com\")",
        "Uri(",
        "DnsName(",
        "Double(",
        "Bool(",
        "IpAddress(",
        "Duration(",
        "Timestamp(",
        "\"id-1\"",
        "\"svc-1\"",
        "\"reviews\"",
    ] {
        assert!(text.contains(needle), "{needle} never reported");
    }
    let (p, q) = (&inline.pipeline, &later.pipeline);
    let counters: [fn(&PipelineStats) -> u64; 4] = [
        |s| s.reports.load(Ordering::Relaxed),
        |s| s.report_instances.load(Ordering::Relaxed),
        |s| s.instance_errors.load(Ordering::Relaxed),
        |s| s.match_errors.load(Ordering::Relaxed),
    ];
    for f in counters {
        assert_eq!(stat(p, f), stat(q, f));
    }
    assert_eq!(stat(q, |s| s.reports_deferred.load(Ordering::Relaxed)), 300);
    assert_eq!(
        stat(q, |s| s.instance_errors.load(Ordering::Relaxed)),
        errors as u64
    );
}

#[test]
fn a_full_queue_drops_counts_and_logs_at_a_bounded_rate() {
    let s = setup(&rich_config(0), Arc::new(Parked::default()), deferred(10));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    let l = lent(1);
    let bag = request(1, &l);
    let outcomes: Vec<(bool, bool)> = (0..25)
        .map(|_| {
            let r = w.report(&bag);
            (r.deferred, r.dropped)
        })
        .collect();
    assert!(outcomes[..10].iter().all(|o| *o == (true, false)));
    assert!(outcomes[10..].iter().all(|o| *o == (false, true)));
    assert_eq!(
        stat(&s.pipeline, |s| s.reports_dropped.load(Ordering::Relaxed)),
        15
    );
    let drops = |log: &MemoryLog| {
        log.lines()
            .into_iter()
            .filter(|l| l.contains("queue full"))
            .collect::<Vec<_>>()
    };
    // The first drop is logged at once; the next ones wait for the interval.
    assert_eq!(drops(&s.log).len(), 1);
    assert!(drops(&s.log)[0].contains("dropped 1 reports"));
    s.vt.advance(Duration::from_secs(2));
    w.report(&bag);
    let lines = drops(&s.log);
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].contains("dropped 15 reports (16 in total)"),
        "{lines:?}"
    );
    // The queued ones are all delivered; the queue takes reports again.
    s.pipeline.flush();
    assert_eq!(stat(&s.pipeline, |s| s.reports.load(Ordering::Relaxed)), 10);
    assert!(w.report(&bag).deferred);
    assert_eq!(
        stat(&s.pipeline, |s| s.reports_dropped.load(Ordering::Relaxed)),
        16
    );
}

#[test]
fn a_swap_sends_old_records_to_old_handlers_first() {
    let s = setup(&rich_config(0), Arc::new(Parked::default()), deferred(100));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    let l = lent(1);
    let bag = request(1, &l);
    for _ in 0..5 {
        assert!(w.report(&bag).deferred);
    }
    let next = compile(
        &rich_config(1),
        &registry(&s.recorder),
        &s.pipeline.platform().clone(),
        None,
        &opts(&s.log),
    )
    .unwrap();
    s.pipeline.swap(next);
    let gens = |r: &Recorder| -> Vec<u64> { r.seen.lock().iter().map(|x| x.0).collect() };
    // Drained by the swap, against the old snapshot (the recorder checks instance generations).
    let after_swap = gens(&s.recorder);
    assert!(!after_swap.is_empty() && after_swap.iter().all(|g| *g == 0));
    for _ in 0..3 {
        assert!(w.report(&bag).deferred);
    }
    s.pipeline.flush();
    let all = gens(&s.recorder);
    let per_report = after_swap.len() / 5;
    assert_eq!(all.len(), 8 * per_report);
    assert!(all[after_swap.len()..].iter().all(|g| *g == 1));
}

/// One metric per request: `value` = request.size, `code` = response.code.
fn simple_config(generation: u64) -> Config {
    let mut c = rich_config(generation);
    c.manifests.clear();
    c.instances = vec![instance(
        "requests",
        "metric",
        json!({"value": "request.size", "dimensions": {
            "code": "response.code", "generation": generation.to_string()
        }}),
    )];
    c.rules = vec![rule("metrics", "istio-system", "", &["requests"])];
    c
}

fn numbered(worker: i64, seq: i64) -> Attributes<'static> {
    Attributes::new()
        .with(wk::REQUEST_SIZE, Value::Int64(seq))
        .with(wk::RESPONSE_CODE, Value::Int64(worker))
}

fn int_field(fields: &[String], path: &str) -> i64 {
    let f = fields.iter().find(|f| f.starts_with(path)).unwrap();
    f.trim_start_matches(path)
        .trim_start_matches("=Int64(")
        .trim_end_matches(')')
        .parse()
        .unwrap()
}

#[test]
fn each_worker_keeps_its_order_through_background_batches() {
    let q = Some(ReportQueueOptions {
        deferred: true,
        capacity: 100_000,
        batch: 16,
        max_delay: Duration::from_micros(200),
    });
    let s = setup(
        &simple_config(0),
        Arc::new(mixer_core::pal::ThreadExecutor),
        q,
    );
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let w = s.pipeline.worker(Arc::new(s.vt.clone()));
            scope.spawn(move || {
                for seq in 0..2000 {
                    assert!(w.report(&numbered(worker, seq)).deferred);
                }
            });
        }
    });
    s.pipeline.flush();
    let seen = s.recorder.seen.lock();
    assert_eq!(seen.len(), 4000);
    for worker in 0..2 {
        let seqs: Vec<i64> = seen
            .iter()
            .filter(|x| int_field(&x.2, "dimensions.code") == worker)
            .map(|x| int_field(&x.2, "value"))
            .collect();
        assert_eq!(seqs, (0..2000).collect::<Vec<_>>(), "worker {worker}");
    }
}

#[test]
fn swaps_under_load_lose_nothing() {
    let q = Some(ReportQueueOptions {
        deferred: true,
        capacity: 100_000,
        batch: 32,
        max_delay: Duration::from_micros(100),
    });
    let s = setup(
        &simple_config(0),
        Arc::new(mixer_core::pal::ThreadExecutor),
        q,
    );
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for worker in 0..2 {
            let w = s.pipeline.worker(Arc::new(s.vt.clone()));
            threads.push(scope.spawn(move || {
                for seq in 0..3000 {
                    assert!(w.report(&numbered(worker, seq)).deferred);
                }
            }));
        }
        let mut generation = 0;
        while !threads.iter().all(|t| t.is_finished()) {
            generation = 1 - generation;
            let next = compile(
                &simple_config(generation),
                &registry(&s.recorder),
                s.pipeline.platform(),
                None,
                &opts(&s.log),
            )
            .unwrap();
            s.pipeline.swap(next);
            std::thread::yield_now();
        }
    });
    s.pipeline.flush();
    let seen = s.recorder.seen.lock();
    assert_eq!(seen.len(), 6000);
    assert_eq!(
        stat(&s.pipeline, |s| s.reports_dropped.load(Ordering::Relaxed)),
        0
    );
    let sum: i64 = seen.iter().map(|x| int_field(&x.2, "value")).sum();
    assert_eq!(sum, 2 * (0..3000).sum::<i64>());
}

#[test]
fn without_a_drainer_reports_go_inline() {
    let s = setup(&simple_config(0), Arc::new(Refuse), deferred(10));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    let r = w.report(&numbered(0, 1));
    assert!(!r.deferred && !r.dropped);
    assert_eq!(r.instances_sent, 1);
    assert_eq!(s.recorder.seen.lock().len(), 1);
    assert!(s.log.lines().iter().any(|l| l.contains("reporting inline")));
}

#[test]
fn dropping_the_pipeline_drains_before_the_drainer_exits() {
    let executor = Arc::new(Joinable::default());
    let q = Some(ReportQueueOptions {
        deferred: true,
        capacity: 1000,
        batch: usize::MAX,
        max_delay: Duration::from_secs(3600),
    });
    let s = setup(&simple_config(0), executor.clone(), q);
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    for seq in 0..50 {
        assert!(w.report(&numbered(0, seq)).deferred);
    }
    let Setup {
        pipeline, recorder, ..
    } = s;
    drop(w);
    drop(pipeline);
    for t in executor.0.lock().drain(..) {
        t.join().unwrap();
    }
    assert_eq!(recorder.seen.lock().len(), 50);
}

/// A host's header map that counts how it is read.
#[derive(Default)]
struct Counted {
    pairs: Vec<(String, String)>,
    gets: std::sync::atomic::AtomicUsize,
    walks: std::sync::atomic::AtomicUsize,
}

impl mixer_attr::StringMapView for Counted {
    fn get(&self, key: &str) -> Option<&str> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn len(&self) -> usize {
        self.pairs.len()
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        self.walks.fetch_add(1, Ordering::Relaxed);
        for (k, v) in &self.pairs {
            f(k, v)
        }
    }
}

#[test]
fn a_map_read_only_at_constant_keys_is_captured_at_those_keys() {
    let mut config = simple_config(0);
    config.instances = vec![instance(
        "requests",
        "metric",
        json!({"value": "1", "dimensions": {
            "id": "request.headers[\"x-request-id\"] | \"none\"",
            "gone": "request.headers[\"x-absent\"] | \"none\"",
        }}),
    )];
    let s = setup(&config, Arc::new(Parked::default()), deferred(10));
    let w = s.pipeline.worker(Arc::new(s.vt.clone()));
    let headers = Counted {
        pairs: vec![
            ("x-request-id".into(), "r-1".into()),
            (
                "cookie".into(),
                "a long cookie the report never reads".into(),
            ),
        ],
        ..Default::default()
    };
    let bag = Attributes::new().with(
        wk::REQUEST_HEADERS,
        Value::StringMap(StringMapRef::Borrowed(&headers)),
    );
    assert!(w.report(&bag).deferred);
    // Two look-ups through the host's own map, no walk over its entries.
    assert_eq!(headers.gets.load(Ordering::Relaxed), 2);
    assert_eq!(headers.walks.load(Ordering::Relaxed), 0);
    s.pipeline.flush();
    let seen = s.recorder.seen.lock();
    assert_eq!(
        seen[0].2,
        [
            "dimensions.gone=String(\"none\")",
            "dimensions.id=String(\"r-1\")",
            "value=Int64(1)"
        ]
    );
}

/// Produces `source_labels` {app: "app-of-<source.uid>"} and `source_pod_name` for the
/// `kubernetes` template (an attribute-producing stage).
struct Lookup;
struct LookupHandler {
    uid: usize,
    labels: usize,
    pod: usize,
}

impl Adapter for Lookup {
    fn name(&self) -> &'static str {
        "lookup"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["kubernetes"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let outputs = mixer_core::template::template("kubernetes")
            .unwrap()
            .outputs;
        let out = |name: &str| outputs.iter().position(|f| f.path == name).unwrap();
        Ok(Arc::new(LookupHandler {
            uid: c.instances[0].position("source_uid").unwrap(),
            labels: out("source_labels"),
            pod: out("source_pod_name"),
        }))
    }
}

impl Handler for LookupHandler {
    fn as_attribute_producer(&self) -> Option<&dyn mixer_core::adapter::AttributeProducer> {
        Some(self)
    }
}

impl mixer_core::adapter::AttributeProducer for LookupHandler {
    fn produce(
        &self,
        view: &InstanceView<'_>,
        _: &mixer_core::adapter::ApaContext<'_>,
    ) -> Result<mixer_core::adapter::Produced, mixer_core::Status> {
        let uid = view.at(self.uid).and_then(|v| v.as_str()).unwrap_or("");
        let mut out = mixer_core::adapter::ApaValues::with_len(60);
        if !uid.is_empty() {
            let labels: StringMap = [("app".to_string(), format!("app-of-{uid}"))]
                .into_iter()
                .collect();
            out.set(self.labels, Value::string_map(labels));
            out.set(self.pod, Value::String(format!("pod-{uid}").into()));
        }
        Ok(mixer_core::adapter::Produced {
            output: Arc::new(out),
            cache_for: None,
            reusable: false,
        })
    }
}

#[test]
fn deferred_reports_capture_what_attribute_producers_bound() {
    let mut config = simple_config(0);
    config.handlers.push(v2::Handler {
        name: "lookup".into(),
        namespace: "istio-system".into(),
        adapter: "lookup".into(),
        ..Default::default()
    });
    let mut attrs = instance(
        "attrs",
        "kubernetes",
        json!({ "source_uid": "source.uid | \"\"" }),
    );
    attrs.attribute_bindings = [
        ("source.name", "$out.source_pod_name | \"unknown\""),
        ("source.labels", "$out.source_labels | emptyStringMap()"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    config.instances = vec![
        attrs,
        instance(
            "requests",
            "metric",
            json!({"value": "1", "dimensions": {
                "app": "source.labels[\"app\"] | \"none\"",
                "name": "source.name",
            }}),
        ),
    ];
    let mut generator = rule("gen", "istio-system", "", &["attrs"]);
    generator.actions[0].handler = "lookup.istio-system".into();
    config.rules = vec![
        generator,
        rule("metrics", "istio-system", "", &["requests"]),
    ];
    let run = |queue: Option<ReportQueueOptions>| {
        let vt = VirtualPlatform::new();
        let recorder = Recorder::default();
        let mut registry = registry(&recorder);
        registry.register(Arc::new(Lookup));
        let log = Arc::new(MemoryLog::default());
        let snapshot = compile(&config, &registry, &vt.platform(), None, &opts(&log)).unwrap();
        assert_eq!(snapshot.apa.stages.len(), 1);
        let options = PipelineOptions {
            report_queue: queue.unwrap_or_default(),
            ..Default::default()
        };
        let mut platform = vt.platform();
        platform.background = Arc::new(Parked::default());
        let pipeline = Pipeline::with_options(snapshot, platform, options);
        let w = pipeline.worker(Arc::new(vt.clone()));
        for uid in ["reviews", "", "ratings"] {
            let bag = Attributes::new().with(wk::SOURCE_UID, Value::str(uid));
            w.report(&bag);
        }
        pipeline.flush();
        recorder.seen.lock().clone()
    };
    let inline = run(None);
    assert_eq!(inline.len(), 3);
    assert!(
        inline[0]
            .2
            .contains(&"dimensions.app=String(\"app-of-reviews\")".to_string())
    );
    assert!(
        inline[1]
            .2
            .contains(&"dimensions.name=String(\"unknown\")".to_string())
    );
    assert_eq!(run(deferred(10)), inline);
}
