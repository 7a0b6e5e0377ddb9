//! Shared test helpers: config text, bags, a pipeline on a chosen platform.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::pal::{BackgroundExecutor, Platform, Task};
use mixer_core::{Pipeline, Snapshot};
use mixer_knative::{KnativeAdapter, KnativeHandler};

/// The handler (with `params` as JSON), the default instances and one rule routing both.
pub fn config_yaml(params: &serde_json::Value, dispatch_timeout: &str) -> String {
    format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: knative, namespace: istio-system}}
spec:
  compiledAdapter: knative
  params: {params}
  dispatch:
    timeout: {dispatch_timeout}
---
{instances}---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: knative, namespace: istio-system}}
spec:
  actions:
  - handler: knative
    instances: [knativerevision, knativecompletion]
"#,
        instances = mixer_knative::DEFAULT_INSTANCES_YAML
    )
}

pub fn compile(yaml: &str, platform: &Platform) -> (Snapshot, Arc<KnativeAdapter>) {
    let loaded = mixer_config::load_str("knative.yaml", yaml).expect("loads");
    let mut registry = mixer_core::AdapterRegistry::new();
    let adapter = mixer_knative::register(&mut registry);
    let snapshot =
        mixer_config::compile_loaded(&loaded, &registry, platform, None, &Default::default())
            .unwrap_or_else(|e| panic!("compiles: {e:?}"));
    (snapshot, adapter)
}

pub fn pipeline(
    yaml: &str,
    platform: Platform,
) -> (Pipeline, Arc<KnativeHandler>, Arc<KnativeAdapter>) {
    let (snapshot, adapter) = compile(yaml, &platform);
    let handler = adapter
        .handler("knative.istio-system")
        .expect("handler built");
    (Pipeline::new(snapshot, platform), handler, adapter)
}

/// A request routed by the Knative headers.
pub fn by_headers(namespace: &str, revision: &str) -> Attributes<'static> {
    let headers: StringMap = [
        (
            "knative-serving-namespace".to_string(),
            namespace.to_string(),
        ),
        ("knative-serving-revision".to_string(), revision.to_string()),
    ]
    .into_iter()
    .collect();
    Attributes::new().with(wk::REQUEST_HEADERS, Value::string_map(headers))
}

/// A request routed by host only.
pub fn by_host(host: &str) -> Attributes<'static> {
    Attributes::new().with(wk::REQUEST_HOST, Value::String(host.to_string().into()))
}

/// A background executor that drops every task: no websocket at all.
#[derive(Debug)]
pub struct NoBackground;

impl BackgroundExecutor for NoBackground {
    fn spawn(&self, _name: &str, _task: Task) {}
}
