//! A check through the `denier` and a report through `stdio`, end to end through the pipeline,
//! with config in the shape of Istio's Bookinfo samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mixer_adapters::stdio::{MemorySink, StdioAdapter};
use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::config_builder::{handler, instance, rule};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{CheckStart, Code, CompileOptions, Config, Pipeline, compile};
use serde_json::json;

fn bookinfo() -> Config {
    Config {
        handlers: vec![
            handler(
                "denyreviewsv3handler",
                "denier",
                json!({"status": {"code": 7, "message": "Not allowed"}}),
            ),
            handler("stdio", "stdio", json!({"outputAsJson": true})),
        ],
        instances: vec![
            instance("denyreviewsv3request", "checknothing", json!({})),
            instance(
                "accesslog",
                "logentry",
                json!({
                    "severity": "\"Info\"",
                    "timestamp": "request.time",
                    "variables": {
                        "destinationApp": "destination.labels[\"app\"] | \"\"",
                        "responseCode": "response.code | 0",
                        "sourceName": "source.name | \"unknown\"",
                    }
                }),
            ),
        ],
        rules: vec![
            rule(
                "denyreviewsv3",
                "destination.labels[\"app\"] == \"reviews\" && source.labels[\"version\"] == \"v3\"",
                "denyreviewsv3handler",
                &["denyreviewsv3request"],
            ),
            rule(
                "stdio",
                "context.protocol == \"http\" || context.protocol == \"grpc\"",
                "stdio",
                &["accesslog"],
            ),
        ],
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Value<'static> {
    Value::string_map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<StringMap>(),
    )
}

#[test]
fn denier_denies_matching_requests_and_stdio_logs_every_request() {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let sink = Arc::new(MemorySink::default());
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(StdioAdapter::with_sink(sink.clone())));
    let snapshot = compile(
        &bookinfo(),
        &registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    let pipeline = Pipeline::new(snapshot, platform);
    let worker = pipeline.worker(Arc::new(vt.clone()));

    let from_v3 = Attributes::new()
        .with(wk::DESTINATION_LABELS, labels(&[("app", "reviews")]))
        .with(wk::SOURCE_LABELS, labels(&[("version", "v3")]))
        .with(wk::SOURCE_NAME, Value::str("productpage-v1"))
        .with(wk::CONTEXT_PROTOCOL, Value::str("http"))
        .with(
            wk::REQUEST_TIME,
            Value::Timestamp(mixer_attr::Timestamp::parse_rfc3339("2020-01-01T00:00:01Z").unwrap()),
        )
        .with(wk::RESPONSE_CODE, Value::Int64(403));
    let CheckStart::Done(d) = worker.check(&from_v3, |_| {}) else {
        panic!("denier answers inline")
    };
    assert_eq!(d.status.code, Code::PERMISSION_DENIED);
    assert_eq!(d.status.message, "Not allowed");
    assert_eq!(
        (d.valid_duration, d.valid_use_count),
        (mixer_attr::Duration::from_secs(5), 1000)
    );

    assert_eq!(d.direct_response, None);

    let mut from_v2 = from_v3.clone();
    from_v2.set(wk::SOURCE_LABELS, labels(&[("version", "v2")]));
    let CheckStart::Done(d) = worker.check(&from_v2, |_| {}) else {
        panic!("inline")
    };
    assert!(d.is_allowed());

    worker.report(&from_v3);
    worker.report(&from_v2.with(wk::RESPONSE_CODE, Value::Int64(200)));
    assert!(sink.lines().is_empty(), "buffered until flush");
    pipeline.flush();
    let lines: Vec<serde_json::Value> = sink
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        json!({"level": "info", "time": "2020-01-01T00:00:01Z", "instance": "accesslog.instance.istio-system",
               "destinationApp": "reviews", "responseCode": 403, "sourceName": "productpage-v1"})
    );
    assert_eq!(lines[1]["responseCode"], json!(200));
}

#[test]
fn bad_adapter_params_are_config_errors() {
    let platform = VirtualPlatform::new().platform();
    let registry = mixer_adapters::registry();
    for (params, field) in [
        (json!({"status": {"code": 99}}), "params.status.code"),
        (json!({"validDuration": "soon"}), "params.validDuration"),
        (json!({"bogus": 1}), "params"),
        (
            json!({"directResponse": {"code": 42}}),
            "params.directResponse.code",
        ),
    ] {
        let mut cfg = bookinfo();
        cfg.handlers[0] = handler("denyreviewsv3handler", "denier", params);
        let err =
            compile(&cfg, &registry, &platform, None, &CompileOptions::default()).unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.object, "handler/istio-system/denyreviewsv3handler");
        assert_eq!(e.field, field, "{e}");
    }
    let mut cfg = bookinfo();
    cfg.handlers[1] = handler("stdio", "stdio", json!({"outputStream": "FILE"}));
    let err = compile(&cfg, &registry, &platform, None, &CompileOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("outputStream FILE needs an outputPath"),
        "{err}"
    );
}
