//! Shared setup of the `jwt` integration tests: the PyJWT-signed fixtures, an Istio-form YAML
//! config (a `jwt` handler, a `kind: jwt` instance with attribute bindings, a listchecker
//! check on the produced principal, header operations that show the produced attributes), and
//! a Pipeline on a VirtualPlatform.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::HeaderChange;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{AdapterRegistry, CheckStart, Code, CompileOptions, Pipeline};
use mixer_jwt::{JwtAdapter, JwtHandler, JwtStats};
use serde::Deserialize;

/// `tests/fixtures/tokens.json`.
#[derive(Deserialize)]
pub struct Fixtures {
    pub t0: i64,
    pub issuer: String,
    pub tokens: BTreeMap<String, String>,
    pub malformed: Vec<String>,
}

pub fn fixtures() -> Fixtures {
    serde_json::from_str(include_str!("../fixtures/tokens.json")).expect("tokens.json")
}

impl Fixtures {
    pub fn token(&self, name: &str) -> &str {
        self.tokens
            .get(name)
            .unwrap_or_else(|| panic!("no token {name}"))
    }
}

pub const JWKS: &str = include_str!("../fixtures/jwks.json");
pub const JWKS_ROTATED: &str = include_str!("../fixtures/jwks_rotated.json");

pub fn jwks_file() -> String {
    format!("{}/tests/fixtures/jwks.json", env!("CARGO_MANIFEST_DIR"))
}

/// The principal the listchecker denies (the kid-less ES256 token's).
pub const BLOCKED: &str = "https://issuer.example/user-nokid";

/// The config: `params` are extra lines of the jwt handler's params (indented 4 spaces),
/// `policy` FAIL_CLOSE or FAIL_OPEN.
pub fn config_yaml(params: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata:
  name: jwtattrs
spec:
  attributes:
    request.auth.issuer:
      valueType: STRING
    request.auth.subject:
      valueType: STRING
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: jwt
spec:
  compiledAdapter: jwt
  params:
    issuer: https://issuer.example
    audiences: [bookinfo]
{params}
  dispatch:
    failurePolicy: {policy}
---
apiVersion: config.istio.io/v1alpha2
kind: jwt
metadata:
  name: auth
spec:
  token: request.headers["authorization"] | ""
  attribute_bindings:
    request.auth.principal: $out.principal | ""
    request.auth.issuer: $out.issuer | ""
    request.auth.subject: $out.subject | ""
    request.auth.audiences: $out.audiences | ""
    request.auth.presenter: $out.presenter | ""
    request.auth.claims: $out.claims | emptyStringMap()
    request.auth.raw_claims: $out.raw_claims | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: authn
spec:
  actions:
  - handler: jwt
    instances: [auth.jwt]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: blocked
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["{BLOCKED}"]
    blacklist: true
---
apiVersion: config.istio.io/v1alpha2
kind: listentry
metadata:
  name: principal
spec:
  value: request.auth.principal | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: authz
spec:
  actions:
  - handler: blocked
    instances: [principal.listentry]
  requestHeaderOperations:
  - name: x-principal
    values: ['request.auth.principal | "none"']
  - name: x-issuer
    values: ['request.auth.issuer | "none"']
  - name: x-subject
    values: ['request.auth.subject | "none"']
  - name: x-audiences
    values: ['request.auth.audiences | "none"']
  - name: x-presenter
    values: ['request.auth.presenter | "none"']
  - name: x-email
    values: ['request.auth.claims["email"] | "none"']
  - name: x-groups
    values: ['request.auth.claims["groups"] | "none"']
  - name: x-level
    values: ['request.auth.claims["level"] | "none"']
  - name: x-scope
    values: ['request.auth.claims["scope"] | "none"']
  - name: x-raw
    values: ['request.auth.raw_claims | "none"']
"#
    )
}

pub fn registry() -> AdapterRegistry {
    let mut r = mixer_adapters::registry();
    r.register(Arc::new(JwtAdapter));
    r
}

/// Compiles `yaml` on a new VirtualPlatform, with the check cache off (every check runs).
pub fn setup(yaml: &str) -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let loaded = mixer_config::load_str("jwt.yaml", yaml).expect("loads");
    let snap = mixer_config::compile_loaded(
        &loaded,
        &registry(),
        &platform,
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    let options = mixer_core::PipelineOptions {
        check_cache: mixer_core::cache::CheckCacheConfig {
            max_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    (vt, Pipeline::with_options(snap, platform, options))
}

/// A request whose `authorization` header is `authorization` (none when `None`).
pub fn request(authorization: Option<&str>) -> Attributes<'static> {
    let mut headers = StringMap::new();
    headers.insert(":path".into(), "/reviews".into());
    if let Some(a) = authorization {
        headers.insert("authorization".into(), a.to_string());
    }
    Attributes::new().with(wk::REQUEST_HEADERS, Value::string_map(headers))
}

/// A check's outcome: code, message and the request header operations by name.
#[derive(Debug)]
pub struct Outcome {
    pub code: Code,
    pub message: String,
    pub headers: BTreeMap<String, String>,
}

impl Outcome {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or("<unset>")
    }
}

pub fn check(vt: &VirtualPlatform, p: &Pipeline, authorization: Option<&str>) -> Outcome {
    let bag = request(authorization);
    match p.worker(Arc::new(vt.clone())).check(&bag, |_| {}) {
        CheckStart::Done(a) => Outcome {
            code: a.status.code,
            message: a.status.message.clone(),
            headers: a
                .request_header_operations
                .iter()
                .filter_map(|c| match c {
                    HeaderChange::Set(k, v) | HeaderChange::Append(k, v) => {
                        Some((k.clone(), v.clone()))
                    }
                    HeaderChange::Remove(_) => None,
                })
                .collect(),
        },
        CheckStart::Pending(_) => panic!("checks are answered in process"),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Reads one of the jwt handler's counters.
pub fn stat(p: &Pipeline, f: impl Fn(&JwtStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    with_handler(p, |h| {
        f(h.stats()).load(std::sync::atomic::Ordering::Relaxed)
    })
}

pub fn with_handler<R>(p: &Pipeline, f: impl FnOnce(&JwtHandler) -> R) -> R {
    let snap = p.snapshot();
    let entry = snap
        .handlers
        .iter()
        .find(|h| h.adapter == "jwt")
        .expect("a jwt handler");
    let handler = entry
        .handler
        .as_any()
        .and_then(|a| a.downcast_ref::<JwtHandler>())
        .expect("JwtHandler");
    f(handler)
}
