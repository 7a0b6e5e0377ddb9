//! Templates: the typed messages that instances build from attributes, and which stage uses them.
//!
//! Field paths are dotted (`subject.user`); a map field (`dimensions`) takes any key below it
//! (`dimensions.response_code`). `Any` fields accept an expression of any type.

use mixer_attr::ValueType;

/// Which pipeline stage a template feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variety {
    /// Precondition check (allow/deny).
    Check,
    /// Quota allocation (part of the precondition).
    Quota,
    /// Telemetry report.
    Report,
    /// Request/response mutation.
    Mutation,
    /// Attribute-producing adapter input.
    AttributeGenerator,
}

/// What a template field accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// One value of this type.
    Value(ValueType),
    /// One value of any type.
    Any,
    /// A map field: any key below it, each a value of any type.
    MapOfAny,
    /// A map field: any key below it, each of this type.
    MapOf(ValueType),
}

/// One field of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    pub path: &'static str,
    pub ty: FieldType,
}

/// A template: name, variety and fields.
#[derive(Debug, PartialEq, Eq)]
pub struct TemplateInfo {
    pub name: &'static str,
    pub variety: Variety,
    pub fields: &'static [FieldInfo],
    /// For attribute-generator templates: the output fields, bound in config as `$out.<path>`
    /// (Mixer's `OutputTemplate`). An adapter's [`crate::adapter::ApaOutput`] is indexed by
    /// position in this list.
    pub outputs: &'static [FieldInfo],
}

impl TemplateInfo {
    /// The index in [`TemplateInfo::fields`] of the field at exactly `path`: what
    /// [`crate::instance::InstanceView::field`] takes.
    pub fn field_index(&self, path: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.path == path)
    }

    /// The field that `path` names (a map field for `dimensions.x`), if any.
    pub fn field(&self, path: &str) -> Option<&FieldInfo> {
        self.fields.iter().find(|f| match f.ty {
            FieldType::MapOfAny | FieldType::MapOf(_) => path
                .strip_prefix(f.path)
                .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1),
            _ => f.path == path,
        })
    }
}

const fn f(path: &'static str, ty: FieldType) -> FieldInfo {
    FieldInfo { path, ty }
}

use FieldType::{Any, MapOfAny, Value as V};
use ValueType as T;

/// The `kubernetes` template's outputs (Mixer's kubernetesenv `OutputTemplate`, plus the
/// destination's service).
const KUBERNETES_OUTPUTS: &[FieldInfo] = &[
    f("source_pod_uid", V(T::String)),
    f("source_pod_ip", V(T::IpAddress)),
    f("source_pod_name", V(T::String)),
    f("source_labels", V(T::StringMap)),
    f("source_namespace", V(T::String)),
    f("source_service_account_name", V(T::String)),
    f("source_host_ip", V(T::IpAddress)),
    f("source_owner", V(T::String)),
    f("source_workload_uid", V(T::String)),
    f("source_workload_name", V(T::String)),
    f("source_workload_namespace", V(T::String)),
    f("destination_pod_uid", V(T::String)),
    f("destination_pod_ip", V(T::IpAddress)),
    f("destination_pod_name", V(T::String)),
    f("destination_container_name", V(T::String)),
    f("destination_labels", V(T::StringMap)),
    f("destination_namespace", V(T::String)),
    f("destination_service_account_name", V(T::String)),
    f("destination_host_ip", V(T::IpAddress)),
    f("destination_owner", V(T::String)),
    f("destination_workload_uid", V(T::String)),
    f("destination_workload_name", V(T::String)),
    f("destination_workload_namespace", V(T::String)),
    f("origin_pod_uid", V(T::String)),
    f("origin_pod_ip", V(T::IpAddress)),
    f("origin_pod_name", V(T::String)),
    f("origin_labels", V(T::StringMap)),
    f("origin_namespace", V(T::String)),
    f("origin_service_account_name", V(T::String)),
    f("origin_host_ip", V(T::IpAddress)),
    f("origin_owner", V(T::String)),
    f("origin_workload_uid", V(T::String)),
    f("origin_workload_name", V(T::String)),
    f("origin_workload_namespace", V(T::String)),
    f("destination_service_uid", V(T::String)),
    f("destination_service_name", V(T::String)),
    f("destination_service_namespace", V(T::String)),
    f("destination_service_host", V(T::String)),
];

