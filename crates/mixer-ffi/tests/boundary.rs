//! The bridge's Rust-side entry points, called from Rust the way C++ calls them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mixer_core::pal::Platform;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{CompileOptions, Pipeline};
use mixer_ffi::cxx::UniquePtr;
use mixer_ffi::{api, ffi};

#[test]
fn a_panic_comes_back_as_an_internal_status() {
    let s = api::debug_panic_for_tests(b"boom on purpose");
    assert_eq!(s.code, 13);
    assert!(s.message.contains("boom on purpose"), "{}", s.message);
    // And the library still works afterwards.
    assert_eq!(api::debug_panic_for_tests(b"again").code, 13);
}

const CONFIG: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: no admin from 10.0.0.0/8}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny, namespace: istio-system}
spec:
  match: request.path == "/admin" && source.ip == ip("10.0.0.7") && request.headers["x-env"] == "prod" && source.principal == "spiffe://a"
  actions:
  - {handler: deny, instances: [nothing]}
"#;

/// `CONFIG` compiled against the library's registry, on virtual time.
fn pipeline() -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let platform = Platform::on(Arc::new(vt.clone()), Arc::new(vt.clone()));
    let loaded = mixer_config::load_str("t", CONFIG).unwrap();
    let snapshot = mixer_config::compile_loaded(
        &loaded,
        &mixer_ffi::registry(),
        &platform,
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    (vt, Pipeline::new(snapshot, platform))
}

#[test]
fn requests_map_onto_istio_attributes() {
    let (vt, pipeline) = pipeline();
    let worker = mixer_ffi::Worker::from_core(pipeline.worker(Arc::new(vt.clone())));
    let check = |path: &str, ip: &[u8]| {
        let headers = [
            ffi::HeaderView {
                name: b":path",
                value: path.as_bytes(),
            },
            ffi::HeaderView {
                name: b":method",
                value: b"GET",
            },
            ffi::HeaderView {
                name: b"x-env",
                value: b"prod",
            },
            ffi::HeaderView {
                name: b"x-bad",
                value: &[0xff, 0xfe],
            },
        ];
        let info = ffi::RequestInfo {
            headers: &headers,
            source_ip: ip,
            source_port: 1234,
            destination_ip: b"",
            destination_port: 0,
            source_principal: b"spiffe://a",
            destination_principal: b"",
            requested_server_name: b"",
            mtls: true,
            attributes: &[],
        };
        let s = api::check(&worker, &info, UniquePtr::null());
        assert!(s.state == ffi::CheckState::Done, "{:?}", s.state);
        s.result
    };
    let denied = check("/admin", b"10.0.0.7");
    assert!(!denied.allowed);
    assert_eq!(
        (denied.http_code, denied.body.as_str()),
        (403, "no admin from 10.0.0.0/8")
    );
    assert!(!check("/admin", &[10, 0, 0, 7]).allowed, "raw octets");
    assert!(check("/admin", b"10.0.0.8").allowed);
    assert!(check("/other", b"10.0.0.7").allowed);
    assert_eq!(api::pending_checks(&worker), 0);
}

/// The bridge maps a request exactly as a Rust proxy does with the shared mapping
/// (`mixer_attr::ingest`), from byte slices and raw octets instead of `&str` and parsed
/// addresses; bytes that are not UTF-8 read as absent; extra attributes are kept by name.
#[test]
fn the_bridge_maps_like_a_rust_proxy() {
    use mixer_attr::ingest::{self, Connection, Text};
    use mixer_attr::{Attributes, Bag, Value, well_known as wk};
    use mixer_core::pal::Clock;

    let (vt, pipeline) = pipeline();
    let pairs: &[(&str, &str)] = &[
        (":method", "GET"),
        (":path", "/reviews/1?x=1"),
        (":authority", "reviews:9080"),
        ("user-agent", "curl"),
        ("x-request-id", "abc"),
        ("content-type", "application/grpc"),
    ];
    let views: Vec<ffi::HeaderView<'_>> = pairs
        .iter()
        .map(|(n, v)| ffi::HeaderView {
            name: n.as_bytes(),
            value: v.as_bytes(),
        })
        .collect();
    let extras = [
        ffi::HeaderView {
            name: b"destination.service.host",
            value: b"reviews.default.svc.cluster.local",
        },
        ffi::HeaderView {
            name: b"no.such.attribute",
            value: b"x",
        },
        ffi::HeaderView {
            name: b"response.code",
            value: b"200",
        },
    ];
    let mut info = ffi::RequestInfo {
        headers: &views,
        source_ip: &[10, 0, 0, 7],
        source_port: 43210,
        destination_ip: b"10.0.0.9",
        destination_port: 9080,
        source_principal: b"spiffe://a",
        destination_principal: b"",
        requested_server_name: b"reviews",
        mtls: true,
        attributes: &[],
    };
    let connection = Connection {
        source_ip: "10.0.0.7".parse().ok(),
        source_port: Some(43210),
        destination_ip: "10.0.0.9".parse().ok(),
        destination_port: Some(9080),
        source_principal: Some(Text::Str("spiffe://a")),
        destination_principal: None,
        requested_server_name: Some(Text::Str("reviews")),
        mtls: true,
    };
    assert_eq!(api::connection(&info), {
        let mut bytes = connection;
        bytes.source_principal = Some(Text::Bytes(b"spiffe://a"));
        bytes.requested_server_name = Some(Text::Bytes(b"reviews"));
        bytes
    });
    let rust = ingest::request_attributes(&pairs, &connection, vt.wall());
    let headers = api::HeaderMap(&views);
    let bridge = api::request_attributes(&info, &headers, &pipeline);
    let (rust, bridge) = (Attributes::copy_of(&rust), Attributes::copy_of(&bridge));
    assert_eq!(rust.len(), 17, "{rust:?}");
    assert_eq!(bridge, rust);
    assert_eq!(bridge.get(wk::CONTEXT_PROTOCOL), Some(Value::str("grpc")));
    assert_eq!(
        bridge.get(wk::REQUEST_URL_PATH),
        Some(Value::str("/reviews/1"))
    );

    // Extra attributes: string attributes the config knows; unknown and non-string ones skipped.
    info.attributes = &extras;
    let with_extras = api::request_attributes(&info, &headers, &pipeline);
    let host = pipeline
        .snapshot()
        .vocabulary
        .lookup("destination.service.host")
        .unwrap();
    assert_eq!(
        with_extras.get(host),
        Some(Value::str("reviews.default.svc.cluster.local"))
    );
    assert_eq!(with_extras.get(wk::RESPONSE_CODE), None);
    assert_eq!(Attributes::copy_of(&with_extras).len(), 18);

    // A value that is not UTF-8 reads as absent; the rest of the request is unaffected.
    let bad = [
        ffi::HeaderView {
            name: b":path",
            value: &[b'/', 0xff],
        },
        ffi::HeaderView {
            name: b":method",
            value: b"GET",
        },
    ];
    info.headers = &bad;
    info.attributes = &[];
    let bad_headers = api::HeaderMap(&bad);
    let mapped = api::request_attributes(&info, &bad_headers, &pipeline);
    assert_eq!(mapped.get(wk::REQUEST_PATH), None);
    assert_eq!(mapped.get(wk::REQUEST_URL_PATH), None);
    assert_eq!(mapped.get(wk::REQUEST_METHOD), Some(Value::str("GET")));
}
