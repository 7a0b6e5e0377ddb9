//! The precondition path: a check answered from the check cache, and a full miss through 10
//! in-process rules (listchecker and rbac handlers), on the std host's clock.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::cache::CheckCacheConfig;
use mixer_core::config_builder::{self, handler, instance};
use mixer_core::{CheckStart, CompileOptions, Config, Pipeline, PipelineOptions, compile};
use mixer_host::EventLoop;
use serde_json::json;

/// 10 rules, every one matching a typical request: 5 whitelist checks of the caller's version
/// (listchecker) and 5 role checks (rbac).
pub fn ten_rules() -> Config {
    let mut cfg = Config {
        handlers: vec![
            handler(
                "versions",
                "listchecker",
                json!({"overrides": ["v1", "v2", "v3"], "blacklist": false}),
            ),
            handler(
                "roles",
                "rbac",
                json!({
                    "roles": [{"name": "reader", "rules": [{"services": ["reviews.*"], "methods": ["GET"], "paths": ["/reviews/*"]}]}],
                    "bindings": [{"role": "reader", "subjects": [{"user": "cluster.local/ns/default/sa/productpage"}]}]
                }),
            ),
        ],
        instances: vec![
            instance(
                "version",
                "listentry",
                json!({"value": "source.labels[\"version\"] | \"none\""}),
            ),
            instance(
                "authz",
                "authorization",
                json!({
                    "subject": {"user": "source.principal | \"\""},
                    "action": {"service": "destination.service.host | \"\"", "method": "request.method | \"\"", "path": "request.path | \"\""}
                }),
            ),
        ],
        ..Default::default()
    };
    for i in 0..10 {
        let (h, inst) = if i % 2 == 0 {
            ("versions", "version")
        } else {
            ("roles", "authz")
        };
        cfg.rules.push(config_builder::rule(
            &format!("rule{i}"),
            &format!("request.path.startsWith(\"/\") && request.method != \"X{i}\""),
            h,
            &[inst],
        ));
    }
    cfg
}

/// Bookinfo's deny-label rule: one denier rule keyed on two labels.
pub fn one_rule() -> Config {
    Config {
        handlers: vec![handler(
            "denyreviewsv3",
            "denier",
            json!({"status": {"code": 7, "message": "Not allowed"}}),
        )],
        instances: vec![instance("nothing", "checknothing", json!({}))],
        rules: vec![config_builder::rule(
            "denyreviewsv3",
            "destination.labels[\"app\"] == \"ratings\" && source.labels[\"version\"] == \"v3\"",
            "denyreviewsv3",
            &["nothing"],
        )],
        ..Default::default()
    }
}

fn request() -> Attributes<'static> {
    let labels: StringMap = [
        ("app".to_string(), "productpage".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]
    .into_iter()
    .collect();
    Attributes::new()
        .with(
            wk::SOURCE_PRINCIPAL,
            Value::str("cluster.local/ns/default/sa/productpage"),
        )
        .with(wk::SOURCE_LABELS, Value::string_map(labels))
        .with(
            wk::DESTINATION_SERVICE_HOST,
            Value::str("reviews.default.svc.cluster.local"),
        )
        .with(wk::REQUEST_METHOD, Value::str("GET"))
        .with(wk::REQUEST_PATH, Value::str("/reviews/1"))
        .with(wk::SOURCE_IP, Value::IpAddress("10.1.2.3".parse().unwrap()))
        .with(
            wk::REQUEST_ID,
            Value::str("0d4e6f7a-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
        )
}

fn pipeline(cache: usize) -> (EventLoop, Pipeline) {
    pipeline_for(&ten_rules(), cache)
}

fn pipeline_for(config: &Config, cache: usize) -> (EventLoop, Pipeline) {
    let lp = EventLoop::new();
    let snap = compile(
        config,
        &mixer_adapters::registry(),
        &lp.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let options = PipelineOptions {
        check_cache: CheckCacheConfig {
            max_entries: cache,
            ..Default::default()
        },
        ..Default::default()
    };
    (
        lp.clone(),
        Pipeline::with_options(snap, lp.platform(), options),
    )
}

fn bench(c: &mut Criterion) {
    let bag = request();
    let mut g = c.benchmark_group("check");

    let (lp, p) = pipeline(10_000);
    let worker = p.worker(Arc::new(lp.clone()));
    let CheckStart::Done(first) = worker.check(&bag, |_| {}) else {
        panic!("in process")
    };
    assert!(first.is_allowed() && !first.cache_hit, "{:?}", first.status);
    g.bench_function("cache_hit_10_rules", |b| {
        b.iter(|| match worker.check(black_box(&bag), |_| {}) {
            CheckStart::Done(a) => {
                debug_assert!(a.cache_hit);
                black_box(a)
            }
            CheckStart::Pending(_) => unreachable!(),
        })
    });

    let (lp, p) = pipeline_for(&one_rule(), 10_000);
    let worker = p.worker(Arc::new(lp.clone()));
    let CheckStart::Done(first) = worker.check(&bag, |_| {}) else {
        panic!("in process")
    };
    assert!(!first.cache_hit);
    g.bench_function("cache_hit_1_rule", |b| {
        b.iter(|| match worker.check(black_box(&bag), |_| {}) {
            CheckStart::Done(a) => black_box(a),
            CheckStart::Pending(_) => unreachable!(),
        })
    });

    let (lp, p) = pipeline(0);
    let worker = p.worker(Arc::new(lp.clone()));
    g.bench_function("miss_10_rules_listchecker_rbac", |b| {
        b.iter(|| match worker.check(black_box(&bag), |_| {}) {
            CheckStart::Done(a) => black_box(a),
            CheckStart::Pending(_) => unreachable!(),
        })
    });

    // A cached quota grant: the token cache answers from prefetched tokens, at the time the
    // request path reads (the std host's approximate clock), so the rate estimate runs as in
    // steady state, not stuck in the first second after start.
    let clock = EventLoop::new().platform().clock;
    let cache = mixer_core::cache::quota::QuotaCache::new(Default::default());
    let quota = "requestcount.instance.istio-system";
    let key = "reviews\u{1f}";
    let answer = |d: mixer_core::cache::quota::QuotaDecision, t| {
        // Keep tokens flowing: answer any prefetch at once with what it asked for.
        if let Some(pf) = d.prefetch {
            cache.on_response(
                quota,
                key,
                pf.id,
                mixer_core::cache::quota::PrefetchOutcome::Granted {
                    amount: pf.amount.max(1),
                    valid_for: std::time::Duration::from_secs(3600),
                },
                t,
            );
        }
    };
    let mut steady = false;
    g.bench_function("quota_cache_grant", |b| {
        // Steady state: the rate estimate counts a whole predict window (1 s) of traffic first
        // (once, and only when this benchmark is selected).
        let start = clock.monotonic();
        while !steady {
            let t = clock.approximate_monotonic();
            answer(cache.check(quota, key, 1, t), t);
            steady = clock.monotonic().since(start) > std::time::Duration::from_millis(1100);
        }
        b.iter(|| {
            let t = clock.approximate_monotonic();
            let d = cache.check(quota, black_box(key), 1, t);
            let granted = d.granted;
            answer(d, t);
            black_box(granted)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
