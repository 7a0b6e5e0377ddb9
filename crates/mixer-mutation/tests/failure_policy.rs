//! A mutation handler's failure policy: a fail-open handler that refuses a message (or whose
//! instance cannot be evaluated) is left out, without partial changes, and counted; a
//! fail-close one stops the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::bag;
use mixer_core::adapter::HeaderChange::Set;
use mixer_core::mutation::Direction;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{AdapterRegistry, CompileOptions, Pipeline, Worker, compile};
use mixer_proto::v2;
use serde_json::json;

/// Handler `json` edits the JSON body (and sets a header first); handler `tag` sets a header.
/// `json` has `json_policy`; its instance reads `user_expr`.
fn pipeline(json_fail_open: bool, user_expr: &str) -> (Pipeline, Worker) {
    let handler = |name: &str, params: serde_json::Value, fail_open: bool| v2::Handler {
        name: name.into(),
        namespace: "istio-system".into(),
        adapter: "rewrite".into(),
        params: Some(json_to_struct(&params)),
        dispatch: Some(v2::DispatchControls {
            failure_policy: if fail_open { 1 } else { 2 },
            ..Default::default()
        }),
        ..Default::default()
    };
    let instance = |name: &str, variables: serde_json::Value| v2::Instance {
        name: name.into(),
        namespace: "istio-system".into(),
        template: "mutation".into(),
        params: Some(json_to_struct(&json!({ "variables": variables }))),
        ..Default::default()
    };
    let rule = |name: &str, handler: &str, instance: &str| v2::Rule {
        name: name.into(),
        namespace: "istio-system".into(),
        actions: vec![v2::Action {
            handler: handler.into(),
            instances: vec![instance.into()],
            name: String::new(),
        }],
        ..Default::default()
    };
    let cfg = v2::Config {
        handlers: vec![
            handler(
                "json",
                json!({"max_body_bytes": 4096, "request": {
                    "headers": [{"set": "x-edited", "value": "yes"}],
                    "json": [{"set": "/user", "var": "user"}]}}),
                json_fail_open,
            ),
            handler(
                "tag",
                json!({"request": {"headers": [{"set": "x-tag", "value": "t"}]}}),
                false,
            ),
        ],
        instances: vec![
            instance("edit", json!({ "user": user_expr })),
            instance("tagged", json!({})),
        ],
        rules: vec![rule("edit", "json", "edit"), rule("tag", "tag", "tagged")],
        ..Default::default()
    };
    let vt = VirtualPlatform::new();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(mixer_mutation::Rewrite));
    let snapshot = compile(
        &cfg,
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    let p = Pipeline::new(snapshot, vt.platform());
    let w = p.worker(Arc::new(vt));
    (p, w)
}

const USER: &str = r#"request.headers["x-user"] | "anon""#;

#[test]
fn fail_open_handler_refusing_a_body_is_left_out_whole() {
    let (p, w) = pipeline(true, USER);
    // Not JSON: the `json` handler refuses; its header change goes too, the other stays.
    let m = w
        .mutate_message(&bag(&[]), Direction::Request, b"<not json>")
        .unwrap();
    assert_eq!(m.header_changes, vec![Set("x-tag".into(), "t".into())]);
    // The stream held the body: it comes back as it came.
    assert_eq!(m.body.as_deref(), Some(&b"<not json>"[..]));
    assert_eq!(p.stats().handler_failures.load(Ordering::Relaxed), 1);
    // A JSON body: both apply.
    let m = w
        .mutate_message(&bag(&[("x-user", "al")]), Direction::Request, b"{}")
        .unwrap();
    assert_eq!(m.body.as_deref(), Some(&br#"{"user":"al"}"#[..]));
    assert!(
        m.header_changes
            .contains(&Set("x-edited".into(), "yes".into()))
    );
    assert!(m.header_changes.contains(&Set("x-tag".into(), "t".into())));
}

#[test]
fn fail_close_handler_refusing_a_body_stops_the_message() {
    let (p, w) = pipeline(false, USER);
    let err = w
        .mutate_message(&bag(&[]), Direction::Request, b"<not json>")
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert_eq!(p.stats().handler_failures.load(Ordering::Relaxed), 1);
}

#[test]
fn instance_errors_follow_the_policy() {
    // An absent attribute without a default fails to evaluate.
    let strict = "source.principal";
    let (p, w) = pipeline(true, strict);
    let m = w
        .mutate_message(&bag(&[]), Direction::Request, b"{}")
        .unwrap();
    assert_eq!(m.header_changes, vec![Set("x-tag".into(), "t".into())]);
    assert_eq!(m.body.as_deref(), Some(&b"{}"[..]));
    assert_eq!(p.stats().instance_errors.load(Ordering::Relaxed), 1);

    let (_, w) = pipeline(false, strict);
    let err = w
        .mutate_message(&bag(&[]), Direction::Request, b"{}")
        .unwrap_err();
    assert_eq!(err.http_status(), 500);
}
