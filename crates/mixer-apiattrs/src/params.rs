//! Handler params, in this adapter's own shape and in the shape of Istio's `HTTPAPISpec`:
//!
//! ```yaml
//! service: bookstore.example.com     # api.service (optional)
//! version: v1                        # api.version (optional)
//! protocol: http                     # api.protocol (default http)
//! operations:
//! - {name: getShelf, method: GET, template: "/shelves/{shelf}"}   # method defaults to "*"
//! patterns:                          # HTTPAPISpec form; both lists may be given
//! - attributes: {api.operation: deleteShelf}
//!   httpMethod: DELETE
//!   uriTemplate: /shelves/{shelf}
//! attributes: {api.service: bookstore.example.com, api.version: v1}   # HTTPAPISpec form
//! ```
//!
//! `attributes` may also be written as Istio's `Attributes` message
//! (`attributes: {attributes: {api.operation: {stringValue: getShelf}}}`). Errors name the field
//! (`operations[2].method`).

use mixer_core::adapter::AdapterError;
use serde_json::{Map, Value};

/// Most operations one handler may have.
pub const MAX_OPERATIONS: usize = 100_000;

/// One operation as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OperationSpec {
    /// The params field it came from (`operations[0]`, `patterns[3]`).
    pub field: String,
    /// The field holding the template (`operations[0].template`).
    pub template_field: String,
    pub name: String,
    /// `None` for any method.
    pub method: Option<String>,
    pub template: String,
}

/// The params, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub service: Option<String>,
    pub version: Option<String>,
    pub protocol: String,
    pub operations: Vec<OperationSpec>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> AdapterError {
    AdapterError::field(field, message)
}

fn object<'v>(v: &'v Value, field: &str) -> Result<&'v Map<String, Value>, AdapterError> {
    v.as_object()
        .ok_or_else(|| err(field, format!("must be a mapping, not {v}")))
}

fn string(v: &Value, field: &str) -> Result<String, AdapterError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        // Istio's `Attributes.AttributeValue`.
        Value::Object(m) if m.len() == 1 => match m.get("stringValue").or(m.get("string_value")) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(err(field, format!("must be a string, not {v}"))),
        },
        _ => Err(err(field, format!("must be a string, not {v}"))),
    }
}

fn non_empty(v: &Value, field: &str) -> Result<String, AdapterError> {
    let s = string(v, field)?;
    if s.trim().is_empty() {
        return Err(err(field, "must not be empty"));
    }
    Ok(s)
}

fn method(v: Option<&Value>, field: &str) -> Result<Option<String>, AdapterError> {
    let Some(v) = v else { return Ok(None) };
    let m = non_empty(v, field)?;
    if m == "*" {
        return Ok(None);
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !m.chars().all(token) {
        return Err(err(field, format!("`{m}` is not an HTTP method (or `*`)")));
    }
    Ok(Some(m.to_ascii_uppercase()))
}

/// The `attributes` of an HTTPAPISpec or of one of its patterns, unwrapped from Istio's
/// `Attributes` message when written that way.
fn attributes<'v>(v: &'v Value, field: &str) -> Result<&'v Map<String, Value>, AdapterError> {
    let m = object(v, field)?;
    match m.get("attributes") {
        Some(inner) if m.len() == 1 => object(inner, &format!("{field}.attributes")),
        _ => Ok(m),
    }
}

fn unknown(field: &str, key: &str, known: &str) -> AdapterError {
    err(
        if field.is_empty() {
            key.to_string()
        } else {
            format!("{field}.{key}")
        },
        format!("unknown field `{key}` (known: {known})"),
    )
}

fn list<'v>(v: &'v Value, field: &str) -> Result<&'v [Value], AdapterError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| err(field, format!("must be a list, not {v}")))
}

fn operation(v: &Value, field: String) -> Result<OperationSpec, AdapterError> {
    let m = object(v, &field)?;
    for key in m.keys() {
        if !["name", "method", "template"].contains(&key.as_str()) {
            return Err(unknown(&field, key, "name, method, template"));
        }
    }
    let name = m.get("name").ok_or_else(|| err(&field, "needs a `name`"))?;
    let template = m
        .get("template")
        .ok_or_else(|| err(&field, "needs a `template`"))?;
    Ok(OperationSpec {
        name: non_empty(name, &format!("{field}.name"))?,
        method: method(m.get("method"), &format!("{field}.method"))?,
        template: string(template, &format!("{field}.template"))?,
        template_field: format!("{field}.template"),
        field,
    })
}

