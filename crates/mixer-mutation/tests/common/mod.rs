//! Shared setup: a pipeline whose one rule sends a `mutation` instance to a `rewrite` handler.
#![allow(dead_code)]

use std::sync::Arc;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::mutation::{Direction, MutationError};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{AdapterRegistry, CompileOptions, ConfigError, Pipeline, Worker, compile};
use mixer_proto::v2;
use serde_json::json;

/// One handler `rw` with `params`, one instance with `variables` (name -> expression).
pub fn config(params: serde_json::Value, variables: serde_json::Value) -> v2::Config {
    let handler = |name: &str, params: serde_json::Value| v2::Handler {
        name: name.into(),
        namespace: "istio-system".into(),
        adapter: "rewrite".into(),
        params: Some(json_to_struct(&params)),
        ..Default::default()
    };
    v2::Config {
        handlers: vec![handler("rw", params)],
        instances: vec![v2::Instance {
            name: "m".into(),
            namespace: "istio-system".into(),
            template: "mutation".into(),
            params: Some(json_to_struct(&json!({ "variables": variables }))),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "r".into(),
            namespace: "istio-system".into(),
            actions: vec![v2::Action {
                handler: "rw".into(),
                instances: vec!["m".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn build(cfg: &v2::Config) -> Result<Worker, Vec<ConfigError>> {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(mixer_mutation::Rewrite));
    let snapshot =
        compile(cfg, &registry, &platform, None, &CompileOptions::default()).map_err(|e| e.0)?;
    Ok(Pipeline::new(snapshot, platform).worker(Arc::new(vt)))
}

pub fn worker(params: serde_json::Value, variables: serde_json::Value) -> Worker {
    build(&config(params, variables)).expect("compiles")
}

/// The config errors of a handler with `params` (and `variables`).
pub fn errors(params: serde_json::Value, variables: serde_json::Value) -> Vec<String> {
    match build(&config(params, variables)) {
        Ok(_) => panic!("config accepted"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// A request with these headers.
pub fn bag(headers: &[(&str, &str)]) -> Attributes<'static> {
    let headers: StringMap = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Attributes::new()
        .with(wk::REQUEST_METHOD, Value::str("POST"))
        .with(wk::REQUEST_PATH, Value::str("/things/12"))
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
}

/// The rewritten body of one whole message, as text.
pub fn rewrite(
    w: &Worker,
    direction: Direction,
    body: &str,
) -> Result<(String, Vec<mixer_core::adapter::HeaderChange>), MutationError> {
    let m = w.mutate_message(&bag(&[]), direction, body.as_bytes())?;
    let body = m
        .body
        .map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
        .unwrap_or_default();
    Ok((body, m.header_changes))
}
