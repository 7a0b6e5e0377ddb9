//! Handler params of the `knative` adapter.

use std::time::Duration;

use mixer_core::adapter::{AdapterError, Params};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    autoscaler_url: Option<String>,
    #[serde(default)]
    pod_name: Option<String>,
    #[serde(default)]
    report_interval: Option<String>,
    #[serde(default)]
    idle_after: Option<String>,
    #[serde(default)]
    max_revisions: Option<u64>,
    #[serde(default)]
    reconnect_backoff: Option<RawBackoff>,
    #[serde(default)]
    hold: Option<RawHold>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBackoff {
    #[serde(default)]
    min: Option<String>,
    #[serde(default)]
    max: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHold {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    readiness_url: Option<String>,
    #[serde(default)]
    probe_interval: Option<String>,
    #[serde(default)]
    on_timeout: Option<String>,
    #[serde(default)]
    max_held: Option<u64>,
}

/// What a held request gets when its revision is not ready in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimeout {
    /// Forward it anyway (the revision may come up while the proxy connects).
    Allow,
    /// Deny with UNAVAILABLE (HTTP 503) and a message naming the revision.
    Fail,
}

/// Readiness probe target: an `http://` URL split for the PAL's HTTP callout. `{namespace}` and
/// `{revision}` in the path are replaced per revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessUrl {
    pub authority: String,
    pub path: String,
}

/// Hold settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldParams {
    pub enabled: bool,
    pub timeout: Duration,
    pub readiness: Option<ReadinessUrl>,
    pub probe_interval: Duration,
    pub on_timeout: OnTimeout,
    pub max_held: usize,
}

/// Validated params.
#[derive(Clone, Debug, PartialEq)]
pub struct KnativeParams {
    pub autoscaler_url: String,
    /// `host:port` of the autoscaler.
    pub autoscaler_authority: String,
    pub pod_name: String,
    pub report_interval: Duration,
    pub idle_after: Duration,
    pub max_revisions: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub hold: HoldParams,
}

fn duration(
    field: &str,
    v: Option<&str>,
    default: Duration,
    positive: bool,
) -> Result<Duration, AdapterError> {
    let Some(s) = v else { return Ok(default) };
    let bad = || {
        AdapterError::field(
            field,
            format!(
                "`{s}` is not a {}duration such as \"1s\"",
                if positive { "positive " } else { "" }
            ),
        )
    };
    let d = mixer_attr::Duration::parse(s).map_err(|_| bad())?;
    let d = d.to_std().ok_or_else(bad)?;
    if positive && d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

/// `ws://host:port/path` -> `host:port` (port 80 when absent).
fn ws_authority(url: &str) -> Result<String, AdapterError> {
    let field = "autoscalerUrl";
    if url.starts_with("wss://") {
        return Err(AdapterError::field(
            field,
            "wss:// is not supported (this build has no TLS); use ws:// to the in-cluster autoscaler",
        ));
    }
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| AdapterError::field(field, format!("`{url}` is not a ws:// URL")))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(AdapterError::field(field, format!("`{url}` has no host")));
    }
    let bad_port = || AdapterError::field(field, format!("`{url}` has a bad port"));
    let port = match authority.strip_prefix('[') {
        Some(v6) => {
            let (_, after) = v6.split_once(']').ok_or_else(bad_port)?;
            if after.is_empty() {
                None
            } else {
                Some(after.strip_prefix(':').ok_or_else(bad_port)?)
            }
        }
        None => authority.split_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(bad_port());
    }
    let has_port = port.is_some();
    // The handshake must be able to build a request from the URL.
    tungstenite::client::IntoClientRequest::into_client_request(url)
        .map_err(|e| AdapterError::field(field, format!("`{url}`: {e}")))?;
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

