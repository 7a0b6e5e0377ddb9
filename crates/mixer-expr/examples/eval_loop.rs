//! Evaluates one of the `benches/expr.rs` expressions in a loop, for instruction counting:
//!
//! ```text
//! cargo build --release -p mixer-expr --example eval_loop
//! valgrind --tool=callgrind target/release/examples/eval_loop 0 100000
//! ```
//!
//! Arguments: the case (0-3, as the rows of benches/README.md "Expressions"), the iteration
//! count, and `refs` to record references. The difference of two runs' instruction totals
//! divided by the difference of their iteration counts is the cost of one evaluation.

use std::hint::black_box;
use std::net::IpAddr;

use mixer_attr::{
    Attributes, ReferencedAttributes, StringMap, StringMapRef, Value, ValueType, Vocabulary,
    well_known as wk,
};

const CASES: &[&str] = &[
    r#"ai == 20 || ar["foo"] == "bar""#,
    r#"source.user | source.principal | destination.principal | request.auth.principal | "unknown""#,
    r#"match(destination.service.host, "*.svc.cluster.local")"#,
    r#"request.headers["x"].startsWith("y") && source.ip == ip("10.0.0.1")"#,
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let n: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let with_refs = args.get(3).is_some_and(|a| a == "refs");

    let mut vocab = Vocabulary::istio();
    vocab.declare("ai", ValueType::Int64).ok();
    vocab.declare("ar", ValueType::StringMap).ok();
    let ai = vocab.lookup("ai").expect("ai");
    let ar_id = vocab.lookup("ar").expect("ar");

    let headers: Vec<(&str, &str)> = vec![
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
    ];
    let headers: &[(&str, &str)] = &headers;
    let ar: StringMap = [("foo".to_string(), "bar".to_string())]
        .into_iter()
        .collect();
    let labels: StringMap = [("app", "productpage"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    let small = Attributes::new()
        .with(ai, Value::Int64(2))
        .with(ar_id, Value::StringMap(StringMapRef::Borrowed(&ar)));
    let big = Attributes::with_capacity(24)
        .with(
            wk::REQUEST_HEADERS,
            Value::StringMap(StringMapRef::Borrowed(&headers)),
        )
        .with(
            wk::REQUEST_HOST,
            Value::str("reviews.default.svc.cluster.local:9080"),
        )
        .with(wk::REQUEST_METHOD, Value::str("GET"))
        .with(wk::REQUEST_PATH, Value::str("/reviews/0"))
        .with(
            wk::REQUEST_ID,
            Value::str("2f9a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
        )
        .with(wk::REQUEST_SIZE, Value::Int64(0))
        .with(wk::SOURCE_IP, Value::IpAddress(IpAddr::from([10, 0, 0, 1])))
        .with(
            wk::SOURCE_LABELS,
            Value::StringMap(StringMapRef::Borrowed(&labels)),
        )
        .with(wk::SOURCE_NAMESPACE, Value::str("default"))
        .with(
            wk::SOURCE_UID,
            Value::str("kubernetes://productpage-v1-7d4b9c6f5d-x2x4k.default"),
        )
        .with(
            wk::DESTINATION_IP,
            Value::IpAddress(IpAddr::from([10, 0, 0, 37])),
        )
        .with(wk::DESTINATION_NAMESPACE, Value::str("default"))
        .with(
            wk::DESTINATION_UID,
            Value::str("kubernetes://reviews-v2-5b64f47978-9qx8z.default"),
        )
        .with(
            wk::DESTINATION_SERVICE_HOST,
            Value::str("reviews.default.svc.cluster.local"),
        )
        .with(wk::DESTINATION_PORT, Value::Int64(9080))
        .with(
            wk::REQUEST_AUTH_PRINCIPAL,
            Value::str("cluster.local/ns/default/sa/productpage"),
        )
        .with(wk::CONTEXT_PROTOCOL, Value::str("http"))
        .with(wk::CONNECTION_MTLS, Value::Bool(true))
        .with(wk::RESPONSE_CODE, Value::Int64(200))
        .with(ai, Value::Int64(2))
        .with(ar_id, Value::StringMap(StringMapRef::Borrowed(&ar)));
    let bag = if case == 0 { &small } else { &big };

    let expr = mixer_expr::compile(CASES[case], &vocab).expect("compiles");
    let is_bool = expr.result_type() == ValueType::Bool;
    let mut refs = ReferencedAttributes::new();
    let mut ok = 0u64;
    for _ in 0..n {
        let r = if with_refs {
            refs.clear();
            expr.eval(black_box(bag), &mut refs).is_ok()
        } else if is_bool {
            expr.eval_bool(black_box(bag), &mut ()).is_ok()
        } else {
            expr.eval(black_box(bag), &mut ()).is_ok()
        };
        ok += u64::from(black_box(r));
    }
    println!(
        "{ok}/{n} ok: {}",
        expr.eval(bag, &mut ())
            .map(|v| v.to_string())
            .unwrap_or_default()
    );
}
