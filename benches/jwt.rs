//! The `jwt` attribute producer: verifying an RS256 and an ES256 token (PyJWT-signed fixtures)
//! with a direct, uncached `produce`, and a whole check whose APA stage answers from the
//! per-token cache (check cache off, so the rules run too). VirtualPlatform clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::ApaContext;
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{Clock, Dispatcher};
use mixer_core::{CheckStart, Pipeline, PipelineOptions};

const TOKENS: &str = include_str!("../crates/mixer-jwt/tests/fixtures/tokens.json");
const JWKS: &str = include_str!("../crates/mixer-jwt/tests/fixtures/jwks.json");

fn config() -> String {
    format!(
        r#"
kind: handler
metadata: {{name: jwt}}
spec:
  compiledAdapter: jwt
  params:
    issuer: https://issuer.example
    audiences: [bookinfo]
    jwks: '{jwks}'
  dispatch: {{failurePolicy: FAIL_CLOSE}}
---
kind: jwt
metadata: {{name: auth}}
spec:
  token: request.headers["authorization"] | ""
  attribute_bindings:
    request.auth.principal: $out.principal | ""
    request.auth.claims: $out.claims | emptyStringMap()
---
kind: rule
metadata: {{name: authn}}
spec:
  actions: [{{handler: jwt, instances: [auth.jwt]}}]
---
kind: handler
metadata: {{name: blocked}}
spec:
  compiledAdapter: listchecker
  params: {{overrides: ["https://issuer.example/blocked"], blacklist: true}}
---
kind: listentry
metadata: {{name: principal}}
spec:
  value: request.auth.principal | ""
---
kind: rule
metadata: {{name: authz}}
spec:
  actions: [{{handler: blocked, instances: [principal.listentry]}}]
"#,
        jwks = JWKS.replace('\n', " ")
    )
}

fn pipeline(vt: &VirtualPlatform) -> Pipeline {
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(mixer_jwt::JwtAdapter));
    let loaded = mixer_config::load_str("jwt.yaml", &config()).unwrap();
    let snap = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &vt.platform(),
        None,
        &Default::default(),
    )
    .unwrap();
    let options = PipelineOptions {
        check_cache: mixer_core::cache::CheckCacheConfig {
            max_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    Pipeline::with_options(snap, vt.platform(), options)
}

fn token(name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(TOKENS).unwrap();
    format!("Bearer {}", v["tokens"][name].as_str().unwrap())
}

fn bench(c: &mut Criterion) {
    let vt = VirtualPlatform::new();
    let p = pipeline(&vt);
    let snap = p.snapshot();
    let producer = snap
        .handlers
        .iter()
        .find(|h| h.adapter == "jwt")
        .unwrap()
        .handler
        .clone();
    let producer = producer.as_attribute_producer().unwrap();
    let instance = snap
        .instances
        .iter()
        .find(|i| i.template.name == "jwt")
        .unwrap();
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(vt.clone());
    let ctx = ApaContext::at(&dispatcher, vt.wall(), vt.monotonic());
    let mut g = c.benchmark_group("jwt");
    for (name, alg) in [("rs256_valid", "rs256"), ("es256_valid", "es256")] {
        let values = [Value::String(token(name).into())];
        let view = InstanceView {
            instance,
            values: &values,
        };
        assert!(producer.produce(&view, &ctx).is_ok());
        g.bench_function(format!("verify_{alg}_uncached"), |b| {
            b.iter(|| black_box(producer.produce(black_box(&view), &ctx).is_ok()))
        });
    }

    let mut headers = StringMap::new();
    headers.insert("authorization".into(), token("rs256_valid"));
    let bag = Attributes::new().with(wk::REQUEST_HEADERS, Value::string_map(headers));
    let worker = p.worker(dispatcher.clone());
    let CheckStart::Done(first) = worker.check(&bag, |_| {}) else {
        panic!("in process")
    };
    assert!(first.is_allowed(), "{:?}", first.status);
    let jwt = snap
        .handlers
        .iter()
        .find(|h| h.adapter == "jwt")
        .and_then(|h| h.handler.as_any()?.downcast_ref::<mixer_jwt::JwtHandler>())
        .unwrap();
    let verifications = || {
        jwt.stats()
            .verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = verifications();
    let _ = worker.check(&bag, |_| {});
    assert_eq!(
        verifications(),
        before,
        "the APA stage answers from its cache"
    );
    g.bench_function("check_apa_cache_hit", |b| {
        b.iter(|| match worker.check(black_box(&bag), |_| {}) {
            CheckStart::Done(a) => black_box(a),
            CheckStart::Pending(_) => unreachable!(),
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
