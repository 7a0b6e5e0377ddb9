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

/// The service `name` in `namespace`, as a QuotaSpecBinding names it (`"*"` binds every service).
pub fn service(name: &str, namespace: &str) -> v2::IstioService {
    if name == "*" {
        return v2::IstioService {
            service: "*".into(),
            ..Default::default()
        };
    }
    v2::IstioService {
        name: name.into(),
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// Adds a QuotaSpec `spec` charging `charge` units of `quota` to every request, bound to
/// `services` by a QuotaSpecBinding of the same name.
pub fn bind_quota(
    config: &mut v2::Config,
    spec: &str,
    quota: &str,
    charge: i64,
    services: Vec<v2::IstioService>,
) {
    config.quota_specs.push(v2::QuotaSpec {
        name: spec.into(),
        namespace: ROOT_NAMESPACE.into(),
        rules: vec![v2::QuotaRule {
            r#match: vec![],
            quotas: vec![v2::Quota {
                quota: quota.into(),
                charge,
            }],
        }],
    });
    config.quota_spec_bindings.push(v2::QuotaSpecBinding {
        name: spec.into(),
        namespace: ROOT_NAMESPACE.into(),
        services,
        quota_specs: vec![v2::QuotaSpecReference {
            name: spec.into(),
            namespace: ROOT_NAMESPACE.into(),
        }],
    });
}
