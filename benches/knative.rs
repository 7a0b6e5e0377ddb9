//! The `knative` adapter's per-request cost on a warm revision: the handler's own `check` and
//! completion `report` called directly (what it adds beyond the pipeline), and a whole pipeline
//! check + report with and without the knative rule, on the std host's clocks (the handler reads
//! the request-path clock, `Clock::approximate_monotonic`, as it does in production).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::RequestContext;
use mixer_core::instance::InstanceView;
use mixer_core::pal::{BackgroundExecutor, Dispatcher, Platform, Task};
use mixer_core::{AdapterRegistry, CheckStart, Pipeline, Snapshot};
use mixer_host::EventLoop;

/// No websocket in the benchmark: the background task is dropped (stats stay merged).
struct NoBackground;

impl BackgroundExecutor for NoBackground {
    fn spawn(&self, _name: &str, _task: Task) {}
}

fn config(with_knative: bool) -> String {
    let knative = format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: knative, namespace: istio-system}}
spec:
  compiledAdapter: knative
  params: {{autoscalerUrl: "ws://127.0.0.1:9/", podName: bench, reportInterval: 1s}}
---
{}---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: knative, namespace: istio-system}}
spec:
  actions:
  - handler: knative
    instances: [knativerevision, knativecompletion]
"#,
        mixer_knative::DEFAULT_INSTANCES_YAML
    );
    // The baseline: an always-allow check rule (listchecker with a static list) evaluating one
    // header, so the pipeline has a check to run either way.
    let baseline = r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: allow, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params: {overrides: ["default"], cachingUseCount: 0}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: ns, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params: {value: 'request.headers["knative-serving-namespace"] | ""'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: allow, namespace: istio-system}
spec:
  actions:
  - handler: allow
    instances: [ns]
"#;
    if with_knative {
        format!("{baseline}---\n{knative}")
    } else {
        baseline.to_string()
    }
}

fn build(with_knative: bool, platform: &Platform) -> (Snapshot, AdapterRegistry) {
    let mut registry = mixer_adapters::registry();
    mixer_knative::register(&mut registry);
    let loaded = mixer_config::load_str("bench.yaml", &config(with_knative)).unwrap();
    let snap =
        mixer_config::compile_loaded(&loaded, &registry, platform, None, &Default::default())
            .unwrap();
    (snap, registry)
}

fn bag() -> Attributes<'static> {
    let headers: StringMap = [
        (
            "knative-serving-namespace".to_string(),
            "default".to_string(),
        ),
        (
            "knative-serving-revision".to_string(),
            "hello-00001".to_string(),
        ),
        ("user-agent".to_string(), "bench".to_string()),
    ]
    .into_iter()
    .collect();
    Attributes::new()
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
        .with(wk::REQUEST_HOST, Value::str("hello.default.example.com"))
}

fn bench(c: &mut Criterion) {
    let ev = EventLoop::new();
    let mut platform = ev.platform();
    platform.background = Arc::new(NoBackground);
    let dispatcher: Arc<dyn Dispatcher> = Arc::new(ev.clone());
    let mut g = c.benchmark_group("knative");

    // The handler alone, warm revision.
    let (snap, _registry) = build(true, &platform);
    let entry = snap
        .handlers
        .iter()
        .find(|h| h.adapter == "knative")
        .unwrap();
    let handler = entry.handler.as_check().unwrap();
    let report = entry.handler.as_report().unwrap();
    let check_instance = snap
        .instances
        .iter()
        .find(|i| i.template.name == "knativerevision")
        .unwrap();
    let done_instance = snap
        .instances
        .iter()
        .find(|i| i.template.name == "knativecompletion")
        .unwrap();
    // Fields are sorted by path: host, namespace, revision.
    let values = vec![
        Value::str("hello.default.example.com"),
        Value::str("default"),
        Value::str("hello-00001"),
    ];
    let ctx = RequestContext {
        dispatcher: &dispatcher,
    };
    let view = InstanceView {
        instance: check_instance,
        values: &values,
    };
    let done = [InstanceView {
        instance: done_instance,
        values: &values,
    }];
    let _ = handler.check(&view, &ctx); // the poke: the revision is warm from here on
    g.bench_function("handler_check_warm", |b| {
        b.iter(|| {
            let r = handler.check(black_box(&view), &ctx);
            report.report(black_box(&done));
            r
        })
    });
    let host_values = vec![
        Value::str("hello-00001.default.svc.cluster.local"),
        Value::str(""),
        Value::str(""),
    ];
    let host_view = InstanceView {
        instance: check_instance,
        values: &host_values,
    };
    let host_done = [InstanceView {
        instance: done_instance,
        values: &host_values,
    }];
    g.bench_function("handler_check_warm_host_fallback", |b| {
        b.iter(|| {
            let r = handler.check(black_box(&host_view), &ctx);
            report.report(black_box(&host_done));
            r
        })
    });

    // Whole pipeline: check + report, without and with the knative rule.
    for (name, with) in [
        ("pipeline_check_report_baseline", false),
        ("pipeline_check_report_with_knative", true),
    ] {
        let (snap, _) = build(with, &platform);
        let pipeline = Pipeline::with_options(
            snap,
            platform.clone(),
            mixer_core::PipelineOptions {
                check_cache: mixer_core::cache::CheckCacheConfig {
                    max_entries: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let worker = pipeline.worker(dispatcher.clone());
        let bag = bag();
        g.bench_function(name, |b| {
            b.iter(|| {
                match worker.check(black_box(&bag), |_| {}) {
                    CheckStart::Done(a) => assert!(a.status.is_ok()),
                    CheckStart::Pending(_) => panic!("warm revisions answer at once"),
                }
                worker.report(black_box(&bag))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
