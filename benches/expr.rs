//! Expressions: Mixer expressions compiled by mixer-expr versus the equivalent CEL program
//! (`cel` crate), both precompiled, evaluated against the same request. Figures in README.md
//! ("Expressions").

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::{
    Attributes, ReferencedAttributes, StringMap, StringMapRef, Value, ValueType, Vocabulary,
    well_known as wk,
};

/// The host's buffers: request headers and workload labels.
struct Host {
    headers: Vec<(&'static str, &'static str)>,
    ar: StringMap,
    labels: StringMap,
}

fn host() -> Host {
    Host {
        headers: vec![
            (":authority", "reviews.default.svc.cluster.local:9080"),
            (":method", "GET"),
            (":path", "/reviews/0"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0",
            ),
            ("accept", "application/json"),
            ("x-request-id", "2f9a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x", "yes"),
        ],
        ar: [("foo".to_string(), "bar".to_string())]
            .into_iter()
            .collect(),
        labels: [("app", "productpage"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Istio's vocabulary plus the test table's `ai` and `ar`.
fn vocabulary() -> Vocabulary {
    let mut v = Vocabulary::istio();
    v.declare("ai", ValueType::Int64).ok();
    v.declare("ar", ValueType::StringMap).ok();
    v
}

/// About 20 attributes, as an Envoy filter would fill per request (strings borrowed).
fn bag<'h>(
    vocab: &Vocabulary,
    h: &'h Host,
    headers: &'h &'h [(&'h str, &'h str)],
) -> Attributes<'h> {
    let mut bag = Attributes::with_capacity(24);
    bag.set(
        wk::REQUEST_HEADERS,
        Value::StringMap(StringMapRef::Borrowed(headers)),
    );
    bag.set(
        wk::REQUEST_HOST,
        Value::str("reviews.default.svc.cluster.local:9080"),
    );
    bag.set(wk::REQUEST_METHOD, Value::str("GET"));
    bag.set(wk::REQUEST_PATH, Value::str("/reviews/0"));
    bag.set(
        wk::REQUEST_ID,
        Value::str("2f9a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
    );
    bag.set(wk::REQUEST_SIZE, Value::Int64(0));
    bag.set(wk::SOURCE_IP, Value::IpAddress(IpAddr::from([10, 0, 0, 1])));
    bag.set(
        wk::SOURCE_LABELS,
        Value::StringMap(StringMapRef::Borrowed(&h.labels)),
    );
    bag.set(wk::SOURCE_NAMESPACE, Value::str("default"));
    bag.set(
        wk::SOURCE_UID,
        Value::str("kubernetes://productpage-v1-7d4b9c6f5d-x2x4k.default"),
    );
    bag.set(
        wk::DESTINATION_IP,
        Value::IpAddress(IpAddr::from([10, 0, 0, 37])),
    );
    bag.set(wk::DESTINATION_NAMESPACE, Value::str("default"));
    bag.set(
        wk::DESTINATION_UID,
        Value::str("kubernetes://reviews-v2-5b64f47978-9qx8z.default"),
    );
    bag.set(
        wk::DESTINATION_SERVICE_HOST,
        Value::str("reviews.default.svc.cluster.local"),
    );
    bag.set(wk::DESTINATION_PORT, Value::Int64(9080));
    bag.set(
        wk::REQUEST_AUTH_PRINCIPAL,
        Value::str("cluster.local/ns/default/sa/productpage"),
    );
    bag.set(wk::CONTEXT_PROTOCOL, Value::str("http"));
    bag.set(wk::CONNECTION_MTLS, Value::Bool(true));
    bag.set(wk::RESPONSE_CODE, Value::Int64(200));
    if let Some(ai) = vocab.lookup("ai") {
        bag.set(ai, Value::Int64(2));
    }
    if let Some(ar) = vocab.lookup("ar") {
        bag.set(ar, Value::StringMap(StringMapRef::Borrowed(&h.ar)));
    }
    bag
}

fn cel_map(entries: Vec<(&str, cel::Value)>) -> cel::Value {
    let m: HashMap<String, cel::Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    cel::Value::from(m)
}

fn cel_str_map(entries: impl IntoIterator<Item = (impl ToString, impl ToString)>) -> cel::Value {
    cel_map_owned(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), cel::Value::from(v.to_string()))),
    )
}

fn cel_map_owned(entries: impl Iterator<Item = (String, cel::Value)>) -> cel::Value {
    let m: HashMap<String, cel::Value> = entries.collect();
    cel::Value::from(m)
}

