//! The attribute-producing chain through the pipeline, with a test producer for the
//! `kubernetes` template: bindings, chain order, predicates, caching per input, reuse of a
//! thread's last outputs, failure
//! policy, overlap validation, and the check cache keyed on produced attributes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use mixer_attr::{Attributes, StringMap, Value, Vocabulary, well_known as wk};
use mixer_core::adapter::{
    Adapter, AdapterError, ApaContext, ApaValues, AttributeProducer, CheckHandler, CheckResult,
    Handler, HandlerConfig, Produced, RequestContext,
};
use mixer_core::config_builder::{handler, instance, rule};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pending::Poll;
use mixer_core::{
    AdapterRegistry, CheckStart, Code, CompileOptions, Config, Pipeline, Status, compile,
};
use mixer_proto::v2;
use serde_json::json;

/// Produces `source_pod_name` = "pod-of-<source_uid>" and `source_labels` {app: <uid>};
/// `source_uid == "bad"` fails; `params.cache_ms` makes answers cacheable.
struct Lookup {
    calls: Arc<AtomicU64>,
}
struct LookupHandler {
    calls: Arc<AtomicU64>,
    cache_ms: u64,
    /// `params.reusable`: outputs depend on the values and [`GENERATION`] only.
    reusable: bool,
    /// `params.wrong_type`: `source_pod_name` comes out as an INT64.
    wrong_type: bool,
    uid: usize,
    name_out: usize,
    labels_out: usize,
    ns_out: usize,
}

impl Adapter for Lookup {
    fn name(&self) -> &'static str {
        "lookup"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["kubernetes"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let out = |name: &str| {
            mixer_core::template::template("kubernetes")
                .unwrap()
                .outputs
                .iter()
                .position(|f| f.path == name)
                .unwrap()
        };
        Ok(Arc::new(LookupHandler {
            calls: self.calls.clone(),
            cache_ms: c.params["cache_ms"].as_u64().unwrap_or(0),
            reusable: c.params["reusable"].as_bool().unwrap_or(false),
            wrong_type: c.params["wrong_type"].as_bool().unwrap_or(false),
            uid: c.instances[0].position("source_uid").unwrap(),
            name_out: out("source_pod_name"),
            labels_out: out("source_labels"),
            ns_out: out("source_namespace"),
        }))
    }
}

impl Handler for LookupHandler {
    fn as_attribute_producer(&self) -> Option<&dyn AttributeProducer> {
        Some(self)
    }
}

impl AttributeProducer for LookupHandler {
    fn produce(&self, view: &InstanceView<'_>, _: &ApaContext<'_>) -> Result<Produced, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let uid = view.at(self.uid).and_then(|v| v.as_str()).unwrap_or("");
        if uid == "bad" {
            return Err(Status::new(Code::UNAVAILABLE, "inventory unavailable"));
        }
        let mut out = ApaValues::with_len(60);
        if !uid.is_empty() {
            let name = match self.wrong_type {
                true => Value::Int64(7),
                false => Value::String(format!("pod-of-{uid}").into()),
            };
            out.set(self.name_out, name);
            let mut labels = StringMap::new();
            labels.insert("app".into(), uid.to_string());
            out.set(self.labels_out, Value::string_map(labels));
            out.set(self.ns_out, Value::String("from-stage-1".into()));
        }
        Ok(Produced {
            output: Arc::new(out),
            cache_for: (self.cache_ms > 0).then(|| StdDuration::from_millis(self.cache_ms)),
            reusable: self.reusable,
        })
    }

    fn generation(&self) -> u64 {
        GENERATION.load(Ordering::Relaxed)
    }
}

