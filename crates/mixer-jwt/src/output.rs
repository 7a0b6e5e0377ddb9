//! The `jwt` template's outputs from a verified token, in Istio's `request.auth.*` forms:
//! principal `iss/sub`, audiences comma-joined, claims as a string map (strings as they are,
//! string lists comma-joined, other values as their JSON text), raw claims as the payload JSON.

use std::sync::Arc;

use mixer_attr::{StringMap, Value};
use mixer_core::adapter::{AdapterError, ApaValues};
use serde_json::Value as Json;

use crate::verify::Verified;

const OUTPUTS: [&str; 7] = [
    "principal",
    "issuer",
    "subject",
    "audiences",
    "presenter",
    "claims",
    "raw_claims",
];

/// Positions of the template's outputs, resolved once when the handler is built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Positions {
    len: usize,
    at: [usize; 7],
}

impl Positions {
    /// Resolves the positions from the `jwt` template.
    pub fn resolve() -> Result<Positions, AdapterError> {
        let template = mixer_core::template::template("jwt")
            .ok_or_else(|| AdapterError::new("this build has no `jwt` template"))?;
        let mut at = [0; 7];
        for (slot, name) in at.iter_mut().zip(OUTPUTS) {
            *slot = template
                .outputs
                .iter()
                .position(|f| f.path == name)
                .ok_or_else(|| {
                    AdapterError::new(format!("the `jwt` template has no output `{name}`"))
                })?;
        }
        Ok(Positions {
            len: template.outputs.len(),
            at,
        })
    }
}

/// A claim's value as a string-map entry.
pub(crate) fn claim_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Array(items) if items.iter().all(Json::is_string) => items
            .iter()
            .filter_map(Json::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn text(v: &Json) -> Option<Value<'static>> {
    v.as_str().map(|s| Value::String(s.to_string().into()))
}

/// The outputs of a verified token.
pub(crate) fn outputs(v: &Verified, pos: &Positions) -> ApaValues {
    let [
        principal,
        issuer,
        subject,
        audiences,
        presenter,
        claims,
        raw,
    ] = pos.at;
    let mut out = ApaValues::with_len(pos.len);
    let iss = v.claims.get("iss").and_then(Json::as_str).unwrap_or("");
    let sub = v.claims.get("sub").and_then(Json::as_str).unwrap_or("");
    if !iss.is_empty() && !sub.is_empty() {
        out.set(principal, Value::String(format!("{iss}/{sub}").into()));
    }
    if let Some(x) = v.claims.get("iss").and_then(text) {
        out.set(issuer, x);
    }
    if let Some(x) = v.claims.get("sub").and_then(text) {
        out.set(subject, x);
    }
    if let Some(aud) = v.claims.get("aud") {
        out.set(audiences, Value::String(claim_text(aud).into()));
    }
    if let Some(x) = v.claims.get("azp").and_then(text) {
        out.set(presenter, x);
    }
    let map: StringMap = v
        .claims
        .iter()
        .map(|(k, val)| (k.clone(), claim_text(val)))
        .collect();
    out.set(
        claims,
        Value::StringMap(mixer_attr::StringMapRef::Shared(Arc::new(map))),
    );
    out.set(raw, Value::String(v.raw.clone().into()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::adapter::ApaOutput;
    use serde_json::json;

    #[test]
    fn claims_become_istio_attributes() {
        let raw = r#"{"iss":"https://i","sub":"u","aud":["a","b"],"azp":"web","n":3,"o":{"x":[1]},"g":["x","y"],"m":[1,"x"]}"#;
        let claims: serde_json::Map<String, Json> = serde_json::from_str(raw).unwrap();
        let v = Verified {
            claims,
            raw: raw.to_string(),
            exp: None,
        };
        let pos = Positions::resolve().unwrap();
        let out = outputs(&v, &pos);
        let s = |i: usize| out.get(pos.at[i]).map(|v| v.to_string());
        assert_eq!(s(0).as_deref(), Some("https://i/u"));
        assert_eq!(s(1).as_deref(), Some("https://i"));
        assert_eq!(s(2).as_deref(), Some("u"));
        assert_eq!(s(3).as_deref(), Some("a,b"));
        assert_eq!(s(4).as_deref(), Some("web"));
        assert_eq!(s(6).as_deref(), Some(raw));
        let claims = out.get(pos.at[5]).unwrap();
        let map = claims.as_string_map().unwrap();
        assert_eq!(map.get("n"), Some("3"));
        assert_eq!(map.get("o"), Some(r#"{"x":[1]}"#));
        assert_eq!(map.get("g"), Some("x,y"));
        assert_eq!(map.get("m"), Some(r#"[1,"x"]"#));
        assert_eq!(map.get("aud"), Some("a,b"));
        assert_eq!(claim_text(&json!(true)), "true");
    }

    #[test]
    fn no_subject_no_principal() {
        let claims = json!({"iss": "https://i"}).as_object().unwrap().clone();
        let v = Verified {
            claims,
            raw: "{}".into(),
            exp: None,
        };
        let pos = Positions::resolve().unwrap();
        let out = outputs(&v, &pos);
        assert!(out.get(pos.at[0]).is_none());
        assert!(out.get(pos.at[2]).is_none());
        assert!(out.get(pos.at[3]).is_none());
    }
}
