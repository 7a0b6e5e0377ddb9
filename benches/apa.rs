//! The attribute-producing chain on a typical request: `kubernetesenv` (Istio 1.4's
//! `attributes` instance, 21 bindings, inventory from a file), `jwt` (RS256 token, verification
//! cached per token by the pipeline) and `apiattributes` (100 operation templates), feeding a
//! check that reads `source.labels["app"]`, `request.auth.principal` and `api.operation`.
//! The baseline, in the same process, is the same check without the chain on a request that
//! already carries the three attributes the chain would produce (so the check does the same
//! work on the same values); the difference is the chain's cost: producing, and reading the
//! produced attributes through it. Check cache off on both sides, so the rules run every time.
//! `chain_cost_interleaved` measures that difference directly, alternating the two in blocks.
//! The `varied_` pair turns over 16 requests from other pods to other operations, so every
//! request misses the adapters' per-thread reuse of the previous lookup.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::{Attributes, StringMap, Value, Vocabulary, well_known as wk};
use mixer_core::pal::Dispatcher;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{CheckStart, Pipeline, PipelineOptions, Worker};
use serde_json::json;

const TOKENS: &str = include_str!("../crates/mixer-jwt/tests/fixtures/tokens.json");
const JWKS: &str = include_str!("../crates/mixer-jwt/tests/fixtures/jwks.json");

fn inventory() -> std::path::PathBuf {
    let pod = |name: &str, ip: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                "labels": {"app": app, "version": "v1", "pod-template-hash": "5b9f7c8d4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{app}-v1-5b9f7c8d4"), "controller": true, "uid": "0"}]},
            "spec": {"serviceAccountName": "bookinfo", "nodeName": "node-1",
                "containers": [{"name": "app", "ports": [{"containerPort": 9080}]}]},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.128.0.7"}})
    };
    let mut items = Vec::new();
    for i in 0..200 {
        items.push(pod(
            &format!("app{i}-v1-5b9f7c8d4-x7k2p"),
            &format!("10.1.{}.{}", i / 200, i % 200 + 1),
            &format!("app{i}"),
        ));
    }
    let path = std::env::temp_dir().join(format!("mixer-apa-bench-{}.json", std::process::id()));
    std::fs::write(&path, json!({"kind": "List", "items": items}).to_string()).unwrap();
    path
}

const CHECK_RULES: &str = r#"
---
kind: handler
metadata: {name: gate}
spec:
  compiledAdapter: listchecker
  params: {overrides: ["blocked", "deleteShelf", "https://issuer.example/blocked"], blacklist: true}
---
kind: listentry
metadata: {name: app}
spec: {value: 'source.labels["app"] | ""'}
---
kind: listentry
metadata: {name: principal}
spec: {value: 'request.auth.principal | ""'}
---
kind: listentry
metadata: {name: operation}
spec: {value: 'api.operation | ""'}
---
kind: rule
metadata: {name: gate}
spec:
  actions: [{handler: gate, instances: [app.listentry, principal.listentry, operation.listentry]}]
"#;

/// The values the chain produces for the bench's request: the baseline's request carries them.
const APP: &str = "app7";
const PRINCIPAL: &str = "https://issuer.example/user-rs256";
const OPERATION: &str = "op42";

/// The labels `inventory()` gives the pod of `app`.
fn pod_labels(app: &str) -> Value<'static> {
    let mut labels = StringMap::new();
    labels.insert("app".into(), app.into());
    labels.insert("version".into(), "v1".into());
    labels.insert("pod-template-hash".into(), "5b9f7c8d4".into());
    Value::string_map(labels)
}