/// The lookup handlers' generation (what reusable outputs depend on besides the values).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Denies when `value` (a listentry field) equals `params.deny`.
struct Gate;
struct GateHandler(String);
impl Adapter for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["listentry"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(GateHandler(
            c.params["deny"].as_str().unwrap_or("").to_string(),
        )))
    }
}
impl Handler for GateHandler {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}
impl CheckHandler for GateHandler {
    fn check(&self, view: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        let v = view.get("value").map(|v| v.to_string()).unwrap_or_default();
        let d = mixer_attr::Duration::from_secs(60);
        Poll::Ready(if v == self.0 {
            CheckResult::deny(
                Status::new(Code::PERMISSION_DENIED, format!("{v} denied")),
                d,
                100,
            )
        } else {
            CheckResult::allow(d, 100)
        })
    }
}

fn registry(calls: &Arc<AtomicU64>) -> AdapterRegistry {
    let mut r = AdapterRegistry::new();
    r.register(Arc::new(Lookup {
        calls: calls.clone(),
    }));
    r.register(Arc::new(Gate));
    r
}

fn bindings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A config whose check denies `source.labels["app"] == "blocked"` after the APA stage.
fn config(cache_ms: u64, fail_open: bool) -> Config {
    let mut lookup = handler("lookup", "lookup", json!({ "cache_ms": cache_ms }));
    if fail_open {
        lookup.dispatch = Some(v2::DispatchControls {
            failure_policy: v2::dispatch_controls::FailurePolicy::FailOpen as i32,
            ..Default::default()
        });
    }
    let mut attrs = instance(
        "attrs",
        "kubernetes",
        json!({ "source_uid": "source.uid | \"\"" }),
    );
    attrs.attribute_bindings = bindings(&[
        ("source.name", "$out.source_pod_name | \"unknown\""),
        ("source.labels", "$out.source_labels | emptyStringMap()"),
    ]);
    Config {
        handlers: vec![
            lookup,
            handler("gate", "gate", json!({ "deny": "blocked" })),
        ],
        instances: vec![
            attrs,
            instance(
                "app",
                "listentry",
                json!({ "value": "source.labels[\"app\"] | \"none\"" }),
            ),
        ],
        rules: vec![
            rule("gen", "", "lookup", &["attrs"]),
            rule("gate", "", "gate", &["app"]),
        ],
        ..Default::default()
    }
}

fn setup(cfg: &Config, calls: &Arc<AtomicU64>) -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let snapshot = compile(
        cfg,
        &registry(calls),
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pipeline = Pipeline::new(snapshot, vt.platform());
    (vt, pipeline)
}

fn check(vt: &VirtualPlatform, p: &Pipeline, uid: &str) -> (Code, String, bool) {
    let w = p.worker(Arc::new(vt.clone()));
    let bag = Attributes::new().with(wk::SOURCE_UID, Value::str(uid));
    match w.check(&bag, |_| {}) {
        CheckStart::Done(a) => (
            a.decision.status.code,
            a.decision.status.message.clone(),
            a.cache_hit,
        ),
        CheckStart::Pending(_) => panic!("in-process handlers answer inline"),
    }
}

#[test]
fn produced_attributes_reach_the_transform() {
    let calls = Arc::new(AtomicU64::new(0));
    let (vt, p) = setup(&config(0, false), &calls);
    assert_eq!(p.snapshot().apa.stages.len(), 1);
    assert_eq!(check(&vt, &p, "blocked").0, Code::PERMISSION_DENIED);
    assert_eq!(check(&vt, &p, "reviews").0, Code::OK);
    // No uid: the binding defaults apply (empty labels) and the gate sees "none".
    assert_eq!(check(&vt, &p, "").0, Code::OK);
}

