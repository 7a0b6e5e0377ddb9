//! Verifying one token: its structure, the header's algorithm against the allowlist (`none`
//! never passes), the key chosen by `kid` and key type, the signature (RustCrypto through
//! `jsonwebtoken`), then the registered claims `iss`, `aud`, `exp` and `nbf` against the
//! request's wall-clock time. Nothing in the payload is read before the signature verifies.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use mixer_attr::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwks::{Key, KeySet, NoKey};

/// Longest token accepted (before any decoding).
pub(crate) const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// What a token must satisfy besides its signature.
#[derive(Debug)]
pub(crate) struct Policy {
    pub issuers: Vec<String>,
    /// Empty: any audience (or none).
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
}

/// A token whose signature and claims verified.
#[derive(Debug)]
pub(crate) struct Verified {
    pub claims: Map<String, Value>,
    /// The payload's JSON text.
    pub raw: String,
    /// `exp`, in seconds since the epoch, when the token has one.
    pub exp: Option<f64>,
}

/// Why a token was rejected (the message of the UNAUTHENTICATED status).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsigned tokens (`alg: none`) are never accepted")]
    AlgNone,
    #[error("algorithm `{0}` is not a supported JWS algorithm")]
    UnknownAlgorithm(String),
    #[error("algorithm {0:?} is not allowed (params.algorithms)")]
    NotAllowed(Algorithm),
    #[error("the token has critical header extensions (`crit`), none of which are supported")]
    Critical,
    #[error("no key with kid `{0}` in the key set")]
    UnknownKid(String),
    #[error("key `{kid}` is {family} key and cannot verify {alg:?}")]
    KeyTypeMismatch {
        kid: String,
        family: &'static str,
        alg: Algorithm,
    },
    #[error("no key in the key set can verify {0:?}")]
    NoKeyFor(Algorithm),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has no issuer (`iss`)")]
    NoIssuer,
    #[error("issuer `{0}` is not accepted")]
    WrongIssuer(String),
    #[error("the token is not for an accepted audience")]
    WrongAudience,
    #[error("the token expired at {0}")]
    Expired(Timestamp),
    #[error("the token is not valid before {0}")]
    NotYetValid(Timestamp),
}

fn malformed(why: impl Into<String>) -> Rejection {
    Rejection::Malformed(why.into())
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "a shared-secret (oct)",
        AlgorithmFamily::Rsa => "an RSA",
        AlgorithmFamily::Ec => "an EC",
        AlgorithmFamily::Ed => "an OKP (Ed25519)",
    }
}

fn b64(segment: &str, what: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed(format!("the {what} is not base64url")))
}

/// Checks `signature` over `message` with one key.
fn signature_matches(alg: Algorithm, key: &Key, message: &[u8], signature: &[u8]) -> bool {
    let factory = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory;
    match factory(&alg, &key.decoding) {
        Ok(verifier) => verifier.verify(message, &signature.to_vec()).is_ok(),
        Err(_) => false,
    }
}

/// A NumericDate claim, in seconds.
fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| malformed(format!("`{name}` is not a number"))),
    }
}

fn at(secs: f64) -> Timestamp {
    Timestamp::new(secs.floor() as i64, 0)
}

