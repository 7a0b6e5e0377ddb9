//! `listchecker` through the pipeline: static lists, IP ranges, and a provider URL refreshed
//! through the PAL on virtual time (last good list kept on failure, ttl, failure policy).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::pal::HttpResponse;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{CheckStart, Code, CompileOptions, Config, Pipeline, compile};
use mixer_proto::v2;
use serde_json::json;

fn config(params: serde_json::Value, value_expr: &str, fail_open: bool) -> Config {
    Config {
        handlers: vec![v2::Handler {
            name: "list".into(),
            namespace: "istio-system".into(),
            adapter: "listchecker".into(),
            params: Some(json_to_struct(&params)),
            dispatch: Some(v2::DispatchControls {
                failure_policy: if fail_open { 1 } else { 2 },
                ..Default::default()
            }),
            ..Default::default()
        }],
        instances: vec![v2::Instance {
            name: "entry".into(),
            namespace: "istio-system".into(),
            template: "listentry".into(),
            params: Some(json_to_struct(&json!({ "value": value_expr }))),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "check".into(),
            namespace: "istio-system".into(),
            actions: vec![v2::Action {
                handler: "list".into(),
                instances: vec!["entry".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn setup(cfg: &Config) -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let snap = compile(
        cfg,
        &mixer_adapters::registry(),
        &platform,
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    let options = mixer_core::PipelineOptions {
        check_cache: mixer_core::cache::CheckCacheConfig {
            max_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    (vt, Pipeline::with_options(snap, platform, options))
}

fn version(v: &str) -> Attributes<'static> {
    let labels: StringMap = [("version".to_string(), v.to_string())]
        .into_iter()
        .collect();
    Attributes::new().with(wk::SOURCE_LABELS, Value::string_map(labels))
}

fn decide(vt: &VirtualPlatform, p: &Pipeline, bag: &Attributes<'_>) -> (Code, String) {
    match p.worker(Arc::new(vt.clone())).check(bag, |_| {}) {
        CheckStart::Done(a) => (a.status.code, a.status.message.clone()),
        CheckStart::Pending(_) => panic!("listchecker answers in process"),
    }
}

#[test]
fn static_whitelist_as_in_bookinfo() {
    let (vt, p) = setup(&config(
        json!({"overrides": ["v1", "v2"], "blacklist": false}),
        "source.labels[\"version\"]",
        false,
    ));
    assert_eq!(decide(&vt, &p, &version("v1")).0, Code::OK);
    assert_eq!(
        decide(&vt, &p, &version("v3")),
        (Code::NOT_FOUND, "v3 is not whitelisted".to_string())
    );
}

#[test]
fn static_ip_blacklist_with_cidr() {
    let (vt, p) = setup(&config(
        json!({"overrides": ["10.57.0.0/16"], "blacklist": true, "entryType": "IP_ADDRESSES"}),
        "source.ip | ip(\"0.0.0.0\")",
        false,
    ));
    let from =
        |ip: &str| Attributes::new().with(wk::SOURCE_IP, Value::IpAddress(ip.parse().unwrap()));
    assert_eq!(
        decide(&vt, &p, &from("10.57.1.2")),
        (
            Code::PERMISSION_DENIED,
            "10.57.1.2 is blacklisted".to_string()
        )
    );
    assert_eq!(decide(&vt, &p, &from("10.1.1.1")).0, Code::OK);
    assert_eq!(
        decide(&vt, &p, &Attributes::new()).0,
        Code::OK,
        "0.0.0.0 default is not listed"
    );
}

fn ok_body(body: &'static str) -> Result<HttpResponse, mixer_core::pal::CalloutError> {
    Ok(HttpResponse {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(body.as_bytes()),
    })
}

#[test]
fn provider_refresh_keeps_last_good_list_until_ttl() {
    let params = json!({
        "providerUrl": "http://lists.local:8080/versions",
        "refreshInterval": "10s",
        "ttl": "30s",
        "overrides": ["v0"],
    });
    let (vt, p) = setup(&config(params, "source.labels[\"version\"]", false));
    // Before the first answer the list is unavailable: fail-close denies.
    assert_eq!(decide(&vt, &p, &version("v1")).0, Code::UNAVAILABLE);
    let calls = vt.http_requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].1.authority.as_str(), calls[0].1.path.as_str()),
        ("lists.local:8080", "/versions")
    );
    vt.respond_http(calls[0].0, ok_body("entries:\n- v1\n- v2\n"));
    assert_eq!(decide(&vt, &p, &version("v1")).0, Code::OK);
    assert_eq!(
        decide(&vt, &p, &version("v0")).0,
        Code::OK,
        "overrides are merged in"
    );
    assert_eq!(decide(&vt, &p, &version("v3")).0, Code::NOT_FOUND);

    // Next refresh brings v3.
    vt.advance(Duration::from_secs(10));
    let calls = vt.http_requests();
    assert_eq!(calls.len(), 1, "one refresh per interval");
    vt.respond_http(calls[0].0, ok_body("v3\n"));
    assert_eq!(decide(&vt, &p, &version("v3")).0, Code::OK);
    assert_eq!(decide(&vt, &p, &version("v1")).0, Code::NOT_FOUND);

    // Refreshes fail from now on: the last good list stays in force within the ttl.
    for _ in 0..2 {
        vt.advance(Duration::from_secs(10));
        let calls = vt.http_requests();
        vt.respond_http(
            calls[0].0,
            Ok(HttpResponse {
                status: 503,
                headers: vec![],
                body: Bytes::new(),
            }),
        );
        assert_eq!(decide(&vt, &p, &version("v3")).0, Code::OK);
    }
    vt.advance(Duration::from_secs(10));
    let calls = vt.http_requests();
    vt.respond_http(
        calls[0].0,
        Err(mixer_core::pal::CalloutError::Connection("refused".into())),
    );
    assert_eq!(
        decide(&vt, &p, &version("v3")).0,
        Code::OK,
        "30s old: still within ttl"
    );
    vt.advance(Duration::from_secs(1));
    assert_eq!(
        decide(&vt, &p, &version("v3")).0,
        Code::UNAVAILABLE,
        "past the ttl"
    );
}

#[test]
fn unavailable_list_follows_fail_open() {
    let params = json!({"providerUrl": "http://lists.local/l"});
    let (vt, p) = setup(&config(params, "source.labels[\"version\"]", true));
    assert_eq!(
        decide(&vt, &p, &version("v1")).0,
        Code::OK,
        "fail-open while the list is unavailable"
    );
    assert_eq!(
        p.stats()
            .handler_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn bad_params_are_rejected() {
    let vt = VirtualPlatform::new();
    for (params, field) in [
        (json!({"entryType": "NUMBERS"}), "params.entryType"),
        (
            json!({"entryType": "IP_ADDRESSES", "overrides": ["1.2.3"]}),
            "params.overrides",
        ),
        (
            json!({"entryType": "REGEX", "overrides": ["("]}),
            "params.overrides",
        ),
        (json!({"providerUrl": "ftp://x"}), "params.providerUrl"),
        (json!({"ttl": "forever"}), "params.ttl"),
    ] {
        let err = compile(
            &config(params, "\"x\"", false),
            &mixer_adapters::registry(),
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, field, "{err}");
    }
}