#[test]
fn check_cache_keys_on_produced_attributes() {
    let calls = Arc::new(AtomicU64::new(0));
    let (vt, p) = setup(&config(0, false), &calls);
    assert!(!check(&vt, &p, "reviews").2);
    assert!(
        check(&vt, &p, "reviews").2,
        "same produced labels: cache hit"
    );
    let (code, _, hit) = check(&vt, &p, "blocked");
    assert_eq!(code, Code::PERMISSION_DENIED);
    assert!(!hit, "different produced labels must not reuse the allow");
    // The producer runs for every check (its outputs decide the cache key).
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

#[test]
fn outputs_are_cached_per_input_when_the_adapter_allows() {
    let calls = Arc::new(AtomicU64::new(0));
    let (vt, p) = setup(&config(1_000, false), &calls);
    for _ in 0..5 {
        assert_eq!(check(&vt, &p, "blocked").0, Code::PERMISSION_DENIED);
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "later requests reuse the output"
    );
    check(&vt, &p, "other");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "another input is produced anew"
    );
    vt.advance(StdDuration::from_millis(1_001));
    check(&vt, &p, "blocked");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "expired outputs are produced anew"
    );
    let stage = &p.snapshot().apa.stages[0];
    assert_eq!(stage.cache.hits.load(Ordering::Relaxed), 4);
}

#[test]
fn reusable_outputs_are_kept_per_thread_for_the_same_values_and_generation() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut cfg = config(0, false);
    cfg.handlers[0] = handler("lookup", "lookup", json!({ "reusable": true }));
    let (vt, p) = setup(&cfg, &calls);
    let produced = || calls.load(Ordering::Relaxed);
    for _ in 0..3 {
        assert_eq!(check(&vt, &p, "blocked").0, Code::PERMISSION_DENIED);
    }
    assert_eq!(produced(), 1, "the thread's last outputs are reused");
    assert_eq!(check(&vt, &p, "reviews").0, Code::OK);
    assert_eq!(produced(), 2, "other values");
    assert_eq!(check(&vt, &p, "blocked").0, Code::PERMISSION_DENIED);
    assert_eq!(produced(), 3, "a thread keeps one per stage");
    GENERATION.fetch_add(1, Ordering::Relaxed);
    assert_eq!(check(&vt, &p, "blocked").0, Code::PERMISSION_DENIED);
    assert_eq!(produced(), 4, "a new generation");
    std::thread::scope(|s| {
        let other = s.spawn(|| check(&vt, &p, "blocked").0);
        assert_eq!(other.join().unwrap(), Code::PERMISSION_DENIED);
    });
    assert_eq!(produced(), 5, "another thread has its own");
    check(&vt, &p, "blocked");
    assert_eq!(produced(), 5, "this thread's is still kept");
    // Another snapshot of the same config never sees this one's.
    let (vt2, p2) = setup(&cfg, &calls);
    assert_eq!(check(&vt2, &p2, "blocked").0, Code::PERMISSION_DENIED);
    assert_eq!(produced(), 6);
    // Not cacheable outputs are never kept.
    let (vt3, p3) = setup(&config(0, false), &calls);
    check(&vt3, &p3, "blocked");
    check(&vt3, &p3, "blocked");
    assert_eq!(produced(), 8);
}

#[test]
fn failure_policy_decides_what_a_failed_producer_means() {
    let calls = Arc::new(AtomicU64::new(0));
    let (vt, p) = setup(&config(0, false), &calls);
    let (code, msg, hit) = check(&vt, &p, "bad");
    assert_eq!(code, Code::UNAVAILABLE);
    assert!(msg.contains("inventory unavailable"), "{msg}");
    assert!(!hit);
    assert_eq!(check(&vt, &p, "bad").0, Code::UNAVAILABLE, "never cached");
    assert_eq!(p.stats().handler_failures.load(Ordering::Relaxed), 2);

    let (vt, p) = setup(&config(0, true), &calls);
    assert_eq!(
        check(&vt, &p, "bad").0,
        Code::OK,
        "fail-open: outputs absent, defaults bound"
    );
}

