//! The `jwt` adapter through a real Pipeline (Istio-form YAML, VirtualPlatform) with tokens
//! signed by PyJWT: valid tokens per algorithm and their attributes, every kind of bad token
//! under fail-close and fail-open, missing tokens, and the per-token verification cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mixer_core::Code;

fn file_params() -> String {
    format!("    jwks_file: {}", jwks_file())
}

fn with_hs256() -> String {
    format!(
        "{}\n    algorithms: [RS256, ES256, EdDSA, HS256]",
        file_params()
    )
}

#[test]
fn valid_tokens_of_each_algorithm_are_allowed_with_their_attributes() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(&with_hs256(), "FAIL_CLOSE"));
    for (name, sub) in [
        ("rs256_valid", "user-rs256"),
        ("es256_valid", "user-es256"),
        ("eddsa_valid", "user-eddsa"),
        ("hs256_valid", "user-hs256"),
    ] {
        let o = check(&vt, &p, Some(&bearer(fx.token(name))));
        assert_eq!(o.code, Code::OK, "{name}: {}", o.message);
        assert_eq!(o.header("x-principal"), format!("{}/{sub}", fx.issuer));
        assert_eq!(o.header("x-issuer"), fx.issuer);
        assert_eq!(o.header("x-subject"), sub);
        assert_eq!(o.header("x-audiences"), "bookinfo");
        assert_eq!(o.header("x-presenter"), "frontend");
        assert_eq!(o.header("x-email"), "alice@example.com");
        assert_eq!(
            o.header("x-groups"),
            "admin,dev",
            "string lists comma-joined"
        );
        assert_eq!(o.header("x-level"), "3", "numbers as JSON text");
        assert_eq!(
            o.header("x-scope"),
            r#"{"read":true}"#,
            "objects as JSON text"
        );
        let raw: serde_json::Value = serde_json::from_str(o.header("x-raw")).unwrap();
        assert_eq!(raw["sub"], sub, "raw claims are the payload JSON");
    }
    assert_eq!(stat(&p, |s| &s.verified), 4);
    assert_eq!(stat(&p, |s| &s.rejected), 0);
}

#[test]
fn key_choice_audience_lists_and_the_produced_principal_in_a_check() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(&file_params(), "FAIL_CLOSE"));
    let o = check(&vt, &p, Some(&bearer(fx.token("rs256_aud_list"))));
    assert_eq!(o.code, Code::OK, "{}", o.message);
    assert_eq!(o.header("x-audiences"), "other,bookinfo");
    // Without a kid every EC key is tried; the listchecker then denies the produced principal.
    let o = check(&vt, &p, Some(&bearer(fx.token("es256_no_kid"))));
    assert_eq!(o.code, Code::PERMISSION_DENIED, "{}", o.message);
    assert_eq!(o.message, format!("{BLOCKED} is blacklisted"));
    // The prefix is matched case-insensitively; surrounding spaces are dropped.
    let lower = format!("bearer   {}  ", fx.token("rs256_no_exp"));
    let o = check(&vt, &p, Some(&lower));
    assert_eq!(o.code, Code::OK, "{}", o.message);
    assert_eq!(o.header("x-subject"), "user-noexp");
}

/// Bad tokens and the reason each is rejected with, under the default algorithms.
fn bad_tokens() -> Vec<(&'static str, &'static str)> {
    vec![
        ("rs256_expired", "the token expired at 2019-12-31T23:00:00Z"),
        (
            "rs256_not_yet_valid",
            "not valid before 2020-01-01T01:00:00Z",
        ),
        ("rs256_wrong_audience", "not for an accepted audience"),
        (
            "rs256_wrong_issuer",
            "issuer `https://evil.example` is not accepted",
        ),
        ("rs256_forged", "the signature does not verify"),
        ("rs256_tampered", "the signature does not verify"),
        ("rs256_array_payload", "the payload is not a JSON object"),
        ("rs256_string_exp", "malformed token: `exp` is not a number"),
        ("rs384_not_allowed", "algorithm RS384 is not allowed"),
        ("rs256_unknown_kid", "no key with kid `no-such-kid`"),
        ("rs256_rotated", "no key with kid `rsa-2`"),
        (
            "alg_none",
            "unsigned tokens (`alg: none`) are never accepted",
        ),
        ("hs256_valid", "algorithm HS256 is not allowed"),
        ("hs256_confusion", "algorithm HS256 is not allowed"),
    ]
}

