//! Check-path features: experimental rules, audit records, fault injection (status and delay),
//! direct responses and who-denied tracking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, RequestContext,
};
use mixer_core::audit::MemoryAudit;
use mixer_core::decision::DirectResponse;
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pending::Poll;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{
    AdapterRegistry, CheckAnswer, CheckStart, Code, CompileOptions, Config, Pipeline, Status,
    compile,
};
use mixer_proto::v2;
use parking_lot::Mutex;
use serde_json::json;

/// Answers with the status (and optional direct response) in its params.
struct Fixed;
struct FixedHandler(CheckResult);

impl Adapter for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["checknothing"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let code = c.params["code"].as_i64().unwrap_or(0) as i32;
        let mut r = CheckResult::deny(
            Status::new(Code(code), c.params["message"].as_str().unwrap_or("")),
            mixer_attr::Duration::from_secs(10),
            100,
        );
        if let Some(d) = c.params.get("direct") {
            r.direct_response = Some(DirectResponse {
                code: d["code"].as_u64().unwrap_or(0) as u16,
                body: d["body"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(Arc::new(FixedHandler(r)))
    }
}

impl Handler for FixedHandler {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for FixedHandler {
    fn check(&self, _: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        Poll::Ready(self.0.clone())
    }
}

fn rule(
    name: &str,
    handler: &str,
    experimental: bool,
    fault: Option<v2::FaultInjection>,
) -> v2::Rule {
    v2::Rule {
        name: name.into(),
        namespace: "istio-system".into(),
        r#match: "destination.service.name == \"reviews\"".into(),
        actions: vec![v2::Action {
            handler: handler.into(),
            instances: vec!["nothing".into()],
            name: String::new(),
        }],
        experimental,
        fault,
        ..Default::default()
    }
}

fn config(rules: Vec<v2::Rule>, handlers: &[(&str, serde_json::Value)]) -> Config {
    Config {
        handlers: handlers
            .iter()
            .map(|(n, p)| v2::Handler {
                name: n.to_string(),
                namespace: "istio-system".into(),
                adapter: "fixed".into(),
                params: Some(json_to_struct(p)),
                ..Default::default()
            })
            .collect(),
        instances: vec![v2::Instance {
            name: "nothing".into(),
            namespace: "istio-system".into(),
            template: "checknothing".into(),
            ..Default::default()
        }],
        rules,
        ..Default::default()
    }
}

fn pipeline(cfg: &Config) -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Fixed));
    let snap = compile(
        cfg,
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    let p = Pipeline::new(snap, vt.platform());
    (vt, p)
}

fn reviews(user: &str) -> Attributes<'static> {
    Attributes::new()
        .with(wk::DESTINATION_SERVICE_NAME, Value::str("reviews"))
        .with(wk::SOURCE_PRINCIPAL, Value::String(user.to_string().into()))
        .with(wk::REQUEST_METHOD, Value::str("GET"))
        .with(wk::REQUEST_PATH, Value::str("/reviews/1"))
}

fn done(p: &Pipeline, vt: &VirtualPlatform, bag: &Attributes<'_>) -> CheckAnswer {
    match p.worker(Arc::new(vt.clone())).check(bag, |_| {}) {
        CheckStart::Done(a) => a,
        CheckStart::Pending(_) => panic!("expected an inline answer"),
    }
}

#[test]
fn experimental_rules_are_counted_and_audited_never_enforced() {
    let cfg = config(
        vec![
            rule("try-deny", "no", true, None),
            rule("allow", "yes", false, None),
        ],
        &[
            ("no", json!({"code": 7, "message": "would deny"})),
            ("yes", json!({})),
        ],
    );
    let (vt, p) = pipeline(&cfg);
    let audit = Arc::new(MemoryAudit::default());
    p.set_audit(Some(audit.clone()));
    let a = done(&p, &vt, &reviews("alice"));
    assert!(a.is_allowed());
    assert_eq!(a.experimental_denials, 1);
    assert_eq!(a.denials.len(), 1);
    assert!(a.denials[0].experimental);
    assert_eq!(
        (&*a.denials[0].rule, &*a.denials[0].handler),
        ("rule/istio-system/try-deny", "no.istio-system")
    );
    let again = done(&p, &vt, &reviews("alice"));
    assert!(again.cache_hit);
    let records = audit.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].who, "alice");
    assert_eq!(records[0].what, "reviews GET /reviews/1");
    assert!(records[0].status.is_ok() && !records[0].cache_hit && records[1].cache_hit);
    assert_eq!(records[0].denials[0].status.message, "would deny");
}