#[test]
fn later_stages_see_earlier_outputs_and_predicates_select() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut cfg = config(0, false);
    // Stage 2: the same adapter fed with stage 1's `source.name`, only for http.
    let mut second = instance(
        "second",
        "kubernetes",
        json!({ "source_uid": "source.name" }),
    );
    second.attribute_bindings = bindings(&[("source.owner", "$out.source_pod_name")]);
    cfg.instances.push(second);
    cfg.handlers.push(handler("lookup2", "lookup", json!({})));
    cfg.rules.insert(
        1,
        rule(
            "gen2",
            "context.protocol == \"http\"",
            "lookup2",
            &["second"],
        ),
    );
    cfg.instances.push(instance(
        "owner",
        "listentry",
        json!({ "value": "source.owner | \"none\"" }),
    ));
    cfg.handlers.push(handler(
        "gate2",
        "gate",
        json!({ "deny": "pod-of-pod-of-x" }),
    ));
    cfg.rules.push(rule("gate2", "", "gate2", &["owner"]));
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(p.snapshot().apa.stages.len(), 2);
    let w = p.worker(Arc::new(vt.clone()));
    let http = Attributes::new()
        .with(wk::SOURCE_UID, Value::str("x"))
        .with(wk::CONTEXT_PROTOCOL, Value::str("http"));
    let CheckStart::Done(a) = w.check(&http, |_| {}) else {
        panic!()
    };
    assert_eq!(
        a.decision.status.code,
        Code::PERMISSION_DENIED,
        "stage 2 read stage 1's output"
    );
    let tcp = Attributes::new()
        .with(wk::SOURCE_UID, Value::str("x"))
        .with(wk::CONTEXT_PROTOCOL, Value::str("tcp"));
    let CheckStart::Done(a) = w.check(&tcp, |_| {}) else {
        panic!()
    };
    assert_eq!(
        a.decision.status.code,
        Code::OK,
        "stage 2 skipped by its rule's match"
    );
}

#[test]
fn the_same_stage_named_by_two_rules_runs_once() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut cfg = config(0, false);
    cfg.rules.push(rule(
        "gen-tcp",
        "context.protocol == \"tcp\"",
        "lookup",
        &["attrs"],
    ));
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(p.snapshot().apa.stages.len(), 1);
    check(&vt, &p, "reviews");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn config_errors_name_the_binding() {
    let calls = Arc::new(AtomicU64::new(0));
    let compile_err = |cfg: &Config| {
        let vt = VirtualPlatform::new();
        compile(
            cfg,
            &registry(&calls),
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .expect_err("must be rejected")
        .to_string()
    };
    // Two stages producing the same attribute.
    let mut cfg = config(0, false);
    let mut other = instance("other", "kubernetes", json!({ "source_uid": "\"x\"" }));
    other.attribute_bindings = bindings(&[("source.name", "$out.source_pod_name | \"\"")]);
    cfg.instances.push(other);
    cfg.handlers.push(handler("lookup2", "lookup", json!({})));
    cfg.rules.push(rule("gen2", "", "lookup2", &["other"]));
    let e = compile_err(&cfg);
    assert!(
        e.contains("attributeBindings.source.name") && e.contains("overlap"),
        "{e}"
    );

    // Wrong type, unknown output, undeclared attribute.
    for (attr, expr, want) in [
        ("source.name", "$out.source_labels", "STRING_MAP"),
        ("source.name", "$out.nope", "nope"),
        (
            "no.such.attr",
            "$out.source_pod_name",
            "not a declared attribute",
        ),
    ] {
        let mut cfg = config(0, false);
        cfg.instances[0].attribute_bindings = bindings(&[(attr, expr)]);
        let e = compile_err(&cfg);
        assert!(
            e.contains(&format!("attributeBindings.{attr}")) && e.contains(want),
            "{e}"
        );
    }
}

#[test]
fn apa_chain_entries_run_before_rule_stages() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut cfg = config(0, false);
    cfg.rules.remove(0);
    cfg.instances[0].attribute_bindings.clear();
    cfg.apa_chain.push(v2::ApaChainEntry {
        handler: "lookup".into(),
        instances: vec!["attrs".into()],
        output_bindings: bindings(&[("source.labels", "$out.source_labels | emptyStringMap()")]),
    });
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check(&vt, &p, "blocked").0, Code::PERMISSION_DENIED);
    let vocab = Vocabulary::istio();
    assert!(vocab.lookup("source.labels").is_some());
}