/// Every template this build knows (Mixer V1's names and fields).
pub static TEMPLATES: &[TemplateInfo] = &[
    TemplateInfo {
        name: "checknothing",
        variety: Variety::Check,
        fields: &[],
        outputs: &[],
    },
    TemplateInfo {
        name: "listentry",
        variety: Variety::Check,
        fields: &[f("value", Any)],
        outputs: &[],
    },
    TemplateInfo {
        name: "authorization",
        variety: Variety::Check,
        fields: &[
            f("subject.user", V(T::String)),
            f("subject.groups", V(T::String)),
            f("subject.properties", MapOfAny),
            f("action.namespace", V(T::String)),
            f("action.service", V(T::String)),
            f("action.method", V(T::String)),
            f("action.path", V(T::String)),
            f("action.properties", MapOfAny),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "apikey",
        variety: Variety::Check,
        fields: &[
            f("api", V(T::String)),
            f("api_version", V(T::String)),
            f("api_operation", V(T::String)),
            f("api_key", V(T::String)),
            f("timestamp", V(T::Timestamp)),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "quota",
        variety: Variety::Quota,
        fields: &[f("dimensions", MapOfAny)],
        outputs: &[],
    },
    TemplateInfo {
        name: "metric",
        variety: Variety::Report,
        fields: &[
            f("value", Any),
            f("dimensions", MapOfAny),
            f("monitored_resource_type", V(T::String)),
            f("monitored_resource_dimensions", MapOfAny),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "logentry",
        variety: Variety::Report,
        fields: &[
            f("variables", MapOfAny),
            f("timestamp", V(T::Timestamp)),
            f("severity", V(T::String)),
            f("monitored_resource_type", V(T::String)),
            f("monitored_resource_dimensions", MapOfAny),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "tracespan",
        variety: Variety::Report,
        fields: &[
            f("trace_id", V(T::String)),
            f("span_id", V(T::String)),
            f("parent_span_id", V(T::String)),
            f("span_name", V(T::String)),
            f("start_time", V(T::Timestamp)),
            f("end_time", V(T::Timestamp)),
            f("span_tags", MapOfAny),
            f("http_status_code", V(T::Int64)),
            f("client_span", V(T::Bool)),
            f("rewrite_client_span_id", V(T::Bool)),
            f("source_name", V(T::String)),
            f("source_ip", V(T::IpAddress)),
            f("destination_name", V(T::String)),
            f("destination_ip", V(T::IpAddress)),
            f("request_size", V(T::Int64)),
            f("request_total_size", V(T::Int64)),
            f("response_size", V(T::Int64)),
            f("response_total_size", V(T::Int64)),
            f("api_protocol", V(T::String)),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "edge",
        variety: Variety::Report,
        fields: &[
            f("timestamp", V(T::Timestamp)),
            f("source_workload_namespace", V(T::String)),
            f("source_workload_name", V(T::String)),
            f("source_owner", V(T::String)),
            f("source_uid", V(T::String)),
            f("destination_workload_namespace", V(T::String)),
            f("destination_workload_name", V(T::String)),
            f("destination_owner", V(T::String)),
            f("destination_uid", V(T::String)),
            f("destination_service_namespace", V(T::String)),
            f("destination_service_name", V(T::String)),
            f("context_protocol", V(T::String)),
            f("api_protocol", V(T::String)),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "kubernetes",
        variety: Variety::AttributeGenerator,
        fields: &[
            f("source_uid", V(T::String)),
            f("source_ip", V(T::IpAddress)),
            f("destination_uid", V(T::String)),
            f("destination_ip", V(T::IpAddress)),
            f("destination_port", V(T::Int64)),
            f("origin_uid", V(T::String)),
            f("origin_ip", V(T::IpAddress)),
        ],
        outputs: KUBERNETES_OUTPUTS,
    },
    // JSON Web Token verification (crate `mixer-jwt`): the token in, Istio's
    // `request.auth.*` attributes out.
    TemplateInfo {
        name: "jwt",
        variety: Variety::AttributeGenerator,
        fields: &[f("token", V(T::String))],
        outputs: &[
            f("principal", V(T::String)),
            f("issuer", V(T::String)),
            f("subject", V(T::String)),
            f("audiences", V(T::String)),
            f("presenter", V(T::String)),
            f("claims", V(T::StringMap)),
            f("raw_claims", V(T::String)),
        ],
    },
    // URL path templates to API identity (crate `mixer-apiattrs`).
    TemplateInfo {
        name: "apiattributes",
        variety: Variety::AttributeGenerator,
        fields: &[f("method", V(T::String)), f("path", V(T::String))],
        outputs: &[
            f("api_service", V(T::String)),
            f("api_version", V(T::String)),
            f("api_operation", V(T::String)),
            f("api_protocol", V(T::String)),
            f("path_params", V(T::StringMap)),
            f("query_params", V(T::StringMap)),
        ],
    },
    // Knative scale-from-zero (crate `mixer-knative`): the revision a request goes to, at check
    // time and again when the request completes (so concurrency is measured check -> report).
    TemplateInfo {
        name: "knativerevision",
        variety: Variety::Check,
        fields: &[
            f("namespace", V(T::String)),
            f("revision", V(T::String)),
            f("host", V(T::String)),
        ],
        outputs: &[],
    },
    TemplateInfo {
        name: "knativecompletion",
        variety: Variety::Report,
        fields: &[
            f("namespace", V(T::String)),
            f("revision", V(T::String)),
            f("host", V(T::String)),
        ],
        outputs: &[],
    },
    // Request/response rewrites (crate `mixer-mutation`): the handler's params say what changes
    // (header operations, JSON edits, body templates, XML extraction); the instance supplies
    // the per-request values they read as `vars.<name>`.
    TemplateInfo {
        name: "mutation",
        variety: Variety::Mutation,
        fields: &[f("variables", MapOfAny)],
        outputs: &[],
    },
];

/// The template named `name`.
pub fn template(name: &str) -> Option<&'static TemplateInfo> {
    TEMPLATES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lookup_handles_maps() {
        let m = template("metric").unwrap();
        assert_eq!(m.field("value").map(|f| f.ty), Some(Any));
        assert_eq!(m.field("dimensions.code").map(|f| f.ty), Some(MapOfAny));
        assert!(m.field("dimensions").is_none());
        assert!(m.field("dimensionsx.y").is_none());
        assert!(m.field("nope").is_none());
        assert_eq!(template("quota").unwrap().variety, Variety::Quota);
        assert!(template("bogus").is_none());
    }
}
