//! The `knative` handler through the YAML front-end: bad params are config errors naming the
//! field; the default instances compile against the Istio vocabulary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NoBackground, config_yaml};
use mixer_core::pal::virtual_time::VirtualPlatform;
use serde_json::json;
use std::sync::Arc;

fn errors(params: serde_json::Value) -> Vec<String> {
    let mut platform = VirtualPlatform::new().platform();
    platform.background = Arc::new(NoBackground);
    let loaded = mixer_config::load_str("k.yaml", &config_yaml(&params, "5s")).unwrap();
    let mut registry = mixer_core::AdapterRegistry::new();
    mixer_knative::register(&mut registry);
    match mixer_config::compile_loaded(&loaded, &registry, &platform, None, &Default::default()) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn bad_params_are_config_errors_naming_the_field() {
    assert!(errors(json!({"autoscalerUrl": "ws://127.0.0.1:9/"})).is_empty());
    for (params, field) in [
        (json!({}), "params.autoscalerUrl"),
        (
            json!({"autoscalerUrl": "wss://autoscaler:8080/"}),
            "params.autoscalerUrl",
        ),
        (
            json!({"autoscalerUrl": "ws://127.0.0.1:9/", "reportInterval": "-1s"}),
            "params.reportInterval",
        ),
        (
            json!({"autoscalerUrl": "ws://127.0.0.1:9/", "hold": {"timeout": "soon"}}),
            "params.hold.timeout",
        ),
        (
            json!({"autoscalerUrl": "ws://127.0.0.1:9/", "maxRevisions": 0}),
            "params.maxRevisions",
        ),
        (
            json!({"autoscalerUrl": "ws://127.0.0.1:9/", "reconnectBackoff": {"min": "2s", "max": "1s"}}),
            "params.reconnectBackoff.max",
        ),
    ] {
        let e = errors(params.clone());
        assert_eq!(e.len(), 1, "{params}: {e:?}");
        assert!(e[0].contains(field), "{params}: {}", e[0]);
    }
}

#[test]
fn host_fallback_parsing() {
    use mixer_knative::revision_from_host as parse;
    assert_eq!(
        parse("hello-00001.default.svc.cluster.local"),
        Some(("default", "hello-00001"))
    );
    assert_eq!(
        parse("hello-00001.default.svc:8080"),
        Some(("default", "hello-00001"))
    );
    assert_eq!(parse("hello.default.example.com"), None);
    assert_eq!(parse(".default.svc.cluster.local"), None);
    assert_eq!(parse(""), None);
    assert_eq!(parse(&format!("{}.ns.svc", "x".repeat(300))), None);
    assert_eq!(parse("rev.ns.svc"), Some(("ns", "rev")));
    assert_eq!(parse("rev.ns.svc.cluster.local:80"), Some(("ns", "rev")));
    for not_svc in [
        "rev.ns",
        "rev.ns.svcx",
        "rev.ns.svc:",
        "rev.ns.svc:http",
        "rev.ns.svc:80:90",
        "rev..svc",
        "rev.ns.cluster.svc",
    ] {
        assert_eq!(parse(not_svc), None, "{not_svc}");
    }
}
