//! An instance named by several rules is evaluated once per check: every rule's handler gets
//! the same values, the bag is read once for it, and an instance that fails to evaluate fails
//! every rule that names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mixer_attr::{AttrId, Attributes, Bag, Value, well_known as wk};
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, RequestContext,
};
use mixer_core::cache::CheckCacheConfig;
use mixer_core::config_builder::{handler, instance, rule};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pending::Poll;
use mixer_core::{
    AdapterRegistry, CheckStart, Code, CompileOptions, Config, Pipeline, PipelineOptions, compile,
};
use parking_lot::Mutex;
use serde_json::json;

/// Allows every check and records the `value` field it was given.
struct Recorder(Arc<Mutex<Vec<String>>>);
struct RecorderHandler(Arc<Mutex<Vec<String>>>);

impl Adapter for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["listentry"]
    }
    fn build(&self, _: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(RecorderHandler(self.0.clone())))
    }
}

impl Handler for RecorderHandler {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for RecorderHandler {
    fn check(&self, view: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        let v = view.get("value").map(|v| v.to_string()).unwrap_or_default();
        self.0.lock().push(v);
        Poll::Ready(CheckResult::allow(mixer_attr::Duration::from_secs(1), 10))
    }
}

/// Counts reads of one attribute.
struct CountingBag<'a> {
    inner: &'a Attributes<'a>,
    watched: AttrId,
    reads: Cell<usize>,
}

impl Bag for CountingBag<'_> {
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        if id == self.watched {
            self.reads.set(self.reads.get() + 1);
        }
        self.inner.get(id)
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        self.inner.for_each(f)
    }
}

fn pipeline(cfg: &Config, seen: &Arc<Mutex<Vec<String>>>) -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Recorder(seen.clone())));
    let snap = compile(
        cfg,
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    // No check cache: its key would read the bag too.
    let options = PipelineOptions {
        check_cache: CheckCacheConfig {
            max_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let p = Pipeline::with_options(snap, vt.platform(), options);
    (vt, p)
}

#[test]
fn shared_instances_are_evaluated_once_per_check() {
    let mut cfg = Config {
        handlers: vec![handler("rec", "recorder", json!({}))],
        instances: vec![
            instance(
                "who",
                "listentry",
                json!({"value": "source.principal | \"none\""}),
            ),
            // Fails whenever request.path is absent.
            instance("path", "listentry", json!({"value": "request.path"})),
        ],
        ..Default::default()
    };
    for i in 0..4 {
        cfg.rules.push(rule(
            &format!("who{i}"),
            &format!("request.method != \"X{i}\""),
            "rec",
            &["who"],
        ));
    }
    cfg.rules.push(rule("path0", "true", "rec", &["path"]));
    cfg.rules.push(rule("path1", "true", "rec", &["path"]));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (vt, p) = pipeline(&cfg, &seen);
    let worker = p.worker(Arc::new(vt.clone()));

    let attrs = Attributes::new()
        .with(wk::SOURCE_PRINCIPAL, Value::str("spiffe://alice"))
        .with(wk::REQUEST_METHOD, Value::str("GET"));
    let bag = CountingBag {
        inner: &attrs,
        watched: wk::SOURCE_PRINCIPAL,
        reads: Cell::new(0),
    };
    let CheckStart::Done(answer) = worker.check(&bag, |_| {}) else {
        panic!("in process")
    };
    // Four rules got the shared instance's value, read from the bag once.
    assert_eq!(*seen.lock(), vec!["spiffe://alice"; 4]);
    assert_eq!(bag.reads.get(), 1);
    // The failing instance failed both rules that name it (fail-close: the check is denied).
    assert_eq!(p.stats().instance_errors.load(Ordering::Relaxed), 2);
    assert_eq!(answer.decision.status.code, Code::INTERNAL);
    assert!(
        answer.decision.status.message.contains("request.path"),
        "{}",
        answer.decision.status.message
    );
    // The decision still names the shared read among its references.
    assert!(
        answer
            .decision
            .referenced
            .to_strings(&mixer_attr::Vocabulary::istio())
            .iter()
            .any(|r| r.contains("source.principal")),
        "{:?}",
        answer.decision.referenced
    );
}
