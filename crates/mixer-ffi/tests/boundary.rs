//! The bridge's Rust-side entry points, called from Rust the way C++ calls them.

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

#[test]
fn requests_map_onto_istio_attributes() {
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
    let pipeline = Pipeline::new(snapshot, platform);
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
