//! The `jwt` handler's params, read field by field so every error names the field at fault.
//!
//! Field names are snake_case as documented; their camelCase spellings (`jwksUri`) are accepted
//! too, as protobuf JSON writes them.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use mixer_core::adapter::{AdapterError, Params as RawParams};
use serde_json::Value;

use crate::jwks::{KeySet, MAX_JWKS_BYTES};

/// The algorithms an allowlist may name.
pub(crate) const SUPPORTED: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
    ("HS256", Algorithm::HS256),
];
const DEFAULT_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

const FIELDS: &[&str] = &[
    "issuer",
    "issuers",
    "audiences",
    "jwks",
    "jwks_file",
    "jwks_uri",
    "jwks_cluster",
    "jwks_refresh_interval",
    "clock_skew",
    "cache_duration",
    "token_prefix",
    "algorithms",
];

/// Where the keys come from.
#[derive(Debug)]
pub(crate) enum JwksSource {
    /// `jwks` or `jwks_file`: fixed for the handler's life.
    Fixed(KeySet),
    /// `jwks_uri`: fetched through the host's HTTP client and refreshed.
    Uri(UriSource),
}

/// A key set fetched over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UriSource {
    /// What the host routes the callout by (`jwks_cluster`, else the URI's `host[:port]`).
    pub authority: String,
    pub path: String,
    pub refresh: Duration,
}

/// Validated params.
#[derive(Debug)]
pub(crate) struct Params {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub source: JwksSource,
    pub clock_skew: Duration,
    pub cache_duration: Duration,
    pub token_prefix: String,
}

fn err(field: &str, message: impl Into<String>) -> AdapterError {
    AdapterError::field(field, message)
}

fn string(field: &str, v: &Value) -> Result<String, AdapterError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| err(field, format!("expected a string, got {v}")))
}

fn non_empty(field: &str, v: &Value) -> Result<String, AdapterError> {
    let s = string(field, v)?;
    if s.trim().is_empty() {
        return Err(err(field, "must not be empty"));
    }
    Ok(s)
}

/// A list of non-empty strings (a single string is a list of one).
fn strings(field: &str, v: &Value) -> Result<Vec<String>, AdapterError> {
    match v {
        Value::String(_) => Ok(vec![non_empty(field, v)?]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| non_empty(&format!("{field}[{i}]"), item))
            .collect(),
        other => Err(err(
            field,
            format!("expected a list of strings, got {other}"),
        )),
    }
}

fn duration(field: &str, v: &Value) -> Result<Duration, AdapterError> {
    let s = string(field, v)?;
    mixer_attr::Duration::parse(&s)
        .ok()
        .and_then(mixer_attr::Duration::to_std)
        .ok_or_else(|| {
            err(
                field,
                format!("`{s}` is not a non-negative duration such as \"60s\" or \"10m\""),
            )
        })
}

fn algorithms(field: &str, v: &Value) -> Result<Vec<Algorithm>, AdapterError> {
    let names = strings(field, v)?;
    if names.is_empty() {
        return Err(err(field, "must name at least one algorithm"));
    }
    let mut out = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            return Err(err(field, "`none` (unsigned tokens) is never allowed"));
        }
        let Some((_, alg)) = SUPPORTED.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = SUPPORTED.iter().map(|(n, _)| *n).collect();
            let why = if Algorithm::from_str(&name).is_ok() {
                "is not supported"
            } else {
                "is not a JWS algorithm"
            };
            return Err(err(
                field,
                format!("`{name}` {why} (one of {})", known.join(", ")),
            ));
        };
        if !out.contains(alg) {
            out.push(*alg);
        }
    }
    Ok(out)
}

/// `http://host[:port]/path` or `https://...` -> (authority, path).
fn split_uri(field: &str, uri: &str) -> Result<(String, String), AdapterError> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| err(field, format!("`{uri}` is not an http:// or https:// URI")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(err(field, format!("`{uri}` has no usable host")));
    }
    Ok((authority.to_string(), path.to_string()))
}

