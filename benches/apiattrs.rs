//! The `apiattributes` adapter: template matching with 10 and with 1,000 templates (the segment
//! trie's cost follows the path's depth, not the number of templates), and `produce()` through
//! the adapter (match, path and query params decoded, outputs handed back).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_apiattrs::{ApiAttributes, ApiAttributesAdapter};
use mixer_attr::Value;
use mixer_core::AdapterRegistry;
use mixer_core::adapter::ApaContext;
use mixer_core::instance::InstanceView;
use mixer_core::pal::{Dispatcher, MonoTime};
use mixer_host::EventLoop;
use serde_json::json;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// `n` operations over `n / 5` services, five shapes each (as in the crate's tests).
fn params(n: usize) -> serde_json::Value {
    let ops: Vec<_> = (0..n)
        .map(|i| {
            let s = i / 5;
            let template = match i % 5 {
                0 => format!("/svc{s}/items"),
                1 => format!("/svc{s}/items/{{id}}"),
                2 => format!("/svc{s}/items/{{id}}/parts/{{part}}"),
                3 => format!("/svc{s}/{{kind}}/v{}", i % 7),
                _ => format!("/svc{s}/files/{{path=**}}"),
            };
            json!({"name": format!("op{i}"), "method": METHODS[i % 4], "template": template})
        })
        .collect();
    json!({"service": "bench.example.com", "version": "v1", "operations": ops})
}

/// Requests that match operations spread over all `n`, one of each shape.
fn requests(n: usize) -> Vec<(&'static str, String)> {
    (0..n)
        .step_by((n / 20).max(1))
        .map(|i| {
            let s = i / 5;
            let path = match i % 5 {
                0 => format!("/svc{s}/items"),
                1 => format!("/svc{s}/items/x{i}"),
                2 => format!("/svc{s}/items/a%20{i}/parts/p"),
                3 => format!("/svc{s}/things/v{}", i % 7),
                _ => format!("/svc{s}/files/a/b/{i}.txt"),
            };
            (METHODS[i % 4], path)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("apiattrs");
    for n in [10, 1000] {
        let h = ApiAttributes::from_params(&params(n)).unwrap();
        let reqs = requests(n);
        for (m, p) in &reqs {
            assert!(h.operation(m, p).is_some(), "{m} {p}");
        }
        let mut i = 0;
        g.bench_function(format!("match/{n}_templates"), |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                let (m, p) = &reqs[i];
                black_box(h.matcher().find(m, black_box(p)))
            })
        });
        let miss = format!("/svc{}/nothing/here/at/all", n / 10);
        g.bench_function(format!("miss/{n}_templates"), |b| {
            b.iter(|| black_box(h.matcher().find("GET", black_box(&miss))))
        });
    }

    // produce() through a handler built by the adapter from YAML config.
    let ev = EventLoop::new();
    let platform = ev.platform();
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(ev.clone());
    let yaml = format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: api}}
spec:
  compiledAdapter: apiattributes
  params: {}
---
apiVersion: config.istio.io/v1alpha2
kind: apiattributes
metadata: {{name: api}}
spec:
  method: request.method | "GET"
  path: request.path | "/"
  attribute_bindings:
    api.operation: $out.api_operation | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: api}}
spec:
  actions: [{{handler: api, instances: [api]}}]
"#,
        params(1000)
    );
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(ApiAttributesAdapter));
    let loaded = mixer_config::load_str("api.yaml", &yaml).unwrap();
    let snap =
        mixer_config::compile_loaded(&loaded, &registry, &platform, None, &Default::default())
            .unwrap();
    let entry = snap
        .handlers
        .iter()
        .find(|h| h.adapter == "apiattributes")
        .unwrap();
    let producer = entry.handler.as_attribute_producer().unwrap();
    let instance = snap
        .instances
        .iter()
        .find(|i| i.template.name == "apiattributes")
        .unwrap();
    let ctx = ApaContext::at(&dispatcher, mixer_attr::Timestamp::default(), MonoTime(0));
    let cases = [
        ("no_params", "GET", "/svc100/items"),
        ("path_params", "GET", "/svc100/items/a%20b/parts/p"),
        (
            "path_and_query",
            "GET",
            "/svc100/items/x1?view=full&page=2&q=a+b",
        ),
        ("no_match", "GET", "/nothing/here"),
    ];
    for (name, method, path) in cases {
        let values = [Value::str(method), Value::str(path)];
        let view = InstanceView {
            instance,
            values: &values,
        };
        assert!(producer.produce(&view, &ctx).is_ok());
        g.bench_function(format!("produce/{name}"), |b| {
            b.iter(|| black_box(producer.produce(black_box(&view), &ctx).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
