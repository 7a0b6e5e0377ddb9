//! Typed JSON (DESIGN section 9): how attribute values are written in test cases, request files
//! and CLI output. Strings for STRING/DNS_NAME/EMAIL_ADDRESS/URI, integers for INT64, numbers for
//! DOUBLE, booleans, RFC 3339 strings for TIMESTAMP, `"1.5s"` strings for DURATION, textual
//! addresses for IP_ADDRESS, objects of strings for STRING_MAP.

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::Value as Json;

use crate::bag::Attributes;
use crate::time_values::{Duration, Timestamp};
use crate::value::{StringMap, Value, ValueType};
use crate::vocabulary::Vocabulary;

/// A JSON value that does not fit the attribute's type, or an unknown attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonValueError {
    #[error("attribute `{name}`: expected {expected} as {shape}, got {got}")]
    Mismatch {
        name: String,
        expected: ValueType,
        shape: &'static str,
        got: String,
    },
    #[error("unknown attribute `{0}` (not in the vocabulary; declare it in an attribute manifest)")]
    UnknownAttribute(String),
    #[error("attributes must be a JSON object, got {0}")]
    NotAnObject(String),
}

fn shape(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Int64 => "an integer",
        ValueType::Double => "a number",
        ValueType::Bool => "a boolean",
        ValueType::Timestamp => "an RFC 3339 string",
        ValueType::Duration => "a duration string such as \"1.5s\"",
        ValueType::IpAddress => "an IP address string",
        ValueType::StringMap => "an object of strings",
        _ => "a string",
    }
}

fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Parses `json` as a value of type `ty`; `name` is used in the error message.
pub fn value_from_json(
    name: &str,
    ty: ValueType,
    json: &Json,
) -> Result<Value<'static>, JsonValueError> {
    let mismatch = || JsonValueError::Mismatch {
        name: name.to_string(),
        expected: ty,
        shape: shape(ty),
        got: short(json),
    };
    let string = || {
        json.as_str()
            .map(|s| Cow::Owned(s.to_string()))
            .ok_or_else(mismatch)
    };
    Ok(match ty {
        ValueType::String => Value::String(string()?),
        ValueType::EmailAddress => Value::EmailAddress(string()?),
        ValueType::Uri => Value::Uri(string()?),
        ValueType::DnsName => Value::DnsName(string()?),
        ValueType::Int64 => Value::Int64(match json {
            Json::Number(n) => n.as_i64().ok_or_else(mismatch)?,
            Json::String(s) => s.parse().map_err(|_| mismatch())?,
            _ => return Err(mismatch()),
        }),
        ValueType::Double => Value::Double(match json {
            Json::Number(n) => n.as_f64().ok_or_else(mismatch)?,
            Json::String(s) if s == "NaN" => f64::NAN,
            Json::String(s) if s == "Infinity" => f64::INFINITY,
            Json::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(mismatch()),
        }),
        ValueType::Bool => Value::Bool(json.as_bool().ok_or_else(mismatch)?),
        ValueType::Timestamp => Value::Timestamp(
            json.as_str()
                .and_then(|s| Timestamp::parse_rfc3339(s).ok())
                .ok_or_else(mismatch)?,
        ),
        ValueType::Duration => Value::Duration(
            json.as_str()
                .and_then(|s| Duration::parse(s).ok())
                .ok_or_else(mismatch)?,
        ),
        ValueType::IpAddress => Value::IpAddress(
            json.as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .ok_or_else(mismatch)?,
        ),
        ValueType::StringMap => {
            let obj = json.as_object().ok_or_else(mismatch)?;
            let mut map = StringMap::new();
            for (k, v) in obj {
                map.insert(k.clone(), v.as_str().ok_or_else(mismatch)?.to_string());
            }
            Value::string_map(map)
        }
    })
}

