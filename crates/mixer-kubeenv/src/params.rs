//! Handler params, checked field by field so a mistake names its field.

use std::path::PathBuf;
use std::time::Duration;

use mixer_core::adapter::{AdapterError, Params};
use serde_json::Value as Json;

/// Default poll interval of the inventory file.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// Default length of one watch call.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of a LIST call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kubernetes API source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiParams {
    /// Host cluster or `host:port` for the callout.
    pub authority: String,
    /// Path prefix before `/api/v1` (empty for none).
    pub prefix: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Only this namespace's objects, when set.
    pub namespace: Option<String>,
    pub watch_timeout: Duration,
    pub request_timeout: Duration,
}

/// Everything a handler is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub inventory_file: Option<PathBuf>,
    pub refresh_interval: Duration,
    pub api: Option<ApiParams>,
    /// Suffix of service hosts after `<name>.<namespace>.`.
    pub cluster_domain: String,
}

fn string(field: &str, v: &Json) -> Result<Option<String>, AdapterError> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) if s.trim().is_empty() => Ok(None),
        Json::String(s) => Ok(Some(s.trim().to_string())),
        _ => Err(AdapterError::field(field, "must be a string")),
    }
}

fn duration(field: &str, v: &Json, default: Duration) -> Result<Duration, AdapterError> {
    let bad = || {
        AdapterError::field(
            field,
            format!("`{v}` is not a positive duration such as \"5s\""),
        )
    };
    let d = match v {
        Json::Null => return Ok(default),
        Json::String(s) => mixer_attr::Duration::parse(s.trim())
            .ok()
            .and_then(|d| d.to_std())
            .ok_or_else(bad)?,
        Json::Number(n) => n
            .as_f64()
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

fn object<'p>(field: &str, v: &'p Json) -> Result<Vec<(String, &'p Json)>, AdapterError> {
    match v {
        Json::Null => Ok(Vec::new()),
        // camelCase and snake_case both name a field.
        Json::Object(m) => Ok(m
            .iter()
            .map(|(k, v)| (mixer_core::adapter::snake_case_key(k), v))
            .collect()),
        _ => Err(AdapterError::field(field, "must be a map")),
    }
}

fn api(v: &Json) -> Result<Option<ApiParams>, AdapterError> {
    const F: &str = "kubernetes_api";
    if v.is_null() {
        return Ok(None);
    }
    let mut url = None;
    let mut p = ApiParams {
        authority: String::new(),
        prefix: String::new(),
        token: None,
        token_file: None,
        namespace: None,
        watch_timeout: DEFAULT_WATCH_TIMEOUT,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
    };
    for (k, v) in object(F, v)? {
        let field = format!("{F}.{k}");
        match k.as_str() {
            "url" => url = string(&field, v)?,
            "token" => p.token = string(&field, v)?,
            "token_file" => p.token_file = string(&field, v)?.map(PathBuf::from),
            "namespace" => p.namespace = string(&field, v)?,
            "watch_timeout" => p.watch_timeout = duration(&field, v, DEFAULT_WATCH_TIMEOUT)?,
            "request_timeout" => {
                p.request_timeout = duration(&field, v, DEFAULT_REQUEST_TIMEOUT)?;
            }
            _ => {
                return Err(AdapterError::field(
                    field,
                    "unknown field (expected url, token, token_file, namespace, watch_timeout, request_timeout)",
                ));
            }
        }
    }
    let url = url
        .ok_or_else(|| AdapterError::field(format!("{F}.url"), "is required (http://host:port)"))?;
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        AdapterError::field(
            format!("{F}.url"),
            format!("`{url}` is not an http:// URL (for TLS, point it at `kubectl proxy` or a host cluster that adds it)"),
        )
    })?;
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(AdapterError::field(
            format!("{F}.url"),
            format!("`{url}` has no host"),
        ));
    }
    p.authority = authority.to_string();
    p.prefix = prefix.trim_end_matches('/').to_string();
    if p.token.is_some() && p.token_file.is_some() {
        return Err(AdapterError::field(
            format!("{F}.token_file"),
            "give either token or token_file, not both",
        ));
    }
    if let Some(path) = &p.token_file {
        std::fs::read_to_string(path).map_err(|e| {
            AdapterError::field(
                format!("{F}.token_file"),
                format!("cannot read `{}`: {e}", path.display()),
            )
        })?;
    }
    if let Some(ns) = &p.namespace
        && !ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(AdapterError::field(
            format!("{F}.namespace"),
            format!("`{ns}` is not a namespace name"),
        ));
    }
    Ok(Some(p))
}

/// Reads and checks the params.
pub fn parse(params: &Params) -> Result<Settings, AdapterError> {
    let mut s = Settings {
        inventory_file: None,
        refresh_interval: DEFAULT_REFRESH,
        api: None,
        cluster_domain: "svc.cluster.local".into(),
    };
    for (k, v) in object("params", params).map_err(|_| AdapterError::new("params must be a map"))? {
        match k.as_str() {
            "inventory_file" => s.inventory_file = string(&k, v)?.map(PathBuf::from),
            "refresh_interval" => s.refresh_interval = duration(&k, v, DEFAULT_REFRESH)?,
            "kubernetes_api" => s.api = api(v)?,
            "cluster_domain_name" => {
                if let Some(d) = string(&k, v)? {
                    s.cluster_domain = d.trim_matches('.').to_string();
                }
            }
            // Istio's own params: accepted so its configs load; a kubeconfig is not read (use
            // kubernetes_api through `kubectl proxy`).
            "kubeconfig_path"
            | "pod_cache_refresh_interval"
            | "cluster_registries_namespace"
            | "pod_label_for_app"
            | "pod_label_for_version"
            | "lookup_ingress_source_and_origin_values"
            | "fully_qualified_istio_ingress_service_name" => {}
            _ => {
                return Err(AdapterError::field(
                    k,
                    "unknown field (expected inventory_file, refresh_interval, kubernetes_api, cluster_domain_name)",
                ));
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_url_splits_into_authority_and_prefix() {
        let s = parse(
            &json!({"kubernetesApi": {"url": "http://127.0.0.1:8001/k8s/",
            "watchTimeout": "2s", "namespace": "default"}}),
        )
        .unwrap();
        let api = s.api.unwrap();
        assert_eq!(api.authority, "127.0.0.1:8001");
        assert_eq!(api.prefix, "/k8s");
        assert_eq!(api.watch_timeout, Duration::from_secs(2));
        assert_eq!(s.refresh_interval, DEFAULT_REFRESH);
    }

    #[test]
    fn mistakes_name_their_field() {
        for (p, field) in [
            (json!({"inventoryFile": 3}), "inventory_file"),
            (json!({"refresh_interval": "soon"}), "refresh_interval"),
            (json!({"refresh_interval": "0s"}), "refresh_interval"),
            (json!({"kubernetes_api": {}}), "kubernetes_api.url"),
            (
                json!({"kubernetes_api": {"url": "https://x"}}),
                "kubernetes_api.url",
            ),
            (
                json!({"kubernetes_api": {"url": "http://x", "token": "a", "token_file": "/b"}}),
                "kubernetes_api.token_file",
            ),
            (
                json!({"kubernetes_api": {"url": "http://x", "namespace": "A_B"}}),
                "kubernetes_api.namespace",
            ),
            (json!({"bogus": 1}), "bogus"),
        ] {
            let e = parse(&p).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{p}: {e}");
        }
        assert!(
            parse(&json!({"kubeconfig_path": "x"}))
                .unwrap()
                .api
                .is_none()
        );
    }
}