/// Allows a request only when the three attributes have exactly the values above.
fn expecting_produced_values() -> String {
    CHECK_RULES
        .replace(
            r#"params: {overrides: ["blocked", "deleteShelf", "https://issuer.example/blocked"], blacklist: true}"#,
            &format!(r#"params: {{overrides: ["{APP}", "{PRINCIPAL}", "{OPERATION}"], blacklist: false}}"#),
        )
}

fn chain_config(inventory: &std::path::Path, check_rules: &str) -> String {
    let mut ops = String::new();
    for i in 0..100 {
        ops.push_str(&format!(
            "      - {{name: op{i}, method: GET, template: \"/r{i}/{{id}}/items/{{item}}\"}}\n"
        ));
    }
    format!(
        r#"
kind: handler
metadata: {{name: kubernetesenv, namespace: istio-system}}
spec:
  compiledAdapter: kubernetesenv
  params: {{inventory_file: "{inv}", refresh_interval: 1h}}
---
kind: kubernetes
metadata: {{name: attributes, namespace: istio-system}}
spec:
  source_uid: source.uid | ""
  source_ip: source.ip | ip("0.0.0.0")
  destination_uid: destination.uid | ""
  destination_port: destination.port | 0
  attribute_bindings:
    source.ip: $out.source_pod_ip | ip("0.0.0.0")
    source.uid: $out.source_pod_uid | "unknown"
    source.labels: $out.source_labels | emptyStringMap()
    source.name: $out.source_pod_name | "unknown"
    source.namespace: $out.source_namespace | "default"
    source.owner: $out.source_owner | "unknown"
    source.serviceAccount: $out.source_service_account_name | "unknown"
    source.workload.uid: $out.source_workload_uid | "unknown"
    source.workload.name: $out.source_workload_name | "unknown"
    source.workload.namespace: $out.source_workload_namespace | "unknown"
    destination.ip: $out.destination_pod_ip | ip("0.0.0.0")
    destination.uid: $out.destination_pod_uid | "unknown"
    destination.labels: $out.destination_labels | emptyStringMap()
    destination.name: $out.destination_pod_name | "unknown"
    destination.container.name: $out.destination_container_name | "unknown"
    destination.namespace: $out.destination_namespace | "default"
    destination.owner: $out.destination_owner | "unknown"
    destination.serviceAccount: $out.destination_service_account_name | "unknown"
    destination.workload.uid: $out.destination_workload_uid | "unknown"
    destination.workload.name: $out.destination_workload_name | "unknown"
    destination.workload.namespace: $out.destination_workload_namespace | "unknown"
---
kind: rule
metadata: {{name: kubeattrgenrulerule, namespace: istio-system}}
spec:
  actions: [{{handler: kubernetesenv, instances: [attributes]}}]
---
kind: handler
metadata: {{name: jwt, namespace: istio-system}}
spec:
  compiledAdapter: jwt
  params: {{issuer: "https://issuer.example", audiences: [bookinfo], jwks: '{jwks}'}}
---
kind: jwt
metadata: {{name: auth, namespace: istio-system}}
spec:
  token: request.headers["authorization"] | ""
  attribute_bindings:
    request.auth.principal: $out.principal | ""
    request.auth.audiences: $out.audiences | ""
    request.auth.claims: $out.claims | emptyStringMap()
---
kind: rule
metadata: {{name: authn, namespace: istio-system}}
spec:
  actions: [{{handler: jwt, instances: [auth.jwt]}}]
---
kind: handler
metadata: {{name: api, namespace: istio-system}}
spec:
  compiledAdapter: apiattributes
  params:
    service: bookstore
    version: v1
    operations:
{ops}---
kind: apiattributes
metadata: {{name: api, namespace: istio-system}}
spec:
  method: request.method | "GET"
  path: request.path | "/"
  attribute_bindings:
    api.service: $out.api_service | ""
    api.version: $out.api_version | ""
    api.operation: $out.api_operation | ""
    api.protocol: $out.api_protocol | ""
---
kind: rule
metadata: {{name: apirule, namespace: istio-system}}
spec:
  actions: [{{handler: api, instances: [api.apiattributes]}}]
{check_rules}"#,
        inv = inventory.display(),
        jwks = JWKS.replace('\n', " "),
    )
}

fn pipeline(vt: &VirtualPlatform, yaml: &str) -> Pipeline {
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(mixer_kubeenv::KubernetesEnv));
    registry.register(Arc::new(mixer_jwt::JwtAdapter));
    registry.register(Arc::new(mixer_apiattrs::ApiAttributesAdapter));
    let loaded = mixer_config::load_str("apa.yaml", yaml).unwrap();
    let snap = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &vt.platform(),
        None,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let options = PipelineOptions {
        check_cache: mixer_core::cache::CheckCacheConfig {
            max_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    Pipeline::with_options(snap, vt.platform(), options)
}

fn check(worker: &Worker, bag: &Attributes<'_>) -> bool {
    match worker.check(bag, |_| {}) {
        CheckStart::Done(a) => a.is_allowed(),
        CheckStart::Pending(_) => unreachable!("in process"),
    }
}

/// Time of `iters` runs of `with` minus time of `iters` runs of `without`, alternating in
/// blocks.
fn interleaved(iters: u64, with: &dyn Fn() -> bool, without: &dyn Fn() -> bool) -> Duration {
    const BLOCK: u64 = 256;
    let (mut t_with, mut t_without) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    while left > 0 {
        let n = left.min(BLOCK);
        let t = Instant::now();
        for _ in 0..n {
            black_box(without());
        }
        t_without += t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            black_box(with());
        }
        t_with += t.elapsed();
        left -= n;
    }
    t_with.saturating_sub(t_without)
}

fn bench(c: &mut Criterion) {
    let vt = VirtualPlatform::new();
    let inv = inventory();
    let with_chain = pipeline(&vt, &chain_config(&inv, CHECK_RULES));
    assert_eq!(with_chain.snapshot().apa.stages.len(), 3);
    let without = pipeline(&vt, CHECK_RULES);
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(vt.clone());
    let (w_chain, w_plain) = (
        with_chain.worker(dispatcher.clone()),
        without.worker(dispatcher),
    );

    let tokens: serde_json::Value = serde_json::from_str(TOKENS).unwrap();
    let token = format!(
        "Bearer {}",
        tokens["tokens"]["rs256_valid"].as_str().unwrap()
    );
    let mut headers = StringMap::new();
    headers.insert("authorization".into(), token);
    headers.insert(":authority".into(), "bookstore".into());
    headers.insert("user-agent".into(), "curl/8.0".into());
    let vocab = Vocabulary::istio();
    let bag = Attributes::new()
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
        .with(
            wk::SOURCE_UID,
            Value::str("kubernetes://app7-v1-5b9f7c8d4-x7k2p.default"),
        )
        .with(
            wk::DESTINATION_UID,
            Value::str("kubernetes://app9-v1-5b9f7c8d4-x7k2p.default"),
        )
        .with(vocab.lookup("request.method").unwrap(), Value::str("GET"))
        .with(
            vocab.lookup("request.path").unwrap(),
            Value::str("/r42/7/items/9?x=1"),
        )
        .with(wk::DESTINATION_PORT, Value::Int64(9080));
    // The baseline's request carries what the chain produces for `bag`.
    let produced = bag
        .clone()
        .with(wk::SOURCE_LABELS, pod_labels(APP))
        .with(
            vocab.lookup("request.auth.principal").unwrap(),
            Value::str(PRINCIPAL),
        )
        .with(
            vocab.lookup("api.operation").unwrap(),
            Value::str(OPERATION),
        );
    assert!(check(&w_chain, &bag) && check(&w_plain, &produced));
    // ... exactly: a check allowing only those values allows the chain's request.
    let expecting = pipeline(&vt, &chain_config(&inv, &expecting_produced_values()));
    let w_expecting = expecting.worker(Arc::new(vt.clone()));
    assert!(
        check(&w_expecting, &bag),
        "the chain produces the baseline's values"
    );
    let other = bag.clone().with(
        vocab.lookup("request.path").unwrap(),
        Value::str("/r43/7/items/9"),
    );
    assert!(!check(&w_expecting, &other), "another operation is refused");
    // The chain really runs: a blocked operation is denied only with it.
    let deleted = bag.clone().with(
        vocab.lookup("request.path").unwrap(),
        Value::str("/nowhere"),
    );
    assert!(check(&w_chain, &deleted));

    // Varied traffic: 16 requests from 16 source pods to 16 operations, in turn, so no
    // thread-recent lookup (kubernetesenv pods, apiattributes match) is ever reused; the token
    // stays the same (its verification is cached per token either way).
    let rotation: Vec<(Attributes<'static>, Attributes<'static>)> = (0..16)
        .map(|i| {
            let chain = bag
                .clone()
                .with(
                    wk::SOURCE_UID,
                    Value::String(format!("kubernetes://app{i}-v1-5b9f7c8d4-x7k2p.default").into()),
                )
                .with(
                    vocab.lookup("request.path").unwrap(),
                    Value::String(format!("/r{}/{i}/items/{i}?x=1", 50 + i).into()),
                );
            let plain = produced
                .clone()
                .with(wk::SOURCE_LABELS, pod_labels(&format!("app{i}")))
                .with(
                    vocab.lookup("api.operation").unwrap(),
                    Value::String(format!("op{}", 50 + i).into()),
                );
            (chain, plain)
        })
        .collect();
    for (chain, plain) in &rotation {
        assert!(check(&w_chain, chain) && check(&w_plain, plain));
    }

    let mut g = c.benchmark_group("apa");
    g.bench_function("check_without_chain", |b| {
        b.iter(|| black_box(check(&w_plain, black_box(&produced))))
    });
    g.bench_function("check_with_chain_kubeenv_jwt_api", |b| {
        b.iter(|| black_box(check(&w_chain, black_box(&bag))))
    });
    // The difference itself, in blocks of 256 checks alternating between the two workers, so
    // a host that slows down or speeds up during the run affects both sides alike.
    g.bench_function("chain_cost_interleaved", |b| {
        b.iter_custom(|iters| {
            interleaved(iters, &|| check(&w_chain, &bag), &|| {
                check(&w_plain, &produced)
            })
        })
    });
    let mut turn = 0;
    g.bench_function("varied_check_without_chain", |b| {
        b.iter(|| {
            turn = (turn + 1) % rotation.len();
            black_box(check(&w_plain, black_box(&rotation[turn].1)))
        })
    });
    g.bench_function("varied_check_with_chain_kubeenv_jwt_api", |b| {
        b.iter(|| {
            turn = (turn + 1) % rotation.len();
            black_box(check(&w_chain, black_box(&rotation[turn].0)))
        })
    });
    g.finish();
    let _ = std::fs::remove_file(inv);
}

criterion_group!(benches, bench);
criterion_main!(benches);
