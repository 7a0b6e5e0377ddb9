//! Config written in code rather than YAML: the handler, instance and rule messages a Rust
//! embedder (or a test) hands to [`crate::compile`], in Istio's root namespace.

use mixer_proto::v2;

use crate::snapshot::json_to_struct;

/// The namespace whose rules apply to every request.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// A handler of `adapter` with JSON `params`.
pub fn handler(name: &str, adapter: &str, params: serde_json::Value) -> v2::Handler {
    v2::Handler {
        name: name.into(),
        namespace: ROOT_NAMESPACE.into(),
        adapter: adapter.into(),
        params: Some(json_to_struct(&params)),
        ..Default::default()
    }
}

/// An instance of `template` whose params (expressions) are given as JSON.
pub fn instance(name: &str, template: &str, params: serde_json::Value) -> v2::Instance {
    v2::Instance {
        name: name.into(),
        namespace: ROOT_NAMESPACE.into(),
        template: template.into(),
        params: Some(json_to_struct(&params)),
        ..Default::default()
    }
}

/// A rule sending `instances` to `handler` for requests that match `predicate` ("" matches all).
pub fn rule(name: &str, predicate: &str, handler: &str, instances: &[&str]) -> v2::Rule {
    v2::Rule {
        name: name.into(),
        namespace: ROOT_NAMESPACE.into(),
        r#match: predicate.into(),
        actions: vec![v2::Action {
            handler: handler.into(),
            instances: instances.iter().map(|s| s.to_string()).collect(),
            name: String::new(),
        }],
        ..Default::default()
    }
}