/// The same request as CEL variables: dotted attribute names become nested maps.
fn cel_context(h: &Host) -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("ai", cel::Value::Int(2));
    ctx.add_variable_from_value("ar", cel_str_map(h.ar.iter()));
    ctx.add_variable_from_value(
        "request",
        cel_map(vec![
            ("headers", cel_str_map(h.headers.iter().copied())),
            ("host", "reviews.default.svc.cluster.local:9080".into()),
            ("method", "GET".into()),
            ("path", "/reviews/0".into()),
            ("id", "2f9a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b".into()),
            ("size", cel::Value::Int(0)),
            (
                "auth",
                cel_map(vec![(
                    "principal",
                    "cluster.local/ns/default/sa/productpage".into(),
                )]),
            ),
        ]),
    );
    ctx.add_variable_from_value(
        "source",
        cel_map(vec![
            ("ip", "10.0.0.1".into()),
            ("labels", cel_str_map(h.labels.iter())),
            ("namespace", "default".into()),
            (
                "uid",
                "kubernetes://productpage-v1-7d4b9c6f5d-x2x4k.default".into(),
            ),
        ]),
    );
    ctx.add_variable_from_value(
        "destination",
        cel_map(vec![
            ("ip", "10.0.0.37".into()),
            ("namespace", "default".into()),
            (
                "uid",
                "kubernetes://reviews-v2-5b64f47978-9qx8z.default".into(),
            ),
            (
                "service",
                cel_map(vec![("host", "reviews.default.svc.cluster.local".into())]),
            ),
            ("port", cel::Value::Int(9080)),
        ]),
    );
    ctx
}

/// (name, Mixer expression, CEL equivalent, expected value)
const CASES: &[(&str, &str, &str, bool)] = &[
    (
        "or_eq_map",
        r#"ai == 20 || ar["foo"] == "bar""#,
        r#"ai == 20 || ar["foo"] == "bar""#,
        true,
    ),
    (
        "default_chain_5",
        r#"source.user | source.principal | destination.principal | request.auth.principal | "unknown""#,
        r#"has(source.user) ? source.user : (has(source.principal) ? source.principal : (has(destination.principal) ? destination.principal : (has(request.auth.principal) ? request.auth.principal : "unknown")))"#,
        false,
    ),
    (
        "match_glob",
        r#"match(destination.service.host, "*.svc.cluster.local")"#,
        r#"destination.service.host.endsWith(".svc.cluster.local")"#,
        true,
    ),
    (
        "header_prefix_and_ip",
        r#"request.headers["x"].startsWith("y") && source.ip == ip("10.0.0.1")"#,
        r#"request.headers["x"].startsWith("y") && source.ip == "10.0.0.1""#,
        true,
    ),
];

fn expressions(c: &mut Criterion) {
    let vocab = vocabulary();
    let h = host();
    let headers: &[(&str, &str)] = &h.headers;
    let istio_bag = bag(&vocab, &h, &headers);
    let ctx = cel_context(&h);
    // Mixer's own ExprBench (the `ExprBench/*` cases of the shared table) evaluated
    // `ai == 20 || ar["foo"] == "bar"` against a bag holding just `ai` and `ar`; the CEL side
    // gets the same two variables.
    let mut mixer_bench_bag = Attributes::new();
    let mut mixer_bench_ctx = cel::Context::default();
    if let (Some(ai), Some(ar)) = (vocab.lookup("ai"), vocab.lookup("ar")) {
        mixer_bench_bag.set(ai, Value::Int64(2));
        mixer_bench_bag.set(ar, Value::StringMap(StringMapRef::Borrowed(&h.ar)));
    }
    mixer_bench_ctx.add_variable_from_value("ai", cel::Value::Int(2));
    mixer_bench_ctx.add_variable_from_value("ar", cel_str_map(h.ar.iter()));

    let mut group = c.benchmark_group("expr");
    for (name, ours, theirs, is_bool) in CASES {
        let (bag, ctx) = if *name == "or_eq_map" {
            (&mixer_bench_bag, &mixer_bench_ctx)
        } else {
            (&istio_bag, &ctx)
        };
        let expr = match mixer_expr::compile(ours, &vocab) {
            Ok(e) => e,
            Err(e) => panic!("{ours}: {e}"),
        };
        let program = match cel::Program::compile(theirs) {
            Ok(p) => p,
            Err(e) => panic!("{theirs}: {e}"),
        };
        // Both sides compute the same answer before they are timed.
        let mine = expr.eval(bag, &mut ()).map(|v| v.to_string());
        let cel_value = program.execute(ctx);
        let cel_text = match &cel_value {
            Ok(cel::Value::String(s)) => s.to_string(),
            Ok(cel::Value::Bool(b)) => b.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            mine.as_deref().ok(),
            Some(cel_text.as_str()),
            "{name}: results differ"
        );

        group.bench_function(format!("{name}/mixer"), |b| {
            if *is_bool {
                b.iter(|| black_box(expr.eval_bool(black_box(bag), &mut ())))
            } else {
                b.iter(|| black_box(expr.eval(black_box(bag), &mut ()).is_ok()))
            }
        });
        let mut refs = ReferencedAttributes::new();
        group.bench_function(format!("{name}/mixer+refs"), |b| {
            b.iter(|| {
                refs.clear();
                black_box(expr.eval(black_box(bag), &mut refs).is_ok())
            })
        });
        group.bench_function(format!("{name}/cel"), |b| {
            b.iter(|| black_box(program.execute(black_box(ctx)).is_ok()))
        });
    }
    group.finish();
}

criterion_group!(benches, expressions);
criterion_main!(benches);
