//! A `jwks_uri` key set fetched through the PAL's HTTP callouts on a VirtualPlatform: the first
//! fetch, refreshes on PAL timers, the last good set kept (and failures counted) when a refresh
//! fails or brings a malformed set, key rotation, and the loop ending with its handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use mixer_core::Code;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{CalloutError, HttpResponse};

const URI_PARAMS: &str =
    "    jwks_uri: http://keys.local:8080/.well-known/jwks.json\n    jwks_refresh_interval: 10m";

fn body(status: u16, text: &str) -> Result<HttpResponse, CalloutError> {
    Ok(HttpResponse {
        status,
        headers: vec![],
        body: Bytes::from(text.to_string()),
    })
}

/// Answers the one outstanding JWKS fetch.
fn answer(vt: &VirtualPlatform, result: Result<HttpResponse, CalloutError>) {
    let calls = vt.http_requests();
    assert_eq!(calls.len(), 1, "one fetch outstanding");
    assert!(vt.respond_http(calls[0].0, result));
}

#[test]
fn keys_are_fetched_refreshed_and_kept_when_a_refresh_fails() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(URI_PARAMS, "FAIL_CLOSE"));
    let calls = vt.http_requests();
    assert_eq!(calls.len(), 1, "fetched when the handler is built");
    let req = &calls[0].1;
    assert_eq!(
        (
            req.authority.as_str(),
            req.method.as_str(),
            req.path.as_str()
        ),
        ("keys.local:8080", "GET", "/.well-known/jwks.json")
    );
    let rs = bearer(fx.token("rs256_valid"));
    // No key set yet: a token cannot be verified (a failure, not a rejection).
    let o = check(&vt, &p, Some(&rs));
    assert_eq!(o.code, Code::UNAVAILABLE, "{}", o.message);
    assert!(o.message.contains("not fetched yet"), "{}", o.message);
    assert_eq!(stat(&p, |s| &s.unavailable), 1);

    answer(&vt, body(200, JWKS));
    assert_eq!(with_handler(&p, |h| h.key_count()), 4);
    assert_eq!(check(&vt, &p, Some(&rs)).code, Code::OK);
    let rotated = bearer(fx.token("rs256_rotated"));
    assert_eq!(check(&vt, &p, Some(&rotated)).code, Code::UNAUTHENTICATED);

    // Refreshes that fail in every way keep the last good set.
    let failures: [Result<HttpResponse, CalloutError>; 4] = [
        body(503, "unavailable"),
        body(200, "{not json"),
        body(
            200,
            r#"{"keys": [{"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"}]}"#,
        ),
        Err(CalloutError::Connection("refused".into())),
    ];
    for (i, result) in failures.into_iter().enumerate() {
        vt.advance(Duration::from_secs(600));
        answer(&vt, result);
        assert_eq!(stat(&p, |s| &s.jwks_refresh_failures), i as u64 + 1);
        assert_eq!(with_handler(&p, |h| h.key_count()), 4, "last good set kept");
        let o = check(&vt, &p, Some(&rs));
        assert_eq!(o.code, Code::OK, "after failure {i}: {}", o.message);
    }
    let why = with_handler(&p, |h| h.last_jwks_error()).unwrap();
    assert!(why.contains("refused"), "{why}");
    // A timed-out fetch counts too (the callout's timeout passes in virtual time).
    vt.advance(Duration::from_secs(600));
    assert_eq!(vt.http_requests().len(), 1);
    vt.advance(Duration::from_secs(10));
    assert_eq!(stat(&p, |s| &s.jwks_refresh_failures), 5);
    assert!(
        with_handler(&p, |h| h.last_jwks_error())
            .unwrap()
            .contains("timed out")
    );

    // The keys rotate: the new key verifies, the old one is gone once cached answers expire.
    vt.advance(Duration::from_secs(600));
    answer(&vt, body(200, JWKS_ROTATED));
    assert_eq!(with_handler(&p, |h| h.key_count()), 1);
    assert!(with_handler(&p, |h| h.last_jwks_error()).is_none());
    assert_eq!(check(&vt, &p, Some(&rotated)).code, Code::OK);
    let o = check(&vt, &p, Some(&rs));
    assert_eq!(o.code, Code::UNAUTHENTICATED);
    assert!(
        o.message.contains("no key with kid `rsa-1`"),
        "{}",
        o.message
    );
    assert_eq!(stat(&p, |s| &s.jwks_fetches), 7);
}

#[test]
fn a_failed_first_fetch_is_retried_sooner() {
    let fx = fixtures();
    let (vt, p) = setup(&config_yaml(URI_PARAMS, "FAIL_OPEN"));
    answer(&vt, body(404, "not found"));
    assert!(vt.http_requests().is_empty());
    // Fail-open: without keys the request goes on without attributes.
    let o = check(&vt, &p, Some(&bearer(fx.token("es256_valid"))));
    assert_eq!(o.code, Code::OK);
    assert_eq!(o.header("x-principal"), "none");
    vt.advance(Duration::from_secs(5));
    answer(&vt, body(200, JWKS));
    let o = check(&vt, &p, Some(&bearer(fx.token("es256_valid"))));
    assert_eq!(o.header("x-subject"), "user-es256");
    // Then the regular interval applies.
    vt.advance(Duration::from_secs(599));
    assert!(vt.http_requests().is_empty());
    vt.advance(Duration::from_secs(1));
    assert_eq!(vt.http_requests().len(), 1);
}

#[test]
fn refreshing_stops_with_the_handler() {
    let (vt, p) = setup(&config_yaml(URI_PARAMS, "FAIL_CLOSE"));
    let calls = vt.http_requests();
    drop(p);
    // The answer to the outstanding fetch finds no handler and schedules nothing.
    assert!(vt.respond_http(calls[0].0, body(200, JWKS)));
    assert_eq!(vt.pending_timers(), 0);
    vt.advance(Duration::from_secs(3600));
    assert!(vt.http_requests().is_empty());
}

#[test]
fn jwks_cluster_names_the_callout_authority() {
    let params = "    jwks_uri: https://idp.example.com/keys\n    jwks_cluster: outbound|443||idp.example.com";
    let (vt, _p) = setup(&config_yaml(params, "FAIL_CLOSE"));
    let calls = vt.http_requests();
    assert_eq!(calls[0].1.authority, "outbound|443||idp.example.com");
    assert_eq!(calls[0].1.path, "/keys");
}