#[test]
fn audit_names_the_rule_and_handler_that_denied() {
    let cfg = config(
        vec![rule("deny", "no", false, None)],
        &[("no", json!({"code": 7, "message": "nope"}))],
    );
    let (vt, p) = pipeline(&cfg);
    let audit = Arc::new(MemoryAudit::default());
    p.set_audit(Some(audit.clone()));
    assert_eq!(
        done(&p, &vt, &reviews("mallory")).status.code,
        Code::PERMISSION_DENIED
    );
    let r = &audit.records()[0];
    assert_eq!(
        (r.who.as_str(), r.status.code),
        ("mallory", Code::PERMISSION_DENIED)
    );
    assert_eq!(&*r.denials[0].rule, "rule/istio-system/deny");
    p.set_audit(None);
    done(&p, &vt, &reviews("mallory"));
    assert_eq!(audit.records().len(), 1, "auditing stopped");
}

#[test]
fn direct_response_is_carried_to_the_decision() {
    let cfg = config(
        vec![rule("login", "redirect", false, None)],
        &[(
            "redirect",
            json!({"code": 16, "message": "login first", "direct": {"code": 302, "body": "/login"}}),
        )],
    );
    let (vt, p) = pipeline(&cfg);
    let a = done(&p, &vt, &reviews("x"));
    assert_eq!(
        a.direct_response,
        Some(DirectResponse {
            code: 302,
            body: "/login".into()
        })
    );
}

fn fault(percentage: f64, code: i32, delay_ms: i32) -> Option<v2::FaultInjection> {
    Some(v2::FaultInjection {
        percentage,
        error_code: code,
        error_message: "injected".into(),
        delay: (delay_ms > 0).then_some(prost_types::Duration {
            seconds: 0,
            nanos: delay_ms * 1_000_000,
        }),
    })
}

#[test]
fn fault_injection_fails_the_configured_fraction() {
    let cfg = config(
        vec![rule("chaos", "yes", false, fault(30.0, 14, 0))],
        &[("yes", json!({}))],
    );
    let (vt, p) = pipeline(&cfg);
    let mut failed = 0;
    for i in 0..2000 {
        let a = done(&p, &vt, &reviews(&format!("u{i}")));
        if a.status.code == Code::UNAVAILABLE {
            assert_eq!(a.status.message, "injected");
            assert_eq!(a.valid_use_count, 0, "injected faults are never cached");
            failed += 1;
        }
    }
    // 30% of 2000 = 600; 4 standard deviations is about 82.
    assert!((518..=682).contains(&failed), "{failed} of 2000 failed");
    assert_eq!(p.stats().faults_injected.load(Ordering::Relaxed), failed);
}

#[test]
fn fault_injection_delays_the_check() {
    let cfg = config(
        vec![rule("slow", "yes", false, fault(100.0, 0, 300))],
        &[("yes", json!({}))],
    );
    let (vt, p) = pipeline(&cfg);
    let slot: Arc<Mutex<Option<CheckAnswer>>> = Arc::default();
    let out = slot.clone();
    let started = p
        .worker(Arc::new(vt.clone()))
        .check(&reviews("x"), move |a| *out.lock() = Some(a));
    let CheckStart::Pending(_h) = started else {
        panic!("a delay makes the check pending")
    };
    vt.advance(StdDuration::from_millis(299));
    assert!(slot.lock().is_none());
    vt.advance(StdDuration::from_millis(1));
    let a = slot.lock().take().expect("released after the delay");
    assert!(a.is_allowed());
}

#[test]
fn bad_fault_settings_are_rejected() {
    let vt = VirtualPlatform::new();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Fixed));
    for (f, field) in [
        (fault(120.0, 14, 0), "fault.percentage"),
        (fault(10.0, 99, 0), "fault.errorCode"),
    ] {
        let cfg = config(vec![rule("r", "yes", false, f)], &[("yes", json!({}))]);
        let err = compile(
            &cfg,
            &registry,
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, field, "{err}");
    }
}