/// The typed JSON form of a value (DOUBLE infinities and NaN as strings, as proto3 JSON does).
pub fn value_to_json(v: &Value<'_>) -> Json {
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            Json::String(s.to_string())
        }
        Value::Int64(i) => Json::from(*i),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or_else(|| {
                Json::String(
                    if d.is_nan() {
                        "NaN"
                    } else if *d > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    }
                    .to_string(),
                )
            }),
        Value::Bool(b) => Json::Bool(*b),
        Value::Timestamp(t) => Json::String(t.to_string()),
        Value::Duration(d) => Json::String(d.to_string()),
        Value::IpAddress(ip) => Json::String(ip.to_string()),
        Value::StringMap(m) => {
            let mut obj = serde_json::Map::new();
            m.view().for_each_entry(&mut |k, v| {
                obj.insert(k.to_string(), Json::String(v.to_string()));
            });
            Json::Object(obj)
        }
    }
}

/// Builds a bag from a JSON object of `{attribute name: typed value}`; every name must be in
/// `vocab`.
pub fn attributes_from_json(
    vocab: &Vocabulary,
    json: &Json,
) -> Result<Attributes<'static>, JsonValueError> {
    let obj = json
        .as_object()
        .ok_or_else(|| JsonValueError::NotAnObject(short(json)))?;
    let mut bag = Attributes::with_capacity(obj.len());
    for (name, v) in obj {
        let (id, ty) = vocab
            .lookup_typed(name)
            .ok_or_else(|| JsonValueError::UnknownAttribute(name.clone()))?;
        bag.set(id, value_from_json(name, ty, v)?);
    }
    Ok(bag)
}

/// The JSON object form of a bag, keyed by attribute name.
pub fn attributes_to_json(vocab: &Vocabulary, bag: &dyn crate::Bag) -> Json {
    let mut obj = serde_json::Map::new();
    bag.for_each(&mut |id, v| {
        obj.insert(vocab.name(id).to_string(), value_to_json(&v));
    });
    Json::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bag;
    use crate::vocabulary::well_known as wk;
    use serde_json::json;

    #[test]
    fn every_type_round_trips() {
        let samples = [
            (ValueType::String, json!("s")),
            (ValueType::Int64, json!(-5)),
            (ValueType::Double, json!(1.25)),
            (ValueType::Bool, json!(true)),
            (ValueType::Timestamp, json!("2017-01-02T15:04:05.5Z")),
            (ValueType::IpAddress, json!("10.0.0.1")),
            (ValueType::EmailAddress, json!("a@b.c")),
            (ValueType::Uri, json!("http://x/y")),
            (ValueType::DnsName, json!("x.y")),
            (ValueType::Duration, json!("1.5s")),
            (ValueType::StringMap, json!({"a": "b"})),
        ];
        for (ty, j) in samples {
            let v = value_from_json("x", ty, &j).unwrap();
            assert_eq!(v.value_type(), ty);
            assert_eq!(value_to_json(&v), j, "{ty}");
        }
    }

    #[test]
    fn mismatches_are_errors() {
        assert!(value_from_json("x", ValueType::Int64, &json!("ten")).is_err());
        assert!(value_from_json("x", ValueType::IpAddress, &json!("300.1.1.1")).is_err());
        assert!(value_from_json("x", ValueType::StringMap, &json!({"a": 1})).is_err());
        let e = value_from_json("response.code", ValueType::Int64, &json!(1.5)).unwrap_err();
        assert!(e.to_string().contains("response.code"), "{e}");
    }

    #[test]
    fn bags_from_json() {
        let vocab = Vocabulary::istio();
        let bag = attributes_from_json(
            &vocab,
            &json!({"response.code": 200, "request.headers": {"user-agent": "curl"}}),
        )
        .unwrap();
        assert_eq!(bag.get(wk::RESPONSE_CODE), Some(Value::Int64(200)));
        assert!(attributes_from_json(&vocab, &json!({"no.such": 1})).is_err());
        assert!(attributes_from_json(&vocab, &json!([1])).is_err());
        assert_eq!(
            attributes_to_json(&vocab, &bag)["response.code"],
            json!(200)
        );
    }
}