#[test]
fn bad_tokens_are_denied_unauthenticated_when_fail_close() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(&file_params(), "FAIL_CLOSE"));
    let bad = bad_tokens();
    for (name, why) in &bad {
        let o = check(&vt, &p, Some(&bearer(fx.token(name))));
        assert_eq!(o.code, Code::UNAUTHENTICATED, "{name}: {}", o.message);
        assert!(
            o.message.contains(why),
            "{name}: `{}` lacks `{why}`",
            o.message
        );
        assert!(o.message.starts_with("invalid JWT: "), "{}", o.message);
    }
    for token in &fx.malformed {
        let o = check(&vt, &p, Some(&bearer(token)));
        assert_eq!(o.code, Code::UNAUTHENTICATED, "{token}: {}", o.message);
        assert!(
            o.message.contains("malformed token"),
            "{token}: {}",
            o.message
        );
    }
    let total = (bad.len() + fx.malformed.len()) as u64;
    assert_eq!(stat(&p, |s| &s.rejected), total);
    assert_eq!(stat(&p, |s| &s.verified), 0);
}

#[test]
fn algorithm_confusion_is_rejected_even_with_hs256_allowed() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(&with_hs256(), "FAIL_CLOSE"));
    let o = check(&vt, &p, Some(&bearer(fx.token("hs256_confusion"))));
    assert_eq!(o.code, Code::UNAUTHENTICATED);
    assert!(
        o.message
            .contains("key `rsa-1` is an RSA key and cannot verify HS256"),
        "{}",
        o.message
    );
    // Without a kid only the `oct` key is tried, and the RSA-PEM-keyed MAC does not match it.
    let o = check(&vt, &p, Some(&bearer(fx.token("hs256_confusion_no_kid"))));
    assert_eq!(o.code, Code::UNAUTHENTICATED);
    assert!(
        o.message.contains("signature does not verify"),
        "{}",
        o.message
    );
    let o = check(&vt, &p, Some(&bearer(fx.token("alg_none"))));
    assert_eq!(o.code, Code::UNAUTHENTICATED, "none stays rejected");
}

#[test]
fn bad_tokens_pass_without_attributes_when_fail_open() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(&file_params(), "FAIL_OPEN"));
    let mut n = 0;
    let names = bad_tokens();
    let tokens = names
        .iter()
        .map(|(name, _)| fx.token(name))
        .chain(fx.malformed.iter().map(String::as_str));
    for token in tokens {
        n += 1;
        let o = check(&vt, &p, Some(&bearer(token)));
        assert_eq!(o.code, Code::OK, "{token}: {}", o.message);
        assert_eq!(o.header("x-principal"), "none", "no attribute was bound");
        assert_eq!(o.header("x-email"), "none");
    }
    let failures = p
        .stats()
        .handler_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failures, n);
    // A good token still produces its attributes.
    let o = check(&vt, &p, Some(&bearer(fx.token("es256_valid"))));
    assert_eq!(o.header("x-subject"), "user-es256");
}

#[test]
fn a_missing_or_foreign_token_produces_nothing() {
    let (vt, p) = setup(&config_yaml(&file_params(), "FAIL_CLOSE"));
    for auth in [
        None,
        Some(""),
        Some("Bearer "),
        Some("Basic YWxhZGRpbjpvcGVu"),
    ] {
        let o = check(&vt, &p, auth);
        assert_eq!(o.code, Code::OK, "{auth:?}: {}", o.message);
        // The stage ran with no outputs: the bindings' defaults apply.
        assert_eq!(o.header("x-principal"), "", "{auth:?}");
        assert_eq!(o.header("x-email"), "none", "{auth:?}: empty claims map");
    }
    assert_eq!(stat(&p, |s| &s.verifications), 0);
}

