//! Kubernetes objects as the adapter needs them: the few fields of Pods, Services and
//! controllers (ReplicaSets, Jobs, ...) read from JSON values, leniently (label values of any
//! scalar type, numbers written as strings), as `kubectl get -o json|yaml` and the API give them.

use std::net::IpAddr;

use mixer_attr::StringMap;
use serde_json::Value as Json;

/// An owner reference (`metadata.ownerReferences[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Whether this owner is the managing controller.
    pub controller: bool,
}

/// One container of a pod: its name and declared ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub ports: Vec<i64>,
}

/// The fields of a Pod the adapter reads.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: StringMap,
    pub owners: Vec<OwnerRef>,
    pub service_account: String,
    pub containers: Vec<Container>,
    pub host_network: bool,
    pub ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    /// `status.phase` (`Running`, `Succeeded`, ...).
    pub phase: String,
    /// `metadata.creationTimestamp` (RFC 3339; compares in time order as text).
    pub created: String,
}

impl Pod {
    /// Terminated pods (their IP may already belong to another pod).
    pub fn terminated(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}

/// The fields of a Service the adapter reads.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `spec.selector`; empty selects no pods.
    pub selector: StringMap,
}

/// Any other namespaced object with owner references (ReplicaSet, Job, Deployment, ...), used to
/// follow a pod's controller chain up to its workload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Controller {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub owners: Vec<OwnerRef>,
}

/// One parsed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Pod(Pod),
    Service(Service),
    Controller(Controller),
}

/// Which kind to assume for items that do not say (API list items carry no `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindHint {
    Pod,
    Service,
    /// Guess from the item's `spec`.
    Infer,
}

fn str_at<'v>(v: &'v Json, path: &[&str]) -> Option<&'v Json> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// A scalar as text (strings as they are, numbers and booleans printed).
fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text(v: &Json, path: &[&str]) -> String {
    str_at(v, path).and_then(scalar_text).unwrap_or_default()
}