impl Policy {
    /// Verifies `token` (prefix already stripped) against `keys` at wall time `now`.
    pub fn verify(
        &self,
        token: &str,
        keys: &KeySet,
        now: Timestamp,
    ) -> Result<Verified, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated segments"));
        };
        let header: Header = serde_json::from_slice(&b64(h, "header")?)
            .map_err(|e| malformed(format!("the header is not a JOSE header: {e}")))?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(Rejection::AlgNone);
        }
        let alg = Algorithm::from_str(&header.alg)
            .map_err(|_| Rejection::UnknownAlgorithm(header.alg.clone()))?;
        if !self.algorithms.contains(&alg) {
            return Err(Rejection::NotAllowed(alg));
        }
        if header.crit.is_some() {
            return Err(Rejection::Critical);
        }
        let signature = b64(s, "signature")?;
        if signature.is_empty() {
            return Err(malformed("the signature is empty"));
        }
        let candidates = keys
            .candidates(alg, header.kid.as_deref())
            .map_err(|e| match e {
                NoKey::UnknownKid(kid) => Rejection::UnknownKid(kid),
                NoKey::WrongType { kid, family } => Rejection::KeyTypeMismatch {
                    kid,
                    family: family_name(family),
                    alg,
                },
                NoKey::NoneOfType => Rejection::NoKeyFor(alg),
            })?;
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];
        if !candidates
            .iter()
            .any(|k| signature_matches(alg, k, message, &signature))
        {
            return Err(Rejection::BadSignature);
        }
        let payload = b64(p, "payload")?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| malformed("the payload is not a JSON object"))?;
        let raw = String::from_utf8(payload).map_err(|_| malformed("the payload is not UTF-8"))?;
        let exp = self.check_claims(&claims, now)?;
        Ok(Verified { claims, raw, exp })
    }

    /// Checks `iss`, `aud`, `sub`, `exp` and `nbf`; returns `exp`.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<Option<f64>, Rejection> {
        let iss = match claims.get("iss") {
            None => return Err(Rejection::NoIssuer),
            Some(v) => v
                .as_str()
                .ok_or_else(|| malformed("`iss` is not a string"))?,
        };
        if !self.issuers.iter().any(|i| i == iss) {
            return Err(Rejection::WrongIssuer(iss.to_string()));
        }
        if claims.get("sub").is_some_and(|s| !s.is_string()) {
            return Err(malformed("`sub` is not a string"));
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| malformed("`aud` is not a string list"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed("`aud` is not a string or a string list")),
        };
        if !self.audiences.is_empty()
            && !audiences
                .iter()
                .any(|a| self.audiences.iter().any(|w| w == a))
        {
            return Err(Rejection::WrongAudience);
        }
        let now_secs = now.unix_nanos() as f64 / 1e9;
        let skew = self.clock_skew.as_secs_f64();
        let exp = numeric(claims, "exp")?;
        if let Some(exp) = exp
            && now_secs >= exp + skew
        {
            return Err(Rejection::Expired(at(exp)));
        }
        if let Some(nbf) = numeric(claims, "nbf")?
            && now_secs + skew < nbf
        {
            return Err(Rejection::NotYetValid(at(nbf)));
        }
        Ok(exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwsHeader};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: i64 = 1_577_836_800;

    fn keys() -> KeySet {
        let k = URL_SAFE_NO_PAD.encode(SECRET);
        KeySet::from_json(&json!({"keys": [{"kty": "oct", "kid": "h", "k": k}]})).unwrap()
    }

    fn policy(audiences: &[&str]) -> Policy {
        Policy {
            issuers: vec!["https://i".into()],
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            algorithms: vec![Algorithm::HS256],
            clock_skew: Duration::from_secs(60),
        }
    }

    fn seg(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    fn hs256(claims: Value) -> String {
        let mut h = JwsHeader::new(Algorithm::HS256);
        h.kid = Some("h".into());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn verify(p: &Policy, token: &str) -> Result<Verified, Rejection> {
        p.verify(token, &keys(), Timestamp::new(T0, 0))
    }

    #[test]
    fn structure_and_header_are_checked_before_any_key() {
        let p = policy(&[]);
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        let body = seg("{}");
        for (token, want) in [
            (big, "longer than"),
            (
                format!("{}.{body}.c2ln", seg(r#"{"alg":"HS256","alg":"none"}"#)),
                "duplicate field",
            ),
            (
                format!("{}.{body}.c2ln", seg(r#"{"kid":"h"}"#)),
                "missing field `alg`",
            ),
            (
                format!("{}.{body}.", seg(r#"{"alg":"HS256"}"#)),
                "signature is empty",
            ),
            (
                format!("{}.{body}.c2ln", seg(r#"{"alg":"HS256","kid":7}"#)),
                "JOSE header",
            ),
        ] {
            match verify(&p, &token) {
                Err(Rejection::Malformed(why)) => assert!(why.contains(want), "{why}"),
                other => panic!("{want}: {other:?}"),
            }
        }
        let crit = format!("{}.{body}.c2ln", seg(r#"{"alg":"HS256","crit":["exp"]}"#));
        assert_eq!(verify(&p, &crit).unwrap_err(), Rejection::Critical);
        let odd = format!("{}.{body}.c2ln", seg(r#"{"alg":"XS999"}"#));
        assert_eq!(
            verify(&p, &odd).unwrap_err(),
            Rejection::UnknownAlgorithm("XS999".into())
        );
        let none = format!("{}.{body}.", seg(r#"{"alg":"NoNe"}"#));
        assert_eq!(verify(&p, &none).unwrap_err(), Rejection::AlgNone);
    }

    #[test]
    fn registered_claims_are_checked_after_the_signature() {
        let p = policy(&["api"]);
        let ok = verify(
            &p,
            &hs256(json!({"iss": "https://i", "aud": "api", "nbf": T0 + 30})),
        );
        assert!(ok.is_ok(), "nbf within the skew: {ok:?}");
        let v = ok.unwrap();
        assert_eq!(v.exp, None);
        assert_eq!(v.claims["aud"], "api");
        for (claims, want) in [
            (json!({"aud": "api"}), Rejection::NoIssuer),
            (
                json!({"iss": "https://j", "aud": "api"}),
                Rejection::WrongIssuer("https://j".into()),
            ),
            (json!({"iss": "https://i"}), Rejection::WrongAudience),
            (
                json!({"iss": "https://i", "aud": ["x", "y"]}),
                Rejection::WrongAudience,
            ),
            (
                json!({"iss": 5, "aud": "api"}),
                malformed("`iss` is not a string"),
            ),
            (
                json!({"iss": "https://i", "aud": 5}),
                malformed("`aud` is not a string or a string list"),
            ),
            (
                json!({"iss": "https://i", "aud": ["api", 5]}),
                malformed("`aud` is not a string list"),
            ),
            (
                json!({"iss": "https://i", "aud": "api", "sub": 5}),
                malformed("`sub` is not a string"),
            ),
            (
                json!({"iss": "https://i", "aud": "api", "exp": T0 - 60}),
                Rejection::Expired(Timestamp::new(T0 - 60, 0)),
            ),
            (
                json!({"iss": "https://i", "aud": "api", "nbf": T0 + 61}),
                Rejection::NotYetValid(Timestamp::new(T0 + 61, 0)),
            ),
        ] {
            assert_eq!(
                verify(&p, &hs256(claims.clone())).unwrap_err(),
                want,
                "{claims}"
            );
        }
        let exp = verify(
            &p,
            &hs256(json!({"iss": "https://i", "aud": "api", "exp": T0 as f64 - 59.5})),
        );
        assert_eq!(
            exp.unwrap().exp,
            Some((T0 as f64) - 59.5),
            "fractional exp within skew"
        );
    }
}
