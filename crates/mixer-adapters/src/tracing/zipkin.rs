//! Zipkin v2 JSON (`POST /api/v2/spans`, `Content-Type: application/json`): a JSON array of
//! spans as Zipkin's API defines them.
//!
//! | span field | Zipkin |
//! | --- | --- |
//! | `trace_id`, `span_id`, `parent_span_id` | `traceId`, `id`, `parentId` (lowercase hex; `parentId` absent for a root) |
//! | `span_name` | `name` (absent when empty) |
//! | `client_span` | `kind`: `CLIENT` or `SERVER` |
//! | `start_time` | `timestamp`, µs since the epoch |
//! | `end_time - start_time` | `duration`, µs, rounded up (absent when zero) |
//! | local side (destination of a server span, source of a client span) | `localEndpoint{serviceName, ipv4/ipv6}`; `serviceName` falls back to the `serviceName` param |
//! | remote side | `remoteEndpoint{serviceName, ipv4/ipv6}` (absent when both are unknown) |
//! | `span_tags` | `tags` (values as strings) |
//! | `http_status_code` | tag `http.status_code`; tag `error` = the code for 5xx (and 4xx on client spans) |
//! | `request_size`, `request_total_size` | tags `http.request.body.size`, `http.request.size` |
//! | `response_size`, `response_total_size` | tags `http.response.body.size`, `http.response.size` |
//! | `api_protocol` | tag `istio.api_protocol` |

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::{Endpoint, SpanRecord};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinEndpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan<'a> {
    trace_id: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    kind: &'static str,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_endpoint: Option<ZipkinEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<ZipkinEndpoint<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<&'a str, String>,
}

fn endpoint<'a>(e: &'a Endpoint, fallback_name: Option<&'a str>) -> Option<ZipkinEndpoint<'a>> {
    let service_name = e.service_name.as_deref().or(fallback_name);
    if service_name.is_none() && e.ip.is_none() {
        return None;
    }
    let (ipv4, ipv6) = match e.ip {
        Some(IpAddr::V4(a)) => (Some(a.to_string()), None),
        Some(IpAddr::V6(a)) => (None, Some(a.to_string())),
        None => (None, None),
    };
    Some(ZipkinEndpoint {
        service_name,
        ipv4,
        ipv6,
    })
}

fn span<'a>(r: &'a SpanRecord, service_name: &'a str) -> ZipkinSpan<'a> {
    let mut tags: BTreeMap<&str, String> = r
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_tag_string()))
        .collect();
    if let Some(c) = r.http_status_code {
        tags.insert("http.status_code", c.to_string());
        if r.is_error() {
            tags.insert("error", c.to_string());
        }
    }
    for (k, v) in [
        ("http.request.body.size", r.request_size),
        ("http.request.size", r.request_total_size),
        ("http.response.body.size", r.response_size),
        ("http.response.size", r.response_total_size),
    ] {
        if let Some(v) = v {
            tags.insert(k, v.to_string());
        }
    }
    if let Some(p) = &r.api_protocol {
        tags.insert("istio.api_protocol", p.clone());
    }
    let nanos = r.end_unix_nanos.saturating_sub(r.start_unix_nanos);
    ZipkinSpan {
        trace_id: &r.trace_id,
        id: &r.span_id,
        parent_id: r.parent_span_id.as_deref(),
        name: &r.name,
        kind: if r.client { "CLIENT" } else { "SERVER" },
        timestamp: r.start_unix_nanos / 1_000,
        duration: Some(nanos.div_ceil(1_000)).filter(|d| *d > 0),
        local_endpoint: endpoint(&r.local, Some(service_name)),
        remote_endpoint: endpoint(&r.remote, None),
        tags,
    }
}

/// The JSON body for `spans`.
pub fn encode(spans: &[SpanRecord], service_name: &str) -> Result<Vec<u8>, serde_json::Error> {
    let out: Vec<ZipkinSpan<'_>> = spans.iter().map(|r| span(r, service_name)).collect();
    serde_json::to_vec(&out)
}
