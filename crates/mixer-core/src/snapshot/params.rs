//! Handler and instance params: protobuf `Struct` to JSON, and instance params flattened to
//! dotted field paths with their expression text.

use prost_types::value::Kind;
use serde_json::Value as Json;

/// Converts a protobuf `Struct` to a JSON object (integral numbers become JSON integers).
pub fn struct_to_json(s: &prost_types::Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// Converts a JSON object to a protobuf `Struct` (non-objects give an empty `Struct`).
pub fn json_to_struct(j: &Json) -> prost_types::Struct {
    match j {
        Json::Object(map) => prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(j: &Json) -> prost_types::Value {
    let kind = match j {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(_) => Kind::StructValue(json_to_struct(j)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn value_to_json(v: &prost_types::Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Json::Number)
                    .unwrap_or(Json::Null)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// Flattens instance params into `(dotted path, expression text)` pairs. Strings are expressions;
/// numbers and booleans are constant expressions; nulls are skipped. Lists are an error (no
/// template field is a list), reported with their path.
pub(crate) fn flatten(
    params: &Json,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    match params {
        Json::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &path, out)?;
            }
            Ok(())
        }
        Json::String(s) => {
            out.push((prefix.to_string(), s.clone()));
            Ok(())
        }
        Json::Number(n) => {
            out.push((prefix.to_string(), n.to_string()));
            Ok(())
        }
        Json::Bool(b) => {
            out.push((prefix.to_string(), b.to_string()));
            Ok(())
        }
        Json::Null => Ok(()),
        Json::Array(_) => Err(prefix.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_nested_params() {
        let mut out = Vec::new();
        flatten(&json!({"value": "1", "dimensions": {"code": "response.code | 200", "n": 3}, "x": null}), "", &mut out)
            .unwrap();
        out.sort();
        assert_eq!(
            out,
            [
                (
                    "dimensions.code".to_string(),
                    "response.code | 200".to_string()
                ),
                ("dimensions.n".to_string(), "3".to_string()),
                ("value".to_string(), "1".to_string())
            ]
        );
        assert_eq!(
            flatten(&json!({"a": {"b": [1]}}), "", &mut out),
            Err("a.b".to_string())
        );
    }

    #[test]
    fn struct_converts_to_json() {
        let s = prost_types::Struct {
            fields: [
                (
                    "n".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(2.0)),
                    },
                ),
                (
                    "f".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(0.5)),
                    },
                ),
                (
                    "s".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue("x".into())),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(struct_to_json(&s), json!({"n": 2, "f": 0.5, "s": "x"}));
    }
}
