//! `mixer demo`: scripted Bookinfo-shaped traffic through the embedded config (or yours), with
//! every decision and the resulting telemetry printed. Needs no external service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use mixer_adapters::stdio::{MemorySink, StdioAdapter};
use mixer_attr::{Attributes, Duration, StringMap, Value, well_known as wk};
use mixer_core::pal::Clock;

use crate::session::{self, Session};

const EMBEDDED: &str = include_str!("demo/mesh.yaml");

/// `mixer demo [--config FILE_OR_DIR...]`
#[derive(clap::Args, Debug)]
pub struct DemoCommand {
    /// Run the traffic against this config instead of the embedded one.
    #[arg(long = "config", num_args = 1..)]
    config: Vec<PathBuf>,
}

/// One scripted request.
struct Call {
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
    client_ip: &'static str,
    method: &'static str,
    path: &'static str,
    /// What the upstream answers when the request is allowed.
    code: i64,
    latency_ms: i64,
}

const fn call(
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
    client_ip: &'static str,
    path: &'static str,
) -> Call {
    Call {
        from,
        to,
        client_ip,
        method: "GET",
        path,
        code: 200,
        latency_ms: 12,
    }
}

const GATEWAY: (&str, &str) = ("istio-ingressgateway", "");
const PRODUCTPAGE: (&str, &str) = ("productpage", "v1");

fn traffic() -> Vec<Call> {
    vec![
        call(GATEWAY, PRODUCTPAGE, "198.51.100.7", "/productpage"),
        call(PRODUCTPAGE, ("details", "v1"), "10.1.0.4", "/details/0"),
        call(PRODUCTPAGE, ("reviews", "v1"), "10.1.0.4", "/reviews/0"),
        call(PRODUCTPAGE, ("reviews", "v2"), "10.1.0.4", "/reviews/0"),
        call(
            ("reviews", "v2"),
            ("ratings", "v1"),
            "10.1.0.9",
            "/ratings/0",
        ),
        call(PRODUCTPAGE, ("reviews", "v3"), "10.1.0.4", "/reviews/0"),
        call(
            ("reviews", "v3"),
            ("ratings", "v1"),
            "10.1.0.12",
            "/ratings/0",
        ),
        call(
            ("reviews", "v3"),
            ("ratings", "v1"),
            "10.1.0.12",
            "/ratings/0",
        ),
        call(GATEWAY, PRODUCTPAGE, "203.0.113.50", "/productpage"),
        call(GATEWAY, PRODUCTPAGE, "198.51.100.7", "/productpage"),
        call(GATEWAY, PRODUCTPAGE, "198.51.100.7", "/productpage"),
        call(GATEWAY, PRODUCTPAGE, "198.51.100.7", "/productpage"),
        call(GATEWAY, PRODUCTPAGE, "192.0.2.1", "/productpage"),
        Call {
            code: 500,
            latency_ms: 85,
            ..call(PRODUCTPAGE, ("reviews", "v1"), "10.1.0.4", "/reviews/1")
        },
    ]
}

fn labels(app: &str, version: &str) -> Value<'static> {
    let mut m = StringMap::new();
    m.insert("app".into(), app.into());
    if !version.is_empty() {
        m.insert("version".into(), version.into());
    }
    Value::string_map(m)
}

fn workload(app: &str, version: &str) -> String {
    if version.is_empty() {
        app.to_string()
    } else {
        format!("{app}-{version}")
    }
}

fn attributes(c: &Call, now: mixer_attr::Timestamp) -> Attributes<'static> {
    let owned = |s: String| Value::String(s.into());
    let headers: StringMap = [
        ("x-forwarded-for".to_string(), c.client_ip.to_string()),
        ("user-agent".to_string(), "mixer-demo/1.0".to_string()),
    ]
    .into_iter()
    .collect();
    let ip = c
        .client_ip
        .parse()
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    Attributes::new()
        .with(wk::SOURCE_IP, Value::IpAddress(ip))
        .with(wk::SOURCE_LABELS, labels(c.from.0, c.from.1))
        .with(
            wk::SOURCE_WORKLOAD_NAME,
            owned(workload(c.from.0, c.from.1)),
        )
        .with(wk::DESTINATION_LABELS, labels(c.to.0, c.to.1))
        .with(
            wk::DESTINATION_WORKLOAD_NAME,
            owned(workload(c.to.0, c.to.1)),
        )
        .with(wk::DESTINATION_SERVICE_NAME, Value::str(c.to.0))
        .with(wk::DESTINATION_SERVICE_NAMESPACE, Value::str("default"))
        .with(
            wk::DESTINATION_SERVICE_HOST,
            owned(format!("{}.default.svc.cluster.local", c.to.0)),
        )
        .with(wk::DESTINATION_NAMESPACE, Value::str("default"))
        .with(wk::REQUEST_METHOD, Value::str(c.method))
        .with(wk::REQUEST_PATH, Value::str(c.path))
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
        .with(wk::REQUEST_USERAGENT, Value::str("mixer-demo/1.0"))
        .with(wk::REQUEST_TIME, Value::Timestamp(now))
        .with(wk::CONTEXT_PROTOCOL, Value::str("http"))
}

