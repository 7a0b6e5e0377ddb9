//! `rbac` through the pipeline with the `authorization` template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{CheckStart, Code, CompileOptions, Config, Pipeline, compile};
use mixer_proto::v2;
use serde_json::json;
use std::sync::Arc;

fn config(params: serde_json::Value) -> Config {
    Config {
        handlers: vec![v2::Handler {
            name: "rbac".into(),
            namespace: "istio-system".into(),
            adapter: "rbac".into(),
            params: Some(json_to_struct(&params)),
            ..Default::default()
        }],
        instances: vec![v2::Instance {
            name: "authz".into(),
            namespace: "istio-system".into(),
            template: "authorization".into(),
            params: Some(json_to_struct(&json!({
                "subject": {
                    "user": "source.principal | \"\"",
                    "groups": "request.auth.claims[\"groups\"] | \"\"",
                    "properties": {"namespace": "source.namespace | \"\""}
                },
                "action": {
                    "namespace": "destination.namespace | \"default\"",
                    "service": "destination.service.host | \"\"",
                    "method": "request.method | \"\"",
                    "path": "request.path | \"\"",
                    "properties": {"version": "destination.labels[\"version\"] | \"\""}
                }
            }))),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "authz".into(),
            namespace: "istio-system".into(),
            actions: vec![v2::Action {
                handler: "rbac".into(),
                instances: vec!["authz".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn policy() -> serde_json::Value {
    json!({
        "roles": [
            {"name": "reader", "namespace": "default", "rules": [
                {"services": ["reviews.*"], "methods": ["GET"], "paths": ["/reviews/*"],
                 "constraints": [{"key": "version", "values": ["v1", "v2"]}]}
            ]},
            {"name": "admin", "rules": [{"services": ["*"]}]}
        ],
        "bindings": [
            {"role": "reader", "subjects": [
                {"user": "cluster.local/ns/default/sa/productpage"},
                {"properties": {"namespace": "frontend"}}
            ]},
            {"role": "admin", "subjects": [{"group": "admins"}]}
        ]
    })
}

struct Req {
    principal: &'static str,
    namespace: &'static str,
    groups: &'static str,
    host: &'static str,
    method: &'static str,
    path: &'static str,
    version: &'static str,
}

const BASE: Req = Req {
    principal: "cluster.local/ns/default/sa/productpage",
    namespace: "default",
    groups: "",
    host: "reviews.default.svc.cluster.local",
    method: "GET",
    path: "/reviews/1",
    version: "v1",
};

fn map(k: &str, v: &str) -> Value<'static> {
    Value::string_map(
        [(k.to_string(), v.to_string())]
            .into_iter()
            .collect::<StringMap>(),
    )
}

fn decide(p: &Pipeline, vt: &VirtualPlatform, r: &Req) -> Code {
    let bag = Attributes::new()
        .with(wk::SOURCE_PRINCIPAL, Value::str(r.principal))
        .with(wk::SOURCE_NAMESPACE, Value::str(r.namespace))
        .with(wk::REQUEST_AUTH_CLAIMS, map("groups", r.groups))
        .with(wk::DESTINATION_SERVICE_HOST, Value::str(r.host))
        .with(wk::DESTINATION_NAMESPACE, Value::str("default"))
        .with(wk::REQUEST_METHOD, Value::str(r.method))
        .with(wk::REQUEST_PATH, Value::str(r.path))
        .with(wk::DESTINATION_LABELS, map("version", r.version));
    match p.worker(Arc::new(vt.clone())).check(&bag, |_| {}) {
        CheckStart::Done(a) => a.status.code,
        CheckStart::Pending(_) => panic!("rbac answers in process"),
    }
}

#[test]
fn roles_and_bindings() {
    let vt = VirtualPlatform::new();
    let snap = compile(
        &config(policy()),
        &mixer_adapters::registry(),
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let p = Pipeline::new(snap, vt.platform());
    assert_eq!(decide(&p, &vt, &BASE), Code::OK);
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                method: "POST",
                ..BASE
            }
        ),
        Code::PERMISSION_DENIED,
        "method"
    );
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                path: "/ratings/1",
                ..BASE
            }
        ),
        Code::PERMISSION_DENIED,
        "path"
    );
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                version: "v3",
                ..BASE
            }
        ),
        Code::PERMISSION_DENIED,
        "constraint"
    );
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                host: "ratings.default",
                ..BASE
            }
        ),
        Code::PERMISSION_DENIED,
        "service"
    );
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                principal: "someone",
                ..BASE
            }
        ),
        Code::PERMISSION_DENIED,
        "subject"
    );
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                principal: "someone",
                namespace: "frontend",
                ..BASE
            }
        ),
        Code::OK,
        "subject property"
    );
    assert_eq!(
        decide(
            &p,
            &vt,
            &Req {
                principal: "x",
                groups: "dev, admins",
                method: "DELETE",
                ..BASE
            }
        ),
        Code::OK,
        "group"
    );
}

#[test]
fn bad_policies_are_rejected() {
    let vt = VirtualPlatform::new();
    for (params, field) in [
        (
            json!({"roles": [], "bindings": [{"role": "ghost", "subjects": [{"user": "u"}]}]}),
            "params.bindings[0].role",
        ),
        (
            json!({"roles": [{"name": "r"}], "bindings": [{"role": "r", "subjects": []}]}),
            "params.bindings[0].subjects",
        ),
        (
            json!({"roles": [{"name": "r"}, {"name": "r"}]}),
            "params.roles[1].name",
        ),
        (json!({"roles": [{"name": "r", "rulez": []}]}), "params"),
    ] {
        let err = compile(
            &config(params),
            &mixer_adapters::registry(),
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, field, "{err}");
    }
}
