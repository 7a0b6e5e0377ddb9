//! Live config swaps under load: 4 threads run checks and reports while another thread swaps
//! between two configs 1000 times. No request fails, and every report is counted exactly once,
//! by the handler of the snapshot that was live when the report started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_core::adapter::{Adapter, AdapterError, Handler, HandlerConfig, ReportHandler};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{AdapterRegistry, CheckStart, CompileOptions, Config, Pipeline, compile};
use mixer_proto::v2;
use serde_json::json;

/// Counts reports per generation (`params.generation`); every handler build is a new counter.
struct Counting {
    per_generation: Arc<[AtomicU64; 2]>,
}
struct CountingHandler {
    generation: usize,
    per_generation: Arc<[AtomicU64; 2]>,
}

impl Adapter for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["metric"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let generation = c.params["generation"].as_u64().unwrap_or(0) as usize % 2;
        Ok(Arc::new(CountingHandler {
            generation,
            per_generation: self.per_generation.clone(),
        }))
    }
}

impl Handler for CountingHandler {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
}

impl ReportHandler for CountingHandler {
    fn report(&self, instances: &[InstanceView<'_>]) {
        for v in instances {
            // The instance's value names the generation its snapshot belongs to.
            let seen = match v.get("value") {
                Some(Value::Int64(g)) => *g as usize,
                _ => 99,
            };
            assert_eq!(
                seen, self.generation,
                "a report reached a handler of another snapshot"
            );
            self.per_generation[self.generation].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn config(generation: u64) -> Config {
    Config {
        handlers: vec![v2::Handler {
            name: "count".into(),
            namespace: "istio-system".into(),
            adapter: "counting".into(),
            params: Some(json_to_struct(&json!({"generation": generation}))),
            ..Default::default()
        }],
        instances: vec![v2::Instance {
            name: "requests".into(),
            namespace: "istio-system".into(),
            template: "metric".into(),
            params: Some(json_to_struct(
                &json!({"value": generation.to_string(), "dimensions": {"code": "response.code | 0"}}),
            )),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "count".into(),
            namespace: "istio-system".into(),
            r#match: "response.code >= 0".into(),
            actions: vec![v2::Action {
                handler: "count".into(),
                instances: vec!["requests".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn four_workers_and_a_thousand_swaps() {
    let vt = VirtualPlatform::new();
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Counting {
        per_generation: counts.clone(),
    }));
    let platform = vt.platform();
    let configs = [config(0), config(1)];
    let first = compile(
        &configs[0],
        &registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let pipeline = Pipeline::new(first, platform.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let reports_sent = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (pipeline, stop, vt, sent) = (
                pipeline.clone(),
                stop.clone(),
                vt.clone(),
                reports_sent.clone(),
            );
            std::thread::spawn(move || {
                let worker = pipeline.worker(Arc::new(vt));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 1000 {
                    let bag = Attributes::new()
                        .with(wk::RESPONSE_CODE, Value::Int64((n % 5) as i64 * 100 + t));
                    match worker.check(&bag, |_| {}) {
                        CheckStart::Done(a) => assert!(a.is_allowed(), "{:?}", a.status),
                        CheckStart::Pending(_) => panic!("no async handler in this config"),
                    }
                    let summary = worker.report(&bag);
                    assert_eq!((summary.instances_sent, summary.instance_errors), (1, 0));
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();

    for i in 0..1000 {
        let prev = pipeline.snapshot();
        let next = compile(
            &configs[(i + 1) % 2],
            &registry,
            &platform,
            Some(&prev),
            &CompileOptions::default(),
        )
        .unwrap();
        pipeline.swap(next);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let counted = counts[0].load(Ordering::Relaxed) + counts[1].load(Ordering::Relaxed);
    assert_eq!(
        counted,
        reports_sent.load(Ordering::Relaxed),
        "every report counted exactly once"
    );
    assert!(counts[0].load(Ordering::Relaxed) > 0 && counts[1].load(Ordering::Relaxed) > 0);
    assert_eq!(pipeline.stats().config_swaps.load(Ordering::Relaxed), 1000);
    eprintln!(
        "reports: {} (generation 0: {}, generation 1: {})",
        counted,
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed)
    );
}
