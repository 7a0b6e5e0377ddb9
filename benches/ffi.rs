//! What the C++ bridge adds to a check: the bridge's Rust-side entry point called the way the
//! C++ filter calls it (a `RequestInfo` of borrowed header and connection byte slices, mapped
//! onto Istio attributes inside, the decision flattened into a `CheckResult`, all inside
//! `catch_unwind`) against `Worker::check` on the same request built natively in Rust.
//! Both answer from the check cache (the request matches no rule with a backend).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::{Attributes, StringMapRef, Value, well_known as wk};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{Clock, Platform};
use mixer_core::{CheckStart, CompileOptions, Pipeline};
use mixer_ffi::cxx::UniquePtr;
use mixer_ffi::ffi;

const CONFIG: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyadmin, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: admin is off limits}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: denyadmin, namespace: istio-system}
spec:
  match: request.path == "/admin" && source.principal != ""
  actions:
  - {handler: denyadmin, instances: [nothing]}
"#;

const HEADERS: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/productpage"),
    (":authority", "productpage:9080"),
    (":scheme", "http"),
    ("user-agent", "curl/8.5"),
    ("x-request-id", "4b1c8a5e-7d2f-4c3a-9e1b-6f0d2a8c9b7e"),
    ("accept", "*/*"),
];

fn ffi_check(c: &mut Criterion) {
    let vt = VirtualPlatform::new();
    let platform = Platform::on(Arc::new(vt.clone()), Arc::new(vt.clone()));
    let registry = mixer_ffi::registry();
    let loaded = mixer_config::load_str("bench", CONFIG).unwrap();
    let snapshot = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let pipeline = Pipeline::new(snapshot, platform);
    let worker = pipeline.worker(Arc::new(vt.clone()));
    let ffi_worker = mixer_ffi::Worker::from_core(pipeline.worker(Arc::new(vt.clone())));

    let mut g = c.benchmark_group("ffi");
    // A Rust host: the same attributes fill_request sets, from its own parsed values.
    let source_ip: IpAddr = "10.0.0.7".parse().unwrap();
    let destination_ip: IpAddr = "10.0.0.9".parse().unwrap();
    g.bench_function("rust_worker_check", |b| {
        b.iter(|| {
            let headers: &[(&str, &str)] = black_box(HEADERS);
            let mut bag = Attributes::with_capacity(16);
            bag.set(
                wk::REQUEST_HEADERS,
                Value::StringMap(StringMapRef::Borrowed(&headers)),
            );
            bag.set(wk::REQUEST_PATH, Value::str(headers[1].1));
            bag.set(wk::REQUEST_URL_PATH, Value::str(headers[1].1));
            bag.set(wk::REQUEST_METHOD, Value::str(headers[0].1));
            bag.set(wk::REQUEST_HOST, Value::str(headers[2].1));
            bag.set(wk::REQUEST_SCHEME, Value::str(headers[3].1));
            bag.set(wk::REQUEST_USERAGENT, Value::str(headers[4].1));
            bag.set(wk::REQUEST_ID, Value::str(headers[5].1));
            bag.set(wk::CONTEXT_PROTOCOL, Value::str("http"));
            bag.set(wk::REQUEST_TIME, Value::Timestamp(vt.wall()));
            bag.set(wk::SOURCE_IP, Value::IpAddress(source_ip));
            bag.set(wk::SOURCE_PORT, Value::Int64(43210));
            bag.set(wk::DESTINATION_IP, Value::IpAddress(destination_ip));
            bag.set(wk::DESTINATION_PORT, Value::Int64(9080));
            bag.set(
                wk::SOURCE_PRINCIPAL,
                Value::str("spiffe://cluster.local/ns/default/sa/client"),
            );
            bag.set(
                wk::SOURCE_USER,
                Value::str("spiffe://cluster.local/ns/default/sa/client"),
            );
            bag.set(
                wk::DESTINATION_PRINCIPAL,
                Value::str("spiffe://cluster.local/ns/default/sa/server"),
            );
            bag.set(wk::CONNECTION_MTLS, Value::Bool(true));
            match worker.check(&bag, |_| {}) {
                CheckStart::Done(a) => black_box(a.is_allowed()),
                CheckStart::Pending(_) => unreachable!(),
            }
        })
    });
    // The C++ filter's call: headers and connection facts as byte slices.
    let views: Vec<ffi::HeaderView<'_>> = HEADERS
        .iter()
        .map(|(n, v)| ffi::HeaderView {
            name: n.as_bytes(),
            value: v.as_bytes(),
        })
        .collect();
    let info = ffi::RequestInfo {
        headers: &views,
        source_ip: &[10, 0, 0, 7],
        source_port: 43210,
        destination_ip: &[10, 0, 0, 9],
        destination_port: 9080,
        source_principal: b"spiffe://cluster.local/ns/default/sa/client",
        destination_principal: b"spiffe://cluster.local/ns/default/sa/server",
        requested_server_name: b"",
        mtls: true,
        attributes: &[],
    };
    g.bench_function("bridge_check", |b| {
        b.iter(|| {
            let s = mixer_ffi::api::check(&ffi_worker, black_box(&info), UniquePtr::null());
            assert!(s.state == ffi::CheckState::Done);
            black_box(s.result.allowed)
        })
    });
    g.finish();
}

criterion_group!(benches, ffi_check);
criterion_main!(benches);
