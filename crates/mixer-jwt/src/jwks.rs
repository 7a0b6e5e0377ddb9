//! JSON Web Key Sets (RFC 7517): parsing a key set into verification keys and choosing the keys
//! that may verify a token of a given algorithm and `kid`.
//!
//! Supported keys: `RSA` (at least 2048 bits), `EC` on P-256, `OKP` Ed25519, and `oct` shared
//! secrets (at least 32 bytes, for HS256). Keys of other types, curves or uses are skipped; a set
//! with no usable key is an error.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};

/// Largest key set accepted (inline, file or fetched).
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;
/// Most keys kept from one set.
const MAX_KEYS: usize = 256;
const MIN_RSA_BITS: usize = 2048;
const MIN_HMAC_BYTES: usize = 32;

/// One verification key.
pub(crate) struct Key {
    pub kid: Option<String>,
    /// The key's `alg`, when the set names one: the key then verifies only that algorithm.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// True when the key may verify `alg` (the key type matches, and the key's own `alg`, if
    /// any, is `alg`).
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// A parsed key set.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<Key>,
    /// Why keys were left out (`kid: reason`), for messages.
    skipped: Vec<String>,
}

/// A key set could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not JSON: {0}")]
    Json(String),
    #[error("the key set is not an object with a `keys` list")]
    Shape,
    #[error("the key set has no usable key{0}")]
    NoKeys(String),
}

/// Why no key can verify a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// No key has the token's `kid`.
    UnknownKid(String),
    /// The keys with the token's `kid` are of another type (or pinned to another `alg`).
    WrongType {
        kid: String,
        family: AlgorithmFamily,
    },
    /// The token has no `kid` and no key is of the algorithm's type.
    NoneOfType,
}