#[test]
fn report_and_mutate_see_produced_attributes() {
    let calls = Arc::new(AtomicU64::new(0));
    let (vt, p) = setup(&config(0, false), &calls);
    let w = p.worker(Arc::new(vt.clone()));
    let bag = Attributes::new().with(wk::SOURCE_UID, Value::str("reviews"));
    w.report(&bag);
    w.mutate(&bag, b"").unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

/// A check on `source.name` (denied when it is `deny`) after a lookup stage binding
/// `source.name` with `binding`.
fn name_gate(binding: &str, deny: &str, lookup_params: serde_json::Value) -> Config {
    let mut cfg = config(0, false);
    cfg.handlers[0] = handler("lookup", "lookup", lookup_params);
    cfg.instances[0].attribute_bindings = bindings(&[("source.name", binding)]);
    cfg.handlers[1] = handler("gate", "gate", json!({ "deny": deny }));
    cfg.instances[1] = instance(
        "app",
        "listentry",
        json!({ "value": "source.name | \"none\"" }),
    );
    cfg
}

fn check_bag(vt: &VirtualPlatform, p: &Pipeline, bag: &Attributes<'_>) -> Code {
    let w = p.worker(Arc::new(vt.clone()));
    match w.check(bag, |_| {}) {
        CheckStart::Done(a) => a.decision.status.code,
        CheckStart::Pending(_) => panic!("in-process handlers answer inline"),
    }
}

#[test]
fn bindings_read_outputs_with_the_interpreters_semantics() {
    let calls = Arc::new(AtomicU64::new(0));
    let ingested = |uid: &'static str| {
        Attributes::new()
            .with(wk::SOURCE_UID, Value::str(uid))
            .with(wk::SOURCE_NAME, Value::str("ingested"))
    };
    // `$out.x | default`: the output when present, the default when absent.
    let cfg = name_gate("$out.source_pod_name | \"unknown\"", "pod-of-x", json!({}));
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check_bag(&vt, &p, &ingested("x")), Code::PERMISSION_DENIED);
    let cfg = name_gate("$out.source_pod_name | \"unknown\"", "unknown", json!({}));
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check_bag(&vt, &p, &ingested("")), Code::PERMISSION_DENIED);
    // No default and no output: the binding fails and the ingested value shows through.
    let cfg = name_gate("$out.source_pod_name", "ingested", json!({}));
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check_bag(&vt, &p, &ingested("")), Code::PERMISSION_DENIED);
    assert_eq!(check_bag(&vt, &p, &ingested("x")), Code::OK, "pod-of-x");
    // An output of the wrong type is an evaluation error, not a value (nor the default).
    let cfg = name_gate(
        "$out.source_pod_name | \"unknown\"",
        "ingested",
        json!({ "wrong_type": true }),
    );
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check_bag(&vt, &p, &ingested("x")), Code::PERMISSION_DENIED);
    // A binding that is more than one output and a default goes through the interpreter.
    let cfg = name_gate(
        "\"n-\" + ($out.source_pod_name | \"\")",
        "n-pod-of-x",
        json!({}),
    );
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check_bag(&vt, &p, &ingested("x")), Code::PERMISSION_DENIED);
}

#[test]
fn stages_run_even_when_no_binding_is_read() {
    // The check reads nothing the stage binds; its stage still runs before the check, so a
    // fail-close failure denies it (stages are deliberately not lazy, see `mixer_core::apa`).
    let calls = Arc::new(AtomicU64::new(0));
    let mut cfg = config(0, false);
    cfg.instances[1] = instance(
        "app",
        "listentry",
        json!({ "value": "request.path | \"none\"" }),
    );
    let (vt, p) = setup(&cfg, &calls);
    assert_eq!(check(&vt, &p, "reviews").0, Code::OK);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let (code, msg, _) = check(&vt, &p, "bad");
    assert_eq!(code, Code::UNAVAILABLE, "{msg}");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}