pub fn run(cmd: DemoCommand) -> anyhow::Result<ExitCode> {
    let loaded = session::load(&cmd.config, Some(("embedded demo config", EMBEDDED)))?;
    let sink = Arc::new(MemorySink::default());
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(StdioAdapter::with_sink(sink.clone())));
    let s = Session::start(&loaded, &registry)?;
    let snapshot = s.pipeline.snapshot();
    println!(
        "Mixer V2 demo: {} rules, {} handlers, {} instances",
        snapshot.rules.len(),
        snapshot.handlers.len(),
        snapshot.instances.len()
    );
    for h in &snapshot.handlers {
        println!("  handler {:<32} adapter {}", h.name, h.adapter);
    }
    for n in &s.notes {
        println!("  note: {n}");
    }
    println!();
    println!(
        "{:>2}  {:<36} {:<16} {:<13} {:>8}  {:<5}  decision",
        "#", "source (client address)", "destination", "path", "check", "cache"
    );
    let mut checked_ns = Vec::new();
    for (i, c) in traffic().iter().enumerate() {
        let mut bag = attributes(c, s.event_loop.wall());
        let started = Instant::now();
        let answer = s.check(&bag)?;
        let took = started.elapsed();
        checked_ns.push(took.as_nanos());
        let d = &answer.decision;
        let decision = if d.is_allowed() {
            match d.quotas.first() {
                Some((name, q)) => format!("ALLOW ({name}: {} granted)", q.granted),
                None => "ALLOW".to_string(),
            }
        } else {
            format!("DENY {}: {}", d.status.code, d.status.message)
        };
        println!(
            "{:>2}  {:<36} {:<16} {:<13} {:>6.1}us  {:<5}  {}",
            i + 1,
            format!("{} ({})", workload(c.from.0, c.from.1), c.client_ip),
            workload(c.to.0, c.to.1),
            c.path,
            took.as_secs_f64() * 1e6,
            if answer.cache_hit { "hit" } else { "miss" },
            decision,
        );
        // The request completes: the upstream's answer, or the local reply of a denial.
        let code = if d.is_allowed() {
            c.code
        } else {
            i64::from(d.status.code.http_status())
        };
        bag.set(wk::RESPONSE_CODE, Value::Int64(code));
        bag.set(
            wk::RESPONSE_DURATION,
            Value::Duration(Duration::from_millis(if d.is_allowed() {
                c.latency_ms
            } else {
                0
            })),
        );
        bag.set(wk::CHECK_CACHE_HIT, Value::Bool(answer.cache_hit));
        s.worker.report(&bag);
    }
    s.pipeline.flush();
    println!();
    println!("Access log (stdio handler):");
    for line in sink.lines() {
        println!("  {line}");
    }
    let metrics = mixer_adapters::prometheus::render(
        &s.pipeline.snapshot(),
        mixer_adapters::prometheus::Format::Text,
    );
    if !metrics.is_empty() {
        println!();
        println!("Metrics (prometheus handler, Prometheus text format):");
        for line in metrics.lines() {
            println!("  {line}");
        }
    }
    let stats = s.pipeline.stats();
    let cache = s.pipeline.check_cache().stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    println!();
    println!(
        "Pipeline: {} checks ({} denied), {} reports ({} instances), {} instance errors",
        stats.checks.load(std::sync::atomic::Ordering::Relaxed),
        get(&stats.checks_denied),
        stats.reports.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .report_instances
            .load(std::sync::atomic::Ordering::Relaxed),
        get(&stats.instance_errors)
    );
    println!(
        "Check cache: {} hits, {} misses, {} entries",
        get(&cache.hits),
        get(&cache.misses),
        s.pipeline.check_cache().len()
    );
    checked_ns.sort_unstable();
    if let Some(median) = checked_ns.get(checked_ns.len() / 2) {
        println!(
            "Median check in this run: {:.1}us of wall time, cold caches included (benches/README.md has measured figures)",
            *median as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