impl KeySet {
    /// Parses a key set from JSON text.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| JwksError::Json(e.to_string()))?;
        KeySet::from_json(&v)
    }

    /// Parses a key set given as a JSON value.
    pub fn from_json(v: &Value) -> Result<KeySet, JwksError> {
        let keys = v
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or(JwksError::Shape)?;
        let mut set = KeySet {
            keys: Vec::new(),
            skipped: Vec::new(),
        };
        for (i, k) in keys.iter().enumerate() {
            if set.keys.len() >= MAX_KEYS {
                set.skipped
                    .push(format!("keys beyond the first {MAX_KEYS} are ignored"));
                break;
            }
            match k.as_object().ok_or_else(|| "not an object".to_string()) {
                Ok(obj) => match parse_key(obj) {
                    Ok(key) => set.keys.push(key),
                    Err(why) => set.skipped.push(format!("{}: {why}", describe(obj, i))),
                },
                Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.keys.is_empty() {
            let why = if set.skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", set.skipped.join("; "))
            };
            return Err(JwksError::NoKeys(why));
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set has no usable key (never, for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Why keys were left out.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The keys that may verify a token signed with `alg` carrying `kid`: with a `kid`, only
    /// the keys of that `kid`; without one, every key of the algorithm's type.
    pub(crate) fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<&Key>, NoKey> {
        match kid {
            Some(kid) => {
                let same: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                let Some(first) = same.first() else {
                    return Err(NoKey::UnknownKid(kid.to_string()));
                };
                let family = first.family;
                let usable: Vec<&Key> = same.into_iter().filter(|k| k.accepts(alg)).collect();
                if usable.is_empty() {
                    return Err(NoKey::WrongType {
                        kid: kid.to_string(),
                        family,
                    });
                }
                Ok(usable)
            }
            None => {
                let usable: Vec<&Key> = self.keys.iter().filter(|k| k.accepts(alg)).collect();
                if usable.is_empty() {
                    return Err(NoKey::NoneOfType);
                }
                Ok(usable)
            }
        }
    }
}

fn describe(obj: &Map<String, Value>, i: usize) -> String {
    match obj.get("kid").and_then(Value::as_str) {
        Some(kid) => format!("key `{kid}`"),
        None => format!("keys[{i}]"),
    }
}

fn string<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{field}` is missing or not a string"))
}

fn bytes(obj: &Map<String, Value>, field: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(string(obj, field)?)
        .map_err(|_| format!("`{field}` is not base64url"))
}

fn parse_key(obj: &Map<String, Value>) -> Result<Key, String> {
    let kty = string(obj, "kty")?;
    if let Some(u) = obj.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("`use` is {u}, not \"sig\""));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("`key_ops` does not include \"verify\"".into());
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(a) => {
            let name = a.as_str().ok_or("`alg` is not a string")?;
            Some(Algorithm::from_str(name).map_err(|_| format!("`alg` {name} is not supported"))?)
        }
    };
    let kid = match obj.get("kid") {
        None => None,
        Some(k) => Some(k.as_str().ok_or("`kid` is not a string")?.to_string()),
    };
    let (family, decoding) = match kty {
        "RSA" => {
            let n = bytes(obj, "n")?;
            let e = bytes(obj, "e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant * 8 < MIN_RSA_BITS {
                return Err(format!("RSA modulus shorter than {MIN_RSA_BITS} bits"));
            }
            if e.iter().all(|b| *b == 0) {
                return Err("RSA exponent is zero".into());
            }
            (
                AlgorithmFamily::Rsa,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        "EC" => {
            let crv = string(obj, "crv")?;
            if crv != "P-256" {
                return Err(format!("curve {crv} is not supported (P-256 only)"));
            }
            let (x, y) = (bytes(obj, "x")?, bytes(obj, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (AlgorithmFamily::Ec, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            let crv = string(obj, "crv")?;
            if crv != "Ed25519" {
                return Err(format!("curve {crv} is not supported (Ed25519 only)"));
            }
            let x = bytes(obj, "x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key must be 32 bytes".into());
            }
            (AlgorithmFamily::Ed, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            let k = bytes(obj, "k")?;
            if k.len() < MIN_HMAC_BYTES {
                return Err(format!("shared secret shorter than {MIN_HMAC_BYTES} bytes"));
            }
            (AlgorithmFamily::Hmac, DecodingKey::from_secret(&k))
        }
        other => return Err(format!("key type `{other}` is not supported")),
    };
    if let Some(a) = alg
        && a.family() != family
    {
        return Err(format!("`alg` {a:?} does not fit key type {kty}"));
    }
    Ok(Key {
        kid,
        alg,
        family,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(n: usize, byte: u8) -> String {
        URL_SAFE_NO_PAD.encode(vec![byte; n])
    }

    #[test]
    fn usable_keys_are_kept_and_others_explained() {
        let set = KeySet::from_json(&json!({"keys": [
            {"kty": "oct", "kid": "h", "k": b64(32, 7)},
            {"kty": "oct", "kid": "short", "k": b64(8, 7)},
            {"kty": "RSA", "kid": "small", "n": b64(128, 0xff), "e": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": b64(48, 1), "y": b64(48, 1)},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(32, 1), "use": "enc"},
            {"kty": "RSA", "kid": "rsa", "alg": "ES256", "n": b64(256, 0xff), "e": "AQAB"},
            "nonsense",
        ]}))
        .unwrap();
        assert_eq!(set.len(), 1);
        let skipped = set.skipped().join("\n");
        for why in [
            "key `short`: shared secret shorter than 32 bytes",
            "key `small`: RSA modulus shorter than 2048 bits",
            "key `p384`: curve P-384 is not supported",
            "key `ed`: `use` is \"enc\"",
            "key `rsa`: `alg` ES256 does not fit key type RSA",
            "keys[6]: not an object",
        ] {
            assert!(skipped.contains(why), "{why} in {skipped}");
        }
    }

    #[test]
    fn sets_without_usable_keys_are_errors() {
        assert_eq!(KeySet::parse(b"[]").unwrap_err(), JwksError::Shape);
        assert!(matches!(KeySet::parse(b"{"), Err(JwksError::Json(_))));
        let err = KeySet::parse(br#"{"keys": [{"kty": "X"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the key set has no usable key (keys[0]: key type `X` is not supported)"
        );
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(KeySet::parse(&big).unwrap_err(), JwksError::TooLarge);
    }

    #[test]
    fn candidates_follow_kid_and_key_type() {
        let set = KeySet::from_json(&json!({"keys": [
            {"kty": "oct", "kid": "h", "k": b64(32, 7)},
            {"kty": "RSA", "kid": "r", "n": b64(256, 0xff), "e": "AQAB"},
        ]}))
        .unwrap();
        assert_eq!(
            set.candidates(Algorithm::HS256, Some("h")).unwrap().len(),
            1
        );
        assert_eq!(
            set.candidates(Algorithm::HS256, Some("r")).unwrap_err(),
            NoKey::WrongType {
                kid: "r".into(),
                family: AlgorithmFamily::Rsa
            }
        );
        assert_eq!(
            set.candidates(Algorithm::RS256, Some("x")).unwrap_err(),
            NoKey::UnknownKid("x".into())
        );
        assert_eq!(set.candidates(Algorithm::RS256, None).unwrap().len(), 1);
        assert_eq!(
            set.candidates(Algorithm::EdDSA, None).unwrap_err(),
            NoKey::NoneOfType
        );
    }
}