fn inline_jwks(field: &str, v: &Value) -> Result<KeySet, AdapterError> {
    let set = match v {
        Value::String(text) => KeySet::parse(text.as_bytes()),
        Value::Object(_) => KeySet::from_json(v),
        other => {
            return Err(err(
                field,
                format!("expected a JWKS as JSON text, got {other}"),
            ));
        }
    };
    set.map_err(|e| err(field, e.to_string()))
}

fn file_jwks(field: &str, v: &Value) -> Result<KeySet, AdapterError> {
    let path = non_empty(field, v)?;
    let meta =
        std::fs::metadata(&path).map_err(|e| err(field, format!("cannot read `{path}`: {e}")))?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err(err(
            field,
            format!("`{path}` is larger than {MAX_JWKS_BYTES} bytes"),
        ));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| err(field, format!("cannot read `{path}`: {e}")))?;
    KeySet::parse(&bytes).map_err(|e| err(field, format!("`{path}`: {e}")))
}

impl Params {
    /// Validates `raw` (a JSON object).
    pub fn parse(raw: &RawParams) -> Result<Params, AdapterError> {
        let empty = serde_json::Map::new();
        let obj = match raw {
            Value::Null => &empty,
            Value::Object(o) => o,
            other => {
                return Err(AdapterError::new(format!(
                    "params must be a map, got {other}"
                )));
            }
        };
        let mut issuers = Vec::new();
        let mut audiences = Vec::new();
        let mut algs = DEFAULT_ALGORITHMS.to_vec();
        let mut sources: Vec<(&'static str, &Value)> = Vec::new();
        let mut cluster = None;
        let mut refresh = Duration::from_secs(600);
        let mut clock_skew = Duration::from_secs(60);
        let mut cache_duration = Duration::from_secs(300);
        let mut token_prefix = "Bearer ".to_string();
        for (key, v) in obj {
            let name = mixer_core::adapter::snake_case_key(key);
            let Some(&field) = FIELDS.iter().find(|f| **f == name) else {
                return Err(err(
                    key,
                    format!("unknown field (expected one of {})", FIELDS.join(", ")),
                ));
            };
            match field {
                "issuer" => issuers.push(non_empty(field, v)?),
                "issuers" => issuers.extend(strings(field, v)?),
                "audiences" => audiences = strings(field, v)?,
                "algorithms" => algs = algorithms(field, v)?,
                "jwks" | "jwks_file" | "jwks_uri" => sources.push((field, v)),
                "jwks_cluster" => cluster = Some(non_empty(field, v)?),
                "jwks_refresh_interval" => refresh = duration(field, v)?,
                "clock_skew" => clock_skew = duration(field, v)?,
                "cache_duration" => cache_duration = duration(field, v)?,
                // "token_prefix", the last of FIELDS.
                _ => token_prefix = string(field, v)?,
            }
        }
        if issuers.is_empty() {
            return Err(err(
                "issuer",
                "is required (or `issuers`): tokens are accepted only from named issuers",
            ));
        }
        let source = match sources.as_slice() {
            [] => {
                return Err(err(
                    "jwks",
                    "one of `jwks`, `jwks_file` or `jwks_uri` is required",
                ));
            }
            [("jwks", v)] => JwksSource::Fixed(inline_jwks("jwks", v)?),
            [("jwks_file", v)] => JwksSource::Fixed(file_jwks("jwks_file", v)?),
            [(_, v)] => {
                let uri = non_empty("jwks_uri", v)?;
                let (authority, path) = split_uri("jwks_uri", &uri)?;
                if refresh.is_zero() {
                    return Err(err("jwks_refresh_interval", "must be positive"));
                }
                JwksSource::Uri(UriSource {
                    authority: cluster.take().unwrap_or(authority),
                    path,
                    refresh,
                })
            }
            [.., (second, _)] => {
                return Err(err(
                    second,
                    "give only one of `jwks`, `jwks_file` and `jwks_uri`",
                ));
            }
        };
        if cluster.is_some() {
            return Err(err("jwks_cluster", "applies only with `jwks_uri`"));
        }
        Ok(Params {
            issuers,
            audiences,
            algorithms: algs,
            source,
            clock_skew,
            cache_duration,
            token_prefix,
        })
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