fn pattern(v: &Value, field: String) -> Result<OperationSpec, AdapterError> {
    let m = object(v, &field)?;
    let (mut name, mut method_v, mut template) = (None, None, None);
    let mut template_field = format!("{field}.uriTemplate");
    for (key, value) in m {
        match key.as_str() {
            "attributes" => {
                let af = format!("{field}.attributes");
                for (attr, value) in attributes(value, &af)? {
                    match attr.as_str() {
                        "api.operation" => {
                            name = Some(non_empty(value, &format!("{af}.api.operation"))?)
                        }
                        _ => {
                            return Err(err(
                                format!("{af}.{attr}"),
                                format!("a pattern can only set `api.operation`, not `{attr}`"),
                            ));
                        }
                    }
                }
            }
            "httpMethod" | "http_method" => method_v = Some(value),
            "uriTemplate" | "uri_template" => {
                template_field = format!("{field}.{key}");
                template = Some(string(value, &template_field)?);
            }
            "regex" => {
                return Err(err(
                    format!("{field}.regex"),
                    "regex patterns are not supported: use `uriTemplate`",
                ));
            }
            _ => return Err(unknown(&field, key, "attributes, httpMethod, uriTemplate")),
        }
    }
    Ok(OperationSpec {
        name: name.ok_or_else(|| err(&field, "needs `attributes: {api.operation: <name>}`"))?,
        method: method(method_v, &format!("{field}.httpMethod"))?,
        template: template.ok_or_else(|| err(&field, "needs a `uriTemplate`"))?,
        template_field,
        field,
    })
}

fn set(slot: &mut Option<String>, v: &Value, field: &str) -> Result<(), AdapterError> {
    if slot.is_some() {
        return Err(err(field, "is given twice (directly and in `attributes`)"));
    }
    *slot = Some(non_empty(v, field)?);
    Ok(())
}

/// Reads and checks the handler's params.
pub(crate) fn parse(params: &Value) -> Result<Spec, AdapterError> {
    let mut spec = Spec {
        service: None,
        version: None,
        protocol: "http".to_string(),
        operations: Vec::new(),
    };
    let empty = Map::new();
    let m = match params {
        Value::Null => &empty,
        v => v
            .as_object()
            .ok_or_else(|| AdapterError::new(format!("params must be a mapping, not {v}")))?,
    };
    let mut protocol = None;
    for (key, value) in m {
        match key.as_str() {
            "service" => set(&mut spec.service, value, "service")?,
            "version" => set(&mut spec.version, value, "version")?,
            "protocol" => set(&mut protocol, value, "protocol")?,
            "attributes" => {
                for (attr, v) in attributes(value, "attributes")? {
                    let field = format!("attributes.{attr}");
                    match attr.as_str() {
                        "api.service" => set(&mut spec.service, v, &field)?,
                        "api.version" => set(&mut spec.version, v, &field)?,
                        "api.protocol" => set(&mut protocol, v, &field)?,
                        _ => {
                            return Err(err(
                                field,
                                format!(
                                    "`{attr}` is not one of api.service, api.version, api.protocol"
                                ),
                            ));
                        }
                    }
                }
            }
            "operations" => {
                for (i, v) in list(value, "operations")?.iter().enumerate() {
                    spec.operations
                        .push(operation(v, format!("operations[{i}]"))?);
                }
            }
            "patterns" => {
                for (i, v) in list(value, "patterns")?.iter().enumerate() {
                    spec.operations.push(pattern(v, format!("patterns[{i}]"))?);
                }
            }
            "apiKeys" | "api_keys" => {
                return Err(err(
                    key.as_str(),
                    "API keys are not read by this adapter: give an `apikey` instance an \
                     expression such as `request.query_params[\"key\"] | request.headers[\"x-api-key\"]`",
                ));
            }
            _ => {
                return Err(unknown(
                    "",
                    key,
                    "service, version, protocol, operations, patterns, attributes",
                ));
            }
        }
        if spec.operations.len() > MAX_OPERATIONS {
            return Err(err(
                key.as_str(),
                format!("more than {MAX_OPERATIONS} operations"),
            ));
        }
    }
    if let Some(p) = protocol {
        spec.protocol = p;
    }
    Ok(spec)
}