#[test]
fn verification_is_cached_per_token_until_expiry() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(&file_params(), "FAIL_CLOSE"));
    let rs = bearer(fx.token("rs256_valid"));
    let es = bearer(fx.token("es256_valid"));
    assert_eq!(check(&vt, &p, Some(&rs)).code, Code::OK);
    let again = check(&vt, &p, Some(&rs));
    assert_eq!(again.code, Code::OK);
    assert_eq!(
        again.header("x-subject"),
        "user-rs256",
        "cached outputs bind the same"
    );
    assert_eq!(
        stat(&p, |s| &s.verifications),
        1,
        "second check hit the cache"
    );
    assert_eq!(check(&vt, &p, Some(&es)).code, Code::OK);
    assert_eq!(check(&vt, &p, Some(&rs)).code, Code::OK);
    assert_eq!(stat(&p, |s| &s.verifications), 2);
    // cache_duration (5m) bounds the reuse of a long-lived token.
    vt.advance(Duration::from_secs(301));
    assert_eq!(check(&vt, &p, Some(&rs)).code, Code::OK);
    assert_eq!(stat(&p, |s| &s.verifications), 3);
    // Rejections are never cached.
    let bad = bearer(fx.token("rs256_forged"));
    check(&vt, &p, Some(&bad));
    check(&vt, &p, Some(&bad));
    assert_eq!(stat(&p, |s| &s.verifications), 5);
}

#[test]
fn expiry_follows_the_platform_clock_with_skew() {
    // `rs256_expires_soon` expires at T0 + 600s; VirtualPlatform's wall clock starts at T0.
    let fx = fixtures();
    assert_eq!(fx.t0, 1_577_836_800);
    let (vt, p) = setup(&config_yaml(&file_params(), "FAIL_CLOSE"));
    let soon = bearer(fx.token("rs256_expires_soon"));
    let verifications = || stat(&p, |s| &s.verifications);
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    vt.advance(Duration::from_secs(299));
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    assert_eq!(verifications(), 1, "cached for min(exp - now, 5m)");
    vt.advance(Duration::from_secs(2));
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    assert_eq!(verifications(), 2, "re-verified, cached for the 299s left");
    vt.advance(Duration::from_secs(298));
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    assert_eq!(verifications(), 2);
    // Past exp but within the 60s clock skew: accepted, and no longer cached.
    vt.advance(Duration::from_secs(30));
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    assert_eq!(verifications(), 4);
    vt.advance(Duration::from_secs(31));
    let o = check(&vt, &p, Some(&soon));
    assert_eq!(o.code, Code::UNAUTHENTICATED);
    assert!(
        o.message
            .contains("the token expired at 2020-01-01T00:10:00Z"),
        "{}",
        o.message
    );
}

#[test]
fn inline_jwks_and_zero_skew() {
    let fx = fixtures();
    // The JWKS inline as a JSON string (YAML single-quoted), no clock skew, no audiences.
    let yaml = config_yaml(
        &format!(
            "    jwks: '{}'\n    clock_skew: 0s",
            JWKS.replace('\n', " ")
        ),
        "FAIL_CLOSE",
    )
    .replace("    audiences: [bookinfo]\n", "");
    let (vt, p) = setup(&yaml);
    let soon = bearer(fx.token("rs256_expires_soon"));
    vt.advance(Duration::from_secs(599));
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::OK);
    vt.advance(Duration::from_secs(1));
    assert_eq!(check(&vt, &p, Some(&soon)).code, Code::UNAUTHENTICATED);
    let o = check(&vt, &p, Some(&bearer(fx.token("rs256_wrong_audience"))));
    assert_eq!(o.code, Code::OK, "no audiences configured: any audience");
}

#[test]
fn bad_params_are_config_errors_naming_the_field() {
    let vt = mixer_core::pal::virtual_time::VirtualPlatform::new();
    for (params, field) in [
        ("    jwks_file: /nonexistent.json", "params.jwks_file"),
        ("    jwks: '{\"keys\": []}'", "params.jwks"),
        (
            "    jwks_uri: ftp://keys.example/jwks.json",
            "params.jwks_uri",
        ),
        (
            "    jwks_file: /x\n    algorithms: [none]",
            "params.algorithms",
        ),
        (
            "    jwksFile: /x\n    cache_duration: forever",
            "params.cache_duration",
        ),
    ] {
        let loaded =
            mixer_config::load_str("jwt.yaml", &config_yaml(params, "FAIL_CLOSE")).unwrap();
        let errors = mixer_config::compile_loaded(
            &loaded,
            &registry(),
            &vt.platform(),
            None,
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(errors[0].field, field, "{:?}", errors);
        assert_eq!(errors[0].object, "handler/istio-system/jwt");
    }
}
