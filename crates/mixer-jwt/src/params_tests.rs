//! Tests of the params parser: defaults, spellings, and errors naming their field.

use super::*;
use serde_json::json;

const JWKS: &str =
    r#"{"keys":[{"kty":"oct","kid":"h","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;

fn field_of(params: Value) -> (Option<String>, String) {
    let e = Params::parse(&params).unwrap_err();
    (e.field, e.message)
}

#[test]
fn defaults_and_camel_case() {
    let p = Params::parse(&json!({
        "issuer": "https://a", "jwksUri": "https://keys.example/jwks.json",
        "jwksRefreshInterval": "1m", "audiences": "svc",
    }))
    .unwrap();
    assert_eq!(p.issuers, ["https://a"]);
    assert_eq!(p.audiences, ["svc"]);
    assert_eq!(
        p.algorithms,
        [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
    );
    assert_eq!(p.clock_skew, Duration::from_secs(60));
    assert_eq!(p.cache_duration, Duration::from_secs(300));
    assert_eq!(p.token_prefix, "Bearer ");
    match p.source {
        JwksSource::Uri(u) => assert_eq!(
            u,
            UriSource {
                authority: "keys.example".into(),
                path: "/jwks.json".into(),
                refresh: Duration::from_secs(60)
            }
        ),
        JwksSource::Fixed(_) => panic!("uri expected"),
    }
}

#[test]
fn errors_name_the_field() {
    let jwks = json!(JWKS);
    for (params, field, says) in [
        (json!({"jwks": jwks}), "issuer", "is required"),
        (json!({"issuer": "i"}), "jwks", "is required"),
        (json!({"issuer": "", "jwks": jwks}), "issuer", "empty"),
        (json!({"issuer": "i", "jwks": "{}"}), "jwks", "`keys` list"),
        (
            json!({"issuer": "i", "jwks": jwks, "jwks_uri": "http://x/"}),
            "jwks_uri",
            "only one",
        ),
        (
            json!({"issuer": "i", "jwks_uri": "ftp://x/"}),
            "jwks_uri",
            "http://",
        ),
        (
            json!({"issuer": "i", "jwks_file": "/nonexistent/jwks.json"}),
            "jwks_file",
            "cannot read",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "algorithms": ["none"]}),
            "algorithms",
            "never allowed",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "algorithms": ["PS256"]}),
            "algorithms",
            "not supported",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "algorithms": ["XX1"]}),
            "algorithms",
            "not a JWS",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "algorithms": []}),
            "algorithms",
            "at least one",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "clock_skew": "soon"}),
            "clock_skew",
            "duration",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "cache_duration": 5}),
            "cache_duration",
            "string",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "audiences": [1]}),
            "audiences[0]",
            "string",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "jwks_cluster": "c"}),
            "jwks_cluster",
            "only with",
        ),
        (
            json!({"issuer": "i", "jwks": jwks, "issuer_url": "x"}),
            "issuer_url",
            "unknown field",
        ),
        (
            json!({"issuer": "i", "jwks_uri": "http://k/", "jwks_refresh_interval": "0s"}),
            "jwks_refresh_interval",
            "positive",
        ),
    ] {
        let (f, message) = field_of(params);
        assert_eq!(f.as_deref(), Some(field), "{message}");
        assert!(message.contains(says), "{field}: {message}");
    }
    assert!(Params::parse(&json!(["x"])).unwrap_err().field.is_none());
}

#[test]
fn hs256_and_issuers_lists() {
    let p = Params::parse(&json!({
        "issuers": ["a", "b"], "issuer": "c", "jwks": JWKS,
        "algorithms": ["HS256", "RS256", "HS256"], "token_prefix": "",
        "jwks_cluster": null,
    }));
    // `jwks_cluster: null` is not a string.
    assert_eq!(p.unwrap_err().field.as_deref(), Some("jwks_cluster"));
    let p = Params::parse(&json!({
        "issuers": ["a", "b"], "issuer": "c", "jwks": JWKS,
        "algorithms": ["HS256", "RS256", "HS256"], "token_prefix": "",
    }))
    .unwrap();
    let mut issuers = p.issuers.clone();
    issuers.sort();
    assert_eq!(issuers, ["a", "b", "c"]);
    assert_eq!(p.algorithms, [Algorithm::HS256, Algorithm::RS256]);
    assert_eq!(p.token_prefix, "");
}