fn truthy(v: Option<&Json>) -> bool {
    match v {
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn int(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string_map(v: Option<&Json>, what: &str) -> Result<StringMap, String> {
    match v {
        None | Some(Json::Null) => Ok(StringMap::new()),
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| match scalar_text(v) {
                Some(t) => Ok((k.clone(), t)),
                None if v.is_null() => Ok((k.clone(), String::new())),
                None => Err(format!("{what}.{k} is not a string")),
            })
            .collect(),
        Some(_) => Err(format!("{what} is not a map")),
    }
}

fn ip(v: &Json, path: &[&str], what: &str) -> Result<Option<IpAddr>, String> {
    match str_at(v, path) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.is_empty() => Ok(None),
        Some(Json::String(s)) => s
            .parse::<IpAddr>()
            .map(|ip| Some(ip.to_canonical()))
            .map_err(|_| format!("{what} `{s}` is not an IP address")),
        Some(_) => Err(format!("{what} is not a string")),
    }
}

fn owners(meta: &Json) -> Vec<OwnerRef> {
    let Some(Json::Array(refs)) = meta.get("ownerReferences") else {
        return Vec::new();
    };
    refs.iter()
        .map(|r| OwnerRef {
            api_version: text(r, &["apiVersion"]),
            kind: text(r, &["kind"]),
            name: text(r, &["name"]),
            controller: truthy(r.get("controller")),
        })
        .filter(|r| !r.kind.is_empty() && !r.name.is_empty())
        .collect()
}

fn containers(spec: &Json) -> Vec<Container> {
    let Some(Json::Array(cs)) = spec.get("containers") else {
        return Vec::new();
    };
    cs.iter()
        .map(|c| Container {
            name: text(c, &["name"]),
            ports: match c.get("ports") {
                Some(Json::Array(ps)) => ps
                    .iter()
                    .filter_map(|p| p.get("containerPort").and_then(int))
                    .collect(),
                _ => Vec::new(),
            },
        })
        .collect()
}

/// Name and namespace from `metadata` (the name is required; the namespace defaults to
/// `default`, as kubectl does).
fn name_ns(item: &Json) -> Result<(String, String), String> {
    let name = text(item, &["metadata", "name"]);
    if name.is_empty() {
        return Err("metadata.name is missing".into());
    }
    let ns = text(item, &["metadata", "namespace"]);
    Ok((name, if ns.is_empty() { "default".into() } else { ns }))
}

/// Parses one object. `Ok(None)` for kinds the adapter has no use for (ConfigMaps, ...).
pub fn parse_object(item: &Json, hint: KindHint) -> Result<Option<Object>, String> {
    if !item.is_object() {
        return Err("not an object".into());
    }
    let kind = text(item, &["kind"]);
    let spec = item.get("spec").unwrap_or(&Json::Null);
    let kind = match (kind.as_str(), hint) {
        ("", KindHint::Pod) => "Pod",
        ("", KindHint::Service) => "Service",
        ("", KindHint::Infer) if spec.get("containers").is_some() => "Pod",
        ("", KindHint::Infer) if spec.get("ports").is_some() || spec.get("selector").is_some() => {
            "Service"
        }
        ("", KindHint::Infer) => return Err("`kind` is missing".into()),
        (k, _) => k,
    };
    let (name, namespace) = name_ns(item)?;
    let meta = item.get("metadata").unwrap_or(&Json::Null);
    let at = |e: String| format!("{kind} {namespace}/{name}: {e}");
    Ok(Some(match kind {
        "Pod" => Object::Pod(Pod {
            labels: string_map(meta.get("labels"), "metadata.labels").map_err(at)?,
            owners: owners(meta),
            service_account: match text(spec, &["serviceAccountName"]) {
                s if s.is_empty() => text(spec, &["serviceAccount"]),
                s => s,
            },
            containers: containers(spec),
            host_network: truthy(spec.get("hostNetwork")),
            ip: ip(item, &["status", "podIP"], "status.podIP").map_err(at)?,
            host_ip: ip(item, &["status", "hostIP"], "status.hostIP").map_err(at)?,
            phase: text(item, &["status", "phase"]),
            created: text(meta, &["creationTimestamp"]),
            name,
            namespace,
        }),
        "Service" => Object::Service(Service {
            selector: string_map(spec.get("selector"), "spec.selector").map_err(at)?,
            name,
            namespace,
        }),
        // Cluster-scoped and unrelated kinds are of no use; any namespaced object with owner
        // references may sit in a pod's controller chain.
        "Namespace" | "Node" | "ConfigMap" | "Secret" | "Endpoints" | "EndpointSlice" | "Event" => {
            return Ok(None);
        }
        _ => Object::Controller(Controller {
            owners: owners(meta),
            kind: kind.to_string(),
            name,
            namespace,
        }),
    }))
}

/// `metadata.resourceVersion` of an object or list.
pub fn resource_version(v: &Json) -> Option<&str> {
    str_at(v, &["metadata", "resourceVersion"])
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
}

/// The key an object is stored under in a source: `namespace/name`.
pub fn key_of(item: &Json) -> Option<String> {
    name_ns(item).ok().map(|(n, ns)| format!("{ns}/{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_kubectl_pod() {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a", "n": 1},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "a-5d8f", "controller": true}]},
            "spec": {"serviceAccountName": "sa", "containers": [
                {"name": "c", "ports": [{"containerPort": 9080}, {"containerPort": "90"}]}]},
            "status": {"podIP": "10.0.0.1", "hostIP": "192.168.0.1", "phase": "Running"}
        });
        let Some(Object::Pod(p)) = parse_object(&pod, KindHint::Infer).unwrap() else {
            panic!("a pod")
        };
        assert_eq!(p.labels["n"], "1");
        assert_eq!(p.owners[0].kind, "ReplicaSet");
        assert!(p.owners[0].controller);
        assert_eq!(p.containers[0].ports, [9080, 90]);
        assert_eq!(p.ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(p.service_account, "sa");
    }

    #[test]
    fn bad_items_are_errors_and_unused_kinds_skipped() {
        let bad_ip = json!({"kind": "Pod", "metadata": {"name": "p"},
            "status": {"podIP": "nope"}});
        let e = parse_object(&bad_ip, KindHint::Infer).unwrap_err();
        assert!(e.contains("Pod default/p") && e.contains("podIP"), "{e}");
        assert!(parse_object(&json!({"kind": "Pod"}), KindHint::Infer).is_err());
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(parse_object(&cm, KindHint::Infer).unwrap(), None);
        let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}}});
        assert!(matches!(
            parse_object(&svc, KindHint::Infer).unwrap(),
            Some(Object::Service(_))
        ));
    }
}
