//! What the C++ bridge adds to a check: the bridge's Rust-side entry point called the way the
//! C++ filter calls it (a `RequestInfo` of borrowed header and connection byte slices, mapped
//! onto Istio attributes inside, the decision flattened into a `CheckResult`, all inside
//! `catch_unwind`) against `Worker::check` on the same request as a Rust proxy holds it (`&str`
//! headers, parsed addresses), mapped by the same shared mapping
//! (`mixer_attr::ingest::request_attributes`). The difference is what the bridge adds: byte
//! slices instead of `&str` (UTF-8 checked when read), raw address octets, the panic boundary
//! and the decision flattened for C++. Both answer from the check cache (the request matches no
//! rule with a backend).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::ingest::{self, Connection, Text};
use mixer_core::pal::Platform;
use mixer_core::pal::virtual_time::VirtualPlatform;
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
    // A Rust proxy: its header list (`&str` pairs) and parsed connection facts through the same
    // mapping the bridge uses (`mixer_attr::ingest::request_attributes`), the time from the
    // pipeline's clock as the bridge reads it.
    let connection = Connection {
        source_ip: "10.0.0.7".parse().ok(),
        source_port: Some(43210),
        destination_ip: "10.0.0.9".parse().ok(),
        destination_port: Some(9080),
        source_principal: Some(Text::Str("spiffe://cluster.local/ns/default/sa/client")),
        destination_principal: Some(Text::Str("spiffe://cluster.local/ns/default/sa/server")),
        requested_server_name: None,
        mtls: true,
    };
    g.bench_function("rust_worker_check", |b| {
        b.iter(|| {
            let headers: &[(&str, &str)] = black_box(HEADERS);
            let now = worker.pipeline().platform().clock.wall();
            let bag = ingest::request_attributes(&headers, black_box(&connection), now);
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
