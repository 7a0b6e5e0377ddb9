//! OTLP/HTTP (`POST /v1/traces`, `Content-Type: application/x-protobuf`): an
//! `ExportTraceServiceRequest` from the `opentelemetry-proto` crate, binary protobuf.
//!
//! Spans are grouped by local service: one `ResourceSpans` per local service name (resource
//! attribute `service.name`; the `serviceName` param when the span has none), each with one
//! `ScopeSpans` of scope `mixer.tracing`.
//!
//! | span field | OTLP |
//! | --- | --- |
//! | `trace_id` | `trace_id`, 16 bytes (a 64-bit id is left-padded with zeros) |
//! | `span_id`, `parent_span_id` | `span_id`, `parent_span_id`, 8 bytes (empty for a root) |
//! | `span_name` | `name` |
//! | `client_span` | `kind`: `SPAN_KIND_CLIENT` or `SPAN_KIND_SERVER` |
//! | `start_time`, `end_time` | `start_time_unix_nano`, `end_time_unix_nano` |
//! | local side's name | resource `service.name` |
//! | local side's IP | attribute `network.local.address` |
//! | remote side's name, IP | attributes `peer.service`, `network.peer.address` |
//! | `span_tags` | attributes (int, bool, double or string as the value's type) |
//! | `http_status_code` | attribute `http.response.status_code` (int); `status.code` ERROR for 5xx (and 4xx on client spans) |
//! | `request_size`, `request_total_size` | attributes `http.request.body.size`, `http.request.size` (int) |
//! | `response_size`, `response_total_size` | attributes `http.response.body.size`, `http.response.size` (int) |
//! | `api_protocol` | attribute `istio.api_protocol` |

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use prost::Message;

use super::{SpanRecord, TagValue};

/// The instrumentation scope of exported spans.
pub const SCOPE_NAME: &str = "mixer.tracing";

/// Decodes lowercase or uppercase hex (validated before); `width` bytes, left-padded.
fn hex_bytes(s: &str, width: usize) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0,
        })
        .collect();
    let bytes: Vec<u8> = digits
        .chunks(2)
        .map(|c| (c[0] << 4) | c.get(1).copied().unwrap_or(0))
        .collect();
    let mut out = vec![0u8; width.saturating_sub(bytes.len())];
    out.extend(bytes);
    out
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn any(v: &TagValue) -> any_value::Value {
    match v {
        TagValue::Str(s) => any_value::Value::StringValue(s.clone()),
        TagValue::Int(i) => any_value::Value::IntValue(*i),
        TagValue::Bool(b) => any_value::Value::BoolValue(*b),
        TagValue::Double(d) => any_value::Value::DoubleValue(*d),
    }
}

fn span(r: &SpanRecord) -> Span {
    use any_value::Value as V;
    let mut attributes: Vec<KeyValue> = r.tags.iter().map(|(k, v)| kv(k, any(v))).collect();
    if let Some(c) = r.http_status_code {
        attributes.push(kv("http.response.status_code", V::IntValue(c)));
    }
    for (k, v) in [
        ("http.request.body.size", r.request_size),
        ("http.request.size", r.request_total_size),
        ("http.response.body.size", r.response_size),
        ("http.response.size", r.response_total_size),
    ] {
        if let Some(v) = v {
            attributes.push(kv(k, V::IntValue(v)));
        }
    }
    if let Some(ip) = r.local.ip {
        attributes.push(kv("network.local.address", V::StringValue(ip.to_string())));
    }
    if let Some(n) = &r.remote.service_name {
        attributes.push(kv("peer.service", V::StringValue(n.clone())));
    }
    if let Some(ip) = r.remote.ip {
        attributes.push(kv("network.peer.address", V::StringValue(ip.to_string())));
    }
    if let Some(p) = &r.api_protocol {
        attributes.push(kv("istio.api_protocol", V::StringValue(p.clone())));
    }
    let status = r.is_error().then(|| Status {
        code: StatusCode::Error as i32,
        message: r
            .http_status_code
            .map(|c| format!("HTTP {c}"))
            .unwrap_or_default(),
    });
    Span {
        trace_id: hex_bytes(&r.trace_id, 16),
        span_id: hex_bytes(&r.span_id, 8),
        parent_span_id: r
            .parent_span_id
            .as_deref()
            .map(|p| hex_bytes(p, 8))
            .unwrap_or_default(),
        name: r.name.clone(),
        kind: if r.client {
            SpanKind::Client as i32
        } else {
            SpanKind::Server as i32
        },
        start_time_unix_nano: r.start_unix_nanos,
        end_time_unix_nano: r.end_unix_nanos,
        attributes,
        status,
        ..Default::default()
    }
}

/// The request for `spans`.
pub fn request(spans: &[SpanRecord], service_name: &str) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for r in spans {
        let name = r.local.service_name.as_deref().unwrap_or(service_name);
        by_service.entry(name).or_default().push(span(r));
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(service.to_string()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// The protobuf body for `spans`.
pub fn encode(spans: &[SpanRecord], service_name: &str) -> Vec<u8> {
    request(spans, service_name).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_padding() {
        assert_eq!(
            hex_bytes("00000000000000ab", 16),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab]
        );
        assert_eq!(hex_bytes("0102030405060708", 8), [1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