fn readiness_url(url: &str) -> Result<ReadinessUrl, AdapterError> {
    let field = "hold.readinessUrl";
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| AdapterError::field(field, format!("`{url}` is not an http:// URL")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(AdapterError::field(field, format!("`{url}` has no host")));
    }
    Ok(ReadinessUrl {
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// A stable pod name when none is configured: `$POD_NAME`, else `mixer-<hostname>`.
fn default_pod_name() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.trim().is_empty()
    {
        return p.trim().to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "proxy".to_string());
    format!("mixer-{host}")
}

impl KnativeParams {
    /// Parses and validates handler params.
    pub fn parse(params: &Params) -> Result<KnativeParams, AdapterError> {
        let raw: Raw = if params.is_null() {
            Raw::default()
        } else {
            serde_json::from_value(params.clone()).map_err(|e| AdapterError::new(e.to_string()))?
        };
        let autoscaler_url = raw
            .autoscaler_url
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                AdapterError::field(
                    "autoscalerUrl",
                    "is required (ws://autoscaler.knative-serving.svc.cluster.local:8080/)",
                )
            })?;
        let autoscaler_authority = ws_authority(&autoscaler_url)?;
        let pod_name = raw
            .pod_name
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(default_pod_name);
        let report_interval = duration(
            "reportInterval",
            raw.report_interval.as_deref(),
            Duration::from_secs(1),
            true,
        )?;
        let idle_after = duration(
            "idleAfter",
            raw.idle_after.as_deref(),
            Duration::from_secs(30),
            true,
        )?;
        let max_revisions =
            usize::try_from(raw.max_revisions.unwrap_or(10_000)).unwrap_or(usize::MAX);
        if max_revisions == 0 {
            return Err(AdapterError::field("maxRevisions", "must be positive"));
        }
        let backoff = raw.reconnect_backoff.unwrap_or_default();
        let min_backoff = duration(
            "reconnectBackoff.min",
            backoff.min.as_deref(),
            Duration::from_millis(100),
            true,
        )?;
        let max_backoff = duration(
            "reconnectBackoff.max",
            backoff.max.as_deref(),
            Duration::from_secs(5),
            true,
        )?;
        if max_backoff < min_backoff {
            return Err(AdapterError::field(
                "reconnectBackoff.max",
                "must not be below reconnectBackoff.min",
            ));
        }
        let h = raw.hold.unwrap_or_default();
        let on_timeout = match h.on_timeout.as_deref().unwrap_or("FAIL") {
            "FAIL" | "fail" => OnTimeout::Fail,
            "ALLOW" | "allow" => OnTimeout::Allow,
            other => {
                return Err(AdapterError::field(
                    "hold.onTimeout",
                    format!("`{other}` is not one of FAIL, ALLOW"),
                ));
            }
        };
        let hold = HoldParams {
            enabled: h.enabled,
            timeout: duration(
                "hold.timeout",
                h.timeout.as_deref(),
                Duration::from_secs(4),
                true,
            )?,
            readiness: h
                .readiness_url
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(readiness_url)
                .transpose()?,
            probe_interval: duration(
                "hold.probeInterval",
                h.probe_interval.as_deref(),
                Duration::from_millis(200),
                true,
            )?,
            on_timeout,
            max_held: usize::try_from(h.max_held.unwrap_or(10_000)).unwrap_or(usize::MAX),
        };
        Ok(KnativeParams {
            autoscaler_url,
            autoscaler_authority,
            pod_name,
            report_interval,
            idle_after,
            max_revisions,
            min_backoff,
            max_backoff,
            hold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_errors() {
        let p = KnativeParams::parse(&json!({"autoscalerUrl": "ws://autoscaler.knative-serving.svc.cluster.local:8080/", "podName": "p1"})).unwrap();
        assert_eq!(
            p.autoscaler_authority,
            "autoscaler.knative-serving.svc.cluster.local:8080"
        );
        assert_eq!(p.report_interval, Duration::from_secs(1));
        assert_eq!(p.pod_name, "p1");
        assert!(!p.hold.enabled);
        assert_eq!(
            KnativeParams::parse(&json!({"autoscalerUrl": "ws://a/"}))
                .unwrap()
                .autoscaler_authority,
            "a:80"
        );
        let err = |v: serde_json::Value| KnativeParams::parse(&v).unwrap_err();
        assert_eq!(err(json!({})).field.as_deref(), Some("autoscalerUrl"));
        assert_eq!(
            err(json!({"autoscalerUrl": "wss://a/"})).field.as_deref(),
            Some("autoscalerUrl")
        );
        assert_eq!(
            err(json!({"autoscalerUrl": "http://a/"})).field.as_deref(),
            Some("autoscalerUrl")
        );
        assert_eq!(
            err(json!({"autoscalerUrl": "ws://a:99999/"}))
                .field
                .as_deref(),
            Some("autoscalerUrl")
        );
        assert_eq!(
            err(json!({"autoscalerUrl": "ws://a/", "reportInterval": "0s"}))
                .field
                .as_deref(),
            Some("reportInterval")
        );
        assert_eq!(
            err(json!({"autoscalerUrl": "ws://a/", "reportInterval": "banana"}))
                .field
                .as_deref(),
            Some("reportInterval")
        );
        assert_eq!(
            err(json!({"autoscalerUrl": "ws://a/", "hold": {"readinessUrl": "ftp://x"}}))
                .field
                .as_deref(),
            Some("hold.readinessUrl")
        );
        assert_eq!(
            err(json!({"autoscalerUrl": "ws://a/", "hold": {"onTimeout": "maybe"}}))
                .field
                .as_deref(),
            Some("hold.onTimeout")
        );
        assert!(
            err(json!({"autoscalerUrl": "ws://a/", "bogus": 1}))
                .field
                .is_none()
        );
        assert!(err(json!({"autoscalerUrl": 5})).field.is_none());
        let h = KnativeParams::parse(&json!({"autoscalerUrl": "ws://a/", "hold": {"enabled": true, "readinessUrl": "http://r:8012/ready/{namespace}/{revision}"}})).unwrap().hold;
        assert_eq!(
            h.readiness,
            Some(ReadinessUrl {
                authority: "r:8012".into(),
                path: "/ready/{namespace}/{revision}".into()
            })
        );
    }
}
